import type { HistoryRecord } from '../../src/control/api-types.js';

/** A complete history record for tests that seed history; `overrides` set what the test is about. */
export function sampleRecord(overrides: Partial<HistoryRecord> = {}): HistoryRecord {
  return {
    id: 'r',
    time: '2025-06-02T09:30:00.000Z',
    client: 'test',
    surface: 'openai',
    path: '/v1/chat/completions',
    requestedModel: 'auto',
    tier: 'simple',
    reason: 'simple: keyword',
    backend: 'gpu0',
    gpu: 0,
    model: 'm',
    retries: 0,
    fallback: null,
    status: 200,
    outcome: 'ok',
    error: null,
    ttftMs: 1,
    totalMs: 2,
    tokensIn: 3,
    tokensOut: 4,
    tokensPerSecond: 5,
    user: null,
    team: null,
    localOnly: null,
    gpuMs: null,
    energyJoules: null,
    cloudCostDollars: null,
    energyCostDollars: null,
    savedDollars: null,
    ...overrides,
  };
}
