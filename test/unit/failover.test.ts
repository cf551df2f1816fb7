import assert from 'node:assert/strict';
import { request as httpRequest, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { after, describe, it } from 'node:test';
import type { BridgeHandle, BridgeState } from '../../src/bridge.js';
import { startStandIn, startTestBridge, type StandIn } from '../support/bridge.js';
import { readLines } from '../support/streams.js';
import { until } from '../support/wait.js';
import { configFile } from '../support/temp.js';

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

const CREATED = '2025-01-01T00:00:00Z';
const okLines = (text: string): string[] => [
  `${JSON.stringify({ model: 'm', created_at: CREATED, message: { role: 'assistant', content: text }, done: false })}\n`,
  `${JSON.stringify({ model: 'm', created_at: CREATED, message: { role: 'assistant', content: '' }, done: true, done_reason: 'stop', prompt_eval_count: 3, eval_count: 4, eval_duration: 2_000_000 })}\n`,
];

function answer(res: ServerResponse, text: string): void {
  res.writeHead(200, { 'content-type': 'application/x-ndjson' });
  res.end(okLines(text).join(''));
}

type Behaviour = (res: ServerResponse) => void;

/** Two stand-in backends (gpu0, gpu1) that both list model m, with dual-GPU on. */
async function twoBackends(
  gpu0: Behaviour,
  gpu1: Behaviour,
  extraEnv: Record<string, string> = {},
  yaml = '',
): Promise<{ a: StandIn; b: StandIn; bridge: BridgeHandle }> {
  const a = await startStandIn((_req, res) => gpu0(res), ['m:latest']);
  const b = await startStandIn((_req, res) => gpu1(res), ['m:latest']);
  const file = configFile(yaml);
  const bridge = await startTestBridge({ file, env: { GPU0_URL: a.url, GPU1_URL: b.url, ENABLE_DUAL_GPU: 'true', ...extraEnv } });
  cleanups.push(
    () => bridge.stop(100),
    () => a.close(),
    () => b.close(),
  );
  return { a, b, bridge };
}

const chat = (bridge: BridgeHandle, stream = false): Promise<Response> =>
  fetch(`${bridge.url}/api/chat`, { method: 'POST', body: JSON.stringify({ model: 'm', stream, messages: [{ role: 'user', content: 'x' }] }) });

/** Resolves once the history holds `count` records: a request is recorded when its connection closes, which may be just after the client read it. */
function recorded(bridge: BridgeHandle, count: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const check = (): void => {
      if (bridge.history.size < count) return;
      stop();
      resolve();
    };
    const stop = bridge.history.onRecord(check);
    check();
  });
}

/** The sum of a counter's series in a /metrics text. */
function counterSum(metrics: string, name: string): number {
  return metrics
    .split('\n')
    .filter((line) => line.startsWith(`${name}{`))
    .reduce((sum, line) => sum + Number(line.split(' ').at(-1)), 0);
}

/** The status of a GET sent with a chosen Host header (fetch sets its own). */
function statusWithHost(url: string, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { headers: { host } }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end();
  });
}

const backendState = (bridge: BridgeHandle, name: string): BridgeState['backends'][number] => {
  const found = bridge.state.backends.find((b) => b.name === name);
  assert.ok(found);
  return found;
};

/** The state of m:latest's own circuit on a backend; undefined while it has none (closed, never failed). */
const modelCircuitOf = (bridge: BridgeHandle, backend: string): string | undefined =>
  backendState(bridge, backend).health.models.find((m) => m.model === 'm:latest')?.circuit;

/** Health checks out of the way, one failure opens a circuit, its cool-down short. */
const ONE_FAILURE_OPENS = 'routing:\n  health:\n    interval_seconds: 600\n  circuit_breaker:\n    failure_threshold: 1\n    cooldown_seconds: 0.2\n';

