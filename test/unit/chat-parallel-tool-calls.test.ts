import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { chatRequestSchema, openAiChatFormat } from '../../src/api/openai/chat.js';
import type { OllamaChunk, OllamaToolCall } from '../../src/upstream/ollama-api.js';

/** parallel_tool_calls: false asks for at most one tool call per turn; a local model may still emit several. */
const calls: OllamaToolCall[] = [{ function: { name: 'read', arguments: { path: 'a' } } }, { function: { name: 'read', arguments: { path: 'b' } } }];
const final: OllamaChunk = { model: 'm', created_at: 'x', message: { role: 'assistant', content: '' }, done: true, done_reason: 'stop' };

function streamedCalls(text: string): unknown[] {
  return text
    .split('\n\n')
    .filter((event) => event.startsWith('data: {'))
    .flatMap((event) => (JSON.parse(event.slice(6)) as { choices: Array<{ delta: { tool_calls?: unknown[] } }> }).choices)
    .flatMap((choice) => choice.delta.tool_calls ?? []);
}

describe('OpenAI chat with parallel_tool_calls: false', () => {
  it('is read from the request', () => {
    const request = chatRequestSchema.parse({ model: 'm', messages: [{ role: 'user', content: 'x' }], parallel_tool_calls: false });
    assert.equal(request.parallel_tool_calls, false);
  });

  it('answers only the first tool call, streamed and whole', () => {
    const format = openAiChatFormat('m', false, false);
    const streamed =
      format.chunk({ model: 'm', created_at: 'x', message: { role: 'assistant', content: '', tool_calls: calls }, done: false }, 0) + format.chunk(final, 0);
    assert.equal(streamedCalls(streamed).length, 1);
    const whole = format.whole([{ content: '', thinking: '', toolCalls: calls, final }]) as {
      choices: Array<{ message: { tool_calls: Array<{ function: { arguments: string } }> } }>;
    };
    assert.deepEqual(
      whole.choices[0]?.message.tool_calls.map((call) => call.function.arguments),
      ['{"path":"a"}'],
    );
  });

  it('answers every tool call when parallel calls are allowed', () => {
    const format = openAiChatFormat('m', false, true);
    assert.equal(
      streamedCalls(format.chunk({ model: 'm', created_at: 'x', message: { role: 'assistant', content: '', tool_calls: calls }, done: false }, 0)).length,
      2,
    );
  });
});
