import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { SchedulerSnapshot } from '../../src/contract/index.js';
import { loadConfig } from '../../src/config/load.js';
import { BridgeMetrics } from '../../src/metrics/metrics.js';
import { nextRecord, postJson, startCloudBridge } from '../support/bridge.js';
import { sampleRecord } from '../support/history.js';

const idleScheduler = (): SchedulerSnapshot => ({
  enabled: true,
  ageBoostMs: 0,
  fimMaxWaitMs: 0,
  queued: 0,
  pools: [],
  dropped: { superseded: 0, deadline: 0, cancelled: 0 },
});

function bridgeMetrics(): BridgeMetrics {
  return new BridgeMetrics(
    [],
    () => [],
    () => true,
    idleScheduler,
    { simple: 'm', moderate: 'm', complex: 'm' },
    loadConfig({ env: {} }),
  );
}

/** The value of one sample line of the exposition, 0 when it is not there. */
function sample(exposition: string, line: RegExp): number {
  const match = new RegExp(`^${line.source} (\\S+)$`, 'm').exec(exposition);
  return match === null ? 0 : Number(match[1]);
}

describe('latency histograms', () => {
  it('time requests that ran to their end, not ones the client left (ghost text) or the scheduler dropped', async () => {
    const metrics = bridgeMetrics();
    metrics.observe(sampleRecord({ outcome: 'ok', totalMs: 2_000, ttftMs: 500 }));
    metrics.observe(sampleRecord({ outcome: 'error', status: 504, totalMs: 40_000, ttftMs: null }));
    // A keystroke later the editor leaves the suggestion: 40 s is the typing, not the bridge.
    metrics.observe(sampleRecord({ outcome: 'cancelled', totalMs: 40_000, ttftMs: 300 }));
    metrics.observe(sampleRecord({ outcome: 'dropped', totalMs: 5, ttftMs: null }));
    const text = await metrics.registry.metrics();

    const series = (name: string, suffix: string): RegExp => new RegExp(`${name}_${suffix}\\{tier="simple",backend="gpu0"\\}`);
    assert.equal(sample(text, series('copilot_bridge_response_time_seconds', 'count')), 2);
    assert.equal(sample(text, series('copilot_bridge_response_time_seconds', 'sum')), 42);
    // The first token a cancelled request got is the bridge's own latency: it counts.
    assert.equal(sample(text, series('copilot_bridge_time_to_first_token_seconds', 'count')), 2);
    // Every request is still counted, with its outcome.
    for (const outcome of ['ok', 'error', 'cancelled', 'dropped'])
      assert.equal(sample(text, new RegExp(`copilot_bridge_requests_total\\{[^}]*outcome="${outcome}"\\}`)), 1, outcome);
  });
});

describe('copilot_bridge_rate_limited_total', () => {
  it("counts the bridge's own limits, not a cloud provider's 429 passed on to the client", async () => {
    const { bridge, close } = await startCloudBridge('openai', (res) => {
      res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '7' });
      res.end(JSON.stringify({ error: { message: 'Rate limit reached for requests', type: 'requests', code: 'rate_limit_exceeded' } }));
    });
    try {
      const recorded = nextRecord(bridge);
      const response = await postJson(`${bridge.url}/v1/chat/completions`, { model: 'qwen2.5-coder:7b', messages: [{ role: 'user', content: 'x' }] });
      assert.equal(response.status, 429);
      await response.text();
      assert.equal((await recorded).status, 429);
      const text = await (await fetch(`${bridge.url}/metrics`)).text();
      assert.equal(sample(text, /copilot_bridge_rate_limited_total\{team="none"\}/), 0, text);
    } finally {
      await close();
    }
  });
});
