import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BridgeHandle, BridgeState } from '../../src/bridge.js';
import { startTestBridge } from '../support/bridge.js';
import { configFile } from '../support/temp.js';
import { freePort, RIG_MODELS, rigSkipReason, startRig, type OllamaRig, type RigInstance } from '../support/ollama-rig.js';

const skip = rigSkipReason();

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('Ollama instances managed by the bridge (real ollama serve)', { skip }, () => {
  let rig: OllamaRig;
  let existing: RigInstance;
  let bridge: BridgeHandle;
  let managedPort: number;

  before(async () => {
    rig = await startRig(1);
    existing = rig.instances[0] as RigInstance;
    managedPort = await freePort();
    const file = configFile(`ollama:
  binary: ${rig.binary}
  models_dir: ${existing.modelsDir}
  restart_window_seconds: 60
backends:
  - name: gpu0
    url: http://127.0.0.1:${managedPort}
    manage: true
  - name: gpu1
    url: ${existing.url}
    manage: true
dual_gpu: true
routing:
  health:
    interval_seconds: 0.3
`);
    bridge = await startTestBridge({ file });
  });
  after(async () => {
    await bridge?.stop(100);
    await rig?.stop();
  });

  const instance = (name: string): BridgeState['ollama'][number] => bridge.state.ollama.find((i) => i.name === name) as BridgeState['ollama'][number];
  const action = (name: string, payload: unknown): Promise<Response> =>
    fetch(`${bridge.url}/bridge/api/actions/${name}`, {
      method: 'POST',
      headers: { 'x-bridge-token': bridge.controlToken, 'content-type': 'application/json' },
      body: JSON.stringify(payload),
    });
  async function until(check: () => boolean, what: string, timeoutMs = 8000): Promise<void> {
    const started = Date.now();
    while (!check()) {
      if (Date.now() - started > timeoutMs) assert.fail(`timed out waiting for ${what}: ${JSON.stringify(bridge.state.ollama)}`);
      await sleep(50);
    }
  }

  it('starts its own instance at start, and adopts the one already listening instead of starting a second', async () => {
    const own = instance('gpu0');
    assert.equal(own.state, 'running');
    assert.ok(own.pid !== null && alive(own.pid));
    const version = (await (await fetch(`http://127.0.0.1:${managedPort}/api/version`)).json()) as { version: string };
    assert.equal(version.version, '0.11.4');
    const adopted = instance('gpu1');
    assert.equal(adopted.state, 'adopted');
    assert.equal(adopted.pid, null);
    const refused = await action('stopOllama', { backend: 'gpu1' });
    assert.equal(refused.status, 409);
    assert.match(((await refused.json()) as { error: string }).error, /was not started by the bridge/);
  });

  it('stops and starts an instance through the control API', async () => {
    const pid = instance('gpu0').pid as number;
    const stopped = await action('stopOllama', { backend: 'gpu0' });
    assert.equal(stopped.status, 200);
    assert.equal(instance('gpu0').state, 'stopped');
    assert.equal(alive(pid), false);
    const started = await action('startOllama', { backend: 'gpu0' });
    assert.equal(started.status, 200);
    assert.equal(instance('gpu0').state, 'running');
  });

  it('restarts a crashed instance, and routing recovers', async () => {
    const pid = instance('gpu0').pid as number;
    process.kill(-pid, 'SIGKILL');
    await until(() => instance('gpu0').restarts === 1 && instance('gpu0').state === 'running', 'the restart');
    assert.notEqual(instance('gpu0').pid, pid);
    await until(() => bridge.state.backends.find((b) => b.name === 'gpu0')?.health.status === 'healthy', 'gpu0 healthy');
    await action('setDualGpu', { enabled: false });
    try {
      const response = await fetch(`${bridge.url}/api/generate`, {
        method: 'POST',
        body: JSON.stringify({ model: RIG_MODELS.simple, prompt: 'x', stream: false, options: { num_predict: 3 } }),
      });
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('x-bridge-backend'), 'gpu0');
    } finally {
      await action('setDualGpu', { enabled: true });
    }
  });

  it('preloads and unloads a model on a chosen instance, visible in /api/ps and in the placement', async () => {
    // Both rig names share one file and Ollama lists a shared runner under the first name: start empty.
    for (const model of Object.values(RIG_MODELS)) assert.equal((await action('unloadModel', { backend: 'gpu0', model })).status, 200);
    const loaded = await action('preloadModel', { backend: 'gpu0', model: RIG_MODELS.complex, keepAlive: '10m' });
    assert.equal(loaded.status, 200, await loaded.clone().text());
    const ps = (await (await fetch(`http://127.0.0.1:${managedPort}/api/ps`)).json()) as { models: Array<{ model: string }> };
    assert.ok(ps.models.some((m) => m.model === RIG_MODELS.complex));
    const placement = bridge.state.placements.find((p) => p.backend === 'gpu0');
    assert.deepEqual(
      placement?.models.map((m) => m.name),
      [RIG_MODELS.complex],
    );
    // No GPU here: nothing to place it on, and the fit check says why it could not judge.
    assert.equal(placement?.gpu, null);
    assert.match(((await loaded.json()) as { result: { fit: { message: string } } }).result.fit.message, /not checked$/);

    const unloaded = await action('unloadModel', { backend: 'gpu0', model: RIG_MODELS.complex });
    assert.equal(unloaded.status, 200);
    const after = (await (await fetch(`http://127.0.0.1:${managedPort}/api/ps`)).json()) as { models: unknown[] };
    assert.deepEqual(after.models, []);
    assert.deepEqual(bridge.state.placements.find((p) => p.backend === 'gpu0')?.models, []);
  });

  it('stops what it started when the bridge stops, and leaves adopted instances running', async () => {
    const pid = instance('gpu0').pid as number;
    await bridge.stop(100);
    assert.equal(alive(pid), false);
    assert.equal((await fetch(`${existing.url}/api/version`)).status, 200);
  });
});
