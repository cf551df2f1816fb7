import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import express from 'express';
import { asBridgeError, sendError } from '../../src/api/errors.js';
import { serveGeneration, type GenerationPolicy } from '../../src/api/generation.js';
import { nativeFormat } from '../../src/api/ollama/routes.js';
import { beginRequest, requestOf } from '../../src/api/request.js';
import { Cancel, type GenerationOutcome } from '../../src/contract/index.js';
import type { RouteDecision } from '../../src/routing/router.js';
import { Scheduler } from '../../src/routing/scheduler.js';
import { chatSignals, clientSignals } from '../../src/routing/signals.js';
import type { Backend } from '../../src/upstream/backend.js';
import { UpstreamError } from '../../src/upstream/errors.js';
import type { OllamaChunk } from '../../src/upstream/ollama-api.js';
import type { GenerationRequest, GenerationSource } from '../../src/upstream/source.js';

/** A source whose answer the test scripts: lines to yield, or a failure before or after the first line. */
class FakeSource implements GenerationSource {
  readonly requests: GenerationRequest[] = [];
  readonly failures: string[] = [];
  aborted = false;

  constructor(
    readonly name: string,
    private readonly script: { lines?: OllamaChunk[]; failBeforeFirstLine?: boolean; breakAfter?: number; hang?: boolean },
    readonly kind: 'local' | 'cloud' = 'local',
  ) {}

  canTake(): boolean {
    return true;
  }

  refusal(): string | null {
    return null;
  }

  noteFailure(message: string): void {
    this.failures.push(message);
  }

  async generate(request: GenerationRequest): Promise<AsyncIterable<OllamaChunk>> {
    this.requests.push(request);
    request.cancel.addEventListener('abort', () => (this.aborted = true));
    if (this.script.failBeforeFirstLine === true) throw new UpstreamError('unreachable', this.name, `${this.name} refused the connection`);
    const { lines = [], breakAfter, hang } = this.script;
    return (async function* () {
      for (const [index, line] of lines.entries()) {
        if (index === breakAfter) throw new UpstreamError('unreachable', 'x', 'the stream broke');
        yield line;
      }
      // Waits for the client to go away (the abort), as a slow generation would.
      if (hang === true) await new Promise<void>((resolve) => request.cancel.addEventListener('abort', resolve));
    })();
  }
}

const LINES: OllamaChunk[] = [
  { model: 'm', message: { role: 'assistant', content: 'Hel' }, done: false },
  { model: 'm', message: { role: 'assistant', content: 'lo' }, done: false },
  { model: 'm', message: { role: 'assistant', content: '' }, done: true, done_reason: 'stop', prompt_eval_count: 7, eval_count: 2, eval_duration: 500_000_000 },
];

const servers: Array<{ close(): void }> = [];
after(() => servers.forEach((s) => s.close()));

