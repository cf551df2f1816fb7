import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { connect, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, describe, it } from 'node:test';
import type { BridgeHandle } from '../../src/bridge.js';
import { startStandIn, startTestBridge, type StandIn } from '../support/bridge.js';
import { configFile } from '../support/temp.js';
import { until } from '../support/wait.js';

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** Writes `lines` at the pace the reader takes them (pipeline waits for each drain without a listener left behind per wait). */
async function writeLines(res: ServerResponse, lines: Iterable<string>): Promise<void> {
  await pipeline(Readable.from(lines), res).catch(() => undefined);
}

/** A bridge in front of `upstream` that cuts a client reading none of its answer for 1 s; stopped after the tests. */
async function bridgeCuttingAfterOneSecond(upstream: StandIn): Promise<BridgeHandle> {
  const bridge = await startTestBridge({ file: configFile('server:\n  request_timeout_seconds: 1\n'), env: { OLLAMA_HOST: upstream.url } });
  cleanups.push(
    () => bridge.stop(100),
    () => upstream.close(),
  );
  return bridge;
}

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
function slowBody(bridge: BridgeHandle, target = 'POST /api/chat', contentType = 'application/json'): Socket {
  const socket = connect(Number(new URL(bridge.url).port), '127.0.0.1');
  socket.on('error', () => undefined);
  socket.write(`${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: ${contentType}\r\nContent-Length: 1000\r\n\r\n{`);
  cleanups.push(async () => {
    socket.destroy();
  });
  return socket;
}

/** Writes `request` and reads one whole answer (Content-Length framed), or what came before the connection closed. */
function answerOn(socket: Socket, request: string | Buffer): Promise<string> {
  return new Promise((resolve) => {
    let answer = '';
    const done = (): void => {
      socket.off('data', onData);
      socket.off('close', done);
      resolve(answer);
    };
    const onData = (chunk: Buffer): void => {
      answer += chunk.toString();
      const head = answer.indexOf('\r\n\r\n');
      const length = /content-length: (\d+)/i.exec(answer)?.[1];
      if (head >= 0 && length !== undefined && answer.length - head - 4 >= Number(length)) done();
    };
    socket.on('data', onData);
    socket.once('close', done);
    socket.write(request);
  });
}

