import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import { after, describe, it } from 'node:test';
import OpenAI from 'openai';
import type { BridgeHandle } from '../../src/bridge.js';
import { priceOf } from '../../src/history/accounting.js';
import { nextRecord, startStandIn, startTestBridge, type StandIn, postJson } from '../support/bridge.js';
import { readLines, readSseEvents } from '../support/streams.js';

/**
 * Translations between the surfaces and Ollama's native API, against a stand-in upstream that
 * writes the exact line formats Ollama 0.11 writes (a tiny random model never calls tools).
 */

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

const CREATED = '2025-01-01T00:00:00.000000000Z';
const line = (fields: Record<string, unknown>): string => `${JSON.stringify({ model: 'qwen2.5-coder:7b', created_at: CREATED, ...fields })}\n`;

/** Ollama's streamed /api/chat answer with one tool call, as 0.11 sends it. */
const TOOL_CALL_STREAM = [
  line({
    message: { role: 'assistant', content: '', tool_calls: [{ function: { name: 'get_weather', arguments: { city: 'Paris', days: 2 } } }] },
    done: false,
  }),
  line({
    message: { role: 'assistant', content: '' },
    done: true,
    done_reason: 'stop',
    total_duration: 5000000,
    prompt_eval_count: 31,
    eval_count: 12,
    eval_duration: 1000000,
  }),
];

const TEXT_STREAM = [
  line({ message: { role: 'assistant', content: 'Hel' }, done: false }),
  line({ message: { role: 'assistant', content: 'lo' }, done: false }),
  line({ message: { role: 'assistant', content: '' }, done: true, done_reason: 'length', prompt_eval_count: 5, eval_count: 2 }),
];

function ndjson(res: ServerResponse, lines: readonly string[], thenBreak = false): void {
  res.writeHead(200, { 'content-type': 'application/x-ndjson' });
  for (const l of lines) res.write(l);
  if (thenBreak) setTimeout(() => res.socket?.destroy(), 20);
  else res.end();
}

async function pair(
  respond: (url: string, res: ServerResponse, body: string) => void,
  models: string[] = [],
): Promise<{ upstream: StandIn; bridge: BridgeHandle }> {
  const upstream = await startStandIn((req, res, body) => respond(req.url ?? '', res, body), models);
  const bridge = await startTestBridge({ env: { OLLAMA_HOST: upstream.url } });
  cleanups.push(
    () => bridge.stop(100),
    () => upstream.close(),
  );
  return { upstream, bridge };
}

