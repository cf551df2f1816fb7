import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, openSync, readFileSync, rmSync, closeSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { findOllama } from './ollama-binary.js';
import { tinyLlamaGguf } from './gguf.js';

/** The names the config's tiers use; both are the tiny random model. */
export const RIG_MODELS = {
  simple: 'qwen2.5-coder:1.5b',
  complex: 'qwen2.5-coder:7b-instruct-q8_0',
} as const;

/** Folders of every rig in this process start with this, so leftovers can be found by name. */
export const RIG_DIR_PREFIX = 'copilot-bridge-rig-';

/**
 * A template that uses .Suffix (so Ollama reports the "insert" capability and fill-in-the-middle
 * works), .Messages for chat, and .Tools / .ToolCalls (so "tools" is a capability and Ollama
 * accepts requests that carry tools).
 */
export const RIG_TEMPLATE = [
  '{{- if .Suffix }}<|fim_prefix|>{{ .Prompt }}<|fim_suffix|>{{ .Suffix }}<|fim_middle|>',
  '{{- else if .Messages }}',
  '{{- if .Tools }}<|tools|>{{ range .Tools }}{{ . }}{{ end }}<|end|>{{ end }}',
  '{{- range .Messages }}<|{{ .Role }}|>{{ .Content }}',
  '{{- if .ToolCalls }}<tool_call>{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}{{ end }}</tool_call>{{ end }}<|end|>',
  '{{ end }}<|assistant|>',
  '{{- else }}{{ .Prompt }}{{ end }}',
].join('\n');

export interface RigInstance {
  readonly name: string;
  /** Its OLLAMA_MODELS folder, with the rig models registered. */
  readonly modelsDir: string;
  readonly port: number;
  readonly url: string;
  readonly pid: number | undefined;
  /** Whether its `ollama serve` is running. */
  readonly running: boolean;
  /** Starts it again on the same port and folders (models stay registered). */
  start(): Promise<void>;
  /** Sends a signal to the whole process group (serve and its runners). */
  kill(signal: NodeJS.Signals): void;
  /** SIGTERM, then SIGKILL after a grace period; resolves when the process is gone. */
  stop(): Promise<void>;
  /** The last lines of its log, for failure messages. */
  logTail(): string;
  /** The requests Ollama itself logged (its [GIN] lines), as "POST /api/chat", in the order it finished them. */
  loggedRequests(): string[];
}

export interface OllamaRig {
  readonly binary: string;
  readonly instances: RigInstance[];
  stop(): Promise<void>;
}

const liveGroups = new Set<number>();

function killGroupsNow(): void {
  for (const pid of liveGroups) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  liveGroups.clear();
}

// No orphans even when a test file dies: the runner of node:test ends files with SIGTERM.
process.once('exit', killGroupsNow);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    killGroupsNow();
    process.exit(130);
  });
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

async function waitUntilUp(url: string, child: ChildProcess, logFile: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`ollama serve exited (${child.exitCode ?? child.signalCode}) before answering:\n${tail(logFile)}`);
    }
    try {
      const response = await fetch(`${url}/api/version`);
      if (response.ok) return;
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  throw new Error(`ollama serve at ${url} did not answer within ${timeoutMs} ms:\n${tail(logFile)}`);
}

function tail(file: string, lines = 30): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

async function postJson(url: string, body: unknown): Promise<unknown> {
  const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const text = await response.text();
  if (!response.ok) throw new Error(`${url} answered ${response.status}: ${text}`);
  return text === '' ? undefined : JSON.parse(text);
}

/**
 * Uploads the tiny model once per instance and registers it under every rig model name. `threads`
 * sets the runner's thread count for every request that does not ask for its own.
 */
async function registerModels(url: string, gguf: Buffer, digest: string, threads: number | undefined): Promise<void> {
  const upload = await fetch(`${url}/api/blobs/sha256:${digest}`, { method: 'POST', body: new Uint8Array(gguf) });
  if (!upload.ok) throw new Error(`blob upload to ${url} failed: ${upload.status} ${await upload.text()}`);
  for (const model of Object.values(RIG_MODELS)) {
    await postJson(`${url}/api/create`, {
      model,
      files: { 'model.gguf': `sha256:${digest}` },
      template: RIG_TEMPLATE,
      // Copilot Chat sends no max_tokens and a random model never stops by itself.
      parameters: { num_ctx: 2048, num_predict: 64, ...(threads === undefined ? {} : { num_thread: threads }) },
      stream: false,
    });
  }
}