/** A raw connection to the bridge that reads nothing until the test says so; destroyed at the end. */
function pausedClient(url: string): Socket {
  const socket = connect(Number(new URL(url).port), '127.0.0.1');
  socket.on('error', () => undefined);
  cleanups.push(async () => {
    socket.destroy();
  });
  socket.pause();
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

  it(
    'answers a request head that does not arrive whole in time with 408 and closes the connection, also one that never starts',
    { timeout: 10_000 },
    async () => {
      // Node checks its head deadline only every connectionsCheckingInterval (30 s by default): at
      // that pace these would still be open when the test gives up.
      const bridge = await bridgeWith('server:\n  request_timeout_seconds: 0.5\n');
      const port = Number(new URL(bridge.url).port);
      const answers = ['GET /api/version HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow:', ''].map(async (sent) => {
        const socket = connect(port, '127.0.0.1');
        socket.on('error', () => undefined);
        cleanups.push(async () => {
          socket.destroy();
        });
        socket.write(sent);
        let answer = '';
        socket.on('data', (chunk: Buffer) => (answer += chunk.toString()));
        await once(socket, 'close');
        return answer;
      });
      for (const answer of await Promise.all(answers)) assert.match(answer, /^HTTP\/1\.1 408 /);
    },
  );

  it('tells a client that waits for 100 Continue to send its body only once it is wanted, never before a refusal', { timeout: 20_000 }, async () => {
    const bridge = await bridgeWith('server:\n  body_limit_mb: 1\n');
    const port = Number(new URL(bridge.url).port);
    const waiting = (path: string, headers: string): Socket => {
      const socket = connect(port, '127.0.0.1');
      socket.on('error', () => undefined);
      cleanups.push(async () => {
        socket.destroy();
      });
      socket.write(`POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n${headers}\r\n`);
      return socket;
    };
    // Refused before the body is read (too large, a foreign page, no control token): the answer comes first, not a
    // 100 Continue that makes the client upload what nobody reads.
    for (const [path, headers, status] of [
      ['/api/chat', 'Content-Length: 5000000\r\n', 413],
      ['/api/chat', 'Origin: http://evil.example\r\nContent-Length: 2\r\n', 403],
      ['/api/chat/', 'Content-Length: 5000000\r\n', 413],
      ['/bridge/api/actions/dual-gpu', 'Content-Length: 2\r\n', 401],
    ] as const) {
      const answer = await answerOn(waiting(path, headers), '');
      assert.match(answer, new RegExp(`^HTTP/1\\.1 ${status} `), `${path} ${headers}`);
    }
    // Wanted, on the fast path and through express: 100 Continue, then the answer to the body sent.
    for (const path of ['/api/chat', '/api/chat/']) {
      const socket = waiting(path, 'Content-Length: 2\r\n');
      const [interim] = (await once(socket, 'data')) as [Buffer];
      assert.match(interim.toString(), /^HTTP\/1\.1 100 Continue\r\n\r\n$/, path);
      assert.match(await answerOn(socket, '{}'), /^HTTP\/1\.1 (400|404) /, path);
    }
  });

  describe('a model blob upload (streamed through to Ollama)', () => {
    /**
     * An Ollama stand-in for /api/blobs: each upload's bytes as they arrived whole, or 'aborted' for
     * one cut short. `slowDiskMs`: it stops reading that long after the first piece, as Ollama
     * does when the disk it writes to falls behind; `exists`: it answers at once without reading,
     * as Ollama does for a blob it already has.
     */
    async function blobStore(behavior: { slowDiskMs?: number; exists?: boolean } = {}): Promise<{ url: string; uploads: Array<Promise<Buffer | 'aborted'>> }> {
      const uploads: Array<Promise<Buffer | 'aborted'>> = [];
      const server = createServer((req: IncomingMessage, res) => {
        if (!req.url?.startsWith('/api/blobs/')) {
          res.writeHead(200, { 'content-type': 'application/json' }).end('{"models":[]}');
          return;
        }
        if (behavior.exists === true) {
          res.writeHead(200).end();
          return;
        }
        uploads.push(
          new Promise((resolve) => {
            const chunks: Buffer[] = [];
            req.once('data', () => {
              if (behavior.slowDiskMs === undefined) return;
              req.pause();
              setTimeout(() => req.resume(), behavior.slowDiskMs);
            });
            req.on('data', (chunk: Buffer) => chunks.push(chunk));
            req.on('end', () => {
              res.writeHead(201).end();
              resolve(Buffer.concat(chunks));
            });
            req.on('close', () => {
              if (!req.complete) resolve('aborted');
            });
          }),
        );
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      cleanups.push(async () => {
        server.closeAllConnections();
        await new Promise((resolve) => server.close(resolve));
      });
      return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, uploads };
    }

    async function bridgeFor(upstreamUrl: string): Promise<BridgeHandle> {
      const bridge = await startTestBridge({
        file: configFile(`backends:\n  - name: gpu0\n    url: ${upstreamUrl}\nserver:\n  request_timeout_seconds: 0.5\n`),
      });
      cleanups.push(() => bridge.stop(100));
      return bridge;
    }

    it('reaches Ollama whole, byte for byte, even when it takes longer than the body timeout', { timeout: 20_000 }, async () => {
      const store = await blobStore();
      const bridge = await bridgeFor(store.url);
      const blob = randomBytes(3 * 1024 * 1024);
      const digest = createHash('sha256').update(blob).digest('hex');
      // 8 pieces 150 ms apart: the upload takes longer than the 0.5 s timeout, and keeps arriving.
      const pieces = 8;
      let sent = 0;
      const started = performance.now();
      const body = new ReadableStream<Uint8Array>({
        async pull(controller) {
          if (sent === pieces) return controller.close();
          if (sent > 0) await new Promise((resolve) => setTimeout(resolve, 150));
          controller.enqueue(blob.subarray((sent * blob.length) / pieces, ((sent + 1) * blob.length) / pieces));
          sent += 1;
        },
      });
      const answer = await fetch(`${bridge.url}/api/blobs/sha256:${digest}`, { method: 'POST', body, duplex: 'half' } as RequestInit);
      assert.equal(answer.status, 201);
      assert.ok(performance.now() - started > 500, 'the upload outlasted the body timeout');
      const received = await store.uploads[0];
      assert.ok(Buffer.isBuffer(received), 'the upload was not cut');
      assert.equal(createHash('sha256').update(received).digest('hex'), digest);
    });

    it('is not taken for a stalled one while Ollama is the one not reading', { timeout: 20_000 }, async () => {
      const store = await blobStore({ slowDiskMs: 1500 });
      const bridge = await bridgeFor(store.url);
      const blob = randomBytes(16 * 1024 * 1024);
      const answer = await fetch(`${bridge.url}/api/blobs/sha256:${createHash('sha256').update(blob).digest('hex')}`, { method: 'POST', body: blob });
      assert.equal(answer.status, 201);
      const received = await store.uploads[0];
      assert.ok(Buffer.isBuffer(received) && received.equals(blob), 'the upload reached Ollama whole');
    });

    it('that Ollama answers before reading it closes the connection, whose rest of the body is unread', { timeout: 20_000 }, async () => {
      const store = await blobStore({ exists: true });
      const bridge = await bridgeFor(store.url);
      const socket = connect(Number(new URL(bridge.url).port), '127.0.0.1');
      socket.on('error', () => undefined);
      cleanups.push(async () => {
        socket.destroy();
      });
      socket.write('POST /api/blobs/sha256:0123 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4000000\r\n\r\n');
      socket.write(Buffer.alloc(64 * 1024));
      let answer = '';
      socket.on('data', (chunk: Buffer) => (answer += chunk.toString()));
      await once(socket, 'close');
      assert.match(answer, /^HTTP\/1\.1 200 /);
      assert.match(answer, /connection: close/i);
    });

    it('that stalls is answered 408 in Ollama’s shape, closes the connection and stops the upload upstream', { timeout: 20_000 }, async () => {
      const store = await blobStore();
      const bridge = await bridgeFor(store.url);
      const socket = slowBody(bridge, 'POST /api/blobs/sha256:0123', 'application/octet-stream');
      let answer = '';
      socket.on('data', (chunk: Buffer) => (answer += chunk.toString()));
      await once(socket, 'close');
      assert.match(answer, /^HTTP\/1\.1 408 /);
      assert.match(answer, /connection: close/i);
      const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as unknown;
      assert.deepEqual(body, { error: 'the request body stopped arriving for 0.5 s (server.request_timeout_seconds)' });
      assert.equal(store.uploads.length, 1, 'the upload had started upstream');
      assert.equal(await store.uploads[0], 'aborted');
    });
  });

  it('closes the connection after refusing a gzip body that does not decode while the rest of it still arrives', { timeout: 20_000 }, async () => {
    const bridge = await bridgeWith('');
    const socket = connect(Number(new URL(bridge.url).port), '127.0.0.1');
    socket.on('error', () => undefined);
    cleanups.push(async () => {
      socket.destroy();
    });
    // Not gzip, and more of it announced than sent: nothing will read the rest, so a request sent
    // next on this connection would wait forever.
    const head = 'POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Encoding: gzip\r\nContent-Length: 4000000\r\n\r\n';
    const answer = await answerOn(socket, Buffer.concat([Buffer.from(head), Buffer.alloc(64 * 1024, 'x')]));
    assert.match(answer, /^HTTP\/1\.1 400 /);
    assert.match(answer, /\r\nconnection: close\r\n/i);
    await once(socket, 'close');
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

  it('cuts a client that stops reading its answer for request_timeout_seconds, which stops the generation upstream', { timeout: 20_000 }, async () => {
    const line = `${JSON.stringify({ model: 'm', created_at: '2024-01-01T00:00:00Z', message: { role: 'assistant', content: 'x'.repeat(4000) }, done: false })}\n`;
    let generating: Promise<unknown> | undefined;
    const upstream = await startStandIn(async (_req, res) => {
      generating = once(res, 'close');
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      // Endless, at the pace the bridge takes it.
      await writeLines(
        res,
        (function* () {
          for (;;) yield line;
        })(),
      );
    });
    const bridge = await bridgeCuttingAfterOneSecond(upstream);
    const socket = pausedClient(bridge.url);
    const body = '{"model":"m","messages":[{"role":"user","content":"hi"}]}';
    socket.write(`POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    await until(() => generating, 'the generation to start');
    // The stream fills every buffer, then waits on a client that never reads: it is let go, and the generation with it.
    await generating;
  });

  it('does not take a client that reads a large answer slowly for one that stopped reading', { timeout: 30_000 }, async () => {
    // Some 23 MB of model list, written to the connection in one piece.
    const models = Array.from({ length: 100_000 }, (_, i) => `model-${i}:latest`);
    const upstream = await startStandIn((_req, res) => res.end('{}'), models);
    const bridge = await startTestBridge({
      file: configFile('server:\n  request_timeout_seconds: 2\nrouting:\n  thresholds:\n    max_line_mb: 64\n'),
      env: { OLLAMA_HOST: upstream.url },
    });
    cleanups.push(
      () => bridge.stop(100),
      () => upstream.close(),
    );
    const socket = pausedClient(bridge.url);
    socket.write('GET /api/tags HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
    // Takes what has arrived 100 times a second: a few megabytes a second, so the answer takes
    // seconds longer than request_timeout_seconds to read.
    const chunks: Buffer[] = [];
    const reader = setInterval(() => {
      const chunk = socket.read() as Buffer | null;
      if (chunk !== null) chunks.push(chunk);
    }, 10);
    await once(socket, 'close');
    clearInterval(reader);
    const received = Buffer.concat(chunks).toString();
    const body = received.slice(received.indexOf('\r\n\r\n') + 4);
    assert.equal(Buffer.byteLength(body), Number(/content-length: (\d+)/i.exec(received)?.[1]), 'the answer was cut');
    assert.equal((JSON.parse(body) as { models: unknown[] }).models.length, models.length + 4);
  });

  it('does not take a client that reads a long stream slowly, past every buffer, for one that stopped reading', { timeout: 30_000 }, async () => {
    // Some 5 MB of answer, more than the kernel buffers of both ends hold: the kernel lets the
    // bridge write again only once it has sent a good part of what it holds, which at this pace
    // takes longer than request_timeout_seconds.
    const lines = 1200;
    const line = (i: number): string =>
      `${JSON.stringify({ model: 'm', created_at: '2024-01-01T00:00:00Z', message: { role: 'assistant', content: 'x'.repeat(4000) }, done: i === lines - 1 })}\n`;
    const upstream = await startStandIn(async (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      await writeLines(
        res,
        (function* () {
          for (let i = 0; i < lines; i++) yield line(i);
        })(),
      );
    });
    const bridge = await bridgeCuttingAfterOneSecond(upstream);
    const socket = pausedClient(bridge.url);
    const body = '{"model":"m","messages":[{"role":"user","content":"hi"}]}';
    socket.write(`POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    // Takes 8 KB 100 times a second at most: under 1 MB a second.
    const chunks: Buffer[] = [];
    const reader = setInterval(() => {
      const chunk = (socket.read(8192) ?? socket.read()) as Buffer | null;
      if (chunk !== null) chunks.push(chunk);
    }, 10);
    await once(socket, 'close');
    clearInterval(reader);
    for (let rest = socket.read() as Buffer | null; rest !== null; rest = socket.read() as Buffer | null) chunks.push(rest);
    const received = Buffer.concat(chunks).toString();
    assert.equal(received.match(/"done":false/g)?.length, lines - 1, 'the answer was cut');
    assert.equal(received.match(/"done":true/g)?.length, 1, 'the answer was cut');
  });

  it('holds the metrics port to the same connection cap and head deadline as the main one', { timeout: 10_000 }, async () => {
    const bridge = await bridgeWith('server:\n  max_connections: 3\n  request_timeout_seconds: 0.5\nmonitoring:\n  prometheus:\n    port: 0\n');
    const metricsUrl = new URL(bridge.metricsUrl ?? assert.fail('no metrics port'));
    const stalled: Socket[] = [];
    for (let i = 0; i < 3; i++) {
      const socket = connect(Number(metricsUrl.port), '127.0.0.1');
      socket.on('error', () => undefined);
      cleanups.push(async () => {
        socket.destroy();
      });
      socket.resume();
      await once(socket, 'connect');
      stalled.push(socket);
    }
    // The cap: a new client takes the place of the oldest stalled one.
    const closedFirst = once(stalled[0] as Socket, 'close');
    assert.equal((await fetch(`${metricsUrl.origin}/health`)).status, 200);
    await closedFirst;
    // The head deadline: the others, which never sent a byte, are cut too.
    await once(stalled[2] as Socket, 'close');
  });

  it(
    'over max_connections, lets go of kept-alive connections idle after their answer, also when the request body was left unread',
    { timeout: 20_000 },
    async () => {
      const bridge = await bridgeWith('server:\n  max_connections: 3\n');
      const port = Number(new URL(bridge.url).port);
      const open = async (): Promise<Socket> => {
        const socket = connect(port, '127.0.0.1');
        socket.on('error', () => undefined);
        cleanups.push(async () => {
          socket.destroy();
        });
        await once(socket, 'connect');
        return socket;
      };
      // Each keeps its connection after a whole answer: a health check, a body refused before it is
      // read (415) and a GET that carries a body, as some clients send; node reads those after the answer.
      const requests = [
        'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n',
        'POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json; charset=latin1\r\nContent-Length: 2\r\n\r\n{}',
        'GET /api/tags HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}',
      ];
      const idle: Socket[] = [];
      for (const request of requests) {
        const socket = await open();
        assert.match(await answerOn(socket, request), /^HTTP\/1\.1 (200|415) /);
        idle.push(socket);
      }
      const closedFirst = once(idle[0] as Socket, 'close');
      const next = await open();
      assert.match(await answerOn(next, 'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'), /^HTTP\/1\.1 200 /, 'the new client is served');
      await closedFirst;
      assert.equal((idle[2] as Socket).destroyed, false, 'the newest idle connection is still held');
    },
  );
});
