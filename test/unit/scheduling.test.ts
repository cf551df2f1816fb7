import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BridgeHandle } from '../../src/bridge.js';
import { loadConfig } from '../../src/config/load.js';
import { normalizeResidency, seedFor, tierConfigOf } from '../../src/routing/residency.js';
import { settingsFrom } from '../../src/routing/router.js';
import { startStandIn, startTestBridge, type StandIn } from '../support/bridge.js';
import { readSseEvents } from '../support/streams.js';
import { configFile } from '../support/temp.js';

/**
 * The scheduler inside a running bridge, against a stand-in Ollama that holds each answer until
 * the test lets it go: what reaches the upstream, and what the client gets.
 */

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

const DONE = (extra: Record<string, unknown> = {}): string =>
  `${JSON.stringify({ model: 'm', created_at: '2025-01-01T00:00:00Z', response: 'x', message: { role: 'assistant', content: 'x' }, done: true, done_reason: 'stop', eval_count: 1, ...extra })}\n`;

/** A stand-in whose answers wait until released, one per request, in arrival order. */
async function holdingBackend(yaml = ''): Promise<{
  upstream: StandIn;
  bridge: BridgeHandle;
  arrived: (n: number) => Promise<void>;
  releaseNext: () => void;
  bodies: () => Array<Record<string, unknown>>;
}> {
  const held: ServerResponse[] = [];
  const waiters: Array<{ n: number; resolve: () => void }> = [];
  const upstream = await startStandIn(
    (req, res) => {
      if (req.url === '/api/show') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ capabilities: ['completion', 'insert'] }));
        return;
      }
      held.push(res);
      for (const w of waiters.filter((x) => held.length + released >= x.n)) w.resolve();
    },
    ['m:latest'],
  );
  let released = 0;
  const file = configFile(yaml);
  const bridge = await startTestBridge({ file, env: { OLLAMA_HOST: upstream.url } });
  cleanups.push(
    () => bridge.stop(100),
    () => upstream.close(),
  );
  return {
    upstream,
    bridge,
    /** Resolves once the upstream has received `n` requests in all. */
    arrived: (n) => (held.length + released >= n ? Promise.resolve() : new Promise((resolve) => waiters.push({ n, resolve }))),
    releaseNext: () => {
      const res = held.shift();
      assert.ok(res, 'no request is held upstream');
      released += 1;
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.end(DONE({ load_duration: 5_000_000, prompt_eval_count: 10, prompt_eval_duration: 10_000_000 }));
    },
    bodies: () => generations(upstream).map((r) => JSON.parse(r.body) as Record<string, unknown>),
  };
}

/** What the stand-in received besides model details. */
const generations = (upstream: StandIn): StandIn['requests'] => upstream.requests.filter((r) => r.url !== '/api/show');

