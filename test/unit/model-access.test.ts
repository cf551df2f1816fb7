import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import { addKey } from '../../src/auth/keys.js';
import type { BridgeHandle } from '../../src/bridge.js';
import { nextRecord, startStandIn, startTestBridge, type StandIn } from '../support/bridge.js';
import { configFile } from '../support/temp.js';

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** The message of a 403 model_not_allowed in the surface's error shape. */
async function refusedModel(response: Response, shape: 'ollama' | 'openai'): Promise<string> {
  assert.equal(response.status, 403, `${response.url}: status`);
  const body = (await response.json()) as { error: unknown };
  if (shape === 'ollama') {
    assert.equal(typeof body.error, 'string', `${response.url}: Ollama's {"error": "..."}`);
    return body.error as string;
  }
  const error = body.error as { message: string; type: string; code: string | null };
  assert.equal(error.type, 'permission_error');
  assert.equal(error.code, 'model_not_allowed');
  return error.message;
}

describe('a key limited to some models', () => {
  let upstream: StandIn;
  let bridge: BridgeHandle;
  let user: string;
  let admin: string;
  let unlimitedAdmin: string;
  const send = (method: string, pathname: string, body: unknown, key = user): Promise<Response> =>
    fetch(`${bridge.url}${pathname}`, {
      method,
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });

  before(async () => {
    upstream = await startStandIn(
      (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        const done = { created_at: '2025-01-01T00:00:00Z', response: 'ok', message: { role: 'assistant', content: 'ok' }, done: true, done_reason: 'stop' };
        res.end(JSON.stringify({ model: 'x', embeddings: [[0.5]], embedding: [0.5], prompt_eval_count: 1, ...done }));
      },
      ['allowed:latest', 'm:latest'],
    );
    // Virtual models embed with m:latest, which the key may not use.
    const file = configFile(`backends:\n  - name: gpu0\n    url: ${upstream.url}\nmodels:\n  embedding:\n    name: m:latest\n`);
    user = addKey(file, { name: 'ria', role: 'user', models: ['allowed*'] });
    admin = addKey(file, { name: 'ada', role: 'admin', models: ['allowed*'] });
    unlimitedAdmin = addKey(file, { name: 'root', role: 'admin' });
    bridge = await startTestBridge({ file });
    cleanups.push(
      () => bridge.stop(100),
      () => upstream.close(),
    );
  });

  const EMBEDDINGS = [
    { path: '/api/embed', shape: 'ollama' },
    { path: '/api/embeddings', shape: 'ollama' },
    { path: '/v1/embeddings', shape: 'openai' },
  ] as const;

  it('embeds with an allowed model, and is refused any other on every embeddings endpoint, recorded and never sent upstream', async () => {
    for (const { path } of EMBEDDINGS) {
      assert.equal((await send('POST', path, { model: 'allowed:latest', input: 'x', prompt: 'x' })).status, 200, path);
    }
    const sent = upstream.requests.length;
    for (const { path, shape } of EMBEDDINGS) {
      const recorded = nextRecord(bridge);
      const message = await refusedModel(await send('POST', path, { model: 'm:latest', input: 'x', prompt: 'x' }), shape);
      assert.match(message, /ria may not use the model 'm:latest'/);
      assert.equal((await recorded).status, 403);
    }
    assert.equal(upstream.requests.length, sent);
  });

  it('checks the model a virtual name embeds with, not the name asked for', async () => {
    for (const { path, shape } of EMBEDDINGS) {
      // Refused as the name asked for: the model behind it is not named to this key.
      assert.equal(
        await refusedModel(await send('POST', path, { model: 'auto', input: 'x', prompt: 'x' }), shape),
        "ria may not use the model 'auto': it can be routed to a model outside the allow-list",
      );
    }
  });

  it('checks every key Ollama reads as the model: its JSON decoder ignores case', async () => {
    const before = upstream.requests.length;
    const body = '{"model":"allowed:latest","input":"x","Model":"m:latest"}';
    const response = await fetch(`${bridge.url}/api/embed`, { method: 'POST', headers: { authorization: `Bearer ${user}` }, body });
    assert.match(await refusedModel(response, 'ollama'), /'m:latest'/);
    assert.equal(upstream.requests.length, before);
  });

  it('sends chat and generate upstream with no second key Ollama would read as the model', async () => {
    for (const [pathname, rest] of [
      ['/api/chat', '"messages":[{"role":"user","content":"hi"}]'],
      ['/api/generate', '"prompt":"hi"'],
    ]) {
      const body = `{"model":"allowed:latest","stream":false,${rest},"Model":"m:latest","MODEL":"m:latest"}`;
      const response = await fetch(`${bridge.url}${pathname}`, { method: 'POST', headers: { authorization: `Bearer ${user}` }, body });
      assert.equal(response.status, 200, pathname);
      const sent = JSON.parse(upstream.requests.at(-1)?.body ?? '{}') as Record<string, unknown>;
      assert.deepEqual(
        Object.keys(sent).filter((key) => key.toLowerCase() === 'model'),
        ['model'],
        pathname,
      );
      assert.equal(sent.model, 'allowed:latest');
    }
  });

  it('manages only models it may use: no pull, push, delete, copy or create from or to another one', async () => {
    const before = upstream.requests.length;
    for (const [method, pathname, body] of [
      ['POST', '/api/pull', { model: 'm:latest' }],
      ['POST', '/api/push', { name: 'm:latest' }],
      ['DELETE', '/api/delete', { model: 'm:latest' }],
      ['POST', '/api/copy', { source: 'm:latest', destination: 'allowed-copy' }],
      ['POST', '/api/copy', { source: 'allowed:latest', destination: 'm:latest' }],
      ['POST', '/api/create', { model: 'allowed-new', from: 'm:latest' }],
      ['POST', '/api/create', { model: 'm:latest', from: 'allowed:latest' }],
      ['POST', '/api/create', { model: 'allowed-new', from: 'allowed:latest', FROM: 'm:latest' }],
    ] as const) {
      const message = await refusedModel(await send(method, pathname, body, admin), 'ollama');
      assert.equal(message, "ada may not use the model 'm:latest'", `${pathname} ${JSON.stringify(body)}`);
    }
    assert.equal(upstream.requests.length, before, 'nothing refused reached the upstream');

    for (const [method, pathname, body] of [
      ['POST', '/api/pull', { model: 'allowed:latest' }],
      ['POST', '/api/copy', { source: 'allowed:latest', destination: 'allowed-copy' }],
      ['POST', '/api/create', { model: 'allowed-new', from: 'allowed:latest' }],
      ['DELETE', '/api/delete', { model: 'allowed:latest' }],
    ] as const) {
      assert.equal((await send(method, pathname, body, admin)).status, 200, `${pathname} ${JSON.stringify(body)}`);
    }
    assert.equal((await send('POST', '/api/copy', { source: 'm:latest', destination: 'x' }, unlimitedAdmin)).status, 200, 'no list: any model');
  });
});

