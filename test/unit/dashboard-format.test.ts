import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { clockTimeOf } from '../../src/contract/index.js';
import { percentOf } from '../../renderer/src/format.js';

describe('dashboard formats', () => {
  it('writes the hour after midnight as 00, not 24', () => {
    // hour12: false picks the h24 clock in en-US, where the first hour of the day is 24.
    assert.match(clockTimeOf(new Date(2026, 0, 1, 0, 5, 7).toISOString()), /^00\D05\D07$/);
    assert.match(clockTimeOf(new Date(2026, 0, 1, 23, 59, 0).toISOString()), /^23\D59\D00$/);
  });

  it('gives a share in percent only where both figures are known: an unknown total is no 100 million percent', () => {
    assert.equal(percentOf(6, 24), 25);
    assert.equal(percentOf(6, null), null);
    assert.equal(percentOf(6, 0), null);
    assert.equal(percentOf(null, 24), null);
  });
});
