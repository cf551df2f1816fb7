import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, fetch as undiciFetch, type Response as UndiciResponse } from 'undici';
import type { BridgeLaunch } from './deploy.js';

const children = new Set<ChildProcess>();
// No orphans even when a test file dies: the runner of node:test ends files with SIGTERM. SIGTERM
// here too, so nginx's master takes its workers down with it.
process.once('exit', () => {
  for (const child of children) child.kill('SIGTERM');
});

/** A program of the cluster, run in the foreground; the last lines of its output explain failures. */
export class Program {
  private child: ChildProcess | undefined;
  private output = '';
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }> = Promise.resolve({ code: null, signal: null });

  constructor(
    readonly name: string,
    private readonly command: string,
    private readonly args: string[],
    private readonly options: { cwd?: string; env?: Record<string, string> } = {},
  ) {}

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  start(): void {
    const child = spawn(this.command, this.args, {
      cwd: this.options.cwd,
      env: { PATH: process.env.PATH ?? '', ...this.options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    children.add(child);
    const keep = (chunk: Buffer): void => {
      this.output = (this.output + chunk.toString()).slice(-20_000);
      this.emitLines(chunk);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    this.exited = new Promise((resolve) =>
      child.once('exit', (code, signal) => {
        children.delete(child);
        resolve({ code, signal });
      }),
    );
  }

  private lineListeners: Array<(line: string) => void> = [];
  private pending = '';
  private emitLines(chunk: Buffer): void {
    this.pending += chunk.toString();
    const lines = this.pending.split('\n');
    this.pending = lines.pop() ?? '';
    for (const line of lines) for (const listener of this.lineListeners) listener(line);
  }

  /** Resolves on the first output line that matches; rejects if the program exits first. */
  waitForLine(match: (line: string) => boolean): Promise<string> {
    return new Promise((resolve, reject) => {
      const listener = (line: string): void => {
        if (!match(line)) return;
        this.lineListeners = this.lineListeners.filter((l) => l !== listener);
        resolve(line);
      };
      this.lineListeners.push(listener);
      void this.exited.then(({ code, signal }) => reject(new Error(`${this.name} exited (${code ?? signal}) before it was ready:\n${this.tail()}`)));
    });
  }

  signal(signal: NodeJS.Signals): void {
    this.child?.kill(signal);
  }

  /**
   * SIGTERM, so the program ends its own children too (nginx's workers would outlive a killed
   * master and hold the output pipes open); SIGKILL if it takes longer than 10 s.
   */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.signal('SIGTERM');
    const timer = setTimeout(() => this.signal('SIGKILL'), 10_000);
    await this.exited;
    clearTimeout(timer);
  }

  tail(): string {
    return this.output.split('\n').slice(-40).join('\n');
  }
}

/** Waits until something accepts TCP connections on the port (nginx and HAProxy say nothing when ready). */
export async function waitForPort(port: number, program: Program, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!program.running) throw new Error(`${program.name} exited:\n${program.tail()}`);
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (open) return;
    await sleep(50);
  }
  throw new Error(`${program.name} did not listen on ${port} within ${timeoutMs} ms:\n${program.tail()}`);
}

/** Polls `check` until it returns a value (bounded): for state that only another program's API can tell. */
export async function eventually<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (error) {
      lastError = error;
    }
    await sleep(200);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${String(lastError)}` : ''}`);
}

/** One bridge instance, started the way its systemd unit starts it. */
export class BridgeProcess extends Program {
  constructor(readonly launch: BridgeLaunch) {
    super(`copilot-bridge@${launch.port}`, launch.command, launch.args, { cwd: launch.cwd, env: launch.env });
  }

  async up(): Promise<void> {
    this.start();
    await this.waitForLine((line) => line.includes('"msg":"bridge listening"'));
  }
}

