// The benchmark: the bridge measured side by side with a direct call to the same upstream and
// with the thinnest Node reverse proxy (the floor), in the same run, on this machine, on both
// generation surfaces (Ollama's native /api/chat and OpenAI's /v1/chat/completions).
// Writes bench/results.json and its section of bench/results.md. Usage: npm run bench [-- --quick]
// [-- --runs N] (N whole runs, each with fresh processes: the table gives the median run and the
// spread). npm run bench -- --workload runs the workload replay on real Ollama instead: bench/workload.ts.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { loadConfig } from '../src/config/load.js';
import { GpuMonitor } from '../src/gpu/monitor.js';
import { Classifier } from '../src/routing/classify.js';
import { chatSignals, clientSignals } from '../src/routing/signals.js';
import { nvidiaSmiStandIn, TWO_GPU_REPLIES } from '../test/support/gpu.js';
import {
  abortTimes,
  forkTs,
  freePort,
  load,
  median,
  percentile,
  round,
  rssMb,
  startBridgeProcess,
  stopChildren,
  streamTimes,
  SURFACES,
  target,
  type Surface,
  type Target,
} from './harness.js';
import { replaceSection, runWorkload } from './workload.js';

const quick = process.argv.includes('--quick');
const RUNS = Number(process.argv[process.argv.indexOf('--runs') + 1]) || 1;
const SEQUENTIAL = quick ? 300 : 900;
const CONCURRENT = quick ? 1500 : 4500;
const CONCURRENCY = 32;
/** Requests per target and surface at full load before anything is measured. */
const WARMUP = quick ? 1500 : 4000;
const ROUNDS = 3;
const STREAMS = quick ? 10 : 60;
/** Streams per target and surface, 16 at a time, before streams are measured. */
const STREAM_WARMUP = quick ? 160 : 480;
const STREAM_PIECES = 10;
const STREAM_GAP_MS = 5;

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
  const smi = nvidiaSmiStandIn(TWO_GPU_REPLIES);
  const monitor = new GpuMonitor({
    command: smi.command,
    intervalMs: 1000,
    historyPoints: 3600,
    processesEveryMs: 10_000,
    log: pino({ level: 'silent' }),
    systemEveryMs: 5000,
  });
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

type Name = 'direct' | 'floor' | 'express' | 'plumbing' | 'bridge';
/** What each target is called in the tables, in their order. */
const COLUMNS: Readonly<Record<Name, string>> = {
  direct: 'direct',
  floor: 'floor',
  express: 'express + undici',
  plumbing: 'plumbing',
  bridge: 'copilot-bridge',
};
const NAMES = Object.keys(COLUMNS) as Name[];

interface PathResults {
  /** Percentiles of the latency at 1 client (direct: absolute; proxies: added to the direct call's). */
  c1: Record<Name, { p50: number; p99: number }>;
  c32: Record<Name, { p50: number; p99: number }>;
  rate: Record<Name, number>;
  /** CPU of the proxy's process per request at 32 clients, ms (direct: none). */
  cpuPerRequestMs: Record<Name, number | null>;
  /** Streams: first byte (direct: absolute; proxies: added), and the delay each piece gets (same). */
  firstByteMs: Record<Name, number>;
  chunkDelayMs: Record<Name, number>;
}