describe('retries and failover', () => {
  it('retries a 5xx on the other backend before anything was sent, and says so', async () => {
    const { a, b, bridge } = await twoBackends(
      (res) => {
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end('{"error":"runner crashed"}');
      },
      (res) => answer(res, 'from gpu1'),
    );
    const response = await chat(bridge);
    assert.equal(response.status, 200);
    assert.equal(((await response.json()) as { message: { content: string } }).message.content, 'from gpu1');
    assert.equal(response.headers.get('x-bridge-backend'), 'gpu1');
    assert.equal(a.requests.length, 1);
    assert.equal(b.requests.length, 1);
    await new Promise((resolve) => setTimeout(resolve, 20));
    const record = bridge.history.recent().at(-1);
    assert.equal(record?.retries, 1);
    assert.equal(record?.backend, 'gpu1');
    assert.equal(record?.gpu, 1);
    // The error was that model's: it counts against (gpu0, m), not against gpu0.
    assert.equal(backendState(bridge, 'gpu0').health.status, 'healthy');
    assert.deepEqual(
      backendState(bridge, 'gpu0').health.models.map((m) => [m.model, m.consecutiveFailures]),
      [['m:latest', 1]],
    );
  });

  it('keeps one failing model from closing its backend to the others, and asks no backend twice for one request', async () => {
    const upstream = await startStandIn(
      (_req, res, body) => {
        if ((JSON.parse(body) as { model: string }).model === 'broken') {
          res.writeHead(500, { 'content-type': 'application/json' });
          res.end('{"error":"llama runner process has terminated: exit status 2"}');
        } else answer(res, 'fine');
      },
      ['broken:latest', 'm:latest'],
    );
    const bridge = await startTestBridge({ env: { OLLAMA_HOST: upstream.url, MAX_RETRIES: '3' } });
    cleanups.push(
      () => bridge.stop(100),
      () => upstream.close(),
    );
    const ask = (model: string): Promise<Response> =>
      fetch(`${bridge.url}/api/chat`, { method: 'POST', body: JSON.stringify({ model, stream: false, messages: [{ role: 'user', content: 'x' }] }) });

    for (let i = 1; i <= 3; i++) {
      const failed = await ask('broken');
      assert.equal(failed.status, 500);
      assert.match(((await failed.json()) as { error: string }).error, /runner process has terminated/);
      // The only backend was asked once per request, not once per retry.
      assert.equal(upstream.requests.length, i);
    }
    const other = await ask('m');
    assert.equal(other.status, 200);
    assert.equal(((await other.json()) as { message: { content: string } }).message.content, 'fine');
    const state = backendState(bridge, 'local').health;
    assert.equal(state.circuit, 'closed');
    assert.equal(state.status, 'healthy');
    assert.deepEqual(
      state.models.map((m) => [m.model, m.circuit]),
      [['broken:latest', 'open']],
    );
    // The broken model's circuit is open: no more requests reach the backend for it.
    const refused = await ask('broken');
    assert.equal(refused.status, 503);
    assert.equal(upstream.requests.filter((r) => r.body.includes('"broken"')).length, 3);
  });

  it('re-checks a primary that hangs at most once per health interval, not on every request', async () => {
    // Accepts connections and never answers: what a wedged Ollama looks like.
    const sockets = new Set<Socket>();
    let checks = 0;
    const hung = createNetServer((socket) => {
      sockets.add(socket);
      socket.on('data', (data: Buffer) => (checks += data.toString().split('GET /api/ps ').length - 1));
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => hung.listen(0, '127.0.0.1', resolve));
    const standby = await startStandIn((_req, res) => answer(res, 'standby'), ['m:latest']);
    const file = configFile('routing:\n  health:\n    interval_seconds: 60\n    timeout_seconds: 0.2\n');
    const bridge = await startTestBridge({
      file,
      env: { GPU0_URL: `http://127.0.0.1:${(hung.address() as AddressInfo).port}`, GPU1_URL: standby.url, ENABLE_DUAL_GPU: 'false' },
    });
    cleanups.push(
      () => bridge.stop(100),
      () => standby.close(),
      () =>
        new Promise<void>((resolve) => {
          for (const socket of sockets) socket.destroy();
          hung.close(() => resolve());
        }),
    );
    assert.equal(backendState(bridge, 'gpu0').health.status, 'down');
    const checksAtStart = checks;
    for (let i = 0; i < 6; i++) {
      const response = await chat(bridge);
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('x-bridge-backend'), 'gpu1');
      await response.text();
    }
    assert.ok(checks - checksAtStart <= 1, `the hung primary was checked ${checks - checksAtStart} times for 6 requests`);
  });

  it('counts a connection reset after the request was sent against the circuit, without marking the backend down as a refused connection does', async () => {
    // Two requests in a row lose their connection (a proxy in between restarting, a keep-alive
    // race); the backend itself is up all along and answers its checks.
    let resets = 2;
    const upstream = await startStandIn(
      (_req, res) => {
        if (resets === 0) return answer(res, 'fine');
        resets -= 1;
        res.socket?.destroy();
      },
      ['m:latest'],
      // Held in memory: no look at /api/ps after a cold load tells the bridge it is up.
      ['m:latest'],
    );
    const bridge = await startTestBridge({
      file: configFile('routing:\n  health:\n    interval_seconds: 600\n'),
      env: { OLLAMA_HOST: upstream.url },
    });
    cleanups.push(
      () => bridge.stop(100),
      () => upstream.close(),
    );
    for (let i = 0; i < 2; i++) {
      const broken = await chat(bridge);
      assert.equal(broken.status, 502);
      await broken.arrayBuffer();
      assert.equal(backendState(bridge, 'local').health.status, 'failing');
    }
    // Two failures, short of the threshold (3): the backend still takes the next request.
    const next = await chat(bridge);
    assert.equal(next.status, 200);
    assert.equal(((await next.json()) as { message: { content: string } }).message.content, 'fine');
    // A refused connection still marks it down at once.
    await upstream.close();
    assert.equal((await chat(bridge)).status, 502);
    assert.equal(backendState(bridge, 'local').health.status, 'down');
  });

  it('does not send embeddings to a backend whose circuit is open: they are refused with 503 naming it, as generations are', async () => {
    // Accepts embedding requests and never answers them (a wedged runner).
    const upstream = await startStandIn(() => undefined, ['m:latest'], ['m:latest']);
    const bridge = await startTestBridge({
      file: configFile(
        'routing:\n  thresholds:\n    timeout_seconds: 0.3\n  health:\n    interval_seconds: 600\n  circuit_breaker:\n    failure_threshold: 1\n    cooldown_seconds: 60\n',
      ),
      env: { OLLAMA_HOST: upstream.url },
    });
    cleanups.push(
      () => bridge.stop(100),
      () => upstream.close(),
    );
    const embed = (): Promise<Response> => fetch(`${bridge.url}/api/embed`, { method: 'POST', body: JSON.stringify({ model: 'm', input: 'x' }) });
    assert.equal((await embed()).status, 504);
    assert.equal(backendState(bridge, 'local').health.circuit, 'open');
    const refused = await embed();
    assert.equal(refused.status, 503);
    assert.match(((await refused.json()) as { error: string }).error, /local circuit open/);
    // Not sent to wait out the timeout again.
    assert.equal(upstream.requests.length, 1);
  });

  it('does not retry the client’s own mistakes (4xx)', async () => {
    const { b, bridge } = await twoBackends(
      (res) => {
        res.writeHead(404, { 'content-type': 'application/json' });
        res.end('{"error":"model \\"m\\" not found, try pulling it first"}');
      },
      (res) => answer(res, 'never'),
    );
    const response = await chat(bridge);
    assert.equal(response.status, 404);
    assert.deepEqual(await response.json(), { error: 'model "m" not found, try pulling it first' });
    assert.equal(b.requests.length, 0);
  });

  it('opens the circuit of a backend that keeps failing, and stops sending it traffic', async () => {
    const { a, bridge } = await twoBackends(
      (res) => {
        res.writeHead(503, { 'content-type': 'application/json' });
        res.end('{"error":"server busy, please try again"}');
      },
      (res) => answer(res, 'ok'),
      { ENABLE_DUAL_GPU: 'false', MAX_RETRIES: '1' },
      'routing:\n  circuit_breaker:\n    failure_threshold: 2\n    cooldown_seconds: 60\n',
    );
    // Dual-GPU off: the primary gpu0 is asked first, gpu1 answers as failover.
    for (let i = 0; i < 4; i++) {
      const response = await chat(bridge);
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('x-bridge-backend'), 'gpu1');
    }
    assert.equal(backendState(bridge, 'gpu0').health.circuit, 'open');
    assert.equal(backendState(bridge, 'gpu0').health.status, 'failing');
    // With its circuit open after two failures, gpu0 got no more traffic.
    assert.equal(a.requests.length, 2);
    const last = await chat(bridge);
    assert.match(last.headers.get('x-bridge-route-reason') ?? '', /primary gpu0 is failing; failing over to gpu1/);
  });

  it('does not send a request that queued for a backend there once its circuit opened meanwhile: it goes to the next candidate', async () => {
    // gpu0 accepts requests and never answers them (a wedged runner); it has one slot, so the
    // second request queues behind the first in the bridge.
    const { a, bridge } = await twoBackends(
      () => undefined,
      (res) => answer(res, 'from gpu1'),
      { ENABLE_DUAL_GPU: 'false', MAX_RETRIES: '1' },
      'routing:\n  thresholds:\n    timeout_seconds: 0.3\n  health:\n    interval_seconds: 600\n  circuit_breaker:\n    failure_threshold: 1\n    cooldown_seconds: 60\n',
    );
    const first = chat(bridge);
    await until(() => (a.requests.length === 1 ? true : undefined), 'the first request on gpu0');
    const second = chat(bridge);
    await until(() => (bridge.state.scheduler.queued === 1 ? true : undefined), 'the second request queued for gpu0');
    // The first one times out on gpu0, which opens its circuit, and is answered by gpu1.
    assert.equal((await first).headers.get('x-bridge-backend'), 'gpu1');
    assert.equal(backendState(bridge, 'gpu0').health.circuit, 'open');
    const answered = await second;
    assert.equal(answered.status, 200);
    assert.equal(answered.headers.get('x-bridge-backend'), 'gpu1');
    // Its turn on gpu0 came after the circuit opened: it was not sent there to wait out the timeout too.
    assert.equal(a.requests.length, 1);
  });

  it('opens the circuit of a model whose runner fails every answer after a 200 (Ollama’s error line), and stops sending it there', async () => {
    const { a, bridge } = await twoBackends(
      (res) => {
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        res.end(`${JSON.stringify({ error: 'model runner has unexpectedly stopped, this may be due to resource limitations' })}\n`);
      },
      (res) => answer(res, 'ok'),
      { ENABLE_DUAL_GPU: 'false', MAX_RETRIES: '1' },
      'routing:\n  circuit_breaker:\n    failure_threshold: 2\n    cooldown_seconds: 60\n',
    );
    for (let i = 0; i < 4; i++) {
      const response = await chat(bridge, i % 2 === 1);
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('x-bridge-backend'), 'gpu1');
      await response.arrayBuffer();
    }
    assert.deepEqual(
      backendState(bridge, 'gpu0').health.models.map((m) => [m.model, m.circuit, m.consecutiveFailures]),
      [['m:latest', 'open', 2]],
    );
    // With the model's circuit open after two failures, gpu0 was not asked for it again.
    assert.equal(a.requests.length, 2);
  });

  it('lets one probe through a half-open model circuit after the cool-down, and a whole answer from it closes the circuit', async () => {
    let runnerCrashes = true;
    const { bridge } = await twoBackends(
      (res) => {
        if (!runnerCrashes) return answer(res, 'from gpu0');
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        res.end(`${JSON.stringify({ error: 'model runner has unexpectedly stopped' })}\n`);
      },
      (res) => answer(res, 'from gpu1'),
      { ENABLE_DUAL_GPU: 'false', MAX_RETRIES: '1' },
      ONE_FAILURE_OPENS,
    );
    const modelCircuit = (): string | undefined => modelCircuitOf(bridge, 'gpu0');
    assert.equal((await chat(bridge)).headers.get('x-bridge-backend'), 'gpu1');
    assert.equal(modelCircuit(), 'open');
    await until(() => (modelCircuit() === 'half-open' ? true : undefined), 'the cool-down of the model circuit');
    runnerCrashes = false;
    const probe = await chat(bridge);
    assert.equal(((await probe.json()) as { message: { content: string } }).message.content, 'from gpu0');
    assert.equal(modelCircuit(), undefined);
  });

  it('lets the next request probe a half-open circuit at once when the client of the probe left', async () => {
    let gpu0: 'crash' | 'slow' | 'answer' = 'crash';
    let slowAnswerClosed: () => void = () => undefined;
    const probeStopped = new Promise<void>((resolve) => (slowAnswerClosed = resolve));
    // gpu0 holds the model in memory: no look at /api/ps after a cold load gives the circuit back.
    const a = await startStandIn(
      (_req, res) => {
        if (gpu0 === 'answer') return answer(res, 'from gpu0');
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        if (gpu0 === 'slow') {
          // A slow answer: its first line, then nothing until the bridge stops it.
          res.once('close', slowAnswerClosed);
          return void res.write(okLines('thinking')[0]);
        }
        res.end(`${JSON.stringify({ error: 'model runner has unexpectedly stopped' })}\n`);
      },
      ['m:latest'],
      ['m:latest'],
    );
    const b = await startStandIn((_req, res) => answer(res, 'from gpu1'), ['m:latest']);
    const bridge = await startTestBridge({
      file: configFile(ONE_FAILURE_OPENS),
      env: { GPU0_URL: a.url, GPU1_URL: b.url, ENABLE_DUAL_GPU: 'false', MAX_RETRIES: '1' },
    });
    cleanups.push(
      () => bridge.stop(100),
      () => a.close(),
      () => b.close(),
    );
    const modelCircuit = (): string | undefined => modelCircuitOf(bridge, 'gpu0');
    assert.equal((await chat(bridge)).headers.get('x-bridge-backend'), 'gpu1');
    await until(() => (modelCircuit() === 'half-open' ? true : undefined), 'the cool-down of the model circuit');
    gpu0 = 'slow';
    const leaving = new AbortController();
    const probe = await fetch(`${bridge.url}/api/chat`, {
      method: 'POST',
      body: JSON.stringify({ model: 'm', stream: true, messages: [{ role: 'user', content: 'x' }] }),
      signal: leaving.signal,
    });
    assert.equal(probe.headers.get('x-bridge-backend'), 'gpu0');
    await (probe.body as ReadableStream<Uint8Array>).getReader().read();
    leaving.abort();
    await probeStopped;
    gpu0 = 'answer';
    // The probe's client left without a verdict: the next request is the probe, on gpu0.
    const next = await chat(bridge);
    assert.equal(next.headers.get('x-bridge-backend'), 'gpu0');
    assert.equal(((await next.json()) as { message: { content: string } }).message.content, 'from gpu0');
    assert.equal(modelCircuit(), undefined);
  });

  it('lets the next request probe a half-open circuit at once when the client of a relayed probe (embeddings) left before the answer', async () => {
    let phase: 'crash' | 'slow' | 'answer' = 'crash';
    let slowAnswerClosed: () => void = () => undefined;
    const probeStopped = new Promise<void>((resolve) => (slowAnswerClosed = resolve));
    const upstream = await startStandIn(
      (_req, res) => {
        if (phase === 'answer') return answer(res, 'fine');
        if (phase === 'slow') return void res.once('close', slowAnswerClosed);
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end('{"error":"llama runner process has terminated"}');
      },
      ['m:latest'],
      ['m:latest'],
    );
    const bridge = await startTestBridge({
      file: configFile(ONE_FAILURE_OPENS),
      env: { OLLAMA_HOST: upstream.url },
    });
    cleanups.push(
      () => bridge.stop(100),
      () => upstream.close(),
    );
    const embed = (signal?: AbortSignal): Promise<Response> =>
      fetch(`${bridge.url}/api/embed`, { method: 'POST', body: JSON.stringify({ model: 'm', input: 'x' }), signal });
    const modelCircuit = (): string | undefined => modelCircuitOf(bridge, 'local');
    assert.equal((await embed()).status, 500);
    await until(() => (modelCircuit() === 'half-open' ? true : undefined), 'the cool-down of the model circuit');
    phase = 'slow';
    const leaving = new AbortController();
    const probe = embed(leaving.signal).catch(() => undefined);
    await until(() => (upstream.requests.length === 2 ? true : undefined), 'the probe upstream');
    leaving.abort();
    await probe;
    await probeStopped;
    phase = 'answer';
    // The probe's client left before any answer: no verdict, so the next request is the probe.
    const next = await chat(bridge);
    assert.equal(next.status, 200);
    assert.equal(((await next.json()) as { message: { content: string } }).message.content, 'fine');
    assert.equal(modelCircuit(), undefined);
  });

  it('opens the circuit of a backend whose answers keep breaking after they started', async () => {
    const { a, bridge } = await twoBackends(
      (res) => {
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        res.write(okLines('partial')[0], () => res.socket?.destroy());
      },
      (res) => answer(res, 'ok'),
      { ENABLE_DUAL_GPU: 'false', MAX_RETRIES: '1' },
      'routing:\n  circuit_breaker:\n    failure_threshold: 2\n    cooldown_seconds: 60\n',
    );
    for (let i = 0; i < 4; i++) {
      const response = await chat(bridge);
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('x-bridge-backend'), 'gpu1');
    }
    assert.equal(backendState(bridge, 'gpu0').health.circuit, 'open');
    assert.equal(a.requests.length, 2);
  });

  it('retries a non-streamed answer that broke half-way, since the client has seen nothing yet', async () => {
    const { bridge } = await twoBackends(
      (res) => {
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        res.write(okLines('partial')[0]);
        setTimeout(() => res.socket?.destroy(), 10);
      },
      (res) => answer(res, 'whole'),
    );
    const response = await chat(bridge);
    assert.equal(response.status, 200);
    assert.equal(((await response.json()) as { message: { content: string } }).message.content, 'whole');
  });

  it('never retries a stream that already reached the client: it ends in the surface’s error form', async () => {
    const { b, bridge } = await twoBackends(
      (res) => {
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        res.write(okLines('partial')[0]);
        setTimeout(() => res.socket?.destroy(), 10);
      },
      (res) => answer(res, 'never'),
    );
    const response = await chat(bridge, true);
    const lines: Array<Record<string, unknown>> = [];
    for await (const l of readLines(response)) lines.push(JSON.parse(l) as Record<string, unknown>);
    assert.equal(lines.length, 2);
    assert.match(String(lines[1]?.error), /^backend gpu0 is unreachable/);
    assert.equal(b.requests.length, 0);
  });
  it('retries a non-streamed answer whose backend sent an error line half-way, and the client gets the other backend’s whole answer', async () => {
    const { a, b, bridge } = await twoBackends(
      (res) => {
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        res.end(`${okLines('partial')[0]}${JSON.stringify({ error: 'model runner has unexpectedly stopped' })}\n`);
      },
      (res) => answer(res, 'whole'),
    );
    const response = await chat(bridge);
    assert.equal(response.status, 200);
    assert.equal(((await response.json()) as { message: { content: string } }).message.content, 'whole');
    assert.equal(response.headers.get('x-bridge-backend'), 'gpu1');
    assert.equal(a.requests.length, 1);
    assert.equal(b.requests.length, 1);
    // The runner's error is the model's there, not the backend's.
    assert.deepEqual(
      backendState(bridge, 'gpu0').health.models.map((m) => [m.model, m.lastError]),
      [['m:latest', 'model runner has unexpectedly stopped']],
    );
  });

  it('when every backend failed, the error names each one tried and what it said, in the surface’s shape', async () => {
    const fail = (message: string) => (res: ServerResponse) => {
      res.writeHead(500, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: message }));
    };
    const { bridge } = await twoBackends(fail('out of memory'), fail('runner crashed'));
    const response = await fetch(`${bridge.url}/v1/chat/completions`, {
      method: 'POST',
      body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'x' }] }),
    });
    assert.equal(response.status, 500);
    const { error } = (await response.json()) as { error: { message: string; type: string } };
    assert.match(error.message, /gpu0: [^;]*out of memory/);
    assert.match(error.message, /gpu1: [^;]*runner crashed/);
    assert.equal(typeof error.type, 'string');
  });
});