function createInstance(binary: string, name: string, root: string, port: number, numParallel: number, core: number | undefined): RigInstance {
  const home = path.join(root, name);
  const url = `http://127.0.0.1:${port}`;
  const logFile = path.join(root, `${name}.log`);
  let child: ChildProcess | undefined;
  /** Resolves when the current process has exited; a kill is only done once this settles. */
  let gone: Promise<void> = Promise.resolve();
  let signalled = false;

  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: home,
    OLLAMA_HOST: `127.0.0.1:${port}`,
    OLLAMA_MODELS: path.join(home, 'models'),
    OLLAMA_KEEP_ALIVE: '5m',
    // One generation at a time by default: a request that is not cancelled would hold up the next one.
    OLLAMA_NUM_PARALLEL: String(numParallel),
    OLLAMA_MAX_LOADED_MODELS: '2',
    OLLAMA_NOPRUNE: '1',
    CUDA_VISIBLE_DEVICES: '',
  };

  const exited = (): boolean => child === undefined || child.exitCode !== null || child.signalCode !== null;

  const instance: RigInstance = {
    name,
    modelsDir: env.OLLAMA_MODELS as string,
    port,
    url,
    get pid() {
      return child?.pid;
    },
    get running() {
      return !exited();
    },
    async start() {
      // Right after a kill the process may not have exited yet: wait for it, then start anew.
      if (signalled) await gone;
      if (!exited()) return;
      const log = openSync(logFile, 'a');
      const [command, args] = core === undefined ? [binary, ['serve']] : ['taskset', ['-c', String(core), binary, 'serve']];
      const started = spawn(command, args, { env, detached: true, stdio: ['ignore', log, log] });
      child = started;
      signalled = false;
      closeSync(log);
      const pid = started.pid;
      if (pid !== undefined) liveGroups.add(pid);
      gone = new Promise((resolve) => {
        started.once('exit', () => {
          if (pid !== undefined) liveGroups.delete(pid);
          resolve();
        });
      });
      await waitUntilUp(url, child, logFile, 30_000);
    },
    kill(signal) {
      const pid = child?.pid;
      if (pid === undefined || exited()) return;
      signalled = true;
      try {
        process.kill(-pid, signal);
      } catch {
        // already gone
      }
    },
    async stop() {
      const current = child;
      if (current === undefined || exited()) return;
      instance.kill('SIGTERM');
      const timer = setTimeout(() => instance.kill('SIGKILL'), 3000);
      await gone;
      clearTimeout(timer);
      // The runners are children in the same group: make sure none outlives serve.
      if (current.pid !== undefined) {
        try {
          process.kill(-current.pid, 'SIGKILL');
        } catch {
          // group already empty
        }
      }
    },
    logTail: () => tail(logFile),
    loggedRequests: () => {
      try {
        return readFileSync(logFile, 'utf8')
          .split('\n')
          .flatMap((line) => {
            const match = line.startsWith('[GIN]') ? /\|\s*([A-Z]+)\s+"([^"]+)"/.exec(line) : null;
            return match === null ? [] : [`${match[1]} ${match[2]}`];
          });
      } catch {
        return [];
      }
    },
  };
  return instance;
}

/**
 * Starts `count` real Ollama servers on free loopback ports, each with its own HOME and models
 * folder in a temp directory, and registers the tiny model under the rig's model names.
 */
/**
 * Starts `count` instances. `onePerCore` stands each instance for a GPU of its own: pinned to one
 * core (taskset), its runners on one thread; without it, every runner's threads spin on every core,
 * so two busy instances slow each other down far more than two GPUs would.
 */
export async function startRig(count = 2, numParallel = 1, onePerCore = false): Promise<OllamaRig> {
  const lookup = findOllama();
  if ('missing' in lookup) throw new Error(`cannot start the Ollama rig: ${lookup.missing}`);
  const root = mkdtempSync(path.join(os.tmpdir(), RIG_DIR_PREFIX));
  const gguf = tinyLlamaGguf();
  const digest = createHash('sha256').update(gguf).digest('hex');
  const instances: RigInstance[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(instances.map((instance) => instance.stop()));
    rmSync(root, { recursive: true, force: true });
  };
  try {
    for (let i = 0; i < count; i++) {
      const core = onePerCore ? i % os.availableParallelism() : undefined;
      instances.push(createInstance(lookup.found, `gpu${i}`, root, await freePort(), numParallel, core));
    }
    await Promise.all(
      instances.map(async (instance) => {
        await instance.start();
        await registerModels(instance.url, gguf, digest, onePerCore ? 1 : undefined);
      }),
    );
  } catch (error) {
    await stop();
    throw error;
  }
  return { binary: lookup.found, instances, stop };
}

/**
 * Whether the real-Ollama suites can run here. In CI they must: no binary is a failure there.
 * Elsewhere the suites are skipped with one loud line saying why.
 */
export function rigSkipReason(): string | undefined {
  const lookup = findOllama();
  if ('found' in lookup) return undefined;
  if (process.env.CI === 'true') throw new Error(`CI=true and the real-Ollama rig cannot run: ${lookup.missing}`);
  const reason = `SKIPPING real-Ollama tests: ${lookup.missing}. Install Go (the tests then build Ollama) or set OLLAMA_BIN.`;
  // The test script already printed it once for the whole run.
  if (process.env.RIG_SKIP_ANNOUNCED !== '1') process.stderr.write(`\n!!! ${reason}\n\n`);
  return reason;
}
