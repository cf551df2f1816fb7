import { EventEmitter, once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';

/** A generation the stand-in is producing: which caller (its path prefix) asked for which model, for which client. */
export interface Generation {
  caller: string;
  model: string;
  /** The User-Agent the bridge passed on: the client's own. */
  userAgent: string;
  /** Tokens sent so far. */
  tokens: number;
}

export interface OllamaStandInOptions {
  /** Models listed in /api/tags, each with how many tokens it answers and how fast. */
  models: Record<string, { tokens: number; tokenMs: number }>;
}

/**
 * A light Ollama for the cluster tests: the native API the bridge uses (/api/version, /api/tags,
 * /api/ps, /api/chat, /api/generate), streaming NDJSON with prompt and eval counts, on a fixed
 * port so it can be stopped and started again like a crashed GPU node. A caller may sit behind a
 * path prefix (http://host:port/<caller>/api/chat), so the test knows which bridge asked.
 */
export class OllamaStandIn extends EventEmitter {
  private server: Server | undefined;
  /** Generations running now. */
  readonly running = new Set<Generation>();
  /** Every generation started since the stand-in was created. */
  readonly started: Generation[] = [];

  constructor(
    readonly port: number,
    private readonly options: OllamaStandInOptions,
  ) {
    super();
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const server = createServer((req, res) => void this.handle(req, res));
    server.keepAliveTimeout = 65_000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.server = server;
  }

  /** Like a node going down: the port closes and every open connection breaks. */
  async stop(): Promise<void> {
    const server = this.server;
    if (server === undefined) return;
    this.server = undefined;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closed;
  }

  /** Resolves when a running generation matches `match` (checked at every token). */
  async waitForGeneration(match: (generation: Generation) => boolean): Promise<Generation> {
    for (;;) {
      const found = [...this.running].find(match);
      if (found !== undefined) return found;
      await once(this, 'token');
    }
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const match = /^(?:\/([^/]+))?(\/api\/[a-z]+)$/.exec(req.url ?? '');
    const caller = match?.[1] ?? '';
    const route = `${req.method ?? ''} ${match?.[2] ?? req.url ?? ''}`;
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const json = (status: number, body: unknown): void => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    switch (route) {
      case 'GET /api/version':
        return json(200, { version: '0.11.4' });
      case 'GET /api/ps':
        return json(200, { models: [] });
      case 'GET /api/tags':
        return json(200, {
          models: Object.keys(this.options.models).map((name) => ({
            name,
            model: name,
            modified_at: '2025-01-01T00:00:00Z',
            size: 1_000_000,
            digest: 'd',
            details: {},
          })),
        });
      case 'POST /api/chat':
      case 'POST /api/generate':
        return this.generate(
          { caller, model: '', userAgent: req.headers['user-agent'] ?? '', tokens: 0 },
          route.endsWith('chat'),
          JSON.parse(Buffer.concat(chunks).toString()) as { model?: string },
          res,
        );
      default:
        return json(404, { error: `stand-in has no ${route}` });
    }
  }

  private async generate(generation: Generation, chat: boolean, body: { model?: string }, res: ServerResponse): Promise<void> {
    const model = body.model ?? '';
    generation.model = model;
    const shape = this.options.models[model];
    if (shape === undefined) {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: `model "${model}" not found` }));
      return;
    }
    this.running.add(generation);
    this.started.push(generation);
    const gone = new AbortController();
    res.once('close', () => gone.abort());
    const line = (text: string, done: boolean): string => {
      const payload = chat ? { message: { role: 'assistant', content: text } } : { response: text };
      const stats = done ? { done_reason: 'length', prompt_eval_count: 12, eval_count: shape.tokens, eval_duration: shape.tokens * shape.tokenMs * 1e6 } : {};
      return `${JSON.stringify({ model, created_at: new Date().toISOString(), ...payload, done, ...stats })}\n`;
    };
    try {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      for (let token = 0; token < shape.tokens; token++) {
        await sleep(shape.tokenMs, undefined, { signal: gone.signal });
        res.write(line(`t${token} `, false));
        generation.tokens += 1;
        this.emit('token', generation);
      }
      res.end(line('', true));
    } catch {
      // the caller hung up, or the stand-in was stopped
    } finally {
      this.running.delete(generation);
    }
  }
}
