import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Identity } from '../../src/auth/identity.js';
import { addKey } from '../../src/auth/keys.js';
import type { BridgeHandle } from '../../src/bridge.js';
import type { ActionResponse, BackendSnapshot, BridgeState, SchedulerPool } from '../../src/contract/index.js';
import { stateVisibleTo } from '../../src/control/visible-state.js';
import { startStandIn, startTestBridge, type StandIn } from '../support/bridge.js';
import { readLines } from '../support/streams.js';
import { configFile } from '../support/temp.js';
import { until } from '../support/wait.js';

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

const GIB = 1024 ** 3;

function identity(fields: Partial<Identity>): Identity {
  return { name: 'ria', team: 'web', role: 'user', via: 'key', models: undefined, cloud: 'allow', limits: undefined, ...fields };
}

function backend(name: string, loaded: string[], circuits: string[]): BackendSnapshot {
  return {
    name,
    url: 'http://127.0.0.1:11434/',
    gpu: 0,
    weight: 1,
    inFlight: 2,
    requests: 9,
    failures: 1,
    health: {
      status: 'healthy',
      circuit: 'closed',
      consecutiveFailures: 0,
      lastError: null,
      lastCheckAt: null,
      latencyMs: null,
      models: circuits.map((model) => ({ model, circuit: 'open', consecutiveFailures: 3, lastError: 'answered 500' })),
    },
    loaded,
  };
}

function pool(backendName: string, model: string): SchedulerPool {
  return {
    backend: backendName,
    model,
    slots: 1,
    running: 1,
    queued: { fim: 0, interactive: 1, background: 0 },
    serviceMs: 900,
    loadMs: null,
    promptTokensPerSecond: null,
    samples: 4,
  };
}

/** A bridge with the allowed model qwen2.5-coder:7b and the others secret:70b and llama3 (that is, llama3:latest). */
function fullState(): BridgeState {
  return {
    revision: 1,
    startedAt: '2026-01-01T00:00:00Z',
    url: 'http://127.0.0.1:5000',
    settings: { dualGpu: true, fallbackEnabled: true, models: { simple: 'qwen2.5-coder:7b', moderate: 'llama3', complex: 'secret:70b' } },
    backends: [backend('gpu0', ['qwen2.5-coder:7b', 'secret:70b'], ['secret:70b', 'qwen2.5-coder:7b'])],
    gpu: {
      source: 'nvidia-smi',
      live: true,
      message: '',
      gpus: [],
      controllers: [],
      processes: [
        { pid: 11, processName: '/usr/bin/ollama', usedMemoryBytes: 5 * GIB, gpuUuid: 'GPU-0' },
        { pid: 12, processName: '/usr/bin/ollama', usedMemoryBytes: 40 * GIB, gpuUuid: 'GPU-0' },
      ],
      lastSampleAt: null,
      lastError: null,
      system: null,
    },
    placements: [
      {
        backend: 'gpu0',
        gpu: { index: 0, uuid: 'GPU-0', name: 'H100' },
        gpuFrom: 'processes',
        models: [
          { name: 'qwen2.5-coder:7b', sizeBytes: 5 * GIB, vramBytes: 5 * GIB, contextLength: 8192, expiresAt: '2030-01-01T00:00:00Z' },
          { name: 'secret:70b', sizeBytes: 40 * GIB, vramBytes: 40 * GIB, contextLength: 8192, expiresAt: '2030-01-01T00:00:00Z' },
        ],
        processVramBytes: 45 * GIB,
      },
    ],
    ollama: [],
    models: [
      { name: 'qwen2.5-coder:7b', sizeBytes: 5 * GIB, backends: ['gpu0'] },
      { name: 'llama3:latest', sizeBytes: 4 * GIB, backends: ['gpu0'] },
      { name: 'secret:70b', sizeBytes: 40 * GIB, backends: ['gpu0'] },
    ],
    fallbackProviders: ['openai'],
    requests: { total: 9, inFlight: 2 },
    historyRecords: 9,
    cloudPolicy: {
      header: 'x-bridge-local-only',
      neverModels: ['qwen2.5-coder:*', 'secret:*', '*'],
      localOnlyTeams: ['web', 'legal'],
      localOnlyKeys: ['ria', 'bob'],
    },
    today: { requests: 9, savedDollars: 1 },
    scheduler: {
      enabled: true,
      ageBoostMs: 10_000,
      fimMaxWaitMs: 1_500,
      queued: 2,
      pools: [pool('gpu0', 'qwen2.5-coder:7b'), pool('gpu0', 'secret:70b')],
      dropped: { superseded: 0, deadline: 0, cancelled: 0 },
    },
  };
}