/** One whole run: fresh processes, every measure on both surfaces. */
async function measure(): Promise<Run> {
  const upstreamPort = await freePort();
  const floorPort = await freePort();
  const expressPort = await freePort();
  const plumbingPort = await freePort();
  const bridgePort = await freePort();
  const upstream = await forkTs('bench/upstream.ts', [String(upstreamPort)]);
  const floor = await forkTs('bench/floor-proxy.ts', [String(floorPort), String(upstreamPort)]);
  const express = await forkTs('bench/express-proxy.ts', [String(expressPort), String(upstreamPort)]);
  const plumbing = await forkTs('bench/plumbing-proxy.ts', [String(plumbingPort), String(upstreamPort)]);
  const bridge = await startBridgeProcess(bridgePort, upstreamPort);
  await sleep(1500);
  const idleRss = { bridge: rssMb(bridge.pid as number), floor: rssMb(floor.pid as number) };

  const targets: Record<Name, Target> = {
    direct: target('direct', upstreamPort, undefined, CONCURRENCY),
    floor: target('floor', floorPort, floor.pid, CONCURRENCY),
    express: target('express', expressPort, express.pid, CONCURRENCY),
    plumbing: target('plumbing', plumbingPort, plumbing.pid, CONCURRENCY),
    bridge: target('bridge', bridgePort, bridge.pid, CONCURRENCY),
  };

  // Every path warmed on both surfaces at full load before anything is measured: the surface
  // measured first otherwise carried each process's start-up (JIT compilation, heap growth), which
  // made its CPU per request about twice the steady one, the floor's included.
  for (const surface of SURFACES) for (const name of NAMES) await load(targets[name], surface, WARMUP, CONCURRENCY);
  // Streams as well: the floor and the plumbing pass a stream through the same code as a single
  // answer, but the bridge writes streams with code of its own, which was otherwise measured
  // before V8 had optimized it.
  for (const surface of SURFACES) {
    for (const name of NAMES) {
      await Promise.all(Array.from({ length: 16 }, () => streamTimes(targets[name], surface, STREAM_WARMUP / 16, STREAM_PIECES, 0)));
    }
  }
  const results = {} as Record<Surface, PathResults>;
  for (const surface of SURFACES) {
    // Interleaved rounds, so that drift hits every path alike.
    const sequential = new Map<Name, number[]>(NAMES.map((n) => [n, []]));
    const concurrent = new Map<Name, number[]>(NAMES.map((n) => [n, []]));
    const rates = new Map<Name, number[]>(NAMES.map((n) => [n, []]));
    const cpu = new Map<Name, { ms: number; requests: number }>(NAMES.map((n) => [n, { ms: 0, requests: 0 }]));
    for (let roundIndex = 0; roundIndex < ROUNDS; roundIndex++) {
      for (const name of NAMES) {
        sequential.get(name)?.push(...(await load(targets[name], surface, Math.round(SEQUENTIAL / ROUNDS), 1)).latencies);
        const heavy = await load(targets[name], surface, Math.round(CONCURRENT / ROUNDS), CONCURRENCY);
        concurrent.get(name)?.push(...heavy.latencies);
        rates.get(name)?.push(heavy.rate);
        const used = cpu.get(name) as { ms: number; requests: number };
        used.ms += heavy.cpuMs;
        used.requests += heavy.requests;
      }
    }
    const streams = new Map<Name, { firstByte: number[]; chunkDelay: number[] }>(NAMES.map((n) => [n, { firstByte: [], chunkDelay: [] }]));
    // One stream per target in turn: a single stream's figures move with how busy the machine is
    // at that moment, so that drift hits every target alike.
    for (let streamIndex = 0; streamIndex < STREAMS; streamIndex++) {
      for (const name of NAMES) {
        const times = await streamTimes(targets[name], surface, 1, STREAM_PIECES, STREAM_GAP_MS);
        streams.get(name)?.firstByte.push(...times.firstByte);
        streams.get(name)?.chunkDelay.push(...times.chunkDelay);
      }
    }

    const stats = (values: readonly number[]): { p50: number; p99: number } => {
      const sorted = [...values].sort((a, b) => a - b);
      return { p50: percentile(sorted, 50), p99: percentile(sorted, 99) };
    };
    const added = (map: Map<Name, number[]>, name: Name): { p50: number; p99: number } => {
      const base = stats(map.get('direct') ?? []);
      const own = stats(map.get(name) ?? []);
      return name === 'direct' ? { p50: round(own.p50), p99: round(own.p99) } : { p50: round(own.p50 - base.p50), p99: round(own.p99 - base.p99) };
    };
    const addedMedian = (pick: (times: { firstByte: number[]; chunkDelay: number[] }) => number[], name: Name): number => {
      const own = median(pick(streams.get(name) ?? { firstByte: [], chunkDelay: [] }));
      const base = median(pick(streams.get('direct') ?? { firstByte: [], chunkDelay: [] }));
      return round(name === 'direct' ? own : own - base, 3);
    };
    const byName = <T>(value: (name: Name) => T): Record<Name, T> => Object.fromEntries(NAMES.map((name) => [name, value(name)])) as Record<Name, T>;
    results[surface] = {
      c1: byName((name) => added(sequential, name)),
      c32: byName((name) => added(concurrent, name)),
      rate: byName((name) => round(median(rates.get(name) ?? []))),
      cpuPerRequestMs: byName((name) => {
        const used = cpu.get(name) as { ms: number; requests: number };
        return name === 'direct' ? null : round(used.ms / used.requests, 3);
      }),
      firstByteMs: byName((name) => addedMedian((t) => t.firstByte, name)),
      chunkDelayMs: byName((name) => addedMedian((t) => t.chunkDelay, name)),
    };
  }
  const aborts = { floor: await abortTimes(targets.floor, upstream, quick ? 5 : 20), bridge: await abortTimes(targets.bridge, upstream, quick ? 5 : 20) };
  const busyRss = rssMb(bridge.pid as number);
  for (const name of NAMES) await targets[name].pool.close();

  await stopChildren();
  return {
    paths: results,
    abortMs: { floor: round(median(aborts.floor)), bridge: round(median(aborts.bridge)) },
    rssMb: { bridgeIdle: idleRss.bridge, floorIdle: idleRss.floor, bridgeAfterLoad: busyRss },
    loadAverage: round(os.loadavg()[0] ?? NaN),
  };
}

