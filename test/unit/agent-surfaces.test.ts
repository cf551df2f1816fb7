import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import { after, before, describe, it } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import type { BridgeHandle } from '../../src/bridge.js';
import type { HistoryRecord } from '../../src/history/store.js';
import { anthropicFormat } from '../../src/api/anthropic/messages.js';
import { startStandIn, startTestBridge } from '../support/bridge.js';
import { freePort } from '../support/ollama-rig.js';
import { startScriptedOllama, type ScriptedChat, type ScriptedOllama, type ScriptedTurn } from '../support/scripted-ollama.js';
import { namedSseEvents, readLines } from '../support/streams.js';
import { configFile } from '../support/temp.js';

/**
 * The Messages and Responses surfaces against a scripted Ollama that calls tools, thinks, breaks
 * and hangs on demand: tool round trips through the real SDKs, thinking, errors in each surface's
 * own shape, cloud fallback, `auto` routing and the client signals in the history.
 */

const MODELS = { simple: 'scripted-small:1b', complex: 'scripted-large:7b', thinker: 'scripted-thinker:8b' };

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** The config of these tests, with `extra` YAML at its end; the file's path. */
function agentConfig(extra = ''): string {
  return configFile(
    `models:\n  simple:\n    name: "${MODELS.simple}"\n  complex:\n    name: "${MODELS.complex}"\nrouting:\n  classification:\n    complex_keywords: [architect]\n${extra}`,
  );
}

/** The stand-in's script: a tool call while the last turn is the user's, then text that quotes the tool result. */
function toolScript(chat: ScriptedChat): ScriptedTurn {
  const last = chat.messages.at(-1);
  const tool = chat.tools?.[0]?.function.name;
  if (last?.role === 'tool') return { text: ['The file says: ', last.content] };
  if (tool !== undefined) return { text: ['Let me look.'], toolCalls: [{ name: tool, arguments: { path: 'a.txt' } }] };
  return { text: ['Hello', ' there'] };
}

async function scriptedBridge(
  script: (chat: ScriptedChat) => ScriptedTurn,
  extra = '',
  capabilities?: string[],
): Promise<{ ollama: ScriptedOllama; bridge: BridgeHandle }> {
  const ollama = await startScriptedOllama(Object.values(MODELS), script, capabilities);
  const bridge = await startTestBridge({ file: agentConfig(extra), env: { OLLAMA_HOST: ollama.url } });
  cleanups.push(
    () => ollama.close(),
    () => bridge.stop(100),
  );
  return { ollama, bridge };
}

const READ_FILE = { type: 'object' as const, properties: { path: { type: 'string' } }, required: ['path'] };

const post = (url: string, body: string, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<Response> =>
  fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body, signal });

function nextRecord(bridge: BridgeHandle, path: string): Promise<HistoryRecord> {
  return new Promise((resolve) => {
    const stop = bridge.history.onRecord((record) => {
      if (record.path !== path) return;
      stop();
      resolve(record);
    });
  });
}