/** A webhook receiver standing in for the team's alert relay: keeps every notification. */
export async function startWebhook(
  port: number,
): Promise<{ notifications: Array<{ status: string; alerts: Array<{ status: string; labels: Record<string, string> }> }>; close: () => Promise<void> }> {
  const notifications: Array<{ status: string; alerts: Array<{ status: string; labels: Record<string, string> }> }> = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      notifications.push(JSON.parse(Buffer.concat(chunks).toString()) as (typeof notifications)[number]);
      res.end('ok');
    });
  });
  server.listen(port, '127.0.0.1');
  await once(server, 'listening');
  return {
    notifications,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** What one request through a balancer came to. */
export interface Outcome {
  kind: 'whole' | 'stream';
  /** Sent as User-Agent, which the bridge passes to Ollama: ties the request to the bridge that served it. */
  userAgent: string;
  status: number | null;
  /** A whole answer with 200, or a stream that ended with its completion marker. */
  complete: boolean;
  /** What the client saw go wrong: an HTTP error, an in-band error, or a broken transfer. */
  error: string | null;
  /** It did not end within the bound. */
  hung: boolean;
}

/** Longest a request may take before it counts as hung (a stream here lasts ~2 s). */
const HANG_MS = 20_000;

export class LoadClient {
  private readonly agent: Agent;

  constructor(
    certificateFile: string,
    private readonly apiKey: string,
  ) {
    this.agent = new Agent({ connect: { ca: readFileSync(certificateFile), servername: 'copilot-bridge.company.com' }, keepAliveTimeout: 30_000 });
  }

  fetch(url: string, init: { method?: string; body?: string; headers?: Record<string, string>; signal?: AbortSignal } = {}): Promise<UndiciResponse> {
    return undiciFetch(url, {
      ...init,
      dispatcher: this.agent,
      headers: { authorization: `Bearer ${this.apiKey}`, 'content-type': 'application/json', ...init.headers },
    });
  }

  /** A whole chat answer (a simple-tier request). */
  async whole(base: string, userAgent: string): Promise<Outcome> {
    const outcome: Outcome = { kind: 'whole', userAgent, status: null, complete: false, error: null, hung: false };
    const signal = AbortSignal.timeout(HANG_MS);
    try {
      const response = await this.fetch(`${base}/api/chat`, {
        method: 'POST',
        headers: { 'user-agent': userAgent },
        signal,
        body: JSON.stringify({ model: 'auto', stream: false, messages: [{ role: 'user', content: 'autocomplete this line' }] }),
      });
      outcome.status = response.status;
      const text = await response.text();
      const body = JSON.parse(text) as { done?: boolean; error?: unknown };
      outcome.complete = response.status === 200 && body.done === true;
      if (!outcome.complete) outcome.error = `${response.status}: ${text.slice(0, 200)}`;
    } catch (error) {
      outcome.hung = signal.aborted;
      outcome.error = String(error);
    }
    return outcome;
  }

  /** A streamed answer (a complex-tier request), native NDJSON or OpenAI SSE. */
  async stream(base: string, userAgent: string, surface: 'ollama' | 'openai'): Promise<Outcome> {
    const outcome: Outcome = { kind: 'stream', userAgent, status: null, complete: false, error: null, hung: false };
    const signal = AbortSignal.timeout(HANG_MS);
    const url = surface === 'ollama' ? `${base}/api/chat` : `${base}/v1/chat/completions`;
    try {
      const response = await this.fetch(url, {
        method: 'POST',
        headers: { 'user-agent': userAgent },
        signal,
        body: JSON.stringify({ model: 'auto', stream: true, messages: [{ role: 'user', content: 'architect a billing service' }] }),
      });
      outcome.status = response.status;
      if (response.status !== 200 || response.body === null) {
        outcome.error = `${response.status}: ${(await response.text()).slice(0, 200)}`;
        return outcome;
      }
      let text = '';
      const decoder = new TextDecoder();
      for await (const chunk of response.body) text += decoder.decode(chunk as Uint8Array, { stream: true });
      const lines = text.split('\n').filter((line) => line.trim() !== '');
      const last = lines.at(-1) ?? '';
      if (surface === 'ollama') {
        const parsed = JSON.parse(last) as { done?: boolean; error?: string };
        outcome.complete = parsed.done === true;
        if (parsed.error !== undefined) outcome.error = `in-band: ${parsed.error}`;
      } else {
        outcome.complete = last === 'data: [DONE]';
        if (!outcome.complete) outcome.error = `in-band: ${last}`;
      }
      if (!outcome.complete && outcome.error === null) outcome.error = `ended without its completion marker: ${last.slice(0, 200)}`;
    } catch (error) {
      outcome.hung = signal.aborted;
      outcome.error = `transport: ${String((error as Error).cause ?? error)}`;
    }
    return outcome;
  }

  /**
   * Keeps `streams` streaming and `wholes` whole-answer clients busy until `until` resolves; each
   * starts its next request when the last ended. Every request is bounded, so this always ends.
   */
  async load(bases: readonly string[], workers: { streams: number; wholes: number }, until: Promise<unknown>, label: string): Promise<Outcome[]> {
    let stopped = false;
    void until.then(() => (stopped = true));
    const outcomes: Outcome[] = [];
    let sequence = 0;
    const worker = async (kind: 'stream' | 'whole', index: number): Promise<void> => {
      while (!stopped) {
        const base = bases[(index + sequence) % bases.length] as string;
        const userAgent = `${label}-${kind}-${index}-${sequence++}`;
        outcomes.push(kind === 'whole' ? await this.whole(base, userAgent) : await this.stream(base, userAgent, index % 2 === 0 ? 'ollama' : 'openai'));
      }
    };
    await Promise.all([
      ...Array.from({ length: workers.streams }, (_, i) => worker('stream', i)),
      ...Array.from({ length: workers.wholes }, (_, i) => worker('whole', i)),
    ]);
    return outcomes;
  }

  close(): Promise<void> {
    return this.agent.close();
  }
}

export function describeOutcomes(outcomes: readonly Outcome[]): string {
  const failed = outcomes.filter((o) => !o.complete);
  return `${outcomes.length} requests, ${failed.length} not complete: ${JSON.stringify(failed.slice(0, 10), null, 1)}`;
}
