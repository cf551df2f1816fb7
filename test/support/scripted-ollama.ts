import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** One /api/chat request as the stand-in saw it. */
export interface ScriptedChat {
  model: string;
  messages: Array<{
    role: string;
    content: string;
    tool_calls?: Array<{ function: { name: string; arguments: Record<string, unknown> } }>;
    tool_name?: string;
    thinking?: string;
  }>;
  tools?: Array<{ function: { name: string } }>;
  think?: unknown;
  options?: Record<string, unknown>;
  format?: unknown;
  stream?: boolean;
}

/** What the stand-in answers: thinking and text in pieces, or tool calls. */
export interface ScriptedTurn {
  thinking?: string[];
  text?: string[];
  toolCalls?: Array<{ name: string; arguments: Record<string, unknown> }>;
  /** After the first line: hold the answer open (the test decides when the client leaves), or die mid-answer. */
  afterFirstLine?: 'hold' | 'die';
}

export interface ScriptedOllama {
  url: string;
  /** Every /api/chat request, in order. */
  chats: ScriptedChat[];
  /** Resolves when an /api/chat request's connection closed before its answer ended. */
  abandoned(): Promise<void>;
  close(): Promise<void>;
}

/**
 * A small Ollama stand-in that answers /api/chat from a script (a tool call first, then text that
 * quotes the tool's result), so a coding agent completes one tool round trip against a model that
 * does what the test says. It lists `models` with the `tools` capability and answers what the
 * bridge asks besides (/api/tags, /api/ps, /api/show, /api/version).
 */
export async function startScriptedOllama(
  models: readonly string[],
  script: (chat: ScriptedChat) => ScriptedTurn,
  capabilities = ['completion', 'tools'],
): Promise<ScriptedOllama> {
  const chats: ScriptedChat[] = [];
  let onAbandoned: () => void = () => undefined;
  const abandoned = new Promise<void>((resolve) => {
    onAbandoned = resolve;
  });
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const json = (status: number, body: unknown): void => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      };
      if (req.url === '/api/version') return json(200, { version: '0.11.4' });
      if (req.url === '/api/ps') return json(200, { models: [] });
      if (req.url === '/api/tags') {
        return json(200, {
          models: models.map((name) => ({ name, model: name, modified_at: '2025-01-01T00:00:00Z', size: 1, digest: 'd', details: { family: 'llama' } })),
        });
      }
      const body = JSON.parse(Buffer.concat(chunks).toString() || '{}') as ScriptedChat;
      if (req.url === '/api/show') {
        if (!models.includes(body.model)) return json(404, { error: `model '${body.model}' not found` });
        return json(200, {
          capabilities,
          details: { family: 'llama' },
          model_info: { 'general.architecture': 'llama', 'llama.context_length': 32768 },
          template: '',
        });
      }
      if (req.url !== '/api/chat') return json(404, { error: 'not found' });
      if (!models.includes(body.model)) return json(404, { error: `model '${body.model}' not found, try pulling it first` });
      chats.push(body);
      const turn = script(body);
      const line = (message: Record<string, unknown>, done = false): string =>
        `${JSON.stringify({ model: body.model, created_at: new Date().toISOString(), message: { role: 'assistant', content: '', ...message }, done, ...(done ? { done_reason: 'stop', prompt_eval_count: 12, eval_count: 7, eval_duration: 1_000_000 } : {}) })}\n`;
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.once('close', () => {
        if (!res.writableFinished) onAbandoned();
      });
      const lines = [
        ...(turn.thinking ?? []).map((thinking) => line({ thinking })),
        ...(turn.text ?? []).map((content) => line({ content })),
        ...(turn.toolCalls === undefined ? [] : [line({ tool_calls: turn.toolCalls.map((call) => ({ function: call })) })]),
      ];
      if (turn.afterFirstLine !== undefined) {
        const die = turn.afterFirstLine === 'die';
        res.write(lines[0] ?? line({ content: 'partial' }), () => {
          if (die) res.destroy();
        });
        return undefined;
      }
      for (const text of lines) res.write(text);
      res.end(line({}, true));
      return undefined;
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    chats,
    abandoned: () => abandoned,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
