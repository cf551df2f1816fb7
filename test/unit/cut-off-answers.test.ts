import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import { after, describe, it } from 'node:test';
import type { BridgeHandle } from '../../src/bridge.js';
import type { HistoryRecord } from '../../src/history/store.js';
import { NdjsonLines } from '../../src/upstream/ollama-api.js';
import { startCloudBridge, startStandIn, startTestBridge } from '../support/bridge.js';
import { readLines } from '../support/streams.js';
import { configFile } from '../support/temp.js';

/**
 * Upstream answers that end cleanly (the HTTP answer is complete) but without their last line,
 * done: true: a line or two and then nothing, or a 200 with an empty body. Each surface must report
 * them as the upstream failure they are, never as a finished answer.
 */

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

const CREATED = '2025-01-01T00:00:00Z';
const textLine = (text: string): string =>
  `${JSON.stringify({ model: 'm', created_at: CREATED, message: { role: 'assistant', content: text }, done: false })}\n`;
const finalLine = `${JSON.stringify({ model: 'm', created_at: CREATED, message: { role: 'assistant', content: '' }, done: true, done_reason: 'stop', prompt_eval_count: 3, eval_count: 4 })}\n`;

type Behaviour = (res: ServerResponse) => void;

/** One line of text, then the answer ends: no line with done: true. */
const cutOff: Behaviour = (res) => {
  res.writeHead(200, { 'content-type': 'application/x-ndjson' });
  res.end(textLine('partial'));
};
/** A 200 without a single line. */
const empty: Behaviour = (res) => {
  res.writeHead(200, { 'content-type': 'application/x-ndjson' });
  res.end();
};
/** The head of a stream, then the connection is lost before any line. */
const resetAfterHead: Behaviour = (res) => {
  const socket = res.socket;
  res.detachSocket(socket as NonNullable<typeof socket>);
  socket?.write('HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\n\r\n', () => socket.destroy());
};
const whole: Behaviour = (res) => {
  res.writeHead(200, { 'content-type': 'application/x-ndjson' });
  res.end(textLine('whole') + finalLine);
};

const CUT_OFF = /ended its answer without a final line/;

/** A bridge with one stand-in backend ("local") that answers each generation as `behaviours` says, in turn (the last one from then on). */
async function bridgeWith(...behaviours: Behaviour[]): Promise<BridgeHandle> {
  let asked = 0;
  const upstream = await startStandIn((_req, res) => (behaviours[Math.min(asked++, behaviours.length - 1)] as Behaviour)(res), ['m:latest']);
  const bridge = await startTestBridge({ file: configFile(''), env: { OLLAMA_HOST: upstream.url } });
  cleanups.push(
    () => bridge.stop(100),
    () => upstream.close(),
  );
  return bridge;
}

