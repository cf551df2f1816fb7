import assert from 'node:assert/strict';
import { createServer, request as httpRequest, type ServerResponse } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { once } from 'node:events';
import { constants, createGzip, gunzipSync, gzipSync } from 'node:zlib';
import { after, describe, it } from 'node:test';
import type { BridgeHandle } from '../../src/bridge.js';
import { freePort } from '../support/ollama-rig.js';
import { memoryLogger, startStandIn, startTestBridge, type StandIn, type TestBridgeOptions } from '../support/bridge.js';
import { configFile } from '../support/temp.js';
import { until } from '../support/wait.js';

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** A bridge over a stand-in Ollama answering with `handler`, listing `models`. */
async function pair(
  handler: Parameters<typeof startStandIn>[0],
  { models = [], ...options }: TestBridgeOptions & { models?: string[] } = {},
): Promise<{ upstream: StandIn; bridge: BridgeHandle }> {
  const upstream = await startStandIn(handler, models);
  const bridge = await startTestBridge({ ...options, env: { OLLAMA_HOST: upstream.url, ...options.env } });
  cleanups.push(
    () => bridge.stop(100),
    () => upstream.close(),
  );
  return { upstream, bridge };
}

/** A bridge whose Ollama lists `models` and answers every other request 200 with the JSON text last given to `answer`. */
async function answering(models: string[]): Promise<{ bridge: BridgeHandle; answer: (text: string) => void }> {
  let text = '';
  const { bridge } = await pair(
    (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(text);
    },
    { models },
  );
  return { bridge, answer: (next) => (text = next) };
}

/** A bridge over an Ollama that lists `ps` and `tags` as its loaded and installed models, as they are, and answers chats with "ok". */
async function bridgeOverLists(lists: { ps: unknown[]; tags: unknown[] }): Promise<BridgeHandle> {
  const upstream = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    if (req.url === '/api/ps') res.end(JSON.stringify({ models: lists.ps }));
    else if (req.url === '/api/tags') res.end(JSON.stringify({ models: lists.tags }));
    else res.end(`${JSON.stringify({ model: 'm', created_at: '2025-01-01T00:00:00Z', message: { role: 'assistant', content: 'ok' }, done: true })}\n`);
  });
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise((resolve) => upstream.close(() => resolve())));
  const bridge = await startTestBridge({ env: { OLLAMA_HOST: `127.0.0.1:${(upstream.address() as AddressInfo).port}` } });
  cleanups.push(() => bridge.stop(100));
  return bridge;
}

/** Reads a streamed body and notes when each chunk arrived. */
async function readChunks(response: Response): Promise<string> {
  return await response.text();
}

