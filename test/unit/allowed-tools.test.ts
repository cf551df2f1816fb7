import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { chatRequestSchema, toOllamaChat } from '../../src/api/openai/chat.js';
import { responsesRequestSchema, responsesTools } from '../../src/api/openai/responses.js';

/** tool_choice allowed_tools limits the model to some of the tools the request lists (the rest stay listed for the prompt cache). */
const fn = (name: string) => ({ type: 'function', function: { name, parameters: { type: 'object', properties: {} } } });

describe('tool_choice allowed_tools', () => {
  it('sends only the allowed tools of a chat request', () => {
    const request = chatRequestSchema.parse({
      model: 'm',
      messages: [{ role: 'user', content: 'x' }],
      tools: [fn('read'), fn('write'), fn('delete')],
      tool_choice: {
        type: 'allowed_tools',
        allowed_tools: {
          mode: 'auto',
          tools: [
            { type: 'function', function: { name: 'read' } },
            { type: 'function', function: { name: 'write' } },
          ],
        },
      },
    });
    assert.deepEqual(
      (toOllamaChat(request).tools as Array<{ function: { name: string } }>).map((tool) => tool.function.name),
      ['read', 'write'],
    );
  });

  it('sends only the allowed tools of a Responses request', () => {
    const request = responsesRequestSchema.parse({
      model: 'm',
      input: 'x',
      tools: ['read', 'write', 'delete'].map((name) => ({ type: 'function', name, parameters: {} })),
      tool_choice: { type: 'allowed_tools', mode: 'auto', tools: [{ type: 'function', name: 'delete' }] },
    });
    assert.deepEqual(
      responsesTools(request).tools.map((tool) => (tool.function as { name: string }).name),
      ['delete'],
    );
  });
});
