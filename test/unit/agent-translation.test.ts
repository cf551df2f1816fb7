import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type Anthropic from '@anthropic-ai/sdk';
import { anthropicThink, estimateInputTokens, messagesRequestSchema, toOllamaChat as messagesToOllama } from '../../src/api/anthropic/messages.js';
import { InvalidRequest } from '../../src/api/openai/chat.js';
import { responsesRequestSchema, responsesThink, statelessProblem, toOllamaChat as responsesToOllama } from '../../src/api/openai/responses.js';
import { thinkFromEffort } from '../../src/api/thinking.js';
import { clientSignals, HEADER_VALUE_MAX, printable } from '../../src/routing/signals.js';

/** Request shapes as Claude Code and Codex send them (fields and block types seen from the CLIs themselves). */

const PNG = 'iVBORw0KGgo=';

describe('Messages request → Ollama chat', () => {
  const parse = (body: unknown) => messagesRequestSchema.parse(body);

  it('puts system blocks first, keeps a system message where it stands, and turns blocks into messages', () => {
    const { body, notes } = messagesToOllama(
      parse({
        model: 'auto',
        max_tokens: 32000,
        system: [
          { type: 'text', text: 'You are Claude Code.', cache_control: { type: 'ephemeral' } },
          { type: 'text', text: 'Be brief.' },
        ],
        messages: [
          {
            role: 'user',
            content: [
              { type: 'text', text: 'look' },
              { type: 'image', source: { type: 'base64', media_type: 'image/png', data: PNG } },
            ],
          },
          { role: 'system', content: [{ type: 'text', text: '# Environment' }] },
          {
            role: 'assistant',
            content: [
              { type: 'thinking', thinking: 'I should read it.', signature: 'sig' },
              { type: 'text', text: 'Reading.' },
              { type: 'tool_use', id: 'toolu_1', name: 'Read', input: { file_path: '/a' } },
              { type: 'tool_use', id: 'toolu_2', name: 'Bash', input: { command: 'ls' } },
            ],
          },
          {
            role: 'user',
            content: [
              {
                type: 'tool_result',
                tool_use_id: 'toolu_1',
                content: [
                  { type: 'text', text: 'A' },
                  { type: 'image', source: { type: 'base64', media_type: 'image/png', data: PNG } },
                ],
              },
              { type: 'tool_result', tool_use_id: 'toolu_2', content: 'no such dir', is_error: true, cache_control: { type: 'ephemeral' } },
              { type: 'text', text: 'go on' },
            ],
          },
        ],
        tools: [
          { name: 'Read', description: 'read', input_schema: { type: 'object', properties: { file_path: { type: 'string' } } } },
          { name: 'Later', description: 'deferred', input_schema: { type: 'object' }, defer_loading: true },
          { type: 'web_search_20250305', name: 'web_search', max_uses: 3 },
        ],
        temperature: 0.2,
        top_k: 40,
        stop_sequences: ['END'],
        context_management: { edits: [{ type: 'clear_thinking_20251015', keep: 'all' }] },
        metadata: { user_id: 'u' },
      }),
    );
    assert.deepEqual(body.messages, [
      { role: 'system', content: 'You are Claude Code.\nBe brief.' },
      { role: 'user', content: 'look', images: [PNG] },
      { role: 'system', content: '# Environment' },
      {
        role: 'assistant',
        content: 'Reading.',
        thinking: 'I should read it.',
        tool_calls: [
          { id: 'toolu_1', function: { name: 'Read', arguments: { file_path: '/a' } } },
          { id: 'toolu_2', function: { name: 'Bash', arguments: { command: 'ls' } } },
        ],
      },
      { role: 'tool', content: 'A', tool_name: 'Read', tool_call_id: 'toolu_1', images: [PNG] },
      { role: 'tool', content: 'Error: no such dir', tool_name: 'Bash', tool_call_id: 'toolu_2' },
      { role: 'user', content: 'go on' },
    ]);
    assert.deepEqual(body.tools, [
      { type: 'function', function: { name: 'Read', description: 'read', parameters: { type: 'object', properties: { file_path: { type: 'string' } } } } },
    ]);
    assert.deepEqual(notes, ['dropped deferred tools: Later', 'dropped server tools: web_search']);
    assert.deepEqual(body.options, { num_predict: 32000, temperature: 0.2, top_k: 40, stop: ['END'] });
  });

  it('tool_choice none sends no tools, a named tool only that one; a JSON schema output format becomes Ollama format', () => {
    const tools = [
      { name: 'a', input_schema: { type: 'object' } },
      { name: 'b', input_schema: { type: 'object' } },
    ];
    const none = messagesToOllama(parse({ model: 'm', messages: [{ role: 'user', content: 'x' }], tools, tool_choice: { type: 'none' } }));
    assert.equal(none.body.tools, undefined);
    const one = messagesToOllama(parse({ model: 'm', messages: [{ role: 'user', content: 'x' }], tools, tool_choice: { type: 'tool', name: 'b' } }));
    assert.deepEqual(
      (one.body.tools as Array<{ function: { name: string } }>).map((t) => t.function.name),
      ['b'],
    );
    const schema = { type: 'object', properties: { ok: { type: 'boolean' } } };
    assert.deepEqual(
      messagesToOllama(parse({ model: 'm', messages: [{ role: 'user', content: 'x' }], output_config: { format: { type: 'json_schema', schema } } })).body
        .format,
      schema,
    );
  });

  it('passes over server tool blocks whose content is an object (a fetched page, a search error), but refuses such a tool_result', () => {
    const { body } = messagesToOllama(
      parse({
        model: 'm',
        messages: [
          { role: 'user', content: 'read https://example.com' },
          {
            role: 'assistant',
            content: [
              { type: 'server_tool_use', id: 'srvtoolu_1', name: 'web_fetch', input: { url: 'https://example.com' } },
              {
                type: 'web_fetch_tool_result',
                tool_use_id: 'srvtoolu_1',
                content: { type: 'web_fetch_result', url: 'https://example.com', content: { type: 'document', source: { type: 'text', data: 'hi' } } },
              },
              { type: 'web_search_tool_result', tool_use_id: 'srvtoolu_2', content: { type: 'web_search_tool_result_error', error_code: 'max_uses_exceeded' } },
              { type: 'text', text: 'It says hi.' },
            ],
          },
          { role: 'user', content: 'thanks' },
        ],
      }),
    );
    assert.deepEqual(body.messages, [
      { role: 'user', content: 'read https://example.com' },
      { role: 'assistant', content: 'It says hi.' },
      { role: 'user', content: 'thanks' },
    ]);
    const objectResult = parse({
      model: 'm',
      messages: [{ role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: { type: 'text', text: 'x' } }] }],
    });
    assert.throws(
      () => messagesToOllama(objectResult),
      (error: unknown) =>
        error instanceof InvalidRequest && /^messages\.0\.content\.0\.content: must be a string or an array of content blocks/.test(error.message),
    );
  });

  it('refuses image URLs and binary documents with a message that names the block', () => {
    const url = parse({ model: 'm', messages: [{ role: 'user', content: [{ type: 'image', source: { type: 'url', url: 'https://x/y.png' } }] }] });
    assert.throws(
      () => messagesToOllama(url),
      (error: unknown) => error instanceof InvalidRequest && /messages\.0\.content\.0\.source: only base64/.test(error.message),
    );
    const pdf = parse({
      model: 'm',
      messages: [{ role: 'user', content: [{ type: 'document', source: { type: 'base64', media_type: 'application/pdf', data: 'JVBE' } }] }],
    });
    assert.throws(
      () => messagesToOllama(pdf),
      (error: unknown) => error instanceof InvalidRequest && /messages\.0\.content\.0: only plain-text and content documents/.test(error.message),
    );
  });

  it('reads documents of text or content blocks and search results, in a message or a tool result; a PDF in a tool result becomes a note', () => {
    const request: Anthropic.MessageCreateParamsNonStreaming = {
      model: 'm',
      max_tokens: 100,
      messages: [
        { role: 'user', content: [{ type: 'search_result', source: 'https://docs/a', title: 'A', content: [{ type: 'text', text: 'a is 1' }] }] },
        {
          role: 'user',
          content: [
            {
              type: 'document',
              source: {
                type: 'content',
                content: [
                  { type: 'text', text: 'page one' },
                  { type: 'image', source: { type: 'base64', media_type: 'image/png', data: PNG } },
                ],
              },
            },
            {
              type: 'tool_result',
              tool_use_id: 'toolu_1',
              content: [
                { type: 'document', source: { type: 'text', media_type: 'text/plain', data: 'notes' } },
                { type: 'search_result', source: 'https://docs/b', title: 'B', content: [{ type: 'text', text: 'b is 2' }] },
                { type: 'document', source: { type: 'base64', media_type: 'application/pdf', data: 'JVBE' } },
              ],
            },
          ],
        },
      ],
    };
    assert.deepEqual(messagesToOllama(parse(request)).body.messages, [
      { role: 'user', content: 'A\nhttps://docs/a\na is 1' },
      {
        role: 'tool',
        content: 'notes\nB\nhttps://docs/b\nb is 2\n[a document (application/pdf) was left out: this model cannot read it]',
        tool_call_id: 'toolu_1',
      },
      { role: 'user', content: 'page one', images: [PNG] },
    ]);
  });

  it('maps thinking to think: enabled and adaptive on (the effort sets a level), disabled off, absent unsent', () => {
    assert.equal(anthropicThink({ thinking: { type: 'enabled', budget_tokens: 2048 } }), true);
    assert.equal(anthropicThink({ thinking: { type: 'adaptive' }, output_config: { effort: 'low' } }), 'low');
    assert.equal(anthropicThink({ thinking: { type: 'disabled' } }), false);
    assert.equal(anthropicThink({}), undefined);
  });

  it('estimates input tokens from the translated conversation and tools', () => {
    const small = estimateInputTokens(parse({ model: 'm', messages: [{ role: 'user', content: 'x'.repeat(400) }] }));
    const withTools = estimateInputTokens(
      parse({
        model: 'm',
        messages: [{ role: 'user', content: 'x'.repeat(400) }],
        tools: [{ name: 't', description: 'd'.repeat(400), input_schema: { type: 'object' } }],
      }),
    );
    assert.equal(small, 100);
    assert.ok(withTools > small + 100);
  });
});

