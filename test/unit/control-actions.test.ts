import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import type { BridgeHandle, BridgeState } from '../../src/bridge.js';
import { startStandIn, startTestBridge, type StandIn } from '../support/bridge.js';
import { freePort } from '../support/ollama-rig.js';

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

interface ActionAnswer {
  status: number;
  body: { ok?: true; result?: { message: string }; state?: BridgeState; error?: string };
}

async function action(bridge: BridgeHandle, name: string, payload: unknown): Promise<ActionAnswer> {
  const response = await fetch(`${bridge.url}/bridge/api/actions/${name}`, {
    method: 'POST',
    headers: { 'x-bridge-token': bridge.controlToken, 'content-type': 'application/json' },
    body: JSON.stringify(payload),
  });
  return { status: response.status, body: (await response.json()) as ActionAnswer['body'] };
}

/** A bridge on one stand-in Ollama (backend "local") that lists m:7b and holds `loaded` in memory. */
async function bridgeOn(
  handler: (res: ServerResponse, body: string) => void,
  loaded: () => readonly string[] = () => [],
): Promise<{ bridge: BridgeHandle; upstream: StandIn }> {
  const upstream = await startStandIn((_req, res, body) => handler(res, body), ['m:7b'], loaded);
  const bridge = await startTestBridge({ env: { OLLAMA_HOST: upstream.url } });
  cleanups.push(
    () => bridge.stop(100),
    () => upstream.close(),
  );
  return { bridge, upstream };
}

const loadedOn = (state: BridgeState | undefined, backend: string): string[] | undefined => state?.backends.find((b) => b.name === backend)?.loaded;

describe('model actions of the control API', () => {
  it('unloads a model and answers once Ollama no longer holds it in memory', async () => {
    // Like Ollama: the answer comes first, and the runner is still listed by the next two looks at /api/ps.
    let looksUntilGone: number | undefined;
    const loaded = (): string[] => {
      if (looksUntilGone === undefined) return ['m:7b'];
      looksUntilGone -= 1;
      return looksUntilGone >= 0 ? ['m:7b'] : [];
    };
    const { bridge, upstream } = await bridgeOn((res, body) => {
      if ((JSON.parse(body) as { keep_alive?: unknown }).keep_alive === 0) looksUntilGone = 2;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ model: 'm:7b', created_at: '2025-01-01T00:00:00Z', response: '', done: true, done_reason: 'unload' }));
    }, loaded);

    const unloaded = await action(bridge, 'unloadModel', { backend: 'local', model: 'm:7b' });
    assert.equal(unloaded.status, 200);
    assert.equal(unloaded.body.result?.message, 'm:7b unloaded from local');
    assert.deepEqual(loadedOn(unloaded.body.state, 'local'), [], 'the state that comes with the answer shows the model gone');
    assert.deepEqual(
      upstream.requests.map((r) => [r.url, JSON.parse(r.body) as unknown]),
      [['/api/generate', { model: 'm:7b', prompt: '', keep_alive: 0, stream: false }]],
    );
  });

  it('says so when Ollama still holds the model after the wait, as it does while requests use it', { timeout: 20_000 }, async () => {
    const { bridge } = await bridgeOn(
      (res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ model: 'm:7b', created_at: '2025-01-01T00:00:00Z', response: '', done: true, done_reason: 'unload' }));
      },
      () => ['m:7b'],
    );
    const answer = await action(bridge, 'unloadModel', { backend: 'local', model: 'm:7b' });
    assert.equal(answer.status, 200);
    assert.equal(answer.body.result?.message, 'm:7b is still in memory on local: requests are using it, and Ollama unloads it once they end');
    assert.deepEqual(loadedOn(answer.body.state, 'local'), ['m:7b']);
  });

  it('answers 404 for a backend it does not know, without calling any', async () => {
    const { bridge, upstream } = await bridgeOn((res) => res.end());
    const unknown = await action(bridge, 'unloadModel', { backend: 'gpu7', model: 'm:7b' });
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.error, "no backend named 'gpu7'");
    assert.equal(upstream.requests.length, 0);
  });

  it("passes Ollama's own refusal on as 404 and any other upstream failure as 502", async () => {
    const { bridge } = await bridgeOn((res, body) => {
      const { model } = JSON.parse(body) as { model: string };
      const [status, error] = model === 'gone:1b' ? [404, `model '${model}' not found`] : [500, 'llama runner process has terminated'];
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error }));
    });
    const missing = await action(bridge, 'unloadModel', { backend: 'local', model: 'gone:1b' });
    assert.equal(missing.status, 404);
    assert.match(missing.body.error ?? '', /model 'gone:1b' not found/);
    const broken = await action(bridge, 'preloadModel', { backend: 'local', model: 'm:7b', force: true });
    assert.equal(broken.status, 502);
    assert.match(broken.body.error ?? '', /llama runner process has terminated/);
  });

  it('refuses a keep-alive that is not a duration with 400, before asking Ollama, which would refuse it as well', async () => {
    const { bridge, upstream } = await bridgeOn((res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ model: 'm:7b', created_at: '2025-01-01T00:00:00Z', response: '', done: true, done_reason: 'load' }));
    });
    for (const keepAlive of ['forever', '30 minutes', '']) {
      const refused = await action(bridge, 'preloadModel', { backend: 'local', model: 'm:7b', keepAlive, force: true });
      assert.equal(refused.status, 400, JSON.stringify(keepAlive));
      assert.match(refused.body.error ?? '', /^preloadModel: keepAlive: /);
    }
    assert.equal(upstream.requests.length, 0);
    const loaded = await action(bridge, 'preloadModel', { backend: 'local', model: 'm:7b', keepAlive: '45m', force: true });
    assert.equal(loaded.status, 200);
    assert.deepEqual(JSON.parse(upstream.requests[0]?.body ?? '{}'), { model: 'm:7b', prompt: '', keep_alive: '45m', stream: false });
  });

  it('refuses a keep-alive Ollama cannot mean as it reads: a fraction of a second, or longer than it counts (1e308 s would unload at once)', async () => {
    const { bridge, upstream } = await bridgeOn((res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ model: 'm:7b', created_at: '2025-01-01T00:00:00Z', response: '', done: true, done_reason: 'load' }));
    });
    const preload = (keepAlive: unknown): Promise<ActionAnswer> => action(bridge, 'preloadModel', { backend: 'local', model: 'm:7b', keepAlive, force: true });
    for (const [keepAlive, why] of [
      [1.5, /^preloadModel: keepAlive: whole seconds/],
      [-0.5, /^preloadModel: keepAlive: whole seconds/],
      [1e308, /^preloadModel: keepAlive: at most 9223372036 seconds/],
      [-1e308, /^preloadModel: keepAlive: at most 9223372036 seconds/],
      ['9223372037', /^preloadModel: keepAlive: at most 9223372036 seconds/],
      ['2562048h', /^preloadModel: keepAlive: at most 9223372036 seconds/],
    ] as const) {
      const refused = await preload(keepAlive);
      assert.equal(refused.status, 400, String(keepAlive));
      assert.match(refused.body.error ?? '', why);
    }
    assert.equal(upstream.requests.length, 0);
    // For good, and the longest Ollama counts, in seconds and as a duration.
    for (const keepAlive of [-1, 9223372036, '2562047h']) assert.equal((await preload(keepAlive)).status, 200, String(keepAlive));
    assert.deepEqual(
      upstream.requests.map((r) => (JSON.parse(r.body) as { keep_alive: unknown }).keep_alive),
      [-1, 9223372036, '2562047h'],
    );
  });

  it('answers 502 when the backend cannot be reached', async () => {
    const bridge = await startTestBridge({ env: { OLLAMA_HOST: `127.0.0.1:${await freePort()}` } });
    cleanups.push(() => bridge.stop(100));
    const unreachable = await action(bridge, 'unloadModel', { backend: 'local', model: 'm:7b' });
    assert.equal(unreachable.status, 502);
    assert.match(unreachable.body.error ?? '', /local/);
  });
});