describe('OpenAI chat translation', () => {
  it('streams Ollama tool calls as OpenAI deltas a client can concatenate, with finish_reason tool_calls', async () => {
    const { bridge } = await pair((_url, res) => ndjson(res, TOOL_CALL_STREAM));
    const response = await postJson(`${bridge.url}/v1/chat/completions`, {
      model: 'qwen2.5-coder:7b',
      messages: [{ role: 'user', content: 'weather?' }],
      tools: [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object' } } }],
      stream: true,
      stream_options: { include_usage: true },
    });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('content-type'), 'text/event-stream; charset=utf-8');
    const events: string[] = [];
    for await (const event of readSseEvents(response)) events.push(event);
    assert.equal(events.at(-1), '[DONE]');
    const chunks = events
      .slice(0, -1)
      .map((e) => JSON.parse(e) as { object: string; choices: Array<{ delta: Record<string, unknown>; finish_reason: string | null }>; usage?: unknown });
    for (const chunk of chunks) assert.equal(chunk.object, 'chat.completion.chunk');
    // As OpenAI opens an answer that is only tool calls: the role, content null, the call.
    const opening = chunks[0]?.choices[0]?.delta;
    assert.deepEqual(Object.keys(opening ?? {}), ['role', 'content', 'tool_calls']);
    assert.equal(opening?.role, 'assistant');
    assert.equal(opening?.content, null);

    // What a client does: concatenate arguments per tool-call index.
    const calls = new Map<number, { id?: string; name: string; arguments: string }>();
    for (const chunk of chunks) {
      for (const call of (chunk.choices[0]?.delta.tool_calls ?? []) as Array<{ index: number; id?: string; function: { name?: string; arguments?: string } }>) {
        const known = calls.get(call.index) ?? { name: '', arguments: '' };
        calls.set(call.index, {
          id: call.id ?? known.id,
          name: known.name + (call.function.name ?? ''),
          arguments: known.arguments + (call.function.arguments ?? ''),
        });
      }
    }
    assert.equal(calls.size, 1);
    const call = calls.get(0);
    assert.equal(call?.name, 'get_weather');
    assert.deepEqual(JSON.parse(call?.arguments ?? ''), { city: 'Paris', days: 2 });
    assert.match(call?.id ?? '', /^call_[0-9a-f]{24}$/);
    const finishes = chunks.flatMap((c) => c.choices.map((choice) => choice.finish_reason)).filter((r) => r !== null);
    assert.deepEqual(finishes, ['tool_calls']);
    assert.deepEqual(chunks.at(-1)?.usage, { prompt_tokens: 31, completion_tokens: 12, total_tokens: 43 });
    assert.deepEqual(chunks.at(-1)?.choices, []);
  });

  it('answers a tool call without streaming as message.tool_calls, and the openai client reads it', async () => {
    const { bridge } = await pair((_url, res) => ndjson(res, TOOL_CALL_STREAM));
    const client = new OpenAI({ baseURL: `${bridge.url}/v1`, apiKey: 'x' });
    const completion = await client.chat.completions.create({
      model: 'qwen2.5-coder:7b',
      messages: [{ role: 'user', content: 'weather?' }],
      tools: [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object' } } }],
    });
    const choice = completion.choices[0];
    assert.equal(choice?.finish_reason, 'tool_calls');
    // OpenAI's content of an answer that is only tool calls, and its refusal, a field every message has.
    assert.equal(choice?.message.content, null);
    assert.equal(choice?.message.refusal, null);
    const toolCall = choice?.message.tool_calls?.[0];
    assert.equal(toolCall?.type, 'function');
    assert.ok(toolCall !== undefined && toolCall.type === 'function');
    assert.equal(toolCall.function.name, 'get_weather');
    assert.deepEqual(JSON.parse(toolCall.function.arguments), { city: 'Paris', days: 2 });
    assert.equal(completion.usage?.total_tokens, 43);
  });

  it('with n = 2 counts the prompt once in usage, as OpenAI does, and every choice’s completion, streamed and whole', async () => {
    // Each choice is its own Ollama request; a later one may find the prompt in Ollama's cache and count fewer tokens.
    const promptCounts = [31, 1, 31, 1];
    const { upstream, bridge } = await pair((_url, res) =>
      ndjson(res, [
        line({ message: { role: 'assistant', content: 'Hi' }, done: false }),
        line({ message: { role: 'assistant', content: '' }, done: true, done_reason: 'stop', prompt_eval_count: promptCounts.shift(), eval_count: 3 }),
      ]),
    );
    const request = { model: 'qwen2.5-coder:7b', messages: [{ role: 'user', content: 'hi' }], n: 2 };
    const usage = { prompt_tokens: 31, completion_tokens: 6, total_tokens: 37 };
    const recorded = nextRecord(bridge);
    const whole = (await (await postJson(`${bridge.url}/v1/chat/completions`, request)).json()) as { choices: unknown[]; usage: unknown };
    assert.equal(whole.choices.length, 2);
    assert.deepEqual(whole.usage, usage);
    // The history counts what each choice ran on the GPU.
    const record = await recorded;
    assert.deepEqual([record.tokensIn, record.tokensOut], [32, 6]);
    // What a cloud would have charged: the prompt once, as OpenAI bills n choices.
    const price = priceOf(bridge.config, record.model, record.tier);
    assert.equal(record.cloudCostDollars, (31 * price.input + 6 * price.output) / 1e6);
    const streamed = await postJson(`${bridge.url}/v1/chat/completions`, { ...request, stream: true, stream_options: { include_usage: true } });
    const events: string[] = [];
    for await (const event of readSseEvents(streamed)) events.push(event);
    assert.deepEqual((JSON.parse(events.at(-2) ?? '{}') as { usage: unknown }).usage, usage);
    assert.equal(upstream.requests.length, 4);
  });

  it('sends the conversation back to Ollama in its own form: tool calls with object arguments, tool results named, images as base64', async () => {
    const { upstream, bridge } = await pair((_url, res) => ndjson(res, TEXT_STREAM));
    const response = await postJson(`${bridge.url}/v1/chat/completions`, {
      model: 'qwen2.5-coder:7b',
      messages: [
        { role: 'developer', content: 'be brief' },
        {
          role: 'user',
          content: [
            { type: 'text', text: 'what is this' },
            { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } },
          ],
          copilot_references: [],
        },
        {
          role: 'assistant',
          content: null,
          tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }],
        },
        { role: 'tool', tool_call_id: 'call_1', content: '{"temp":21}', copilot_cache_control: { type: 'ephemeral' } },
      ],
      max_tokens: 7,
      temperature: 0.2,
      top_p: 0.9,
      stop: '\n\n',
      seed: 3,
    });
    assert.equal(response.status, 200);
    const sent = JSON.parse(upstream.requests[0]?.body ?? '{}') as Record<string, unknown>;
    assert.equal(upstream.requests[0]?.url, '/api/chat');
    assert.equal(sent.model, 'qwen2.5-coder:7b');
    assert.equal(sent.stream, true);
    assert.deepEqual(sent.options, { temperature: 0.2, top_p: 0.9, num_predict: 7, stop: ['\n\n'], seed: 3 });
    assert.deepEqual(sent.messages, [
      { role: 'system', content: 'be brief' },
      { role: 'user', content: 'what is this', images: ['iVBORw0KGgo='] },
      { role: 'assistant', content: '', tool_calls: [{ id: 'call_1', function: { name: 'get_weather', arguments: { city: 'Paris' } } }] },
      { role: 'tool', content: '{"temp":21}', tool_name: 'get_weather', tool_call_id: 'call_1' },
    ]);
    const body = (await response.json()) as { choices: Array<{ message: { content: string }; finish_reason: string }>; usage: { completion_tokens: number } };
    assert.equal(body.choices[0]?.message.content, 'Hello');
    assert.equal(body.choices[0]?.finish_reason, 'length');
    assert.equal(body.usage.completion_tokens, 2);
  });

  it('rejects malformed requests with OpenAI’s error shape and the offending param', async () => {
    const { upstream, bridge } = await pair((_url, res) => ndjson(res, TEXT_STREAM));
    const noMessages = await postJson(`${bridge.url}/v1/chat/completions`, { model: 'm', messages: [] });
    assert.equal(noMessages.status, 400);
    assert.deepEqual(await noMessages.json(), {
      error: { message: "messages: 'messages' must contain at least one message", type: 'invalid_request_error', param: 'messages', code: 'invalid_request' },
    });
    const badRole = await postJson(`${bridge.url}/v1/chat/completions`, { model: 'm', messages: [{ role: 'wizard', content: 'x' }] });
    assert.equal(badRole.status, 400);
    assert.equal(((await badRole.json()) as { error: { param: string } }).error.param, 'messages.0.role');
    const remoteImage = await postJson(`${bridge.url}/v1/chat/completions`, {
      model: 'm',
      messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'https://example.com/cat.png' } }] }],
    });
    assert.equal(remoteImage.status, 400);
    assert.deepEqual(await remoteImage.json(), {
      error: {
        message: 'messages.0.content.0.image_url: only data: URLs with base64 images are supported',
        type: 'invalid_request_error',
        param: 'messages.0.content',
        code: 'invalid_request',
      },
    });
    const badArguments = await postJson(`${bridge.url}/v1/chat/completions`, {
      model: 'm',
      messages: [{ role: 'assistant', tool_calls: [{ id: 'a', type: 'function', function: { name: 'f', arguments: '{oops' } }] }],
    });
    assert.equal(badArguments.status, 400);
    assert.equal(((await badArguments.json()) as { error: { param: string } }).error.param, 'messages.0.tool_calls.0.function.arguments');
    assert.equal(upstream.requests.length, 0);
  });
});

