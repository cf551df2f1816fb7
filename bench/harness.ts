// The pieces the benchmark and the profiler share: the processes under test, the client load, and
// per-process CPU and memory read from /proc.
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Pool } from 'undici';
import { nvidiaSmiStandIn, TWO_GPU_REPLIES } from '../test/support/gpu.js';

export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

const children: ChildProcess[] = [];
process.on('exit', () => children.forEach((c) => c.kill('SIGKILL')));

/** Stops every process started so far and waits until they are gone. */
export async function stopChildren(): Promise<void> {
  const running = children.splice(0).filter((c) => c.exitCode === null && c.signalCode === null);
  await Promise.all(
    running.map(
      (c) =>
        new Promise<void>((resolve) => {
          c.once('exit', () => resolve());
          c.kill('SIGKILL');
        }),
    ),
  );
}

/** Runs a bench/*.ts helper in its own process and waits for its 'ready' message. */
export async function forkTs(file: string, args: string[]): Promise<ChildProcess> {
  const child = fork(file, args, { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  children.push(child);
  await new Promise<void>((resolve) => child.once('message', () => resolve()));
  return child;
}

async function waitHealthy(url: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    try {
      if ((await fetch(`${url}/health`)).ok) return;
    } catch {
      // not yet
    }
    await sleep(100);
  }
  throw new Error(`${url} never became healthy`);
}

/** The model every tier uses in the benchmark: the upstream stand-in lists it. */
export const BENCH_MODEL = 'bench:1b';

/**
 * Starts the headless bridge (`copilot-bridge serve`, compiled) in front of the upstream, with
 * routing, the scheduler, history, metrics and GPU monitoring on as they are by default; every
 * tier maps to the stand-in's model, and nvidia-smi is the stand-in replaying two GPUs (a headless
 * bridge runs on a GPU machine).
 */
export async function startBridgeProcess(port: number, upstreamPort: number, nodeArgs: string[] = []): Promise<ChildProcess> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'bench-'));
  const configFile = path.join(dataDir, 'config.yaml');
  const smi = nvidiaSmiStandIn(TWO_GPU_REPLIES);
  writeFileSync(
    configFile,
    [
      // The stand-in serves any number of requests at once, as the floor assumes: as many scheduler slots as clients.
      'backends:',
      `  - { name: local, url: "http://127.0.0.1:${upstreamPort}", parallel: 32 }`,
      'models:',
      ...['simple', 'moderate', 'complex'].map((tier) => `  ${tier}: { name: "${BENCH_MODEL}" }`),
      'gpu_monitor:',
      `  command: "${smi.command}"`,
      '',
    ].join('\n'),
  );
  const bridge = spawn(process.execPath, [...nodeArgs, 'bin/copilot-bridge.js', 'serve', '--port', String(port), '--config', configFile], {
    env: { ...process.env, LOG_LEVEL: 'warn', BRIDGE_DATA_DIR: dataDir },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  children.push(bridge);
  await waitHealthy(`http://127.0.0.1:${port}`);
  return bridge;
}

/** Resident memory of a process, in MB. */
export function rssMb(pid: number): number {
  const line =
    readFileSync(`/proc/${pid}/status`, 'utf8')
      .split('\n')
      .find((l) => l.startsWith('VmRSS:')) ?? '';
  return Math.round(Number(line.replace(/\D+/g, '')) / 1024);
}

/** CPU time (user + system, all threads) a process has used so far, in ms. */
export function cpuMs(pid: number): number {
  // Fields after the command name, which is in parentheses and may contain spaces.
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of the line, in clock ticks (USER_HZ, 100 on Linux).
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** The two ways clients ask for a generation: Ollama's native API and OpenAI's chat completions. */
export type Surface = 'native' | 'openai';

export const SURFACES: readonly Surface[] = ['native', 'openai'];

/** A request of one surface: path and body (a non-streamed tiny answer, or a timed stream). */
export function requestOf(surface: Surface, stream?: { count: number; gapMs: number }): { path: string; body: string } {
  const content = stream === undefined ? 'hi' : `bench-stream ${stream.count} ${stream.gapMs}`;
  const messages = [{ role: 'user', content }];
  if (surface === 'native') return { path: '/api/chat', body: JSON.stringify({ model: BENCH_MODEL, stream: stream !== undefined, messages }) };
  // "auto" makes the bridge classify the request and pick the tier.
  return { path: '/v1/chat/completions', body: JSON.stringify({ model: 'auto', stream: stream !== undefined, messages }) };
}

export interface Target {
  name: string;
  url: string;
  pool: Pool;
  /** The process whose CPU is the proxy's cost (none for the direct call). */
  pid?: number;
}

export function target(name: string, port: number, pid: number | undefined, connections: number): Target {
  const url = `http://127.0.0.1:${port}`;
  return { name, url, pid, pool: new Pool(url, { connections, pipelining: 1 }) };
}

async function once(to: Target, surface: Surface): Promise<number> {
  const { path: requestPath, body: requestBody } = requestOf(surface);
  const started = performance.now();
  const { body, statusCode } = await to.pool.request({ method: 'POST', path: requestPath, headers: { 'content-type': 'application/json' }, body: requestBody });
  await body.text();
  if (statusCode !== 200) throw new Error(`${to.name} answered ${statusCode} on ${requestPath}`);
  return performance.now() - started;
}

export interface LoadResult {
  latencies: number[];
  rate: number;
  requests: number;
  /** CPU the target's process used during the load, in ms (NaN without a process). */
  cpuMs: number;
}

/** `total` requests by `concurrency` clients: latencies, the rate reached, the target's CPU. */
export async function load(to: Target, surface: Surface, total: number, concurrency: number): Promise<LoadResult> {
  const latencies: number[] = [];
  let next = 0;
  const cpuBefore = to.pid === undefined ? NaN : cpuMs(to.pid);
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total) {
        next += 1;
        latencies.push(await once(to, surface));
      }
    }),
  );
  const elapsed = performance.now() - started;
  return { latencies, rate: total / (elapsed / 1000), requests: total, cpuMs: to.pid === undefined ? NaN : cpuMs(to.pid) - cpuBefore };
}