describe('tier actions of the control API', () => {
  it('keeps the later of two changes of a tier when the earlier one had to ask Ollama again and ends last', async () => {
    // An Ollama whose model list answers at once, or, once `hold` is set, only when the test lets it.
    const installed = ['a:7b'];
    let hold: { asked: () => void; answer: Promise<void> } | undefined;
    const server = createServer((req, res) => {
      const list = (): void => {
        res.writeHead(200, { 'content-type': 'application/json' });
        const models =
          req.url === '/api/tags'
            ? installed.map((name) => ({ name, model: name, modified_at: '2025-01-01T00:00:00Z', size: 1, digest: name, details: {} }))
            : [];
        res.end(JSON.stringify({ models }));
      };
      if (req.url !== '/api/tags' || hold === undefined) return list();
      hold.asked();
      void hold.answer.then(list);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const bridge = await startTestBridge({ env: { OLLAMA_HOST: `127.0.0.1:${(server.address() as AddressInfo).port}` } });
    cleanups.push(
      () => bridge.stop(100),
      () =>
        new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        }),
    );
    // The bridge knows the installed models before the user picks one.
    await new Promise<void>((resolve) => {
      if (bridge.state.models.length > 0) return resolve();
      const stop = bridge.onStateChange((state) => {
        if (state.models.length === 0) return;
        stop();
        resolve();
      });
    });
    // A model pulled a moment ago: the bridge's list lacks it, and it asks Ollama again (held).
    installed.push('b:7b');
    let release: () => void = () => undefined;
    const asked = new Promise<void>((resolve) => {
      hold = { asked: resolve, answer: new Promise((answer) => (release = answer)) };
    });
    const first = action(bridge, 'setTierModel', { tier: 'simple', model: 'b:7b' });
    await asked;
    // Meanwhile, from the tray or another window, the user picks a model the list has.
    const second = await action(bridge, 'setTierModel', { tier: 'simple', model: 'a:7b' });
    assert.equal(second.status, 200);
    release();
    const superseded = await first;
    assert.equal(superseded.status, 409);
    assert.equal(superseded.body.error, 'the simple tier was changed to a:7b after this change to b:7b was asked for: a:7b stays');
    assert.equal(bridge.state.settings.models.simple, 'a:7b', 'the later choice stands');
  });
});

describe('settings actions of the control API', () => {
  it('refuses to turn cloud fallback on where no cloud provider is configured, as the tray does, and always turns it off', async () => {
    const { bridge } = await bridgeOn((res) => res.end());
    const on = await action(bridge, 'setFallback', { enabled: true });
    assert.equal(on.status, 409);
    assert.equal(on.body.error, 'no cloud provider is configured (fallback.providers): there is nothing to fall back to');
    assert.equal(bridge.state.settings.fallbackEnabled, false, 'the switch shows no fallback that cannot happen');
    assert.equal((await action(bridge, 'setFallback', { enabled: false })).status, 200);
  });
});
