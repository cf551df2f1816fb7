import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import { toUpstreamError } from '../../src/upstream/errors.js';
import { UpstreamOrigin, type ExchangeTimeouts } from '../../src/upstream/exchange.js';

const servers: Server[] = [];
after(() => {
  for (const server of servers) server.closeAllConnections();
  for (const server of servers) server.close();
});

async function upstream(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<UpstreamOrigin> {
  const server = createServer(handler);
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return new UpstreamOrigin(new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}`), 1000);
}

interface Outcome {
  status: number;
  chunks: string[];
  error?: Error;
}

function send(origin: UpstreamOrigin, timeouts: ExchangeTimeouts, signal?: AbortSignal): Promise<Outcome> {
  return new Promise((resolve) => {
    const outcome: Outcome = { status: 0, chunks: [] };
    origin.exchange('POST', '/api/chat', { 'content-type': 'application/json' }, '{"model":"m"}', timeouts, signal, {
      response: (res) => (outcome.status = res.statusCode ?? 0),
      data: (chunk) => outcome.chunks.push(chunk.toString()),
      end: () => resolve(outcome),
      error: (error) => resolve({ ...outcome, error }),
    });
  });
}

const generous: ExchangeTimeouts = { connectMs: 2000, firstByteMs: 2000, idleMs: 2000 };

describe('an exchange with an upstream over node:http', () => {
  it('hands the answer over chunk by chunk as it arrives, with the request body sent whole', async () => {
    const origin = await upstream((req, res) => {
      let body = '';
      req.on('data', (chunk: Buffer) => (body += chunk.toString()));
      req.on('end', () => {
        res.writeHead(201, { 'content-type': 'application/x-ndjson' });
        res.write(`${body}\n`);
        setTimeout(() => res.end('{"done":true}\n'), 20);
      });
    });
    const outcome = await send(origin, generous);
    assert.equal(outcome.error, undefined);
    assert.equal(outcome.status, 201);
    assert.deepEqual(outcome.chunks, ['{"model":"m"}\n', '{"done":true}\n']);
    origin.close();
  });

  it('gives up on an upstream that does not answer within the first-byte timeout', async () => {
    const origin = await upstream(() => undefined);
    const outcome = await send(origin, { ...generous, firstByteMs: 100 });
    assert.equal(outcome.status, 0);
    assert.equal(toUpstreamError(outcome.error, 'local').message, 'backend local timed out while waiting for the first byte');
    origin.close();
  });

  it('gives up on an answer that stalls longer than the idle timeout between two chunks', async () => {
    const origin = await upstream((_req, res) => {
      res.writeHead(200);
      res.write('a');
    });
    const outcome = await send(origin, { ...generous, idleMs: 100 });
    assert.deepEqual(outcome.chunks, ['a']);
    assert.equal(toUpstreamError(outcome.error, 'local').message, 'backend local timed out while waiting for the next chunk');
    origin.close();
  });

  it('reports an answer the upstream cut off before its end', async () => {
    const origin = await upstream((_req, res) => {
      res.writeHead(200, { 'content-length': '100' });
      res.write('partial');
      setTimeout(() => res.socket?.destroy(), 20);
    });
    const outcome = await send(origin, generous);
    assert.deepEqual(outcome.chunks, ['partial']);
    assert.match(toUpstreamError(outcome.error, 'local').message, /^backend local is unreachable \(ECONNRESET: /);
    origin.close();
  });

  it('closes the connection when its signal aborts, and fails with the abort reason', async () => {
    let closed: () => void = () => undefined;
    let answering: () => void = () => undefined;
    const upstreamClosed = new Promise<void>((resolve) => (closed = resolve));
    const upstreamAnswering = new Promise<void>((resolve) => (answering = resolve));
    const origin = await upstream((_req, res) => {
      res.writeHead(200);
      res.write('a');
      res.on('close', () => closed());
      answering();
    });
    const controller = new AbortController();
    const reason = new Error('the client left');
    const pending = send(origin, generous, controller.signal);
    await upstreamAnswering;
    controller.abort(reason);
    const outcome = await pending;
    assert.equal(outcome.error, reason);
    await upstreamClosed;
    origin.close();
  });

  it('sends nothing when its signal aborted before it started', async () => {
    let requests = 0;
    const origin = await upstream((_req, res) => {
      requests += 1;
      res.end();
    });
    const reason = new Error('the client left while queued');
    const outcome = await send(origin, generous, AbortSignal.abort(reason));
    assert.equal(outcome.error, reason);
    // The same origin still answers, and it saw only this second request.
    assert.equal((await send(origin, generous)).status, 200);
    assert.equal(requests, 1);
    origin.close();
  });
});
