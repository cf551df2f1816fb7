import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { HistoryRecord } from '../../src/contract/index.js';
import { distinct, matches, mergeRecords, NO_FILTERS, recordKey, summarize } from '../../renderer/src/lib/history.js';
import { sampleRecord } from '../support/history.js';

const NOW = Date.parse('2026-01-01T12:00:00Z');

function record(id: string, fields: Partial<HistoryRecord> = {}): HistoryRecord {
  return sampleRecord({
    id,
    time: new Date(NOW - 60_000).toISOString(),
    client: 'copilot',
    userAgent: 'GitHubCopilotChat/0.30',
    reason: 'simple: short prompt',
    model: 'qwen2.5-coder:1.5b',
    ttftMs: 10,
    totalMs: 100,
    tokensIn: 1,
    tokensOut: 1,
    tokensPerSecond: 1,
    ...fields,
  });
}

describe('dashboard history: filters and summary', () => {
  const records = [
    record('a'),
    record('b', { tier: 'complex', model: 'qwen2.5-coder:7b', backend: 'gpu1', gpu: 1, client: 'continue' }),
    record('c', { tier: null, outcome: 'error', error: 'backend gpu1 timed out', backend: 'gpu1', gpu: 1 }),
    record('d', { outcome: 'cancelled', backend: null, gpu: null }),
  ];
  const ids = (filters: Partial<typeof NO_FILTERS>): string[] => records.filter((r) => matches(r, { ...NO_FILTERS, ...filters })).map((r) => r.id);

  it('filters by tier (none for a concrete model), model, backend, outcome and client', () => {
    assert.deepEqual(ids({}), ['a', 'b', 'c', 'd']);
    assert.deepEqual(ids({ tier: 'complex' }), ['b']);
    assert.deepEqual(ids({ tier: 'none' }), ['c']);
    assert.deepEqual(ids({ model: 'qwen2.5-coder:7b' }), ['b']);
    assert.deepEqual(ids({ backend: 'gpu1' }), ['b', 'c']);
    assert.deepEqual(ids({ outcome: 'cancelled' }), ['d']);
    assert.deepEqual(ids({ client: 'continue' }), ['b']);
    assert.deepEqual(ids({ backend: 'gpu1', outcome: 'error' }), ['c']);
  });

  it('finds free text in the error, the reason or the id, whatever its case', () => {
    assert.deepEqual(ids({ text: 'TIMED OUT' }), ['c']);
    assert.deepEqual(ids({ text: 'short prompt' }), ['a', 'b', 'c', 'd']);
    assert.deepEqual(ids({ text: 'nothing like this' }), []);
  });

  it('offers each filter value once, sorted, without empty ones', () => {
    assert.deepEqual(
      distinct(records, (r) => r.backend),
      ['gpu0', 'gpu1'],
    );
    assert.deepEqual(
      distinct(records, (r) => r.client),
      ['continue', 'copilot'],
    );
  });

  it('counts requests per minute over the last five minutes only, and latency over the newest 1000', () => {
    const old = Array.from({ length: 5 }, (_, i) => record(`old${i}`, { time: new Date(NOW - 10 * 60_000).toISOString(), totalMs: 100_000 }));
    const fresh = Array.from({ length: 20 }, (_, i) => record(`new${i}`, { totalMs: (i + 1) * 10 }));
    const summary = summarize([...old, ...fresh], NOW);
    assert.equal(summary.requestsPerMinute, 4);
    assert.equal(summary.latencyCount, 25);
    // 25 latencies: 20 of 10..200 ms and 5 of 100 s; the median is a fast one, p95 a slow one.
    assert.equal(summary.latencyP50Ms, 130);
    assert.equal(summary.latencyP95Ms, 100_000);
    const many = Array.from({ length: 1200 }, (_, i) => record(`m${i}`, { totalMs: i < 200 ? 999_999 : 5 }));
    assert.equal(summarize(many, NOW).latencyCount, 1000);
    assert.equal(summarize(many, NOW).latencyP95Ms, 5, 'the oldest 200 (slow) fall out of the window');
    assert.equal(summarize([], NOW).latencyP50Ms, null);
  });

  it('times only requests that ran to their end: not ghost text the editor cancelled, nor requests the scheduler dropped', () => {
    const summary = summarize(
      [
        record('a', { totalMs: 100, outcome: 'ok' }),
        record('b', { totalMs: 300, outcome: 'error' }),
        record('c', { totalMs: 40_000, outcome: 'cancelled' }),
        record('d', { totalMs: 1, outcome: 'dropped' }),
      ],
      NOW,
    );
    assert.equal(summary.latencyCount, 2);
    assert.equal(summary.latencyP95Ms, 300);
    // Every request still counts in the rate.
    assert.equal(summary.requestsPerMinute, 4 / 5);
  });

  it('shares per tier and per GPU, largest first', () => {
    const summary = summarize(records, NOW);
    assert.deepEqual(summary.tiers, [
      ['simple', 0.5],
      ['complex', 0.25],
      ['none', 0.25],
    ]);
    assert.deepEqual(summary.backends, [
      ['GPU 1 (gpu1)', 0.5],
      ['GPU 0 (gpu0)', 0.25],
      ['none', 0.25],
    ]);
  });

  it('merges live records into the loaded ones: no duplicates, oldest first, the newest kept', () => {
    const at = (id: string, minute: number): HistoryRecord => record(id, { time: new Date(NOW + minute * 60_000).toISOString() });
    const loaded = [at('a', 1), at('b', 2)];
    assert.equal(mergeRecords(loaded, [at('b', 2)], 10), loaded, 'nothing new: the same array, so React skips a render');
    assert.deepEqual(
      mergeRecords(loaded, [at('z', 0), at('c', 3)], 10).map((r) => r.id),
      ['z', 'a', 'b', 'c'],
    );
    assert.deepEqual(
      mergeRecords(loaded, [at('c', 3), at('d', 4)], 3).map((r) => r.id),
      ['b', 'c', 'd'],
    );
    // A request id comes from the client or balancer when it sends one: a client that sends one
    // again (a retry) makes a second request, not a duplicate.
    assert.deepEqual(
      mergeRecords(loaded, [at('b', 5)], 10).map((r) => recordKey(r)),
      [at('a', 1), at('b', 2), at('b', 5)].map((r) => recordKey(r)),
    );
  });
});
