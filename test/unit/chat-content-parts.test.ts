import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { chatRequestSchema, InvalidRequest, toOllamaMessages } from '../../src/api/openai/chat.js';

/** Content parts of OpenAI chat messages beyond text and images, as the openai SDK types them. */
function messagesOf(messages: unknown[]): ReturnType<typeof chatRequestSchema.parse>['messages'] {
  return chatRequestSchema.parse({ model: 'm', messages }).messages;
}

describe('OpenAI chat content parts', () => {
  it('refuses audio and file parts, which a local model never sees, rather than answering without them', () => {
    const audio = messagesOf([
      {
        role: 'user',
        content: [
          { type: 'text', text: 'transcribe' },
          { type: 'input_audio', input_audio: { data: 'AAAA', format: 'wav' } },
        ],
      },
    ]);
    assert.throws(
      () => toOllamaMessages(audio),
      (error: unknown) =>
        error instanceof InvalidRequest &&
        error.message === 'messages.0.content.1: input_audio parts are not supported' &&
        error.param === 'messages.0.content',
    );
    const file = messagesOf([{ role: 'user', content: [{ type: 'file', file: { file_data: 'data:application/pdf;base64,AAAA', filename: 'a.pdf' } }] }]);
    assert.throws(
      () => toOllamaMessages(file),
      (error: unknown) => error instanceof InvalidRequest && error.message === 'messages.0.content.0: file parts are not supported',
    );
  });

  it('keeps the text of a refusal part in an assistant turn', () => {
    const messages = messagesOf([
      { role: 'user', content: 'do it' },
      { role: 'assistant', content: [{ type: 'refusal', refusal: 'I will not.' }] },
      { role: 'user', content: 'please' },
    ]);
    assert.deepEqual(toOllamaMessages(messages)[1], { role: 'assistant', content: 'I will not.' });
  });
});