describe('the dashboard state as an identity may read it', () => {
  it('hands everything, the very same object, to whoever sees all: no allow-list, and not a user held to its own', () => {
    const state = fullState();
    for (const who of [
      identity({ role: 'admin' }),
      identity({ role: 'viewer' }),
      identity({ role: 'admin', via: 'control' }),
      identity({ role: 'user', via: 'anonymous' }),
    ]) {
      assert.equal(stateVisibleTo(who, state), state, `${who.role} via ${who.via}`);
    }
  });

  it('shows a user without an allow-list every model, and of the never-cloud keys and teams only its own, as its history', () => {
    const state = fullState();
    const seen = stateVisibleTo(identity({ role: 'user' }), state);
    assert.deepEqual(seen, { ...state, cloudPolicy: { ...state.cloudPolicy, localOnlyKeys: ['ria'], localOnlyTeams: ['web'] } });
    assert.deepEqual(state, fullState(), 'the shared state is left as it was');
  });

  it('gives a user the shared object when no other key or team is marked never-cloud, so its state frames are serialized once', () => {
    const state = fullState();
    state.cloudPolicy = { ...state.cloudPolicy, localOnlyKeys: ['ria'], localOnlyTeams: [] };
    assert.equal(stateVisibleTo(identity({ role: 'user' }), state), state);
  });

  for (const role of ['admin', 'viewer', 'user'] as const) {
    it(`leaves every model outside an allow-list out for a ${role} that has one`, () => {
      const state = fullState();
      const seen = stateVisibleTo(identity({ role, models: ['qwen2.5-coder:*'] }), state);
      assert.deepEqual(
        seen.models.map((m) => m.name),
        ['qwen2.5-coder:7b'],
      );
      assert.deepEqual(seen.settings.models, { simple: 'qwen2.5-coder:7b', moderate: null, complex: null });
      assert.deepEqual(
        seen.backends.map((b) => b.loaded),
        [['qwen2.5-coder:7b']],
      );
      assert.deepEqual(
        seen.backends.map((b) => b.health.models.map((c) => c.model)),
        [['qwen2.5-coder:7b']],
      );
      assert.deepEqual(
        seen.placements.map((p) => p.models.map((m) => m.name)),
        [['qwen2.5-coder:7b']],
      );
      assert.deepEqual(
        seen.scheduler.pools.map((p) => p.model),
        ['qwen2.5-coder:7b'],
      );
      assert.deepEqual(seen.gpu.processes, [], "one Ollama runner per loaded model: the processes' sizes would show the others");
      assert.deepEqual(seen.cloudPolicy.neverModels, ['qwen2.5-coder:*', '*'], 'only the entries that concern a model it sees');
      assert.doesNotMatch(JSON.stringify(seen), /secret|llama3/);
      // What names no model stays: the GPUs' figures, the counters, the backends themselves.
      assert.equal(seen.placements[0]?.processVramBytes, 45 * GIB);
      assert.equal(seen.scheduler.queued, 2);
      assert.deepEqual(seen.requests, state.requests);
      assert.deepEqual(state, fullState(), 'the shared state is left as it was');
    });
  }

  it('reads the allow-list as the model lists do: letter case aside, and a name without a tag is its :latest', () => {
    const seen = stateVisibleTo(identity({ role: 'viewer', models: ['LLAMA3'] }), fullState());
    assert.deepEqual(
      seen.models.map((m) => m.name),
      ['llama3:latest'],
    );
    assert.deepEqual(seen.settings.models, { simple: null, moderate: 'llama3', complex: null });
    assert.deepEqual(seen.cloudPolicy.neverModels, ['*']);
  });
});