const post = (bridge: BridgeHandle, path: string, body: unknown): Promise<Response> =>
  fetch(`${bridge.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

const messages = [{ role: 'user', content: 'x' }];
const nativeChat = (stream: boolean): unknown => ({ model: 'm', stream, messages });
const openAiChat = (stream: boolean, n = 1): unknown => ({ model: 'm', stream, n, messages });

/** SSE events as [event name ('' when unnamed), data as it came]. */
async function sseEvents(response: Response): Promise<Array<[string, string]>> {
  const events: Array<[string, string]> = [];
  let name = '';
  for await (const line of readLines(response)) {
    if (line.startsWith('event: ')) name = line.slice(7);
    else if (line.startsWith('data: ')) {
      events.push([name, line.slice(6)]);
      name = '';
    }
  }
  return events;
}

function nextRecord(bridge: BridgeHandle): Promise<HistoryRecord> {
  return new Promise((resolve) => {
    const stop = bridge.history.onRecord((record) => {
      stop();
      resolve(record);
    });
  });
}

/** A 502 whose body, in the surface's shape, says the answer was cut off. */
async function assertCutOffStatus(response: Response, message: (body: never) => string): Promise<void> {
  assert.equal(response.status, 502);
  assert.match(message((await response.json()) as never), CUT_OFF);
}

const ollamaMessage = (body: { error: string }): string => body.error;
const openAiMessage = (body: { error: { message: string; code: string } }): string => {
  assert.equal(body.error.code, 'upstream_incomplete');
  return body.error.message;
};
const anthropicMessage = (body: { type: string; error: { type: string; message: string } }): string => {
  assert.equal(body.type, 'error');
  assert.equal(body.error.type, 'api_error');
  return body.error.message;
};

describe('answers cut off upstream', () => {
  it('native /api/chat stream: the partial lines, then an error line, not a silent end', async () => {
    const bridge = await bridgeWith(cutOff);
    const recorded = nextRecord(bridge);
    const response = await post(bridge, '/api/chat', nativeChat(true));
    assert.equal(response.status, 200);
    const lines: Array<{ message?: { content: string }; error?: string }> = [];
    for await (const line of readLines(response)) lines.push(JSON.parse(line) as (typeof lines)[number]);
    assert.equal(lines.length, 2);
    assert.equal(lines[0]?.message?.content, 'partial');
    assert.match(String(lines[1]?.error), CUT_OFF);
    // The history and the backend's health count it as the failure it is.
    const record = await recorded;
    assert.equal(record.outcome, 'error');
    assert.match(String(record.error), CUT_OFF);
    const backend = bridge.state.backends.find((b) => b.name === 'local');
    assert.equal(backend?.failures, 1);
    assert.match(String(backend?.health.lastError), CUT_OFF);
  });

  it('native /api/chat and /v1/chat/completions: an answer that ends in the middle of a line is cut off, not a line that is not JSON', async () => {
    const midLine: Behaviour = (res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.end(textLine('partial') + finalLine.slice(0, 40));
    };
    const bridge = await bridgeWith(midLine);
    await assertCutOffStatus(await post(bridge, '/api/chat', nativeChat(false)), ollamaMessage);
    await assertCutOffStatus(await post(bridge, '/v1/chat/completions', openAiChat(false)), openAiMessage);
  });

  it('native /api/chat stream: an empty 200 is a 502, not a 0-byte success', async () => {
    const bridge = await bridgeWith(empty);
    await assertCutOffStatus(await post(bridge, '/api/chat', nativeChat(true)), ollamaMessage);
    assert.equal(bridge.state.backends.find((b) => b.name === 'local')?.failures, 1);
  });

  it('native /api/chat stream: a connection lost after the head, before any line, is a 502 and counts against the backend', async () => {
    const bridge = await bridgeWith(resetAfterHead);
    const response = await post(bridge, '/api/chat', nativeChat(true));
    assert.equal(response.status, 502);
    assert.equal(typeof ((await response.json()) as { error?: unknown }).error, 'string');
    assert.equal(bridge.state.backends.find((b) => b.name === 'local')?.failures, 1);
  });

  it('native /api/chat whole answer: a cut-off answer and an empty one are 502s, not bodies without done', async () => {
    const bridge = await bridgeWith(cutOff, empty);
    await assertCutOffStatus(await post(bridge, '/api/chat', nativeChat(false)), ollamaMessage);
    await assertCutOffStatus(await post(bridge, '/api/chat', nativeChat(false)), ollamaMessage);
  });

  it('/v1/chat/completions stream: ends with an error event, no finish_reason and no [DONE]', async () => {
    const bridge = await bridgeWith(cutOff);
    const response = await post(bridge, '/v1/chat/completions', openAiChat(true));
    assert.equal(response.status, 200);
    const events = (await sseEvents(response)).map(([, data]) => data);
    assert.ok(!events.includes('[DONE]'), events.join('\n'));
    const chunks = events.map((data) => JSON.parse(data) as { choices?: Array<{ finish_reason: string | null }>; error?: { message: string; code: string } });
    assert.ok(chunks.every((chunk) => (chunk.choices ?? []).every((choice) => choice.finish_reason === null)));
    const last = chunks.at(-1);
    assert.equal(last?.error?.code, 'upstream_incomplete');
    assert.match(String(last?.error?.message), CUT_OFF);
  });

  it('/v1/chat/completions stream: an empty 200 is a 502 in OpenAI’s shape', async () => {
    const bridge = await bridgeWith(empty);
    await assertCutOffStatus(await post(bridge, '/v1/chat/completions', openAiChat(true)), openAiMessage);
  });

  it('/v1/chat/completions whole answer: a cut-off answer and an empty one are 502s, not finish_reason "stop"', async () => {
    const bridge = await bridgeWith(cutOff, empty);
    await assertCutOffStatus(await post(bridge, '/v1/chat/completions', openAiChat(false)), openAiMessage);
    await assertCutOffStatus(await post(bridge, '/v1/chat/completions', openAiChat(false)), openAiMessage);
  });

  it('/v1/chat/completions with n = 2: one choice cut off fails the answer, though the other finished', async () => {
    const bridge = await bridgeWith(whole, cutOff);
    await assertCutOffStatus(await post(bridge, '/v1/chat/completions', openAiChat(false, 2)), openAiMessage);
  });

  it('/v1/messages stream: ends with an error event, not end_turn and message_stop', async () => {
    const bridge = await bridgeWith(cutOff, empty);
    const body = { model: 'm', max_tokens: 10, stream: true, messages };
    const response = await post(bridge, '/v1/messages', body);
    assert.equal(response.status, 200);
    const events = await sseEvents(response);
    assert.deepEqual(
      events.map(([name]) => name),
      ['message_start', 'content_block_start', 'content_block_delta', 'error'],
    );
    anthropicMessage(JSON.parse(events.at(-1)?.[1] ?? '{}') as never);
    await assertCutOffStatus(await post(bridge, '/v1/messages', body), anthropicMessage);
  });

  it('/v1/responses stream: ends with response.failed, not response.completed', async () => {
    const bridge = await bridgeWith(cutOff, empty);
    const body = { model: 'm', stream: true, input: 'x' };
    const response = await post(bridge, '/v1/responses', body);
    assert.equal(response.status, 200);
    const events = await sseEvents(response);
    assert.ok(!events.some(([name]) => name === 'response.completed'));
    const [name, data] = events.at(-1) ?? ['', '{}'];
    assert.equal(name, 'response.failed');
    const failed = (JSON.parse(data) as { response: { status: string; error: { message: string } } }).response;
    assert.equal(failed.status, 'failed');
    assert.match(failed.error.message, CUT_OFF);
    await assertCutOffStatus(await post(bridge, '/v1/responses', body), openAiMessage);
  });
});

describe('a cut-off first try', () => {
  /** Two stand-in backends with dual-GPU on; whichever is asked first cuts its answer off, the other answers whole. */
  async function firstCutThenWhole(first: Behaviour): Promise<BridgeHandle> {
    let asked = 0;
    const respond = (res: ServerResponse): void => (asked++ === 0 ? first : whole)(res);
    const a = await startStandIn((_req, res) => respond(res), ['m:latest']);
    const b = await startStandIn((_req, res) => respond(res), ['m:latest']);
    const bridge = await startTestBridge({ file: configFile(''), env: { GPU0_URL: a.url, GPU1_URL: b.url, ENABLE_DUAL_GPU: 'true' } });
    cleanups.push(
      () => bridge.stop(100),
      () => a.close(),
      () => b.close(),
    );
    return bridge;
  }

  it('is retried on the other backend before anything was sent (whole answer)', async () => {
    const bridge = await firstCutThenWhole(cutOff);
    const recorded = nextRecord(bridge);
    const response = await post(bridge, '/api/chat', nativeChat(false));
    assert.equal(response.status, 200);
    const body = (await response.json()) as { message: { content: string }; done: boolean };
    assert.equal(body.message.content, 'whole');
    assert.equal(body.done, true);
    const record = await recorded;
    assert.equal(record.retries, 1);
    assert.equal(record.outcome, 'ok');
  });

  it('is retried on the other backend when it sent no line at all (stream)', async () => {
    const bridge = await firstCutThenWhole(empty);
    const response = await post(bridge, '/v1/chat/completions', openAiChat(true));
    assert.equal(response.status, 200);
    const events = (await sseEvents(response)).map(([, data]) => data);
    assert.equal(events.at(-1), '[DONE]');
    const chunks = events.slice(0, -1).map((data) => JSON.parse(data) as { choices: Array<{ delta: { content?: string }; finish_reason: string | null }> });
    assert.equal(chunks.map((chunk) => chunk.choices[0]?.delta.content ?? '').join(''), 'whole');
    assert.equal(chunks.at(-1)?.choices[0]?.finish_reason, 'stop');
  });
});

describe('cloud answers cut off', () => {
  /** A bridge whose only local backend is down, with one cloud provider of `type` that answers with these SSE events. */
  async function cloudBridge(type: 'openai' | 'anthropic', events: readonly string[]): Promise<BridgeHandle> {
    const started = await startCloudBridge(type, (res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.end(events.join(''));
    });
    cleanups.push(started.close);
    return started.bridge;
  }

  const openAiChunk = (content: string, finish: string | null = null): string =>
    `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', model: 'gpt', choices: [{ index: 0, delta: { content }, finish_reason: finish }] })}\n\n`;
  const anthropicEvent = (type: string, data: Record<string, unknown>): string => `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`;

  it('OpenAI-compatible: a stream that ends before a finish_reason or [DONE] is a 502, one with a finish_reason but no [DONE] is whole', async () => {
    const cut = await cloudBridge('openai', [openAiChunk('partial')]);
    await assertCutOffStatus(await post(cut, '/v1/chat/completions', openAiChat(false)), openAiMessage);
    const noDone = await cloudBridge('openai', [openAiChunk('whole', 'stop')]);
    const response = await post(noDone, '/v1/chat/completions', openAiChat(false));
    assert.equal(response.status, 200);
    const body = (await response.json()) as { choices: Array<{ message: { content: string }; finish_reason: string }> };
    assert.equal(body.choices[0]?.message.content, 'whole');
    assert.equal(body.choices[0]?.finish_reason, 'stop');
  });

  it('OpenAI-compatible and Anthropic: a stream that ends in the middle of a line is cut off, not a line that is not JSON', async () => {
    const openAi = await cloudBridge('openai', [openAiChunk('partial'), openAiChunk('whole', 'stop').slice(0, 40)]);
    await assertCutOffStatus(await post(openAi, '/v1/chat/completions', openAiChat(false)), openAiMessage);
    const anthropic = await cloudBridge('anthropic', [
      anthropicEvent('message_start', { message: { usage: { input_tokens: 3, output_tokens: 1 } } }),
      anthropicEvent('message_delta', { delta: { stop_reason: 'end_turn' }, usage: { output_tokens: 2 } }).slice(0, 50),
    ]);
    await assertCutOffStatus(await post(anthropic, '/v1/chat/completions', openAiChat(false)), openAiMessage);
  });

  it('Anthropic: a stream that ends before its message stopped is a 502', async () => {
    const bridge = await cloudBridge('anthropic', [
      anthropicEvent('message_start', { message: { usage: { input_tokens: 3, output_tokens: 1 } } }),
      anthropicEvent('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }),
      anthropicEvent('content_block_delta', { index: 0, delta: { type: 'text_delta', text: 'partial' } }),
    ]);
    await assertCutOffStatus(await post(bridge, '/v1/chat/completions', openAiChat(false)), openAiMessage);
  });
});