/** Serves one generation per POST from `candidates` (and `fallback`), the way the API surfaces call it. */
async function harness(candidates: FakeSource[], fallback: FakeSource[] = [], maxRetries = 2) {
  const outcomes: GenerationOutcome[] = [];
  let onClosed: () => void = () => undefined;
  /** Resolves when the request now being served has closed. */
  const closed = new Promise<void>((resolve) => (onClosed = resolve));
  // The scheduler off: each try goes straight to the next candidate, as the router ordered them.
  const scheduler = new Scheduler({
    enabled: false,
    ageBoostMs: 10_000,
    fimMaxWaitMs: 1_500,
    fimReservedSlots: 0,
    slots: () => 1,
    resident: () => false,
    seed: () => ({ serviceMs: 1000, sizeBytes: undefined }),
  });
  const policy: GenerationPolicy = {
    maxRetries,
    heartbeatMs: 60_000,
    maxAnswerChars: 16 * 1024 * 1024,
    fallback: () => fallback,
    scheduler,
    laneRules: [],
    prepare: (body) => body,
    deadline: new AbortController().signal,
    localOnly: () => null,
    isCloudModel: () => false,
    meter: () => undefined,
  };
  const app = express();
  app.post('/api/chat', async (req, res) => {
    beginRequest(req, 'test', req.path);
    res.once('close', () => {
      outcomes.push(requestOf(req).generation as GenerationOutcome);
      onClosed();
    });
    const route: RouteDecision = {
      requestedModel: 'auto',
      model: 'm',
      candidates: candidates as unknown as Backend[],
      tier: 'simple',
      reason: 'simple: test',
      modelReason: 'simple: test',
      rankReason: '',
      spread: false,
      noRoom: [],
    };
    const input = { requestedModel: 'auto', signals: chatSignals([], false, clientSignals(req.headers)), needs: [] };
    await serveGeneration(
      policy,
      req,
      res,
      route,
      { path: '/api/chat', bodies: [{ messages: [] }], stream: req.query.stream !== 'false', format: nativeFormat('chat', 'auto') },
      input,
    );
  });
  app.use(((error, req, res, _next) => sendError(res, requestOf(req).surface, asBridgeError(error))) as express.ErrorRequestHandler);
  const server = app.listen(0, '127.0.0.1');
  servers.push(server);
  await new Promise((resolve) => server.once('listening', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/api/chat`;
  return { url, outcomes, closed };
}

describe('the generation loop, with scripted sources', () => {
  it('streams each line in the surface format as it comes, and records who answered with what', async () => {
    const gpu0 = new FakeSource('gpu0', { lines: LINES });
    const { url, outcomes } = await harness([gpu0]);
    const response = await fetch(url, { method: 'POST' });
    assert.equal(response.headers.get('content-type'), 'application/x-ndjson');
    assert.equal(response.headers.get('x-bridge-backend'), 'gpu0');
    const lines = (await response.text())
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as OllamaChunk);
    assert.deepEqual(
      lines.map((l) => l.message?.content),
      ['Hel', 'lo', ''],
    );
    assert.ok(
      lines.every((l) => l.model === 'auto'),
      'the requested (virtual) model name is kept',
    );
    assert.equal(gpu0.requests[0]?.body.model, 'm');
    const [outcome] = outcomes;
    assert.equal(outcome?.source, 'gpu0');
    assert.equal(outcome?.tokensIn, 7);
    assert.equal(outcome?.tokensOut, 2);
    assert.equal(outcome?.evalSeconds, 0.5);
    assert.equal(outcome?.error, null);
  });

  it('replaces a source that fails before its first line by the next candidate, then by the cloud fallback', async () => {
    const gpu0 = new FakeSource('gpu0', { failBeforeFirstLine: true });
    const gpu1 = new FakeSource('gpu1', { failBeforeFirstLine: true });
    const cloud = new FakeSource('cloud', { lines: LINES }, 'cloud');
    const { url, outcomes } = await harness([gpu0, gpu1], [cloud]);
    const response = await fetch(`${url}?stream=false`, { method: 'POST' });
    assert.equal(response.status, 200);
    assert.equal(((await response.json()) as { message: { content: string } }).message.content, 'Hello');
    assert.equal(gpu0.requests.length + gpu1.requests.length + cloud.requests.length, 3, 'each asked once');
    const [outcome] = outcomes;
    assert.equal(outcome?.retries, 1);
    assert.equal(outcome?.fallback, 'cloud');
    assert.match(outcome?.reason ?? '', /fallback to cloud: gpu0: gpu0 refused the connection; gpu1: gpu1 refused the connection/);
  });

  it('answers a gateway error in the surface shape when no source could answer', async () => {
    const { url, outcomes } = await harness([new FakeSource('gpu0', { failBeforeFirstLine: true })]);
    const response = await fetch(url, { method: 'POST' });
    assert.equal(response.status, 502);
    assert.deepEqual(await response.json(), { error: 'gpu0 refused the connection' });
    assert.equal(outcomes[0]?.error, 'gpu0 refused the connection');
  });

  it('ends a stream that broke after it started with the surface error line, without retrying', async () => {
    const gpu0 = new FakeSource('gpu0', { lines: LINES, breakAfter: 1 });
    const gpu1 = new FakeSource('gpu1', { lines: LINES });
    const { url, outcomes } = await harness([gpu0, gpu1]);
    const lines = (await (await fetch(url, { method: 'POST' })).text()).trim().split('\n');
    assert.deepEqual(JSON.parse(lines.at(-1) ?? ''), { error: 'the stream broke' });
    assert.equal(gpu1.requests.length, 0);
    assert.deepEqual(gpu0.failures, ['the stream broke']);
    assert.equal(outcomes[0]?.error, 'the stream broke');
  });

  it('aborts the source as soon as the client hangs up', async () => {
    const gpu0 = new FakeSource('gpu0', { lines: LINES.slice(0, 1), hang: true });
    const { url, closed } = await harness([gpu0]);
    const client = new AbortController();
    const response = await fetch(url, { method: 'POST', signal: client.signal });
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    client.abort();
    await closed;
    assert.equal(gpu0.aborted, true);
  });
});

describe('a generation’s cancellation', () => {
  it('calls each listener still registered when its turn comes, once, and none added after the abort', () => {
    const cancel = new Cancel();
    const calls: string[] = [];
    const removed = (): number => calls.push('removed');
    const removedByFirst = (): number => calls.push('removed by first');
    cancel.addEventListener('abort', () => {
      calls.push('first');
      cancel.removeEventListener('abort', removedByFirst);
    });
    cancel.addEventListener('abort', removed);
    cancel.addEventListener('abort', removedByFirst);
    cancel.addEventListener('abort', () => calls.push('second'));
    cancel.removeEventListener('abort', removed);
    const reason = new Error('client left');
    cancel.abort(reason);
    cancel.abort(new Error('again'));
    cancel.addEventListener('abort', () => calls.push('late'));
    assert.deepEqual(calls, ['first', 'second']);
    assert.equal(cancel.aborted, true);
    assert.equal(cancel.reason, reason);
  });

  it('runs the other listeners when one throws, and throws its error outside, as an uncaught exception, as an AbortSignal does', () => {
    const cancel = fileURLToPath(new URL('../../src/contract/cancel.ts', import.meta.url));
    const script = [
      `import { Cancel } from ${JSON.stringify(pathToFileURL(cancel).href)};`,
      'const cancel = new Cancel();',
      "cancel.addEventListener('abort', () => { throw new Error('listener bug'); });",
      "cancel.addEventListener('abort', () => console.log('second listener ran'));",
      'cancel.abort();',
      "console.log('abort returned');",
    ].join('\n');
    const run = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8' });
    assert.equal(run.stdout, 'second listener ran\nabort returned\n');
    assert.match(run.stderr, /Error: listener bug/);
    assert.equal(run.status, 1);
  });

  it('gives an AbortSignal that aborts with it, made before or after the abort', () => {
    const early = new Cancel();
    const signal = early.signal;
    assert.equal(signal.aborted, false);
    early.abort();
    assert.equal(signal.aborted, true);
    assert.equal((signal.reason as DOMException).name, 'AbortError');
    const late = new Cancel();
    const reason = new Error('stopped');
    late.abort(reason);
    assert.equal(late.signal.aborted, true);
    assert.equal(late.signal.reason, reason);
  });
});
