import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BackendHealth } from '../../src/upstream/health.js';

function clocked(): { health: BackendHealth; advance: (ms: number) => void } {
  let now = 1_000_000;
  return { health: new BackendHealth({ failureThreshold: 3, cooldownMs: 10_000 }, () => now), advance: (ms) => (now += ms) };
}

describe('backend health and circuit breaker', () => {
  it('starts unknown, becomes healthy with a good check, down with a failed one', () => {
    const { health } = clocked();
    assert.equal(health.status, 'unknown');
    assert.equal(health.canTake(), true);
    health.recordCheck(true);
    assert.equal(health.status, 'healthy');
    health.recordCheck(false, 'ECONNREFUSED');
    assert.equal(health.status, 'down');
    assert.equal(health.canTake(), false);
    assert.equal(health.snapshot().lastError, 'ECONNREFUSED');
  });

  it('shows a reachable backend that fails requests as failing, and opens the circuit after the threshold', () => {
    const { health } = clocked();
    health.recordCheck(true);
    health.recordFailure('answered 500');
    assert.equal(health.status, 'failing');
    assert.equal(health.circuit, 'closed');
    assert.equal(health.canTake(), true);
    health.recordFailure('answered 500');
    health.recordFailure('answered 500');
    assert.equal(health.circuit, 'open');
    assert.equal(health.canTake(), false);
    // A good health check does not close a circuit opened by failing requests, until the cool-down passed.
    health.recordCheck(true);
    assert.equal(health.circuit, 'open');
  });

  it('gives a reachable backend its traffic back when it has not failed for a cool-down', () => {
    const { health, advance } = clocked();
    health.recordCheck(true);
    health.recordFailure('answered 500');
    advance(5_000);
    health.recordCheck(true);
    assert.equal(health.status, 'failing');
    advance(5_000);
    health.recordCheck(true);
    assert.equal(health.status, 'healthy');
    for (let i = 0; i < 3; i++) health.recordFailure('answered 500');
    assert.equal(health.circuit, 'open');
    advance(10_000);
    health.recordCheck(true);
    assert.equal(health.circuit, 'closed');
  });

  it('lets exactly one probe through after the cool-down; success closes, failure re-opens', () => {
    const { health, advance } = clocked();
    health.recordCheck(true);
    for (let i = 0; i < 3; i++) health.recordFailure('timeout');
    advance(9_999);
    assert.equal(health.circuit, 'open');
    advance(1);
    assert.equal(health.circuit, 'half-open');
    assert.equal(health.canTake(), true);
    health.begin();
    assert.equal(health.canTake(), false, 'only one probe at a time');
    health.recordFailure('timeout');
    assert.equal(health.circuit, 'open');
    advance(10_000);
    health.begin();
    health.recordSuccess(12);
    assert.equal(health.circuit, 'closed');
    assert.equal(health.status, 'healthy');
    assert.equal(health.snapshot().latencyMs, 12);
  });

  it('keeps the probe the only request through a half-open circuit when an older request, sent while it was closed, ends without a verdict', () => {
    const { health, advance } = clocked();
    health.recordCheck(true);
    // A long answer, sent before the circuit opened.
    const older = health.begin();
    for (let i = 0; i < 3; i++) health.recordFailure('timeout');
    advance(10_000);
    const probe = health.begin();
    assert.equal(health.canTake(), false);
    // The older request's client leaves: that says nothing about the probe, still running.
    health.release(undefined, older);
    assert.equal(health.canTake(), false, 'a second probe was let through');
    // The probe's own client leaving lets the next request probe.
    health.release(undefined, probe);
    assert.equal(health.canTake(), true);
  });

  it('marks a refused connection down at once, and a recovered check clears the failures it caused', () => {
    const { health } = clocked();
    health.recordCheck(true);
    for (let i = 0; i < 3; i++) health.recordFailure('ECONNREFUSED', true);
    assert.equal(health.status, 'down');
    health.recordCheck(true);
    assert.equal(health.status, 'healthy');
    assert.equal(health.circuit, 'closed');
  });
});
