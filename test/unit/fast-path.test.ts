import assert from 'node:assert/strict';
import { request as httpRequest, type ServerResponse } from 'node:http';
import { after, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import type { BridgeHandle } from '../../src/bridge.js';
import { startStandIn, startTestBridge, type StandIn } from '../support/bridge.js';
import { configFile } from '../support/temp.js';

/**
 * The hot client routes are served by the fast path in front of express; with the fast path off
 * express serves them as it serves every other route. Both must give the same answers: status,
 * headers (names, spelling, order) and bodies, for good requests and for every kind of error.
 */

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

const MODEL = 'qwen2.5-coder:7b';
const CREATED = '2025-01-01T00:00:00.000000000Z';
const line = (fields: Record<string, unknown>): string => `${JSON.stringify({ model: MODEL, created_at: CREATED, ...fields })}\n`;

/** Ollama's answers: chat and generate lines, model details, and a model it does not have. */
function ollama(url: string, res: ServerResponse, body: string): void {
  const asked = JSON.parse(body || '{}') as { model?: string };
  if (url === '/api/show') {
    if (asked.model !== MODEL) {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: `model '${asked.model}' not found` }));
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(
      JSON.stringify({
        template: '{{ .Prompt }}',
        details: { family: 'qwen2' },
        model_info: { 'general.architecture': 'qwen2', 'qwen2.context_length': 32768 },
        capabilities: ['completion', 'tools', 'insert'],
      }),
    );
    return;
  }
  if (asked.model !== MODEL) {
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: `model '${asked.model}' not found, try pulling it first` }));
    return;
  }
  const chat = url === '/api/chat';
  const piece = (text: string): Record<string, unknown> => (chat ? { message: { role: 'assistant', content: text } } : { response: text });
  res.writeHead(200, { 'content-type': 'application/x-ndjson' });
  res.write(line({ ...piece('Hel'), done: false }));
  res.write(line({ ...piece('lo'), done: false }));
  res.end(line({ ...piece(''), done: true, done_reason: 'stop', prompt_eval_count: 5, eval_count: 2, eval_duration: 1000000 }));
}

async function bridges(configText: string): Promise<{ fast: BridgeHandle; express: BridgeHandle; upstream: StandIn }> {
  const file = configFile(configText);
  const upstream = await startStandIn((req, res, body) => ollama(req.url ?? '', res, body), [MODEL]);
  const env = { OLLAMA_HOST: upstream.url };
  const fast = await startTestBridge({ env, file });
  const express = await startTestBridge({ env, file, fastPath: false });
  cleanups.push(
    () => fast.stop(100),
    () => express.stop(100),
    () => upstream.close(),
  );
  return { fast, express, upstream };
}

interface Exchange {
  method: 'GET' | 'POST';
  path: string;
  headers?: Record<string, string>;
  body?: unknown;
}

interface Answer {
  status: number;
  headers: string[];
  body: string;
}

