import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { after, describe, it } from 'node:test';
import type { BridgeHandle } from '../../src/bridge.js';
import { startStandIn, startTestBridge } from '../support/bridge.js';
import { configFile } from '../support/temp.js';

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function bridgeWith(yaml: string): Promise<BridgeHandle> {
  const upstream = await startStandIn((_req, res) => res.end('{}'));
  const file = configFile(yaml);
  const bridge = await startTestBridge({ file, env: { OLLAMA_HOST: upstream.url } });
  cleanups.push(
    () => bridge.stop(100),
    () => upstream.close(),
  );
  return bridge;
}

/** A client that sends a request head announcing a body, then one byte of it, and stalls. */
function slowBody(bridge: BridgeHandle): Socket {
  const socket = connect(Number(new URL(bridge.url).port), '127.0.0.1');
  socket.on('error', () => undefined);
  socket.write('POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{');
  cleanups.push(async () => {
    socket.destroy();
  });
  return socket;
}

describe('client connections', () => {
  it('answers a body that does not arrive in time with 408 and closes the connection', { timeout: 20_000 }, async () => {
    const bridge = await bridgeWith('server:\n  request_timeout_seconds: 0.5\n');
    const socket = slowBody(bridge);
    let answer = '';
    socket.on('data', (chunk: Buffer) => (answer += chunk.toString()));
    await once(socket, 'close');
    assert.match(answer, /^HTTP\/1\.1 408 /);
    assert.match(answer, /connection: close/i);
    assert.match(answer, /"error":"the request body did not arrive within 0.5 s/);
  });

  it('closes the connection of a client refused for a missing API key', async () => {
    const bridge = await bridgeWith('server:\n  api_keys: ["0123456789abcdef0123"]\n');
    const refused = await fetch(`${bridge.url}/api/tags`);
    assert.equal(refused.status, 401);
    assert.equal(refused.headers.get('connection'), 'close');
    const allowed = await fetch(`${bridge.url}/api/tags`, { headers: { authorization: 'Bearer 0123456789abcdef0123' } });
    assert.equal(allowed.status, 200);
    assert.notEqual(allowed.headers.get('connection'), 'close');
  });

  it('over max_connections, lets go of the connections that stalled longest, so the others are still served', { timeout: 20_000 }, async () => {
    const bridge = await bridgeWith('server:\n  max_connections: 5\n');
    const stalled: Socket[] = [];
    for (let i = 0; i < 5; i++) {
      const socket = slowBody(bridge);
      await once(socket, 'connect');
      stalled.push(socket);
    }
    // The bridge holds 5 stalled connections: the next client takes the place of the oldest.
    const closedFirst = once(stalled[0] as Socket, 'close');
    const health = await fetch(`${bridge.url}/health`);
    assert.equal(health.status, 200);
    await closedFirst;
    for (let i = 0; i < 3; i++) assert.equal((await fetch(`${bridge.url}/health`)).status, 200);
    assert.equal((stalled[4] as Socket).destroyed, false, 'the newest stalled connection is still held');
  });
});
