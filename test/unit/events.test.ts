import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { MAX_EVENT_SUBSCRIBERS } from '../../src/control/routes.js';
import { startStandIn, startTestBridge } from '../support/bridge.js';

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

describe('dashboard event stream', () => {
  it('caps the number of open event streams and takes a new one when one closes', async () => {
    const upstream = await startStandIn((_req, res) => res.end());
    const bridge = await startTestBridge({ env: { OLLAMA_HOST: upstream.url } });
    cleanups.push(
      () => bridge.stop(100),
      () => upstream.close(),
    );
    const open = async (): Promise<Response> => fetch(`${bridge.url}/bridge/api/events`);
    const streams: Response[] = [];
    for (let i = 0; i < MAX_EVENT_SUBSCRIBERS; i++) {
      const response = await open();
      assert.equal(response.status, 200);
      streams.push(response);
    }
    const refused = await open();
    assert.equal(refused.status, 503);
    assert.match(((await refused.json()) as { error: string }).error, /event streams are open already/);

    const closing = streams.pop() as Response;
    await closing.body?.cancel();
    // The bridge frees the place when it sees the close; ask until it did.
    let accepted = await open();
    while (accepted.status === 503) accepted = await open();
    assert.equal(accepted.status, 200);
    for (const response of [...streams, accepted]) await response.body?.cancel();
  });
});
