import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import express, { type RequestHandler, type Response as ExpressResponse } from 'express';
import { pino } from 'pino';
import { beginRequest, requestOf } from '../../src/api/request.js';
import { StateFeed } from '../../src/control/feed.js';
import { controlRoutes, MAX_EVENT_SUBSCRIBERS } from '../../src/control/routes.js';
import { startStandIn, startTestBridge } from '../support/bridge.js';
import { sampleRecord } from '../support/history.js';

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** The control routes alone over `bridge`'s state, served after `before` (where a test holds or watches requests). */
async function controlServer(before: RequestHandler): Promise<{ port: number; server: Server; feed: StateFeed }> {
  const upstream = await startStandIn((_req, res) => res.end());
  const bridge = await startTestBridge({ env: { OLLAMA_HOST: upstream.url } });
  const feed = new StateFeed(() => bridge.state);
  const app = express();
  app.use((req, _res, next) => {
    beginRequest(req, 'r', req.path);
    requestOf(req).identity = { name: 'local', team: null, role: 'admin', via: 'anonymous', models: undefined, cloud: 'allow', limits: undefined };
    next();
  }, before);
  app.use(
    controlRoutes({
      log: pino({ level: 'silent' }),
      actions: bridge.actions,
      state: () => bridge.state,
      feed,
      history: () => [],
      gpuHistory: () => ({}),
      usage: () => Promise.reject(new Error('not asked')),
      usageCsv: () => Promise.reject(new Error('not asked')),
      authRequired: false,
    }),
  );
  const server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  cleanups.push(
    () => bridge.stop(100),
    () => upstream.close(),
    () =>
      new Promise<void>((resolve) => {
        feed.close();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  );
  return { port: (server.address() as AddressInfo).port, server, feed };
}

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

  it('frees the place of a client that left while its credential was being checked', async () => {
    // An identity check can wait on the network (a JWT's key set fetched on first use); a client
    // that hangs up meanwhile reaches the stream handler with its connection already closed.
    const handled: Array<Promise<void>> = [];
    const { port, server } = await controlServer((req, _res, next) => {
      // Slow authentication: the request goes on only once its client has gone (and unchanged when it stays).
      if (req.headers['x-leave'] === undefined) next();
      else
        handled.push(
          new Promise((resolve) =>
            req.socket.once('close', () => {
              next();
              resolve();
            }),
          ),
        );
    });
    for (let i = 0; i < MAX_EVENT_SUBSCRIBERS; i++) {
      const socket = connect(port, '127.0.0.1');
      await once(socket, 'connect');
      const served = once(server, 'request');
      socket.write(`GET /bridge/api/events HTTP/1.1\r\nhost: 127.0.0.1:${port}\r\nx-leave: 1\r\n\r\n`);
      await served;
      socket.destroy();
    }
    await Promise.all(handled);
    const response = await fetch(`http://127.0.0.1:${port}/bridge/api/events`);
    assert.equal(response.status, 200, 'the streams of clients that left before they were served hold no place');
    await response.body?.cancel();
  });

  it('tells a stream that missed history records while it did not read, once it reads again', { timeout: 10_000 }, async () => {
    let stream: ExpressResponse | undefined;
    const { port, feed } = await controlServer((_req, res, next) => {
      stream = res;
      next();
    });
    const socket = connect(port, '127.0.0.1');
    socket.on('error', () => undefined);
    let received = '';
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1');
    });
    socket.write(`GET /bridge/api/events HTTP/1.1\r\nhost: 127.0.0.1:${port}\r\n\r\n`);
    await once(socket, 'data');
    socket.pause();
    // Records until the bridge holds what the client does not read, then one that it drops.
    const reason = 'x'.repeat(64 * 1024);
    for (let i = 0; stream?.writableNeedDrain !== true; i++) feed.record(sampleRecord({ id: `filled-${i}`, reason }));
    feed.record(sampleRecord({ id: 'dropped' }));
    socket.resume();
    while (!received.includes('event: history-gap\n')) await once(socket, 'data');
    assert.doesNotMatch(received, /"id":"dropped"/, 'the dropped record itself is read from /bridge/api/history');
    socket.destroy();
  });
});