describe('tool calls whose arguments are not an object', () => {
  // Ollama sends arguments as an object; an upstream that sends JSON text, or something else, must
  // still give clients an object: OpenAI's arguments are the text of one, Anthropic's input is one.
  const stream = [
    line({
      message: {
        role: 'assistant',
        content: '',
        tool_calls: [
          { function: { name: 'as_text', arguments: '{"city":"Oslo"}' } },
          { function: { name: 'not_json', arguments: 'Oslo' } },
          { function: { name: 'a_number', arguments: 7 } },
          { function: { name: 'none', arguments: null } },
        ],
      },
      done: false,
    }),
    line({ message: { role: 'assistant', content: '' }, done: true, done_reason: 'stop' }),
  ];
  const expected = [{ city: 'Oslo' }, { _raw: 'Oslo' }, { _raw: '7' }, {}];
  const messages = [{ role: 'user', content: 'weather?' }];

  it('answers them as objects on every surface', async () => {
    const { bridge } = await pair((_url, res) => ndjson(res, stream));
    const openAi = (await (await postJson(`${bridge.url}/v1/chat/completions`, { model: 'm', messages })).json()) as {
      choices: Array<{ message: { tool_calls: Array<{ function: { arguments: string } }> } }>;
    };
    assert.deepEqual(
      openAi.choices[0]?.message.tool_calls.map((call) => JSON.parse(call.function.arguments) as unknown),
      expected,
    );
    const anthropic = (await (await postJson(`${bridge.url}/v1/messages`, { model: 'm', max_tokens: 100, messages })).json()) as {
      content: Array<{ input: unknown }>;
    };
    assert.deepEqual(
      anthropic.content.map((block) => block.input),
      expected,
    );
    const native = (await (await postJson(`${bridge.url}/api/chat`, { model: 'm', messages, stream: false })).json()) as {
      message: { tool_calls: Array<{ function: { arguments: unknown } }> };
    };
    assert.deepEqual(
      native.message.tool_calls.map((call) => call.function.arguments),
      expected,
    );
  });
});