describe('model lists and lookups for a key limited to some models', () => {
  // The simple tier runs small:latest, the moderate and complex tiers allowed:7b.
  const INSTALLED = ['allowed:latest', 'allowed:7b', 'small:latest', 'm:latest'];
  const LOADED = ['allowed:7b', 'm:latest'];
  const VIRTUAL = ['auto', 'bridge/simple', 'bridge/moderate', 'bridge/complex'];
  let upstream: StandIn;
  const bridges: Array<{ path: string; bridge: BridgeHandle }> = [];
  /** May use allowed*: the complex and moderate tiers' model, not the simple one's. */
  let ria: string;
  /** May use allowed* and small*: every tier's model. */
  let sam: string;
  /** May use small*: the simple tier's model, not those a request moves up to when it lacks tools or images. */
  let tia: string;
  /** May use "m", written without its tag: the m:latest Ollama lists. */
  let uma: string;
  let unlimited: string;

  before(async () => {
    upstream = await startStandIn(
      (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ capabilities: ['completion'], model_info: { 'general.architecture': 'llama', 'llama.context_length': 8192 }, details: {} }));
      },
      INSTALLED,
      LOADED,
    );
    const file = configFile(
      `backends:\n  - name: gpu0\n    url: ${upstream.url}\nmodels:\n  simple:\n    name: small:latest\n  complex:\n    name: allowed:7b\n`,
    );
    ria = addKey(file, { name: 'ria', role: 'user', models: ['allowed*'] });
    sam = addKey(file, { name: 'sam', role: 'user', models: ['allowed*', 'SMALL:*'] });
    tia = addKey(file, { name: 'tia', role: 'user', models: ['small:*'] });
    uma = addKey(file, { name: 'uma', role: 'user', models: ['m'] });
    unlimited = addKey(file, { name: 'root', role: 'user' });
    // The fast path serves /api/tags, /api/show and /v1/models; express the same handlers and the rest.
    bridges.push({ path: 'fast path', bridge: await startTestBridge({ file }) }, { path: 'express', bridge: await startTestBridge({ file, fastPath: false }) });
    cleanups.push(
      ...bridges.map(
        ({ bridge }) =>
          () =>
            bridge.stop(100),
      ),
      () => upstream.close(),
    );
  });

  const ask = (bridge: BridgeHandle, key: string, method: string, pathname: string, body?: unknown): Promise<Response> =>
    fetch(`${bridge.url}${pathname}`, {
      method,
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });

  /** The names of /api/tags, /api/ps and (with the OpenAI SDK) /v1/models, as the key sees them. */
  async function lists(bridge: BridgeHandle, key: string): Promise<{ tags: string[]; ps: string[]; openai: string[] }> {
    const names = async (pathname: string): Promise<string[]> => {
      const response = await ask(bridge, key, 'GET', pathname);
      assert.equal(response.status, 200, pathname);
      return ((await response.json()) as { models: Array<{ model: string }> }).models.map((m) => m.model);
    };
    const client = new OpenAI({ baseURL: `${bridge.url}/v1`, apiKey: key, maxRetries: 0 });
    return { tags: await names('/api/tags'), ps: await names('/api/ps'), openai: (await client.models.list()).data.map((m) => m.id) };
  }

  it('lists only the models the key may use, and a virtual name only when every model it can route to is allowed', async () => {
    for (const { path, bridge } of bridges) {
      const offered = ['bridge/moderate', 'bridge/complex', 'allowed:latest', 'allowed:7b'];
      assert.deepEqual(await lists(bridge, ria), { tags: offered, ps: ['allowed:7b'], openai: offered }, `${path}: ria`);
      const everyTier = [...VIRTUAL, 'allowed:latest', 'allowed:7b', 'small:latest'];
      assert.deepEqual(await lists(bridge, sam), { tags: everyTier, ps: ['allowed:7b'], openai: everyTier }, `${path}: sam`);
      assert.deepEqual(await lists(bridge, tia), { tags: ['small:latest'], ps: [], openai: ['small:latest'] }, `${path}: tia`);
    }
  });

  it('reads a model name without a tag as its :latest, as Ollama does, in the key’s list and in what is asked', async () => {
    for (const { path, bridge } of bridges) {
      assert.deepEqual(await lists(bridge, uma), { tags: ['m:latest'], ps: ['m:latest'], openai: ['m:latest'] }, path);
      for (const model of ['m', 'm:latest']) assert.equal((await ask(bridge, uma, 'POST', '/api/show', { model })).status, 200, `${path}: ${model}`);
      assert.equal((await ask(bridge, uma, 'POST', '/api/show', { model: 'm:7b' })).status, 403, `${path}: another tag`);
    }
  });

  it('lists every model, virtual ones first, for a key without a list', async () => {
    for (const { path, bridge } of bridges) {
      const everything = [...VIRTUAL, ...INSTALLED];
      assert.deepEqual(await lists(bridge, unlimited), { tags: everything, ps: LOADED, openai: everything }, path);
    }
  });

  it('describes a model the key may use, and refuses any other with 403 model_not_allowed before looking for it', async () => {
    for (const { path, bridge } of bridges) {
      for (const body of [{ model: 'allowed:7b' }, { name: 'allowed:latest' }, { model: 'bridge/complex' }]) {
        const response = await ask(bridge, ria, 'POST', '/api/show', body);
        assert.equal(response.status, 200, `${path}: ${JSON.stringify(body)}`);
        assert.deepEqual(((await response.json()) as { capabilities: string[] }).capabilities, ['completion']);
      }
      assert.equal((await ask(bridge, ria, 'POST', '/api/show', { model: 'allowed:missing' })).status, 404, `${path}: an allowed name nobody has`);

      const asked = upstream.requests.length;
      // A virtual name is refused as itself: the tier model behind it is not named to this key.
      const behind = 'it can be routed to a model outside the allow-list';
      for (const [body, refusal] of [
        [{ model: 'm:latest' }, "'m:latest'"],
        [{ name: 'M:latest' }, "'M:latest'"],
        [{ model: 'nowhere:1b' }, "'nowhere:1b'"],
        [{ model: 'auto' }, `'auto': ${behind}`],
        [{ model: 'bridge/simple' }, `'bridge/simple': ${behind}`],
      ] as const) {
        const message = await refusedModel(await ask(bridge, ria, 'POST', '/api/show', body), 'ollama');
        assert.equal(message, `ria may not use the model ${refusal}`, `${path}: ${JSON.stringify(body)}`);
      }
      // tia may use the simple tier's model, not the one a request needing more moves up to.
      const escalated = await refusedModel(await ask(bridge, tia, 'POST', '/api/show', { model: 'bridge/simple' }), 'ollama');
      assert.equal(escalated, `tia may not use the model 'bridge/simple': ${behind}`, path);
      assert.equal(upstream.requests.length, asked, `${path}: nothing refused was looked up upstream`);
      assert.equal((await ask(bridge, unlimited, 'POST', '/api/show', { model: 'm:latest' })).status, 200, `${path}: no list`);
    }
  });

  it('retrieves a model the key may use with the OpenAI SDK, and refuses any other with 403 model_not_allowed', async () => {
    for (const { path, bridge } of bridges) {
      const client = (key: string): OpenAI => new OpenAI({ baseURL: `${bridge.url}/v1`, apiKey: key, maxRetries: 0 });
      assert.equal((await client(ria).models.retrieve('allowed:7b')).id, 'allowed:7b', path);
      assert.equal((await client(ria).models.retrieve('allowed')).id, 'allowed:latest', path);
      for (const [id, refusal] of [
        ['m:latest', "'m:latest'"],
        ['nowhere:1b', "'nowhere:1b'"],
        ['auto', "'auto': it can be routed to a model outside the allow-list"],
      ] as const) {
        await assert.rejects(client(ria).models.retrieve(id), (error: unknown) => {
          assert.ok(error instanceof OpenAI.PermissionDeniedError, `${path}: ${id}: ${String(error)}`);
          assert.equal(error.code, 'model_not_allowed');
          assert.equal(error.message, `403 ria may not use the model ${refusal}`);
          return true;
        });
      }
      assert.equal((await client(sam).models.retrieve('auto')).id, 'auto', path);
      assert.equal((await client(unlimited).models.retrieve('m:latest')).id, 'm:latest', path);
    }
  });
});

