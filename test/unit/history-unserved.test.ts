import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import { after, before, describe, it } from 'node:test';
import type { BridgeHandle } from '../../src/bridge.js';
import { nextRecord, startStandIn, startTestBridge, type StandIn } from '../support/bridge.js';

/** Generation requests that end before they reach a backend still leave their history record. */
describe('history of generations that were never served', () => {
  let upstream: StandIn;
  let bridge: BridgeHandle;
  /** The model details the bridge asked for while planning ghost text, held unanswered until the test lets them go. */
  const heldShows: ServerResponse[] = [];
  let showAsked: () => void = () => undefined;

  before(async () => {
    upstream = await startStandIn(
      (req, res) => {
        if (req.url === '/api/show') {
          heldShows.push(res);
          showAsked();
          return;
        }
        res.writeHead(500).end();
      },
      ['m:latest'],
    );
    bridge = await startTestBridge({ env: { OLLAMA_HOST: upstream.url } });
  });
  after(async () => {
    for (const res of heldShows) res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"gone"}');
    await bridge?.stop(100);
    await upstream?.close();
  });

  it('keeps ghost text the editor cancelled while the bridge was still working out how to send it', { timeout: 5000 }, async () => {
    const asked = new Promise<void>((resolve) => (showAsked = resolve));
    const client = new AbortController();
    const recorded = nextRecord(bridge);
    const request = fetch(`${bridge.url}/v1/engines/m:latest/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'def f(', suffix: ')', stream: true }),
      signal: client.signal,
    }).catch(() => undefined);
    await asked;
    client.abort();
    await request;
    const record = await recorded;
    assert.equal(record.outcome, 'cancelled');
    assert.equal(record.requestedModel, 'm:latest');
    assert.equal(record.path, '/v1/engines/m:latest/completions');
    assert.equal(record.backend, null);
  });

  it('keeps a request whose tier’s model no backend has, with the refusal', { timeout: 5000 }, async () => {
    const recorded = nextRecord(bridge);
    const response = await fetch(`${bridge.url}/api/chat`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'auto', messages: [{ role: 'user', content: 'x' }] }),
    });
    assert.equal(response.status, 404);
    const { error } = (await response.json()) as { error: string };
    const record = await recorded;
    assert.equal(record.outcome, 'error');
    assert.equal(record.status, 404);
    assert.equal(record.requestedModel, 'auto');
    assert.equal(record.error, error);
  });
});
