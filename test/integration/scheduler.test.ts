import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BridgeHandle, BridgeState } from '../../src/bridge.js';
import { startTestBridge } from '../support/bridge.js';
import { RIG_MODELS, rigSkipReason, startRig, type OllamaRig, type RigInstance } from '../support/ollama-rig.js';
import { configFile } from '../support/temp.js';

/**
 * The scheduler against two real Ollama instances standing in for GPU0 and GPU1 (one slot per
 * model each, OLLAMA_NUM_PARALLEL=1): load spreads, ghost text jumps the queue, and a request
 * cancelled while queued never reaches Ollama — checked in Ollama's own request log.
 */

const skip = rigSkipReason();

describe('scheduler on two real Ollama instances', { skip }, () => {
  let rig: OllamaRig;
  let gpu0: RigInstance;
  let bridge: BridgeHandle;

  before(async () => {
    rig = await startRig(2);
    gpu0 = rig.instances[0] as RigInstance;
    const gpu1 = rig.instances[1] as RigInstance;
    const file = configFile(`dual_gpu: true
backends:
  - { name: gpu0, url: "${gpu0.url}", gpu: 0 }
  - { name: gpu1, url: "${gpu1.url}", gpu: 1 }
models:
  simple: { name: "${RIG_MODELS.simple}", gpu_preference: 0 }
  complex: { name: "${RIG_MODELS.complex}", gpu_preference: 1 }
routing:
  health:
    interval_seconds: 0.5
  scheduler:
    fim_max_wait_ms: 120000
`);
    bridge = await startTestBridge({ file });
  });
  after(async () => {
    await bridge?.stop(100);
    await rig?.stop();
  });

  async function waitFor(check: () => boolean, what: string, timeoutMs = 60_000): Promise<void> {
    const started = Date.now();
    while (!check()) {
      if (Date.now() - started > timeoutMs) assert.fail(`timed out waiting for ${what}; scheduler: ${JSON.stringify(bridge.state.scheduler)}`);
      await sleep(20);
    }
  }
  const chat = (model: string, content: string, numPredict: number, signal?: AbortSignal): Promise<Response> =>
    fetch(`${bridge.url}/api/chat`, {
      method: 'POST',
      body: JSON.stringify({ model, stream: true, messages: [{ role: 'user', content }], options: { num_predict: numPredict } }),
      signal,
    });
  // The rig's model names are one file: Ollama runs them in one runner, so they share one queue per backend.
  const pool = (backend: string): BridgeState['scheduler']['pools'][number] | undefined => bridge.state.scheduler.pools.find((p) => p.backend === backend);
  /** The generation requests in Ollama's own log, in the order it finished them. */
  const ollamaGenerations = (instance: RigInstance): string[] => instance.loggedRequests().filter((r) => r === 'POST /api/chat' || r === 'POST /api/generate');

  it('spreads 12 concurrent complex requests over both instances', async () => {
    const answers = await Promise.all(
      Array.from({ length: 12 }, async (_, i) => {
        const response = await chat('bridge/complex', `architect part ${i}`, 2);
        await response.text();
        assert.equal(response.status, 200);
        return response.headers.get('x-bridge-backend');
      }),
    );
    assert.deepEqual([...new Set(answers)].sort(), ['gpu0', 'gpu1']);
  });

  it('serves a ghost-text request issued behind 3 queued chats on the same model first', async () => {
    await bridge.actions.run('setDualGpu', { enabled: false });
    try {
      const firstByte = new Map<string, number>();
      const timed = async (name: string, request: Promise<Response>): Promise<void> => {
        const response = await request;
        firstByte.set(name, performance.now());
        await response.text();
      };
      // A chat that would run for ever holds the one slot until the queue behind it is built.
      const endless = new AbortController();
      const running = chat(RIG_MODELS.simple, 'one', 100_000, endless.signal)
        .then((r) => r.text())
        .catch(() => undefined);
      const done: Array<Promise<unknown>> = [running];
      await waitFor(() => pool('gpu0')?.running === 1, 'the first chat to run');
      for (const name of ['chat2', 'chat3', 'chat4']) done.push(timed(name, chat(RIG_MODELS.simple, name, 8)));
      await waitFor(() => pool('gpu0')?.queued.interactive === 3, 'three chats to queue');
      done.push(
        timed(
          'ghost',
          fetch(`${bridge.url}/v1/engines/${encodeURIComponent(RIG_MODELS.simple)}/completions`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', 'user-agent': 'GithubCopilot/1.300' },
            body: JSON.stringify({ prompt: 'def add(a, b):\n    return ', suffix: '\n', max_tokens: 2, stream: true }),
          }),
        ),
      );
      await waitFor(() => pool('gpu0')?.queued.fim === 1, 'the ghost text to queue');
      endless.abort();
      await Promise.all(done);
      const ghost = firstByte.get('ghost') as number;
      for (const chatName of ['chat2', 'chat3', 'chat4']) assert.ok(ghost < (firstByte.get(chatName) as number), `ghost text answered before ${chatName}`);
      // Ollama's side (it logs a request when it ends, which may be a moment after its client read the
      // answer): the ghost text ran right after the running chat, before the three queued ones.
      const afterGhost = (): number => {
        const logged = ollamaGenerations(gpu0);
        return logged.length - 1 - logged.lastIndexOf('POST /api/generate');
      };
      await waitFor(() => afterGhost() >= 3, 'Ollama to log the three chats after the ghost text');
      const logged = ollamaGenerations(gpu0);
      const ghostAt = logged.lastIndexOf('POST /api/generate');
      assert.deepEqual(logged.slice(ghostAt - 1), ['POST /api/chat', 'POST /api/generate', 'POST /api/chat', 'POST /api/chat', 'POST /api/chat']);
      const record = bridge.history.recent().find((r) => r.lane === 'fim');
      assert.ok(record !== undefined && (record.queueMs ?? 0) > 0);
    } finally {
      await bridge.actions.run('setDualGpu', { enabled: true });
    }
  });

  it('never sends Ollama a request whose client hung up while it was queued', async () => {
    await bridge.actions.run('setDualGpu', { enabled: false });
    try {
      const before = ollamaGenerations(gpu0).length;
      const endless = new AbortController();
      const running = chat(RIG_MODELS.simple, 'running', 100_000, endless.signal)
        .then((r) => r.text())
        .catch(() => undefined);
      await waitFor(() => pool('gpu0')?.running === 1, 'the first chat to run');
      const abort = new AbortController();
      const gone = chat(RIG_MODELS.simple, 'cancelled while queued', 8, abort.signal).catch((error: Error) => error.name);
      await waitFor(() => pool('gpu0')?.queued.interactive === 1, 'the second chat to queue');
      abort.abort();
      assert.equal(await gone, 'AbortError');
      await waitFor(() => pool('gpu0')?.queued.interactive === 0, 'the cancelled chat to leave the queue');
      endless.abort();
      await running;
      // Had the cancelled one been sent, Ollama would have run it before this one.
      await (await chat(RIG_MODELS.simple, 'after', 2)).text();
      await waitFor(() => ollamaGenerations(gpu0).length >= before + 2, 'Ollama to log both requests');
      assert.equal(ollamaGenerations(gpu0).length, before + 2);
      assert.ok(bridge.state.scheduler.dropped.cancelled >= 1);
    } finally {
      await bridge.actions.run('setDualGpu', { enabled: true });
    }
  });

  it('shows measured estimates per backend and model in the state API', async () => {
    const state = (await (await fetch(`${bridge.url}/bridge/api/state`)).json()) as BridgeState;
    assert.equal(state.scheduler.enabled, true);
    const measured = state.scheduler.pools.filter((p) => p.samples > 0);
    assert.deepEqual([...new Set(measured.map((p) => p.backend))].sort(), ['gpu0', 'gpu1']);
    for (const p of measured) {
      assert.ok(p.serviceMs > 0, JSON.stringify(p));
      assert.ok((p.promptTokensPerSecond ?? 0) > 0, JSON.stringify(p));
    }
    // Both instances started cold: each loaded the model once and Ollama said how long it took.
    for (const backend of ['gpu0', 'gpu1']) assert.ok((state.scheduler.pools.find((p) => p.backend === backend)?.loadMs ?? 0) > 0, backend);
  });
});