describe('native Ollama facade', () => {
  it('gathers a non-streamed chat with tool calls into one answer', async () => {
    const { upstream, bridge } = await pair((_url, res) => ndjson(res, TOOL_CALL_STREAM));
    const response = await postJson(`${bridge.url}/api/chat`, {
      model: 'qwen2.5-coder:7b',
      messages: [{ role: 'user', content: 'weather?' }],
      stream: false,
      keep_alive: -1,
    });
    assert.equal(response.status, 200);
    const body = (await response.json()) as Record<string, unknown>;
    assert.deepEqual(body.message, {
      role: 'assistant',
      content: '',
      tool_calls: [{ function: { name: 'get_weather', arguments: { city: 'Paris', days: 2 } } }],
    });
    assert.equal(body.done, true);
    assert.equal(body.eval_count, 12);
    assert.equal(body.model, 'qwen2.5-coder:7b');
    // Unknown fields (keep_alive) reach Ollama untouched.
    assert.equal((JSON.parse(upstream.requests[0]?.body ?? '{}') as { keep_alive: number }).keep_alive, -1);
  });

  it('rejects a request without a model in Ollama’s own words', async () => {
    const { upstream, bridge } = await pair((_url, res) => ndjson(res, TEXT_STREAM));
    for (const path of ['/api/chat', '/api/generate']) {
      const response = await postJson(`${bridge.url}${path}`, { messages: [] });
      assert.equal(response.status, 400);
      assert.deepEqual(await response.json(), { error: 'model: model is required' });
    }
    const wrongType = await postJson(`${bridge.url}/api/chat`, { model: 'm', messages: 'hi' });
    assert.equal(wrongType.status, 400);
    assert.match(((await wrongType.json()) as { error: string }).error, /^messages: /);
    assert.equal(upstream.requests.length, 0);
  });
});

