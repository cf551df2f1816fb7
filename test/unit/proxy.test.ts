import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { gzipSync } from 'node:zlib';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import type { BridgeHandle } from '../../src/bridge.js';
import { freePort } from '../support/ollama-rig.js';
import { memoryLogger, startStandIn, startTestBridge, type StandIn, type TestBridgeOptions } from '../support/bridge.js';
import { tempDir } from '../support/temp.js';
import { until } from '../support/wait.js';

const dir = tempDir('bridge-proxy-');
function configFile(text: string): string {
  const file = path.join(dir, `${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(file, text);
  return file;
}

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function pair(
  handler: Parameters<typeof startStandIn>[0],
  options: TestBridgeOptions = {},
): Promise<{ upstream: StandIn; bridge: BridgeHandle }> {
  const upstream = await startStandIn(handler);
  const bridge = await startTestBridge({ ...options, env: { OLLAMA_HOST: upstream.url, ...options.env } });
  cleanups.push(() => bridge.stop(100), () => upstream.close());
  return { upstream, bridge };
}

/** Reads a streamed body and notes when each chunk arrived. */
async function readChunks(response: Response): Promise<string> {
  return await response.text();
}

describe('pass-through proxy', () => {
  it('passes the rest of the native API through: method, path, query and body, the upstream Host, no hop-by-hop headers', async () => {
    const { upstream, bridge } = await pair((_req, res) => {
      res.writeHead(200, {
        'content-type': 'application/json',
        'x-upstream': 'yes',
        connection: 'x-hop-response',
        'x-hop-response': 'secret',
        'keep-alive': 'timeout=5',
      });
      res.end('{"ok":true}');
    });
    const response = await new Promise<{ status: number; headers: Record<string, unknown>; body: string }>((resolve, reject) => {
      const req = httpRequest(
        `${bridge.url}/api/push?debug=1`,
        {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            connection: 'keep-alive, x-hop-request',
            'x-hop-request': 'drop me',
            'proxy-authorization': 'Basic x',
            te: 'trailers',
            authorization: 'Bearer ',
            'user-agent': 'GitHubCopilotChat/0.30',
            'x-end-to-end': 'keep me',
          },
        },
        (res) => {
          let body = '';
          res.on('data', (chunk: Buffer) => (body += chunk.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        },
      );
      req.on('error', reject);
      req.end(JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hi', copilot_cache_control: { type: 'ephemeral' } }] }));
    });
    assert.equal(response.status, 200);
    assert.equal(response.body, '{"ok":true}');
    assert.equal(response.headers['x-upstream'], 'yes');
    assert.equal(response.headers['x-hop-response'], undefined);
    assert.notEqual(response.headers['keep-alive'], 'timeout=5');

    const seen = upstream.requests[0];
    assert.ok(seen);
    assert.equal(seen.method, 'POST');
    assert.equal(seen.url, '/api/push?debug=1');
    assert.equal(seen.headers.host, new URL(upstream.url).host);
    assert.equal(seen.headers['x-end-to-end'], 'keep me');
    assert.equal(seen.headers['user-agent'], 'GitHubCopilotChat/0.30');
    for (const dropped of ['x-hop-request', 'proxy-authorization', 'te', 'authorization']) {
      assert.equal(seen.headers[dropped], undefined, `${dropped} must not reach the upstream`);
    }
    // Unknown fields survive untouched.
    assert.deepEqual(JSON.parse(seen.body), { model: 'm', messages: [{ role: 'user', content: 'hi', copilot_cache_control: { type: 'ephemeral' } }] });
  });

  it('answers GET / and HEAD / itself, as Ollama does', async () => {
    const { upstream, bridge } = await pair((_req, res) => res.end('{}'));
    const get = await fetch(`${bridge.url}/`);
    assert.equal(get.status, 200);
    assert.equal(await get.text(), 'Ollama is running');
    const head = await fetch(`${bridge.url}/`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(upstream.requests.length, 0);
  });

  it('answers 413 in each surface’s shape when the body is over the limit, without calling the upstream', async () => {
    const file = configFile('server:\n  body_limit_mb: 0.001\n');
    const { upstream, bridge } = await pair((_req, res) => res.end('{}'), { file });
    const big = JSON.stringify({ model: 'm', prompt: 'x'.repeat(4096) });
    const native = await fetch(`${bridge.url}/api/generate`, { method: 'POST', body: big, headers: { 'content-type': 'application/json' } });
    assert.equal(native.status, 413);
    assert.deepEqual(await native.json(), { error: 'request body is larger than 0.001 MiB (server.body_limit_mb)' });
    const openai = await fetch(`${bridge.url}/v1/chat/completions`, { method: 'POST', body: big, headers: { 'content-type': 'application/json' } });
    assert.equal(openai.status, 413);
    assert.deepEqual(await openai.json(), {
      error: { message: 'request body is larger than 0.001 MiB (server.body_limit_mb)', type: 'invalid_request_error', param: null, code: 'request_too_large' },
    });
    assert.equal(upstream.requests.length, 0);
  });

  it('answers 400 in each surface’s shape for a body that is not JSON', async () => {
    const { upstream, bridge } = await pair((_req, res) => res.end('{}'));
    const native = await fetch(`${bridge.url}/api/chat`, { method: 'POST', body: '{"model": ', headers: { 'content-type': 'application/json' } });
    assert.equal(native.status, 400);
    const nativeBody = (await native.json()) as { error: string };
    assert.deepEqual(Object.keys(nativeBody), ['error']);
    assert.match(nativeBody.error, /^request body is not valid JSON: /);
    const openai = await fetch(`${bridge.url}/v1/chat/completions`, { method: 'POST', body: 'not json', headers: { 'content-type': 'text/plain' } });
    assert.equal(openai.status, 400);
    const openaiBody = (await openai.json()) as { error: { message: string; type: string; param: null; code: string } };
    assert.equal(openaiBody.error.type, 'invalid_request_error');
    assert.equal(openaiBody.error.code, 'invalid_json');
    assert.equal(openaiBody.error.param, null);
    assert.match(openaiBody.error.message, /^request body is not valid JSON: /);
    assert.equal(upstream.requests.length, 0);
  });

  it('answers 503 with a JSON error when the upstream is known to be down', async () => {
    const port = await freePort();
    const bridge = await startTestBridge({ env: { OLLAMA_HOST: `127.0.0.1:${port}` } });
    cleanups.push(() => bridge.stop(100));
    const refused = `backend local is unreachable (ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:${port})`;
    const reason = `no backend can take traffic: local down (${refused})`;
    const chat = await fetch(`${bridge.url}/api/chat`, { method: 'POST', body: '{"model":"m","messages":[]}' });
    assert.equal(chat.status, 503);
    assert.deepEqual(await chat.json(), { error: `no backend can serve this request (model 'm' requested; ${reason})` });
    const openai = await fetch(`${bridge.url}/v1/chat/completions`, { method: 'POST', body: '{"model":"m","messages":[{"role":"user","content":"hi"}]}' });
    assert.equal(openai.status, 503);
    assert.deepEqual(await openai.json(), {
      error: { message: `no backend can serve this request (model 'm' requested; ${reason})`, type: 'api_error', param: null, code: 'no_backend_available' },
    });
    const tags = await fetch(`${bridge.url}/api/tags`);
    assert.equal(tags.status, 502);
    assert.deepEqual(await tags.json(), { error: `no backend is reachable: ${refused}` });
    const models = await fetch(`${bridge.url}/v1/models`);
    assert.equal(models.status, 502);
    assert.deepEqual(await models.json(), { error: { message: `no backend is reachable: ${refused}`, type: 'api_error', param: null, code: 'upstream_unreachable' } });
  });

  it('reads gzip bodies, refuses other charsets and non-object JSON, and limits chunked bodies too', async () => {
    const file = configFile('server:\n  body_limit_mb: 0.001\n');
    const { upstream, bridge } = await pair((_req, res) => res.end('{}'), { file });
    const small = JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hi' }] });
    const gzipped = await fetch(`${bridge.url}/api/push`, { method: 'POST', body: gzipSync(small), headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' } });
    assert.equal(gzipped.status, 200);
    assert.deepEqual(JSON.parse(upstream.requests.at(-1)?.body ?? '{}'), JSON.parse(small));

    const latin1 = await fetch(`${bridge.url}/api/push`, { method: 'POST', body: small, headers: { 'content-type': 'application/json; charset=latin1' } });
    assert.equal(latin1.status, 415);
    assert.deepEqual(await latin1.json(), { error: 'unsupported charset "latin1"' });
    const scalar = await fetch(`${bridge.url}/v1/chat/completions`, { method: 'POST', body: '"just a string"' });
    assert.equal(scalar.status, 400);
    assert.match(((await scalar.json()) as { error: { message: string } }).error.message, /^request body is not valid JSON: /);

    // No content-length: the limit is enforced while reading.
    const chunked = await fetch(`${bridge.url}/api/generate`, {
      method: 'POST',
      body: new ReadableStream({
        start(controller) {
          for (let i = 0; i < 8; i++) controller.enqueue(new TextEncoder().encode('x'.repeat(512)));
          controller.close();
        },
      }),
      duplex: 'half',
    } as RequestInit);
    assert.equal(chunked.status, 413);
    assert.equal(upstream.requests.length, 1);
  });

  it('survives a client that hangs up in the middle of its body', async () => {
    const { upstream, bridge } = await pair((_req, res) => res.end('{}'));
    await new Promise<void>((resolve) => {
      const req = httpRequest(`${bridge.url}/api/chat`, { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': '1000' } });
      req.on('error', () => resolve());
      req.write('{"model": "m", "mess');
      setTimeout(() => {
        req.destroy();
        resolve();
      }, 50);
    });
    const after = await fetch(`${bridge.url}/health`);
    assert.equal(after.status, 200);
    assert.equal(upstream.requests.length, 0);
  });

  it('answers 502 with a JSON error when the upstream breaks the connection before answering', async () => {
    const { bridge } = await pair((_req, res) => res.socket?.destroy(), { env: { MAX_RETRIES: '0' } });
    const chat = await fetch(`${bridge.url}/api/chat`, { method: 'POST', body: '{"model":"m","messages":[]}' });
    assert.equal(chat.status, 502);
    assert.deepEqual(await chat.json(), { error: 'backend local is unreachable (UND_ERR_SOCKET: other side closed)' });
  });

  it('answers 504 when the upstream sends nothing within TIMEOUT_SECONDS', async () => {
    const { bridge } = await pair(() => {
      // never answers
    }, { env: { TIMEOUT_SECONDS: '0.3', MAX_RETRIES: '0' } });
    const response = await fetch(`${bridge.url}/api/chat`, { method: 'POST', body: '{"model":"m"}' });
    assert.equal(response.status, 504);
    assert.deepEqual(await response.json(), { error: 'backend local timed out while waiting for the first byte' });
  });

  it('ends an NDJSON stream with an {"error"} line when the upstream breaks mid-way', async () => {
    const { bridge } = await pair((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.write('{"model":"m","created_at":"2024-01-01T00:00:00Z","message":{"role":"assistant","content":"a"},"done":false}\n');
      setTimeout(() => res.socket?.destroy(), 50);
    });
    const response = await fetch(`${bridge.url}/api/chat`, { method: 'POST', body: '{"model":"m"}' });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('content-type'), 'application/x-ndjson');
    const lines = (await readChunks(response)).trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    assert.equal(lines.length, 2);
    assert.equal((lines[0]?.message as { content: string }).content, 'a');
    assert.deepEqual(Object.keys(lines[1] ?? {}), ['error']);
    assert.match(String(lines[1]?.error), /^backend local is unreachable/);
  });

  it('ends an SSE stream with a data: {"error"} event when the upstream stalls past the idle timeout', async () => {
    const file = configFile('routing:\n  thresholds:\n    idle_timeout_seconds: 0.3\n');
    const { bridge } = await pair((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.write('{"model":"m","created_at":"2024-01-01T00:00:00Z","message":{"role":"assistant","content":"a"},"done":false}\n');
    }, { file });
    const response = await fetch(`${bridge.url}/v1/chat/completions`, { method: 'POST', body: '{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}' });
    assert.equal(response.status, 200);
    const events = (await readChunks(response)).split('\n\n').filter(Boolean);
    assert.equal(events.length, 2);
    assert.equal(JSON.parse(events[0]?.replace(/^data: /, '') ?? '').choices[0].delta.content, 'a');
    assert.deepEqual(JSON.parse(events[1]?.replace(/^data: /, '') ?? ''), {
      error: { message: 'backend local timed out while waiting for the next chunk', type: 'api_error', param: null, code: 'upstream_timeout' },
    });
  });

  it('aborts the upstream request as soon as the client disconnects', async () => {
    let upstreamClosedAt = 0;
    const { bridge } = await pair((req, res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      const timer = setInterval(() => res.write('{"response":"x","done":false}\n'), 10);
      res.on('close', () => {
        clearInterval(timer);
        upstreamClosedAt = performance.now();
      });
      req.resume();
    });
    const controller = new AbortController();
    const response = await fetch(`${bridge.url}/api/generate`, { method: 'POST', body: '{"model":"m"}', signal: controller.signal });
    const reader = response.body?.getReader();
    assert.ok(reader);
    await reader.read();
    const abortedAt = performance.now();
    controller.abort();
    await until(() => (upstreamClosedAt > 0 ? true : undefined), 'the upstream connection to close', 1000);
    assert.ok(upstreamClosedAt - abortedAt < 1000, `upstream closed ${Math.round(upstreamClosedAt - abortedAt)} ms after the client left`);
  });

  it('applies back-pressure: a client that stops reading pauses the upstream', async () => {
    const total = 64 * 1024 * 1024;
    let written = 0;
    const { bridge } = await pair(async (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(total) });
      const chunk = Buffer.alloc(64 * 1024, 120);
      while (written < total) {
        written += chunk.length;
        if (!res.write(chunk)) await new Promise((resolve) => res.once('drain', resolve));
      }
      res.end();
    });
    const received = await new Promise<{ whilePaused: number; bytes: number }>((resolve, reject) => {
      const req = httpRequest(`${bridge.url}/api/blobs/sha256:abc`, { method: 'GET' }, (res) => {
        res.pause();
        setTimeout(() => {
          const whilePaused = written;
          let bytes = 0;
          res.on('data', (chunk: Buffer) => (bytes += chunk.length));
          res.on('end', () => resolve({ whilePaused, bytes }));
          res.resume();
        }, 500);
      });
      req.on('error', reject);
      req.end();
    });
    assert.ok(received.whilePaused < total / 2, `upstream wrote ${received.whilePaused} bytes while the client read nothing`);
    assert.equal(received.bytes, total);
  });

  it('applies back-pressure through a translated stream too', async () => {
    const line = `${JSON.stringify({ model: 'm', created_at: '2024-01-01T00:00:00Z', response: 'y'.repeat(1000), done: false })}\n`;
    const lines = 40_000;
    let written = 0;
    const { bridge } = await pair(async (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      for (let i = 0; i < lines; i++) {
        written += 1;
        if (!res.write(line)) await new Promise((resolve) => res.once('drain', resolve));
      }
      res.end(`${JSON.stringify({ model: 'm', created_at: '2024-01-01T00:00:00Z', response: '', done: true, done_reason: 'stop' })}\n`);
    });
    const received = await new Promise<{ whilePaused: number; events: number }>((resolve, reject) => {
      const req = httpRequest(`${bridge.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
        res.pause();
        setTimeout(() => {
          const whilePaused = written;
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => (text += chunk));
          res.on('end', () => resolve({ whilePaused, events: text.split('\n\n').filter((e) => e.includes('"y')).length }));
          res.resume();
        }, 500);
      });
      req.on('error', reject);
      req.end(JSON.stringify({ model: 'm', prompt: 'x', stream: true }));
    });
    assert.ok(received.whilePaused < lines / 2, `upstream wrote ${received.whilePaused} of ${lines} lines while the client read nothing`);
    assert.equal(received.events, lines);
  });

  it('answers unknown paths with 404 in the surface’s shape', async () => {
    const { upstream, bridge } = await pair((_req, res) => res.end('{}'));
    const native = await fetch(`${bridge.url}/nothing/here`);
    assert.equal(native.status, 404);
    assert.deepEqual(await native.json(), { error: 'no such endpoint: GET /nothing/here' });
    assert.equal(upstream.requests.length, 0);
  });
});

