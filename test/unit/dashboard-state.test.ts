import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { BridgeState } from '../../src/contract/index.js';
import { newerState } from '../../renderer/src/lib/state.js';

const taken = (startedAt: string, revision: number): BridgeState => ({ startedAt, revision }) as BridgeState;

describe('dashboard state', () => {
  it('keeps the newer of two states of one bridge run, whichever arrived last', () => {
    const older = taken('2026-01-01T00:00:00.000Z', 4);
    const newer = taken('2026-01-01T00:00:00.000Z', 5);
    assert.equal(newerState(null, older), older);
    assert.equal(newerState(older, newer), newer);
    assert.equal(newerState(newer, older), newer);
  });

  it('takes the state of a restarted bridge, which counts its revisions from 1 again', () => {
    const before = taken('2026-01-01T00:00:00.000Z', 900);
    const restarted = taken('2026-01-01T00:05:00.000Z', 1);
    assert.equal(newerState(before, restarted), restarted);
  });
});
