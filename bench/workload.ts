// The workload replay: what users feel on real Ollama instances. A typing client sends ghost
// text every 150 ms and cancels the one before; chat clients stream long answers; a background
// client sends embeddings. The same workload runs (a) straight at one Ollama, (b) through the
// bridge with the scheduler off, (c) through the bridge with the scheduler on, in one run.
// A counting relay in front of each Ollama sees what Ollama really did.
// Usage: npm run bench -- --workload [--seconds 25]   (seconds per configuration)
// On a machine with real GPUs: WORKLOAD_OLLAMA=http://127.0.0.1:11434,http://127.0.0.1:11435
// WORKLOAD_SIMPLE=<model> WORKLOAD_COMPLEX=<model> use those instances instead of the test rig.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort, RIG_MODELS, startRig, type OllamaRig } from '../test/support/ollama-rig.js';

const argValue = (name: string, fallback: number): number => {
  const at = process.argv.indexOf(name);
  return at >= 0 ? Number(process.argv[at + 1]) : fallback;
};
const PHASE_SECONDS = argValue('--seconds', 25);
const KEYSTROKE_MS = 150;
const KEYSTROKES_PER_BURST = 5;
const TYPING_PAUSE_MS = 1200;
const GHOST_TOKENS = 4;
const CHAT_CLIENTS = 3;
const CHAT_TOKENS = 400;
const EMBED_EVERY_MS = 1000;
/** OLLAMA_NUM_PARALLEL of each instance: one slot for chats and one kept for ghost text (routing.scheduler.fim_reserved_slots). */
const SLOTS = 2;

const SIMPLE = process.env.WORKLOAD_SIMPLE ?? RIG_MODELS.simple;
const COMPLEX = process.env.WORKLOAD_COMPLEX ?? RIG_MODELS.complex;

/** One instance as the bench sees it: a relay that forwards to Ollama and records what went through. */
class Relay {
  readonly server: Server;
  url = '';
  /** Generation and embedding requests Ollama is working on or holding in its queue. */
  inFlight = 0;
  /** Token lines Ollama wrote, by request id, with the time each arrived. */
  readonly tokens = new Map<number, number[]>();
  /** Request ids that reached Ollama. */
  readonly seen = new Set<number>();
  /** When the caller hung up on a request before its answer ended, by request id: Ollama's connection closed then. */
  readonly hungUp = new Map<number, number>();

  constructor(
    readonly name: string,
    private readonly upstream: URL,
  ) {
    this.server = createServer((req, res) => this.forward(req, res));
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  private forward(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const id = Number(/req-(\d+)/.exec(body.toString())?.[1] ?? NaN);
      const counted = req.method === 'POST' && /^\/api\/(chat|generate|embed)$/.test(req.url ?? '') && Number.isFinite(id);
      if (counted) {
        this.inFlight += 1;
        this.seen.add(id);
      }
      let open = true;
      // Set when the relay itself ends the answer because Ollama's side failed: not a hang-up.
      let failedUpstream = false;
      const done = (): void => {
        if (open && counted) this.inFlight -= 1;
        open = false;
      };
      const upstream = httpRequest(
        { host: this.upstream.hostname, port: this.upstream.port, method: req.method, path: req.url, headers: { ...req.headers, host: this.upstream.host } },
        (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.on('data', (chunk: Buffer) => {
            if (counted) {
              const now = performance.now();
              const lines = chunk.toString().split('"done":false').length - 1;
              const list = this.tokens.get(id) ?? [];
              for (let i = 0; i < lines; i++) list.push(now);
              this.tokens.set(id, list);
            }
            res.write(chunk);
          });
          answer.on('end', () => {
            done();
            res.end();
          });
          answer.on('error', () => {
            done();
            failedUpstream = true;
            res.destroy();
          });
        },
      );
      upstream.on('error', () => {
        done();
        failedUpstream = true;
        res.destroy();
      });
      // The client (the bridge, or the bench itself) hung up: Ollama sees its connection close.
      res.on('close', () => {
        if (!res.writableFinished) {
          upstream.destroy();
          if (counted && !failedUpstream) this.hungUp.set(id, performance.now());
        }
        done();
      });
      upstream.end(body);
    });
  }
}

