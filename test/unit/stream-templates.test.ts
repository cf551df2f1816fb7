import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { nativeFormat } from '../../src/api/ollama/routes.js';
import { openAiChatFormat } from '../../src/api/openai/chat.js';
import { completionFormat } from '../../src/api/openai/completions.js';

/**
 * The token events written from string templates must be the bytes the object path writes: valid
 * compact JSON, the same keys in the same order as the events built from objects (the first and the
 * last of a stream), whatever the text holds.
 */

const TEXTS = ['Hel', 'a "quoted" word', 'back\\slash', 'line\nbreak\ttab', 'ünïcödé 漢字 🚀', '</script>', '\u2028\u0000'];

/** The JSON of one SSE event, checked to be exactly what JSON.stringify writes for it. */
function eventJson(text: string): Record<string, unknown> {
  assert.ok(text.startsWith('data: ') && text.endsWith('\n\n') && text.indexOf('\n\n') === text.length - 2, JSON.stringify(text));
  const body = text.slice(6, -2);
  const parsed = JSON.parse(body) as Record<string, unknown>;
  assert.equal(JSON.stringify(parsed), body);
  return parsed;
}

const choiceOf = (event: Record<string, unknown>): Record<string, unknown> => (event.choices as Array<Record<string, unknown>>)[0] as Record<string, unknown>;

describe('token events from templates', () => {
  it('OpenAI chat: a content delta is the event the object path writes, for any text', () => {
    const format = openAiChatFormat('auto', false);
    const first = eventJson(format.chunk({ message: { role: 'assistant', content: 'x' } }, 0));
    for (const [index, text] of TEXTS.entries()) {
      const event = eventJson(format.chunk({ message: { role: 'assistant', content: text } }, 0));
      assert.deepEqual(Object.keys(event), Object.keys(first));
      assert.deepEqual(Object.keys(choiceOf(event)), Object.keys(choiceOf(first)));
      assert.deepEqual(event, { ...first, choices: [{ index: 0, delta: { content: text }, logprobs: null, finish_reason: null }] }, `text ${index}`);
    }
    // A second choice keeps its own index.
    format.chunk({ message: { role: 'assistant', content: 'y' } }, 1);
    assert.equal(choiceOf(eventJson(format.chunk({ message: { role: 'assistant', content: 'z' } }, 1))).index, 1);
  });

  it('OpenAI completions: a text piece is the event the object path writes, for any text', () => {
    const format = completionFormat('copilot-codex', false, '');
    const last = eventJson(format.chunk({ response: '', done: true, done_reason: 'stop' }, 0));
    for (const text of TEXTS) {
      const event = eventJson(format.chunk({ response: text, done: false }, 2));
      assert.deepEqual(Object.keys(event), Object.keys(last));
      assert.deepEqual(Object.keys(choiceOf(event)), Object.keys(choiceOf(last)));
      assert.deepEqual(event, { ...last, choices: [{ text, index: 2, finish_reason: null, logprobs: null }] });
    }
  });

  it('native: a line names the requested model, whether the upstream named it or another', () => {
    const format = nativeFormat('chat', 'auto');
    const routed = JSON.parse(format.chunk({ model: 'qwen2.5-coder:7b', message: { role: 'assistant', content: 'a' }, done: false }, 0)) as Record<
      string,
      unknown
    >;
    const same = JSON.parse(format.chunk({ model: 'auto', message: { role: 'assistant', content: 'a' }, done: false }, 0)) as Record<string, unknown>;
    assert.deepEqual(routed, same);
    assert.deepEqual(Object.keys(routed), ['model', 'message', 'done']);
  });
});