describe('control API', () => {
  it('switches dual-GPU mode with the control token, and routing follows', async () => {
    const { a, b, bridge } = await twoBackends(
      (res) => setTimeout(() => answer(res, 'gpu0'), 200),
      (res) => answer(res, 'gpu1'),
    );
    const action = (token: string | undefined, body: unknown): Promise<Response> =>
      fetch(`${bridge.url}/bridge/api/actions/setDualGpu`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(token ? { 'x-bridge-token': token } : {}) },
        body: JSON.stringify(body),
      });

    assert.equal((await action(undefined, { enabled: false })).status, 401);
    assert.equal((await action('wrong-token-0123456789abcdef', { enabled: false })).status, 401);
    const invalid = await action(bridge.controlToken, { enabled: 'no' });
    assert.equal(invalid.status, 400);
    assert.match(((await invalid.json()) as { error: string }).error, /^setDualGpu: enabled: /);
    const unknown = await fetch(`${bridge.url}/bridge/api/actions/launchRockets`, {
      method: 'POST',
      headers: { 'x-bridge-token': bridge.controlToken },
      body: '{}',
    });
    assert.equal(unknown.status, 404);

    // Dual on: while gpu0 is busy with one request, the next goes to gpu1.
    const first = chat(bridge);
    await new Promise((resolve) => setTimeout(resolve, 80));
    const second = await chat(bridge);
    assert.equal(second.headers.get('x-bridge-backend'), 'gpu1');
    assert.match(
      second.headers.get('x-bridge-route-reason') ?? '',
      /^model 'm' requested; gpu1: ~[\d.]+ s, cold load, idle; gpu0: ~[\d.]+ s, resident, 1 running$/,
    );
    await (await first).text();
    assert.equal(a.requests.length, 1);

    const off = await action(bridge.controlToken, { enabled: false });
    assert.equal(off.status, 200);
    assert.equal(((await off.json()) as { state: BridgeState }).state.settings.dualGpu, false);
    const before = b.requests.length;
    const answers = await Promise.all([chat(bridge), chat(bridge), chat(bridge)]);
    for (const response of answers) {
      assert.equal(response.headers.get('x-bridge-backend'), 'gpu0');
      assert.match(response.headers.get('x-bridge-route-reason') ?? '', /gpu0 is the primary \(dual-GPU off\)/);
    }
    assert.equal(b.requests.length, before);
    const state = (await (await fetch(`${bridge.url}/bridge/api/state`)).json()) as BridgeState;
    assert.equal(state.settings.dualGpu, false);
  });
});

