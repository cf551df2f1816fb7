import type { IncomingMessage, ServerResponse } from 'node:http';
import { startStandIn, type StandIn } from './bridge.js';

export interface ChatUpstreamOptions {
  models?: string[];
  /** Token counts the final line reports. */
  promptTokens?: number;
  outputTokens?: number;
  /** Holds each generation open until this resolves (for concurrency and energy tests). */
  hold?: (body: Record<string, unknown>) => Promise<void>;
}

/**
 * An Ollama stand-in that answers generations with the native NDJSON lines and fixed token
 * counts, and /api/show with a fill-in-the-middle template, for tests of what the bridge does
 * around a generation (auth, limits, accounting) rather than of generation itself.
 */
export function startChatUpstream(options: ChatUpstreamOptions = {}): Promise<StandIn> {
  const { promptTokens = 10, outputTokens = 20 } = options;
  return startStandIn(
    async (req: IncomingMessage, res: ServerResponse, text: string) => {
      const body = text === '' ? {} : (JSON.parse(text) as Record<string, unknown>);
      if (req.url === '/api/show') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(
          JSON.stringify({
            template: '{{ .Prompt }}{{ .Suffix }}',
            capabilities: ['completion', 'insert'],
            model_info: { 'general.architecture': 'llama' },
            details: {},
          }),
        );
        return;
      }
      if (req.url !== '/api/chat' && req.url !== '/api/generate') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"status":"success"}');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      const model = String(body.model);
      const chat = req.url === '/api/chat';
      const line = (content: string, extra: Record<string, unknown> = {}): string =>
        `${JSON.stringify({ model, created_at: new Date().toISOString(), ...(chat ? { message: { role: 'assistant', content } } : { response: content }), done: false, ...extra })}\n`;
      res.write(line('hello'));
      await options.hold?.(body);
      res.end(line('', { done: true, done_reason: 'stop', prompt_eval_count: promptTokens, eval_count: outputTokens, eval_duration: 1_000_000 }));
    },
    options.models ?? ['m-small', 'm-big'],
  );
}