async function waitFor(check: () => boolean, what: string): Promise<void> {
  const started = Date.now();
  while (!check()) {
    if (Date.now() - started > 5000) assert.fail(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

const chat = (bridge: BridgeHandle, content: string, signal?: AbortSignal): Promise<Response> =>
  fetch(`${bridge.url}/api/chat`, { method: 'POST', body: JSON.stringify({ model: 'm', stream: false, messages: [{ role: 'user', content }] }), signal });

type Developer = 'alice' | 'bob';

/**
 * Behind `running` (a chat holding the backend's one slot), ghost text of alice and then of bob
 * queues; neither supersedes the other: both reach Ollama once the chat is done.
 */
async function neitherSupersedes(
  { bridge, arrived, releaseNext, bodies }: Awaited<ReturnType<typeof holdingBackend>>,
  running: Promise<Response>,
  ghost: (who: Developer, prompt: string) => Promise<Response>,
): Promise<void> {
  await arrived(1);
  const alice = ghost('alice', 'alice(');
  await waitFor(() => bridge.state.scheduler.queued === 1, "alice's ghost text to queue");
  const bob = ghost('bob', 'bob(');
  await waitFor(() => bridge.state.scheduler.queued === 2, "bob's ghost text to queue beside it");
  assert.equal(bridge.state.scheduler.dropped.superseded, 0);
  for (const n of [2, 3]) {
    releaseNext();
    await arrived(n);
  }
  releaseNext();
  await (await running).text();
  for (const answer of await Promise.all([alice, bob])) {
    assert.equal(answer.headers.get('x-bridge-dropped'), null);
    await answer.text();
  }
  assert.deepEqual(
    bodies()
      .map((b) => b.prompt ?? 'chat')
      .sort(),
    ['alice(', 'bob(', 'chat'],
  );
}

/** Copilot's ghost-text request as it sends it, from one editor session. */
const ghost = (bridge: BridgeHandle, prompt: string, session = 'editor-1'): Promise<Response> =>
  fetch(`${bridge.url}/v1/engines/m/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'vscode-sessionid': session, 'user-agent': 'GithubCopilot/1.300' },
    body: JSON.stringify({ prompt, suffix: '\n}', max_tokens: 20, stream: true, n: 1 }),
  });

describe('scheduler in the bridge', () => {
  it('holds requests beyond Ollama’s slots in the bridge; a newer keystroke supersedes queued ghost text, which gets an empty completion and never reaches Ollama', async () => {
    const { bridge, arrived, releaseNext, bodies } = await holdingBackend();
    const running = chat(bridge, 'a long chat');
    await arrived(1);
    const first = ghost(bridge, 'function a(');
    await waitFor(() => bridge.state.scheduler.queued === 1, 'the first ghost text to queue');
    const second = ghost(bridge, 'function ab(');
    const dropped = await first;
    assert.equal(dropped.status, 200);
    assert.equal(dropped.headers.get('x-bridge-dropped'), 'superseded');
    const events: string[] = [];
    for await (const event of readSseEvents(dropped)) events.push(event);
    assert.equal(events.at(-1), '[DONE]');
    const choices = events.slice(0, -1).flatMap((e) => (JSON.parse(e) as { choices: Array<{ text: string; finish_reason: string | null }> }).choices);
    assert.deepEqual(
      choices.map((c) => [c.text, c.finish_reason]),
      [['', 'stop']],
    );

    releaseNext();
    await (await running).text();
    await arrived(2);
    releaseNext();
    const served = await second;
    assert.equal(served.headers.get('x-bridge-dropped'), null);
    await served.text();
    // Ollama saw the chat and the newest keystroke only.
    assert.deepEqual(
      bodies().map((b) => b.prompt ?? 'chat'),
      ['chat', 'function ab('],
    );
    assert.equal(bridge.state.scheduler.dropped.superseded, 1);
    await waitFor(() => bridge.history.recent().length === 3, 'three history records');
    const records = bridge.history.recent();
    const droppedRecord = records.find((r) => r.outcome === 'dropped');
    assert.equal(droppedRecord?.lane, 'fim');
    assert.equal(droppedRecord?.error, 'superseded by a newer ghost-text request');
    const servedRecord = records.at(-1);
    assert.equal(servedRecord?.lane, 'fim');
    assert.ok((servedRecord?.queueMs ?? 0) > 0, `queued ${servedRecord?.queueMs} ms`);
  });

  it('behind a load balancer, ghost text of two developers with the same editor is told apart by X-Forwarded-For: neither supersedes the other', async () => {
    const held = await holdingBackend();
    // What nginx and HAProxy send: every request from the balancer's address, the client's in X-Forwarded-For.
    const ghostVia = (who: Developer, prompt: string): Promise<Response> =>
      fetch(`${held.bridge.url}/v1/engines/m/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'user-agent': 'Continue/1.0', 'x-forwarded-for': who === 'alice' ? '10.0.0.1' : '10.0.0.2' },
        body: JSON.stringify({ prompt, suffix: '\n}', max_tokens: 20, stream: true, n: 1 }),
      });
    await neitherSupersedes(held, chat(held.bridge, 'a long chat'), ghostVia);
  });

  it('in a team, one user’s ghost text is never superseded by another’s that names the same editor session', async () => {
    const keys: Record<Developer, string> = { alice: 'alice-key-0123456789abcdef', bob: 'bob-key-0123456789abcdefgh' };
    const held = await holdingBackend(`server:\n  api_keys: ["${keys.alice}", "${keys.bob}"]\n`);
    // The session id is the client's to send: bob's editor (or bob) may send alice's.
    const ghostAs = (who: Developer, prompt: string): Promise<Response> =>
      fetch(`${held.bridge.url}/v1/engines/m/completions`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${keys[who]}`,
          'content-type': 'application/json',
          'vscode-sessionid': 'editor-1',
          'user-agent': 'GithubCopilot/1.300',
        },
        body: JSON.stringify({ prompt, suffix: '\n}', max_tokens: 20, stream: true, n: 1 }),
      });
    const running = fetch(`${held.bridge.url}/api/chat`, {
      method: 'POST',
      headers: { authorization: `Bearer ${keys.alice}` },
      body: JSON.stringify({ model: 'm', stream: false, messages: [{ role: 'user', content: 'a long chat' }] }),
    });
    await neitherSupersedes(held, running, ghostAs);
  });

  it('a client that hangs up while queued leaves the queue and is never sent upstream', async () => {
    const { bridge, arrived, releaseNext, upstream } = await holdingBackend();
    const running = chat(bridge, 'first');
    await arrived(1);
    const abort = new AbortController();
    const gone = chat(bridge, 'gone', abort.signal).catch((error: Error) => error);
    await waitFor(() => bridge.state.scheduler.queued === 1, 'the second chat to queue');
    abort.abort();
    assert.equal(((await gone) as Error).name, 'AbortError');
    await waitFor(() => bridge.state.scheduler.queued === 0, 'the queue to empty');
    assert.equal(bridge.state.scheduler.dropped.cancelled, 1);
    releaseNext();
    await (await running).text();
    const third = chat(bridge, 'third');
    await arrived(2);
    releaseNext();
    await (await third).text();
    assert.deepEqual(
      generations(upstream).map((r) => (JSON.parse(r.body) as { messages: Array<{ content: string }> }).messages[0]?.content),
      ['first', 'third'],
    );
  });

  it('answers ghost text that waited past fim_max_wait_ms empty instead of late, and serves chats in the meantime', async () => {
    const { bridge, arrived, releaseNext, upstream } = await holdingBackend('routing:\n  scheduler:\n    fim_max_wait_ms: 150\n');
    const running = chat(bridge, 'long');
    await arrived(1);
    const late = await ghost(bridge, 'const x =');
    assert.equal(late.headers.get('x-bridge-dropped'), 'deadline');
    await late.text();
    releaseNext();
    await (await running).text();
    assert.equal(generations(upstream).length, 1);
    assert.equal(bridge.state.scheduler.dropped.deadline, 1);
  });

  it('gives the free slot to ghost text before chats that queued earlier, and to chats before embeddings', async () => {
    const { bridge, arrived, releaseNext, bodies } = await holdingBackend();
    const running = chat(bridge, 'running');
    await arrived(1);
    const embedding = fetch(`${bridge.url}/api/embed`, { method: 'POST', body: JSON.stringify({ model: 'm', input: 'text' }) });
    await waitFor(() => bridge.state.scheduler.queued === 1, 'the embedding to queue');
    const queuedChat = chat(bridge, 'queued chat');
    await waitFor(() => bridge.state.scheduler.queued === 2, 'the chat to queue');
    const fim = ghost(bridge, 'let y =');
    await waitFor(() => bridge.state.scheduler.queued === 3, 'the ghost text to queue');
    const pool = bridge.state.scheduler.pools.find((p) => p.model === 'm:latest' || p.model === 'm');
    assert.deepEqual(pool?.queued, { fim: 1, interactive: 1, background: 1 });
    const metrics = await (await fetch(`${bridge.url}/metrics`)).text();
    assert.match(metrics, /copilot_bridge_queue_depth\{backend="local",model="m(:latest)?",lane="fim"\} 1/);
    for (let i = 2; i <= 4; i++) {
      releaseNext();
      await arrived(i);
    }
    releaseNext();
    await Promise.all([running, embedding, queuedChat, fim].map(async (r) => (await r).text()));
    assert.deepEqual(
      bodies().map((b) => (b.prompt as string | undefined) ?? (b.input as string | undefined) ?? (b.messages as Array<{ content: string }>)[0]?.content),
      ['running', 'let y =', 'queued chat', 'text'],
    );
    const after = await (await fetch(`${bridge.url}/metrics`)).text();
    assert.match(after, /copilot_bridge_queue_wait_seconds_count\{lane="background"\} 1/);
    assert.match(after, /copilot_bridge_queue_wait_seconds_count\{lane="fim"\} 1/);
  });

  it('sends the tier’s keep_alive and num_ctx, and keeps a larger context the client asks for', async () => {
    const upstream = await startStandIn(
      (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        res.end(DONE());
      },
      ['m:latest'],
    );
    const file = configFile('models:\n  simple: { name: "m", keep_alive: "-1", num_ctx: 4096 }\n');
    const bridge = await startTestBridge({ file, env: { OLLAMA_HOST: upstream.url } });
    cleanups.push(
      () => bridge.stop(100),
      () => upstream.close(),
    );
    for (const numCtx of [undefined, 2048, 8192]) {
      const options = numCtx === undefined ? {} : { num_ctx: numCtx };
      await (
        await fetch(`${bridge.url}/api/generate`, {
          method: 'POST',
          body: JSON.stringify({ model: 'm', prompt: 'p', stream: false, keep_alive: '5m', options }),
        })
      ).text();
    }
    const sent = upstream.requests.map((r) => JSON.parse(r.body) as { keep_alive: unknown; options: { num_ctx: number } });
    // "-1" as text goes as the number: Ollama reads text in a request only as a Go duration.
    assert.deepEqual(
      sent.map((b) => [b.keep_alive, b.options.num_ctx]),
      [
        [-1, 4096],
        [-1, 4096],
        [-1, 8192],
      ],
    );
  });
});

describe('residency', () => {
  const tier = { name: 'm', num_ctx: 4096 };
  it('uses the loaded context when it covers what is asked, so Ollama does not reload the model', () => {
    assert.deepEqual(normalizeResidency({ options: { num_ctx: 2048 } }, tier, 8192), { options: { num_ctx: 8192 } });
    assert.deepEqual(normalizeResidency({}, undefined, 2048), { options: { num_ctx: 2048 } });
  });
  it('asks for more than is loaded when the client needs it', () => {
    assert.deepEqual(normalizeResidency({ options: { num_ctx: 16384, temperature: 0 } }, tier, 8192), { options: { num_ctx: 16384, temperature: 0 } });
  });
  it('leaves a body alone when nothing is known', () => {
    assert.deepEqual(normalizeResidency({ keep_alive: '5m' }, undefined, undefined), { keep_alive: '5m' });
  });
  it('takes a model named in other letters for its tier’s (keep_alive, num_ctx, the scheduler’s seeds), as Ollama runs the same model for it', () => {
    const config = loadConfig({
      file: configFile('models:\n  simple: { name: qwen2.5-coder:1.5b, keep_alive: -1, num_ctx: 4096, expected_latency_ms: 300 }\n'),
      env: {},
    });
    const settings = settingsFrom(config);
    assert.equal(tierConfigOf(config, settings, 'Qwen2.5-Coder:1.5B')?.keep_alive, -1);
    assert.equal(seedFor(config, settings, 'QWEN2.5-CODER:1.5b', undefined).serviceMs, 300);
  });
});
