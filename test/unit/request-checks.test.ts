import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { BridgeHandle } from '../../src/bridge.js';
import { HEADER_VALUE_MAX } from '../../src/routing/signals.js';
import { startStandIn, startTestBridge, type StandIn } from '../support/bridge.js';

/**
 * Requests that are valid JSON but ask for something the bridge must not pass on as it is: a
 * token limit Ollama would read as none, values outside the ranges the client's own API accepts,
 * Responses input with nothing to answer, a model name too long to echo in a header.
 */

const FINAL = { created_at: '2025-01-01T00:00:00Z', message: { role: 'assistant', content: 'ok' }, done: true, done_reason: 'stop', eval_count: 1 };

describe('requests checked before they go upstream', () => {
  let upstream: StandIn;
  let bridge: BridgeHandle;
  before(async () => {
    // Answers any model, as an Ollama with that name installed would.
    upstream = await startStandIn(
      (_req, res, body) => {
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        res.end(`${JSON.stringify({ model: (JSON.parse(body) as { model: string }).model, ...FINAL })}\n`);
      },
      ['m:latest'],
    );
    bridge = await startTestBridge({ env: { OLLAMA_HOST: upstream.url } });
  });
  after(async () => {
    await bridge?.stop(100);
    await upstream?.close();
  });

  const post = (path: string, body: unknown): Promise<Response> =>
    fetch(`${bridge.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const generations = (): number => upstream.requests.filter((r) => r.url === '/api/chat' || r.url === '/api/generate').length;

  /** Posts each case, expects 400 in OpenAI's shape naming `param`, and that nothing went upstream. */
  const expectOpenAiRefusals = async (cases: ReadonlyArray<[string, Record<string, unknown>, string, RegExp]>): Promise<void> => {
    const before = generations();
    for (const [path, body, param, message] of cases) {
      const response = await post(path, body);
      assert.equal(response.status, 400, `${path} ${JSON.stringify(body)}`);
      const { error } = (await response.json()) as { error: { param: string; code: string; type: string; message: string } };
      assert.equal(error.param, param, JSON.stringify(body));
      assert.equal(error.code, 'invalid_request');
      assert.equal(error.type, 'invalid_request_error');
      assert.match(error.message, message);
    }
    assert.equal(generations(), before);
  };

  it('refuses OpenAI token limits below 1 (Ollama reads 0 and below as no limit) in OpenAI’s shape, sending nothing upstream', async () => {
    const messages = [{ role: 'user', content: 'hi' }];
    const cases: Array<[string, Record<string, unknown>, string]> = [
      ['/v1/chat/completions', { model: 'm', messages, max_tokens: 0 }, 'max_tokens'],
      ['/v1/chat/completions', { model: 'm', messages, max_tokens: -1, stream: true }, 'max_tokens'],
      ['/v1/chat/completions', { model: 'm', messages, max_completion_tokens: -7 }, 'max_completion_tokens'],
      ['/v1/completions', { model: 'm', prompt: 'x', max_tokens: 0 }, 'max_tokens'],
      ['/v1/engines/m/completions', { prompt: 'x', max_tokens: -1 }, 'max_tokens'],
    ];
    const before = generations();
    for (const [path, body, param] of cases) {
      const response = await post(path, body);
      assert.equal(response.status, 400, `${path} ${JSON.stringify(body)}`);
      const { error } = (await response.json()) as { error: { param: string; code: string; message: string } };
      assert.equal(error.param, param);
      assert.equal(error.code, 'invalid_request');
      assert.match(error.message, new RegExp(`^${param}: must be at least 1`));
    }
    assert.equal(generations(), before);
    const allowed = await post('/v1/chat/completions', { model: 'm', messages, max_tokens: 1 });
    assert.equal(allowed.status, 200);
  });

  it('refuses OpenAI sampling values outside the ranges OpenAI accepts, naming the field, on chat, completions and Responses', async () => {
    const messages = [{ role: 'user', content: 'hi' }];
    const outOfRange = (param: string): [string, RegExp] => [param, new RegExp(`^${param}: must be between`)];
    await expectOpenAiRefusals(
      (
        [
          ['/v1/chat/completions', { model: 'm', messages, temperature: 2.01 }, 'temperature'],
          ['/v1/chat/completions', { model: 'm', messages, temperature: -0.5, stream: true }, 'temperature'],
          ['/v1/chat/completions', { model: 'm', messages, top_p: 1.5 }, 'top_p'],
          ['/v1/chat/completions', { model: 'm', messages, top_p: -0.1 }, 'top_p'],
          ['/v1/chat/completions', { model: 'm', messages, presence_penalty: -2.5 }, 'presence_penalty'],
          ['/v1/chat/completions', { model: 'm', messages, frequency_penalty: 3 }, 'frequency_penalty'],
          ['/v1/chat/completions', { model: 'm', messages, logprobs: true, top_logprobs: 21 }, 'top_logprobs'],
          ['/chat/completions', { model: 'm', messages, temperature: 100 }, 'temperature'],
          ['/v1/completions', { model: 'm', prompt: 'x', temperature: 2.5 }, 'temperature'],
          ['/v1/completions', { model: 'm', prompt: 'x', top_p: 2 }, 'top_p'],
          ['/v1/completions', { model: 'm', prompt: 'x', presence_penalty: 2.5 }, 'presence_penalty'],
          ['/v1/completions', { model: 'm', prompt: 'x', frequency_penalty: -3 }, 'frequency_penalty'],
          ['/v1/completions', { model: 'm', prompt: 'x', logprobs: 6 }, 'logprobs'],
          ['/v1/engines/m/completions', { prompt: 'x', temperature: -1 }, 'temperature'],
          ['/v1/responses', { model: 'm', input: 'hi', temperature: 3 }, 'temperature'],
          ['/v1/responses', { model: 'm', input: 'hi', top_p: 1.01 }, 'top_p'],
          ['/v1/responses', { model: 'm', input: 'hi', top_logprobs: -1 }, 'top_logprobs'],
        ] as const
      ).map(([path, body, param]) => [path, body, ...outOfRange(param)]),
    );
    // Whole numbers only, where OpenAI's field is an integer.
    await expectOpenAiRefusals([
      ['/v1/chat/completions', { model: 'm', messages, top_logprobs: 1.5 }, 'top_logprobs', /^top_logprobs: /],
      ['/v1/completions', { model: 'm', prompt: 'x', logprobs: 0.5 }, 'logprobs', /^logprobs: /],
      ['/v1/chat/completions', { model: 'm', messages, logprobs: 1 }, 'logprobs', /^logprobs: /],
    ]);

    // The bounds themselves are OpenAI's own values, which clients send (temperature 0, top_p 1).
    const edges = [
      [
        '/v1/chat/completions',
        { model: 'm', messages, temperature: 2, top_p: 0, presence_penalty: -2, frequency_penalty: 2, logprobs: true, top_logprobs: 20 },
      ],
      ['/v1/chat/completions', { model: 'm', messages, temperature: 0, top_p: 1, presence_penalty: 2, frequency_penalty: -2, top_logprobs: 0 }],
      ['/v1/completions', { model: 'm', prompt: 'x', temperature: 2, top_p: 1, presence_penalty: -2, frequency_penalty: 2, logprobs: 5 }],
      ['/v1/completions', { model: 'm', prompt: 'x', temperature: 0, top_p: 0, logprobs: 0 }],
      ['/v1/responses', { model: 'm', input: 'hi', temperature: 2, top_p: 1, top_logprobs: 20 }],
      ['/v1/responses', { model: 'm', input: 'hi', temperature: 0, top_p: 0, top_logprobs: 0 }],
    ] as const;
    for (const [path, body] of edges) {
      const response = await post(path, body);
      assert.equal(response.status, 200, `${path} ${JSON.stringify(body)}: ${await response.text()}`);
    }
    const sent = JSON.parse(upstream.requests.filter((r) => r.url === '/api/chat').at(-1)?.body ?? '{}') as { options: Record<string, unknown> };
    assert.deepEqual(sent.options, { temperature: 0, top_p: 0 });
  });

  it('refuses an OpenAI chat message without the content its role requires; an assistant turn may carry tool calls alone', async () => {
    const hi = { role: 'user', content: 'hi' };
    const required = (index: number, role: string): RegExp => new RegExp(`^messages\\.${index}\\.content: required in a ${role} message`);
    await expectOpenAiRefusals([
      ['/v1/chat/completions', { model: 'm', messages: [{ role: 'user' }] }, 'messages.0.content', required(0, 'user')],
      ['/v1/chat/completions', { model: 'm', messages: [{ role: 'user', content: null }], stream: true }, 'messages.0.content', required(0, 'user')],
      ['/v1/chat/completions', { model: 'm', messages: [{ role: 'system', content: null }, hi] }, 'messages.0.content', required(0, 'system')],
      ['/v1/chat/completions', { model: 'm', messages: [{ role: 'developer' }, hi] }, 'messages.0.content', required(0, 'developer')],
      ['/v1/chat/completions', { model: 'm', messages: [hi, { role: 'tool', tool_call_id: 'call_1' }] }, 'messages.1.content', required(1, 'tool')],
    ]);
    const toolRound = await post('/v1/chat/completions', {
      model: 'm',
      messages: [
        hi,
        { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'f', arguments: '{}' } }] },
        { role: 'tool', tool_call_id: 'call_1', content: '' },
        { role: 'user', content: [{ type: 'text', text: 'and now?' }] },
      ],
    });
    assert.equal(toolRound.status, 200, await toolRound.text());
  });

  it('refuses Responses input with no message to answer in it (empty, or only items the bridge passes over)', async () => {
    const before = generations();
    for (const input of [[], [{ type: 'item_reference', id: 'msg_1' }]]) {
      const response = await post('/v1/responses', { model: 'm', input, instructions: 'Be brief.' });
      assert.equal(response.status, 400, JSON.stringify(input));
      const { error } = (await response.json()) as { error: { param: string; message: string } };
      assert.equal(error.param, 'input');
      assert.match(error.message, /no message to answer/);
    }
    assert.equal(generations(), before);
  });

  it('reads a body that starts with a UTF-8 byte order mark, as RFC 8259 allows', async () => {
    const body = `\ufeff${JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hi' }], stream: false })}`;
    const response = await fetch(`${bridge.url}/api/chat`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    assert.equal(response.status, 200);
    assert.equal(((await response.json()) as { message: { content: string } }).message.content, 'ok');
  });

  it('answers errors in the shape of the surface that serves the path, in any letter case', async () => {
    const openai = await post('/V1/Chat/Completions', { model: 'm', messages: 'hi' });
    assert.equal(openai.status, 400);
    assert.equal(((await openai.json()) as { error: { param: string } }).error.param, 'messages');
    const anthropic = await post('/V1/MESSAGES', { model: 'm', max_tokens: 5, messages: 'hi' });
    assert.equal(anthropic.status, 400);
    assert.equal(((await anthropic.json()) as { type: string }).type, 'error');
  });

  it('cuts what it echoes of a model name in a header to HEADER_VALUE_MAX characters, so the client can still read the answer', async () => {
    const model = `m${'x'.repeat(20_000)}`;
    for (const [path, body] of [
      ['/api/chat', { model, messages: [{ role: 'user', content: 'hi' }], stream: false }],
      ['/v1/chat/completions', { model, messages: [{ role: 'user', content: 'hi' }], stream: true }],
    ] as const) {
      const response = await post(path, body);
      assert.equal(response.status, 200, path);
      const echoed = response.headers.get('x-bridge-model') ?? '';
      assert.equal(echoed, `${model.slice(0, HEADER_VALUE_MAX - 3)}...`);
      assert.ok((response.headers.get('x-bridge-route-reason') ?? '').length <= HEADER_VALUE_MAX);
      assert.match(await response.text(), /ok/);
    }
  });
});