describe('request guards', () => {
  it('refuses a Host header that is not a loopback name (DNS rebinding)', async () => {
    const { upstream, bridge } = await pair((_req, res) => res.end('{}'));
    const status = await new Promise<{ code: number; body: string }>((resolve, reject) => {
      const req = httpRequest(`${bridge.url}/api/tags`, { headers: { host: 'attacker.example:5000' } }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ code: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(status.code, 403);
    assert.deepEqual(JSON.parse(status.body), { error: 'host "attacker.example" is not allowed; add it to server.allowed_hosts' });
    assert.equal(upstream.requests.length, 0);
  });

  it('refuses foreign browser origins, allows editor webviews and answers their preflight', async () => {
    const { upstream, bridge } = await pair((_req, res) => res.end('{"models":[]}'));
    const foreign = await fetch(`${bridge.url}/api/push`, { method: 'POST', body: '{}', headers: { origin: 'https://evil.example' } });
    assert.equal(foreign.status, 403);
    const webview = await fetch(`${bridge.url}/api/push`, { method: 'POST', body: '{}', headers: { origin: 'vscode-webview://abc' } });
    assert.equal(webview.status, 200);
    assert.equal(webview.headers.get('access-control-allow-origin'), 'vscode-webview://abc');
    const preflight = await fetch(`${bridge.url}/v1/chat/completions`, {
      method: 'OPTIONS',
      headers: { origin: 'http://localhost:3000', 'access-control-request-headers': 'content-type' },
    });
    assert.equal(preflight.status, 204);
    assert.equal(preflight.headers.get('access-control-allow-headers'), 'content-type');
    assert.equal(upstream.requests.length, 1);
  });

  it('requires one of the API keys when keys are configured', async () => {
    const key = 'team-key-0123456789';
    const { upstream, bridge } = await pair((_req, res) => res.end('{"models":[]}'), { env: { BRIDGE_API_KEYS: key } });
    const none = await fetch(`${bridge.url}/v1/models`);
    assert.equal(none.status, 401);
    assert.deepEqual(await none.json(), {
      error: { message: 'a valid API key or token is required (Authorization: Bearer <key>, x-api-key or api-key)', type: 'authentication_error', param: null, code: 'invalid_api_key' },
    });
    const wrong = await fetch(`${bridge.url}/api/tokenize`, { method: 'POST', body: '{}', headers: { authorization: 'Bearer team-key-0123456780' } });
    assert.equal(wrong.status, 401);
    const right = await fetch(`${bridge.url}/api/tokenize`, { method: 'POST', body: '{}', headers: { authorization: `Bearer ${key}` } });
    assert.equal(right.status, 200);
    // A plain key is a user: model management (push, pull, delete) needs an admin.
    const push = await fetch(`${bridge.url}/api/push`, { method: 'POST', body: '{}', headers: { authorization: `Bearer ${key}` } });
    assert.equal(push.status, 403);
    assert.equal(upstream.requests.length, 1);
    assert.equal(upstream.requests[0]?.headers.authorization, undefined, 'the bridge key must not travel upstream');
  });
});

describe('logging', () => {
  it('logs each request with method, path, status and backend, and never the prompt', async () => {
    const memory = memoryLogger();
    const { bridge } = await pair((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"response":"THE-ANSWER-TEXT"}');
    }, { logger: memory.logger });
    const response = await fetch(`${bridge.url}/api/generate`, {
      method: 'POST',
      body: JSON.stringify({ model: 'm', prompt: 'SECRET-PROMPT-TEXT' }),
    });
    await response.text();
    // The request line is written when the server side of the connection closes.
    const entry = await until(() => memory.lines().find((line) => line.msg === 'request'), 'the request log line');
    const lines = memory.lines();
    assert.equal(entry.method, 'POST');
    assert.equal(entry.path, '/api/generate');
    assert.equal(entry.status, 200);
    assert.equal(entry.backend, 'local');
    const all = JSON.stringify(lines);
    assert.doesNotMatch(all, /SECRET-PROMPT-TEXT/);
    assert.doesNotMatch(all, /THE-ANSWER-TEXT/);
  });
});
