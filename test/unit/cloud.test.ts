import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { after, describe, it } from 'node:test';
import type { BridgeHandle } from '../../src/bridge.js';
import { readSse } from '../../src/upstream/sse.js';
import { freePort } from '../support/ollama-rig.js';
import { memoryLogger, nextRecord, startCloudBridge, startCloudChainBridge, startStandIn, startTestBridge, type StandIn, postJson } from '../support/bridge.js';
import { documentedErrors } from '../support/readme.js';
import { readLines, readSseEvents } from '../support/streams.js';
import { startSynHole } from '../support/syn-hole.js';
import { configFile } from '../support/temp.js';

/** Anthropic's documented streaming sequence for a message with text and one tool call. */
const ANTHROPIC_EVENTS: Array<[string, unknown]> = [
  [
    'message_start',
    {
      type: 'message_start',
      message: {
        id: 'msg_1',
        type: 'message',
        role: 'assistant',
        content: [],
        model: 'claude-test',
        stop_reason: null,
        stop_sequence: null,
        usage: { input_tokens: 25, output_tokens: 1 },
      },
    },
  ],
  ['content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } }],
  ['ping', { type: 'ping' }],
  ['content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'Hello' } }],
  ['content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: ' world' } }],
  ['content_block_stop', { type: 'content_block_stop', index: 0 }],
  ['content_block_start', { type: 'content_block_start', index: 1, content_block: { type: 'tool_use', id: 'toolu_01', name: 'get_weather', input: {} } }],
  ['content_block_delta', { type: 'content_block_delta', index: 1, delta: { type: 'input_json_delta', partial_json: '' } }],
  ['content_block_delta', { type: 'content_block_delta', index: 1, delta: { type: 'input_json_delta', partial_json: '{"city": "Par' } }],
  ['content_block_delta', { type: 'content_block_delta', index: 1, delta: { type: 'input_json_delta', partial_json: 'is"}' } }],
  ['content_block_stop', { type: 'content_block_stop', index: 1 }],
  ['message_delta', { type: 'message_delta', delta: { stop_reason: 'tool_use', stop_sequence: null }, usage: { output_tokens: 89 } }],
  ['message_stop', { type: 'message_stop' }],
];

function anthropicStream(res: ServerResponse, events = ANTHROPIC_EVENTS): void {
  res.writeHead(200, { 'content-type': 'text/event-stream' });
  for (const [event, data] of events) res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  res.end();
}

/** One event of an OpenAI-compatible chat stream. */
const chunk = (delta: unknown, finish: string | null = null): string =>
  `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', model: 'gpt-test', choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;

/** An OpenAI-compatible stream whose tool call arrives in fragments, as OpenAI sends it. */
function openAiStream(res: ServerResponse): void {
  res.writeHead(200, { 'content-type': 'text/event-stream' });
  res.write(chunk({ role: 'assistant', content: '' }));
  res.write(chunk({ content: 'Hi' }));
  res.write(chunk({ tool_calls: [{ index: 0, id: 'call_a', type: 'function', function: { name: 'get_weather', arguments: '' } }] }));
  res.write(chunk({ tool_calls: [{ index: 0, function: { arguments: '{"city":' } }] }));
  res.write(chunk({ tool_calls: [{ index: 0, function: { arguments: '"Oslo"}' } }] }));
  res.write(chunk({}, 'tool_calls'));
  res.write(
    `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', model: 'gpt-test', choices: [], usage: { prompt_tokens: 7, completion_tokens: 9, total_tokens: 16 } })}\n\n`,
  );
  res.end('data: [DONE]\n\n');
}

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** A bridge whose only local backend is down, with one cloud provider served by a stand-in; stopped after the tests. */
async function withProvider(
  type: 'anthropic' | 'openai',
  respond: (res: ServerResponse) => void,
  options: { enabled?: boolean; timeoutSeconds?: number; maxLineMb?: number } = {},
): Promise<{ cloud: StandIn; bridge: BridgeHandle }> {
  const started = await startCloudBridge(type, respond, options);
  cleanups.push(started.close);
  return started;
}

/** The tool calls a native client gets (a whole answer) when an OpenAI-compatible provider streams these deltas, then finish_reason tool_calls. */
async function toolCallsFrom(deltas: unknown[]): Promise<unknown[]> {
  const { bridge } = await withProvider('openai', (res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    for (const delta of deltas) res.write(chunk(delta));
    res.end(chunk({}, 'tool_calls') + 'data: [DONE]\n\n');
  });
  const response = await postJson(`${bridge.url}/api/chat`, { model: 'm', messages: [{ role: 'user', content: 'weather?' }], tools: TOOLS, stream: false });
  assert.equal(response.status, 200);
  return ((await response.json()) as { message: { tool_calls: unknown[] } }).message.tool_calls;
}

const TOOLS = [
  { type: 'function', function: { name: 'get_weather', description: 'weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } },
];

describe('cloud fallback: Anthropic Messages API', () => {
  it('translates the request: system apart, tool calls and results as blocks, tools with input_schema, the key header', async () => {
    const { cloud, bridge } = await withProvider('anthropic', (res) => anthropicStream(res));
    const response = await postJson(`${bridge.url}/v1/chat/completions`, {
      model: 'qwen2.5-coder:7b',
      max_tokens: 300,
      temperature: 0.3,
      tools: TOOLS,
      messages: [
        { role: 'system', content: 'be brief' },
        { role: 'user', content: 'weather in Paris?' },
        { role: 'assistant', content: null, tool_calls: [{ id: 'x1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
        { role: 'tool', tool_call_id: 'x1', content: '21C' },
      ],
    });
    assert.equal(response.status, 200);
    const seen = cloud.requests[0];
    assert.equal(seen?.url, '/v1/messages');
    assert.equal(seen?.headers['x-api-key'], 'sk-ant-test');
    assert.equal(seen?.headers['anthropic-version'], '2023-06-01');
    assert.deepEqual(JSON.parse(seen?.body ?? '{}'), {
      model: 'anthropic-test',
      max_tokens: 300,
      stream: true,
      temperature: 0.3,
      system: 'be brief',
      messages: [
        { role: 'user', content: [{ type: 'text', text: 'weather in Paris?' }] },
        { role: 'assistant', content: [{ type: 'tool_use', id: 'call_0', name: 'get_weather', input: { city: 'Paris' } }] },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'call_0', content: '21C' }] },
      ],
      tools: [{ name: 'get_weather', description: 'weather', input_schema: { type: 'object', properties: { city: { type: 'string' } } } }],
    });
  });

  it('sends no text block that is empty or only whitespace, which the Messages API refuses with 400, and no turn left empty by that', async () => {
    const { cloud, bridge } = await withProvider('anthropic', (res) => anthropicStream(res));
    const response = await postJson(`${bridge.url}/api/chat`, {
      model: 'm',
      stream: false,
      messages: [
        { role: 'user', content: 'hi' },
        { role: 'assistant', content: '' },
        { role: 'user', content: ' \n' },
        { role: 'assistant', content: '\n\n', tool_calls: [{ function: { name: 'get_weather', arguments: { city: 'Oslo' } } }] },
        { role: 'tool', content: '21C' },
        { role: 'user', content: 'and now?' },
      ],
    });
    assert.equal(response.status, 200);
    assert.deepEqual((JSON.parse(cloud.requests[0]?.body ?? '{}') as { messages: unknown }).messages, [
      { role: 'user', content: [{ type: 'text', text: 'hi' }] },
      { role: 'assistant', content: [{ type: 'tool_use', id: 'call_0', name: 'get_weather', input: { city: 'Oslo' } }] },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'call_0', content: '21C' }] },
      { role: 'user', content: [{ type: 'text', text: 'and now?' }] },
    ]);
  });

  it('takes a tool call’s input from its content_block_start when no input_json_delta follows (gateways that send it whole), as the Anthropic SDK does', async () => {
    const events = ANTHROPIC_EVENTS.filter(([name, data]) => name !== 'content_block_delta' || (data as { index: number }).index !== 1).map(
      ([name, data]): [string, unknown] =>
        name === 'content_block_start' && (data as { index: number }).index === 1
          ? [name, { type: name, index: 1, content_block: { type: 'tool_use', id: 'toolu_01', name: 'get_weather', input: { city: 'Oslo' } } }]
          : [name, data],
    );
    const { bridge } = await withProvider('anthropic', (res) => anthropicStream(res, events));
    const response = await postJson(`${bridge.url}/api/chat`, { model: 'm', stream: false, tools: TOOLS, messages: [{ role: 'user', content: 'weather?' }] });
    assert.equal(response.status, 200);
    const body = (await response.json()) as { message: { tool_calls: unknown[] } };
    assert.deepEqual(body.message.tool_calls, [{ function: { name: 'get_weather', arguments: { city: 'Oslo' } } }]);
  });

  it('names each image’s own type, which the Messages API checks against its bytes (400 on a mismatch)', async () => {
    const { cloud, bridge } = await withProvider('anthropic', (res) => anthropicStream(res));
    const image = (...bytes: number[]): string => Buffer.from([...bytes, 0, 0, 0, 0, 0, 0, 0, 0]).toString('base64');
    const images = {
      'image/jpeg': image(0xff, 0xd8, 0xff, 0xe0),
      'image/png': image(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a),
      'image/gif': image(...Buffer.from('GIF89a')),
      'image/webp': image(...Buffer.from('RIFF\0\0\0\0WEBP')),
    };
    const response = await postJson(`${bridge.url}/api/chat`, {
      model: 'm',
      stream: false,
      messages: [{ role: 'user', content: 'what is in these?', images: Object.values(images) }],
    });
    assert.equal(response.status, 200);
    const sent = JSON.parse(cloud.requests[0]?.body ?? '{}') as {
      messages: Array<{ content: Array<{ type: string; source?: { media_type: string; data: string } }> }>;
    };
    assert.deepEqual(
      sent.messages[0]?.content.flatMap((block) => (block.source === undefined ? [] : [[block.source.media_type, block.source.data]])),
      Object.entries(images),
    );
  });

  it('streams Anthropic’s events to an OpenAI client: text deltas, the tool call, stop reason and usage', async () => {
    const { bridge } = await withProvider('anthropic', (res) => anthropicStream(res));
    const response = await postJson(`${bridge.url}/v1/chat/completions`, {
      model: 'qwen2.5-coder:7b',
      stream: true,
      stream_options: { include_usage: true },
      tools: TOOLS,
      messages: [{ role: 'user', content: 'weather?' }],
    });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('x-bridge-backend'), 'cloud-anthropic');
    assert.match(response.headers.get('x-bridge-route-reason') ?? '', /fallback to cloud-anthropic: no local backend can take traffic/);
    const events: string[] = [];
    for await (const event of readSseEvents(response)) events.push(event);
    assert.equal(events.at(-1), '[DONE]');
    const chunks = events.slice(0, -1).map(
      (e) =>
        JSON.parse(e) as {
          choices: Array<{
            delta: { content?: string; tool_calls?: Array<{ function: { name: string; arguments: string } }> };
            finish_reason: string | null;
          }>;
          usage?: unknown;
        },
    );
    assert.equal(chunks.map((c) => c.choices[0]?.delta.content ?? '').join(''), 'Hello world');
    const call = chunks.flatMap((c) => c.choices[0]?.delta.tool_calls ?? [])[0];
    assert.equal(call?.function.name, 'get_weather');
    assert.deepEqual(JSON.parse(call?.function.arguments ?? ''), { city: 'Paris' });
    assert.deepEqual(chunks.flatMap((c) => c.choices.map((x) => x.finish_reason)).filter(Boolean), ['tool_calls']);
    assert.deepEqual(chunks.at(-1)?.usage, { prompt_tokens: 25, completion_tokens: 89, total_tokens: 114 });
  });

  it('reads an answer cut at the model’s context window (stop_reason model_context_window_exceeded) as cut for length, as at max_tokens', async () => {
    const events = ANTHROPIC_EVENTS.slice(0, 6).concat([
      ['message_delta', { type: 'message_delta', delta: { stop_reason: 'model_context_window_exceeded', stop_sequence: null }, usage: { output_tokens: 5 } }],
      ['message_stop', { type: 'message_stop' }],
    ]);
    const { bridge } = await withProvider('anthropic', (res) => anthropicStream(res, events));
    const response = await postJson(`${bridge.url}/v1/chat/completions`, { model: 'm', messages: [{ role: 'user', content: 'x' }] });
    assert.equal(response.status, 200);
    const body = (await response.json()) as { choices: Array<{ message: { content: string }; finish_reason: string }> };
    assert.deepEqual([body.choices[0]?.message.content, body.choices[0]?.finish_reason], ['Hello world', 'length']);
  });

  it('answers a native /api/chat client in NDJSON, and records the fallback in history', async () => {
    const { bridge } = await withProvider('anthropic', (res) => anthropicStream(res));
    const response = await postJson(`${bridge.url}/api/chat`, { model: 'qwen2.5-coder:7b', messages: [{ role: 'user', content: 'weather?' }], tools: TOOLS });
    assert.equal(response.headers.get('content-type'), 'application/x-ndjson');
    const lines: Array<{
      message?: { content: string; tool_calls?: unknown[] };
      done: boolean;
      done_reason?: string;
      eval_count?: number;
      prompt_eval_count?: number;
    }> = [];
    for await (const l of readLines(response)) lines.push(JSON.parse(l) as (typeof lines)[number]);
    assert.equal(lines.map((l) => l.message?.content ?? '').join(''), 'Hello world');
    assert.deepEqual(
      lines.flatMap((l) => l.message?.tool_calls ?? []),
      [{ function: { name: 'get_weather', arguments: { city: 'Paris' } } }],
    );
    const last = lines.at(-1);
    assert.equal(last?.done, true);
    assert.equal(last?.done_reason, 'stop');
    assert.equal(last?.prompt_eval_count, 25);
    assert.equal(last?.eval_count, 89);
    await new Promise((resolve) => setTimeout(resolve, 20));
    const record = bridge.history.recent().at(-1);
    assert.equal(record?.fallback, 'cloud-anthropic');
    assert.equal(record?.backend, 'cloud-anthropic');
    assert.match(record?.reason ?? '', /fallback to cloud-anthropic/);
    assert.equal(record?.tokensOut, 89);
  });

  it('turns Anthropic’s mid-stream error event into the surface’s error form', async () => {
    const events: Array<[string, unknown]> = [
      ...ANTHROPIC_EVENTS.slice(0, 4),
      ['error', { type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } }],
    ];
    const { bridge } = await withProvider('anthropic', (res) => anthropicStream(res, events));
    const response = await postJson(`${bridge.url}/v1/chat/completions`, { model: 'm', stream: true, messages: [{ role: 'user', content: 'x' }] });
    const received: string[] = [];
    for await (const event of readSseEvents(response)) received.push(event);
    assert.deepEqual(JSON.parse(received.at(-1) ?? ''), {
      error: { message: 'cloud-anthropic: Overloaded', type: 'api_error', param: null, code: 'upstream_error' },
    });
  });
});

