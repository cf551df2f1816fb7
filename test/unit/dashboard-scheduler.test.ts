import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { SchedulerPool, SchedulerSnapshot } from '../../src/contract/index.js';
import { backendQueue, droppedSummary, estimateCells } from '../../renderer/src/lib/scheduler.js';

const pool = (backend: string, model: string, over: Partial<SchedulerPool> = {}): SchedulerPool => ({
  backend,
  model,
  slots: 1,
  running: 1,
  queued: { fim: 0, interactive: 0, background: 0 },
  serviceMs: 4200,
  loadMs: null,
  promptTokensPerSecond: null,
  samples: 0,
  ...over,
});

const snapshot = (pools: SchedulerPool[], dropped = { superseded: 0, deadline: 0, cancelled: 0 }): SchedulerSnapshot => ({
  enabled: true,
  ageBoostMs: 10_000,
  fimMaxWaitMs: 1_500,
  queued: pools.reduce((sum, p) => sum + p.queued.fim + p.queued.interactive + p.queued.background, 0),
  pools,
  dropped,
});

describe('dashboard: scheduler figures', () => {
  it('sums a backend’s queues over its models, per lane, and leaves other backends out', () => {
    const state = snapshot([
      pool('gpu0', 'a', { running: 1, queued: { fim: 1, interactive: 2, background: 0 } }),
      pool('gpu0', 'b', { running: 1, queued: { fim: 0, interactive: 1, background: 2 } }),
      pool('gpu1', 'a', { running: 0, queued: { fim: 5, interactive: 0, background: 0 } }),
    ]);
    assert.deepEqual(backendQueue(state, 'gpu0'), { running: 2, queued: 6, text: '1 ghost text, 3 chat, 2 background' });
    assert.deepEqual(backendQueue(state, 'gpu2'), { running: 0, queued: 0, text: 'none' });
  });

  it('marks estimates that are still the seed, and says when nothing was measured', () => {
    assert.deepEqual(estimateCells(pool('gpu0', 'a')), { service: '4.20 s (seed)', load: 'not measured', prompt: 'not measured' });
    assert.deepEqual(estimateCells(pool('gpu0', 'a', { samples: 3, serviceMs: 350, loadMs: 2100, promptTokensPerSecond: 812 })), {
      service: '350 ms',
      load: '2.10 s',
      prompt: '812 tok/s',
    });
  });

  it('says how many requests never reached Ollama, and nothing when none', () => {
    assert.equal(droppedSummary(snapshot([], { superseded: 3, deadline: 0, cancelled: 2 })), 'Never sent to Ollama: 3 superseded, 2 cancelled while queued.');
    assert.equal(droppedSummary(snapshot([])), '');
  });
});
