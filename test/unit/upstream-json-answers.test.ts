import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { BridgeHandle } from '../../src/bridge.js';
import { startStandIn, startTestBridge, type StandIn } from '../support/bridge.js';

/**
 * JSON answers of an upstream that are valid but nest thousands of levels deep: parsed, such an
 * answer would overflow the stack wherever it is written on, so it must fail as the upstream's
 * fault (502, saying why), never as an internal error of the bridge.
 */

const DEEP = `${'['.repeat(20_000)}${']'.repeat(20_000)}`;

describe('an upstream JSON answer nested too deep', () => {
  let upstream: StandIn;
  let bridge: BridgeHandle;
  before(async () => {
    // /api/tags and /api/ps come from the stand-in itself; the details of every model nest too deep.
    upstream = await startStandIn(
      (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(`{"capabilities":["completion"],"details":{},"model_info":{"x":${DEEP}}}`);
      },
      ['m:latest'],
    );
    bridge = await startTestBridge({ env: { OLLAMA_HOST: upstream.url } });
  });
  after(async () => {
    await bridge?.stop(100);
    await upstream?.close();
  });

  it('fails /api/show with 502 saying so, not 500', async () => {
    const response = await fetch(`${bridge.url}/api/show`, { method: 'POST', body: JSON.stringify({ model: 'm:latest' }) });
    assert.equal(response.status, 502);
    assert.match(((await response.json()) as { error: string }).error, /^local sent an answer nested deeper than 512 levels$/);
  });
});
