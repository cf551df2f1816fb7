import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import type { ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import { after, describe, it } from 'node:test';
import type { BridgeHandle } from '../../src/bridge.js';
import { startStandIn, startTestBridge, type StandIn } from '../support/bridge.js';
import { readLines, readSseEvents } from '../support/streams.js';
import { configFile } from '../support/temp.js';

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

const CREATED = '2025-01-01T00:00:00Z';
const line = (content: string, done = false): string =>
  `${JSON.stringify({ model: 'm', created_at: CREATED, message: { role: 'assistant', content }, done, ...(done ? { done_reason: 'stop', eval_count: 2 } : {}) })}\n`;

/**
 * An upstream whose answers start at once and then wait until the test releases them, so a
 * request can be kept running across the moment the bridge is asked to stop.
 */
async function heldUpstream(): Promise<{ standIn: StandIn; release: () => void; started: (count: number) => Promise<void> }> {
  const held: ServerResponse[] = [];
  let released = false;
  const events = new EventEmitter();
  const standIn = await startStandIn(
    (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.write(line('first '));
      if (released) res.end(line('', true));
      else held.push(res);
      events.emit('started');
    },
    ['m:latest'],
  );
  const started = async (count: number): Promise<void> => {
    while (standIn.requests.length < count) await once(events, 'started');
  };
  const release = (): void => {
    released = true;
    for (const res of held.splice(0)) res.end(line('', true));
  };
  return { standIn, release, started };
}

async function bridgeOver(standIn: StandIn): Promise<BridgeHandle> {
  // Three slots, so the scheduler sends every request of a test upstream at once instead of queueing them.
  const file = configFile(`backends:\n  - { name: gpu0, url: "${standIn.url}", parallel: 3 }\n`);
  const bridge = await startTestBridge({ file, env: { PROMETHEUS_PORT: '0' } });
  cleanups.push(
    () => bridge.stop(0),
    () => standIn.close(),
  );
  return bridge;
}

const chatBody = (stream: boolean): string => JSON.stringify({ model: 'm', stream, messages: [{ role: 'user', content: 'x' }] });

/** A raw HTTP/1.1 connection, so the test sees connection reuse and headers exactly as a balancer does. */
function rawConnection(url: string): { socket: Socket; text: () => string; closed: Promise<unknown> } {
  const { hostname, port } = new URL(url);
  const socket = connect(Number(port), hostname);
  let received = '';
  socket.on('data', (chunk: Buffer) => (received += chunk.toString()));
  return { socket, text: () => received, closed: once(socket, 'close') };
}

function rawRequest(method: string, path: string, body = ''): string {
  return `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
}

describe('graceful stop (SIGTERM)', () => {
  it(
    'drains: ready turns 503, new connections are refused, idle ones close, running answers finish, later ones say Connection: close',
    { timeout: 30_000 },
    async () => {
      const { standIn, release, started } = await heldUpstream();
      const bridge = await bridgeOver(standIn);

      // A streamed chat on a raw kept-alive connection, running when the stop begins.
      const busy = rawConnection(bridge.url);
      busy.socket.write(rawRequest('POST', '/api/chat', chatBody(true)));
      await started(1);
      while (!busy.text().includes('first ')) await once(busy.socket, 'data');
      // An idle kept-alive connection, as a balancer's pool holds them.
      const idle = rawConnection(bridge.url);
      idle.socket.write(rawRequest('GET', '/health'));
      while (!idle.text().includes('"status":"ok"')) await once(idle.socket, 'data');

      // A grace far longer than this test's timeout: everything below must happen because of draining, not the deadline.
      const stopping = bridge.stop(10 * 60_000);
      await idle.closed;
      await assert.rejects(fetch(`${bridge.url}/health`), 'a new connection must be refused while draining');
      const ready = await fetch(`${bridge.metricsUrl}/health/ready`);
      assert.equal(ready.status, 503);
      assert.equal(((await ready.json()) as { draining: boolean }).draining, true);

      // The balancer sends one more request on the busy connection: it is answered, with Connection: close.
      busy.socket.write(rawRequest('GET', '/health'));
      release();
      await busy.closed;
      const [first, second] = busy.text().split(/(?=HTTP\/1\.1 )/);
      assert.match(first ?? '', /"done":true/, 'the running stream finished normally');
      assert.match(second ?? '', /^HTTP\/1\.1 200/);
      assert.match(second ?? '', /\r\nconnection: close\r\n/i);
      await stopping;
    },
  );

  it('at the deadline, running streams end with the surface’s in-band error and waiting whole answers get a 503', { timeout: 30_000 }, async () => {
    const { standIn, started } = await heldUpstream();
    const bridge = await bridgeOver(standIn);

    const native = await fetch(`${bridge.url}/api/chat`, { method: 'POST', body: chatBody(true) });
    const openAi = await fetch(`${bridge.url}/v1/chat/completions`, { method: 'POST', body: chatBody(true) });
    const whole = fetch(`${bridge.url}/api/chat`, { method: 'POST', body: chatBody(false) });
    const nativeLines = readLines(native);
    assert.match((await nativeLines.next()).value ?? '', /first/);
    const openAiEvents = readSseEvents(openAi);
    assert.match((await openAiEvents.next()).value ?? '', /first/);
    await started(3);

    await bridge.stop(200);

    const nativeRest: string[] = [];
    for await (const rest of nativeLines) nativeRest.push(rest);
    const nativeLast = JSON.parse(nativeRest.at(-1) ?? '{}') as { error?: string };
    assert.match(nativeLast.error ?? '', /stopped before this answer was complete/);

    const openAiRest: string[] = [];
    for await (const rest of openAiEvents) openAiRest.push(rest);
    const openAiLast = JSON.parse(openAiRest.at(-1) ?? '{}') as { error?: { code?: string } };
    assert.equal(openAiLast.error?.code, 'shutting_down');
    assert.ok(!openAiRest.includes('[DONE]'), 'a cut stream must not look complete');

    const wholeAnswer = await whole;
    assert.equal(wholeAnswer.status, 503);
    assert.match(((await wholeAnswer.json()) as { error: string }).error, /stopped before this answer was complete/);
  });
});
