import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, type AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import express from 'express';
import { pino } from 'pino';
import { beginRequest, requestOf } from '../../src/api/request.js';
import { StateFeed } from '../../src/control/feed.js';
import { controlRoutes, MAX_EVENT_SUBSCRIBERS } from '../../src/control/routes.js';
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

  it('frees the place of a client that left while its credential was being checked', async () => {
    // An identity check can wait on the network (a JWT's key set fetched on first use); a client
    // that hangs up meanwhile reaches the stream handler with its connection already closed.
    const upstream = await startStandIn((_req, res) => res.end());
    const bridge = await startTestBridge({ env: { OLLAMA_HOST: upstream.url } });
    const app = express();
    const handled: Array<Promise<void>> = [];
    app.use((req, _res, next) => {
      beginRequest(req, 'r', req.path);
      requestOf(req).identity = { name: 'local', team: null, role: 'admin', via: 'anonymous', models: undefined, cloud: 'allow', limits: undefined };
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
    app.use(
      controlRoutes({
        log: pino({ level: 'silent' }),
        actions: bridge.actions,
        state: () => bridge.state,
        feed: new StateFeed(() => bridge.state),
        history: () => [],
        gpuHistory: () => ({}),
        usage: () => Promise.reject(new Error('not asked')),
        usageCsv: () => Promise.reject(new Error('not asked')),
        authRequired: false,
      }),
    );
    const server = app.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as AddressInfo;
    cleanups.push(
      () => bridge.stop(100),
      () => upstream.close(),
      () =>
        new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        }),
    );
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
});