type Kind = 'ghost' | 'chat' | 'embed';

interface Sent {
  id: number;
  kind: Kind;
  sentAt: number;
  firstTokenAt: number | null;
  endedAt: number | null;
  cancelledAt: number | null;
  /** The bridge answered it empty (superseded or too late). */
  dropped: boolean;
  /** An error status or an error line instead of an answer. */
  failed: boolean;
}

interface Target {
  name: string;
  base: string;
  ghost(prompt: string, signal: AbortSignal): Promise<Response>;
  chat(content: string, signal: AbortSignal): Promise<Response>;
  embed(input: string, signal: AbortSignal): Promise<Response>;
  /** Requests waiting in the bridge per backend (none for a direct Ollama). */
  queued(): Promise<Record<string, number>>;
}

let nextId = 1;

/** Runs the workload against one target for `seconds`; returns every request and the busy samples. */
async function replay(target: Target, relays: Relay[], seconds: number): Promise<{ sent: Sent[]; samples: Array<{ busy: boolean[]; queued: number[] }> }> {
  const sent: Sent[] = [];
  const until = performance.now() + seconds * 1000;
  const controllers = new Set<AbortController>();

  const run = async (kind: Kind, call: (text: string, signal: AbortSignal) => Promise<Response>, text: string): Promise<Sent> => {
    const record: Sent = { id: nextId++, kind, sentAt: performance.now(), firstTokenAt: null, endedAt: null, cancelledAt: null, dropped: false, failed: false };
    sent.push(record);
    const abort = new AbortController();
    controllers.add(abort);
    (record as Sent & { abort?: AbortController }).abort = abort;
    try {
      const response = await call(`req-${record.id} ${text}`, abort.signal);
      record.dropped = response.headers.get('x-bridge-dropped') !== null;
      record.failed = response.status !== 200;
      const reader = (response.body as ReadableStream<Uint8Array>).getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (decoder.decode(value, { stream: true }).includes('"error"')) record.failed = true;
        if (record.firstTokenAt === null && !record.dropped && !record.failed && value.byteLength > 0) record.firstTokenAt = performance.now();
      }
      record.endedAt = performance.now();
    } catch {
      // cancelled by the client below, or the phase ended
    } finally {
      controllers.delete(abort);
    }
    return record;
  };
  const cancel = (record: Sent): void => {
    if (record.endedAt !== null || record.cancelledAt !== null) return;
    record.cancelledAt = performance.now();
    (record as Sent & { abort?: AbortController }).abort?.abort();
  };

  const typist = async (): Promise<void> => {
    let previous: Sent | undefined;
    let line = 0;
    while (performance.now() < until) {
      for (let key = 0; key < KEYSTROKES_PER_BURST && performance.now() < until; key++) {
        if (previous !== undefined) cancel(previous);
        const prompt = `def handler_${line}(event):\n    total = 0\n    for item in event.items:\n        total += item.${'price'.slice(0, key + 1)}`;
        const pending = run('ghost', target.ghost, prompt);
        previous = sent.at(-1);
        void pending;
        await sleep(KEYSTROKE_MS);
      }
      line += 1;
      await sleep(TYPING_PAUSE_MS);
    }
  };
  const chatter = async (index: number): Promise<void> => {
    while (performance.now() < until) await run('chat', target.chat, `client ${index}: explain how to design a rate limiter for this service, step by step`);
  };
  const background = async (): Promise<void> => {
    while (performance.now() < until) {
      await run('embed', target.embed, 'index this file for retrieval');
      await sleep(EMBED_EVERY_MS);
    }
  };

  const samples: Array<{ busy: boolean[]; queued: number[] }> = [];
  const sampler = async (): Promise<void> => {
    while (performance.now() < until) {
      const bridgeQueued = await target.queued().catch(() => ({}) as Record<string, number>);
      samples.push({
        busy: relays.map((r) => r.inFlight > 0),
        // Work waiting for a backend: in Ollama's own queue (beyond its one slot) or in the bridge's.
        queued: relays.map((r) => Math.max(0, r.inFlight - SLOTS) + (bridgeQueued[r.name] ?? 0)),
      });
      await sleep(100);
    }
  };

  await Promise.all([typist(), ...Array.from({ length: CHAT_CLIENTS }, (_, i) => chatter(i)), background(), sampler()]);
  for (const controller of controllers) controller.abort();
  // Let Ollama notice the closed connections before the next configuration starts.
  while (relays.some((r) => r.inFlight > 0)) await sleep(50);
  return { sent, samples };
}

