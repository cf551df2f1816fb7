import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { addKey } from '../../src/auth/keys.js';
import type { BridgeHandle } from '../../src/bridge.js';
import type { HistoryRecord } from '../../src/contract/index.js';
import { startStandIn, startTestBridge, type StandIn } from '../support/bridge.js';
import { configFile } from '../support/temp.js';

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** The next history record the bridge writes. */
function nextRecord(bridge: BridgeHandle): Promise<HistoryRecord> {
  return new Promise((resolve) => {
    const off = bridge.history.onRecord((record) => {
      off();
      resolve(record);
    });
  });
}

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
        res.end(JSON.stringify({ model: 'x', embeddings: [[0.5]], embedding: [0.5], prompt_eval_count: 1 }));
      },
      ['allowed:latest', 'm:latest'],
    );
    // Virtual models embed with m:latest, which the key may not use.
    const file = configFile(`backends:\n  - name: gpu0\n    url: ${upstream.url}\nmodels:\n  embedding:\n    name: m:latest\n`);
    user = addKey(file, { name: 'ria', role: 'user', models: ['allowed*'] });
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
      assert.match(await refusedModel(await send('POST', path, { model: 'auto', input: 'x', prompt: 'x' }), shape), /'m:latest'/);
    }
  });

  it('checks every key Ollama reads as the model: its JSON decoder ignores case', async () => {
    const before = upstream.requests.length;
    const body = '{"model":"allowed:latest","input":"x","Model":"m:latest"}';
    const response = await fetch(`${bridge.url}/api/embed`, { method: 'POST', headers: { authorization: `Bearer ${user}` }, body });
    assert.match(await refusedModel(response, 'ollama'), /'m:latest'/);
    assert.equal(upstream.requests.length, before);
  });
});
