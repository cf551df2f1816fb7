import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import { whenClosed } from '../../src/api/call.js';
import { BodyError, readJsonBody } from '../../src/http/body.js';

/**
 * A request whose client sent it whole and hung up before the server looked at it, as when a
 * client leaves while the bridge awaits a JWT key set or a Redis counter: the handler runs
 * `afterHangUp` once the response has closed.
 */
async function afterHangUp(check: (req: IncomingMessage, res: ServerResponse) => Promise<void>): Promise<void> {
  let checked: Promise<void> | undefined;
  const server = createServer((req, res) => {
    checked = (async () => {
      if (!res.destroyed) await once(res, 'close');
      await check(req, res);
    })();
    client.destroy();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const body = '{"model":"m","messages":[]}';
  const client = connect((server.address() as AddressInfo).port, '127.0.0.1');
  client.on('error', () => undefined);
  client.write(`POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
  await once(server, 'request');
  try {
    await (checked as Promise<void>);
  } finally {
    server.close();
  }
}

describe('a client that hung up during an await', () => {
  it('is not served: reading its body, though it all arrived, rejects as aborted', async () => {
    await afterHangUp(async (req, res) => {
      await assert.rejects(readJsonBody(req, res, 1_000_000, 5_000), (error: unknown) => error instanceof BodyError && error.type === 'request.aborted');
    });
  });

  it("has its close work run at once, though its 'close' has passed (a slot given back, a generation stopped)", async () => {
    await afterHangUp(async (_req, res) => {
      let released = 0;
      whenClosed(res, () => (released += 1));
      assert.equal(released, 1);
    });
  });
});