const percentile = (values: number[], p: number): number | null => {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? null;
};

interface Summary {
  ghost: { sent: number; answered: number; cancelled: number; dropped: number; ttftP50: number | null; ttftP95: number | null };
  chat: { answered: number; ttftP50: number | null; ttftP95: number | null };
  /** Requests answered with an error (any kind). */
  errors: number;
  embeddings: number;
  /** Tokens Ollama generated after the client had cancelled, over all cancelled requests. */
  tokensAfterCancel: number;
  /** Requests cancelled before their first token while still in the bridge's queue: never sent to Ollama. */
  cancelledInBridge: number;
  /** Tokens Ollama generated for those (none can reach it; measured all the same). */
  tokensForCancelledInBridge: number;
  /** Requests cancelled before their first token after they were sent to Ollama (in its queue or in prefill). */
  cancelledAtOllama: number;
  /** Tokens Ollama generated for those after the client cancelled. */
  tokensForCancelledAtOllama: number;
  /** From a client's cancel to Ollama's connection closing, over every request cancelled while at Ollama: p50 and max, ms. */
  cancelReachedOllamaMs: { p50: number | null; max: number | null };
  /** Per backend: share of the time it was idle while another backend had work waiting. */
  idleWhileOthersQueued: Record<string, number | null>;
}

function summarize(sent: Sent[], samples: Array<{ busy: boolean[]; queued: number[] }>, relays: Relay[]): Summary {
  // Answered: the first token arrived before the client cancelled (a keystroke may cancel it later).
  const answered = (s: Sent): boolean => s.firstTokenAt !== null && (s.cancelledAt === null || s.firstTokenAt < s.cancelledAt);
  const ttft = (list: Sent[]): number[] => list.filter(answered).map((s) => (s.firstTokenAt as number) - s.sentAt);
  const ghosts = sent.filter((s) => s.kind === 'ghost');
  const chats = sent.filter((s) => s.kind === 'chat');
  const tokensOf = (id: number): number[] => relays.flatMap((r) => r.tokens.get(id) ?? []);
  const cancelled = sent.filter((s) => s.cancelledAt !== null);
  const unanswered = cancelled.filter((s) => !answered(s));
  const after = (s: Sent): number => tokensOf(s.id).filter((t) => t > (s.cancelledAt as number)).length;
  const reachedOllama = (s: Sent): boolean => relays.some((r) => r.seen.has(s.id));
  const inBridge = unanswered.filter((s) => !reachedOllama(s));
  const atOllama = unanswered.filter(reachedOllama);
  const propagation = cancelled.flatMap((s) =>
    relays.flatMap((r) => {
      const closedAt = r.hungUp.get(s.id);
      return closedAt === undefined || closedAt < (s.cancelledAt as number) ? [] : [closedAt - (s.cancelledAt as number)];
    }),
  );
  const idle: Record<string, number | null> = {};
  relays.forEach((relay, index) => {
    const othersWaiting = samples.filter((x) => x.queued.some((q, i) => i !== index && q > 0));
    idle[relay.name] = othersWaiting.length === 0 ? null : Math.round((othersWaiting.filter((x) => !x.busy[index]).length / othersWaiting.length) * 100) / 100;
  });
  const round = (n: number | null): number | null => (n === null ? null : Math.round(n));
  return {
    ghost: {
      sent: ghosts.length,
      answered: ghosts.filter(answered).length,
      cancelled: ghosts.filter((s) => s.cancelledAt !== null && !answered(s)).length,
      dropped: ghosts.filter((s) => s.dropped).length,
      ttftP50: round(percentile(ttft(ghosts), 50)),
      ttftP95: round(percentile(ttft(ghosts), 95)),
    },
    chat: { answered: ttft(chats).length, ttftP50: round(percentile(ttft(chats), 50)), ttftP95: round(percentile(ttft(chats), 95)) },
    embeddings: sent.filter((s) => s.kind === 'embed' && s.endedAt !== null && !s.failed).length,
    errors: sent.filter((s) => s.failed).length,
    tokensAfterCancel: cancelled.reduce((sum, s) => sum + after(s), 0),
    cancelledInBridge: inBridge.length,
    tokensForCancelledInBridge: inBridge.reduce((sum, s) => sum + after(s), 0),
    cancelledAtOllama: atOllama.length,
    tokensForCancelledAtOllama: atOllama.reduce((sum, s) => sum + after(s), 0),
    cancelReachedOllamaMs: { p50: round(percentile(propagation, 50)), max: round(percentile(propagation, 100)) },
    idleWhileOthersQueued: idle,
  };
}

