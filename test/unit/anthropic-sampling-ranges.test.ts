import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { messagesRequestSchema } from '../../src/api/anthropic/messages.js';

/** Anthropic's temperature and top_p run from 0 to 1 (OpenAI's temperature to 2); Anthropic refuses others with 400. */
const request = (fields: Record<string, unknown>): unknown => ({ model: 'm', max_tokens: 10, messages: [{ role: 'user', content: 'x' }], ...fields });

describe('Anthropic sampling ranges', () => {
  it('refuses a temperature or top_p outside 0..1, naming the field', () => {
    for (const [field, value] of [
      ['temperature', 1.5],
      ['temperature', -0.1],
      ['top_p', 1.2],
    ] as const) {
      const parsed = messagesRequestSchema.safeParse(request({ [field]: value }));
      assert.equal(parsed.success, false, `${field} ${value}`);
      assert.deepEqual(parsed.error?.issues[0]?.path, [field]);
      assert.equal(parsed.error?.issues[0]?.message, 'must be between 0 and 1');
    }
  });

  it('accepts the bounds', () => {
    assert.equal(messagesRequestSchema.safeParse(request({ temperature: 1, top_p: 0 })).success, true);
    assert.equal(messagesRequestSchema.safeParse(request({ temperature: 0, top_p: 1 })).success, true);
  });
});