describe('lines after the final line', () => {
  /** The final line, then more text and a second final line, as a misbehaving upstream might send. */
  const trailing: Behaviour = (res) => {
    res.writeHead(200, { 'content-type': 'application/x-ndjson' });
    res.end(textLine('whole') + finalLine + textLine('late') + finalLine);
  };

  it('are not read: the native stream ends with its one final line', async () => {
    const bridge = await bridgeWith(trailing);
    const response = await post(bridge, '/api/chat', nativeChat(true));
    const lines: Array<{ message?: { content: string }; done: boolean }> = [];
    for await (const line of readLines(response)) lines.push(JSON.parse(line) as (typeof lines)[number]);
    assert.deepEqual(
      lines.map((line) => [line.message?.content, line.done]),
      [
        ['whole', false],
        ['', true],
      ],
    );
  });

  it('are not read: an OpenAI stream has one finish_reason, no text after it, and ends with usage and [DONE]', async () => {
    const bridge = await bridgeWith(trailing);
    const recorded = nextRecord(bridge);
    const response = await post(bridge, '/v1/chat/completions', { ...(openAiChat(true) as object), stream_options: { include_usage: true } });
    const events = (await sseEvents(response)).map(([, data]) => data);
    assert.equal(events.at(-1), '[DONE]');
    const chunks = events
      .slice(0, -1)
      .map((data) => JSON.parse(data) as { choices: Array<{ delta: { content?: string }; finish_reason: string | null }>; usage?: unknown });
    assert.deepEqual(
      chunks.flatMap((chunk) => chunk.choices.map((choice) => [choice.delta.content, choice.finish_reason])),
      [
        ['whole', null],
        [undefined, 'stop'],
      ],
    );
    assert.deepEqual(chunks.at(-1)?.usage, { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 });
    assert.equal((await recorded).outcome, 'ok');
  });

  it('leave no connection paused: a reader that paused for a slow consumer resumes at the final line, and is not destroyed', async () => {
    const calls: string[] = [];
    const lines = new NdjsonLines({ pause: () => calls.push('pause'), resume: () => calls.push('resume'), destroy: () => calls.push('destroy') }, 1 << 20);
    lines.push(Buffer.from(textLine('x').repeat(100)));
    assert.deepEqual(calls, ['pause']);
    lines.push(Buffer.from(finalLine + textLine('late')));
    assert.deepEqual(calls, ['pause', 'resume']);
    // The consumer stops early: the answer already ended, so its connection is left to finish and be reused.
    await lines.return();
    assert.deepEqual(calls, ['pause', 'resume']);
    assert.equal(lines.complete, true);
  });
});