describe('cloud fallback to Anthropic: a max_tokens over the model’s own limit', () => {
  it('asks again within the limit the 400 names, and from then on at once (Claude Code asks 32000 of any model)', async () => {
    const { cloud, bridge } = await withProvider('anthropic', (res) => {
      const sent = JSON.parse(cloud.requests.at(-1)?.body ?? '{}') as { max_tokens: number };
      if (sent.max_tokens <= 8192) return anthropicStream(res);
      res.writeHead(400, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          type: 'error',
          error: {
            type: 'invalid_request_error',
            message: `max_tokens: ${sent.max_tokens} > 8192, which is the maximum allowed number of output tokens for claude-3-5-haiku-20241022`,
          },
        }),
      );
    });
    const ask = async (maxTokens: number): Promise<void> => {
      const response = await postJson(`${bridge.url}/v1/messages`, {
        model: 'qwen2.5-coder:7b',
        max_tokens: maxTokens,
        messages: [{ role: 'user', content: 'x' }],
      });
      assert.equal(response.status, 200);
    };
    await ask(32000);
    assert.deepEqual(
      cloud.requests.map((r) => (JSON.parse(r.body) as { max_tokens: number }).max_tokens),
      [32000, 8192],
    );
    await ask(32000);
    await ask(100);
    assert.deepEqual(
      cloud.requests.slice(2).map((r) => (JSON.parse(r.body) as { max_tokens: number }).max_tokens),
      [8192, 100],
    );
  });
});