interface Run {
  paths: Record<Surface, PathResults>;
  abortMs: { floor: number; bridge: number };
  rssMb: { bridgeIdle: number; floorIdle: number; bridgeAfterLoad: number };
  /** The 1-minute load average at the end of the run: how busy the machine was besides. */
  loadAverage: number;
}

async function main(): Promise<void> {
  const runs: Run[] = [];
  for (let i = 0; i < RUNS; i++) {
    runs.push(await measure());
    process.stderr.write(`run ${i + 1} of ${RUNS} done\n`);
  }
  const summary = {
    machine: {
      cpus: os.cpus().length,
      cpu: os.cpus()[0]?.model ?? 'unknown',
      node: process.version,
      date: new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC',
    },
    requests: {
      sequential: SEQUENTIAL,
      concurrent: CONCURRENT,
      concurrency: CONCURRENCY,
      rounds: ROUNDS,
      streams: STREAMS,
      piecesPerStream: STREAM_PIECES,
      runs: RUNS,
    },
    runs,
    classificationMicros: round(classificationMicros(), 1),
    gpuPollingCorePercent: round(await gpuPollingShare(quick ? 5 : 20), 2),
  };

  const ratio = (a: number | null, b: number | null): number => (a === null || b === null || b <= 0 ? NaN : round(a / b, 2));
  const verdict = (value: number, limit: number): string => (Number.isNaN(value) ? 'n/a' : value <= limit ? 'met' : 'NOT met');
  const spread = (all: number[]): string => {
    const values = all.filter((v) => !Number.isNaN(v));
    return values.length < 2 ? '' : `${Math.min(...values)}–${Math.max(...values)}`;
  };
  /** The run whose ratio is the median one: its figures are shown, the other runs' ratios give the spread. */
  const medianRun = <T>(values: Array<{ ratio: number; run: T }>): { ratio: number; run: T } => {
    const sorted = [...values].sort((a, b) => (Number.isNaN(a.ratio) ? 1 : Number.isNaN(b.ratio) ? -1 : a.ratio - b.ratio));
    return sorted[Math.floor((sorted.length - 1) / 2)] as { ratio: number; run: T };
  };
  const rows: string[] = [];
  const row = (measure: string, surface: Surface, pick: (r: PathResults) => Record<Name, number | null>, limit: number, unit = 'ms'): void => {
    const each = runs.map((run) => {
      const values = pick(run.paths[surface]);
      return { ratio: ratio(values.bridge, values.floor), run: values };
    });
    const { ratio: r, run: values } = medianRun(each);
    const cells = NAMES.map((name) => (values[name] === null ? '' : String(values[name])));
    rows.push(
      `| ${measure}, ${surface} (${unit}) | ${cells.join(' | ')} | **${Number.isNaN(r) ? 'n/a' : `${r}x`}** | ${spread(each.map((e) => e.ratio))} | <= ${limit}x | ${verdict(r, limit)} |`,
    );
  };
  for (const surface of SURFACES) {
    row('CPU per request, 32 clients', surface, (r) => r.cpuPerRequestMs, 1.7);
    row('added p99, 32 clients', surface, (r) => byP(r.c32, 'p99'), 2);
    row('added p50, 1 client', surface, (r) => byP(r.c1, 'p50'), 1.5);
    row('added per streamed chunk', surface, (r) => r.chunkDelayMs, 1.2);
    row('first byte added', surface, (r) => r.firstByteMs, 1.5);
  }
  const rss = medianRun(runs.map((run) => ({ ratio: run.rssMb.bridgeIdle, run: run.rssMb })));
  const abort = medianRun(runs.map((run) => ({ ratio: run.abortMs.bridge, run: run.abortMs })));
  const informative: string[] = [];
  for (const surface of SURFACES) {
    const r = (runs[Math.floor((runs.length - 1) / 2)] as Run).paths[surface];
    const line = (measure: string, values: Record<Name, number>): string =>
      `| ${measure} | ${NAMES.map((name) => values[name]).join(' | ')} | ${ratio(values.bridge, values.floor)}x |`;
    informative.push(line(`added p50, 32 clients, ${surface} (ms)`, byP(r.c32, 'p50')));
    informative.push(line(`added p99, 1 client, ${surface} (ms)`, byP(r.c1, 'p99')));
    informative.push(line(`requests/s at 32 clients, ${surface}`, r.rate));
  }
  const profiles = ['before', 'after']
    .map((label) => path.join('bench', `profile-${label}.md`))
    .filter((file) => existsSync(file))
    .map((file) => readFileSync(file, 'utf8').trim());

  const m = summary.machine;
  const table = [
    `## Proxy cost against a fast upstream stand-in`,
    '',
    `${m.cpus} cores (${m.cpu}), Node ${m.node}, ${m.date}; ${RUNS} run${RUNS === 1 ? '' : 's'}, 1-minute load average at the end of each: ${runs.map((r) => r.loadAverage).join(', ')}. Client, proxies and upstream share the machine.`,
    `Upstream: a stand-in answering at once (one line, or a stream of ${STREAM_PIECES} pieces ${STREAM_GAP_MS} ms apart). Every figure of a proxy is what it adds to the direct call, measured in the same run; the floor is the thinnest node:http + pipe reverse proxy (bench/floor-proxy.ts), "express + undici" the framework alone (bench/express-proxy.ts), "plumbing" what the bridge is built from without any of its features: node:http, undici's dispatcher, the body and every answer line parsed and serialized again (bench/plumbing-proxy.ts).`,
    `The bridge runs headless (\`copilot-bridge serve\`) with routing, history, metrics and GPU monitoring on; native = \`/api/chat\` with a named model, openai = \`/v1/chat/completions\` with \`auto\` (classified per request). Per run, path and target, after ${WARMUP} requests and ${STREAM_WARMUP} streams of warm-up on each path: ${CONCURRENT} requests at ${CONCURRENCY} clients and ${SEQUENTIAL} at 1 client, in ${ROUNDS} interleaved rounds, and ${STREAMS} streams, one per target in turn. CPU = user + system time of the proxy's process (all threads) over the 32-client rounds, divided by the requests. Each row shows the run with the median ratio; "spread" is the lowest and highest ratio of all runs.`,
    '',
    `| measure | ${NAMES.map((name) => COLUMNS[name]).join(' | ')} | bridge / floor | spread | target | |`,
    `|${' --- |'.repeat(NAMES.length + 5)}`,
    ...rows,
    `| idle RSS, headless (MB) | | ${rss.run.floorIdle} | | | ${rss.run.bridgeIdle} | | ${spread(runs.map((r) => r.rssMb.bridgeIdle))} | <= 60 MB | ${verdict(rss.run.bridgeIdle, 60)} |`,
    `| client hang-up to upstream abort (ms) | | ${abort.run.floor} | never | | ${abort.run.bridge} | | ${spread(runs.map((r) => r.abortMs.bridge))} | <= 20 ms | ${verdict(abort.run.bridge, 20)} |`,
    '',
    'For information (the middle run):',
    '',
    `| measure | direct (absolute) | ${NAMES.slice(1)
      .map((name) => COLUMNS[name])
      .join(' | ')} | bridge / floor |`,
    `|${' --- |'.repeat(NAMES.length + 2)}`,
    ...informative,
    '',
    `Bridge RSS ${rss.run.bridgeAfterLoad} MB after the run.`,
    `Classification of a typical Copilot Chat request (6 KB system prompt, 4 messages, tools): ${summary.classificationMicros} µs (target well under 1 ms).`,
    `GPU polling at 1 Hz (two GPUs, nvidia-smi stand-in; the bridge's own share, RAM/CPU reads included): ${summary.gpuPollingCorePercent}% of one core (target <= 1%).`,
    '',
    'Run it again with `npm run bench` (`-- --runs 3` for several runs, `-- --quick` for a short one); `npm run bench:profile -- <label>` writes the CPU profile summary below.',
    '',
    ...profiles.flatMap((p) => [p, '']),
    '',
  ].join('\n');
  writeFileSync('bench/results.json', `${JSON.stringify(summary, null, 2)}\n`);
  replaceSection('bench/results.md', '## Proxy cost', table);
  process.stdout.write(table);
  process.exit(0);
}

function byP(values: Record<Name, { p50: number; p99: number }>, p: 'p50' | 'p99'): Record<Name, number> {
  return Object.fromEntries(NAMES.map((name) => [name, values[name][p]])) as Record<Name, number>;
}

if (process.argv.includes('--workload')) {
  await runWorkload();
  process.exit(0);
}
await main();