describe('the dashboard state over HTTP, for keys with and without an allow-list', () => {
  let upstream: StandIn;
  let bridge: BridgeHandle;
  const keys = { user: '', teamViewer: '', admin: '', unlistedUser: '', root: '' };
  const get = (path: string, key: string): Promise<Response> => fetch(`${bridge.url}${path}`, { headers: { authorization: `Bearer ${key}` } });
  const state = async (key: string): Promise<BridgeState> => (await get('/bridge/api/state', key)).json() as Promise<BridgeState>;
  const generate = async (key: string, model: string): Promise<void> => {
    const response = await fetch(`${bridge.url}/api/generate`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model, prompt: 'x', stream: false }),
    });
    assert.equal(response.status, 200, await response.text());
  };

  before(async () => {
    upstream = await startStandIn(
      (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ model: 'x', created_at: '2025-01-01T00:00:00Z', response: 'ok', done: true, done_reason: 'stop' }));
      },
      // Two model files: the scheduler keeps one queue for the names of one file.
      [
        { name: 'allowed:latest', size: 1, digest: 'a' },
        { name: 'secret:latest', size: 1, digest: 's' },
      ],
      ['allowed:latest', 'secret:latest'],
    );
    const file = configFile(
      [
        `backends:\n  - name: gpu0\n    url: ${upstream.url}`,
        'models:\n  simple:\n    name: allowed:latest\n  moderate:\n    name: secret:latest\n  complex:\n    name: secret:latest',
        'fallback:\n  never_models: ["secret*", "allowed*"]',
        'auth:\n  teams:\n    ops: { models: ["allowed*"] }\n    legal: { cloud: never }',
        '',
      ].join('\n'),
    );
    keys.user = addKey(file, { name: 'ria', team: 'legal', role: 'user', models: ['allowed*'] });
    keys.teamViewer = addKey(file, { name: 'vic', team: 'ops', role: 'viewer' });
    keys.admin = addKey(file, { name: 'ada', role: 'admin', models: ['allowed*'] });
    keys.unlistedUser = addKey(file, { name: 'bob', role: 'user', cloud: 'never' });
    keys.root = addKey(file, { name: 'root', role: 'admin' });
    bridge = await startTestBridge({ file });
    cleanups.push(
      () => bridge.stop(100),
      () => upstream.close(),
    );
    await until(() => (bridge.state.backends[0]?.loaded.length === 2 && bridge.state.models.length === 2 ? true : undefined), 'the models and what is loaded');
    // A queue of each model in the scheduler.
    await generate(keys.root, 'secret:latest');
    await generate(keys.root, 'allowed:latest');
  });

  /** Asserts that `seen` names only the allowed model (and the never-cloud rules ria or the team may see). */
  function assertOnlyAllowed(seen: BridgeState, what: string): void {
    assert.deepEqual(
      seen.models.map((m) => m.name),
      ['allowed:latest'],
      what,
    );
    assert.deepEqual(seen.settings.models, { simple: 'allowed:latest', moderate: null, complex: null }, what);
    assert.deepEqual(seen.backends[0]?.loaded, ['allowed:latest'], what);
    assert.deepEqual(
      seen.placements[0]?.models.map((m) => m.name),
      ['allowed:latest'],
      what,
    );
    assert.deepEqual(
      seen.scheduler.pools.map((p) => p.model),
      ['allowed:latest'],
      what,
    );
    assert.deepEqual(seen.cloudPolicy.neverModels, ['allowed*'], what);
    assert.doesNotMatch(JSON.stringify(seen), /secret/, what);
  }

  it('shows a key without an allow-list, and the control token, every model as before', async () => {
    for (const key of [keys.root, bridge.controlToken]) {
      const seen = await state(key);
      assert.deepEqual(seen.models.map((m) => m.name).sort(), ['allowed:latest', 'secret:latest']);
      assert.equal(seen.settings.models.complex, 'secret:latest');
      assert.deepEqual(seen.scheduler.pools.map((p) => p.model).sort(), ['allowed:latest', 'secret:latest']);
      assert.deepEqual(seen.cloudPolicy.localOnlyKeys, ['bob']);
      assert.deepEqual(seen.cloudPolicy.localOnlyTeams, ['legal']);
    }
  });

  it("leaves out the models outside a key's own allow-list or its team's, for a user, a viewer and an admin", async () => {
    for (const [who, key] of [
      ['user', keys.user],
      ['viewer of a team with a list', keys.teamViewer],
      ['admin', keys.admin],
    ] as const) {
      assertOnlyAllowed(await state(key), who);
    }
  });

  it('shows a user only itself and its own team among the never-cloud keys and teams, as its history is its own', async () => {
    assert.deepEqual((await state(keys.user)).cloudPolicy.localOnlyKeys, []);
    assert.deepEqual((await state(keys.user)).cloudPolicy.localOnlyTeams, ['legal']);
    assert.deepEqual((await state(keys.unlistedUser)).cloudPolicy, { ...(await state(keys.root)).cloudPolicy, localOnlyTeams: [] });
    assert.deepEqual((await state(keys.teamViewer)).cloudPolicy.localOnlyKeys, ['bob'], "a viewer reads everyone, as it reads everyone's history");
  });

  it("sends an allow-listed key's event stream only its models, in the first state frame and in those that follow", async () => {
    const abort = new AbortController();
    cleanups.push(async () => abort.abort());
    const events = await fetch(`${bridge.url}/bridge/api/events?access_token=${encodeURIComponent(keys.user)}`, { signal: abort.signal });
    const lines = readLines(events);
    const nextState = async (): Promise<BridgeState> => {
      // Read with next(): leaving a for-await loop would end the stream.
      let event = '';
      for (let next = await lines.next(); next.done !== true; next = await lines.next()) {
        if (next.value.startsWith('event: ')) event = next.value.slice(7);
        else if (event === 'state' && next.value.startsWith('data: ')) return JSON.parse(next.value.slice(6)) as BridgeState;
      }
      assert.fail('the event stream ended');
    };
    assertOnlyAllowed(await nextState(), 'the first frame');
    // Another key's request changes the state: the frame sent for it is filtered as well.
    await generate(keys.root, 'secret:latest');
    assertOnlyAllowed(await nextState(), 'a later frame');
    abort.abort();
  });

  it('refuses an allow-listed admin the actions on a model outside its list (set a tier, preload, unload), as it refuses it a pull', async () => {
    const act = (key: string, name: string, payload: Record<string, unknown>): Promise<Response> =>
      fetch(`${bridge.url}/bridge/api/actions/${name}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify(payload),
      });
    for (const [name, payload] of [
      ['setTierModel', { tier: 'simple', model: 'secret:latest' }],
      ['preloadModel', { backend: 'gpu0', model: 'secret:latest' }],
      ['unloadModel', { backend: 'gpu0', model: 'Secret' }],
    ] as const) {
      const response = await act(keys.admin, name, payload);
      assert.equal(response.status, 403, name);
      assert.match(((await response.json()) as { error: string }).error, /^ada may not use the model '(secret:latest|Secret)'$/, name);
    }
    assert.equal(bridge.state.settings.models.simple, 'allowed:latest');
    // Within its list it may; an admin without one may set any.
    assert.equal((await act(keys.admin, 'setTierModel', { tier: 'simple', model: 'allowed:latest' })).status, 200);
    assert.equal((await act(keys.root, 'setTierModel', { tier: 'moderate', model: 'secret:latest' })).status, 200);
  });

  it("answers an allow-listed admin's action with the state it may see", async () => {
    const response = await fetch(`${bridge.url}/bridge/api/actions/setDualGpu`, {
      method: 'POST',
      headers: { authorization: `Bearer ${keys.admin}`, 'content-type': 'application/json' },
      body: JSON.stringify({ enabled: false }),
    });
    assert.equal(response.status, 200);
    assertOnlyAllowed(((await response.json()) as ActionResponse).state, 'the state of an action');
  });
});
