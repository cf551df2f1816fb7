import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BridgeHandle, BridgeState } from '../../src/bridge.js';
import { startTestBridge } from '../support/bridge.js';
import { readLines, readSseEvents } from '../support/streams.js';
import { tempDir } from '../support/temp.js';
import { until } from '../support/wait.js';
import { RIG_MODELS, rigSkipReason, startRig, type OllamaRig, type RigInstance } from '../support/ollama-rig.js';

/**
 * Routing across two real Ollama instances standing in for GPU0 and GPU1, with a third one as the
 * OpenAI-compatible cloud provider (Ollama's own /v1).
 */

const skip = rigSkipReason();

describe('routing across two real Ollama instances', { skip }, () => {
  let rig: OllamaRig;
  let gpu0: RigInstance;
  let gpu1: RigInstance;
  let bridge: BridgeHandle;
  let dataDir: string;
  let configFile: string;
  let env: Record<string, string>;
  /** Generation requests this test sent to the bridge, to compare with /metrics. */
  let sent = 0;

  before(async () => {
    rig = await startRig(3);
    [gpu0, gpu1] = rig.instances as [RigInstance, RigInstance];
    const cloud = rig.instances[2] as RigInstance;
    dataDir = tempDir('bridge-routing-');
    configFile = path.join(dataDir, 'config.yaml');
    writeFileSync(
      configFile,
      `models:
  simple:
    name: "${RIG_MODELS.simple}"
    gpu_preference: 0
  complex:
    name: "${RIG_MODELS.complex}"
    gpu_preference: 1
routing:
  classification:
    complex_keywords: [architect]
    simple_keywords: [format]
  health:
    interval_seconds: 0.4
    timeout_seconds: 1
  circuit_breaker:
    cooldown_seconds: 1
fallback:
  enabled: false
  providers:
    - name: cloud
      type: openai
      base_url: ${cloud.url}/v1
      model: "${RIG_MODELS.simple}"
`,
    );
    env = { GPU0_URL: gpu0.url, GPU1_URL: gpu1.url, ENABLE_DUAL_GPU: 'true', BRIDGE_DATA_DIR: dataDir, OPENAI_API_KEY: 'sk-local' };
    bridge = await startTestBridge({ file: configFile, env });
  });
  after(async () => {
    await bridge?.stop(100);
    await rig?.stop();
  });

  const chat = (content: string, options: { model?: string; stream?: boolean; signal?: AbortSignal; num_predict?: number } = {}): Promise<Response> => {
    sent += 1;
    return fetch(`${bridge.url}/api/chat`, {
      method: 'POST',
      body: JSON.stringify({
        model: options.model ?? 'auto',
        stream: options.stream ?? false,
        messages: [{ role: 'user', content }],
        options: { num_predict: options.num_predict ?? 6 },
      }),
      signal: options.signal,
    });
  };
  const unloadEverywhere = async (): Promise<void> => {
    for (const instance of [gpu0, gpu1]) {
      if (!instance.running) continue;
      for (const model of Object.values(RIG_MODELS)) {
        await fetch(`${instance.url}/api/generate`, { method: 'POST', body: JSON.stringify({ model, keep_alive: 0 }) });
      }
    }
    await waitFor(() => bridge.state.backends.every((b) => b.loaded.length === 0), 'models unloaded in the bridge’s view');
  };
  async function waitFor(check: () => boolean, what: string, timeoutMs = 3000): Promise<number> {
    const started = performance.now();
    while (!check()) {
      if (performance.now() - started > timeoutMs)
        assert.fail(`timed out waiting for: ${what}; backends: ${JSON.stringify(bridge.state.backends.map((b) => [b.name, b.health]))}`);
      await sleep(50);
    }
    return performance.now() - started;
  }
  const status = (name: string): string => (bridge.state.backends.find((b) => b.name === name) as BridgeState['backends'][number]).health.status;

  it('sends simple and complex requests to the models and GPUs the config names, and records why', async () => {
    await unloadEverywhere();
    const recorded = bridge.history.size;
    const simple = await chat('please format this file');
    assert.equal(simple.status, 200);
    assert.equal(simple.headers.get('x-bridge-tier'), 'simple');
    assert.equal(simple.headers.get('x-bridge-model'), RIG_MODELS.simple);
    assert.equal(simple.headers.get('x-bridge-backend'), 'gpu0');
    // Both cold and idle: the estimates tie, and the tier's preferred GPU decides.
    assert.match(
      simple.headers.get('x-bridge-route-reason') ?? '',
      /^simple: keyword 'format'; gpu0: ~[\d.]+ s, cold load, idle; gpu1: ~[\d.]+ s, cold load, idle; tie: gpu0 is the preferred GPU$/,
    );
    await simple.text();

    // The rig's two model names are one file, which gpu0 now holds for both: start cold again.
    await unloadEverywhere();
    const complex = await chat('how should I architect the service?');
    assert.equal(complex.headers.get('x-bridge-tier'), 'complex');
    assert.equal(complex.headers.get('x-bridge-model'), RIG_MODELS.complex);
    assert.equal(complex.headers.get('x-bridge-backend'), 'gpu1');
    await complex.text();

    await until(() => (bridge.history.size >= recorded + 2 ? true : undefined), 'both requests in the history');
    const [first, second] = bridge.history.recent().slice(-2);
    assert.deepEqual([first?.tier, first?.model, first?.backend, first?.gpu, first?.outcome], ['simple', RIG_MODELS.simple, 'gpu0', 0, 'ok']);
    assert.deepEqual([second?.tier, second?.model, second?.backend, second?.gpu], ['complex', RIG_MODELS.complex, 'gpu1', 1]);
    assert.match(second?.reason ?? '', /^complex: keyword 'architect'; gpu1: ~[\d.]+ s, cold load, idle; gpu0: .*; tie: gpu1 is the preferred GPU/);
    assert.equal(second?.tokensOut, 6);
    assert.ok((second?.tokensPerSecond ?? 0) > 0);
    assert.ok((second?.ttftMs ?? -1) >= 0);
  });

  it('prefers the GPU that already holds the model over the tier’s preferred one', async () => {
    await unloadEverywhere();
    await fetch(`${gpu1.url}/api/generate`, { method: 'POST', body: JSON.stringify({ model: RIG_MODELS.simple, keep_alive: '5m' }) });
    await waitFor(() => bridge.state.backends.find((b) => b.name === 'gpu1')?.loaded.includes(RIG_MODELS.simple) === true, 'gpu1 holding the simple model');
    const response = await chat('format this');
    assert.equal(response.headers.get('x-bridge-backend'), 'gpu1');
    assert.match(
      response.headers.get('x-bridge-route-reason') ?? '',
      /^simple: keyword 'format'; gpu1: ~0\.0 s, resident, idle; gpu0: ~[\d.]+ s, cold load, idle$/,
    );
    await response.text();
  });

  it('sends everything to the primary while dual-GPU mode is off', async () => {
    await bridge.actions.run('setDualGpu', { enabled: false });
    try {
      for (const text of ['format this', 'architect this', 'hello']) {
        const response = await chat(text);
        assert.equal(response.headers.get('x-bridge-backend'), 'gpu0', text);
        await response.text();
      }
    } finally {
      await bridge.actions.run('setDualGpu', { enabled: true });
    }
  });

  it('loses no request when a backend is SIGKILLed while loading, marks it down within the health interval, and takes it back after restart', async () => {
    await unloadEverywhere();
    await bridge.actions.run('setDualGpu', { enabled: false });
    try {
      // gpu0 (the primary) has to load the model first: kill it in the middle of that.
      const recorded = bridge.history.size;
      const requests = [chat('format a', { stream: true }), chat('format b'), chat('format c', { stream: true }), chat('format d')];
      await sleep(30);
      gpu0.kill('SIGKILL');
      const answers = await Promise.all(requests);
      for (const response of answers) {
        assert.equal(response.status, 200);
        assert.equal(response.headers.get('x-bridge-backend'), 'gpu1');
        const lines: Array<{ done?: boolean; error?: string }> = [];
        for await (const line of readLines(response)) lines.push(JSON.parse(line) as { done?: boolean; error?: string });
        assert.ok(
          lines.every((l) => l.error === undefined),
          JSON.stringify(lines),
        );
        assert.equal(lines.at(-1)?.done, true);
      }
      await waitFor(() => status('gpu0') === 'down', 'gpu0 marked down', 1200);
      await until(() => (bridge.history.size >= recorded + 4 ? true : undefined), 'the four requests in the history');
      assert.ok(
        bridge.history
          .recent()
          .slice(-4)
          .every((r) => r.outcome === 'ok' && r.backend === 'gpu1'),
      );

      await gpu0.start();
      await waitFor(() => status('gpu0') === 'healthy', 'gpu0 healthy again', 1500);
      const back = await chat('format e');
      assert.equal(back.headers.get('x-bridge-backend'), 'gpu0');
      await back.text();
    } finally {
      await bridge.actions.run('setDualGpu', { enabled: true });
    }
  });

  it('ends a stream cut mid-way in the surface’s error form', async () => {
    sent += 1;
    const response = await fetch(`${bridge.url}/v1/chat/completions`, {
      method: 'POST',
      body: JSON.stringify({ model: RIG_MODELS.complex, stream: true, max_tokens: 100000, messages: [{ role: 'user', content: 'go on' }] }),
    });
    const victim = response.headers.get('x-bridge-backend') === 'gpu0' ? gpu0 : gpu1;
    const events: string[] = [];
    for await (const event of readSseEvents(response)) {
      events.push(event);
      if (events.length === 3) victim.kill('SIGKILL');
    }
    const last = JSON.parse(events.at(-1) ?? '{}') as { error?: { message: string; type: string; code: string } };
    assert.equal(last.error?.type, 'api_error');
    assert.match(last.error?.message ?? '', new RegExp(`^backend ${victim.name} `));
    await victim.start();
    await waitFor(() => status(victim.name) === 'healthy', `${victim.name} healthy again`, 3000);
  });

  it('with both backends down: a clear 503 with fallback off, the OpenAI-compatible provider with it on', async () => {
    await gpu0.stop();
    await gpu1.stop();
    await waitFor(() => status('gpu0') === 'down' && status('gpu1') === 'down', 'both backends marked down', 1200);
    try {
      const recorded = bridge.history.size;
      const refused = await chat('format this');
      assert.equal(refused.status, 503);
      const body = (await refused.json()) as { error: string };
      assert.match(body.error, /^no backend can serve this request \(simple: keyword 'format'; no backend can take traffic: gpu0 down .*; gpu1 down/);

      await bridge.actions.run('setFallback', { enabled: true });
      const rescued = await chat('format this', { model: 'auto', num_predict: 5 });
      assert.equal(rescued.status, 200);
      assert.equal(rescued.headers.get('x-bridge-backend'), 'cloud');
      assert.match(rescued.headers.get('x-bridge-route-reason') ?? '', /fallback to cloud: no local backend can take traffic/);
      const answer = (await rescued.json()) as { done: boolean; done_reason: string; eval_count: number; model: string };
      assert.equal(answer.done, true);
      assert.equal(answer.done_reason, 'length');
      assert.equal(answer.eval_count, 5);
      assert.equal(answer.model, 'auto');
      await until(() => (bridge.history.size >= recorded + 2 ? true : undefined), 'both requests in the history');
      assert.equal(bridge.history.recent().at(-1)?.fallback, 'cloud');
    } finally {
      await bridge.actions.run('setFallback', { enabled: false });
      await gpu0.start();
      await gpu1.start();
    }
  });

  it('counts in /metrics exactly the requests it was sent', async () => {
    // History and metrics take a request when its connection closes, together.
    await until(() => (bridge.history.size >= sent ? true : undefined), 'every request recorded');
    const metrics = await (await fetch(`${bridge.url}/metrics`)).text();
    const total = metrics
      .split('\n')
      .filter((line) => line.startsWith('copilot_bridge_requests_total{'))
      .reduce((sum, line) => sum + Number(line.split(' ').at(-1)), 0);
    assert.equal(total, sent);
    assert.ok(metrics.includes('copilot_bridge_fallback_total{provider="cloud"} 1'), 'one fallback counted');
  });

  it('keeps its history across a restart of the bridge', async () => {
    const before = bridge.history.recent().map((r) => r.id);
    assert.ok(before.length >= sent);
    await bridge.stop(100);
    bridge = await startTestBridge({ file: configFile, env });
    assert.deepEqual(
      bridge.history.recent().map((r) => r.id),
      before,
    );
  });
});