describe('a mid-stream upstream failure ends each surface’s stream in its own error form', () => {
  const broken = [line({ message: { role: 'assistant', content: 'a' }, response: 'a', done: false }), '{"error":"llama runner process has terminated"}\n'];

  it('native /api/chat: a last {"error"} line', async () => {
    const { bridge } = await pair((_url, res) => ndjson(res, broken));
    const response = await postJson(`${bridge.url}/api/chat`, { model: 'm', messages: [{ role: 'user', content: 'x' }] });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('content-type'), 'application/x-ndjson');
    const lines: string[] = [];
    for await (const l of readLines(response)) lines.push(l);
    assert.equal(lines.length, 2);
    assert.deepEqual(JSON.parse(lines[1] ?? ''), { error: 'llama runner process has terminated' });
  });

  for (const [name, path, body] of [
    ['OpenAI chat', '/v1/chat/completions', { model: 'm', stream: true, messages: [{ role: 'user', content: 'x' }] }],
    ['OpenAI completions', '/v1/completions', { model: 'm', stream: true, prompt: 'x' }],
    ['Copilot inline completions', '/v1/engines/m/completions', { prompt: 'x', suffix: 'y', stream: true }],
  ] as const) {
    it(`${name}: a last data: {"error"} event, and no [DONE]`, async () => {
      const { bridge } = await pair(
        (url, res) => {
          if (url === '/api/show') {
            res.writeHead(200, { 'content-type': 'application/json' });
            res.end(JSON.stringify({ capabilities: ['completion', 'insert'], model_info: {} }));
          } else ndjson(res, broken);
        },
        ['m:latest'],
      );
      const response = await postJson(`${bridge.url}${path}`, body);
      assert.equal(response.status, 200);
      const events: string[] = [];
      for await (const event of readSseEvents(response)) events.push(event);
      assert.notEqual(events.at(-1), '[DONE]');
      assert.deepEqual(JSON.parse(events.at(-1) ?? ''), {
        error: { message: 'llama runner process has terminated', type: 'api_error', param: null, code: 'upstream_error' },
      });
    });
  }

  it('an error answer whose characters arrive split over chunks keeps its message whole', async () => {
    const body = Buffer.from(JSON.stringify({ error: "model 'модель' not found" }));
    const { bridge } = await pair((_url, res) => {
      res.writeHead(404, { 'content-type': 'application/json' });
      // One byte per chunk: every two-byte letter is cut in two.
      for (const byte of body) res.write(Buffer.of(byte));
      res.end();
    });
    const response = await postJson(`${bridge.url}/api/chat`, { model: 'm', messages: [{ role: 'user', content: 'x' }] });
    assert.equal(response.status, 404);
    assert.deepEqual(await response.json(), { error: "model 'модель' not found" });
  });

  it('a break before any line arrived is still a proper status', async () => {
    const { bridge } = await pair((_url, res) => res.socket?.destroy());
    const response = await postJson(`${bridge.url}/v1/chat/completions`, { model: 'm', stream: true, messages: [{ role: 'user', content: 'x' }] });
    assert.equal(response.status, 502);
    const body = (await response.json()) as { error: { code: string } };
    assert.equal(body.error.code, 'upstream_unreachable');
  });
});