describe('the rest of /api/', () => {
  let upstream: StandIn;
  let bridge: BridgeHandle;

  before(async () => {
    upstream = await startStandIn((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"status":"success"}');
    });
    bridge = await startTestBridge({ env: { OLLAMA_HOST: upstream.url } });
    cleanups.push(
      () => bridge.stop(100),
      () => upstream.close(),
    );
  });

  /** A request with the target exactly as given, a path or an absolute URL as proxies send it (fetch would normalize it). */
  function rawRequest(method: string, target: string, body?: string): Promise<{ status: number; allow: string | undefined; body: string }> {
    const { hostname, port } = new URL(bridge.url);
    return new Promise((resolve, reject) => {
      const req = httpRequest(
        {
          hostname,
          port,
          path: target,
          method,
          headers: body === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        },
        (res) => {
          let text = '';
          res.on('data', (chunk: Buffer) => (text += chunk.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, allow: res.headers.allow, body: text }));
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  }

  const generation = JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hi' }], prompt: 'hi', stream: false });

  it('answers another method on one of Ollama’s paths, or the bridge’s own, with 405 and what it takes, in Ollama’s shape, without the upstream', async () => {
    for (const [method, pathname, allow] of [
      ['PUT', '/api/chat', 'POST'],
      ['GET', '/api/chat', 'POST'],
      ['DELETE', '/api/generate', 'POST'],
      ['POST', '/api/version', 'GET, HEAD'],
      ['POST', '/api/tags', 'GET, HEAD'],
      // The bridge answers HEAD wherever it answers GET.
      ['POST', '/api/ps', 'GET, HEAD'],
      ['GET', '/api/pull', 'POST'],
      ['POST', '/api/delete', 'DELETE'],
      ['GET', '/api/blobs/sha256:abc', 'HEAD, POST'],
      ['PUT', '/', 'GET, HEAD'],
      ['POST', '/health', 'GET, HEAD'],
      ['POST', '/metrics', 'GET, HEAD'],
      ['DELETE', '/bridge/api/state', 'GET, HEAD'],
      ['POST', '/ui/', 'GET, HEAD'],
    ] as const) {
      const answer = await rawRequest(method, pathname, method === 'GET' ? undefined : generation);
      assert.equal(answer.status, 405, `${method} ${pathname}: ${answer.body}`);
      assert.equal(answer.allow, allow, `${method} ${pathname}`);
      assert.deepEqual(JSON.parse(answer.body), { error: `${method} is not allowed on ${pathname}; it takes ${allow}` });
    }
    assert.deepEqual(upstream.requests, []);
  });

  it('answers another method on an OpenAI or Anthropic path with 405 and what it takes, in that API’s error shape, without the upstream', async () => {
    for (const [method, pathname, allow] of [
      ['GET', '/v1/chat/completions', 'POST'],
      ['GET', '/chat/completions', 'POST'],
      ['PUT', '/v1/completions', 'POST'],
      ['GET', '/v1/embeddings', 'POST'],
      ['DELETE', '/v1/models', 'GET, HEAD'],
      ['DELETE', '/v1/responses', 'GET, HEAD, POST'],
      ['PUT', '/v1/engines/copilot-codex/completions', 'POST'],
    ] as const) {
      const answer = await rawRequest(method, pathname, method === 'GET' ? undefined : generation);
      assert.equal(answer.status, 405, `${method} ${pathname}: ${answer.body}`);
      assert.equal(answer.allow, allow, `${method} ${pathname}`);
      assert.deepEqual(JSON.parse(answer.body), {
        error: {
          message: `${method} is not allowed on ${pathname}; it takes ${allow}`,
          type: 'invalid_request_error',
          param: null,
          code: 'method_not_allowed',
        },
      });
    }
    for (const [method, pathname] of [
      ['PUT', '/v1/messages'],
      ['GET', '/v1/messages/count_tokens'],
    ] as const) {
      const answer = await rawRequest(method, pathname, method === 'GET' ? undefined : generation);
      assert.equal(answer.status, 405, `${method} ${pathname}: ${answer.body}`);
      assert.equal(answer.allow, 'POST', `${method} ${pathname}`);
      assert.deepEqual(JSON.parse(answer.body), {
        type: 'error',
        error: { type: 'invalid_request_error', message: `${method} is not allowed on ${pathname}; it takes POST` },
      });
    }
    assert.deepEqual(upstream.requests, []);
  });

  it('answers OPTIONS without an Origin (not a preflight) with 204 and the methods the path takes, and 404 where there is no such path', async () => {
    for (const [pathname, allow] of [
      ['/api/chat', 'POST'],
      ['/api/tags', 'GET, HEAD'],
      ['/api/blobs/sha256:abc', 'HEAD, POST'],
      ['/v1/chat/completions', 'POST'],
      ['/v1/models', 'GET, HEAD'],
      ['/v1/messages', 'POST'],
      ['/health', 'GET, HEAD'],
      ['/bridge/api/state', 'GET, HEAD'],
    ] as const) {
      const answer = await rawRequest('OPTIONS', pathname);
      assert.equal(answer.status, 204, `${pathname}: ${answer.body}`);
      assert.equal(answer.allow, allow, pathname);
      assert.equal(answer.body, '', pathname);
    }
    for (const pathname of ['/api/tokenize', '/v1/nowhere']) assert.equal((await rawRequest('OPTIONS', pathname)).status, 404, pathname);
    assert.deepEqual(upstream.requests, []);
  });

  it('answers 404 to a path that is not exactly one of Ollama’s, also one Ollama would decode or fold into one', async () => {
    for (const pathname of ['/api/%63hat', '/api/%67enerate', '/api/%70ull', '/api/PULL', '/api/tokenize', '/api/chat/x', '/api/blobs/sha256%3aabc']) {
      const answer = await rawRequest('POST', pathname, generation);
      assert.equal(answer.status, 404, pathname);
      assert.deepEqual(JSON.parse(answer.body), { error: `no such endpoint: POST ${pathname}` });
    }
    assert.deepEqual(upstream.requests, []);
  });

  it('still relays Ollama’s model management and blobs as they are', async () => {
    for (const [method, pathname] of [
      ['POST', '/api/pull'],
      ['POST', '/api/push'],
      ['POST', '/api/create'],
      ['POST', '/api/copy'],
      ['POST', '/api/blobs/sha256:abc'],
      ['HEAD', '/api/blobs/sha256:abc'],
    ] as const) {
      assert.equal((await rawRequest(method, `${pathname}?x=1`, method === 'HEAD' ? undefined : '{}')).status, 200, `${method} ${pathname}`);
    }
    assert.deepEqual(
      upstream.requests.slice(-6).map((r) => `${r.method} ${r.url}`),
      [
        'POST /api/pull?x=1',
        'POST /api/push?x=1',
        'POST /api/create?x=1',
        'POST /api/copy?x=1',
        'POST /api/blobs/sha256:abc?x=1',
        'HEAD /api/blobs/sha256:abc?x=1',
      ],
    );
  });

  it('relays them also when the target comes in absolute form, as some HTTP proxies send it, and upstream in origin form', async () => {
    for (const [method, pathname] of [
      ['POST', '/api/pull'],
      ['POST', '/api/embed'],
      ['POST', '/api/blobs/sha256:abc'],
    ] as const) {
      const answer = await rawRequest(method, `${bridge.url}${pathname}?x=1`, '{"model":"m"}');
      assert.equal(answer.status, 200, `${method} ${pathname}: ${answer.body}`);
    }
    assert.deepEqual(
      upstream.requests.slice(-3).map((r) => `${r.method} ${r.url}`),
      ['POST /api/pull?x=1', 'POST /api/embed?x=1', 'POST /api/blobs/sha256:abc?x=1'],
    );
    const refused = await rawRequest('GET', `${bridge.url}/api/pull`);
    assert.equal(refused.status, 405, refused.body);
    assert.deepEqual(JSON.parse(refused.body), { error: 'GET is not allowed on /api/pull; it takes POST' });
  });
});