/** Headers that differ between any two answers (time, request id, connection); ids and times in bodies (the two bridges started apart). */
const VARYING_HEADERS = new Set(['date', 'x-request-id', 'connection', 'keep-alive']);
const normalize = (text: string): string =>
  text
    .replace(/"(id|created|created_at|modified_at|call_id|item_id|response_id|uptimeSeconds)":("[^"]*"|\d+)/g, '"$1":"*"')
    .replace(/\b(chatcmpl|cmpl|call|msg|resp|toolu|fc|rs)[-_][0-9A-Za-z]+/g, '$1-*');

function send(base: string, exchange: Exchange): Promise<Answer> {
  const body =
    exchange.body === undefined
      ? undefined
      : Buffer.isBuffer(exchange.body)
        ? exchange.body
        : Buffer.from(typeof exchange.body === 'string' ? exchange.body : JSON.stringify(exchange.body));
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      `${base}${exchange.path}`,
      { method: exchange.method, headers: { 'content-type': 'application/json', ...exchange.headers } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          const headers: string[] = [];
          for (let i = 0; i < res.rawHeaders.length; i += 2) {
            const name = res.rawHeaders[i] as string;
            if (!VARYING_HEADERS.has(name.toLowerCase())) headers.push(`${name}: ${normalize(res.rawHeaders[i + 1] as string)}`);
          }
          resolve({ status: res.statusCode ?? 0, headers, body: normalize(Buffer.concat(chunks).toString()) });
        });
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

async function assertSameAnswers(pair: { fast: BridgeHandle; express: BridgeHandle }, exchanges: readonly Exchange[]): Promise<Answer[]> {
  const answers: Answer[] = [];
  for (const exchange of exchanges) {
    const fast = await send(pair.fast.url, exchange);
    const express = await send(pair.express.url, exchange);
    assert.deepEqual(fast, express, `${exchange.method} ${exchange.path} ${JSON.stringify(exchange.headers ?? {})} ${String(exchange.body).slice(0, 80)}`);
    answers.push(fast);
  }
  return answers;
}

const chat = (model: string, stream: boolean): Record<string, unknown> => ({ model, stream, messages: [{ role: 'user', content: 'hi' }] });

describe('the fast path and express answer alike', () => {
  it('on every hot route: model lists, details, every generation surface, streamed and whole', async () => {
    const pair = await bridges(`models:\n  simple: { name: "${MODEL}" }\n  complex: { name: "${MODEL}" }\n`);
    const answers = await assertSameAnswers(pair, [
      { method: 'GET', path: '/api/tags' },
      { method: 'GET', path: '/v1/models' },
      { method: 'POST', path: '/api/show', body: { model: MODEL } },
      { method: 'POST', path: '/api/show', body: { name: 'auto' } },
      { method: 'POST', path: '/api/chat', body: chat(MODEL, false) },
      { method: 'POST', path: '/api/chat', body: chat('auto', true) },
      { method: 'POST', path: '/api/generate', body: { model: MODEL, prompt: 'def add(', stream: false } },
      { method: 'POST', path: '/api/generate', body: { model: MODEL, prompt: 'def add(', suffix: 'return x', stream: true } },
      { method: 'POST', path: '/v1/chat/completions', body: chat(MODEL, false) },
      { method: 'POST', path: '/v1/chat/completions', body: { ...chat('auto', true), stream_options: { include_usage: true } } },
      { method: 'POST', path: '/chat/completions', body: chat(MODEL, true) },
      { method: 'POST', path: '/v1/completions', body: { model: MODEL, prompt: 'def add(', max_tokens: 5 } },
      { method: 'POST', path: '/v1/completions', body: { model: MODEL, prompt: 'def add(', suffix: 'x', stream: true } },
      { method: 'POST', path: '/v1/engines/copilot-codex/completions', body: { prompt: 'def add(', suffix: 'x', max_tokens: 5 } },
      { method: 'POST', path: `/v1/engines/${encodeURIComponent(MODEL)}/completions`, body: { prompt: 'def add(', stream: false } },
      { method: 'POST', path: '/v1/messages?beta=true', body: { model: MODEL, max_tokens: 50, messages: [{ role: 'user', content: 'hi' }] } },
      { method: 'POST', path: '/v1/messages', body: { model: 'auto', max_tokens: 50, stream: true, messages: [{ role: 'user', content: 'hi' }] } },
      { method: 'POST', path: '/v1/responses', body: { model: MODEL, input: 'hi', stream: false, store: false } },
      { method: 'POST', path: '/v1/responses', body: { model: MODEL, input: 'hi', stream: true, store: false } },
      { method: 'POST', path: '/api/chat?x=1', headers: { origin: 'vscode-webview://abc', 'user-agent': 'GitHubCopilotChat/0.30' }, body: chat(MODEL, false) },
      { method: 'POST', path: '/api/chat', headers: { 'content-encoding': 'gzip' }, body: gzipSync(JSON.stringify(chat(MODEL, false))) },
    ]);
    // The answers are real ones, not two identical failures.
    assert.ok(
      answers.every((a) => a.status === 200),
      JSON.stringify(answers.map((a) => a.status)),
    );
    assert.match(answers[5]?.body ?? '', /"content":"Hel"/);
    assert.match(answers[9]?.body ?? '', /data: \[DONE\]/);
  });

  it('on errors: bad bodies, bad fields, unknown models, upstream refusals, guard refusals, sizes and encodings', async () => {
    const pair = await bridges(`server:\n  body_limit_mb: 0.001\nmodels:\n  simple: { name: "${MODEL}" }\n  complex: { name: "absent:1b" }\n`);
    const big = { model: MODEL, messages: [{ role: 'user', content: 'x'.repeat(2000) }] };
    const answers = await assertSameAnswers(pair, [
      { method: 'POST', path: '/api/chat', body: '{"model": "x", ' },
      { method: 'POST', path: '/v1/chat/completions', body: '"just a string"' },
      { method: 'POST', path: '/v1/messages', body: '[1, 2' },
      { method: 'POST', path: '/api/chat', body: { messages: [] } },
      { method: 'POST', path: '/api/generate', body: { model: 42 } },
      { method: 'POST', path: '/v1/chat/completions', body: { model: MODEL, messages: [] } },
      { method: 'POST', path: '/v1/completions', body: { prompt: 'x' } },
      { method: 'POST', path: '/v1/messages', body: { model: MODEL, messages: 'hi' } },
      { method: 'POST', path: '/v1/responses', body: { model: MODEL, input: 'hi', previous_response_id: 'resp_1' } },
      { method: 'POST', path: '/api/show', body: {} },
      { method: 'POST', path: '/api/show', body: { model: 'absent:1b' } },
      { method: 'POST', path: '/api/chat', body: chat('absent:1b', false) },
      { method: 'POST', path: '/v1/chat/completions', body: chat('absent:1b', true) },
      { method: 'POST', path: '/v1/messages', body: { model: 'bridge/complex', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] } },
      { method: 'POST', path: '/api/chat', headers: { host: 'evil.example' }, body: chat(MODEL, false) },
      { method: 'POST', path: '/v1/chat/completions', headers: { origin: 'https://evil.example' }, body: chat(MODEL, false) },
      { method: 'POST', path: '/v1/messages', body: big },
      { method: 'POST', path: '/api/chat', headers: { 'content-length': '999999' }, body: '{}' },
      { method: 'POST', path: '/v1/chat/completions', headers: { 'content-encoding': 'zstd' }, body: '{}' },
      { method: 'POST', path: '/api/chat', headers: { 'content-type': 'application/json; charset=latin1' }, body: '{}' },
      { method: 'POST', path: '/api/chat', headers: { 'content-encoding': 'gzip' }, body: 'not gzip' },
      // Not the fast path's: express answers both alike.
      { method: 'POST', path: '/api/chat/', body: chat(MODEL, false) },
      { method: 'GET', path: '/api/chat' },
      { method: 'POST', path: '/v1/engines/%E0%A4%A/completions', body: { prompt: 'x' } },
    ]);
    // The last one is a path segment that does not decode, which the fast path leaves to express.
    const statuses = answers.slice(0, -1).map((a) => a.status);
    assert.deepEqual(statuses, [400, 400, 400, 400, 400, 400, 400, 400, 400, 400, 404, 404, 404, 404, 403, 403, 413, 413, 415, 415, 400, 200, 405]);
  });

  it('on the health and metrics routes, which load balancers and Prometheus call all the time', async () => {
    const pair = await bridges(`models:\n  simple: { name: "${MODEL}" }\n  complex: { name: "${MODEL}" }\n`);
    const [health] = await assertSameAnswers(pair, [{ method: 'GET', path: '/health' }]);
    assert.equal(health?.status, 200);
    assert.match(health?.body ?? '', /^\{"status":"ok","uptimeSeconds":"\*"\}$/);
    // Readiness and metrics carry each bridge's own figures: the same status and headers, bodies of the same shape.
    for (const path of ['/health/ready', '/metrics']) {
      const fast = await send(pair.fast.url, { method: 'GET', path });
      const express = await send(pair.express.url, { method: 'GET', path });
      assert.equal(fast.status, 200, path);
      assert.deepEqual(
        { status: fast.status, headers: fast.headers.filter((h) => !h.startsWith('Content-Length')) },
        { status: express.status, headers: express.headers.filter((h) => !h.startsWith('Content-Length')) },
        path,
      );
    }
    const ready = JSON.parse((await send(pair.fast.url, { method: 'GET', path: '/health/ready' })).body) as { ready: boolean; backends: unknown[] };
    assert.equal(ready.ready, true);
    assert.equal(ready.backends.length, 1);
    assert.match((await send(pair.fast.url, { method: 'GET', path: '/metrics' })).body, /^# HELP /m);
  });

  it('with API keys: a request without a key, with a wrong one and with the right one', async () => {
    const key = 'k'.repeat(24);
    const pair = await bridges(`server:\n  api_keys: ["${key}"]\nmodels:\n  simple: { name: "${MODEL}" }\n  complex: { name: "${MODEL}" }\n`);
    const answers = await assertSameAnswers(pair, [
      { method: 'GET', path: '/v1/models' },
      { method: 'POST', path: '/v1/messages', headers: { 'x-api-key': 'wrong-wrong-wrong-wrong' }, body: chat(MODEL, false) },
      { method: 'POST', path: '/v1/chat/completions', headers: { authorization: `Bearer ${key}` }, body: chat(MODEL, false) },
    ]);
    assert.deepEqual(
      answers.map((a) => a.status),
      [401, 401, 200],
    );
  });
});

describe('express, loaded with the first request that needs it', () => {
  it('serves every request that arrives while it loads', async () => {
    const bridge = await startTestBridge();
    after(() => bridge.stop(100));
    const headers = { 'x-bridge-token': bridge.controlToken };
    const paths = ['/bridge/api/state', '/bridge/api/history', '/bridge/api/whoami'];
    const answers = await Promise.all(Array.from({ length: 6 }, (_, i) => send(bridge.url, { method: 'GET', path: paths[i % 3] as string, headers })));
    assert.deepEqual(
      answers.map((a) => a.status),
      [200, 200, 200, 200, 200, 200],
    );
    assert.match(answers[0]?.body ?? '', /"backends"/);
  });
});
