import assert from 'node:assert/strict';
import { lstatSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { exportJWK, generateKeyPair, SignJWT, type JWK, type JWTPayload } from 'jose';
import YAML from 'yaml';
import { ACTION_PAYLOADS } from '../../src/control/actions.js';
import type { Identity } from '../../src/auth/identity.js';
import { addKey, hashKey, KeyFileError, listKeys, revokeKey } from '../../src/auth/keys.js';
import { isRefusal, Limiter, STORE_RETRY_MS } from '../../src/auth/limits.js';
import type { LimitsConfig } from '../../src/config/schema.js';
import { ConfigError, loadConfig } from '../../src/config/load.js';
import type { BridgeHandle } from '../../src/bridge.js';
import type { HistoryRecord } from '../../src/contract/index.js';
import { runCli } from '../../src/cli.js';
import { memoryLogger, nextRecord, startTestBridge, startStandIn, type StandIn } from '../support/bridge.js';
import { startChatUpstream } from '../support/chat-upstream.js';
import { freePort } from '../support/ollama-rig.js';
import { documentedErrors } from '../support/readme.js';
import { readLines } from '../support/streams.js';
import { tempDir, configFile } from '../support/temp.js';

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

function call(bridge: BridgeHandle, method: string, pathname: string, headers: Record<string, string> = {}, body?: unknown): Promise<Response> {
  return fetch(`${bridge.url}${pathname}`, {
    method,
    headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

const bearer = (key: string): Record<string, string> => ({ authorization: `Bearer ${key}` });

/** Each client surface, with a request that generates, and how its errors look. */
const SURFACES = [
  { name: 'Ollama chat', path: '/api/chat', body: { model: 'm-small', messages: [{ role: 'user', content: 'hi' }], stream: false }, shape: 'ollama' },
  { name: 'Ollama generate', path: '/api/generate', body: { model: 'm-small', prompt: 'hi', stream: false }, shape: 'ollama' },
  { name: 'OpenAI chat', path: '/v1/chat/completions', body: { model: 'm-small', messages: [{ role: 'user', content: 'hi' }] }, shape: 'openai' },
  { name: 'OpenAI completions', path: '/v1/completions', body: { model: 'm-small', prompt: 'hi' }, shape: 'openai' },
  {
    name: 'Copilot ghost text',
    path: '/v1/engines/m-small/completions',
    body: { prompt: 'def f(', suffix: ')', max_tokens: 5, stream: false },
    shape: 'openai',
  },
  {
    name: 'Anthropic messages',
    path: '/v1/messages',
    body: { model: 'm-small', max_tokens: 50, messages: [{ role: 'user', content: 'hi' }] },
    shape: 'anthropic',
  },
  { name: 'OpenAI responses', path: '/v1/responses', body: { model: 'm-small', input: 'hi' }, shape: 'openai' },
] as const;

const ERROR_TYPES: Record<number, string> = { 401: 'authentication_error', 403: 'permission_error', 429: 'rate_limit_error' };
const ANTHROPIC_ERROR_TYPES: Record<number, string> = { ...ERROR_TYPES, 503: 'overloaded_error' };
const OPENAI_ERROR_TYPES: Record<number, string> = { ...ERROR_TYPES, 503: 'api_error' };

async function assertShape(response: Response, shape: 'ollama' | 'openai' | 'anthropic', status: number, code?: string): Promise<string> {
  assert.equal(response.status, status, `${response.url}: status`);
  const body = (await response.json()) as { error: unknown; type?: unknown };
  if (shape === 'ollama') {
    assert.equal(typeof body.error, 'string', `${response.url}: Ollama's {"error": "..."}`);
    return body.error as string;
  }
  if (shape === 'anthropic') {
    const error = body.error as { type: string; message: string };
    assert.equal(body.type, 'error', `${response.url}: Anthropic's {"type": "error", "error": {type, message}}`);
    assert.equal(error.type, ANTHROPIC_ERROR_TYPES[status]);
    return error.message;
  }
  const error = body.error as { message: string; type: string; code: string | null };
  assert.equal(typeof error.message, 'string', `${response.url}: OpenAI's {"error": {message, type, code}}`);
  assert.equal(error.type, OPENAI_ERROR_TYPES[status]);
  if (code !== undefined) {
    assert.equal(error.code, code);
    assert.ok(documentedErrors().has(`${status} ${code}`), `README's error table lists ${status} ${code}`);
  }
  return error.message;
}

describe('API keys', () => {
  it('keys add prints a key once and stores only its SHA-256; list never shows it; revoke removes it', async () => {
    const dir = tempDir('keys-');
    const file = path.join(dir, 'config.yaml');
    writeFileSync(file, '# the team bridge\nserver:\n  port: 5000 # kept\n');
    const out: string[] = [];
    const err: string[] = [];
    const io = { env: {}, stdout: (t: string) => out.push(t), stderr: (t: string) => err.push(t) };
    assert.equal(await runCli({ ...io, argv: ['keys', 'add', '--name', 'alice', '--team', 'web', '--role', 'admin', '--config', file] }), 0);
    const key = out.join('').trim();
    assert.match(key, /^cbk_[A-Za-z0-9_-]{43}$/);
    const text = readFileSync(file, 'utf8');
    assert.ok(!text.includes(key), 'the file never holds the key');
    assert.ok(text.includes(hashKey(key)), 'the file holds its hash');
    assert.ok(text.includes('# the team bridge') && text.includes('# kept'), 'comments survive');
    assert.equal(statSync(file).mode & 0o777, 0o600);

    out.length = 0;
    assert.equal(await runCli({ ...io, argv: ['keys', 'list', '--config', file] }), 0);
    assert.match(out.join(''), /^alice\tteam web, role admin, created /);
    assert.ok(!out.join('').includes(key) && !out.join('').includes(hashKey(key)));

    assert.equal(await runCli({ ...io, argv: ['keys', 'add', '--name', 'alice', '--config', file] }), 2, 'names are unique');
    assert.equal(await runCli({ ...io, argv: ['keys', 'add', '--name', 'x', '--role', 'root', '--config', file] }), 2, 'unknown roles refused');
    assert.equal(await runCli({ ...io, argv: ['keys', 'revoke', '--name', 'alice', '--config', file] }), 0);
    assert.deepEqual(listKeys(file), []);
    assert.equal(await runCli({ ...io, argv: ['keys', 'revoke', '--name', 'alice', '--config', file] }), 2);

    // A file that is not there (a mistyped --config) is said, not listed as having no keys.
    err.length = 0;
    assert.equal(await runCli({ ...io, argv: ['keys', 'list', '--config', path.join(dir, 'confg.yaml')] }), 2);
    assert.match(err.join(''), /confg\.yaml does not exist/);

    // A name is taken without the spaces around it, by add and revoke alike.
    assert.equal(await runCli({ ...io, argv: ['keys', 'add', '--name', ' bob ', '--config', file] }), 0);
    assert.deepEqual(
      listKeys(file).map((k) => k.name),
      ['bob'],
    );
    assert.equal(await runCli({ ...io, argv: ['keys', 'revoke', '--name', ' bob ', '--config', file] }), 0);
    assert.deepEqual(listKeys(file), []);
  });

  it('lists, finds and revokes keys written with YAML anchors as serve reads them, and refuses an alias bomb', () => {
    const hash = (digit: number): string => `sha256:${String(digit).repeat(64)}`;
    const file = configFile(
      `auth:\n  keys:\n    - {name: &alice alice, team: &team web, role: &admin admin, models: &models [m-small], hash: "${hash(1)}"}\n` +
        `    - {name: bob, team: *team, role: *admin, models: *models, hash: "${hash(2)}"}\n  teams:\n    *team : {cloud: never}\n`,
    );
    const listed = listKeys(file).map(({ name, team, role, models }) => ({ name, team, role, models }));
    const served = loadConfig({ file }).auth.keys.map(({ name, team, role, models }) => ({ name, team, role, models }));
    assert.deepEqual(listed, served);
    assert.deepEqual(listed[1], { name: 'bob', team: 'web', role: 'admin', models: ['m-small'] });
    assert.throws(() => addKey(file, { name: 'bob', role: 'user' }), /a key named 'bob' already exists/);
    assert.equal(revokeKey(file, 'bob'), true);
    assert.deepEqual(
      listKeys(file).map((key) => key.name),
      ['alice'],
    );

    const levels = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i'];
    const lines = levels.map(
      (level, i) =>
        `${level}: &${level} [${Array(9)
          .fill(i === 0 ? '"lol"' : `*${levels[i - 1] ?? ''}`)
          .join(', ')}]`,
    );
    const bomb = configFile(`${lines.join('\n')}\nauth:\n  keys:\n    - {name: bomb, models: *i, hash: "${hash(3)}"}\n`);
    assert.throws(
      () => listKeys(bomb),
      (error: Error) => error instanceof KeyFileError && /alias/i.test(error.message),
    );
  });

  it('refuses a config path that never ends (/dev/zero) rather than reading it until memory runs out', () => {
    assert.throws(
      () => listKeys('/dev/zero'),
      (error: Error) => error instanceof KeyFileError && error.message === '/dev/zero is not a config file: it holds more than 16 MiB',
    );
  });

  it('edits the file a linked config leads to, and leaves the link a link', () => {
    const dir = tempDir('keys-');
    const real = path.join(dir, 'real.yaml');
    writeFileSync(real, 'server:\n  port: 5000\n');
    const link = path.join(dir, 'config.yaml');
    symlinkSync(real, link);
    addKey(link, { name: 'alice', role: 'user' });
    assert.ok(lstatSync(link).isSymbolicLink());
    assert.deepEqual(
      listKeys(real).map((key) => key.name),
      ['alice'],
    );
  });

  it('revokes every key of the name, also one a hand edit or a merge gave the name twice', () => {
    const file = path.join(tempDir('keys-'), 'config.yaml');
    addKey(file, { name: 'alice', role: 'user' });
    addKey(file, { name: 'bob', role: 'user' });
    const config = YAML.parse(readFileSync(file, 'utf8')) as { auth: { keys: Array<Record<string, unknown>> } };
    config.auth.keys.push({ name: 'alice', role: 'admin', hash: hashKey('another key of alice') });
    writeFileSync(file, YAML.stringify(config));
    assert.equal(revokeKey(file, 'alice'), true);
    assert.deepEqual(
      listKeys(file).map((key) => key.name),
      ['bob'],
      'no key of alice is left to work',
    );
  });

  it('will not start on one key given to two entries, which would leave who it is to the order of the file', () => {
    const hash = hashKey('one key');
    const file = configFile(`auth:\n  keys:\n    - { name: alice, role: user, hash: "${hash}" }\n    - { name: root, role: admin, hash: "${hash}" }\n`);
    assert.throws(
      () => loadConfig({ file, env: {} }),
      (error: Error) =>
        error instanceof ConfigError && error.problems.some((p) => p.keyPath === 'auth.keys.1.hash' && /auth\.keys\.0, alice, has it/.test(p.expected)),
    );
  });

  describe('on a running bridge', () => {
    let upstream: StandIn;
    let bridge: BridgeHandle;
    const keys: Record<string, string> = {};
    let file: string;

    before(async () => {
      upstream = await startChatUpstream();
      file = path.join(tempDir('auth-'), 'config.yaml');
      writeFileSync(file, `backends:\n  - name: gpu0\n    url: ${upstream.url}\n`);
      keys.admin = addKey(file, { name: 'alice', team: 'web', role: 'admin' });
      keys.user = addKey(file, { name: 'bob', team: 'web', role: 'user', models: ['m-small'] });
      keys.viewer = addKey(file, { name: 'vera', role: 'viewer' });
      keys.gone = addKey(file, { name: 'gone', role: 'user' });
      revokeKey(file, 'gone');
      bridge = await startTestBridge({ file });
      cleanups.push(
        () => bridge.stop(100),
        () => upstream.close(),
      );
    });

    it('takes a key from Authorization: Bearer, x-api-key and api-key, and records who asked but never the key', async () => {
      for (const headers of [bearer(keys.user as string), { 'x-api-key': keys.user as string }, { 'api-key': keys.user as string }]) {
        const recorded = nextRecord(bridge);
        const response = await call(bridge, 'POST', '/api/chat', headers, SURFACES[0].body);
        assert.equal(response.status, 200);
        const record = await recorded;
        assert.equal(record.user, 'bob');
        assert.equal(record.team, 'web');
      }
      await bridge.history.flush();
      const stored = readFileSync(path.join(bridge.config.data_dir as string, 'history.jsonl'), 'utf8');
      for (const key of Object.values(keys)) assert.ok(!stored.includes(key));
    });

    it('takes the key among several credentials when another is a placeholder (Authorization and x-api-key both sent)', async () => {
      const headers = { authorization: 'Bearer sk-placeholder', 'x-api-key': keys.user as string };
      const recorded = nextRecord(bridge);
      const response = await call(bridge, 'POST', '/api/chat', headers, SURFACES[0].body);
      assert.equal(response.status, 200);
      assert.equal((await recorded).user, 'bob');
      const wrongOnly = await call(bridge, 'POST', '/api/chat', { authorization: 'Bearer sk-placeholder', 'x-api-key': 'also-wrong' }, SURFACES[0].body);
      assert.equal(wrongOnly.status, 401);
    });

    it('refuses a missing, wrong or revoked key with 401 in each surface shape', async () => {
      for (const surface of SURFACES) {
        for (const headers of [{}, bearer('cbk_not-a-key-at-all-aaaaaaaaaaaaaaaaaaaaaaaaaaa'), bearer(keys.gone as string)]) {
          const response = await call(bridge, 'POST', surface.path, headers, surface.body);
          assert.match(response.headers.get('www-authenticate') ?? '', /^Bearer/);
          await assertShape(response, surface.shape, 401, 'invalid_api_key');
        }
      }
    });

    it('holds a key to its model allow-list: 403 in the surface shape, recorded', async () => {
      const recorded = nextRecord(bridge);
      const response = await call(bridge, 'POST', '/v1/chat/completions', bearer(keys.user as string), {
        model: 'm-big',
        messages: [{ role: 'user', content: 'hi' }],
      });
      assert.match(await assertShape(response, 'openai', 403, 'model_not_allowed'), /bob may not use the model 'm-big'/);
      assert.equal((await recorded).status, 403);
      assert.equal(
        (await call(bridge, 'POST', '/api/chat', bearer(keys.admin as string), { ...SURFACES[0].body, model: 'm-big' })).status,
        200,
        'no list: any model',
      );
    });

    it('applies the role matrix to every surface and every control action', async () => {
      // Generation: admin and user; a viewer gets 403 in each surface's shape.
      for (const surface of SURFACES) {
        assert.equal((await call(bridge, 'POST', surface.path, bearer(keys.admin as string), surface.body)).status, 200, `${surface.name} as admin`);
        assert.equal((await call(bridge, 'POST', surface.path, bearer(keys.user as string), surface.body)).status, 200, `${surface.name} as user`);
        await assertShape(await call(bridge, 'POST', surface.path, bearer(keys.viewer as string), surface.body), surface.shape, 403, 'forbidden');
      }
      // Model lists: users yes, viewers no.
      for (const [method, pathname, body] of [
        ['GET', '/api/tags'],
        ['GET', '/v1/models'],
        ['POST', '/api/show', { model: 'm-small' }],
      ] as const) {
        assert.equal((await call(bridge, method, pathname, bearer(keys.user as string), body)).status, 200, `${pathname} as user`);
        assert.equal((await call(bridge, method, pathname, bearer(keys.viewer as string), body)).status, 403, `${pathname} as viewer`);
      }
      // Model management changes what everyone sees: admins only.
      for (const pathname of ['/api/pull', '/api/delete', '/api/copy', '/api/create']) {
        const method = pathname === '/api/delete' ? 'DELETE' : 'POST';
        await assertShape(await call(bridge, method, pathname, bearer(keys.user as string), { model: 'm-small' }), 'ollama', 403);
        assert.notEqual(
          (await call(bridge, method, pathname, bearer(keys.admin as string), { model: 'm-small', source: 'm-small', destination: 'm-copy' })).status,
          403,
          `${pathname} as admin`,
        );
      }
      // Dashboard reads: every role; the health probes: no key at all.
      for (const pathname of ['/bridge/api/state', '/bridge/api/gpu/history', '/bridge/api/usage', '/metrics']) {
        for (const role of ['admin', 'user', 'viewer'])
          assert.equal((await call(bridge, 'GET', pathname, bearer(keys[role] as string))).status, 200, `${pathname} as ${role}`);
        assert.equal((await call(bridge, 'GET', pathname)).status, 401, `${pathname} without a key`);
      }
      assert.equal((await call(bridge, 'GET', '/health/ready')).status, 200, 'health probes need no key');
      // Every control action: admin keys and the control token pass the door (an empty payload is then a 400), users and viewers get 403.
      for (const action of Object.keys(ACTION_PAYLOADS)) {
        const pathname = `/bridge/api/actions/${action}`;
        for (const role of ['user', 'viewer']) {
          const response = await call(bridge, 'POST', pathname, bearer(keys[role] as string), {});
          assert.equal(response.status, 403, `${action} as ${role}`);
          assert.equal(typeof ((await response.json()) as { error: unknown }).error, 'string');
        }
        assert.equal((await call(bridge, 'POST', pathname, {}, {})).status, 401, `${action} without a key`);
        assert.equal((await call(bridge, 'POST', pathname, bearer(keys.admin as string), {})).status, 400, `${action} as admin`);
        assert.equal((await call(bridge, 'POST', pathname, { 'x-bridge-token': bridge.controlToken }, {})).status, 400, `${action} with the control token`);
      }
      const done = await call(bridge, 'POST', '/bridge/api/actions/setDualGpu', bearer(keys.admin as string), { enabled: true });
      assert.equal(done.status, 200);
      assert.equal(bridge.state.settings.dualGpu, true);
    });

    it('checks the role on the path as the router reads it: another letter case or a trailing slash is no way around it', async () => {
      for (const pathname of ['/BRIDGE/api/actions/setFallback', '/Bridge/Api/Actions/setFallback', '/bridge/api/actions/setFallback/']) {
        await assertShape(await call(bridge, 'POST', pathname, bearer(keys.user as string), { enabled: true }), 'ollama', 403);
        assert.equal((await call(bridge, 'POST', pathname, bearer(keys.admin as string), {})).status, 400, `${pathname} as admin reaches the action`);
      }
      const deletes = (): number => upstream.requests.filter((request) => request.url === '/api/delete').length;
      const deletesBefore = deletes();
      for (const pathname of ['/API/delete', '/api/Delete', '/api/delete/']) {
        await assertShape(await call(bridge, 'DELETE', pathname, bearer(keys.user as string), { model: 'm-small' }), 'ollama', 403);
      }
      assert.equal(bridge.state.settings.fallbackEnabled, false);
      assert.equal(deletes(), deletesBefore, 'no model was deleted');
      // Without keys the local user is an admin, but changing the bridge still needs the control token.
      const open = await startTestBridge({ file: configFile(`backends:\n  - name: gpu0\n    url: ${upstream.url}\n`) });
      cleanups.push(() => open.stop(100));
      assert.equal((await call(open, 'POST', '/BRIDGE/api/actions/setFallback', {}, { enabled: true })).status, 401);
      assert.equal(open.state.settings.fallbackEnabled, false);
    });

    it('says who is signed in and what the role may do; a user reads only their own history and usage', async () => {
      const whoami = async (key: string): Promise<unknown> => (await call(bridge, 'GET', '/bridge/api/whoami', bearer(key))).json();
      assert.deepEqual(await whoami(keys.viewer as string), {
        name: 'vera',
        team: null,
        role: 'viewer',
        authRequired: true,
        cloud: 'allow',
        can: { actions: false, generate: false, everyonesUsage: true },
      });
      assert.deepEqual(((await whoami(keys.user as string)) as { can: unknown }).can, { actions: false, generate: true, everyonesUsage: false });
      const history = async (key: string): Promise<HistoryRecord[]> =>
        ((await (await call(bridge, 'GET', '/bridge/api/history', bearer(key))).json()) as { records: HistoryRecord[] }).records;
      const mine = await history(keys.user as string);
      assert.ok(mine.length > 0 && mine.every((r) => r.user === 'bob'));
      assert.ok((await history(keys.admin as string)).some((r) => r.user === 'alice'));
      const usage = (await (await call(bridge, 'GET', '/bridge/api/usage', bearer(keys.user as string))).json()) as {
        scope: string;
        byPerson: Array<{ name: string }>;
      };
      assert.equal(usage.scope, 'own');
      assert.deepEqual(
        usage.byPerson.map((p) => p.name),
        ['bob'],
      );

      // The live stream (credential in the query: EventSource sends no headers) carries a user's own records only.
      assert.equal((await call(bridge, 'GET', '/bridge/api/events')).status, 401);
      const abort = new AbortController();
      const events = await fetch(`${bridge.url}/bridge/api/events?access_token=${encodeURIComponent(keys.user as string)}`, { signal: abort.signal });
      const lines = readLines(events);
      while ((await lines.next()).value?.startsWith('event: state') !== true);
      const seen: string[] = [];
      const reading = (async () => {
        let event = '';
        for await (const line of lines) {
          if (line.startsWith('event: ')) event = line.slice(7);
          else if (event === 'history' && line.startsWith('data: ')) {
            const user = (JSON.parse(line.slice(6)) as HistoryRecord).user ?? '';
            seen.push(user);
            if (user === 'bob') return;
          }
        }
      })();
      await (await call(bridge, 'POST', '/api/chat', bearer(keys.admin as string), SURFACES[0].body)).text();
      await (await call(bridge, 'POST', '/api/chat', bearer(keys.user as string), SURFACES[0].body)).text();
      await reading;
      abort.abort();
      assert.deepEqual(seen, ['bob']);
    });
  });
});

/** A JWKS endpoint whose key set (or failure status) a test can change, counting fetches. */
async function startJwks(): Promise<{ url: string; keys: JWK[]; fetches: number; failWith: number | null; close(): Promise<void> }> {
  const state = { keys: [] as JWK[], fetches: 0, failWith: null as number | null };
  const server: Server = createServer((_req, res) => {
    state.fetches += 1;
    if (state.failWith !== null) {
      res.writeHead(state.failWith).end('the identity provider is down');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ keys: state.keys }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`,
    get keys() {
      return state.keys;
    },
    set keys(value: JWK[]) {
      state.keys = value;
    },
    get fetches() {
      return state.fetches;
    },
    set failWith(status: number | null) {
      state.failWith = status;
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  } as { url: string; keys: JWK[]; fetches: number; failWith: number | null; close(): Promise<void> };
}

const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');

describe('JWT', () => {
  const ISSUER = 'https://login.example.test';
  const AUDIENCE = 'copilot-bridge';
  let upstream: StandIn;

  before(async () => {
    upstream = await startChatUpstream();
    cleanups.push(() => upstream.close());
  });

  async function bridgeWith(jwt: string): Promise<BridgeHandle> {
    const file = configFile(`backends:\n  - name: gpu0\n    url: ${upstream.url}\nauth:\n  jwt:\n${jwt.replace(/^/gm, '    ')}\n  teams:\n    web: {}\n`);
    const bridge = await startTestBridge({ file });
    cleanups.push(() => bridge.stop(100));
    return bridge;
  }

  const chat = (bridge: BridgeHandle, token: string): Promise<Response> => call(bridge, 'POST', '/v1/chat/completions', bearer(token), SURFACES[2].body);

  it('RS256 and ES256 from a JWKS: cached, refetched on an unknown kid (rotation); claims mapped; expired, wrong aud, alg none and HS/RS confusion refused', async () => {
    const jwks = await startJwks();
    cleanups.push(() => jwks.close());
    const rsa = await generateKeyPair('RS256', { extractable: true });
    const ec = await generateKeyPair('ES256', { extractable: true });
    const rsaJwk = { ...(await exportJWK(rsa.publicKey)), kid: 'rsa-1', alg: 'RS256', use: 'sig' };
    jwks.keys = [rsaJwk, { ...(await exportJWK(ec.publicKey)), kid: 'ec-1', alg: 'ES256', use: 'sig' }];
    const bridge = await bridgeWith(
      `jwks_url: ${jwks.url}\nissuer: ${ISSUER}\naudience: ${AUDIENCE}\njwks_refetch_cooldown_seconds: 0\nclaims:\n  name: email\n  team: groups\n  role: roles`,
    );
    const sign = (key: CryptoKey, alg: string, kid: string, claims: Record<string, unknown> = {}, expires: string | number = '5m', audience = AUDIENCE) =>
      new SignJWT({ email: 'dana@example.test', groups: ['web', 'ops'], roles: ['user'], ...claims })
        .setProtectedHeader({ alg, kid })
        .setIssuer(ISSUER)
        .setAudience(audience)
        .setSubject('u-1')
        .setIssuedAt()
        .setExpirationTime(expires)
        .sign(key);

    const recorded = nextRecord(bridge);
    assert.equal((await chat(bridge, await sign(rsa.privateKey, 'RS256', 'rsa-1'))).status, 200, 'RS256');
    const record = await recorded;
    assert.equal(record.user, 'dana@example.test', 'name from the configured claim');
    assert.equal(record.team, 'web', 'first group');
    assert.equal((await chat(bridge, await sign(ec.privateKey, 'ES256', 'ec-1'))).status, 200, 'ES256');
    assert.equal(jwks.fetches, 1, 'the key set is fetched once and cached');
    // A token whose roles claim says viewer may not generate.
    assert.equal((await chat(bridge, await sign(rsa.privateKey, 'RS256', 'rsa-1', { roles: ['viewer'] }))).status, 403);

    // Rotation: the issuer publishes a new key; a token with its kid makes the bridge fetch again.
    const rotated = await generateKeyPair('RS256', { extractable: true });
    jwks.keys = [...jwks.keys, { ...(await exportJWK(rotated.publicKey)), kid: 'rsa-2', alg: 'RS256', use: 'sig' }];
    assert.equal((await chat(bridge, await sign(rotated.privateKey, 'RS256', 'rsa-2'))).status, 200, 'rotated key');
    assert.equal(jwks.fetches, 2);

    const refused = async (token: string, why: RegExp): Promise<void> =>
      assert.match(await assertShape(await chat(bridge, token), 'openai', 401, 'invalid_token'), why);
    await refused(await sign(rsa.privateKey, 'RS256', 'rsa-1', {}, Math.floor(Date.now() / 1000) - 120), /expired/);
    await refused(await sign(rsa.privateKey, 'RS256', 'rsa-1', {}, '5m', 'another-service'), /'aud' claim/);
    const payload = { email: 'mallory', roles: ['admin'], iss: ISSUER, aud: AUDIENCE, exp: Math.floor(Date.now() / 1000) + 300 };
    await refused(`${b64({ alg: 'none', typ: 'JWT' })}.${b64(payload)}.`, /algorithm|not valid/);
    // HS/RS confusion: an HMAC "signed" with the RSA public key, which anyone can fetch.
    const publicPem = rsa.publicKey;
    const exported = Buffer.from(await crypto.subtle.exportKey('spki', publicPem)).toString('base64');
    const pem = `-----BEGIN PUBLIC KEY-----\n${exported.match(/.{1,64}/g)?.join('\n')}\n-----END PUBLIC KEY-----\n`;
    const confused = await new SignJWT(payload).setProtectedHeader({ alg: 'HS256', kid: 'rsa-1' }).sign(new TextEncoder().encode(pem));
    await refused(confused, /algorithm/);
    // Within the clock skew an expiry just passed is still accepted.
    assert.equal((await chat(bridge, await sign(rsa.privateKey, 'RS256', 'rsa-1', {}, Math.floor(Date.now() / 1000) - 5))).status, 200);
  });

  it("answers 503, not 401, while the issuer's key set cannot be fetched, and accepts the token once it can", async () => {
    const jwks = await startJwks();
    cleanups.push(() => jwks.close());
    const rsa = await generateKeyPair('RS256', { extractable: true });
    jwks.keys = [{ ...(await exportJWK(rsa.publicKey)), kid: 'rsa-1', alg: 'RS256', use: 'sig' }];
    jwks.failWith = 500;
    const bridge = await bridgeWith(`jwks_url: ${jwks.url}\nissuer: ${ISSUER}\naudience: ${AUDIENCE}\njwks_refetch_cooldown_seconds: 0`);
    const signed = (key: CryptoKey, kid: string): Promise<string> =>
      new SignJWT({ sub: 'dana' }).setProtectedHeader({ alg: 'RS256', kid }).setIssuer(ISSUER).setAudience(AUDIENCE).setExpirationTime('5m').sign(key);
    const token = await signed(rsa.privateKey, 'rsa-1');
    assert.match(await assertShape(await chat(bridge, token), 'openai', 503, 'jwks_unavailable'), /key set \(JWKS\) answered wrongly/);
    assert.match(await assertShape(await call(bridge, 'POST', '/api/chat', bearer(token), SURFACES[0].body), 'ollama', 503), /JWKS/);
    // A token that is bad on its own is refused as such meanwhile, whatever its signature.
    const unsigned = (claims: Record<string, unknown>): string =>
      `${b64({ alg: 'RS256', kid: 'rsa-1' })}.${b64({ sub: 'dana', iss: ISSUER, aud: AUDIENCE, exp: Math.floor(Date.now() / 1000) + 300, ...claims })}.c2ln`;
    assert.match(await assertShape(await chat(bridge, unsigned({ exp: Math.floor(Date.now() / 1000) - 600 })), 'openai', 401, 'invalid_token'), /expired/);
    assert.match(await assertShape(await chat(bridge, unsigned({ aud: 'another-service' })), 'openai', 401, 'invalid_token'), /'aud' claim/);
    assert.match(await assertShape(await chat(bridge, unsigned({ iss: 'https://elsewhere.test' })), 'openai', 401, 'invalid_token'), /'iss' claim/);
    assert.match(await assertShape(await chat(bridge, unsigned({ nbf: Math.floor(Date.now() / 1000) + 600 })), 'openai', 401, 'invalid_token'), /'nbf' claim/);
    jwks.failWith = null;
    assert.equal((await chat(bridge, token)).status, 200);
    // A key the bridge has not cached yet, from an issuer that cannot be reached at all.
    await jwks.close();
    const unknownKid = await signed((await generateKeyPair('RS256', { extractable: true })).privateKey, 'rsa-2');
    assert.match(await assertShape(await chat(bridge, unknownKid), 'openai', 503, 'jwks_unavailable'), /could not be fetched/);
  });

  it('HS256 with a secret from a file; a token signed with another secret or an RS256 key is refused', async () => {
    const secretFile = path.join(tempDir('jwt-secret-'), 'secret');
    const secret = 'a-shared-secret-of-at-least-32-bytes!';
    writeFileSync(secretFile, `${secret}\n`, { mode: 0o600 });
    const bridge = await bridgeWith(`secret_file: ${secretFile}\nissuer: ${ISSUER}\naudience: ${AUDIENCE}`);
    const sign = (key: Uint8Array | CryptoKey, alg = 'HS256') =>
      new SignJWT({ roles: 'admin' })
        .setProtectedHeader({ alg })
        .setIssuer(ISSUER)
        .setAudience(AUDIENCE)
        .setSubject('svc-ci')
        .setExpirationTime('5m')
        .sign(key);
    const recorded = nextRecord(bridge);
    assert.equal((await chat(bridge, await sign(new TextEncoder().encode(secret)))).status, 200);
    assert.equal((await recorded).user, 'svc-ci', 'sub is the default name claim');
    const admin = await call(bridge, 'GET', '/bridge/api/whoami', bearer(await sign(new TextEncoder().encode(secret))));
    assert.equal(((await admin.json()) as { role: string }).role, 'admin', 'a plain string role claim');
    await assertShape(await chat(bridge, await sign(new TextEncoder().encode('another-secret-of-at-least-32-bytes!!'))), 'openai', 401, 'invalid_token');
    const rsa = await generateKeyPair('RS256');
    await assertShape(await chat(bridge, await sign(rsa.privateKey, 'RS256')), 'openai', 401, 'invalid_token');
  });

  /** A bridge taking HS256 tokens of a shared secret, with `claims` settings, and a signer of tokens for "dana". */
  const sharedSecretBridge = async (claims = ''): Promise<{ bridge: BridgeHandle; sign: (payload: JWTPayload) => Promise<string> }> => {
    const secretFile = path.join(tempDir('jwt-secret-'), 'secret');
    const secret = new TextEncoder().encode('a-shared-secret-of-at-least-32-bytes!');
    writeFileSync(secretFile, 'a-shared-secret-of-at-least-32-bytes!', { mode: 0o600 });
    const bridge = await bridgeWith(`secret_file: ${secretFile}\nissuer: ${ISSUER}\naudience: ${AUDIENCE}${claims}`);
    const sign = (payload: JWTPayload): Promise<string> =>
      new SignJWT(payload).setProtectedHeader({ alg: 'HS256' }).setIssuer(ISSUER).setAudience(AUDIENCE).setSubject('dana').setExpirationTime('5m').sign(secret);
    return { bridge, sign };
  };

  it("ends the dashboard's event stream of a token when the token expires", { timeout: 15_000 }, async () => {
    const { bridge } = await sharedSecretBridge('\nclock_skew_seconds: 0');
    const expiresAt = Math.ceil(Date.now() / 1000) + 2;
    const token = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setSubject('dana')
      .setExpirationTime(expiresAt)
      .sign(new TextEncoder().encode('a-shared-secret-of-at-least-32-bytes!'));
    const stream = await call(bridge, 'GET', `/bridge/api/events?access_token=${token}`);
    assert.equal(stream.status, 200);
    // Read to the end: the bridge ends it, where before the holder kept the state and history coming for good.
    for await (const chunk of stream.body as AsyncIterable<Uint8Array>) assert.ok(chunk.length > 0);
    assert.ok(Date.now() >= expiresAt * 1000, 'not before the token expired');
    assert.equal((await call(bridge, 'GET', `/bridge/api/events?access_token=${token}`)).status, 401, 'and the token opens no new one');
  });

  it('takes the team from the first group that is a configured team, whatever groups the issuer lists before it', async () => {
    const { bridge, sign } = await sharedSecretBridge();
    const teamOf = async (groups: unknown): Promise<unknown> =>
      ((await (await call(bridge, 'GET', '/bridge/api/whoami', bearer(await sign({ groups })))).json()) as { team: unknown }).team;
    assert.equal(await teamOf(['Domain Users', 'web']), 'web', 'the configured team, not the group listed first');
    assert.equal(await teamOf(['constructor', 'web']), 'web', 'a name every object has is no configured team');
    assert.equal(await teamOf(['Domain Users', 'ops']), 'Domain Users', 'no configured team: the first group, as before');
    assert.equal(await teamOf('web'), 'web');
  });

  it('takes a blank name or group for none: holders without an email are not one person "", nor is "" a team', async () => {
    const { bridge, sign } = await sharedSecretBridge('\nclaims:\n  name: email');
    for (const email of ['', '  ', ['', 'dana@example.test']]) {
      const response = await call(bridge, 'GET', '/bridge/api/whoami', bearer(await sign({ email, groups: ['web'] })));
      if (Array.isArray(email)) assert.equal(((await response.json()) as { name: string }).name, 'dana@example.test', 'the first name that says something');
      else assert.match(await assertShape(response, 'ollama', 401), /no 'email' claim/, JSON.stringify(email));
    }
    const whoami = (await (
      await call(bridge, 'GET', '/bridge/api/whoami', bearer(await sign({ email: 'dana@example.test', groups: ['', 'ops'] })))
    ).json()) as {
      team: string | null;
    };
    assert.equal(whoami.team, 'ops');
  });

  it("reads a claim named with dots (an Auth0 namespace) as that claim, and a dotted path into an object (Keycloak's)", async () => {
    const { bridge, sign } = await sharedSecretBridge('\nclaims:\n  role: https://bridge.example.test/roles\n  team: realm_access.groups');
    const token = await sign({ 'https://bridge.example.test/roles': ['admin'], realm_access: { groups: ['web'] } });
    const whoami = (await (await call(bridge, 'GET', '/bridge/api/whoami', bearer(token))).json()) as { role: string; team: string | null };
    assert.equal(whoami.role, 'admin');
    assert.equal(whoami.team, 'web');
  });

  it('RS256 from a key set in a file; a token of another key is refused', async () => {
    const rsa = await generateKeyPair('RS256', { extractable: true });
    const jwksFile = path.join(tempDir('jwks-file-'), 'jwks.json');
    writeFileSync(jwksFile, JSON.stringify({ keys: [{ ...(await exportJWK(rsa.publicKey)), kid: 'rsa-1', alg: 'RS256', use: 'sig' }] }));
    const bridge = await bridgeWith(`jwks_file: ${jwksFile}\nissuer: ${ISSUER}\naudience: ${AUDIENCE}`);
    const sign = (key: CryptoKey) =>
      new SignJWT({})
        .setProtectedHeader({ alg: 'RS256', kid: 'rsa-1' })
        .setIssuer(ISSUER)
        .setAudience(AUDIENCE)
        .setSubject('erin')
        .setExpirationTime('5m')
        .sign(key);
    const recorded = nextRecord(bridge);
    assert.equal((await chat(bridge, await sign(rsa.privateKey))).status, 200);
    assert.equal((await recorded).user, 'erin');
    const other = await generateKeyPair('RS256');
    await assertShape(await chat(bridge, await sign(other.privateKey)), 'openai', 401, 'invalid_token');
  });

  it('will not start on a key file it cannot use, and says which setting and file', async () => {
    const dir = tempDir('jwt-files-');
    const cases = [
      ['jwks_file', path.join(dir, 'cut.json'), '{"keys": [', /^auth\.jwt\.jwks_file: .*cut\.json is not a JSON Web Key Set \(.+\)$/],
      ['jwks_file', path.join(dir, 'no-keys.json'), '{"key": []}', /^auth\.jwt\.jwks_file: .*no-keys\.json is not a JSON Web Key Set \(.+\)$/],
      ['jwks_file', path.join(dir, 'missing.json'), undefined, /^auth\.jwt\.jwks_file: cannot read .*missing\.json \(ENOENT\)$/],
      ['secret_file', path.join(dir, 'missing-secret'), undefined, /^auth\.jwt\.secret_file: cannot read .*missing-secret \(ENOENT\)$/],
    ] as const;
    for (const [setting, file, text, message] of cases) {
      if (text !== undefined) writeFileSync(file, text);
      const config = configFile(`auth:\n  jwt:\n    ${setting}: ${file}\n    issuer: ${ISSUER}\n    audience: ${AUDIENCE}\n`);
      let stderr = '';
      const code = await runCli({
        argv: ['serve', '--port', '0', '--config', config],
        env: { BRIDGE_DATA_DIR: tempDir('jwt-files-data-') },
        stdout: () => undefined,
        stderr: (text) => (stderr += text),
      });
      assert.equal(code, 1, `${file}: refused at start`);
      assert.match(stderr.replace(/^copilot-bridge: /, '').trimEnd(), message);
    }
  });
});

describe('limits', () => {
  let upstream: StandIn;
  let release: (() => void) | undefined;

  before(async () => {
    upstream = await startChatUpstream({
      hold: (body) =>
        body.prompt === 'hold' || JSON.stringify(body.messages ?? '').includes('hold')
          ? new Promise<void>((resolve) => (release = resolve))
          : Promise.resolve(),
    });
    cleanups.push(() => upstream.close());
  });

  /** Two people of team web, each with `limits`, and the team's own `teamLimits`. */
  async function limitedBridge(
    limits: Record<string, number> | undefined,
    teamLimits?: Record<string, number>,
  ): Promise<{ bridge: BridgeHandle; keys: string[] }> {
    const file = configFile(`backends:\n  - name: gpu0\n    url: ${upstream.url}\n`);
    const keys = [addKey(file, { name: 'ann', team: 'web', role: 'user' }), addKey(file, { name: 'ben', team: 'web', role: 'user' })];
    const config = YAML.parse(readFileSync(file, 'utf8')) as { auth: { keys: Array<Record<string, unknown>>; teams?: unknown } };
    if (limits !== undefined) for (const key of config.auth.keys) key.limits = limits;
    if (teamLimits !== undefined) config.auth.teams = { web: { limits: teamLimits } };
    writeFileSync(file, YAML.stringify(config));
    const bridge = await startTestBridge({ file });
    cleanups.push(() => bridge.stop(100));
    return { bridge, keys };
  }

  it('requests per minute: 429 with Retry-After on each surface, recorded in history', async () => {
    const { bridge, keys } = await limitedBridge({ rpm: 1 });
    const key = keys[0] as string;
    assert.equal((await call(bridge, 'POST', '/api/chat', bearer(key), SURFACES[0].body)).status, 200);
    for (const surface of SURFACES) {
      const recorded = nextRecord(bridge);
      const response = await call(bridge, 'POST', surface.path, bearer(key), surface.body);
      const retryAfter = Number(response.headers.get('retry-after'));
      assert.ok(retryAfter >= 1 && retryAfter <= 60, `${surface.name}: Retry-After ${retryAfter}`);
      assert.match(await assertShape(response, surface.shape, 429, 'rate_limit_exceeded'), /rpm of ann/);
      const record = await recorded;
      assert.equal(record.status, 429);
      assert.equal(record.user, 'ann');
      assert.match(record.reason, /rate limit reached: rpm of ann/);
    }
    assert.equal((await call(bridge, 'POST', '/api/chat', bearer(keys[1] as string), SURFACES[0].body)).status, 200, 'another person has their own budget');
    assert.match(
      await (await call(bridge, 'GET', '/metrics', { 'x-bridge-token': bridge.controlToken })).text(),
      new RegExp(`copilot_bridge_rate_limited_total\\{team="web"\\} ${SURFACES.length}`),
    );
  });

  it('counts a request whatever the letter case or trailing slash of its path, as the router serves it', async () => {
    const { bridge, keys } = await limitedBridge({ rpm: 1 });
    const key = keys[0] as string;
    assert.equal((await call(bridge, 'POST', '/api/chat', bearer(key), SURFACES[0].body)).status, 200);
    for (const [pathname, surface] of [
      ['/API/chat', SURFACES[0]],
      ['/api/chat/', SURFACES[0]],
      ['/V1/Chat/Completions', SURFACES[2]],
      ['/v1/engines/m-small/completions/', SURFACES[4]],
    ] as const) {
      assert.match(await assertShape(await call(bridge, 'POST', pathname, bearer(key), surface.body), surface.shape, 429), /rpm of ann/, pathname);
    }
  });

  describe('the counters themselves, on a clock of the test', () => {
    let now = 0;
    /** A limiter for team web with `teamLimits`, in this process. */
    function limiter(teamLimits: LimitsConfig): Limiter {
      const config = loadConfig({ env: {} });
      const limited = new Limiter(
        { ...config, auth: { ...config.auth, teams: { web: { cloud: 'allow', limits: teamLimits } } } },
        memoryLogger().logger,
        () => now,
      );
      cleanups.push(() => limited.close());
      return limited;
    }
    const person = (name: string, limits?: LimitsConfig): Identity => ({
      name,
      team: 'web',
      role: 'user',
      via: 'key',
      models: undefined,
      cloud: 'allow',
      limits,
    });
    const refusal = async (limits: Limiter, identity: Identity): Promise<string | null> => {
      const result = await limits.admit(identity);
      return isRefusal(result) ? result.limit : null;
    };

    it('a counter store that stopped answering holds one request per retry period, not every request', async () => {
      // A Redis that takes connections and answers the client's ready check, then nothing more
      // (hung, or cut off by the network): it counts the limit scripts it is sent.
      let scriptsSent = 0;
      const silent = createNetServer((socket) => {
        socket.on('data', (chunk: Buffer) => {
          for (const command of chunk.toString().match(/^\*\d+\r\n\$\d+\r\n[A-Za-z]+/gm) ?? []) {
            const name = command.split('\r\n')[2]?.toUpperCase();
            if (name === 'EVALSHA' || name === 'EVAL') scriptsSent += 1;
            else socket.write(name === 'INFO' ? '$11\r\nloading:0\r\n\r\n' : '+OK\r\n');
          }
        });
      });
      await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
      cleanups.push(() => new Promise((resolve) => silent.close(() => resolve())));
      const config = loadConfig({ env: {} });
      const log = memoryLogger();
      now = 0;
      const limits = new Limiter(
        { ...config, limits: { ...config.limits, redis_url: `redis://127.0.0.1:${(silent.address() as AddressInfo).port}` } },
        log.logger,
        () => now,
      );
      cleanups.push(() => limits.close());
      const ann = person('ann', { rpm: 60 });
      for (let i = 0; i < 4; i++) assert.equal(await refusal(limits, ann), null, 'let through: limits are not the access control');
      assert.equal(scriptsSent, 1, 'only the first request waited for the store');
      assert.equal(log.lines().filter((line) => String(line.msg).startsWith('limits: the counter store failed')).length, 1);
      now = STORE_RETRY_MS;
      assert.equal(await refusal(limits, ann), null);
      assert.equal(scriptsSent, 2, 'the store is asked again once the retry period is over');
    });

    it("a request the team's budget refuses takes nothing from the person's own", async () => {
      now = 0;
      const limits = limiter({ rpm: 6 });
      const ann = person('ann', { rpm: 3 });
      for (let i = 0; i < 6; i++) assert.equal(await refusal(limits, person('ben')), null);
      for (let i = 0; i < 3; i++) assert.equal(await refusal(limits, ann), 'rpm of team web');
      // 10 s later the team has one request again; ann has made none, so hers are all there.
      now = 10_000;
      assert.equal(await refusal(limits, ann), null);
    });

    it("requests arriving together: one the team's budget refuses still takes nothing from the person's own", async () => {
      now = 0;
      const limits = limiter({ rpm: 2 });
      const ben = person('ben', { rpm: 1 });
      // Three at once against a team budget of two: one is refused, whichever came last.
      const refusals = await Promise.all([refusal(limits, ben), refusal(limits, person('ann')), refusal(limits, person('ann'))]);
      assert.deepEqual(
        refusals.filter((limit) => limit !== null),
        ['rpm of team web'],
      );
      // 30 s later the team has one request again; ben's own one is there only if his was refused.
      now = 30_000;
      const benRefused = refusals[0] !== null;
      assert.equal(await refusal(limits, ben), benRefused ? null : 'rpm of ben');
    });
  });

  it('a team budget is shared by its people', async () => {
    const { bridge, keys } = await limitedBridge(undefined, { rpm: 2 });
    assert.equal((await call(bridge, 'POST', '/api/chat', bearer(keys[0] as string), SURFACES[0].body)).status, 200);
    assert.equal((await call(bridge, 'POST', '/api/chat', bearer(keys[1] as string), SURFACES[0].body)).status, 200);
    assert.match(await assertShape(await call(bridge, 'POST', '/api/chat', bearer(keys[1] as string), SURFACES[0].body), 'ollama', 429), /rpm of team web/);
  });

  it('tokens per minute: an answer that used the budget up makes the next request wait for the refill', async () => {
    const { bridge, keys } = await limitedBridge({ tpm: 12 });
    const key = keys[0] as string;
    const recorded = nextRecord(bridge);
    assert.equal((await call(bridge, 'POST', '/api/chat', bearer(key), SURFACES[0].body)).status, 200, 'admitted with a full bucket');
    await recorded;
    // 10 + 20 tokens were charged to a bucket of 12: 18 in debt, refilled at 12 per minute -> (18 + 1) / 0.2 per second.
    const response = await call(bridge, 'POST', '/v1/chat/completions', bearer(key), SURFACES[2].body);
    assert.match(await assertShape(response, 'openai', 429, 'rate_limit_exceeded'), /tpm of ann/);
    const retryAfter = Number(response.headers.get('retry-after'));
    assert.ok(retryAfter > 90 && retryAfter <= 95, `Retry-After ${retryAfter}`);
  });

  it('concurrency: a second request while one runs gets 429; once it ends, the slot is free', async () => {
    const { bridge, keys } = await limitedBridge({ concurrency: 1 });
    const key = keys[0] as string;
    const running = call(bridge, 'POST', '/api/generate', bearer(key), { model: 'm-small', prompt: 'hold', stream: true });
    const first = await running;
    assert.equal(first.status, 200);
    await assertShape(await call(bridge, 'POST', '/api/generate', bearer(key), SURFACES[1].body), 'ollama', 429);
    const finished = nextRecord(bridge);
    release?.();
    await first.text();
    await finished;
    assert.equal((await call(bridge, 'POST', '/api/generate', bearer(key), SURFACES[1].body)).status, 200);
  });
});

