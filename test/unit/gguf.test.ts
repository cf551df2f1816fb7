import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { readGguf, tinyLlamaGguf, TINY_LLAMA, writeGguf } from '../support/gguf.js';

describe('GGUF writer (test support)', () => {
  it('round-trips every value type and tensor, with aligned data', () => {
    const data = Float32Array.from([1.5, -2, 3.25, 0, 7, 8]);
    const file = writeGguf(
      [
        ['a.u32', { type: 'u32', value: 7 }],
        ['a.i32', { type: 'i32', value: -3 }],
        ['a.f32', { type: 'f32', value: 0.5 }],
        ['a.bool', { type: 'bool', value: true }],
        ['a.string', { type: 'string', value: 'héllo ▁' }],
        ['a.strings', { type: 'strings', value: ['x', '', 'zz'] }],
        ['a.f32s', { type: 'f32s', value: [0.25, -1] }],
        ['a.i32s', { type: 'i32s', value: [1, -2, 3] }],
      ],
      [
        { name: 't.one', dims: [3, 2], data },
        { name: 't.two', dims: [1], data: Float32Array.from([9]) },
      ],
    );
    assert.equal(file.toString('ascii', 0, 4), 'GGUF');
    const read = readGguf(file);
    assert.equal(read.version, 3);
    assert.deepEqual(read.metadata.get('a.u32'), { type: 'u32', value: 7 });
    assert.deepEqual(read.metadata.get('a.i32'), { type: 'i32', value: -3 });
    assert.deepEqual(read.metadata.get('a.f32'), { type: 'f32', value: 0.5 });
    assert.deepEqual(read.metadata.get('a.bool'), { type: 'bool', value: true });
    assert.deepEqual(read.metadata.get('a.string'), { type: 'string', value: 'héllo ▁' });
    assert.deepEqual(read.metadata.get('a.strings'), { type: 'strings', value: ['x', '', 'zz'] });
    assert.deepEqual(read.metadata.get('a.f32s'), { type: 'f32s', value: [0.25, -1] });
    assert.deepEqual(read.metadata.get('a.i32s'), { type: 'i32s', value: [1, -2, 3] });
    assert.deepEqual(
      read.tensors.map((t) => [t.name, t.dims, t.type]),
      [
        ['t.one', [3, 2], 0],
        ['t.two', [1], 0],
      ],
    );
    assert.deepEqual(Array.from(read.tensors[0]?.data ?? []), Array.from(data));
    assert.deepEqual(Array.from(read.tensors[1]?.data ?? []), [9]);
    for (const tensor of read.tensors) assert.equal(tensor.offset % 32, 0);
  });

  it('writes a llama model the llama.cpp loader accepts: keys, vocabulary and tensor shapes', () => {
    const model = readGguf(tinyLlamaGguf());
    const value = (key: string): unknown => model.metadata.get(key)?.value;
    assert.equal(value('general.architecture'), 'llama');
    assert.equal(value('tokenizer.ggml.model'), 'llama');
    const tokens = value('tokenizer.ggml.tokens') as string[];
    assert.deepEqual(tokens.slice(0, 4), ['<unk>', '<s>', '</s>', '▁']);
    assert.equal(tokens[4], '<0x00>');
    assert.equal(tokens.at(-1), '<0xFF>');
    assert.equal(tokens.length, 260);
    assert.equal((value('tokenizer.ggml.scores') as number[]).length, tokens.length);
    assert.equal((value('tokenizer.ggml.token_type') as number[]).length, tokens.length);
    assert.equal(value('llama.embedding_length'), TINY_LLAMA.embedding);
    assert.equal(value('llama.block_count'), TINY_LLAMA.layers);
    assert.equal(typeof value('llama.attention.layer_norm_rms_epsilon'), 'number');

    const shapes = new Map(model.tensors.map((t) => [t.name, t.dims]));
    const e = TINY_LLAMA.embedding;
    const ff = TINY_LLAMA.feedForward;
    assert.deepEqual(shapes.get('token_embd.weight'), [e, tokens.length]);
    assert.deepEqual(shapes.get('output.weight'), [e, tokens.length]);
    assert.deepEqual(shapes.get('blk.1.ffn_down.weight'), [ff, e]);
    assert.deepEqual(shapes.get('blk.1.ffn_gate.weight'), [e, ff]);
    assert.equal(model.tensors.length, 2 + 9 * TINY_LLAMA.layers + 1);
  });

  it('is deterministic, so the blob digest is the same every run', () => {
    assert.ok(tinyLlamaGguf().equals(tinyLlamaGguf()));
  });
});
