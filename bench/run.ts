// The benchmark: the bridge measured side by side with a direct call to the same upstream and
// with the thinnest Node reverse proxy (the floor), in the same run, on this machine.
// Writes bench/results.json and bench/results.md. Usage: npm run bench
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import { mkdtempSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Pool } from 'undici';
import { loadConfig } from '../src/config/load.js';
import { pino } from 'pino';
import { GpuMonitor } from '../src/gpu/monitor.js';
import { Classifier } from '../src/routing/classify.js';
import { nvidiaSmiStandIn, TWO_GPU } from '../test/support/gpu.js';
import { chatSignals, clientSignals } from '../src/routing/signals.js';

const quick = process.argv.includes('--quick');
const SEQUENTIAL = quick ? 300 : 2000;
const CONCURRENT = quick ? 1500 : 8000;
const CONCURRENCY = 32;

function freePort(): Promise<number> {
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

async function forkTs(file: string, args: string[]): Promise<ChildProcess> {
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

function rssMb(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('VmRSS:')) ?? '';
  return Math.round(Number(line.replace(/\D+/g, '')) / 1024);
}

const percentile = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
const median = (values: number[]): number => percentile([...values].sort((a, b) => a - b), 50);
const round = (n: number, digits = 2): number => Math.round(n * 10 ** digits) / 10 ** digits;

const BODY = JSON.stringify({ model: 'bench:1b', stream: false, messages: [{ role: 'user', content: 'hi' }] });

interface Target {
  name: 'direct' | 'floor' | 'express' | 'bridge';
  url: string;
  pool: Pool;
}

async function once(target: Target): Promise<number> {
  const started = performance.now();
  const { body, statusCode } = await target.pool.request({ method: 'POST', path: '/api/chat', headers: { 'content-type': 'application/json' }, body: BODY });
  await body.text();
  if (statusCode !== 200) throw new Error(`${target.name} answered ${statusCode}`);
  return performance.now() - started;
}

/** Latencies at a given concurrency, and the request rate reached. */
async function load(target: Target, total: number, concurrency: number): Promise<{ latencies: number[]; rate: number }> {
  const latencies: number[] = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total) {
        next += 1;
        latencies.push(await once(target));
      }
    }),
  );
  return { latencies, rate: total / ((performance.now() - started) / 1000) };
}

/** First-byte time and per-chunk delay (arrival minus the upstream's write time) of slow streams. */
async function streamTimes(target: Target, rounds: number): Promise<{ firstByte: number[]; chunkDelay: number[] }> {
  const firstByte: number[] = [];
  const chunkDelay: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const started = performance.now();
    const response = await fetch(`${target.url}/api/generate`, { method: 'POST', body: JSON.stringify({ model: 'bench:1b', prompt: 'x', bench_stream: [10, 5] }) });
    const decoder = new TextDecoder();
    let pending = '';
    let first = true;
    for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
      const now = performance.timeOrigin + performance.now();
      if (first) {
        firstByte.push(performance.now() - started);
        first = false;
      }
      pending += decoder.decode(chunk, { stream: true });
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) {
        const t = (JSON.parse(line) as { t?: number }).t;
        if (t !== undefined) chunkDelay.push(now - t);
      }
    }
  }
  return { firstByte, chunkDelay };
}

/** Time from the client hanging up to the upstream seeing its request closed. */
async function abortTimes(target: Target, upstream: ChildProcess, rounds: number): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const controller = new AbortController();
    const response = await fetch(`${target.url}/api/generate`, { method: 'POST', body: JSON.stringify({ model: 'bench:1b', prompt: 'x', bench_stream: [1000, 5] }), signal: controller.signal });
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    const seen = new Promise<number>((resolve) => upstream.once('message', (m: { aborted: number }) => resolve(m.aborted)));
    const abortedAt = performance.timeOrigin + performance.now();
    controller.abort();
    times.push((await seen) - abortedAt);
  }
  return times;
}

function classificationMicros(): number {
  const config = loadConfig({ file: 'config.example.yaml' });
  const classifier = new Classifier(config.routing.classification);
  // A Copilot Chat request: a long system prompt, a few turns, tools.
  const system = 'You are an AI programming assistant. Follow the user requirements carefully. '.repeat(80);
  const messages = [
    { role: 'system', content: system },
    { role: 'user', content: 'Here is my code: function add(a, b) { return a + b }' },
    { role: 'assistant', content: 'Looks fine.' },
    { role: 'user', content: 'Can you refactor this module so that the parsing is separate from the validation?' },
  ];
  const client = clientSignals({ 'user-agent': 'GitHubCopilotChat/0.30.0', 'x-interaction-type': 'conversation-agent' });
  const iterations = 20000;
  for (let i = 0; i < 2000; i++) classifier.classify(chatSignals(messages, true, client));
  const started = performance.now();
  for (let i = 0; i < iterations; i++) classifier.classify(chatSignals(messages, true, client));
  return ((performance.now() - started) / iterations) * 1000;
}