describe('Responses request → Ollama chat', () => {
  const parse = (body: unknown) => responsesRequestSchema.parse(body);

  it('turns Codex input items into messages: developer as system, reasoning as the next assistant turn’s thinking, calls and outputs', () => {
    const { body, notes } = responsesToOllama(
      parse({
        model: 'auto',
        instructions: 'You are Codex.',
        input: [
          { type: 'message', id: 'msg_1', role: 'developer', content: [{ type: 'input_text', text: 'sandbox: read-only' }] },
          {
            type: 'message',
            role: 'user',
            content: [
              { type: 'input_text', text: 'fix it' },
              { type: 'input_image', image_url: `data:image/png;base64,${PNG}` },
            ],
          },
          { type: 'reasoning', id: 'rs_1', summary: [{ type: 'summary_text', text: 'Look first.' }], encrypted_content: null },
          { type: 'function_call', id: 'fc_1', call_id: 'call_1', name: 'exec_command', arguments: '{"cmd":"ls"}' },
          { type: 'function_call', call_id: 'call_2', name: 'exec_command', arguments: '{"cmd":"pwd"}' },
          { type: 'function_call_output', call_id: 'call_1', output: 'a.ts' },
          { type: 'function_call_output', call_id: 'call_2', output: [{ type: 'input_text', text: '/w' }] },
          { role: 'assistant', content: [{ type: 'output_text', text: 'Done.' }] },
        ],
        tools: [
          {
            type: 'function',
            name: 'exec_command',
            description: 'run',
            strict: false,
            parameters: { type: 'object', properties: { cmd: { type: 'string' } } },
          },
          { type: 'namespace', name: 'multi_agent_v1', description: 'agents', tools: [] },
          { type: 'web_search', external_web_access: false },
        ],
        tool_choice: 'auto',
        parallel_tool_calls: true,
        reasoning: { summary: 'auto' },
        store: false,
        include: ['reasoning.encrypted_content'],
        prompt_cache_key: 'k',
        client_metadata: { session_id: 's' },
        max_output_tokens: 500,
      }),
    );
    assert.deepEqual(body.messages, [
      { role: 'system', content: 'You are Codex.' },
      { role: 'system', content: 'sandbox: read-only' },
      { role: 'user', content: 'fix it', images: [PNG] },
      {
        role: 'assistant',
        content: '',
        thinking: 'Look first.',
        tool_calls: [
          { id: 'call_1', function: { name: 'exec_command', arguments: { cmd: 'ls' } } },
          { id: 'call_2', function: { name: 'exec_command', arguments: { cmd: 'pwd' } } },
        ],
      },
      { role: 'tool', content: 'a.ts', tool_name: 'exec_command', tool_call_id: 'call_1' },
      { role: 'tool', content: '/w', tool_name: 'exec_command', tool_call_id: 'call_2' },
      { role: 'assistant', content: 'Done.' },
    ]);
    assert.deepEqual(
      (body.tools as Array<{ function: { name: string } }>).map((t) => t.function.name),
      ['exec_command'],
    );
    assert.deepEqual(notes, ['dropped tools: namespace multi_agent_v1, web_search']);
    assert.deepEqual(body.options, { num_predict: 500 });
  });

  it('passes over hosted tool items whose output is null or an object, but refuses such a function_call_output', () => {
    const { body } = responsesToOllama(
      parse({
        model: 'm',
        input: [
          { role: 'user', content: 'list the files' },
          { type: 'mcp_call', id: 'mcp_1', server_label: 'fs', name: 'list', arguments: '{}', output: null, error: 'server down' },
          { type: 'computer_call_output', call_id: 'call_9', output: { type: 'computer_screenshot', image_url: `data:image/png;base64,${PNG}` } },
          { role: 'assistant', content: [{ type: 'output_text', text: 'The server is down.' }] },
          { role: 'user', content: 'try again' },
        ],
      }),
    );
    assert.deepEqual(body.messages, [
      { role: 'user', content: 'list the files' },
      { role: 'assistant', content: 'The server is down.' },
      { role: 'user', content: 'try again' },
    ]);
    const objectOutput = parse({ model: 'm', input: [{ type: 'function_call_output', call_id: 'c', output: { text: 'x' } }] });
    assert.throws(
      () => responsesToOllama(objectOutput),
      (error: unknown) =>
        error instanceof InvalidRequest && error.param === 'input.0.output' && /must be a string or an array of content parts/.test(error.message),
    );
  });

  it('text.format json_schema and json_object become Ollama format', () => {
    const schema = { type: 'object', properties: { a: { type: 'string' } } };
    assert.deepEqual(
      responsesToOllama(parse({ model: 'm', input: 'x', text: { format: { type: 'json_schema', name: 'a', schema, strict: true } } })).body.format,
      schema,
    );
    assert.equal(responsesToOllama(parse({ model: 'm', input: 'x', text: { format: { type: 'json_object' } } })).body.format, 'json');
  });

  it('refuses what needs stored responses, and malformed function call arguments', () => {
    assert.equal(statelessProblem(parse({ model: 'm', input: 'x', store: false })), undefined);
    assert.equal(statelessProblem(parse({ model: 'm', input: 'x', store: true }))?.param, 'store');
    assert.equal(statelessProblem(parse({ model: 'm', input: 'x', previous_response_id: 'resp_1' }))?.param, 'previous_response_id');
    assert.throws(
      () => responsesToOllama(parse({ model: 'm', input: [{ type: 'function_call', call_id: 'c', name: 'f', arguments: '{oops' }] })),
      InvalidRequest,
    );
  });

  it('maps reasoning effort to think', () => {
    assert.equal(responsesThink({ reasoning: { effort: 'minimal' } }), 'low');
    assert.equal(responsesThink({ reasoning: { effort: 'none' } }), false);
    assert.equal(responsesThink({ reasoning: { summary: 'auto' } }), undefined);
    assert.equal(thinkFromEffort('xhigh'), 'high');
  });
});