describe('observability', () => {
  it('counts requests in /metrics, reports backend_up, and answers readiness with per-backend detail', async () => {
    const { a, bridge } = await twoBackends(
      (res) => answer(res, 'a'),
      (res) => answer(res, 'b'),
    );
    for (let i = 0; i < 3; i++) await (await chat(bridge)).text();
    await recorded(bridge, 3);
    const metrics = await (await fetch(`${bridge.url}/metrics`)).text();
    assert.equal(counterSum(metrics, 'copilot_bridge_requests_total'), 3);
    assert.match(metrics, /copilot_bridge_backend_up\{backend="gpu0"\} 1/);
    assert.match(metrics, /copilot_bridge_tokens_total\{direction="out",model="m",team="none"\} 12/);
    assert.match(metrics, /copilot_bridge_time_to_first_token_seconds_count\{tier="none",backend="gpu\d"\} \d/);

    const ready = await fetch(`${bridge.url}/health/ready`);
    assert.equal(ready.status, 200);
    const body = (await ready.json()) as { ready: boolean; backends: Array<{ name: string; status: string; canTakeTraffic: boolean }> };
    assert.equal(body.ready, true);
    assert.deepEqual(
      body.backends.map((x) => [x.name, x.canTakeTraffic]),
      [
        ['gpu0', true],
        ['gpu1', true],
      ],
    );
    assert.ok(a.requests.length > 0);
  });

  it('exports copilot_bridge_errors_total at 0 for every tier and backend before any error, so error-rate rules have a series', async () => {
    const { bridge } = await twoBackends(
      (res) => answer(res, 'a'),
      (res) => answer(res, 'b'),
    );
    const metrics = await (await fetch(`${bridge.url}/metrics`)).text();
    const zeroSeries = metrics.split('\n').filter((line) => line.startsWith('copilot_bridge_errors_total{') && line.endsWith(' 0'));
    const combinations = zeroSeries.map((line) => /tier="(\w+)".*backend="(\w+)"/.exec(line)?.slice(1).join('/')).sort();
    assert.deepEqual(combinations, ['complex/gpu0', 'complex/gpu1', 'moderate/gpu0', 'moderate/gpu1', 'simple/gpu0', 'simple/gpu1']);
  });

  it("counts in copilot_bridge_errors_total what failed on the serving side, not a client's own 4xx (HighErrorRate must not fire for them)", async () => {
    let failure: { status: number; error: string } = { status: 400, error: 'invalid options' };
    const fail = (res: ServerResponse): void => {
      res.writeHead(failure.status, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: failure.error }));
    };
    const { bridge } = await twoBackends(fail, fail);
    // Refused by Ollama for what the client sent, on two surfaces: the client's mistakes.
    assert.equal((await chat(bridge)).status, 400);
    const openAi = await fetch(`${bridge.url}/v1/chat/completions`, {
      method: 'POST',
      body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'x' }] }),
    });
    assert.equal(openAi.status, 400);
    failure = { status: 500, error: 'the runner crashed' };
    assert.equal((await chat(bridge)).status, 500);
    await recorded(bridge, 3);
    const metrics = await (await fetch(`${bridge.url}/metrics`)).text();
    assert.equal(counterSum(metrics, 'copilot_bridge_requests_total'), 3);
    assert.equal(counterSum(metrics, 'copilot_bridge_errors_total'), 1);
  });

  it('labels metrics only with configured or installed models: made-up names count as "other"', async () => {
    const { bridge } = await twoBackends(
      (res) => {
        res.writeHead(404, { 'content-type': 'application/json' });
        res.end('{"error":"model not found"}');
      },
      (res) => answer(res, 'b'),
    );
    for (let i = 0; i < 40; i++) {
      const response = await fetch(`${bridge.url}/api/chat`, {
        method: 'POST',
        body: JSON.stringify({ model: `made-up-${i}`, stream: false, messages: [{ role: 'user', content: 'x' }] }),
      });
      await response.text();
    }
    await (await chat(bridge)).text();
    await recorded(bridge, 41);
    const metrics = await (await fetch(`${bridge.url}/metrics`)).text();
    assert.doesNotMatch(metrics, /made-up/);
    const models = new Set([...metrics.matchAll(/copilot_bridge_requests_total\{[^}]*model="([^"]+)"/g)].map((m) => m[1]));
    assert.deepEqual([...models].sort(), ['m', 'other']);
  });

  it('serves /metrics on PROMETHEUS_PORT too', async () => {
    const { bridge } = await twoBackends(
      (res) => answer(res, 'a'),
      (res) => answer(res, 'b'),
      { PROMETHEUS_PORT: '0' },
    );
    assert.ok(bridge.metricsUrl);
    const metrics = await (await fetch(`${bridge.metricsUrl}/metrics`)).text();
    assert.match(metrics, /# TYPE copilot_bridge_requests_total counter/);
    // A page reaching it through DNS rebinding sends its own name as Host: refused, as on the main port.
    assert.equal(await statusWithHost(`${bridge.metricsUrl}/metrics`, 'attacker.example'), 403);
    assert.equal(await statusWithHost(`${bridge.metricsUrl}/metrics`, 'localhost'), 200);
    // Anything else there is a 404 in JSON, as on the main port, not express's HTML page.
    const other = await fetch(`${bridge.metricsUrl}/api/tags`);
    assert.equal(other.status, 404);
    assert.match(other.headers.get('content-type') ?? '', /^application\/json/);
    assert.match(((await other.json()) as { error: string }).error, /no such endpoint: GET \/api\/tags/);
    // Another method on one of its paths: 405 with what it takes, as on the main port.
    const posted = await fetch(`${bridge.metricsUrl}/metrics`, { method: 'POST' });
    assert.equal(posted.status, 405);
    assert.equal(posted.headers.get('allow'), 'GET, HEAD');
    assert.deepEqual(await posted.json(), { error: 'POST is not allowed on /metrics; it takes GET, HEAD' });
  });

  it('asks for an API key on PROMETHEUS_PORT when keys are configured', async () => {
    const key = '0123456789abcdef0123';
    const { bridge } = await twoBackends(
      (res) => answer(res, 'a'),
      (res) => answer(res, 'b'),
      { PROMETHEUS_PORT: '0', BRIDGE_API_KEYS: key },
    );
    const refused = await fetch(`${bridge.metricsUrl}/metrics`);
    assert.equal(refused.status, 401);
    assert.match(((await refused.json()) as { error: string }).error, /a valid API key or token is required/);
    const scraped = await fetch(`${bridge.metricsUrl}/metrics`, { headers: { authorization: `Bearer ${key}` } });
    assert.equal(scraped.status, 200);
  });

  it('tells anyone only whether it is ready when keys are configured: no backend URLs, errors or model names for a probe without a key', async () => {
    const { bridge } = await twoBackends(
      (res) => answer(res, 'a'),
      (res) => answer(res, 'b'),
      { BRIDGE_API_KEYS: '0123456789abcdef0123' },
    );
    const ready = await fetch(`${bridge.url}/health/ready`);
    assert.equal(ready.status, 200);
    assert.deepEqual(await ready.json(), {
      ready: true,
      draining: false,
      fallbackAvailable: false,
      backends: [
        { name: 'gpu0', canTakeTraffic: true },
        { name: 'gpu1', canTakeTraffic: true },
      ],
    });
  });
});