describe('an answer line with an empty error field', () => {
  it('is no error ("error": null or ""), as Ollama’s own client reads it: the answer is served whole', async () => {
    const withError = (line: string, error: unknown): string => `${JSON.stringify({ ...(JSON.parse(line) as object), error })}\n`;
    const bridge = await bridgeWith((res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.end(withError(textLine('whole'), null) + withError(finalLine, ''));
    });
    const native = await post(bridge, '/api/chat', nativeChat(false));
    assert.equal(native.status, 200);
    const body = (await native.json()) as { message: { content: string }; done: boolean; error?: unknown };
    assert.equal(body.message.content, 'whole');
    assert.equal(body.done, true);
    assert.equal('error' in body, false);
    const openAi = await post(bridge, '/v1/chat/completions', openAiChat(false));
    assert.equal(openAi.status, 200);
    assert.equal(((await openAi.json()) as { choices: Array<{ message: { content: string } }> }).choices[0]?.message.content, 'whole');
  });
});

describe('a line that is not an answer line', () => {
  it('is reported as not a JSON object when it is JSON but no object', async () => {
    const bridge = await bridgeWith((res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.end('[1,2]\n');
    });
    const response = await post(bridge, '/api/chat', nativeChat(false));
    assert.equal(response.status, 502);
    assert.match(((await response.json()) as { error: string }).error, /sent a line that is not a JSON object$/);
  });
});

