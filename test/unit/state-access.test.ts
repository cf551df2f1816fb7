import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Identity } from '../../src/auth/identity.js';
import type { BackendSnapshot, BridgeState, SchedulerPool } from '../../src/contract/index.js';
import { stateVisibleTo } from '../../src/control/visible-state.js';

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