describe('client signals', () => {
  it('names the client from originator or User-Agent and reads its intent', () => {
    const names = Object.fromEntries(
      [
        ['claude-cli/2.1.332 (external, sdk-cli)', {}],
        ['codex_exec/0.171.0 (Debian 12.0.0; x86_64)', {}],
        ['anything', { originator: 'codex_cli_rs' }],
        ['GitHubCopilotChat/0.30.0', {}],
        ['Continue/1.2', {}],
        ['opencode/0.5 ai-sdk/4', {}],
        ['ollama-js/0.6.4 (x64 linux Node.js/v20)', {}],
        ['OpenAI/JS 6.49.0', {}],
        ['Anthropic/JS 1.14.0', {}],
        ['curl/8.0', {}],
      ].map(([ua, extra]) => [ua as string, clientSignals({ 'user-agent': ua as string, ...(extra as Record<string, string>) }).name]),
    );
    assert.deepEqual(Object.values(names), [
      'claude-code',
      'codex',
      'codex',
      'copilot',
      'continue',
      'opencode',
      'ollama',
      'openai-sdk',
      'anthropic-sdk',
      'other',
    ]);

    const copilot = clientSignals({
      'user-agent': 'GitHubCopilotChat/0.30.0',
      'x-interaction-type': 'conversation-subagent',
      'openai-intent': 'conversation-agent',
      'x-request-id': 'r1',
    });
    assert.equal(copilot.interaction, 'conversation-subagent');
    assert.equal(copilot.intent, 'conversation-agent');
    assert.equal(copilot.requestId, 'r1');
    assert.equal(copilot.background, true);
    assert.equal(clientSignals({ 'openai-intent': 'conversation-panel' }).background, false);
    assert.equal(clientSignals({ 'anthropic-version': '2023-06-01' }).anthropicVersion, '2023-06-01');
    assert.equal(clientSignals({ 'x-client-request-id': 'c1' }).requestId, 'c1');
    assert.equal(clientSignals({ 'user-agent': `bad\u0000${'x'.repeat(500)}` }).userAgent?.length, 200);
  });

  it('keeps header text printable: every character outside printable ASCII becomes one "?", at most 200 kept of a client\'s header, at most HEADER_VALUE_MAX written', () => {
    // Node gives non-ASCII header bytes as latin1 characters; a UTF-16 pair counts as two.
    assert.equal(clientSignals({ 'user-agent': 'Zed/1.0 caf\u00e9 \u{1F680}\ttab' }).userAgent, 'Zed/1.0 caf? ???tab');
    assert.equal(clientSignals({ 'user-agent': `${'\u00e9'.repeat(150)}${'x'.repeat(100)}` }).userAgent, `${'?'.repeat(150)}${'x'.repeat(50)}`);
    assert.equal(printable('plain text'), 'plain text');
    assert.equal(printable('model \u00e9\n'), 'model ??');
    assert.equal(printable('m'.repeat(HEADER_VALUE_MAX)), 'm'.repeat(HEADER_VALUE_MAX));
    assert.equal(printable(`${'m'.repeat(20_000)}\n`), `${'m'.repeat(HEADER_VALUE_MAX - 3)}...`);
  });

  it('reads the signals of one request once, and each request its own', () => {
    const headers = { 'user-agent': 'Continue/1.2' };
    assert.equal(clientSignals(headers), clientSignals(headers));
    const other = clientSignals({ 'user-agent': 'GitHubCopilotChat/0.30.0' });
    assert.equal(clientSignals(headers).name, 'continue');
    assert.equal(other.name, 'copilot');
  });
});