describe('an answer line with a very long error text', () => {
  it('is cut to a short message for the client and the history, which keeps thousands of records in memory', async () => {
    const longError = `runner failed: ${'x'.repeat(1024 * 1024)}`;
    const bridge = await bridgeWith((res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.end(`${textLine('partial')}${JSON.stringify({ error: longError })}\n`);
    });
    const recorded = nextRecord(bridge);
    const response = await post(bridge, '/api/chat', nativeChat(true));
    assert.equal(response.status, 200);
    const lines = (await response.text()).trim().split('\n');
    const { error } = JSON.parse(lines.at(-1) ?? '') as { error: string };
    assert.match(error, /^runner failed: x+$/);
    assert.ok(error.length <= 500, `the client got ${error.length} characters`);
    const record = await recorded;
    assert.ok((record.error ?? '').length <= 500, `history kept ${record.error?.length} characters`);
  });
});

describe('an error answer with a very long message', () => {
  it('is cut to a short message, as an error line is', async () => {
    const bridge = await bridgeWith((res) => {
      res.writeHead(400, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: `bad request: ${'E'.repeat(1024 * 1024)}` }));
    });
    const recorded = nextRecord(bridge);
    const response = await post(bridge, '/api/chat', nativeChat(false));
    assert.equal(response.status, 400);
    const { error } = (await response.json()) as { error: string };
    assert.match(error, /^bad request: E+$/);
    assert.ok(error.length <= 500, `the client got ${error.length} characters`);
    assert.ok(((await recorded).error ?? '').length <= 500);
  });
});