describe('cloud fallback to Anthropic with stop sequences of whitespace', () => {
  /** A text answer in Anthropic's events, one text delta per piece. */
  const textEvents = (pieces: readonly string[]): Array<[string, unknown]> => [
    ANTHROPIC_EVENTS[0] as [string, unknown],
    ['content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } }],
    ...pieces.map((text): [string, unknown] => ['content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text } }]),
    ['content_block_stop', { type: 'content_block_stop', index: 0 }],
    ['message_delta', { type: 'message_delta', delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: 12 } }],
    ['message_stop', { type: 'message_stop' }],
  ];

  /** Answers `pieces`, and refuses stop sequences as the Messages API does: none may be empty or only whitespace. */
  async function anthropicAnswering(pieces: readonly string[]): Promise<{ cloud: StandIn; bridge: BridgeHandle }> {
    const provider: { cloud?: StandIn } = {};
    const started = await withProvider('anthropic', (res) => {
      const { stop_sequences: stops = [] } = JSON.parse(provider.cloud?.requests.at(-1)?.body ?? '{}') as { stop_sequences?: string[] };
      if (stops.some((stop) => stop.trim() === '')) {
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end(
          JSON.stringify({
            type: 'error',
            error: { type: 'invalid_request_error', message: 'stop_sequences: each stop sequence must contain non-whitespace' },
          }),
        );
        return;
      }
      anthropicStream(res, textEvents(pieces));
    });
    provider.cloud = started.cloud;
    return started;
  }

  it('serves single-line ghost text (stop "\\n"): the stop is applied by the bridge, the others are sent', async () => {
    const { cloud, bridge } = await anthropicAnswering(['    return a', ' + b\n', '\ndef sub(a, b):\n']);
    const response = await postJson(`${bridge.url}/v1/engines/copilot-codex/completions`, {
      prompt: 'def add(a, b):\n',
      suffix: '\n',
      max_tokens: 40,
      stop: ['\n', '```'],
      stream: false,
    });
    assert.equal(response.status, 200);
    const body = (await response.json()) as { choices: Array<{ text: string; finish_reason: string }> };
    assert.deepEqual(
      body.choices.map((c) => [c.text, c.finish_reason]),
      [['    return a + b', 'stop']],
    );
    assert.deepEqual((JSON.parse(cloud.requests[0]?.body ?? '{}') as { stop_sequences?: string[] }).stop_sequences, ['```']);
  });

  it('records the output tokens as unknown when the bridge ended the answer at its stop, not message_start’s placeholder', async () => {
    const { bridge } = await anthropicAnswering(['    return a + b\n', 'def sub(a, b):\n']);
    const recorded = nextRecord(bridge);
    const response = await postJson(`${bridge.url}/api/generate`, { model: 'm', prompt: 'def add(a, b):\n', options: { stop: ['\n'] }, stream: false });
    assert.equal(response.status, 200);
    const body = (await response.json()) as { response: string; prompt_eval_count?: number; eval_count?: number };
    assert.equal(body.response, '    return a + b');
    assert.equal(body.prompt_eval_count, 25);
    assert.equal(body.eval_count, undefined);
    const record = await recorded;
    assert.deepEqual([record.tokensIn, record.tokensOut], [25, null]);
  });

  it('applies a stop that arrives split over two deltas, and lets through text that only began like it', async () => {
    const { bridge } = await anthropicAnswering(['one\n', 'two\n', '\nthree']);
    const response = await postJson(`${bridge.url}/v1/chat/completions`, {
      model: 'm',
      stream: true,
      stop: ['\n\n'],
      messages: [{ role: 'user', content: 'count' }],
    });
    assert.equal(response.status, 200);
    const chunks: Array<{ choices: Array<{ delta: { content?: string }; finish_reason: string | null }> }> = [];
    for await (const event of readSseEvents(response)) if (event !== '[DONE]') chunks.push(JSON.parse(event) as (typeof chunks)[number]);
    assert.equal(chunks.map((c) => c.choices[0]?.delta.content ?? '').join(''), 'one\ntwo');
    assert.deepEqual(chunks.flatMap((c) => c.choices.map((x) => x.finish_reason)).filter(Boolean), ['stop']);
  });
});

describe('cloud fallback to Anthropic: sampling options in Anthropic’s ranges and types', () => {
  it('takes a lone stop text from a native client as one stop', async () => {
    const { bridge } = await withProvider('anthropic', (res) => anthropicStream(res));
    const response = await postJson(`${bridge.url}/api/generate`, { model: 'm', prompt: 'x', options: { stop: ' ' }, stream: false });
    assert.equal(response.status, 200);
    assert.equal(((await response.json()) as { response: string }).response, 'Hello');
  });

  it('asks for temperature 1 when a client asks more (OpenAI’s range ends at 2, Anthropic’s at 1), and drops options of the wrong type', async () => {
    const { cloud, bridge } = await withProvider('anthropic', (res) => anthropicStream(res));
    const asked = [{ temperature: 1.5 }, { temperature: 'hot', top_p: '0.9', num_predict: 'many' }];
    for (const options of asked) {
      const response = await postJson(`${bridge.url}/api/chat`, { model: 'm', options, messages: [{ role: 'user', content: 'x' }], stream: false });
      assert.equal(response.status, 200);
    }
    const sent = cloud.requests.map((request) => JSON.parse(request.body) as { temperature?: unknown; top_p?: unknown; max_tokens?: unknown });
    assert.deepEqual(
      sent.map((body) => [body.temperature, body.top_p, body.max_tokens]),
      [
        [1, undefined, 4096],
        [undefined, undefined, 4096],
      ],
    );
  });

  it('sends temperature or top_p, never both, which current Claude models refuse with 400 (Copilot’s ghost text sends both)', async () => {
    const { cloud, bridge } = await withProvider('anthropic', (res) => anthropicStream(res));
    for (const options of [{ temperature: 0.2, top_p: 0.9 }, { top_p: 0.9 }]) {
      const response = await postJson(`${bridge.url}/api/chat`, { model: 'm', options, messages: [{ role: 'user', content: 'x' }], stream: false });
      assert.equal(response.status, 200);
    }
    const sent = cloud.requests.map((request) => JSON.parse(request.body) as { temperature?: unknown; top_p?: unknown });
    assert.deepEqual(
      sent.map((body) => [body.temperature, body.top_p]),
      [
        [0.2, undefined],
        [undefined, 0.9],
      ],
    );
  });
});

describe('cloud fallback: OpenAI-compatible provider', () => {
  it('sends at most 4 stop sequences, OpenAI’s limit (more is a 400), and applies the others itself', async () => {
    const { cloud, bridge } = await withProvider('openai', (res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      // The sixth stop arrives split over two pieces.
      res.end(chunk({ role: 'assistant', content: 'one <|fi' }) + chunk({ content: 'le_sep|> two' }) + chunk({}, 'stop') + 'data: [DONE]\n\n');
    });
    const stop = ['<|endoftext|>', '<|fim_prefix|>', '<|fim_middle|>', '<|fim_suffix|>', '<|fim_pad|>', '<|file_sep|>'];
    const response = await postJson(`${bridge.url}/api/chat`, { model: 'm', stream: false, options: { stop }, messages: [{ role: 'user', content: 'x' }] });
    assert.equal(response.status, 200);
    const body = (await response.json()) as { message: { content: string }; done_reason: string };
    assert.equal(body.message.content, 'one ');
    assert.equal(body.done_reason, 'stop');
    assert.deepEqual((JSON.parse(cloud.requests[0]?.body ?? '{}') as { stop: unknown }).stop, stop.slice(0, 4));
  });

  it('joins tool-call fragments, sends the bearer key, and passes usage on', async () => {
    const { cloud, bridge } = await withProvider('openai', openAiStream);
    const response = await postJson(`${bridge.url}/api/chat`, { model: 'm', messages: [{ role: 'user', content: 'weather?' }], tools: TOOLS, stream: false });
    assert.equal(response.status, 200);
    const body = (await response.json()) as { message: { content: string; tool_calls: unknown[] }; eval_count: number; prompt_eval_count: number };
    assert.equal(body.message.content, 'Hi');
    assert.deepEqual(body.message.tool_calls, [{ function: { name: 'get_weather', arguments: { city: 'Oslo' } } }]);
    assert.equal(body.eval_count, 9);
    assert.equal(body.prompt_eval_count, 7);
    assert.equal(cloud.requests[0]?.url, '/v1/chat/completions');
    assert.equal(cloud.requests[0]?.headers.authorization, 'Bearer sk-oai-test');
    const sent = JSON.parse(cloud.requests[0]?.body ?? '{}') as { model: string; stream: boolean; tools: unknown };
    assert.equal(sent.model, 'openai-test');
    assert.equal(sent.stream, true);
    assert.deepEqual(sent.tools, TOOLS);
  });

  it('keeps parallel tool calls apart when the deltas carry no index (Gemini’s OpenAI-compatible API)', async () => {
    // Each call starts with its id; its further argument fragments come without index or id.
    const toolCalls = await toolCallsFrom([
      { tool_calls: [{ id: 'function-call-1', type: 'function', function: { name: 'get_weather', arguments: '{"city":' } }] },
      { tool_calls: [{ function: { arguments: '"Oslo"}' } }] },
      { tool_calls: [{ id: 'function-call-2', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Rome"}' } }] },
    ]);
    assert.deepEqual(toolCalls, [
      { function: { name: 'get_weather', arguments: { city: 'Oslo' } } },
      { function: { name: 'get_weather', arguments: { city: 'Rome' } } },
    ]);
  });

  it('keeps parallel tool calls apart when every one comes at index 0 with an id of its own (Ollama’s OpenAI API, vLLM, Grok)', async () => {
    // The first call's fragments repeat its id, as vLLM sends them; the second call starts with another id.
    const toolCalls = await toolCallsFrom([
      { tool_calls: [{ index: 0, id: 'call_a', type: 'function', function: { name: 'get_weather', arguments: '{"city":' } }] },
      { tool_calls: [{ index: 0, id: 'call_a', function: { arguments: '"Oslo"}' } }] },
      { tool_calls: [{ index: 0, id: 'call_b', type: 'function', function: { name: 'get_weather', arguments: '{"city":' } }] },
      { tool_calls: [{ index: 0, function: { arguments: '"Rome"}' } }] },
    ]);
    assert.deepEqual(toolCalls, [
      { function: { name: 'get_weather', arguments: { city: 'Oslo' } } },
      { function: { name: 'get_weather', arguments: { city: 'Rome' } } },
    ]);
  });

  it('takes a tool name sent again with every fragment as the name, not as pieces of it (MiniMax through NVIDIA NIM, newer GPT models)', async () => {
    const toolCalls = await toolCallsFrom([
      { tool_calls: [{ index: 0, id: 'call_a', type: 'function', function: { name: 'get_weather', arguments: '{"city":' } }] },
      { tool_calls: [{ index: 0, function: { name: 'get_weather', arguments: '"Oslo"}' } }] },
    ]);
    assert.deepEqual(toolCalls, [{ function: { name: 'get_weather', arguments: { city: 'Oslo' } } }]);
  });

  it('passes on reasoning under either name: reasoning_content (DeepSeek, vLLM) and reasoning', async () => {
    const { bridge } = await withProvider('openai', (res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(chunk({ role: 'assistant', content: null, reasoning_content: 'First ' }));
      res.write(chunk({ reasoning: 'think.' }));
      res.end(chunk({ content: 'Answer' }, 'stop') + 'data: [DONE]\n\n');
    });
    const response = await postJson(`${bridge.url}/api/chat`, { model: 'm', messages: [{ role: 'user', content: 'x' }], stream: false });
    assert.equal(response.status, 200);
    const body = (await response.json()) as { message: { content: string; thinking?: string } };
    assert.equal(body.message.content, 'Answer');
    assert.equal(body.message.thinking, 'First think.');
  });

  it('records the token counts as unknown, not as 0, when the provider sent no usage', async () => {
    // A server that ignores stream_options.include_usage: the answer finishes, but no usage chunk comes.
    const { bridge } = await withProvider('openai', (res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(
        `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content: 'Hi' }, finish_reason: 'stop' }] })}\n\n`,
      );
      res.end('data: [DONE]\n\n');
    });
    const recorded = nextRecord(bridge);
    const response = await postJson(`${bridge.url}/api/chat`, { model: 'm', messages: [{ role: 'user', content: 'x' }], stream: false });
    assert.equal(response.status, 200);
    const body = (await response.json()) as { message: { content: string }; done: boolean; eval_count?: number; prompt_eval_count?: number };
    assert.equal(body.message.content, 'Hi');
    assert.equal(body.done, true);
    assert.equal(body.eval_count, undefined);
    assert.equal(body.prompt_eval_count, undefined);
    const record = await recorded;
    assert.deepEqual([record.tokensIn, record.tokensOut], [null, null]);
  });

  it('relays the error of a provider that answers 200 with a JSON error instead of a stream', async () => {
    const { bridge } = await withProvider('openai', (res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { message: 'You exceeded your current quota', type: 'insufficient_quota' } }));
    });
    const response = await postJson(`${bridge.url}/api/chat`, { model: 'm', messages: [{ role: 'user', content: 'x' }], stream: false });
    assert.equal(response.status, 502);
    assert.match(((await response.json()) as { error: string }).error, /cloud-openai.*You exceeded your current quota/);
  });

  it('says a provider answered a web page instead of a stream (a captive portal, a wrong base_url)', async () => {
    const { bridge } = await withProvider('openai', (res) => {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end('<!doctype html><title>Sign in to the guest network</title>');
    });
    const response = await postJson(`${bridge.url}/api/chat`, { model: 'm', messages: [{ role: 'user', content: 'x' }], stream: false });
    assert.equal(response.status, 502);
    assert.equal(((await response.json()) as { error: string }).error, 'cloud-openai answered a web page (text/html) instead of an event stream');
  });

  it('ends the answer as failed when an OpenAI-compatible provider finishes with finish_reason "error" (OpenRouter)', async () => {
    const { bridge } = await withProvider('openai', (res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const chunk = (delta: unknown, finish: string | null): string =>
        `data: ${JSON.stringify({ id: 'c', choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;
      res.end(`${chunk({ content: 'Hal' }, null)}${chunk({}, 'error')}data: [DONE]\n\n`);
    });
    const response = await postJson(`${bridge.url}/api/chat`, { model: 'm', messages: [{ role: 'user', content: 'x' }], stream: false });
    assert.equal(response.status, 500);
    assert.match(((await response.json()) as { error: string }).error, /^cloud-openai: the provider ended the answer with an error/);
  });

  it('reads "error": "" or false on every chunk (as some servers send it) as no error, and a real one as the answer’s failure', async () => {
    const answerWith = async (error: unknown): Promise<Response> => {
      const { bridge } = await withProvider('openai', (res) => {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        const withError = (delta: unknown, finish: string | null): string =>
          `data: ${JSON.stringify({ id: 'c', error, choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;
        res.end(`${withError({ content: 'Hi' }, null)}${withError({}, 'stop')}data: [DONE]\n\n`);
      });
      return postJson(`${bridge.url}/api/chat`, { model: 'm', messages: [{ role: 'user', content: 'x' }], stream: false });
    };
    for (const none of ['', false]) {
      const response = await answerWith(none);
      assert.equal(response.status, 200, JSON.stringify(none));
      assert.equal(((await response.json()) as { message: { content: string } }).message.content, 'Hi');
    }
    const failed = await answerWith({ message: 'overloaded' });
    assert.equal(failed.status, 500);
    assert.equal(((await failed.json()) as { error: string }).error, 'cloud-openai: overloaded');
  });

  it('skips an event with empty data (a keep-alive some servers send as "data:"), which carries nothing, from either kind of provider', async () => {
    const openAi = await withProvider('openai', (res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.end(`${chunk({ role: 'assistant', content: 'Hi' })}data:\n\ndata:  \n\n${chunk({}, 'stop')}data: [DONE]\n\n`);
    });
    const anthropic = await withProvider('anthropic', (res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const events = ANTHROPIC_EVENTS.map(([event, data]) => `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
      res.end([...events.slice(0, 4), 'data:\n\n', ...events.slice(4)].join(''));
    });
    for (const [{ bridge }, content] of [
      [openAi, 'Hi'],
      [anthropic, 'Hello world'],
    ] as const) {
      const response = await postJson(`${bridge.url}/api/chat`, { model: 'm', messages: [{ role: 'user', content: 'x' }], stream: false });
      assert.equal(response.status, 200);
      assert.equal(((await response.json()) as { message: { content: string } }).message.content, content);
    }
  });

  it('says which status a provider answered when its error body has an empty message, rather than nothing', async () => {
    const { bridge } = await withProvider('openai', (res) => {
      res.writeHead(429, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { message: '', type: 'rate_limit' } }));
    });
    const response = await postJson(`${bridge.url}/api/chat`, { model: 'm', messages: [{ role: 'user', content: 'x' }], stream: false });
    assert.equal(response.status, 429);
    assert.equal(((await response.json()) as { error: string }).error, 'cloud-openai: upstream answered 429');
  });

  it('asks for the JSON or the schema a client’s format names (response_format)', async () => {
    const { cloud, bridge } = await withProvider('openai', (res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.end(
        `data: ${JSON.stringify({ id: 'c', choices: [{ index: 0, delta: { content: '{"city":"Oslo"}' }, finish_reason: 'stop' }] })}\n\ndata: [DONE]\n\n`,
      );
    });
    const schema = { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] };
    for (const format of ['json', schema]) {
      const response = await postJson(`${bridge.url}/api/chat`, { model: 'm', format, messages: [{ role: 'user', content: 'city as JSON' }], stream: false });
      assert.equal(response.status, 200);
    }
    const sent = cloud.requests.map((request) => (JSON.parse(request.body) as { response_format?: unknown }).response_format);
    assert.deepEqual(sent, [{ type: 'json_object' }, { type: 'json_schema', json_schema: { name: 'response', schema } }]);
  });

  it('answers 502, not the provider’s own 401, 403 or 404: the key and the model are the bridge’s, not the client’s', async () => {
    const refusals: Array<[number, string]> = [
      [401, 'Incorrect API key provided'],
      [403, 'Project does not have access to model'],
      [404, 'The model `openai-test` does not exist'],
    ];
    let next = 0;
    const { bridge } = await withProvider('openai', (res) => {
      const [status, message] = refusals[next++] ?? [500, 'unexpected'];
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { message, type: 'invalid_request_error', code: null } }));
    });
    for (const [status, message] of refusals) {
      const response = await postJson(`${bridge.url}/v1/chat/completions`, { model: 'qwen2.5-coder:7b', messages: [{ role: 'user', content: 'x' }] });
      assert.equal(response.status, 502);
      const body = (await response.json()) as { error: { message: string; code: string | null } };
      assert.equal(body.error.message, `cloud-openai answered ${status}: ${message}`);
      assert.notEqual(body.error.code, 'model_not_found');
    }
  });

  it('passes on a provider’s 429 with its Retry-After, in seconds or as a date, so the client waits as long as the provider asks', async () => {
    const retryAfters = ['7', new Date(Date.now() + 90_000).toUTCString(), 'soon'];
    let next = 0;
    const { bridge } = await withProvider('anthropic', (res) => {
      res.writeHead(429, { 'content-type': 'application/json', 'retry-after': retryAfters[next++] ?? '' });
      res.end(JSON.stringify({ type: 'error', error: { type: 'rate_limit_error', message: 'Number of requests has exceeded your rate limit' } }));
    });
    const asked = async (): Promise<string | null> => {
      const response = await postJson(`${bridge.url}/v1/messages`, { model: 'qwen2.5-coder:7b', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] });
      assert.equal(response.status, 429);
      assert.equal(((await response.json()) as { error: { type: string } }).error.type, 'rate_limit_error');
      return response.headers.get('retry-after');
    };
    assert.equal(await asked(), '7');
    const fromDate = Number(await asked());
    assert.ok(fromDate >= 85 && fromDate <= 90, `Retry-After ${fromDate}`);
    // A value that is neither is not passed on.
    assert.equal(await asked(), null);
    // An OpenAI client reads the code OpenAI gives a 429.
    const openAi = await postJson(`${bridge.url}/v1/chat/completions`, { model: 'qwen2.5-coder:7b', messages: [{ role: 'user', content: 'x' }] });
    assert.equal(openAi.status, 429);
    assert.equal(((await openAi.json()) as { error: { code: string } }).error.code, 'rate_limit_exceeded');
  });

  it('leaves out what the provider’s model refuses, learnt from its 400 once: max_tokens as max_completion_tokens, a temperature it does not take (OpenAI’s reasoning models)', async () => {
    const { cloud, bridge } = await withProvider('openai', (res) => {
      const sent = JSON.parse(cloud.requests.at(-1)?.body ?? '{}') as Record<string, unknown>;
      const refuse = (param: string, code: string, message: string): void => {
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { message, type: 'invalid_request_error', param, code } }));
      };
      if ('max_tokens' in sent)
        refuse(
          'max_tokens',
          'unsupported_parameter',
          "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
        );
      else if ('temperature' in sent)
        refuse(
          'temperature',
          'unsupported_value',
          "Unsupported value: 'temperature' does not support 0.1 with this model. Only the default (1) value is supported.",
        );
      else openAiStream(res);
    });
    const ask = async (): Promise<void> => {
      const response = await postJson(`${bridge.url}/v1/chat/completions`, {
        model: 'qwen2.5-coder:7b',
        max_tokens: 100,
        temperature: 0.1,
        messages: [{ role: 'user', content: 'x' }],
      });
      assert.equal(response.status, 200);
      assert.equal(((await response.json()) as { choices: Array<{ message: { content: string } }> }).choices[0]?.message.content, 'Hi');
    };
    await ask();
    const sent = cloud.requests.map((r) => JSON.parse(r.body) as Record<string, unknown>);
    assert.equal(sent.length, 3);
    assert.deepEqual([sent[2]?.max_completion_tokens, 'max_tokens' in (sent[2] ?? {}), 'temperature' in (sent[2] ?? {})], [100, false, false]);
    // Learnt: the next request goes as the model takes it, at once.
    await ask();
    assert.equal(cloud.requests.length, 4);
  });

  it('still answers a 400 it cannot learn from as the provider’s error, without asking again', async () => {
    const { cloud, bridge } = await withProvider('openai', (res) => {
      res.writeHead(400, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          error: { message: "Invalid value for 'temperature': must be at most 2", type: 'invalid_request_error', param: 'temperature', code: 'invalid_value' },
        }),
      );
    });
    const response = await postJson(`${bridge.url}/v1/chat/completions`, {
      model: 'qwen2.5-coder:7b',
      temperature: 0.1,
      messages: [{ role: 'user', content: 'x' }],
    });
    assert.equal(response.status, 400);
    assert.match(((await response.json()) as { error: { message: string } }).error.message, /must be at most 2/);
    assert.equal(cloud.requests.length, 1);
  });

  it('is not used while fallback is off: the client gets a clear 503', async () => {
    const { cloud, bridge } = await withProvider('openai', openAiStream, { enabled: false });
    const response = await postJson(`${bridge.url}/v1/chat/completions`, { model: 'm', messages: [{ role: 'user', content: 'x' }] });
    assert.equal(response.status, 503);
    const body = (await response.json()) as { error: { message: string; code: string } };
    assert.equal(body.error.code, 'no_backend_available');
    assert.ok(documentedErrors().has('503 no_backend_available'), "README's error table lists 503 no_backend_available");
    assert.match(body.error.message, /^no backend can serve this request \(model 'm' requested; no backend can take traffic: local down/);
    assert.equal(cloud.requests.length, 0);
  });

  it('sends no model load or unload to a provider (a native request with nothing to generate): it would answer one, or refuse it', async () => {
    const { cloud, bridge } = await withProvider('openai', openAiStream);
    for (const [path, body] of [
      ['/api/generate', { model: 'm' }],
      ['/api/generate', { model: 'm', prompt: '', keep_alive: 0 }],
      ['/api/chat', { model: 'm', messages: [] }],
    ] as const) {
      const response = await postJson(`${bridge.url}${path}`, body);
      assert.equal(response.status, 503, `${path} ${JSON.stringify(body)}`);
      assert.match(((await response.json()) as { error: string }).error, /cloud fallback skipped: a model load or unload is for a local backend/);
    }
    assert.equal(cloud.requests.length, 0);
  });
});

/** Writes `line` every few milliseconds until the bridge hangs up: a provider that keeps the connection busy but never answers. */
function keepAliveForever(res: ServerResponse, line: string): void {
  const beat = setInterval(() => res.write(line), 20);
  res.on('close', () => clearInterval(beat));
}

describe('cloud fallback: a provider that sends only keep-alives', () => {
  it('ends a started stream with a timeout when only Anthropic pings follow', async () => {
    const { bridge } = await withProvider(
      'anthropic',
      (res) => {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        for (const [event, data] of ANTHROPIC_EVENTS.slice(0, 4)) res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
        keepAliveForever(res, 'event: ping\ndata: {"type": "ping"}\n\n');
      },
      { timeoutSeconds: 0.3 },
    );
    const recorded = nextRecord(bridge);
    const response = await postJson(`${bridge.url}/v1/chat/completions`, { model: 'm', stream: true, messages: [{ role: 'user', content: 'x' }] });
    assert.equal(response.status, 200);
    const received: string[] = [];
    for await (const event of readSseEvents(response)) received.push(event);
    assert.match(received[0] ?? '', /Hello/);
    const last = JSON.parse(received.at(-1) ?? '{}') as { error?: { message: string; code: string } };
    assert.equal(last.error?.code, 'upstream_timeout');
    assert.match((await recorded).error ?? '', /cloud-anthropic timed out/);
  });

  it('answers at Anthropic’s message_stop, without waiting for a provider that keeps the stream open after it', async () => {
    const { bridge } = await withProvider(
      'anthropic',
      (res) => {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        for (const [event, data] of ANTHROPIC_EVENTS) res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
        keepAliveForever(res, 'event: ping\ndata: {"type": "ping"}\n\n');
      },
      { timeoutSeconds: 0.3 },
    );
    const response = await postJson(`${bridge.url}/v1/chat/completions`, { model: 'm', messages: [{ role: 'user', content: 'x' }] });
    assert.equal(response.status, 200);
    const body = (await response.json()) as { choices: Array<{ message: { content: string }; finish_reason: string }>; usage: { completion_tokens: number } };
    assert.equal(body.choices[0]?.message.content, 'Hello world');
    assert.equal(body.choices[0]?.finish_reason, 'tool_calls');
    assert.equal(body.usage.completion_tokens, 89);
  });

  it('answers at Anthropic’s message_delta with its stop reason when a gateway then sends only pings, never message_stop', async () => {
    const { bridge } = await withProvider(
      'anthropic',
      (res) => {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        for (const [event, data] of ANTHROPIC_EVENTS.slice(0, -1)) res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
        keepAliveForever(res, 'event: ping\ndata: {"type": "ping"}\n\n');
      },
      { timeoutSeconds: 5 },
    );
    const response = await postJson(`${bridge.url}/v1/chat/completions`, { model: 'm', messages: [{ role: 'user', content: 'x' }] });
    assert.equal(response.status, 200);
    const body = (await response.json()) as { choices: Array<{ message: { content: string }; finish_reason: string }>; usage: { completion_tokens: number } };
    assert.deepEqual([body.choices[0]?.message.content, body.choices[0]?.finish_reason, body.usage.completion_tokens], ['Hello world', 'tool_calls', 89]);
  });

  it(
    'answers at the usage chunk that follows the finish (include_usage), without waiting for an OpenAI-compatible provider that sends no [DONE], and lets its connection go',
    { timeout: 10_000 },
    async () => {
      let providerClosed!: Promise<void>;
      const { bridge } = await withProvider(
        'openai',
        (res) => {
          providerClosed = new Promise((resolve) => res.on('close', resolve));
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          res.write(chunk({ role: 'assistant', content: 'Hi' }) + chunk({}, 'stop'));
          res.write(
            `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', choices: [], usage: { prompt_tokens: 7, completion_tokens: 9 } })}\n\n`,
          );
          keepAliveForever(res, ': keep-alive\n\n');
        },
        { timeoutSeconds: 5 },
      );
      const response = await postJson(`${bridge.url}/api/chat`, { model: 'm', messages: [{ role: 'user', content: 'x' }], stream: false });
      assert.equal(response.status, 200);
      const body = (await response.json()) as { message: { content: string }; eval_count: number; prompt_eval_count: number };
      assert.deepEqual([body.message.content, body.prompt_eval_count, body.eval_count], ['Hi', 7, 9]);
      await providerClosed;
    },
  );

  it('reads to the end an answer whose every chunk says finish_reason "stop" with a usage (gateways in front of Gemini): only a usage chunk without choices, or [DONE], ends it', async () => {
    const { bridge } = await withProvider('openai', (res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const piece = (content: string, completionTokens: number): string =>
        `data: ${JSON.stringify({ id: 'c', choices: [{ index: 0, delta: { content }, finish_reason: 'stop' }], usage: { prompt_tokens: 7, completion_tokens: completionTokens } })}\n\n`;
      res.end(`${piece('Hel', 1)}${piece('lo', 2)}data: [DONE]\n\n`);
    });
    const response = await postJson(`${bridge.url}/api/chat`, { model: 'm', messages: [{ role: 'user', content: 'x' }], stream: false });
    assert.equal(response.status, 200);
    const body = (await response.json()) as { message: { content: string }; eval_count: number };
    assert.deepEqual([body.message.content, body.eval_count], ['Hello', 2]);
  });

  it('answers at the bare finish chunk when the provider was not asked for usage (its model refused stream_options), without waiting for a [DONE] that does not come', async () => {
    const { cloud, bridge } = await withProvider(
      'openai',
      (res) => {
        if ((JSON.parse(cloud.requests.at(-1)?.body ?? '{}') as Record<string, unknown>).stream_options !== undefined) {
          res.writeHead(400, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ error: { message: 'stream_options is not supported', param: 'stream_options', code: 'unsupported_parameter' } }));
          return;
        }
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        // A finish_reason on chunks that still carry text (as some gateways send it) does not end it; the bare
        // finish does (with only the role in its delta, as Ollama's OpenAI API sends it).
        res.write(chunk({ role: 'assistant', content: 'H' }, 'stop') + chunk({ content: 'i' }, 'stop') + chunk({ role: 'assistant', content: '' }, 'length'));
        keepAliveForever(res, ': keep-alive\n\n');
      },
      { timeoutSeconds: 5 },
    );
    const response = await postJson(`${bridge.url}/api/chat`, { model: 'm', messages: [{ role: 'user', content: 'x' }], stream: false });
    assert.equal(response.status, 200);
    const body = (await response.json()) as { message: { content: string }; done_reason: string };
    assert.deepEqual([body.message.content, body.done_reason], ['Hi', 'length']);
    assert.equal(cloud.requests.length, 2);
  });

  it('answers 504 when an OpenAI-compatible provider sends only comments, never an event', async () => {
    const { bridge } = await withProvider(
      'openai',
      (res) => {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        keepAliveForever(res, ': PROCESSING\n\n');
      },
      { timeoutSeconds: 0.3 },
    );
    const response = await postJson(`${bridge.url}/api/chat`, { model: 'm', messages: [{ role: 'user', content: 'x' }], stream: false });
    assert.equal(response.status, 504);
    assert.match(((await response.json()) as { error: string }).error, /cloud-openai timed out/);
  });
});

describe('cloud fallback: a provider that never answers the connection', () => {
  it('gives up connecting after routing.thresholds.connect_timeout_seconds, as for a local backend, not undici’s 10 s', async () => {
    const hole = await startSynHole();
    const file = configFile(
      `routing:\n  thresholds:\n    connect_timeout_seconds: 0.2\nfallback:\n  enabled: true\n  providers:\n    - name: cloud-openai\n      type: openai\n      base_url: http://127.0.0.1:${hole.port}/v1\n      model: gpt-test\n      timeout_seconds: 60\n`,
    );
    const bridge = await startTestBridge({ file, env: { OLLAMA_HOST: `127.0.0.1:${await freePort()}`, OPENAI_API_KEY: 'sk-oai-test' } });
    try {
      const started = performance.now();
      const response = await postJson(`${bridge.url}/api/chat`, { model: 'm', messages: [{ role: 'user', content: 'x' }], stream: false });
      const waited = performance.now() - started;
      assert.equal(response.status, 504);
      assert.match(((await response.json()) as { error: string }).error, /cloud-openai timed out while connecting/);
      // undici's own connect timeout is 10 s; the configured one is 0.2 s.
      assert.ok(waited < 5000, `gave up connecting after ${Math.round(waited)} ms`);
    } finally {
      await bridge.stop(100);
      await hole.close();
    }
  });
});

describe('cloud fallback: a tool call that never ends', () => {
  // 0.01 MiB: a tool call's pieces may hold about 10 KB; each provider below sends 100 KB.
  const piece = 'x'.repeat(1000);

  it('fails the answer once an OpenAI-compatible provider’s argument fragments pass the line limit', async () => {
    const { bridge } = await withProvider(
      'openai',
      (res) => {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(chunk({ content: 'Writing the file.' }));
        res.write(chunk({ tool_calls: [{ index: 0, id: 'call_a', type: 'function', function: { name: 'write', arguments: '{"text":"' } }] }));
        for (let i = 0; i < 100; i++) res.write(chunk({ tool_calls: [{ index: 0, function: { arguments: piece } }] }));
        res.end(chunk({ tool_calls: [{ index: 0, function: { arguments: '"}' } }] }) + chunk({}, 'tool_calls') + 'data: [DONE]\n\n');
      },
      { maxLineMb: 0.01 },
    );
    const response = await postJson(`${bridge.url}/api/chat`, { model: 'm', messages: [{ role: 'user', content: 'x' }], tools: TOOLS, stream: false });
    assert.equal(response.status, 502);
    assert.match(((await response.json()) as { error: string }).error, /cloud-openai sent a line longer than 10486 bytes/);
  });

  it('fails the answer once an Anthropic tool_use block’s input_json_delta pieces pass the line limit', async () => {
    const events: Array<[string, unknown]> = [
      ...ANTHROPIC_EVENTS.slice(0, 6),
      ANTHROPIC_EVENTS[6] as [string, unknown],
      ...Array.from({ length: 100 }, (): [string, unknown] => [
        'content_block_delta',
        { type: 'content_block_delta', index: 1, delta: { type: 'input_json_delta', partial_json: piece } },
      ]),
      ...ANTHROPIC_EVENTS.slice(10),
    ];
    const { bridge } = await withProvider('anthropic', (res) => anthropicStream(res, events), { maxLineMb: 0.01 });
    const response = await postJson(`${bridge.url}/api/chat`, { model: 'm', messages: [{ role: 'user', content: 'x' }], tools: TOOLS });
    assert.equal(response.status, 200);
    const lines = (await response.text()).trim().split('\n');
    assert.match(lines[0] ?? '', /Hello/);
    assert.deepEqual(JSON.parse(lines.at(-1) ?? ''), { error: 'cloud-anthropic sent a line longer than 10486 bytes (routing.thresholds.max_line_mb)' });
  });
});

describe('cloud fallback: a provider that sends the wrong types', () => {
  it('skips the fields of the wrong type an OpenAI-compatible provider sends, and keeps the rest of its answer', async () => {
    const { bridge } = await withProvider('openai', (res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const data = (chunk: unknown): string => `data: ${JSON.stringify(chunk)}\n\n`;
      res.write(data({ error: null, choices: [{ index: 0, delta: { role: 'assistant', content: 'Hi' }, finish_reason: null }] }));
      res.write(data({ choices: 5, usage: 'none' }));
      res.write(data({ choices: [null, { delta: 'text' }, { delta: { content: 7, tool_calls: 'call' } }] }));
      res.write(data({ choices: [{ delta: { tool_calls: [null, { index: 0, function: { name: 'get_weather', arguments: 42 } }] } }] }));
      res.write(data({ choices: [{ delta: { tool_calls: [{ index: 1, function: { name: 'get_weather', arguments: '["Oslo"]' } }] } }] }));
      res.end(data({ choices: [{ delta: {}, finish_reason: 'tool_calls' }], usage: { prompt_tokens: 'many', completion_tokens: 3 } }) + 'data: [DONE]\n\n');
    });
    const response = await postJson(`${bridge.url}/api/chat`, { model: 'm', messages: [{ role: 'user', content: 'x' }], tools: TOOLS, stream: false });
    assert.equal(response.status, 200);
    const body = (await response.json()) as { message: { content: string; tool_calls: unknown[] }; eval_count?: number; prompt_eval_count?: number };
    assert.equal(body.message.content, 'Hi');
    // Arguments that are JSON but not an object reach no client as such: Ollama's own are always an object.
    assert.deepEqual(body.message.tool_calls, [
      { function: { name: 'get_weather', arguments: {} } },
      { function: { name: 'get_weather', arguments: { _raw: '["Oslo"]' } } },
    ]);
    assert.deepEqual([body.prompt_eval_count, body.eval_count], [undefined, 3]);
  });

  it('skips the fields of the wrong type Anthropic’s events carry, and keeps the rest of the answer', async () => {
    const events: Array<[string, unknown]> = [
      ['message_start', { type: 'message_start', message: { usage: 'lots' } }],
      ['content_block_start', { type: 'content_block_start', index: 0, content_block: 5 }],
      ['content_block_delta', { type: 'content_block_delta', index: 0, delta: 'Hello' }],
      ['content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'Hello' } }],
      ['content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: { nested: true } } }],
      ['content_block_stop', { type: 'content_block_stop', index: '0' }],
      ['content_block_start', { type: 'content_block_start', index: 1, content_block: { type: 'tool_use', id: 'toolu_1', name: 9 } }],
      ['content_block_delta', { type: 'content_block_delta', index: 1, delta: { type: 'input_json_delta', partial_json: ['{'] } }],
      ['content_block_stop', { type: 'content_block_stop', index: 1 }],
      ['message_delta', { type: 'message_delta', delta: null, usage: null }],
      ['message_delta', { type: 'message_delta', delta: { stop_reason: 7 }, usage: { output_tokens: 'x' } }],
      ['message_stop', { type: 'message_stop' }],
    ];
    const { bridge } = await withProvider('anthropic', (res) => anthropicStream(res, events));
    const response = await postJson(`${bridge.url}/api/chat`, { model: 'm', messages: [{ role: 'user', content: 'x' }], stream: false });
    assert.equal(response.status, 200);
    const body = (await response.json()) as { message: { content: string; tool_calls?: unknown[] }; done_reason: string; eval_count?: number };
    assert.equal(body.message.content, 'Hello');
    assert.deepEqual(body.message.tool_calls, [{ function: { name: '', arguments: {} } }]);
    assert.equal(body.done_reason, 'stop');
    assert.equal(body.eval_count, undefined);
  });

  for (const type of ['openai', 'anthropic'] as const) {
    it(`ends the answer with a clear error when ${type === 'openai' ? 'an OpenAI-compatible provider' : 'Anthropic'} sends an event that is not a JSON object`, async () => {
      const { bridge } = await withProvider(type, (res) => {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.end('data: null\n\n');
      });
      const response = await postJson(`${bridge.url}/api/chat`, { model: 'm', messages: [{ role: 'user', content: 'x' }], stream: false });
      assert.equal(response.status, 502);
      assert.equal(((await response.json()) as { error: string }).error, `cloud-${type} sent a line that is not a JSON object`);
    });
  }
});

describe('cloud fallback: credentials in provider errors', () => {
  it('redacts the key and anything that looks like a credential from error answers, in the answer, history and log', async () => {
    const key = 'azure0123456789abcdef0123';
    const echo = `Incorrect API key provided: ${key}. Sent Authorization: Bearer ${key}; project key sk-proj-abcdefghijklmnop`;
    let mode: 'status' | 'stream' = 'status';
    const cloud = await startStandIn((_req, res) => {
      if (mode === 'status') {
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { message: echo, type: 'invalid_request_error' } }));
        return;
      }
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.end(`data: ${JSON.stringify({ error: { message: echo } })}\n\n`);
    });
    const file = configFile(
      `fallback:\n  enabled: true\n  providers:\n    - name: cloud\n      type: openai\n      base_url: ${cloud.url}/v1\n      model: gpt-test\n`,
    );
    const { logger, lines } = memoryLogger();
    const bridge = await startTestBridge({ file, logger, env: { OLLAMA_HOST: `127.0.0.1:${await freePort()}`, OPENAI_API_KEY: key } });
    cleanups.push(
      () => bridge.stop(100),
      () => cloud.close(),
    );

    const refused = await postJson(`${bridge.url}/v1/chat/completions`, { model: 'm', messages: [{ role: 'user', content: 'x' }] });
    assert.equal(refused.status, 502);
    const refusedText = await refused.text();
    assert.match(refusedText, /Incorrect API key provided: \[redacted\]/);
    mode = 'stream';
    const streamed = await postJson(`${bridge.url}/api/chat`, { model: 'm', messages: [{ role: 'user', content: 'x' }] });
    const streamedText = await streamed.text();
    assert.match(streamedText, /Bearer \[redacted\]/);
    await bridge.stop(100);

    const everything = [refusedText, streamedText, JSON.stringify(bridge.history.recent()), JSON.stringify(lines())].join('\n');
    assert.equal(bridge.history.recent().length, 2);
    assert.ok(!everything.includes(key), 'the key is still in an answer, the history or the log');
    assert.ok(!everything.includes('sk-proj-abcdefghijklmnop'), 'a key-like token is still in an answer, the history or the log');
  });
});

describe('a provider’s event stream that starts with a byte order mark', () => {
  it('keeps its first event: the mark is not part of the first field name', async () => {
    // Split inside the mark's three bytes too, as a network may deliver them.
    const bytes = Buffer.from('\uFEFFdata: {"n":1}\n\ndata: {"n":2}\n\n');
    const events: string[] = [];
    for await (const event of readSse(Readable.from([bytes.subarray(0, 2), bytes.subarray(2)]), 1 << 20)) events.push(event.data);
    assert.deepEqual(events, ['{"n":1}', '{"n":2}']);
  });
});

describe('a provider’s event stream whose lines end in a lone CR', () => {
  it('splits them as the SSE spec does (CRLF, LF or CR), a CRLF split over two chunks ending one line', async () => {
    const chunks = ['data: a\r\rdata: b\r', '\r', 'data: c\r', '\ndata: d\r\n\r\n', 'data: e\n\n'].map((text) => Buffer.from(text));
    const events: string[] = [];
    for await (const event of readSse(Readable.from(chunks), 1 << 20)) events.push(event.data);
    assert.deepEqual(events, ['a', 'b', 'c\nd', 'e']);
  });
});

describe('cloud fallback: a chain of providers', () => {
  /** A bridge with these providers, stopped after the tests. */
  async function withProviders(...providers: Parameters<typeof startCloudChainBridge>[0]): Promise<{ clouds: StandIn[]; bridge: BridgeHandle }> {
    const started = await startCloudChainBridge(providers);
    cleanups.push(started.close);
    return started;
  }

  /** An OpenAI-compatible provider that fails every request (500), then an Anthropic one that answers: what reaches the second shows what the translation sent. */
  const anthropicAfterFailingOpenAi = (): Promise<{ clouds: StandIn[]; bridge: BridgeHandle }> =>
    withProviders(
      {
        type: 'openai',
        respond: (res) => {
          res.writeHead(500);
          res.end();
        },
      },
      { type: 'anthropic', respond: anthropicStream },
    );

  it('asks the next provider when one answers 400 for its own limits (another vendor, other limits and model)', async () => {
    const { clouds, bridge } = await withProviders(
      {
        type: 'openai',
        respond: (res) => {
          res.writeHead(400, { 'content-type': 'application/json' });
          res.end(
            JSON.stringify({
              error: { message: "This model's maximum context length is 8192 tokens", type: 'invalid_request_error', code: 'context_length_exceeded' },
            }),
          );
        },
      },
      { type: 'anthropic', respond: anthropicStream },
    );
    const recorded = nextRecord(bridge);
    const response = await postJson(`${bridge.url}/v1/chat/completions`, { model: 'm', messages: [{ role: 'user', content: 'x' }] });
    assert.equal(response.status, 200);
    assert.equal(((await response.json()) as { choices: Array<{ message: { content: string } }> }).choices[0]?.message.content, 'Hello world');
    assert.deepEqual([clouds[0]?.requests.length, clouds[1]?.requests.length], [1, 1]);
    assert.equal((await recorded).fallback, 'cloud-anthropic-1');
  });

  it('pairs each tool result with the call its id names, not by order, when a client answers parallel calls of one tool out of order', async () => {
    const { clouds, bridge } = await anthropicAfterFailingOpenAi();
    const call = (id: string, city: string): Record<string, unknown> => ({
      id,
      type: 'function',
      function: { name: 'get_weather', arguments: JSON.stringify({ city }) },
    });
    const response = await postJson(`${bridge.url}/v1/chat/completions`, {
      model: 'm',
      messages: [
        { role: 'user', content: 'weather in Paris and Oslo?' },
        { role: 'assistant', content: null, tool_calls: [call('call_paris', 'Paris'), call('call_oslo', 'Oslo')] },
        { role: 'tool', tool_call_id: 'call_oslo', content: 'Oslo: 5 degrees' },
        { role: 'tool', tool_call_id: 'call_paris', content: 'Paris: 20 degrees' },
      ],
    });
    assert.equal(response.status, 200);
    const openAiSent = (
      JSON.parse(clouds[0]?.requests[0]?.body ?? '{}') as {
        messages: Array<{ content: string; tool_call_id?: string; tool_calls?: Array<{ id: string; function: { arguments: string } }> }>;
      }
    ).messages;
    const openAiCallOf = new Map(openAiSent[1]?.tool_calls?.map((c) => [c.id, (JSON.parse(c.function.arguments) as { city: string }).city]));
    assert.deepEqual(
      openAiSent.slice(2).map((m) => [m.content, openAiCallOf.get(m.tool_call_id ?? '')]),
      [
        ['Oslo: 5 degrees', 'Oslo'],
        ['Paris: 20 degrees', 'Paris'],
      ],
    );
    const anthropicSent = (
      JSON.parse(clouds[1]?.requests[0]?.body ?? '{}') as {
        messages: Array<{ content: Array<{ type: string; id?: string; input?: { city: string }; tool_use_id?: string; content?: string }> }>;
      }
    ).messages;
    const blocks = anthropicSent.flatMap((m) => m.content);
    const anthropicCallOf = new Map(blocks.filter((b) => b.type === 'tool_use').map((b) => [b.id, b.input?.city]));
    assert.deepEqual(
      blocks.filter((b) => b.type === 'tool_result').map((b) => [b.content, anthropicCallOf.get(b.tool_use_id)]),
      [
        ['Oslo: 5 degrees', 'Oslo'],
        ['Paris: 20 degrees', 'Paris'],
      ],
    );
  });

  it('sends a tool result’s images where each API takes them: Anthropic in the tool_result, OpenAI in a user message after the results (it takes images only from a user)', async () => {
    const { clouds, bridge } = await anthropicAfterFailingOpenAi();
    const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0]).toString('base64');
    const response = await postJson(`${bridge.url}/api/chat`, {
      model: 'm',
      stream: false,
      messages: [
        { role: 'user', content: 'look at both' },
        {
          role: 'assistant',
          content: '',
          tool_calls: [{ function: { name: 'screenshot', arguments: { of: 'a' } } }, { function: { name: 'screenshot', arguments: { of: 'b' } } }],
        },
        { role: 'tool', tool_name: 'screenshot', content: 'a', images: [png] },
        { role: 'tool', tool_name: 'screenshot', content: '', images: [png] },
      ],
    });
    assert.equal(response.status, 200);
    const openAi = (JSON.parse(clouds[0]?.requests[0]?.body ?? '{}') as { messages: Array<{ role: string; content: unknown }> }).messages;
    assert.deepEqual(openAi.slice(2), [
      { role: 'tool', content: 'a', tool_call_id: 'call_0' },
      { role: 'tool', content: '', tool_call_id: 'call_1' },
      {
        role: 'user',
        content: [
          { type: 'image_url', image_url: { url: `data:image/png;base64,${png}` } },
          { type: 'image_url', image_url: { url: `data:image/png;base64,${png}` } },
        ],
      },
    ]);
    const anthropic = (JSON.parse(clouds[1]?.requests[0]?.body ?? '{}') as { messages: Array<{ role: string; content: unknown }> }).messages;
    const image = { type: 'image', source: { type: 'base64', media_type: 'image/png', data: png } };
    assert.deepEqual(anthropic.slice(2), [
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'call_0', content: [{ type: 'text', text: 'a' }, image] }] },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'call_1', content: [image] }] },
    ]);
  });

  it('answers 400 in the client’s own form, asking no provider, for a tool result that answers no earlier tool call (OpenAI and Anthropic refuse one)', async () => {
    const { clouds, bridge } = await withProviders({ type: 'openai', respond: openAiStream }, { type: 'anthropic', respond: anthropicStream });
    const recorded = nextRecord(bridge);
    const openAi = await postJson(`${bridge.url}/v1/chat/completions`, {
      model: 'm',
      messages: [
        { role: 'user', content: 'weather?' },
        { role: 'tool', tool_call_id: 'call_gone', content: '12 degrees' },
      ],
    });
    assert.equal(openAi.status, 400);
    const openAiError = ((await openAi.json()) as { error: { message: string; type: string; code: string } }).error;
    assert.match(openAiError.message, /a tool result answers no earlier tool call/);
    assert.deepEqual([openAiError.type, openAiError.code], ['invalid_request_error', 'invalid_request']);
    // Each provider would refuse it alike: the next one is not tried.
    assert.doesNotMatch((await recorded).reason, /fallback to cloud-anthropic-1/);
    const anthropic = await postJson(`${bridge.url}/v1/messages`, {
      model: 'm',
      max_tokens: 100,
      messages: [
        { role: 'user', content: 'weather?' },
        { role: 'assistant', content: 'Let me look.' },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_gone', content: '12 degrees' }] },
      ],
    });
    assert.equal(anthropic.status, 400);
    const anthropicError = (await anthropic.json()) as { type: string; error: { type: string; message: string } };
    assert.equal(anthropicError.error.type, 'invalid_request_error');
    assert.match(anthropicError.error.message, /a tool result answers no earlier tool call/);
    assert.deepEqual([clouds[0]?.requests.length, clouds[1]?.requests.length], [0, 0]);
  });
});

