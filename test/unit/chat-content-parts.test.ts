import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { chatRequestSchema, InvalidRequest, toOllamaMessages } from '../../src/api/openai/chat.js';
import { responsesRequestSchema, toOllamaMessages as responsesMessages } from '../../src/api/openai/responses.js';

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

describe('OpenAI chat: the deprecated function calling', () => {
  it('refuses functions, whose answer (message.function_call) the bridge never writes, rather than answering without them', () => {
    const parsed = chatRequestSchema.safeParse({
      model: 'm',
      messages: [{ role: 'user', content: 'hi' }],
      functions: [{ name: 'get_weather', parameters: { type: 'object', properties: {} } }],
      function_call: 'auto',
    });
    assert.equal(parsed.success, false);
    assert.deepEqual(parsed.error?.issues[0]?.path, ['functions']);
    assert.equal(parsed.error?.issues[0]?.message, 'not supported: send tools instead');
  });

  it('accepts no functions (null or an empty list), which change nothing', () => {
    for (const functions of [null, []]) {
      assert.equal(chatRequestSchema.safeParse({ model: 'm', messages: [{ role: 'user', content: 'hi' }], functions, function_call: 'none' }).success, true);
    }
  });

  it('reads an earlier assistant turn with function_call as that tool call, so the function result that follows has its call', () => {
    const messages = messagesOf([
      { role: 'user', content: 'weather?' },
      { role: 'assistant', content: null, function_call: { name: 'get_weather', arguments: '{"city":"Paris"}' } },
      { role: 'function', name: 'get_weather', content: '{"temp":21}' },
    ]);
    assert.deepEqual(toOllamaMessages(messages).slice(1), [
      { role: 'assistant', content: '', tool_calls: [{ function: { name: 'get_weather', arguments: { city: 'Paris' } } }] },
      { role: 'tool', content: '{"temp":21}', tool_name: 'get_weather' },
    ]);
  });
});

describe('images as data: URLs', () => {
  it('are read with parameters of their media type before ;base64, as RFC 2397 allows them', () => {
    const url = 'data:image/png;name=shot.png;base64,iVBORw0KGgo=';
    const chat = messagesOf([{ role: 'user', content: [{ type: 'image_url', image_url: { url } }] }]);
    assert.deepEqual(toOllamaMessages(chat)[0]?.images, ['iVBORw0KGgo=']);
    const responses = responsesRequestSchema.parse({ model: 'm', input: [{ role: 'user', content: [{ type: 'input_image', image_url: url }] }] });
    assert.deepEqual(responsesMessages(responses)[0]?.images, ['iVBORw0KGgo=']);
  });
});