const post = (url: string, body: unknown, signal: AbortSignal, headers: Record<string, string> = {}): Promise<Response> =>
  fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body), signal });

function directTarget(relay: Relay): Target {
  return {
    name: 'direct',
    base: relay.url,
    ghost: (prompt, signal) =>
      post(
        `${relay.url}/api/generate`,
        { model: SIMPLE, prompt, suffix: '\n    return total\n', stream: true, options: { num_predict: GHOST_TOKENS } },
        signal,
      ),
    chat: (content, signal) =>
      post(`${relay.url}/api/chat`, { model: COMPLEX, stream: true, messages: [{ role: 'user', content }], options: { num_predict: CHAT_TOKENS } }, signal),
    embed: (input, signal) => post(`${relay.url}/api/embed`, { model: COMPLEX, input }, signal),
    queued: async () => ({}),
  };
}

function bridgeTarget(name: string, base: string): Target {
  return {
    name,
    base,
    // What Copilot sends for ghost text, from one editor session.
    ghost: (prompt, signal) =>
      post(
        `${base}/v1/engines/${encodeURIComponent(SIMPLE)}/completions`,
        { prompt, suffix: '\n    return total\n', max_tokens: GHOST_TOKENS, stream: true, n: 1 },
        signal,
        { 'vscode-sessionid': 'bench-typist', 'user-agent': 'GithubCopilot/1.300' },
      ),
    chat: (content, signal) =>
      post(`${base}/api/chat`, { model: COMPLEX, stream: true, messages: [{ role: 'user', content }], options: { num_predict: CHAT_TOKENS } }, signal),
    embed: (input, signal) => post(`${base}/api/embed`, { model: COMPLEX, input }, signal),
    queued: async () => {
      const state = (await (await fetch(`${base}/bridge/api/state`)).json()) as {
        scheduler: { pools: Array<{ backend: string; queued: Record<string, number> }> };
      };
      const perBackend: Record<string, number> = {};
      for (const pool of state.scheduler.pools)
        perBackend[pool.backend] = (perBackend[pool.backend] ?? 0) + Object.values(pool.queued).reduce((a, b) => a + b, 0);
      return perBackend;
    },
  };
}

async function startBridgeProcess(relays: Relay[], scheduler: boolean, children: ChildProcess[]): Promise<string> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bench-workload-'));
  const port = await freePort();
  // The seed deployment's config: both tiers prefer GPU 0.
  writeFileSync(
    path.join(dir, 'config.yaml'),
    `dual_gpu: true
backends:
${relays.map((r, i) => `  - { name: ${r.name}, url: "${r.url}", gpu: ${i}, parallel: ${SLOTS} }`).join('\n')}
models:
  simple: { name: "${SIMPLE}", gpu_preference: 0 }
  complex: { name: "${COMPLEX}", gpu_preference: 0 }
gpu_monitor:
  enabled: false
routing:
  scheduler:
    enabled: ${scheduler}
    fim_reserved_slots: 1
monitoring:
  logging:
    level: warn
`,
  );
  const child = spawn(process.execPath, ['bin/copilot-bridge.js', 'serve', '--port', String(port), '--config', path.join(dir, 'config.yaml')], {
    env: { ...process.env, BRIDGE_DATA_DIR: dir },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  children.push(child);
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 200; i++) {
    try {
      if ((await fetch(`${base}/health`)).ok) return base;
    } catch {
      // not yet
    }
    await sleep(100);
  }
  throw new Error('the bridge did not start');
}