describe('cloud fallback: tool-call arguments nested too deep', () => {
  const deep = `{"x":${'['.repeat(20_000)}${']'.repeat(20_000)}}`;
  const tooDeep = /sent tool-call arguments nested deeper than 512 levels$/;

  it('fails the answer as the provider’s, from the JSON text an OpenAI-compatible provider streams', async () => {
    const { bridge } = await withProvider('openai', (res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(chunk({ tool_calls: [{ index: 0, id: 'call_a', type: 'function', function: { name: 'get_weather', arguments: deep } }] }));
      res.end(chunk({}, 'tool_calls') + 'data: [DONE]\n\n');
    });
    const response = await postJson(`${bridge.url}/api/chat`, { model: 'm', messages: [{ role: 'user', content: 'x' }], tools: TOOLS, stream: false });
    assert.equal(response.status, 502);
    assert.match(((await response.json()) as { error: string }).error, tooDeep);
  });

  it('and from the input of an Anthropic tool_use block', async () => {
    const events: Array<[string, unknown]> = [
      ...ANTHROPIC_EVENTS.slice(0, 7),
      ['content_block_delta', { type: 'content_block_delta', index: 1, delta: { type: 'input_json_delta', partial_json: deep } }],
      ...ANTHROPIC_EVENTS.slice(10),
    ];
    const { bridge } = await withProvider('anthropic', (res) => anthropicStream(res, events));
    const response = await postJson(`${bridge.url}/api/chat`, { model: 'm', messages: [{ role: 'user', content: 'x' }], tools: TOOLS, stream: false });
    assert.equal(response.status, 502);
    assert.match(((await response.json()) as { error: string }).error, tooDeep);
  });
});
