import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import { after, describe, it } from 'node:test';
import { postJson, startStandIn, startTestBridge } from '../support/bridge.js';

/**
 * n choices each run as a request of their own; with one seed for all, Ollama samples each the same
 * way and every choice is the same text. OpenAI's choices under a seed differ from one another.
 */

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

function answer(url: string, res: ServerResponse): void {
  res.writeHead(200, { 'content-type': 'application/json' });
  const done = { model: 'qwen2.5-coder:7b', created_at: '2025-01-01T00:00:00Z', done: true, done_reason: 'stop', prompt_eval_count: 1, eval_count: 1 };
  res.end(JSON.stringify(url === '/api/chat' ? { ...done, message: { role: 'assistant', content: 'x' } } : { ...done, response: 'x' }));
}

async function seedsSent(path: string, body: Record<string, unknown>): Promise<unknown[]> {
  const upstream = await startStandIn((req, res) => answer(req.url ?? '', res));
  const bridge = await startTestBridge({ env: { OLLAMA_HOST: upstream.url } });
  cleanups.push(
    () => bridge.stop(100),
    () => upstream.close(),
  );
  const response = await postJson(`${bridge.url}${path}`, { model: 'qwen2.5-coder:7b', ...body });
  assert.equal(response.status, 200);
  await response.arrayBuffer();
  return upstream.requests.map((r) => (JSON.parse(r.body) as { options?: { seed?: unknown } }).options?.seed);
}

describe('n choices under a seed', () => {
  it('are sampled with a seed of their own in a chat request, from the one asked for', async () => {
    assert.deepEqual(await seedsSent('/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }], n: 3, seed: 7 }), [7, 8, 9]);
  });

  it('are sampled with a seed of their own in a completion request', async () => {
    assert.deepEqual(await seedsSent('/v1/completions', { prompt: 'def add(', n: 2, seed: 7 }), [7, 8]);
  });

  it('send no seed when none was asked for', async () => {
    assert.deepEqual(await seedsSent('/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }], n: 2 }), [undefined, undefined]);
  });
});