describe('never-cloud', () => {
  it('keeps a cloud: never team, the x-bridge-local-only header and fallback.never_models off the cloud, with the reason in history', async () => {
    const cloud = await startStandIn((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(
        `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', model: 'gpt-test', choices: [{ index: 0, delta: { role: 'assistant', content: 'from the cloud' }, finish_reason: 'stop' }] })}\n\n`,
      );
      res.end('data: [DONE]\n\n');
    });
    const file = path.join(tempDir('never-cloud-'), 'config.yaml');
    const down = await freePort();
    writeFileSync(
      file,
      `backends:\n  - name: gpu0\n    url: http://127.0.0.1:${down}\nfallback:\n  enabled: true\n  never_models: ['secret-*']\n  providers:\n    - name: cloud\n      type: openai\n      base_url: ${cloud.url}/v1\n      model: gpt-test\nauth:\n  teams:\n    legal:\n      cloud: never\n`,
    );
    const open = addKey(file, { name: 'olga', team: 'web', role: 'user' });
    const legal = addKey(file, { name: 'lou', team: 'legal', role: 'user' });
    const bridge = await startTestBridge({ file, env: { OPENAI_API_KEY: 'sk-test' } });
    cleanups.push(
      () => bridge.stop(100),
      () => cloud.close(),
    );
    const ask = async (key: string, model: string, headers: Record<string, string> = {}): Promise<{ status: number; record: HistoryRecord }> => {
      const recorded = nextRecord(bridge);
      const response = await call(
        bridge,
        'POST',
        '/v1/chat/completions',
        { ...bearer(key), ...headers },
        { model, messages: [{ role: 'user', content: 'hi' }] },
      );
      await response.text();
      return { status: response.status, record: await recorded };
    };

    const allowed = await ask(open, 'qwen2.5-coder:7b');
    assert.equal(allowed.status, 200);
    assert.equal(allowed.record.fallback, 'cloud');
    assert.equal(cloud.requests.length, 1);

    for (const [key, model, headers, why] of [
      [legal, 'qwen2.5-coder:7b', {}, /cloud fallback skipped: lou \(team legal\) is cloud: never/],
      [open, 'qwen2.5-coder:7b', { 'x-bridge-local-only': '1' }, /cloud fallback skipped: x-bridge-local-only header/],
      [open, 'secret-model', {}, /cloud fallback skipped: secret-model is in fallback.never_models/],
    ] as const) {
      const { status, record } = await ask(key, model, headers);
      assert.equal(status, 503, String(why));
      assert.match(record.reason, why);
      assert.equal(record.fallback, null);
      assert.ok(record.localOnly !== null);
    }
    assert.equal(cloud.requests.length, 1, 'the cloud provider was asked only by the request that may go there');
    assert.deepEqual(bridge.state.cloudPolicy, { header: 'x-bridge-local-only', neverModels: ['secret-*'], localOnlyTeams: ['legal'], localOnlyKeys: [] });
  });

  /** A bridge over an Ollama that lists one of its cloud models, and a chat request for that model. */
  const cloudModelBridge = async (): Promise<{ upstream: StandIn; bridge: BridgeHandle; body: Record<string, unknown> }> => {
    const upstream = await startStandIn(() => undefined, ['gpt-oss:120b-cloud', 'm-small']);
    const file = configFile(`backends:\n  - name: gpu0\n    url: ${upstream.url}\n`);
    const bridge = await startTestBridge({ file });
    cleanups.push(
      () => bridge.stop(100),
      () => upstream.close(),
    );
    return { upstream, bridge, body: { model: 'gpt-oss:120b-cloud', messages: [{ role: 'user', content: 'hi' }] } };
  };

  it("treats Ollama's own cloud models as cloud: a local-only request for one is refused", async () => {
    const { upstream, bridge, body } = await cloudModelBridge();
    const response = await call(bridge, 'POST', '/api/chat', { 'x-bridge-local-only': 'true' }, body);
    assert.match(await assertShape(response, 'ollama', 403), /runs in a cloud/);
    const openAi = await call(bridge, 'POST', '/v1/chat/completions', { 'x-bridge-local-only': 'true' }, body);
    assert.match(await assertShape(openAi, 'openai', 403, 'cloud_not_allowed'), /runs in a cloud/);
    assert.equal(upstream.requests.length, 0);
  });

  it('keeps a request local when x-bridge-local-only arrives twice (a proxy adding it to what the client sent)', async () => {
    const { upstream, bridge, body } = await cloudModelBridge();
    const headers = new Headers({ 'content-type': 'application/json' });
    headers.append('x-bridge-local-only', '1');
    headers.append('x-bridge-local-only', 'true');
    const response = await fetch(`${bridge.url}/api/chat`, { method: 'POST', headers, body: JSON.stringify(body) });
    assert.match(await assertShape(response, 'ollama', 403), /runs in a cloud/);
    assert.equal(upstream.requests.length, 0);
  });
});