export async function runWorkload(): Promise<void> {
  const children: ChildProcess[] = [];
  process.on('exit', () => children.forEach((c) => c.kill('SIGKILL')));
  let rig: OllamaRig | undefined;
  let upstreams: URL[];
  if (process.env.WORKLOAD_OLLAMA !== undefined) {
    upstreams = process.env.WORKLOAD_OLLAMA.split(',').map((u) => new URL(u.trim()));
  } else {
    rig = await startRig(2, SLOTS, true);
    upstreams = rig.instances.map((i) => new URL(i.url));
  }
  const relays = upstreams.map((u, i) => new Relay(`gpu${i}`, u));
  for (const relay of relays) await relay.listen();
  try {
    // The models are in memory on GPU 0, as after a while of use with the seed's config (both
    // tiers prefer GPU 0); GPU 1 is free. Spreading the load costs the scheduler one cold load there.
    for (const model of new Set([SIMPLE, COMPLEX]))
      await (await post(`${(relays[0] as Relay).url}/api/generate`, { model, prompt: '', keep_alive: '30m' }, AbortSignal.timeout(120_000))).text();
    const results: Record<string, Summary> = {};
    const run = async (target: Target): Promise<void> => {
      process.stderr.write(`workload: ${target.name} for ${PHASE_SECONDS} s\n`);
      const { sent, samples } = await replay(target, relays, PHASE_SECONDS);
      results[target.name] = summarize(sent, samples, relays);
    };
    await run(directTarget(relays[0] as Relay));
    for (const scheduler of [false, true]) {
      const base = await startBridgeProcess(relays, scheduler, children);
      await run(bridgeTarget(scheduler ? 'scheduler' : 'no-scheduler', base));
      children.at(-1)?.kill('SIGTERM');
    }
    writeResults(results);
  } finally {
    await Promise.all(relays.map((r) => new Promise((resolve) => r.server.close(resolve))));
    await rig?.stop();
  }
}

