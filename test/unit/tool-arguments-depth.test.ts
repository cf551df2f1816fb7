import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { chatRequestSchema, InvalidRequest, toOllamaChat } from '../../src/api/openai/chat.js';
import { responsesRequestSchema, toOllamaChat as responsesToOllama } from '../../src/api/openai/responses.js';

/**
 * Tool-call arguments arrive as JSON text inside the body, out of reach of the body's nesting limit;
 * parsed, they become part of the body sent upstream, which a deep enough value cannot be written as
 * (JSON.stringify overflows the stack where JSON.parse does not).
 */
const deep = (levels: number): string => '{"a":'.repeat(levels) + '1' + '}'.repeat(levels);

describe('tool-call arguments nested too deep', () => {
  it('are refused with a 400 naming the field in a chat request', () => {
    const request = chatRequestSchema.parse({
      model: 'm',
      messages: [{ role: 'assistant', tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: deep(10_000) } }] }],
    });
    assert.throws(
      () => toOllamaChat(request),
      (error: unknown) =>
        error instanceof InvalidRequest &&
        error.status === 400 &&
        /^messages\.0\.tool_calls\.0\.function\.arguments: nested deeper than \d+ levels$/.test(error.message),
    );
  });

  it('are refused with a 400 naming the field in a Responses request', () => {
    const request = responsesRequestSchema.parse({
      model: 'm',
      input: [
        { type: 'function_call', call_id: 'c', name: 'f', arguments: deep(10_000) },
        { role: 'user', content: 'x' },
      ],
    });
    assert.throws(
      () => responsesToOllama(request),
      (error: unknown) => error instanceof InvalidRequest && /^input\.0\.arguments: nested deeper than \d+ levels$/.test(error.message),
    );
  });

  it('are read as they are when they nest as deep as a real tool call might', () => {
    const request = chatRequestSchema.parse({
      model: 'm',
      messages: [{ role: 'assistant', tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: deep(40) } }] }],
    });
    assert.deepEqual(toOllamaChat(request).messages[0]?.tool_calls?.[0]?.function.arguments, JSON.parse(deep(40)));
  });
});