/** The text of every content piece in a chunk of NDJSON lines or SSE events. */
function piecesOf(surface: Surface, lines: string[]): string[] {
  const out: string[] = [];
  for (const line of lines) {
    if (surface === 'native') {
      if (line === '') continue;
      const event = JSON.parse(line) as { message?: { content?: string } };
      if (event.message?.content) out.push(event.message.content);
    } else if (line.startsWith('data: {')) {
      const event = JSON.parse(line.slice(6)) as { choices?: Array<{ delta?: { content?: string } }> };
      const content = event.choices?.[0]?.delta?.content;
      if (content) out.push(content);
    }
  }
  return out;
}

/**
 * Streams of `count` pieces `gapMs` apart: time to the first byte, and for every piece the time
 * from the upstream writing it to the client reading it.
 */
export async function streamTimes(
  to: Target,
  surface: Surface,
  rounds: number,
  count: number,
  gapMs: number,
): Promise<{ firstByte: number[]; chunkDelay: number[] }> {
  const firstByte: number[] = [];
  const chunkDelay: number[] = [];
  const { path: requestPath, body: requestBody } = requestOf(surface, { count, gapMs });
  for (let i = 0; i < rounds; i++) {
    const started = performance.now();
    const { body, statusCode } = await to.pool.request({
      method: 'POST',
      path: requestPath,
      headers: { 'content-type': 'application/json' },
      body: requestBody,
    });
    if (statusCode !== 200) throw new Error(`${to.name} answered ${statusCode} on a stream`);
    const decoder = new TextDecoder();
    let pending = '';
    let first = true;
    let pieces = 0;
    for await (const chunk of body as AsyncIterable<Uint8Array>) {
      const now = performance.timeOrigin + performance.now();
      if (first) {
        firstByte.push(performance.now() - started);
        first = false;
      }
      pending += decoder.decode(chunk, { stream: true });
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const piece of piecesOf(surface, lines)) {
        pieces += 1;
        chunkDelay.push(now - Number(piece));
      }
    }
    if (pieces !== count) throw new Error(`${to.name} forwarded ${pieces} of ${count} pieces on ${surface}`);
  }
  return { firstByte, chunkDelay };
}

/** Time from the client hanging up to the upstream seeing its request closed. */
export async function abortTimes(to: Target, upstream: ChildProcess, rounds: number): Promise<number[]> {
  const times: number[] = [];
  const { path: requestPath, body: requestBody } = requestOf('native', { count: 1000, gapMs: 5 });
  for (let i = 0; i < rounds; i++) {
    const controller = new AbortController();
    const response = await fetch(`${to.url}${requestPath}`, { method: 'POST', body: requestBody, signal: controller.signal });
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    const seen = new Promise<number>((resolve) => upstream.once('message', (m: { aborted: number }) => resolve(m.aborted)));
    const abortedAt = performance.timeOrigin + performance.now();
    controller.abort();
    times.push((await seen) - abortedAt);
  }
  return times;
}

export const percentile = (sorted: readonly number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
export const median = (values: readonly number[]): number =>
  percentile(
    [...values].sort((a, b) => a - b),
    50,
  );
export const round = (n: number, digits = 2): number => Math.round(n * 10 ** digits) / 10 ** digits;