function writeResults(results: Record<string, Summary>): void {
  const machine = `${os.cpus().length} cores (${os.cpus()[0]?.model ?? 'unknown'}), load average ${os
    .loadavg()
    .map((l) => l.toFixed(1))
    .join(' / ')} at the end, Node ${process.version}, ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC`;
  const [a, b, c] = [results.direct, results['no-scheduler'], results.scheduler] as [Summary, Summary, Summary];
  const ms = (n: number | null): string => (n === null ? 'n/a' : `${n} ms`);
  const share = (s: Summary): string =>
    Object.entries(s.idleWhileOthersQueued)
      .map(([name, v]) => `${name} ${v === null ? 'n/a' : `${Math.round(v * 100)}%`}`)
      .join(', ');
  const ratio = b.ghost.ttftP95 !== null && c.ghost.ttftP95 !== null && b.ghost.ttftP95 > 0 ? (c.ghost.ttftP95 / b.ghost.ttftP95).toFixed(2) : 'n/a';
  const worstIdle = Math.max(...Object.values(c.idleWhileOthersQueued).map((v) => v ?? 0));
  const rows = (pick: (s: Summary) => string): string => `${pick(a)} | ${pick(b)} | ${pick(c)}`;
  const section = [
    '## Workload: what users feel on two real Ollama instances',
    '',
    `${machine}. Two Ollama ${process.env.WORKLOAD_OLLAMA === undefined ? `0.11.4 instances of the test rig (CPU, each pinned to a core of its own with one runner thread, as a GPU of its own; tiny random-weight model, one model file behind both tier names, OLLAMA_NUM_PARALLEL=${SLOTS})` : `instances at ${process.env.WORKLOAD_OLLAMA}`}; ${PHASE_SECONDS} s per configuration, one after the other in one run.`,
    `Workload: ghost text (${GHOST_TOKENS} tokens) on every keystroke, ${KEYSTROKES_PER_BURST} keystrokes ${KEYSTROKE_MS} ms apart then a ${TYPING_PAUSE_MS} ms pause, each keystroke cancelling the request before; ${CHAT_CLIENTS} chat clients streaming ${CHAT_TOKENS}-token answers back to back; one client sending embeddings every ${EMBED_EVERY_MS / 1000} s. Both tiers prefer GPU 0, as in the seed deployment's config, and the model starts loaded on GPU 0 only. The bridge knows each instance's ${SLOTS} slots (\`parallel: ${SLOTS}\`) and keeps one for ghost text (\`fim_reserved_slots: 1\`, which only the scheduler uses).`,
    '',
    '| measure | (a) direct to one Ollama | (b) bridge, scheduler off | (c) bridge, scheduler on | target |',
    '| --- | --- | --- | --- | --- |',
    `| ghost text first token p50 (answered before a keystroke cancelled it) | ${rows((s) => ms(s.ghost.ttftP50))} | |`,
    `| ghost text first token p95 (answered before a keystroke cancelled it) | ${rows((s) => ms(s.ghost.ttftP95))} | (c) <= 0.5x (b): ${ratio}x |`,
    `| ghost text sent / answered / cancelled before a first token / answered empty by the bridge | ${rows((s) => `${s.ghost.sent} / ${s.ghost.answered} / ${s.ghost.cancelled} / ${s.ghost.dropped}`)} | |`,
    `| chat first token p50 | ${rows((s) => ms(s.chat.ttftP50))} | |`,
    `| chat first token p95 | ${rows((s) => ms(s.chat.ttftP95))} | |`,
    `| chat answers / embeddings done / errors | ${rows((s) => `${s.chat.answered} / ${s.embeddings} / ${s.errors}`)} | |`,
    `| tokens Ollama generated after the client cancelled | ${rows((s) => String(s.tokensAfterCancel))} | |`,
    `| requests cancelled before a first token: while queued in the bridge (never sent to Ollama) / after they were sent to Ollama | ${rows((s) => `${s.cancelledInBridge} / ${s.cancelledAtOllama}`)} | |`,
    `| tokens Ollama generated for them after the cancel: queued in the bridge / sent to Ollama | ${rows((s) => `${s.tokensForCancelledInBridge} / ${s.tokensForCancelledAtOllama}`)} | (c) 0 for those cancelled while queued: ${c.tokensForCancelledInBridge} |`,
    `| from a client's cancel to Ollama's connection closing, p50 / max (requests cancelled while at Ollama) | ${rows((s) => `${ms(s.cancelReachedOllamaMs.p50)} / ${ms(s.cancelReachedOllamaMs.max)}`)} | |`,
    `| share of time a backend sat idle while another had work waiting | ${rows(share)} | (c) <= 20%: worst ${Math.round(worstIdle * 100)}% |`,
    '',
    'The three configurations share the machine with whatever else runs on it (the load average above says how busy it was): compare the columns of one run, and count the answered ghost-text requests before trusting a percentile.',
    '',
    'Run it with `npm run bench -- --workload` (`--seconds N` per configuration).',
    '',
  ].join('\n');
  writeFileSync('bench/workload.json', `${JSON.stringify({ machine, phaseSeconds: PHASE_SECONDS, results }, null, 2)}\n`);
  replaceSection('bench/results.md', '## Workload', section);
  process.stdout.write(section);
}

/** Replaces (or appends) one `## ` section of a Markdown file, leaving the others as they are. */
export function replaceSection(file: string, heading: string, section: string): void {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    // a new file
  }
  const start = text.indexOf(heading);
  if (start < 0) {
    writeFileSync(file, `${text.trimEnd()}\n\n${section}`);
    return;
  }
  const next = text.indexOf('\n## ', start + heading.length);
  writeFileSync(file, `${text.slice(0, start)}${section}${next < 0 ? '' : text.slice(next + 1)}`);
}