describe('tool round trips through the real SDKs', () => {
  let ollama: ScriptedOllama;
  let anthropic: Anthropic;
  let openai: OpenAI;
  before(async () => {
    let bridge: BridgeHandle;
    ({ ollama, bridge } = await scriptedBridge(toolScript));
    anthropic = new Anthropic({ baseURL: bridge.url, apiKey: 'unused', maxRetries: 0 });
    openai = new OpenAI({ baseURL: `${bridge.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  });

  for (const streamed of [false, true]) {
    it(`Anthropic: tool_use, then the tool_result answered (${streamed ? 'messages.stream' : 'messages.create'})`, async () => {
      const params = {
        model: MODELS.complex,
        max_tokens: 4096,
        tools: [{ name: 'Read', description: 'Read a file', input_schema: READ_FILE }],
        messages: [{ role: 'user' as const, content: 'What is in a.txt?' }],
      };
      const first = streamed ? await anthropic.messages.stream(params).finalMessage() : await anthropic.messages.create(params);
      assert.equal(first.stop_reason, 'tool_use');
      assert.deepEqual(
        first.content.map((b) => b.type),
        ['text', 'tool_use'],
      );
      const call = first.content[1];
      assert.ok(call?.type === 'tool_use');
      assert.equal(call.name, 'Read');
      assert.deepEqual(call.input, { path: 'a.txt' });
      assert.match(call.id, /^toolu_/);

      const second = await anthropic.messages.create({
        ...params,
        messages: [
          ...params.messages,
          {
            role: 'assistant',
            content: first.content.map((b) =>
              b.type === 'tool_use'
                ? { type: 'tool_use' as const, id: b.id, name: b.name, input: b.input }
                : { type: 'text' as const, text: b.type === 'text' ? b.text : '' },
            ),
          },
          { role: 'user', content: [{ type: 'tool_result', tool_use_id: call.id, content: 'hello world', is_error: false }] },
        ],
      });
      assert.equal(second.stop_reason, 'end_turn');
      assert.deepEqual(second.content, [{ type: 'text', text: 'The file says: hello world' }]);
      const seen = ollama.chats.at(-1);
      assert.deepEqual(seen?.messages.slice(-2), [
        { role: 'assistant', content: 'Let me look.', tool_calls: [{ id: call.id, function: { name: 'Read', arguments: { path: 'a.txt' } } }] },
        { role: 'tool', content: 'hello world', tool_name: 'Read', tool_call_id: call.id },
      ]);
    });

    it(`Responses: function_call, then the function_call_output answered (${streamed ? 'responses.stream' : 'responses.create'})`, async () => {
      const params = {
        model: MODELS.complex,
        store: false,
        tools: [{ type: 'function' as const, name: 'read_file', description: 'Read a file', parameters: READ_FILE, strict: false }],
        input: [{ type: 'message' as const, role: 'user' as const, content: [{ type: 'input_text' as const, text: 'What is in a.txt?' }] }],
      };
      const first = streamed ? await openai.responses.stream(params).finalResponse() : await openai.responses.create(params);
      assert.equal(first.status, 'completed');
      assert.deepEqual(
        first.output.map((item) => item.type),
        ['message', 'function_call'],
      );
      const call = first.output[1];
      assert.ok(call?.type === 'function_call');
      assert.equal(call.name, 'read_file');
      assert.deepEqual(JSON.parse(call.arguments), { path: 'a.txt' });
      assert.equal(first.output_text, 'Let me look.');

      const second = await openai.responses.create({
        ...params,
        input: [
          ...params.input,
          { type: 'function_call', call_id: call.call_id, name: call.name, arguments: call.arguments },
          { type: 'function_call_output', call_id: call.call_id, output: 'hello world' },
        ],
      });
      assert.equal(second.output_text, 'The file says: hello world');
      assert.deepEqual(ollama.chats.at(-1)?.messages.slice(-2), [
        { role: 'assistant', content: '', tool_calls: [{ id: call.call_id, function: { name: 'read_file', arguments: { path: 'a.txt' } } }] },
        { role: 'tool', content: 'hello world', tool_name: 'read_file', tool_call_id: call.call_id },
      ]);
    });
  }
});

describe('thinking on every surface', () => {
  let ollama: ScriptedOllama;
  let bridge: BridgeHandle;
  before(async () => {
    ({ ollama, bridge } = await scriptedBridge(() => ({ thinking: ['Consider ', 'it.'], text: ['Answer.'] }), '', ['completion', 'tools', 'thinking']));
  });

  it('Anthropic: thinking enabled is think: true, answered as a thinking block before the text; display omitted hides it', async () => {
    const anthropic = new Anthropic({ baseURL: bridge.url, apiKey: 'unused', maxRetries: 0 });
    const message = await anthropic.messages
      .stream({ model: MODELS.complex, max_tokens: 4000, thinking: { type: 'enabled', budget_tokens: 2000 }, messages: [{ role: 'user', content: 'hi' }] })
      .finalMessage();
    assert.equal(ollama.chats.at(-1)?.think, true);
    assert.deepEqual(message.content, [
      { type: 'thinking', thinking: 'Consider it.', signature: '' },
      { type: 'text', text: 'Answer.' },
    ]);
    const hidden = await anthropic.messages.create({
      model: MODELS.complex,
      max_tokens: 100,
      thinking: { type: 'adaptive', display: 'omitted' } as never,
      messages: [{ role: 'user', content: 'hi' }],
    });
    assert.deepEqual(hidden.content, [{ type: 'text', text: 'Answer.' }]);
  });

  it('Anthropic: a request that did not turn thinking on gets no thinking block, though the model thinks by itself', async () => {
    const anthropic = new Anthropic({ baseURL: bridge.url, apiKey: 'unused', maxRetries: 0 });
    const params = { model: MODELS.complex, max_tokens: 100, messages: [{ role: 'user' as const, content: 'hi' }] };
    const whole = await anthropic.messages.create(params);
    assert.deepEqual(whole.content, [{ type: 'text', text: 'Answer.' }]);
    const stream = anthropic.messages.stream(params);
    const started: string[] = [];
    stream.on('streamEvent', (event) => {
      if (event.type === 'content_block_start') started.push(`${event.index}:${event.content_block.type}`);
    });
    assert.deepEqual((await stream.finalMessage()).content, [{ type: 'text', text: 'Answer.' }]);
    assert.deepEqual(started, ['0:text']);
  });

  it('Responses: reasoning.effort is think, the thinking a reasoning item whose summary streams', async () => {
    const openai = new OpenAI({ baseURL: `${bridge.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const stream = openai.responses.stream({ model: MODELS.complex, input: 'hi', reasoning: { effort: 'high', summary: 'auto' } });
    let summary = '';
    stream.on('response.reasoning_summary_text.delta', (event) => {
      summary += event.delta;
    });
    const response = await stream.finalResponse();
    // Levels are for gpt-oss; other families only switch thinking on.
    assert.equal(ollama.chats.at(-1)?.think, true);
    assert.equal(summary, 'Consider it.');
    const reasoning = response.output[0];
    assert.ok(reasoning?.type === 'reasoning');
    assert.deepEqual(reasoning.summary, [{ type: 'summary_text', text: 'Consider it.' }]);
    assert.equal(response.output_text, 'Answer.');
  });

  it('chat completions: reasoning_effort is think, the thinking comes back as reasoning_content and reasoning', async () => {
    const response = await post(
      `${bridge.url}/v1/chat/completions`,
      JSON.stringify({ model: MODELS.complex, reasoning_effort: 'low', messages: [{ role: 'user', content: 'hi' }] }),
    );
    const body = (await response.json()) as { choices: Array<{ message: { reasoning_content: string; reasoning: string; content: string } }> };
    assert.equal(ollama.chats.at(-1)?.think, true);
    assert.equal(body.choices[0]?.message.reasoning_content, 'Consider it.');
    assert.equal(body.choices[0]?.message.reasoning, 'Consider it.');
    const none = await post(
      `${bridge.url}/v1/chat/completions`,
      JSON.stringify({ model: MODELS.complex, reasoning_effort: 'none', messages: [{ role: 'user', content: 'hi' }] }),
    );
    await none.arrayBuffer();
    assert.equal(ollama.chats.at(-1)?.think, false);
  });

  it('native /api/chat: think passes through, the thinking comes back as thinking', async () => {
    const response = await post(
      `${bridge.url}/api/chat`,
      JSON.stringify({ model: MODELS.complex, think: 'high', stream: false, messages: [{ role: 'user', content: 'hi' }] }),
    );
    const body = (await response.json()) as { message: { thinking: string } };
    assert.equal(ollama.chats.at(-1)?.think, true);
    assert.equal(body.message.thinking, 'Consider it.');
  });
});

describe('errors in each surface’s own shape', () => {
  const messages = (model: string, stream = false): string => JSON.stringify({ model, max_tokens: 10, stream, messages: [{ role: 'user', content: 'hi' }] });
  const responses = (model: string, stream = false): string => JSON.stringify({ model, stream, input: 'hi' });

  it('bad JSON: Anthropic invalid_request_error, OpenAI error object', async () => {
    const { bridge } = await scriptedBridge(toolScript);
    const a = await post(`${bridge.url}/v1/messages?beta=true`, '{"model": ');
    assert.equal(a.status, 400);
    const aBody = (await a.json()) as { type: string; error: { type: string; message: string } };
    assert.equal(aBody.type, 'error');
    assert.equal(aBody.error.type, 'invalid_request_error');
    assert.match(aBody.error.message, /not valid JSON/);
    const o = await post(`${bridge.url}/v1/responses`, '{"model": ');
    assert.equal(o.status, 400);
    assert.equal(((await o.json()) as { error: { type: string } }).error.type, 'invalid_request_error');
    const missing = await post(`${bridge.url}/v1/messages`, JSON.stringify({ model: MODELS.complex, messages: [] }));
    assert.equal(missing.status, 400);
    assert.equal(((await missing.json()) as { error: { type: string } }).error.type, 'invalid_request_error');
    const imageUrl = await post(
      `${bridge.url}/v1/messages`,
      JSON.stringify({
        model: MODELS.complex,
        max_tokens: 5,
        messages: [{ role: 'user', content: [{ type: 'image', source: { type: 'url', url: 'https://example.com/a.png' } }] }],
      }),
    );
    assert.equal(imageUrl.status, 400);
    const imageBody = (await imageUrl.json()) as { type: string; error: { type: string; message: string } };
    assert.equal(imageBody.error.type, 'invalid_request_error');
    assert.match(imageBody.error.message, /only base64 image sources/);
    const badArguments = await post(
      `${bridge.url}/v1/responses`,
      JSON.stringify({ model: MODELS.complex, input: [{ type: 'function_call', call_id: 'c', name: 'f', arguments: '{oops' }] }),
    );
    assert.equal(badArguments.status, 400);
    assert.equal(((await badArguments.json()) as { error: { param: string } }).error.param, 'input.0.arguments');
  });

  it('unknown model: 404 that says the model was not found', async () => {
    const { bridge } = await scriptedBridge(toolScript);
    const a = await post(`${bridge.url}/v1/messages`, messages('claude-sonnet-4-5'), { 'x-api-key': 'k', 'anthropic-version': '2023-06-01' });
    assert.equal(a.status, 404);
    const body = (await a.json()) as { type: string; error: { type: string; message: string } };
    assert.equal(body.error.type, 'not_found_error');
    assert.match(body.error.message, /model 'claude-sonnet-4-5' not found/);
    const o = await post(`${bridge.url}/v1/responses`, responses('gpt-5'));
    assert.equal(o.status, 404);
    assert.deepEqual(((await o.json()) as { error: { code: string } }).error.code, 'model_not_found');
  });

  it('upstream down: a gateway status in each shape', async () => {
    const bridge = await startTestBridge({ file: agentConfig(), env: { OLLAMA_HOST: `127.0.0.1:${await freePort()}` } });
    cleanups.push(() => bridge.stop(100));
    const a = await post(`${bridge.url}/v1/messages`, messages(MODELS.complex));
    assert.ok(a.status >= 502 && a.status <= 503, String(a.status));
    const body = (await a.json()) as { type: string; error: { type: string } };
    assert.equal(body.type, 'error');
    assert.ok(['api_error', 'overloaded_error'].includes(body.error.type));
    const o = await post(`${bridge.url}/v1/responses`, responses(MODELS.complex));
    assert.ok(o.status >= 502 && o.status <= 503);
    assert.equal(((await o.json()) as { error: { type: string } }).error.type, 'api_error');
  });

  it('mid-stream failure: Anthropic error event, Responses response.failed', async () => {
    const { bridge } = await scriptedBridge(() => ({ text: ['partial'], afterFirstLine: 'die' }));
    const a = await namedSseEvents(await post(`${bridge.url}/v1/messages`, messages(MODELS.complex, true)));
    assert.deepEqual(
      a.map(([name]) => name),
      ['message_start', 'content_block_start', 'content_block_delta', 'error'],
    );
    assert.equal((a.at(-1)?.[1].error as { type: string }).type, 'api_error');
    const o = await namedSseEvents(await post(`${bridge.url}/v1/responses`, responses(MODELS.complex, true)));
    assert.equal(o.at(-1)?.[0], 'response.failed');
    const failed = o.at(-1)?.[1].response as { status: string; error: { code: string; message: string } };
    assert.equal(failed.status, 'failed');
    assert.equal(failed.error.code, 'server_error');
    assert.ok(failed.error.message.length > 0);
  });

  it('Anthropic: a stream cut because the bridge stops (a 503 before the answer) ends with overloaded_error, as the SDK reads it', async () => {
    const { bridge } = await scriptedBridge(() => ({ text: ['first'], afterFirstLine: 'hold' }));
    const anthropic = new Anthropic({ baseURL: bridge.url, apiKey: 'unused', maxRetries: 0 });
    const stream = anthropic.messages.stream({ model: MODELS.complex, max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] });
    const firstText = new Promise((resolve) => stream.once('text', resolve));
    const failure = stream.finalMessage().then(
      () => assert.fail('a cut stream must not complete'),
      (error: unknown) => error,
    );
    await firstText;
    await bridge.stop(50);
    const error = await failure;
    assert.ok(error instanceof Anthropic.APIError, String(error));
    assert.equal(error.type, 'overloaded_error');
    assert.match(String(error.message), /stopped before this answer was complete/);
    // The same failure of the upstream itself: one type whether it strikes before the stream or in it.
    const unavailable = anthropicFormat(MODELS.complex, { showThinking: true, parallelToolCalls: true }).error(
      'backend local is shutting down',
      'upstream_unavailable',
    );
    assert.match(unavailable, /"type":"overloaded_error"/);
  });

  it('Responses: a stream whose upstream goes silent fails with server_error, a code of openai-node’s ResponseError, and says why', async () => {
    const thresholds = '  thresholds:\n    timeout_seconds: 0.3\n    idle_timeout_seconds: 0.3\n    max_retries: 0\n';
    const { bridge } = await scriptedBridge(() => ({ text: ['first'], afterFirstLine: 'hold' }), thresholds);
    const events = await namedSseEvents(await post(`${bridge.url}/v1/responses`, responses(MODELS.complex, true)));
    assert.equal(events.at(-1)?.[0], 'response.failed');
    const failed = events.at(-1)?.[1].response as { status: string; error: unknown };
    assert.equal(failed.status, 'failed');
    assert.deepEqual(failed.error, { code: 'server_error', message: 'backend local timed out while waiting for the next chunk' });
  });

  it('an upstream that goes silent: Anthropic timeout_error, before the answer (504) and in the stream', async () => {
    const thresholds = '  thresholds:\n    timeout_seconds: 0.3\n    idle_timeout_seconds: 0.3\n    max_retries: 0\n';
    const { bridge } = await scriptedBridge(() => ({ text: ['first'], afterFirstLine: 'hold' }), thresholds);
    const events = await namedSseEvents(await post(`${bridge.url}/v1/messages`, messages(MODELS.complex, true)));
    assert.equal(events.at(-1)?.[0], 'error');
    assert.deepEqual(events.at(-1)?.[1].error, { type: 'timeout_error', message: `backend local timed out while waiting for the next chunk` });

    const silent = await startStandIn(() => undefined, [MODELS.complex]);
    const quiet = await startTestBridge({ file: agentConfig(thresholds), env: { OLLAMA_HOST: silent.url } });
    cleanups.push(
      () => silent.close(),
      () => quiet.stop(100),
    );
    const refused = await post(`${quiet.url}/v1/messages`, messages(MODELS.complex));
    assert.equal(refused.status, 504);
    assert.equal(((await refused.json()) as { error: { type: string } }).error.type, 'timeout_error');
  });

  for (const [surface, url, body] of [
    ['Messages', '/v1/messages', messages(MODELS.complex, true)],
    ['Responses', '/v1/responses', responses(MODELS.complex, true)],
  ] as const) {
    it(`${surface}: a client that hangs up aborts the upstream generation`, async () => {
      const { ollama, bridge } = await scriptedBridge(() => ({ text: ['first'], afterFirstLine: 'hold' }));
      const client = new AbortController();
      const response = await post(`${bridge.url}${url}`, body, {}, client.signal);
      const reader = response.body?.getReader();
      await reader?.read();
      client.abort();
      await ollama.abandoned();
    });
  }

  it('a silent stream gets pings (Anthropic) and keep-alive comments (Responses)', async () => {
    const { bridge } = await scriptedBridge(() => ({ text: ['first'], afterFirstLine: 'hold' }), '  thresholds:\n    heartbeat_seconds: 0.05\n');
    for (const [url, body, beat] of [
      ['/v1/messages', messages(MODELS.complex, true), 'event: ping'],
      ['/v1/responses', responses(MODELS.complex, true), ': keep-alive'],
    ] as const) {
      const client = new AbortController();
      const response = await post(`${bridge.url}${url}`, body, {}, client.signal);
      for await (const line of readLines(response)) if (line === beat) break;
      client.abort();
    }
  });
});

describe('routing with auto, cloud fallback and client signals', () => {
  it('auto classifies Messages and Responses requests; tools make them complex', async () => {
    const { bridge } = await scriptedBridge(toolScript);
    const a = await post(
      `${bridge.url}/v1/messages`,
      JSON.stringify({ model: 'auto', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }], tools: [{ name: 'Read', input_schema: READ_FILE }] }),
    );
    assert.equal(a.headers.get('x-bridge-tier'), 'complex');
    assert.equal(a.headers.get('x-bridge-model'), MODELS.complex);
    assert.match(a.headers.get('x-bridge-route-reason') ?? '', /tools present/);
    assert.equal(((await a.json()) as { model: string }).model, 'auto');
    const o = await post(`${bridge.url}/v1/responses`, JSON.stringify({ model: 'auto', input: 'hi' }));
    assert.equal(o.headers.get('x-bridge-model'), MODELS.complex);
    assert.equal(o.headers.get('x-bridge-tier'), 'moderate');
    const pinned = await post(`${bridge.url}/v1/responses`, JSON.stringify({ model: 'bridge/simple', input: 'hi' }));
    assert.equal(pinned.headers.get('x-bridge-model'), MODELS.simple);
    await Promise.all([o, pinned].map((r) => r.body?.cancel()));
  });

  it('falls back to the cloud provider for both surfaces when no local backend answers', async () => {
    const cloud = await startStandIn((_req, res: ServerResponse) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const chunk = (delta: unknown, finish: string | null = null): string =>
        `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', model: 'gpt-cloud', choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;
      res.write(chunk({ role: 'assistant', content: 'from ' }));
      res.write(chunk({ content: 'the cloud' }, 'stop'));
      res.end('data: [DONE]\n\n');
    });
    cleanups.push(() => cloud.close());
    const file = agentConfig(
      `fallback:\n  enabled: true\n  providers:\n    - name: cloud-openai\n      type: openai\n      base_url: ${cloud.url}/v1\n      model: gpt-cloud\n`,
    );
    const bridge = await startTestBridge({ file, env: { OLLAMA_HOST: `127.0.0.1:${await freePort()}`, OPENAI_API_KEY: 'sk-test' } });
    cleanups.push(() => bridge.stop(100));
    const anthropic = new Anthropic({ baseURL: bridge.url, apiKey: 'unused', maxRetries: 0 });
    const { data: message, response } = await anthropic.messages
      .create({ model: 'auto', max_tokens: 50, messages: [{ role: 'user', content: 'hi' }] })
      .withResponse();
    assert.deepEqual(message.content, [{ type: 'text', text: 'from the cloud' }]);
    assert.equal(response.headers.get('x-bridge-backend'), 'cloud-openai');
    const openai = new OpenAI({ baseURL: `${bridge.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const streamed = await openai.responses.stream({ model: MODELS.complex, input: 'hi' }).finalResponse();
    assert.equal(streamed.output_text, 'from the cloud');
    assert.equal(cloud.requests.length, 2);
  });

  it('records the client, its intent and the surface in the history', async () => {
    const { bridge } = await scriptedBridge(toolScript);
    const claude = nextRecord(bridge, '/v1/messages');
    await (
      await post(
        `${bridge.url}/v1/messages?beta=true`,
        JSON.stringify({ model: MODELS.complex, max_tokens: 32000, messages: [{ role: 'user', content: 'hi' }] }),
        { 'user-agent': 'claude-cli/2.1.332 (external, sdk-cli)', 'anthropic-version': '2023-06-01' },
      )
    ).arrayBuffer();
    const claudeRecord = await claude;
    assert.equal(claudeRecord.client, 'claude-code');
    assert.equal(claudeRecord.surface, 'anthropic');
    assert.equal(claudeRecord.userAgent, 'claude-cli/2.1.332 (external, sdk-cli)');

    const codex = nextRecord(bridge, '/v1/responses');
    await (
      await post(`${bridge.url}/v1/responses`, JSON.stringify({ model: MODELS.complex, input: 'hi' }), {
        originator: 'codex_exec',
        'user-agent': 'codex_exec/0.171.0 (Debian 12.0.0; x86_64)',
      })
    ).arrayBuffer();
    assert.equal((await codex).client, 'codex');

    const copilot = nextRecord(bridge, '/v1/chat/completions');
    await (
      await post(`${bridge.url}/v1/chat/completions`, JSON.stringify({ model: MODELS.complex, messages: [{ role: 'user', content: 'hi' }] }), {
        'user-agent': 'GitHubCopilotChat/0.30.0',
        'x-interaction-type': 'conversation-subagent',
        'openai-intent': 'conversation-agent',
        'x-request-id': 'copilot-req-1',
      })
    ).arrayBuffer();
    const copilotRecord = await copilot;
    assert.equal(copilotRecord.client, 'copilot');
    assert.equal(copilotRecord.interaction, 'conversation-subagent');
    assert.equal(copilotRecord.intent, 'conversation-agent');
    assert.equal(copilotRecord.clientRequestId, 'copilot-req-1');
  });

  it('reports the configured Ollama version when server.ollama_version is set', async () => {
    const { bridge } = await scriptedBridge(toolScript, 'server:\n  ollama_version: "0.6.4"\n');
    assert.deepEqual(await (await fetch(`${bridge.url}/api/version`)).json(), { version: '0.6.4' });
  });
});