/**
 * CPU the bridge spends on GPU polling at 1 Hz (reading and parsing nvidia-smi's lines, per-process
 * queries), as a share of one core. Measured against the nvidia-smi stand-in replaying two GPUs;
 * nvidia-smi's own cost on a real driver is not part of this figure.
 */
async function gpuPollingShare(seconds: number): Promise<number> {
  const smi = nvidiaSmiStandIn({ gpu: path.join(TWO_GPU, 'query-gpu.noheader-nounits.txt'), apps: path.join(TWO_GPU, 'compute-apps.noheader-nounits.txt') });
  const monitor = new GpuMonitor({ command: smi.command, intervalMs: 1000, historyPoints: 3600, processesEveryMs: 10_000, log: pino({ level: 'silent' }), systemEveryMs: 5000 });
  await monitor.start();
  await sleep(1500);
  const before = process.cpuUsage();
  const started = performance.now();
  await sleep(seconds * 1000);
  const used = process.cpuUsage(before);
  const elapsed = performance.now() - started;
  await monitor.stop();
  return ((used.user + used.system) / 1000 / elapsed) * 100;
}

async function main(): Promise<void> {
  const upstreamPort = await freePort();
  const floorPort = await freePort();
  const bridgePort = await freePort();
  const expressPort = await freePort();
  const upstream = await forkTs('bench/upstream.ts', [String(upstreamPort)]);
  await forkTs('bench/floor-proxy.ts', [String(floorPort), String(upstreamPort)]);
  await forkTs('bench/express-proxy.ts', [String(expressPort), String(upstreamPort)]);
  const bridge = spawn(process.execPath, ['bin/copilot-bridge.js', 'serve', '--port', String(bridgePort)], {
    env: { ...process.env, OLLAMA_HOST: `127.0.0.1:${upstreamPort}`, LOG_LEVEL: 'warn', BRIDGE_DATA_DIR: mkdtempSync(path.join(os.tmpdir(), 'bench-')) },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  children.push(bridge);
  await waitHealthy(`http://127.0.0.1:${bridgePort}`);
  await sleep(1000);
  const idleRss = rssMb(bridge.pid as number);

  const targets: Target[] = [
    { name: 'direct', url: `http://127.0.0.1:${upstreamPort}`, pool: new Pool(`http://127.0.0.1:${upstreamPort}`, { connections: CONCURRENCY }) },
    { name: 'floor', url: `http://127.0.0.1:${floorPort}`, pool: new Pool(`http://127.0.0.1:${floorPort}`, { connections: CONCURRENCY }) },
    { name: 'express', url: `http://127.0.0.1:${expressPort}`, pool: new Pool(`http://127.0.0.1:${expressPort}`, { connections: CONCURRENCY }) },
    { name: 'bridge', url: `http://127.0.0.1:${bridgePort}`, pool: new Pool(`http://127.0.0.1:${bridgePort}`, { connections: CONCURRENCY }) },
  ];

  // Warm up every path, then measure in interleaved rounds so drift hits all three alike.
  for (const target of targets) await load(target, 300, 4);
  const sequential = new Map<string, number[]>(targets.map((t) => [t.name, []]));
  const concurrent = new Map<string, number[]>(targets.map((t) => [t.name, []]));
  const rates = new Map<string, number[]>(targets.map((t) => [t.name, []]));
  for (let roundIndex = 0; roundIndex < 3; roundIndex++) {
    for (const target of targets) {
      sequential.get(target.name)?.push(...(await load(target, Math.round(SEQUENTIAL / 3), 1)).latencies);
      const heavy = await load(target, Math.round(CONCURRENT / 3), CONCURRENCY);
      concurrent.get(target.name)?.push(...heavy.latencies);
      rates.get(target.name)?.push(heavy.rate);
    }
  }
  const streams = new Map<string, Awaited<ReturnType<typeof streamTimes>>>();
  const aborts = new Map<string, number[]>();
  for (const target of targets) {
    streams.set(target.name, await streamTimes(target, quick ? 5 : 20));
    // The bare express proxy never aborts its upstream: there is nothing to time.
    if (target.name !== 'express') aborts.set(target.name, await abortTimes(target, upstream, quick ? 5 : 20));
  }
  const busyRss = rssMb(bridge.pid as number);

  const stats = (values: number[]): { p50: number; p99: number } => {
    const sorted = [...values].sort((a, b) => a - b);
    return { p50: percentile(sorted, 50), p99: percentile(sorted, 99) };
  };
  const added = (map: Map<string, number[]>, name: string): { p50: number; p99: number } => {
    const base = stats(map.get('direct') ?? []);
    const own = stats(map.get(name) ?? []);
    return { p50: round(own.p50 - base.p50), p99: round(own.p99 - base.p99) };
  };
  const results = {
    machine: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model ?? 'unknown', node: process.version, date: new Date().toISOString().slice(0, 10) },
    requests: { sequential: SEQUENTIAL, concurrent: CONCURRENT, concurrency: CONCURRENCY },
    direct: { c1: stats(sequential.get('direct') ?? []), c32: stats(concurrent.get('direct') ?? []), rate: round(median(rates.get('direct') ?? [])) },
    floor: { c1: added(sequential, 'floor'), c32: added(concurrent, 'floor'), rate: round(median(rates.get('floor') ?? [])) },
    express: { c1: added(sequential, 'express'), c32: added(concurrent, 'express'), rate: round(median(rates.get('express') ?? [])) },
    bridge: { c1: added(sequential, 'bridge'), c32: added(concurrent, 'bridge'), rate: round(median(rates.get('bridge') ?? [])) },
    streaming: Object.fromEntries(
      targets.map((t) => [t.name, { firstByteMs: round(median(streams.get(t.name)?.firstByte ?? [])), chunkDelayMs: round(median(streams.get(t.name)?.chunkDelay ?? [])), abortMs: aborts.has(t.name) ? round(median(aborts.get(t.name) ?? [])) : null }]),
    ),
    rssMb: { idle: idleRss, afterLoad: busyRss },
    classificationMicros: round(classificationMicros(), 1),
    gpuPollingCorePercent: round(await gpuPollingShare(quick ? 5 : 20), 2),
  };
  for (const target of targets) await target.pool.close();

  const s = results.streaming;
  const ratio = (a: number, b: number): string => (b > 0 ? `${round(a / b, 2)}x` : 'n/a');
  const table = [
    `# Benchmark results`,
    '',
    `${results.machine.cpus} cores (${results.machine.cpu}), Node ${results.machine.node}, ${results.machine.date}. Client, proxies and upstream share the machine.`,
    `Upstream: a stand-in answering one NDJSON chunk with no delay. Added latency = the proxy's percentile minus the direct call's, same run.`,
    `"express + undici alone" is the framework the bridge is built on with nothing of the bridge in it: most of the bridge's per-request cost is already there.`,
    '',
    '| measure | direct | floor (node:http + pipe) | express + undici alone | copilot-bridge | bridge / floor | target |',
    '| --- | --- | --- | --- | --- | --- | --- |',
    `| added p50, 1 client (ms) | ${round(results.direct.c1.p50)} (absolute) | +${results.floor.c1.p50} | +${results.express.c1.p50} | +${results.bridge.c1.p50} | ${ratio(results.bridge.c1.p50, results.floor.c1.p50)} | <= 1.5x |`,
    `| added p99, 1 client (ms) | ${round(results.direct.c1.p99)} (absolute) | +${results.floor.c1.p99} | +${results.express.c1.p99} | +${results.bridge.c1.p99} | ${ratio(results.bridge.c1.p99, results.floor.c1.p99)} | <= 2x |`,
    `| added p50, ${CONCURRENCY} clients (ms) | ${round(results.direct.c32.p50)} (absolute) | +${results.floor.c32.p50} | +${results.express.c32.p50} | +${results.bridge.c32.p50} | ${ratio(results.bridge.c32.p50, results.floor.c32.p50)} | <= 1.5x |`,
    `| added p99, ${CONCURRENCY} clients (ms) | ${round(results.direct.c32.p99)} (absolute) | +${results.floor.c32.p99} | +${results.express.c32.p99} | +${results.bridge.c32.p99} | ${ratio(results.bridge.c32.p99, results.floor.c32.p99)} | <= 2x |`,
    `| requests/s at ${CONCURRENCY} clients | ${results.direct.rate} | ${results.floor.rate} | ${results.express.rate} | ${results.bridge.rate} | ${ratio(results.bridge.rate, results.floor.rate)} | >= 0.7x |`,
    `| stream first byte (ms) | ${s.direct?.firstByteMs} | ${s.floor?.firstByteMs} | ${s.express?.firstByteMs} | ${s.bridge?.firstByteMs} | added ${round((s.bridge?.firstByteMs ?? 0) - (s.direct?.firstByteMs ?? 0))} ms | added <= 2 ms |`,
    `| chunk forwarded after upstream wrote it (ms) | ${s.direct?.chunkDelayMs} | ${s.floor?.chunkDelayMs} | ${s.express?.chunkDelayMs} | ${s.bridge?.chunkDelayMs} | added ${round((s.bridge?.chunkDelayMs ?? 0) - (s.direct?.chunkDelayMs ?? 0))} ms | added <= 1 ms |`,
    `| client hang-up to upstream abort (ms) | ${s.direct?.abortMs} | ${s.floor?.abortMs} | never | ${s.bridge?.abortMs} | | <= 20 ms |`,
    '',
    `Bridge RSS: ${results.rssMb.idle} MB idle after start (target <= 120 MB), ${results.rssMb.afterLoad} MB after the run.`,
    `Classification of a typical Copilot Chat request (6 KB system prompt, 4 messages, tools): ${results.classificationMicros} µs (target well under 1 ms).`,
    `GPU polling at 1 Hz (two GPUs, nvidia-smi stand-in; the bridge's own share, RAM/CPU reads included): ${results.gpuPollingCorePercent}% of one core (target <= 1%).`,
    '',
    'Run it again with `npm run bench` (`npm run bench -- --quick` for a short run).',
    '',
  ].join('\n');
  writeFileSync('bench/results.json', `${JSON.stringify(results, null, 2)}\n`);
  writeFileSync('bench/results.md', table);
  process.stdout.write(table);
  process.exit(0);
}

await main();