/** A GET with the path exactly as given (fetch would resolve dot segments itself). */
function rawGet(base: string, rawPath: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const { hostname, port } = new URL(base);
    const req = httpRequest({ hostname, port, path: rawPath, method: 'GET' }, (res) => {
      let body = '';
      res.on('data', (chunk: Buffer) => (body += chunk.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** A request with the path exactly as given (fetch would normalize or refuse it). */
function rawRequest(base: string, method: string, rawPath: string, body?: string): Promise<{ status: number; contentType: string; body: string }> {
  return new Promise((resolve, reject) => {
    const { hostname, port } = new URL(base);
    const req = httpRequest({ hostname, port, path: rawPath, method, headers: body === undefined ? {} : { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.on('data', (chunk: Buffer) => (text += chunk.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type']), body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('malformed requests', () => {
  it('answers 400, not 500, to a percent-encoding that does not decode', async () => {
    const { bridge } = await pair((_req, res) => res.end('{}'));
    const engine = await rawRequest(bridge.url, 'POST', '/v1/engines/%ZZ/completions', '{"prompt":"x"}');
    assert.equal(engine.status, 400);
    assert.equal((JSON.parse(engine.body) as { error: { code: string } }).error.code, 'invalid_url');
    const ui = await rawRequest(bridge.url, 'GET', '/ui/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd');
    assert.equal(ui.status, 400);
  });

  it('refuses JSON nested deeper than 128 levels at the door with 400, on every surface', async () => {
    const { upstream, bridge } = await pair((_req, res) => res.end('{}'));
    const deep = `{"model":"m","input":${'['.repeat(100_000)}${']'.repeat(100_000)}}`;
    for (const route of ['/api/chat', '/api/embed', '/v1/chat/completions', '/v1/embeddings']) {
      const answer = await rawRequest(bridge.url, 'POST', route, deep);
      assert.equal(answer.status, 400, route);
      assert.match(answer.body, /nested deeper than 128 levels/, route);
    }
    // Depth is counted outside strings only.
    const shallow = await rawRequest(bridge.url, 'POST', '/api/embed', JSON.stringify({ model: 'm', input: '['.repeat(1000) }));
    assert.equal(shallow.status, 200);
    assert.equal(upstream.requests.length, 1);
  });

  it('answers an inline completion without "stream" as one JSON document, as OpenAI does', async () => {
    const upstream = await startStandIn(
      (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        res.end(`${JSON.stringify({ model: 'm', created_at: '2025-01-01T00:00:00Z', response: 'sum', done: true, done_reason: 'stop' })}\n`);
      },
      ['m:latest'],
    );
    const bridge = await startTestBridge({ file: configFile('models:\n  simple:\n    name: m\n'), env: { OLLAMA_HOST: upstream.url } });
    cleanups.push(
      () => bridge.stop(100),
      () => upstream.close(),
    );
    const answer = await rawRequest(bridge.url, 'POST', '/v1/engines/copilot-codex/completions', '{"prompt":"x"}');
    assert.equal(answer.status, 200);
    assert.match(answer.contentType, /^application\/json/);
    assert.equal((JSON.parse(answer.body) as { choices: Array<{ text: string }> }).choices[0]?.text, 'sum');
  });
});

describe('embeddings for virtual models', () => {
  it('embeds "auto" and "bridge/<tier>" with the tier\'s model, or models.embedding when set, on all three endpoints', async () => {
    const upstream = await startStandIn(
      (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ model: 'x', embeddings: [[0.5, 0.25]], embedding: [0.5, 0.25], prompt_eval_count: 2 }));
      },
      ['small:latest', 'large:latest', 'embedder:latest'],
    );
    const start = async (yaml: string): Promise<BridgeHandle> => {
      const bridge = await startTestBridge({ file: configFile(yaml), env: { OLLAMA_HOST: upstream.url } });
      cleanups.push(() => bridge.stop(100));
      return bridge;
    };
    cleanups.push(() => upstream.close());
    const sentModels = (): string[] => upstream.requests.map((r) => (JSON.parse(r.body) as { model: string }).model);

    const tiers = await start('models:\n  simple:\n    name: small\n  complex:\n    name: large\n');
    const post = (bridge: BridgeHandle, route: string, body: unknown): Promise<Response> =>
      fetch(`${bridge.url}${route}`, { method: 'POST', body: JSON.stringify(body) });
    assert.equal((await post(tiers, '/api/embed', { model: 'auto', input: 'a' })).status, 200);
    assert.equal((await post(tiers, '/api/embeddings', { model: 'bridge/complex', prompt: 'a' })).status, 200);
    const openai = await post(tiers, '/v1/embeddings', { model: 'bridge/simple', input: 'a', encoding_format: 'float' });
    assert.equal(openai.status, 200);
    const answer = (await openai.json()) as { model: string; data: Array<{ embedding: number[] }> };
    assert.equal(answer.model, 'bridge/simple');
    assert.deepEqual(answer.data[0]?.embedding, [0.5, 0.25]);
    assert.deepEqual(sentModels(), ['small', 'large', 'small']);

    const dedicated = await start('models:\n  simple:\n    name: small\n  embedding:\n    name: embedder\n');
    assert.equal((await post(dedicated, '/api/embed', { model: 'auto', input: 'a' })).status, 200);
    assert.equal((await post(dedicated, '/v1/embeddings', { model: 'bridge/complex', input: 'a' })).status, 200);
    // A real model name is used as it is.
    assert.equal((await post(dedicated, '/api/embed', { model: 'small', input: 'a' })).status, 200);
    assert.deepEqual(sentModels().slice(3), ['embedder', 'embedder', 'small']);
  });

  it('answers /v1/embeddings with 502 naming the backend when Ollama answers 200 without embeddings', async () => {
    const { bridge, answer } = await answering(['m:latest']);
    for (const sent of [
      '',
      '<html>proxy error</html>',
      'null',
      '{"error":"runner crashed"}',
      '{"embeddings":"x"}',
      '{"embeddings":[[0.5,"a"]]}',
      '{"embeddings":[null]}',
    ]) {
      answer(sent);
      const embedded = await fetch(`${bridge.url}/v1/embeddings`, { method: 'POST', body: JSON.stringify({ model: 'm', input: 'a' }) });
      assert.equal(embedded.status, 502, sent);
      assert.deepEqual(
        await embedded.json(),
        { error: { message: 'local sent an embedding answer without embeddings', type: 'api_error', param: null, code: 'upstream_unreachable' } },
        sent,
      );
    }
  });
});

describe('/v1/embeddings', () => {
  it('answers 502 naming the backend when Ollama sends embeddings that do not match the inputs (another count, vectors of different widths)', async () => {
    const { bridge, answer } = await answering(['m:latest']);
    const cases: Array<[unknown, string, string]> = [
      [['a', 'b'], '{"embeddings":[[0.5,0.25]]}', 'local sent 1 embeddings for 2 inputs'],
      ['a', '{"embeddings":[]}', 'local sent 0 embeddings for 1 inputs'],
      ['a', '{"embeddings":[[0.5],[0.25]]}', 'local sent 2 embeddings for 1 inputs'],
      [['a', 'b'], '{"embeddings":[[0.5,0.25],[0.5]]}', 'local sent embeddings of different widths or none'],
      ['a', '{"embeddings":[[]]}', 'local sent embeddings of different widths or none'],
    ];
    for (const [input, sent, message] of cases) {
      answer(sent);
      const embedded = await fetch(`${bridge.url}/v1/embeddings`, { method: 'POST', body: JSON.stringify({ model: 'm', input }) });
      assert.deepEqual(
        { status: embedded.status, body: await embedded.json() },
        { status: 502, body: { error: { message, type: 'api_error', param: null, code: 'upstream_unreachable' } } },
        sent,
      );
    }
  });

  it('says what was wrong with an embedding answer too long to take, not that the backend is unreachable', async () => {
    const file = configFile('routing:\n  thresholds:\n    max_line_mb: 0.01\n');
    const { bridge } = await pair(
      (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        // Well past max_line_mb and the room for one vector.
        res.end(`{"embeddings":[[${'0.5,'.repeat(100_000)}0.5]]}`);
      },
      { file, models: ['m:latest'] },
    );
    const embedded = await fetch(`${bridge.url}/v1/embeddings`, { method: 'POST', body: JSON.stringify({ model: 'm', input: 'a' }) });
    assert.equal(embedded.status, 502);
    const { error } = (await embedded.json()) as { error: { message: string; code: string } };
    assert.match(error.message, /^local sent a line longer than [\d.]+ (KiB|MiB|bytes) \(routing\.thresholds\.max_line_mb\)$/);
    assert.equal(error.code, 'upstream_unreachable');
  });

  it('answers vectors of the dimensions asked for, cut and scaled to unit length, also from an Ollama that ignores dimensions (0.11)', async () => {
    const { bridge, answer } = await answering(['m:latest']);
    answer('{"embeddings":[[3,4,12],[0,0,5]]}');
    const embed = async (body: object): Promise<Response> =>
      fetch(`${bridge.url}/v1/embeddings`, { method: 'POST', body: JSON.stringify({ model: 'm', input: ['a', 'b'], ...body }) });
    const vectors = async (response: Response): Promise<unknown[]> =>
      ((await response.json()) as { data: Array<{ embedding: unknown }> }).data.map((d) => d.embedding);
    assert.deepEqual(await vectors(await embed({ dimensions: 2 })), [
      [0.6, 0.8],
      [0, 0],
    ]);
    assert.deepEqual(await vectors(await embed({ dimensions: 3 })), [
      [3, 4, 12],
      [0, 0, 5],
    ]);
    const base64 = await vectors(await embed({ dimensions: 2, encoding_format: 'base64' }));
    assert.deepEqual(
      base64.map((text) => [...new Float32Array(new Uint8Array(Buffer.from(String(text), 'base64')).buffer)]),
      [
        [Math.fround(0.6), Math.fround(0.8)],
        [0, 0],
      ],
    );
    const tooMany = await embed({ dimensions: 4 });
    assert.equal(tooMany.status, 400);
    assert.deepEqual(await tooMany.json(), {
      error: {
        message: 'dimensions: m has 3 dimensions, fewer than the 4 asked for',
        type: 'invalid_request_error',
        param: 'dimensions',
        code: 'invalid_request',
      },
    });
  });

  it('relays the answer to a batch of texts however many vectors it carries, up to OpenAI’s 2048 texts; more are a 400', async () => {
    const width = 8192;
    const vector = Array.from({ length: width }, (_, i) => -0.012345678 + i * 1e-9);
    const texts = 8;
    const { upstream, bridge } = await pair((_req, res) => res.end(JSON.stringify({ model: 'm', embeddings: Array.from({ length: texts }, () => vector) })), {
      models: ['m:latest'],
      // An answer of about 1 MB: twice this, as a batch from a wide model is many times the default.
      file: configFile('routing:\n  thresholds:\n    max_line_mb: 0.5\n'),
    });
    const input = Array.from({ length: texts }, (_, i) => `text ${i}`);
    const embedded = await fetch(`${bridge.url}/v1/embeddings`, { method: 'POST', body: JSON.stringify({ model: 'm', input }) });
    assert.equal(embedded.status, 200, await embedded.clone().text());
    const { data } = (await embedded.json()) as { data: Array<{ embedding: number[] }> };
    assert.deepEqual(
      data.map((d) => d.embedding.length),
      input.map(() => width),
    );

    const tooMany = await fetch(`${bridge.url}/v1/embeddings`, {
      method: 'POST',
      body: JSON.stringify({ model: 'm', input: Array.from({ length: 2049 }, () => 'x') }),
    });
    assert.equal(tooMany.status, 400);
    assert.equal(((await tooMany.json()) as { error: { param: string } }).error.param, 'input');
    assert.equal(upstream.requests.length, 1);
  });

  it('refuses an empty input text with 400 in OpenAI’s shape, as OpenAI does, without asking Ollama (which embeds it as nothing)', async () => {
    const { upstream, bridge } = await pair((_req, res) => res.end('{"embeddings":[]}'), { models: ['m:latest'] });
    for (const [input, param] of [
      ['', 'input'],
      [['a', ''], 'input.1'],
    ]) {
      const refused = await fetch(`${bridge.url}/v1/embeddings`, { method: 'POST', body: JSON.stringify({ model: 'm', input }) });
      assert.equal(refused.status, 400, JSON.stringify(input));
      assert.deepEqual(await refused.json(), {
        error: { message: `${param}: must not be an empty text`, type: 'invalid_request_error', param, code: 'invalid_request' },
      });
    }
    assert.equal(upstream.requests.length, 0);
  });
});

describe('model lists', () => {
  it('does not ask every backend for its models again on each request for a name none has', async () => {
    let listings = 0;
    const upstream = createServer((req, res) => {
      if (req.url === '/api/tags') listings += 1;
      res.writeHead(200, { 'content-type': req.url === '/api/generate' ? 'application/x-ndjson' : 'application/json' });
      if (req.url === '/api/tags')
        res.end(JSON.stringify({ models: [{ name: 'm:latest', model: 'm:latest', modified_at: '2025-01-01T00:00:00Z', size: 1, digest: 'd', details: {} }] }));
      else if (req.url === '/api/generate')
        res.end(`${JSON.stringify({ model: 'm', created_at: '2025-01-01T00:00:00Z', response: 'x', done: true, done_reason: 'stop' })}\n`);
      else res.end('{"models":[]}');
    });
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((resolve) => upstream.close(() => resolve())));
    const { bridge } = await pair(() => undefined, {
      env: { OLLAMA_HOST: `127.0.0.1:${(upstream.address() as AddressInfo).port}` },
      file: configFile('models:\n  simple:\n    name: m\n'),
    });
    // Copilot's default engine is no installed model: each request is routed like "auto".
    await (await fetch(`${bridge.url}/v1/engines/copilot-codex/completions`, { method: 'POST', body: JSON.stringify({ prompt: 'x', stream: false }) })).text();
    const before = listings;
    for (let i = 0; i < 20; i++) {
      const response = await fetch(`${bridge.url}/v1/engines/copilot-codex/completions`, {
        method: 'POST',
        body: JSON.stringify({ prompt: 'x', stream: false }),
      });
      assert.equal(response.status, 200);
      await response.text();
    }
    // At most the background refresh of a list older than 5 s, not one round per request.
    assert.ok(listings - before <= 1, `20 requests cost ${listings - before} model lists`);
  });

  it('starts and serves when /api/ps lists entries that are not models (null, a number, a name that is not text)', async () => {
    const entry = { name: 'm:latest', model: 'm:latest', size: 1, size_vram: 1, digest: 'd', details: {}, expires_at: '2030-01-01T00:00:00Z' };
    // The first health round (GET /api/ps) runs while the bridge starts.
    const bridge = await bridgeOverLists({ ps: [null, 5, { name: 5 }, entry], tags: [entry] });
    const ps = await fetch(`${bridge.url}/api/ps`);
    assert.equal(ps.status, 200);
    assert.deepEqual(
      ((await ps.json()) as { models: Array<{ name: string }> }).models.map((m) => m.name),
      ['m:latest'],
    );
    const chat = await fetch(`${bridge.url}/api/chat`, {
      method: 'POST',
      body: JSON.stringify({ model: 'm', stream: false, messages: [{ role: 'user', content: 'x' }] }),
    });
    assert.equal(chat.status, 200);
  });

  it('lists and routes to the models of an /api/tags answer that also has entries that are not models', async () => {
    const entry = { name: 'm:latest', model: 'm:latest', modified_at: '2025-01-01T00:00:00Z', size: 1, digest: 'd', details: {} };
    const bridge = await bridgeOverLists({ ps: [], tags: [null, 5, { name: 5 }, { size: 1 }, entry] });
    const tags = await fetch(`${bridge.url}/api/tags`);
    assert.equal(tags.status, 200);
    const names = ((await tags.json()) as { models: Array<{ name: string }> }).models.map((m) => m.name);
    assert.deepEqual(
      names.filter((name) => !name.startsWith('bridge/') && name !== 'auto'),
      ['m:latest'],
    );
    const chat = await fetch(`${bridge.url}/api/chat`, {
      method: 'POST',
      body: JSON.stringify({ model: 'm', stream: false, messages: [{ role: 'user', content: 'x' }] }),
    });
    assert.equal(chat.status, 200);
  });
});

describe('pass-through proxy', () => {
  it("relays only paths that are exactly one of Ollama's: dot segments, also percent-encoded, answer 404 and reach nothing", async () => {
    const { upstream, bridge } = await pair((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"ok":true}');
    });
    for (const escape of ['/api/%2e%2e/x', '/api/%2E%2E/%2e%2e/etc/passwd', '/api/../x', '/api/.%2e/x?y=1', '/api/tokenize/%2e%2e/detokenize?x=1']) {
      const refused = await rawGet(bridge.url, escape);
      assert.equal(refused.status, 404, escape);
      assert.match(refused.body, /no such endpoint/);
    }
    for (const escape of ['/api/blobs/%2e%2e', '/api/blobs/..', '/api/x/../pull']) {
      assert.equal((await rawRequest(bridge.url, 'POST', escape, '{}')).status, 404, escape);
    }
    assert.equal(upstream.requests.length, 0);
  });
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

  it('sends none of the credentials a client may carry upstream, wherever its kind of client puts them', async () => {
    const { upstream, bridge } = await pair((_req, res) => res.end('{}'));
    const credentials = { authorization: 'Bearer a', 'x-api-key': 'b', 'api-key': 'c', 'x-bridge-token': 'd', cookie: 'e=f' };
    await (await fetch(`${bridge.url}/api/pull`, { method: 'POST', headers: credentials, body: '{"model":"m","stream":false}' })).text();
    const seen = upstream.requests[0];
    assert.ok(seen);
    for (const name of Object.keys(credentials)) assert.equal(seen.headers[name], undefined, `${name} must not reach the upstream`);
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
    const loaded = await fetch(`${bridge.url}/api/ps`);
    assert.equal(loaded.status, 502);
    assert.deepEqual(await loaded.json(), { error: `no backend is reachable: ${refused}` });
    const models = await fetch(`${bridge.url}/v1/models`);
    assert.equal(models.status, 502);
    assert.deepEqual(await models.json(), {
      error: { message: `no backend is reachable: ${refused}`, type: 'api_error', param: null, code: 'upstream_unreachable' },
    });
  });

  it('reads gzip bodies, refuses other charsets and non-object JSON, and limits chunked bodies too', async () => {
    const file = configFile('server:\n  body_limit_mb: 0.001\n');
    const { upstream, bridge } = await pair((_req, res) => res.end('{}'), { file });
    const small = JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hi' }] });
    const gzipped = await fetch(`${bridge.url}/api/push`, {
      method: 'POST',
      body: gzipSync(small),
      headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
    });
    assert.equal(gzipped.status, 200);
    assert.deepEqual(JSON.parse(upstream.requests.at(-1)?.body ?? '{}'), JSON.parse(small));
    // Sent on as the plain JSON it was read as: a gzip label on it would make the upstream decode it again.
    assert.equal(upstream.requests.at(-1)?.headers['content-encoding'], undefined);

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
    const { bridge } = await pair(
      () => {
        // never answers
      },
      { env: { TIMEOUT_SECONDS: '0.3', MAX_RETRIES: '0' } },
    );
    const response = await fetch(`${bridge.url}/api/chat`, { method: 'POST', body: '{"model":"m"}' });
    assert.equal(response.status, 504);
    assert.deepEqual(await response.json(), { error: 'backend local timed out while waiting for the first byte' });
  });

  it('waits on a pull, push or create asked without streaming for as long as Ollama works on it, not for TIMEOUT_SECONDS', async () => {
    const { bridge } = await pair(
      (_req, res) => {
        // Without streaming, Ollama answers once the whole model is pulled, pushed or quantized: here a second after being asked.
        setTimeout(() => {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end('{"status":"success"}');
        }, 1000);
      },
      { env: { TIMEOUT_SECONDS: '0.2', MAX_RETRIES: '0' } },
    );
    const answers = await Promise.all(
      ['/api/pull', '/api/push', '/api/create'].map(async (path) => {
        const response = await fetch(`${bridge.url}${path}`, { method: 'POST', body: '{"model":"m:7b","stream":false}' });
        return [path, response.status, await response.json()];
      }),
    );
    assert.deepEqual(answers, [
      ['/api/pull', 200, { status: 'success' }],
      ['/api/push', 200, { status: 'success' }],
      ['/api/create', 200, { status: 'success' }],
    ]);
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
    const lines = (await readChunks(response))
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    assert.equal(lines.length, 2);
    assert.equal((lines[0]?.message as { content: string }).content, 'a');
    assert.deepEqual(Object.keys(lines[1] ?? {}), ['error']);
    assert.match(String(lines[1]?.error), /^backend local is unreachable/);
  });

  /** The lines a client of /api/pull reads (each parsed) when the upstream writes `written` of its answer, then breaks. */
  const pullBrokenAfter = async (written: string): Promise<Array<Record<string, unknown>>> => {
    const { bridge } = await pair((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.write(written, () => res.socket?.destroy());
    });
    const response = await fetch(`${bridge.url}/api/pull`, { method: 'POST', body: '{"model":"m:7b"}' });
    assert.equal(response.status, 200);
    return (await response.text())
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  };

  it('ends a relayed NDJSON stream (a model pull) with an {"error"} line when the upstream breaks mid-way', async () => {
    const lines = await pullBrokenAfter('{"status":"pulling manifest"}\n');
    assert.deepEqual(lines[0], { status: 'pulling manifest' });
    assert.equal(lines.length, 2, 'a pull that broke must not end like one that finished');
    assert.match(String(lines[1]?.error), /^backend local is unreachable/);
  });

  it('relays NDJSON in whole lines: a pull that breaks mid-line ends with lines that all parse, the {"error"} line last', async () => {
    // ollama's Go client parses each line in turn and stops at the first that does not parse, before any error line.
    const lines = await pullBrokenAfter('{"status":"pulling manifest"}\n{"status":"pulling 6a0746a1ec1a","dig');
    assert.equal(lines.length, 2);
    assert.deepEqual(lines[0], { status: 'pulling manifest' });
    assert.match(String(lines[1]?.error), /^backend local is unreachable/);
  });

  it('relays a compressed NDJSON stream as it comes: its bytes are not lines', { timeout: 5000 }, async () => {
    let finish = (): void => undefined;
    const { bridge } = await pair((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson', 'content-encoding': 'gzip' });
      const gzip = createGzip();
      gzip.pipe(res);
      gzip.write('{"status":"pulling manifest"}\n');
      // Sent now, though no newline byte is among the compressed ones; the stream ends once the client has it.
      gzip.flush(constants.Z_SYNC_FLUSH);
      finish = () => gzip.end('{"status":"success"}\n');
    });
    const text = await new Promise<string>((resolve, reject) => {
      const req = httpRequest(`${bridge.url}/api/pull`, { method: 'POST' }, (res) => {
        const chunks: Buffer[] = [];
        res.once('data', () => finish());
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve(gunzipSync(Buffer.concat(chunks)).toString()));
      });
      req.on('error', reject);
      req.end('{"model":"m:7b"}');
    });
    assert.equal(text, '{"status":"pulling manifest"}\n{"status":"success"}\n');
  });

  it('cuts a relayed compressed stream that breaks mid-way: an error line in plain text would not decode', async () => {
    const { bridge } = await pair((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson', 'content-encoding': 'gzip' });
      res.write(gzipSync('{"status":"pulling manifest"}\n').subarray(0, 20), () => res.socket?.destroy());
    });
    const outcome = await new Promise<string>((resolve, reject) => {
      const req = httpRequest(`${bridge.url}/api/pull`, { method: 'POST' }, (res) => {
        res.resume();
        res.on('end', () => resolve('ended as if whole'));
        res.on('error', () => resolve('cut'));
      });
      req.on('error', reject);
      req.end('{"model":"m:7b"}');
    });
    assert.equal(outcome, 'cut');
  });

  it('cuts a relayed answer of known length that breaks mid-way, so the client sees it incomplete', async () => {
    const { bridge } = await pair((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' });
      res.write('{"model":"m:7b","embeddings":[[0.1,', () => res.socket?.destroy());
    });
    // Cut at once, not left hanging until some timeout ends the connection.
    const response = await fetch(`${bridge.url}/api/embed`, { method: 'POST', body: '{"model":"m:7b","input":"x"}', signal: AbortSignal.timeout(5000) });
    assert.equal(response.status, 200);
    await assert.rejects(response.text(), /terminated/);
  });

  it('ends an SSE stream with a data: {"error"} event when the upstream stalls past the idle timeout', async () => {
    const file = configFile('routing:\n  thresholds:\n    idle_timeout_seconds: 0.3\n');
    const { bridge } = await pair(
      (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        res.write('{"model":"m","created_at":"2024-01-01T00:00:00Z","message":{"role":"assistant","content":"a"},"done":false}\n');
      },
      { file },
    );
    const response = await fetch(`${bridge.url}/v1/chat/completions`, {
      method: 'POST',
      body: '{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}',
    });
    assert.equal(response.status, 200);
    const events = (await readChunks(response)).split('\n\n').filter(Boolean);
    assert.equal(events.length, 2);
    assert.equal(JSON.parse(events[0]?.replace(/^data: /, '') ?? '').choices[0].delta.content, 'a');
    assert.deepEqual(JSON.parse(events[1]?.replace(/^data: /, '') ?? ''), {
      error: { message: 'backend local timed out while waiting for the next chunk', type: 'api_error', param: null, code: 'upstream_timeout' },
    });
  });

  it('waits out a model pull, create or push that goes quiet past the idle timeout (Ollama converting or hashing): the client decides how long', async () => {
    const file = configFile('routing:\n  thresholds:\n    idle_timeout_seconds: 0.3\n');
    const { bridge } = await pair(
      (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        res.write('{"status":"converting model"}\n');
        // Silent for twice the idle timeout, as a long conversion is.
        setTimeout(() => res.end('{"status":"success"}\n'), 1500);
      },
      { file },
    );
    const response = await fetch(`${bridge.url}/api/create`, { method: 'POST', body: '{"model":"mine","from":"m"}' });
    assert.equal(response.status, 200);
    assert.deepEqual(
      (await response.text())
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as unknown),
      [{ status: 'converting model' }, { status: 'success' }],
    );
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

  for (const [kind, head] of [
    ['', { 'content-type': 'application/octet-stream', 'content-length': String(64 * 1024 * 1024) }],
    [' (NDJSON, relayed in whole lines)', { 'content-type': 'application/x-ndjson' }],
  ] as const)
    it(`applies back-pressure: a client that stops reading pauses the upstream${kind}`, async () => {
      const total = 64 * 1024 * 1024;
      let written = 0;
      const { bridge } = await pair(async (_req, res) => {
        res.writeHead(200, head);
        const chunk = Buffer.alloc(64 * 1024, 120);
        chunk[chunk.length - 1] = 0x0a;
        while (written < total) {
          written += chunk.length;
          if (!res.write(chunk)) await new Promise((resolve) => res.once('drain', resolve));
        }
        res.end();
      });
      const received = await new Promise<{ whilePaused: number; bytes: number }>((resolve, reject) => {
        const req = httpRequest(`${bridge.url}/api/pull`, { method: 'POST' }, (res) => {
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
        req.end('{"model":"m"}');
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

  it('passes on why Ollama could not delete a model it has, rather than saying it is not there', async () => {
    const { upstream, bridge } = await pair(
      (_req, res) => {
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end('{"error":"remove /models/blobs/sha256-abc: permission denied"}');
      },
      { models: ['m:7b'] },
    );
    const deleted = await fetch(`${bridge.url}/api/delete`, { method: 'DELETE', body: '{"model":"m:7b"}' });
    assert.deepEqual(
      upstream.requests.map((r) => `${r.method} ${r.url}`),
      ['DELETE /api/delete'],
    );
    assert.equal(deleted.status, 500);
    assert.deepEqual(await deleted.json(), { error: 'remove /models/blobs/sha256-abc: permission denied' });
  });

  it('answers a delete that one backend found nothing to do for, or did, with why another, which still has the model, could not', async () => {
    const refusals = {
      deleted: (res: ServerResponse) => res.writeHead(200).end(),
      notFound: (res: ServerResponse) => res.writeHead(404, { 'content-type': 'application/json' }).end(`{"error":"model 'm:7b' not found"}`),
      denied: (res: ServerResponse) =>
        res.writeHead(500, { 'content-type': 'application/json' }).end('{"error":"remove /models/blobs/sha256-abc: permission denied"}'),
      down: (res: ServerResponse) => res.socket?.destroy(),
    };
    const cases: Array<[Array<keyof typeof refusals>, number, string]> = [
      [['notFound', 'denied'], 500, 'remove /models/blobs/sha256-abc: permission denied'],
      [['notFound', 'down'], 502, 'backend gpu1 is unreachable (ECONNRESET: socket hang up)'],
      // Deleted on one, still there on the other: not a success, and the answer says where it failed.
      [['deleted', 'denied'], 500, "model 'm:7b' was deleted on gpu0 but not on gpu1: remove /models/blobs/sha256-abc: permission denied"],
      [['down', 'deleted', 'notFound'], 502, "model 'm:7b' was deleted on gpu1 but not on gpu0: backend gpu0 is unreachable (ECONNRESET: socket hang up)"],
    ];
    for (const [answers, status, error] of cases) {
      const upstreams = await Promise.all(answers.map((answer) => startStandIn((_req, res) => refusals[answer](res), ['m:7b'])));
      const bridge = await startTestBridge({ file: configFile(`backends:\n${upstreams.map((u, i) => `  - name: gpu${i}\n    url: ${u.url}\n`).join('')}`) });
      cleanups.push(() => bridge.stop(100), ...upstreams.map((u) => () => u.close()));
      const deleted = await fetch(`${bridge.url}/api/delete`, { method: 'DELETE', body: '{"model":"m:7b"}' });
      assert.deepEqual({ status: deleted.status, body: await deleted.json() }, { status, body: { error } }, answers.join(', '));
    }
  });

  it('answers 502 naming the backend, not 500, when Ollama answers a delete or model details with something that is not a JSON object', async () => {
    const { bridge, answer } = await answering(['m:7b']);
    for (const sent of ['{"status":"success"}\n{"status":"success"}\n', 'null', '[1]', '<html>proxy error</html>']) {
      answer(sent);
      const deleted = await fetch(`${bridge.url}/api/delete`, { method: 'DELETE', body: '{"model":"m:7b"}' });
      assert.equal(deleted.status, 502, sent);
      assert.deepEqual(await deleted.json(), { error: 'local sent an answer that is not a JSON object' }, sent);
      const shown = await fetch(`${bridge.url}/api/show`, { method: 'POST', body: '{"model":"m:7b"}' });
      assert.equal(shown.status, 502, sent);
      assert.deepEqual(await shown.json(), { error: 'local sent an answer that is not a JSON object' }, sent);
    }
  });

  it('drops model-detail fields of the wrong type: generations that read them do not fail, /api/show keeps its shape', async () => {
    const { bridge } = await pair(
      (req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        if (req.url === '/api/show') {
          res.end(JSON.stringify({ capabilities: 5, model_info: 'abc', details: 'x', template: 7 }));
          return;
        }
        const text = req.url === '/api/chat' ? { message: { role: 'assistant', content: 'ok' } } : { response: 'ok' };
        res.end(`${JSON.stringify({ model: 'm', created_at: '2025-01-01T00:00:00Z', ...text, done: true, done_reason: 'stop' })}\n`);
      },
      { models: ['m:latest'] },
    );
    const shown = await fetch(`${bridge.url}/api/show`, { method: 'POST', body: '{"model":"m"}' });
    assert.equal(shown.status, 200);
    assert.deepEqual(await shown.json(), { capabilities: [], model_info: { 'general.basename': 'm' } });
    // Each of these reads the model's capabilities (thinking, fill-in-the-middle) before it goes upstream.
    const generations: Array<[string, unknown]> = [
      ['/api/chat', { model: 'm', stream: false, think: true, messages: [{ role: 'user', content: 'x' }] }],
      ['/v1/messages', { model: 'm', max_tokens: 2048, thinking: { type: 'enabled', budget_tokens: 1024 }, messages: [{ role: 'user', content: 'x' }] }],
      ['/v1/completions', { model: 'm', prompt: 'a', suffix: 'b' }],
      ['/v1/engines/m/completions', { prompt: 'a', suffix: 'b', stream: false }],
    ];
    for (const [path, body] of generations) {
      const answer = await fetch(`${bridge.url}${path}`, { method: 'POST', body: JSON.stringify(body) });
      assert.equal(answer.status, 200, `${path}: ${await answer.clone().text()}`);
    }
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

  it('checks the host a request is for: that of an absolute-form target before the Host header, and refuses two Host headers', async () => {
    const { upstream, bridge } = await pair((_req, res) => res.end('{}'));
    /** The status line and body of one request written as it is. */
    const exchange = async (head: string): Promise<{ status: string; body: string }> => {
      const socket = connect(Number(new URL(bridge.url).port), '127.0.0.1');
      let text = '';
      socket.on('data', (chunk: Buffer) => (text += chunk.toString()));
      socket.write(`${head}Connection: close\r\n\r\n`);
      await once(socket, 'close');
      return { status: text.slice(0, text.indexOf('\r\n')), body: text.slice(text.indexOf('\r\n\r\n') + 4) };
    };
    // RFC 9112 §3.2.2: the host of an absolute-form target is the one the request is for.
    const absolute = await exchange('GET http://attacker.example/api/tags HTTP/1.1\r\nHost: localhost\r\n');
    assert.equal(absolute.status, 'HTTP/1.1 403 Forbidden');
    assert.deepEqual(JSON.parse(absolute.body), { error: 'host "attacker.example" is not allowed; add it to server.allowed_hosts' });
    assert.equal((await exchange('GET http://localhost/health HTTP/1.1\r\nHost: localhost\r\n')).status, 'HTTP/1.1 200 OK');
    // RFC 9112 §3.2: more than one Host is a 400, whichever comes first (node keeps only the first).
    for (const hosts of ['Host: localhost\r\nHost: attacker.example\r\n', 'host: localhost\r\nHOST: localhost\r\n']) {
      const twice = await exchange(`GET /api/tags HTTP/1.1\r\n${hosts}`);
      assert.equal(twice.status, 'HTTP/1.1 400 Bad Request');
      assert.deepEqual(JSON.parse(twice.body), { error: 'the request has more than one Host header' });
    }
    assert.equal(upstream.requests.length, 0);
  });

  it('refuses foreign browser origins, allows editor webviews and answers their preflight', async () => {
    const { upstream, bridge } = await pair((_req, res) => res.end('{"models":[]}'));
    const foreign = await fetch(`${bridge.url}/api/push`, { method: 'POST', body: '{}', headers: { origin: 'https://evil.example' } });
    assert.equal(foreign.status, 403);
    const webview = await fetch(`${bridge.url}/api/push`, { method: 'POST', body: '{}', headers: { origin: 'vscode-webview://abc' } });
    assert.equal(webview.status, 200);
    assert.equal(webview.headers.get('access-control-allow-origin'), 'vscode-webview://abc');
    // A page's script reads only the headers it is told it may: how long to wait, and which request it was.
    const exposed = (webview.headers.get('access-control-expose-headers') ?? '').split(/,\s*/);
    for (const name of ['retry-after', 'x-request-id', 'x-bridge-model', 'x-bridge-route-reason']) assert.ok(exposed.includes(name), name);
    const preflight = await fetch(`${bridge.url}/v1/chat/completions`, {
      method: 'OPTIONS',
      headers: { origin: 'http://localhost:3000', 'access-control-request-headers': 'content-type' },
    });
    assert.equal(preflight.status, 204);
    assert.equal(preflight.headers.get('access-control-allow-headers'), 'content-type');
    assert.equal(upstream.requests.length, 1);
  });

  it('allows pages served under a name of server.allowed_hosts (its dashboard there), and no other name’s', async () => {
    const { bridge } = await pair((_req, res) => res.end('{}'), { file: configFile('server:\n  allowed_hosts: [bridge.lan]\n') });
    for (const origin of ['http://bridge.lan:5000', 'https://BRIDGE.lan']) {
      const own = await fetch(`${bridge.url}/api/version`, { headers: { origin } });
      assert.equal(own.status, 200, origin);
      assert.equal(own.headers.get('access-control-allow-origin'), origin);
    }
    for (const origin of ['http://bridge.lan.evil.example', 'http://evil.example', 'chrome-extension://bridge.lan', 'null']) {
      assert.equal((await fetch(`${bridge.url}/api/version`, { headers: { origin } })).status, 403, origin);
    }
  });

  it('requires one of the API keys when keys are configured', async () => {
    const key = 'team-key-0123456789';
    const { upstream, bridge } = await pair((_req, res) => res.end('{"models":[]}'), { env: { BRIDGE_API_KEYS: key } });
    const none = await fetch(`${bridge.url}/v1/models`);
    assert.equal(none.status, 401);
    assert.deepEqual(await none.json(), {
      error: {
        message: 'a valid API key or token is required (Authorization: Bearer <key>, x-api-key or api-key)',
        type: 'authentication_error',
        param: null,
        code: 'invalid_api_key',
      },
    });
    const embed = JSON.stringify({ model: 'm', input: 'x' });
    const wrong = await fetch(`${bridge.url}/api/embed`, { method: 'POST', body: embed, headers: { authorization: 'Bearer team-key-0123456780' } });
    assert.equal(wrong.status, 401);
    const right = await fetch(`${bridge.url}/api/embed`, { method: 'POST', body: embed, headers: { authorization: `Bearer ${key}` } });
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
    const { bridge } = await pair(
      (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"response":"THE-ANSWER-TEXT"}');
      },
      { logger: memory.logger },
    );
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
