import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import type { BridgeHandle } from '../../src/bridge.js';
import { startTestBridge } from '../support/bridge.js';
import { RIG_MODELS, rigSkipReason, startRig, type OllamaRig, type RigInstance } from '../support/ollama-rig.js';
import { configFile } from '../support/temp.js';

/**
 * The Anthropic Messages API and the OpenAI Responses API through the bridge in front of a real
 * Ollama, driven by the real SDKs (@anthropic-ai/sdk, openai): what they parse is what clients see.
 */

const skip = rigSkipReason();

const CONFIG = `
models:
  simple:
    name: "${RIG_MODELS.simple}"
  complex:
    name: "${RIG_MODELS.complex}"
routing:
  classification:
    complex_keywords: [architect]
`;

const READ_FILE_TOOL = { type: 'object', properties: { path: { type: 'string' } }, required: ['path'] };

describe('Anthropic Messages and OpenAI Responses on a real Ollama', { skip }, () => {
  let rig: OllamaRig;
  let bridge: BridgeHandle;
  let anthropic: Anthropic;
  let openai: OpenAI;

  before(async () => {
    rig = await startRig(1);
    const file = configFile(CONFIG);
    bridge = await startTestBridge({ file, env: { OLLAMA_HOST: (rig.instances[0] as RigInstance).url } });
    anthropic = new Anthropic({ baseURL: bridge.url, apiKey: 'unused', maxRetries: 0 });
    openai = new OpenAI({ baseURL: `${bridge.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  });
  after(async () => {
    await bridge?.stop(100);
    await rig?.stop();
  });

  describe('@anthropic-ai/sdk', () => {
    it('messages.create: a whole message with text, the stop reason and usage from Ollama', async () => {
      const message = await anthropic.messages.create({
        model: RIG_MODELS.complex,
        max_tokens: 16,
        system: [{ type: 'text', text: 'You are terse.', cache_control: { type: 'ephemeral' } }],
        messages: [{ role: 'user', content: 'Say hello.' }],
      });
      assert.equal(message.type, 'message');
      assert.equal(message.role, 'assistant');
      assert.equal(message.model, RIG_MODELS.complex);
      assert.match(message.id, /^msg_/);
      const [first] = message.content;
      assert.equal(first?.type, 'text');
      assert.ok(first?.type === 'text' && first.text.length > 0);
      // Random weights rarely end a sentence: the 16-token limit ends it.
      assert.equal(message.stop_reason, 'max_tokens');
      assert.equal(message.usage.output_tokens, 16);
      assert.ok(message.usage.input_tokens > 0);
    });

    it('messages.stream: events in Anthropic order, accumulated by the SDK into the final message', async () => {
      const stream = anthropic.messages.stream({ model: 'auto', max_tokens: 12, messages: [{ role: 'user', content: 'How would you architect it?' }] });
      const types: string[] = [];
      let text = '';
      for await (const event of stream) {
        types.push(event.type);
        if (event.type === 'content_block_delta' && event.delta.type === 'text_delta') text += event.delta.text;
      }
      const message = await stream.finalMessage();
      assert.equal(types[0], 'message_start');
      assert.equal(types[1], 'content_block_start');
      assert.ok(
        types.slice(2, -3).every((t) => t === 'content_block_delta'),
        types.join(','),
      );
      assert.deepEqual(types.slice(-3), ['content_block_stop', 'message_delta', 'message_stop']);
      const [block] = message.content;
      assert.ok(block?.type === 'text');
      assert.equal(block.text, text);
      assert.equal(message.model, 'auto');
      assert.equal(message.stop_reason, 'max_tokens');
      assert.equal(message.usage.output_tokens, 12);
      const response = await stream.withResponse();
      assert.equal(response.response.headers.get('x-bridge-tier'), 'complex');
    });

    it('the second leg of a tool round trip: tool_use and tool_result blocks, tools with input_schema, thinking asked of a model without it', async () => {
      const message = await anthropic.messages.create(
        {
          model: RIG_MODELS.complex,
          max_tokens: 8,
          thinking: { type: 'enabled', budget_tokens: 1024 },
          tools: [
            { name: 'read_file', description: 'Read a file', input_schema: READ_FILE_TOOL as Anthropic.Tool.InputSchema },
            // Claude Code marks tools it loads on demand; no local model can search for them.
            { name: 'deferred_tool', description: 'loaded on demand', input_schema: { type: 'object' }, defer_loading: true } as Anthropic.Tool,
          ],
          messages: [
            { role: 'user', content: 'What is in a.txt?' },
            {
              role: 'assistant',
              content: [
                { type: 'text', text: 'Reading it.' },
                { type: 'tool_use', id: 'toolu_01', name: 'read_file', input: { path: 'a.txt' } },
              ],
            },
            {
              role: 'user',
              content: [
                { type: 'tool_result', tool_use_id: 'toolu_01', content: [{ type: 'text', text: 'hello world' }], cache_control: { type: 'ephemeral' } },
              ],
            },
          ],
        },
        // As Claude Code sends it: with interleaved thinking the budget may exceed max_tokens, kept small here.
        { headers: { 'anthropic-beta': 'interleaved-thinking-2025-05-14' } },
      );
      // The rig model has no thinking capability: Ollama would refuse `think`, so the bridge leaves it out.
      assert.equal(message.content[0]?.type, 'text');
      assert.equal(message.stop_reason, 'max_tokens');
      const raw = await anthropic.messages
        .create({
          model: RIG_MODELS.complex,
          max_tokens: 4,
          messages: [{ role: 'user', content: 'hi' }],
          tools: [{ name: 'web_search', type: 'web_search_20250305' } as unknown as Anthropic.Tool],
        })
        .withResponse();
      assert.match(raw.response.headers.get('x-bridge-route-reason') ?? '', /dropped server tools: web_search/);
    });

    it('count_tokens answers an estimate', async () => {
      const counted = await anthropic.messages.countTokens({ model: RIG_MODELS.complex, messages: [{ role: 'user', content: 'x'.repeat(400) }] });
      assert.ok(counted.input_tokens >= 100 && counted.input_tokens < 120, String(counted.input_tokens));
    });

    it('an unknown model is a 404 not_found_error that says the model was not found', async () => {
      await assert.rejects(
        anthropic.messages.create({ model: 'no-such-model', max_tokens: 4, messages: [{ role: 'user', content: 'hi' }] }),
        (error: unknown) => {
          assert.ok(error instanceof Anthropic.NotFoundError, String(error));
          assert.equal((error.error as { error: { type: string } }).error.type, 'not_found_error');
          assert.match(error.message, /model .*not found/i);
          return true;
        },
      );
    });
  });

  describe('openai responses', () => {
    it('responses.create: text output, incomplete at the token limit, usage', async () => {
      const response = await openai.responses.create({
        model: RIG_MODELS.complex,
        instructions: 'Be terse.',
        input: 'Say hello.',
        max_output_tokens: 16,
        store: false,
      });
      assert.equal(response.object, 'response');
      assert.equal(response.status, 'incomplete');
      assert.equal(response.incomplete_details?.reason, 'max_output_tokens');
      const message = response.output.find((item) => item.type === 'message');
      assert.ok(message?.type === 'message');
      assert.ok(response.output_text.length > 0);
      assert.equal(response.usage?.output_tokens, 16);
      assert.ok((response.usage?.input_tokens ?? 0) > 0);
    });

    it('responses.stream: created, in_progress, item and part events, text deltas that add up to the final text', async () => {
      const stream = openai.responses.stream({
        model: 'auto',
        input: [{ role: 'user', content: [{ type: 'input_text', text: 'How would you architect it?' }] }],
        max_output_tokens: 12,
      });
      const types: string[] = [];
      let deltas = '';
      for await (const event of stream) {
        types.push(event.type);
        if (event.type === 'response.output_text.delta') deltas += event.delta;
      }
      const final = await stream.finalResponse();
      assert.deepEqual(types.slice(0, 4), ['response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added']);
      assert.deepEqual(types.slice(-4), ['response.output_text.done', 'response.content_part.done', 'response.output_item.done', 'response.incomplete']);
      assert.equal(final.output_text, deltas);
      assert.equal(final.model, 'auto');
    });

    it('the second leg of a tool round trip: function_call and function_call_output items, hosted tools dropped with a note', async () => {
      const { data, response } = await openai.responses
        .create({
          model: RIG_MODELS.complex,
          max_output_tokens: 8,
          reasoning: { effort: 'low', summary: 'auto' },
          tools: [{ type: 'function', name: 'read_file', description: 'Read a file', parameters: READ_FILE_TOOL, strict: false }, { type: 'web_search' }],
          input: [
            { type: 'message', role: 'developer', content: [{ type: 'input_text', text: 'You are a coding agent.' }] },
            { type: 'message', role: 'user', content: [{ type: 'input_text', text: 'What is in a.txt?' }] },
            { type: 'reasoning', id: 'rs_1', summary: [{ type: 'summary_text', text: 'I should read the file.' }] },
            { type: 'function_call', call_id: 'call_1', name: 'read_file', arguments: '{"path":"a.txt"}' },
            { type: 'function_call_output', call_id: 'call_1', output: 'hello world' },
          ],
        })
        .withResponse();
      assert.ok(data.output_text.length > 0);
      assert.match(response.headers.get('x-bridge-route-reason') ?? '', /dropped tools: web_search/);
    });

    it('JSON schema output: text.format becomes Ollama format, the answer parses against the schema', async () => {
      const response = await openai.responses.create({
        model: RIG_MODELS.complex,
        input: 'Is the sky blue?',
        max_output_tokens: 64,
        text: {
          format: {
            type: 'json_schema',
            name: 'answer',
            strict: true,
            schema: { type: 'object', properties: { yes: { type: 'boolean' } }, required: ['yes'], additionalProperties: false },
          },
        },
      });
      const parsed = JSON.parse(response.output_text) as { yes: unknown };
      assert.equal(typeof parsed.yes, 'boolean');
    });

    it('refuses store: true and previous_response_id with a clear 400, and answers the WebSocket probe with 404', async () => {
      await assert.rejects(openai.responses.create({ model: RIG_MODELS.complex, input: 'hi', store: true }), (error: unknown) => {
        assert.ok(error instanceof OpenAI.BadRequestError);
        assert.match(error.message, /store: true is not supported/);
        return true;
      });
      await assert.rejects(
        openai.responses.create({ model: RIG_MODELS.complex, input: 'hi', previous_response_id: 'resp_1' }),
        /previous_response_id is not supported/,
      );
      // Codex's WebSocket attempt: a plain error answer (not a hung upgrade) sends it to POST at once.
      const status = await new Promise<number | undefined>((resolve, reject) => {
        const probe = request(`${bridge.url}/v1/responses`, {
          headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' },
        });
        probe.once('response', (response) => {
          response.resume();
          resolve(response.statusCode);
        });
        probe.once('upgrade', () => resolve(101));
        probe.once('error', reject);
        probe.end();
      });
      assert.equal(status, 404);
    });
  });
});