describe('a 200 that is a web page', () => {
  it('is reported as a web page (a proxy’s login page, a web server at the wrong address), not as an answer cut off', async () => {
    const bridge = await bridgeWith((res) => {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end('<!doctype html><html><body>Sign in to continue</body></html>');
    });
    const webPage = /^local answered a web page \(text\/html\) instead of NDJSON$/;
    for (const stream of [true, false]) {
      const native = await post(bridge, '/api/chat', nativeChat(stream));
      assert.equal(native.status, 502);
      assert.match(((await native.json()) as { error: string }).error, webPage);
    }
    const openAi = await post(bridge, '/v1/chat/completions', openAiChat(true));
    assert.equal(openAi.status, 502);
    const { error } = (await openAi.json()) as { error: { message: string; code: string } };
    assert.match(error.message, webPage);
    assert.equal(error.code, 'upstream_unreachable');
  });
});

describe('an answer line nested too deep', () => {
  it('is refused as such, not passed on to fail where it is written for the client (the stack overflows there)', async () => {
    const depth = 20_000;
    const deep = `${'['.repeat(depth)}${']'.repeat(depth)}`;
    const bridge = await bridgeWith((res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      const toolCall = `{"function":{"name":"f","arguments":{"x":${deep}}}}`;
      res.end(`{"model":"m","created_at":"${CREATED}","message":{"role":"assistant","content":"","tool_calls":[${toolCall}]},"done":false}\n${finalLine}`);
    });
    const tooDeep = /^local sent a line nested deeper than 512 levels$/;
    const native = await post(bridge, '/api/chat', nativeChat(true));
    assert.equal(native.status, 502);
    assert.match(((await native.json()) as { error: string }).error, tooDeep);
    const openAi = await post(bridge, '/v1/chat/completions', openAiChat(false));
    assert.equal(openAi.status, 502);
    assert.match(((await openAi.json()) as { error: { message: string } }).error.message, tooDeep);
  });
});

describe('an answer longer than the bridge gathers', () => {
  // 0.05 MiB (52429 characters) per answer; the upstream sends 100 lines of 1000: an answer that never ends, cut short.
  const piece = 'x'.repeat(1000);
  const endless: Behaviour = (res) => {
    res.writeHead(200, { 'content-type': 'application/x-ndjson' });
    res.end(`${Array.from({ length: 100 }, () => textLine(piece)).join('')}${finalLine}`);
  };

  it('is refused once it passes routing.thresholds.max_line_mb when gathered whole, not gathered until memory runs out; a stream goes on', async () => {
    const upstream = await startStandIn((_req, res) => endless(res), ['m:latest']);
    const bridge = await startTestBridge({ file: configFile('routing:\n  thresholds:\n    max_line_mb: 0.05\n'), env: { OLLAMA_HOST: upstream.url } });
    cleanups.push(async () => {
      await bridge.stop(100);
      await upstream.close();
    });
    const whole = await post(bridge, '/v1/chat/completions', openAiChat(false));
    assert.equal(whole.status, 502);
    assert.match(
      ((await whole.json()) as { error: { message: string } }).error.message,
      /^local sent an answer longer than 52429 bytes \(routing\.thresholds\.max_line_mb\)$/,
    );
    // The client takes a stream as it comes: all of it is passed on.
    const streamed = await post(bridge, '/api/chat', nativeChat(true));
    assert.equal(streamed.status, 200);
    const lines = (await streamed.text()).trim().split('\n');
    assert.equal(lines.filter((line) => line.includes(piece)).length, 100);
    assert.equal((JSON.parse(lines.at(-1) ?? '') as { done: boolean }).done, true);
  });
});
