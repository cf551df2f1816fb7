import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { BridgeHandle } from '../../src/bridge.js';
import { gzipSync } from 'node:zlib';
import { HEADER_VALUE_MAX } from '../../src/routing/signals.js';
import { startStandIn, startTestBridge, type StandIn } from '../support/bridge.js';
import { documentedErrors } from '../support/readme.js';

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

  const post = (path: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> =>
    fetch(`${bridge.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
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

  /** Posts each Messages body, expects 400 in Anthropic's shape with a message that starts with the field, and nothing upstream. */
  const expectAnthropicRefusals = async (cases: ReadonlyArray<[Record<string, unknown>, RegExp]>, headers: Record<string, string> = {}): Promise<void> => {
    const before = generations();
    for (const [body, message] of cases) {
      const response = await post('/v1/messages', body, headers);
      assert.equal(response.status, 400, JSON.stringify(body));
      const answer = (await response.json()) as { type: string; error: { type: string; message: string } };
      assert.equal(answer.type, 'error');
      assert.equal(answer.error.type, 'invalid_request_error');
      assert.match(answer.error.message, message, JSON.stringify(body));
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

  it('refuses a completion prompt of several texts or of token ids with a message saying what it takes, and takes a list of one text', async () => {
    const onePrompt = /^prompt: a text, or a list of one text/;
    await expectOpenAiRefusals([
      ['/v1/completions', { model: 'm', prompt: ['a', 'b'] }, 'prompt', onePrompt],
      ['/v1/completions', { model: 'm', prompt: [1, 2, 3], stream: true }, 'prompt', onePrompt],
      ['/v1/engines/m/completions', { prompt: [[1, 2]] }, 'prompt', onePrompt],
    ]);
    const listOfOne = await post('/v1/completions', { model: 'm', prompt: ['def f():'] });
    assert.equal(listOfOne.status, 200, await listOfOne.text());
  });

  it('says which part of a field that takes one of several forms is wrong, not only "Invalid input"', async () => {
    const messages = [{ role: 'user', content: 'x' }];
    await expectOpenAiRefusals([
      ['/v1/chat/completions', { model: 'm', messages, stop: [1, 2] }, 'stop.0', /^stop\.0: Invalid input: expected string, received number$/],
      ['/v1/chat/completions', { model: 'm', messages, stop: 5 }, 'stop', /^stop: Invalid input: expected string or array, received number$/],
      ['/v1/chat/completions', { model: 'm', messages: [{ role: 'user', content: [1, 2] }] }, 'messages.0.content.0', /^messages\.0\.content\.0: /],
    ]);
  });

  it('refuses a thinking budget Anthropic refuses: below 1024, not a whole number, missing, or not below max_tokens', async () => {
    const messages = [{ role: 'user', content: 'hi' }];
    const enabled = (budget_tokens: unknown, max_tokens = 32_000): Record<string, unknown> => ({
      model: 'm',
      max_tokens,
      messages,
      thinking: budget_tokens === undefined ? { type: 'enabled' } : { type: 'enabled', budget_tokens },
    });
    await expectAnthropicRefusals([
      [enabled(-1), /^thinking\.budget_tokens: must be at least 1024/],
      [enabled(1023), /^thinking\.budget_tokens: must be at least 1024/],
      [enabled(1500.5), /^thinking\.budget_tokens: /],
      [enabled('2048'), /^thinking\.budget_tokens: /],
      [enabled(undefined), /^thinking\.budget_tokens: required when thinking is enabled/],
      [enabled(1e12), /^thinking\.budget_tokens: must be less than max_tokens \(32000\)/],
      [enabled(2048, 2048), /^thinking\.budget_tokens: must be less than max_tokens \(2048\)/],
      [{ ...enabled(2048, 2048), stream: true }, /^thinking\.budget_tokens: must be less than max_tokens/],
    ]);
    // Claude Code's own request, the smallest budget, and a budget over max_tokens with interleaved
    // thinking, where the budget covers every thinking block of the turn.
    for (const [body, headers] of [
      [enabled(31_999, 32_000), {}],
      [enabled(1024, 1025), {}],
      [{ ...enabled(2000, 100), stream: true }, { 'anthropic-beta': 'claude-code-20250219,interleaved-thinking-2025-05-14' }],
      [{ model: 'm', max_tokens: 100, messages, thinking: { type: 'adaptive' } }, {}],
      [{ model: 'm', max_tokens: 100, messages, thinking: { type: 'disabled' } }, {}],
    ] as const) {
      const response = await post('/v1/messages', body, headers);
      assert.equal(response.status, 200, `${JSON.stringify(body)}: ${await response.text()}`);
    }
  });

  it('names a missing Messages field once, as Anthropic does ("model: Field required"), on /v1/messages and count_tokens', async () => {
    const messages = [{ role: 'user', content: 'hi' }];
    await expectAnthropicRefusals([
      [{ max_tokens: 10, messages }, /^model: Field required$/],
      [{ model: '', max_tokens: 10, messages }, /^model: Field required$/],
      [{ model: 'm', max_tokens: 10, messages: [] }, /^messages: at least one message is required$/],
    ]);
    const counted = await post('/v1/messages/count_tokens', { messages });
    assert.equal(counted.status, 400);
    assert.equal(((await counted.json()) as { error: { message: string } }).error.message, 'model: Field required');
  });

  it('refuses Messages with nothing to answer once empty blocks are passed over, instead of sending Ollama a model load (no messages)', async () => {
    const system = 'Be brief.';
    await expectAnthropicRefusals([
      [{ model: 'm', max_tokens: 10, messages: [{ role: 'user', content: [] }] }, /^messages: there is no message to answer in them/],
      [
        { model: 'm', max_tokens: 10, system, messages: [{ role: 'user', content: [{ type: 'redacted_thinking', data: 'x' }] }] },
        /^messages: there is no message to answer/,
      ],
      [
        {
          model: 'm',
          max_tokens: 10,
          stream: true,
          messages: [
            { role: 'user', content: [] },
            { role: 'system', content: system },
          ],
        },
        /^messages: there is no message/,
      ],
    ]);
  });

  it('refuses an Anthropic tool_choice that names no tool of the request', async () => {
    const base = { model: 'm', max_tokens: 100, messages: [{ role: 'user', content: 'hi' }] };
    const tools = [{ name: 'read_file', description: 'Read a file', input_schema: { type: 'object', properties: {} } }];
    await expectAnthropicRefusals([
      [{ ...base, tools, tool_choice: { type: 'tool', name: 'write_file' } }, /^tool_choice\.name: no tool named 'write_file' in tools/],
      [{ ...base, tool_choice: { type: 'tool', name: 'read_file' } }, /^tool_choice\.name: no tool named 'read_file' in tools/],
      [{ ...base, tools, tool_choice: { type: 'tool' } }, /^tool_choice\.name: required when tool_choice.type is tool/],
    ]);
    const named = await post('/v1/messages', { ...base, tools, tool_choice: { type: 'tool', name: 'read_file' } });
    assert.equal(named.status, 200, await named.text());
    const sent = JSON.parse(upstream.requests.filter((r) => r.url === '/api/chat').at(-1)?.body ?? '{}') as { tools: Array<{ function: { name: string } }> };
    assert.deepEqual(
      sent.tools.map((t) => t.function.name),
      ['read_file'],
    );
  });

  it('refuses a Responses tool_choice that names no function tool of the request, as OpenAI does', async () => {
    const base = { model: 'm', input: 'hi' };
    const tools = [{ type: 'function', name: 'read_file', parameters: { type: 'object', properties: {} } }];
    await expectOpenAiRefusals([
      ['/v1/responses', { ...base, tools, tool_choice: { type: 'function', name: 'write_file' } }, 'tool_choice.name', /no tool named 'write_file' in tools/],
      ['/v1/responses', { ...base, tool_choice: { type: 'function', name: 'read_file' } }, 'tool_choice.name', /no tool named 'read_file' in tools/],
    ]);
    const named = await post('/v1/responses', { ...base, tools, tool_choice: { type: 'function', name: 'read_file' } });
    assert.equal(named.status, 200, await named.text());
    const sent = JSON.parse(upstream.requests.filter((r) => r.url === '/api/chat').at(-1)?.body ?? '{}') as { tools: Array<{ function: { name: string } }> };
    assert.deepEqual(
      sent.tools.map((t) => t.function.name),
      ['read_file'],
    );
  });

  it('holds chat completions to tool_choice: none sends no tools, a named function only that one, a name not offered is refused', async () => {
    const base = { model: 'm', messages: [{ role: 'user', content: 'hi' }] };
    const tools = ['read_file', 'write_file'].map((name) => ({ type: 'function', function: { name, parameters: { type: 'object', properties: {} } } }));
    await expectOpenAiRefusals([
      [
        '/v1/chat/completions',
        { ...base, tools, tool_choice: { type: 'function', function: { name: 'delete_file' } } },
        'tool_choice',
        /no tool named 'delete_file' in tools/,
      ],
    ]);
    const sentTools = async (toolChoice: unknown): Promise<string[] | undefined> => {
      const response = await post('/v1/chat/completions', { ...base, tools, tool_choice: toolChoice });
      assert.equal(response.status, 200, await response.text());
      const sent = JSON.parse(upstream.requests.filter((r) => r.url === '/api/chat').at(-1)?.body ?? '{}') as { tools?: Array<{ function: { name: string } }> };
      return sent.tools?.map((t) => t.function.name);
    };
    assert.equal(await sentTools('none'), undefined);
    assert.deepEqual(await sentTools({ type: 'function', function: { name: 'write_file' } }), ['write_file']);
    assert.deepEqual(await sentTools('auto'), ['read_file', 'write_file']);
  });

  it('refuses an Ollama embedding request whose model is not a string, in Ollama’s shape, sending nothing upstream', async () => {
    const embeds = (): number => upstream.requests.filter((r) => r.url === '/api/embed' || r.url === '/api/embeddings').length;
    const before = embeds();
    for (const [path, body] of [
      ['/api/embed', { model: 5, input: 'hi' }],
      ['/api/embed', { model: { name: 'm' }, input: 'hi' }],
      ['/api/embed', { model: ['m'], input: ['hi'] }],
      ['/api/embeddings', { model: true, prompt: 'hi' }],
    ] as const) {
      const response = await post(path, body);
      assert.equal(response.status, 400, `${path} ${JSON.stringify(body)}`);
      const answer = (await response.json()) as { error: string };
      assert.match(answer.error, /^model: must be a string/);
    }
    assert.equal(embeds(), before);
    const named = await post('/api/embed', { model: 'm', input: 'hi' });
    assert.equal(named.status, 200);
    assert.equal(embeds(), before + 1);
  });

  it('refuses Ollama chat tools and tool calls of a shape no model call can carry, in Ollama’s shape naming the field, and takes those it can', async () => {
    const before = generations();
    const call = { function: { name: 'read_file', arguments: { path: 'a.ts' } } };
    const tool = { type: 'function', function: { name: 'read_file', parameters: { type: 'object' } } };
    for (const [body, field] of [
      [{ tools: [5] }, 'tools.0'],
      [{ tools: 'read_file' }, 'tools'],
      [{ tools: [{ type: 'function' }] }, 'tools.0.function'],
      [{ messages: [{ role: 'assistant', content: '', tool_calls: 'x' }] }, 'messages.0.tool_calls'],
      [{ messages: [{ role: 'assistant', content: '', tool_calls: [5] }] }, 'messages.0.tool_calls.0'],
      [
        { messages: [{ role: 'assistant', content: '', tool_calls: [{ function: { name: 'f', arguments: '{"path":"a"}' } }] }] },
        'messages.0.tool_calls.0.function.arguments',
      ],
    ] as const) {
      const response = await post('/api/chat', { model: 'm', stream: false, messages: [{ role: 'user', content: 'hi' }], ...body });
      assert.equal(response.status, 400, JSON.stringify(body));
      const answer = (await response.json()) as { error: string };
      assert.ok(answer.error.startsWith(`${field}: `), `${JSON.stringify(body)}: ${answer.error}`);
    }
    assert.equal(generations(), before);
    const conversation = [
      { role: 'user', content: 'read a.ts' },
      { role: 'assistant', content: '', tool_calls: [call] },
      { role: 'tool', content: 'export {}' },
    ];
    const taken = await post('/api/chat', { model: 'm', stream: false, messages: conversation, tools: [tool] });
    assert.equal(taken.status, 200);
    await taken.text();
    assert.equal(generations(), before + 1);
  });

  it('takes null in an Ollama chat or generate field as the field left out, as Ollama’s JSON decoding does', async () => {
    const before = generations();
    for (const [path, body] of [
      ['/api/chat', { model: 'm', messages: [{ role: 'user', content: 'hi', images: null }], stream: null, think: null, tools: null }],
      ['/api/chat', { model: 'm', messages: [{ role: 'user', content: null }], stream: false }],
      ['/api/chat', { model: 'm', messages: null, stream: false }],
      ['/api/generate', { model: 'm', prompt: null, suffix: null, system: null, images: null, stream: null }],
    ] as const) {
      const response = await post(path, body);
      assert.equal(response.status, 200, `${path} ${JSON.stringify(body)}`);
      // stream: null streams, as an absent stream does.
      assert.equal(
        response.headers.get('content-type'),
        body.stream === false ? 'application/json; charset=utf-8' : 'application/x-ndjson',
        JSON.stringify(body),
      );
      await response.text();
    }
    assert.equal(generations(), before + 4);
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

  it('reads a charset given as a quoted string (charset="utf-8"), as HTTP allows, and still refuses other charsets', async () => {
    const body = { model: 'm', messages: [{ role: 'user', content: 'hi' }], stream: false };
    for (const contentType of ['application/json; charset="utf-8"', 'application/json;charset="UTF-8"']) {
      const response = await post('/api/chat', body, { 'content-type': contentType });
      assert.equal(response.status, 200, contentType);
      assert.equal(((await response.json()) as { message: { content: string } }).message.content, 'ok');
    }
    const latin1 = await post('/api/chat', body, { 'content-type': 'application/json; charset="latin1"' });
    assert.equal(latin1.status, 415);
    assert.deepEqual(await latin1.json(), { error: 'unsupported charset "latin1"' });
  });

  it('answers a body it cannot read or a request it cannot keep with a status and code the README error table lists', async () => {
    const chat = JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hi' }] });
    const cases: ReadonlyArray<[string, RequestInit, number, string]> = [
      ['/v1/chat/completions', { headers: { 'content-encoding': 'zstd' }, body: chat }, 415, 'unsupported_encoding'],
      ['/v1/chat/completions', { headers: { 'content-type': 'application/json; charset=latin1' }, body: chat }, 415, 'unsupported_encoding'],
      ['/v1/chat/completions', { headers: { 'content-encoding': 'gzip' }, body: 'not gzip' }, 400, 'invalid_json'],
      ['/v1/chat/completions', { body: gzipSync('"just a string"'), headers: { 'content-encoding': 'gzip' } }, 400, 'invalid_json'],
      ['/v1/responses', { body: JSON.stringify({ model: 'm', input: 'hi', previous_response_id: 'resp_1' }) }, 400, 'unsupported_parameter'],
    ];
    const documented = documentedErrors();
    const before = generations();
    for (const [path, init, status, code] of cases) {
      const response = await fetch(`${bridge.url}${path}`, { method: 'POST', ...init });
      const { error } = (await response.json()) as { error: { code: string } };
      assert.deepEqual([response.status, error.code], [status, code], `${path} ${JSON.stringify(init.headers)}`);
      assert.ok(documented.has(`${status} ${code}`), `README's error table lists ${status} ${code}`);
    }
    assert.equal(generations(), before);
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
