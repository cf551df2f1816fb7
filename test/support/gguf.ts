/**
 * A minimal GGUF (version 3) writer and reader, enough to make a tiny llama model that a real
 * Ollama/llama.cpp loads, and to read it back in a test. Layout: header, key-value metadata,
 * tensor descriptors, padding to the alignment, tensor data (each tensor aligned).
 */

const MAGIC = 'GGUF';
const VERSION = 3;
const ALIGNMENT = 32;

const enum ValueType {
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
}

/** ggml tensor type of every tensor written here. */
const GGML_TYPE_F32 = 0;

export type GgufValue =
  | { type: 'u32'; value: number }
  | { type: 'i32'; value: number }
  | { type: 'f32'; value: number }
  | { type: 'bool'; value: boolean }
  | { type: 'string'; value: string }
  | { type: 'strings'; value: string[] }
  | { type: 'f32s'; value: number[] }
  | { type: 'i32s'; value: number[] };

export interface GgufTensor {
  name: string;
  /** ggml order: dims[0] is the fastest-moving (row length). */
  dims: number[];
  data: Float32Array;
}

export interface GgufFile {
  version: number;
  alignment: number;
  metadata: Map<string, GgufValue>;
  tensors: Array<{ name: string; dims: number[]; type: number; offset: number; data: Float32Array }>;
}

class Writer {
  private chunks: Buffer[] = [];
  length = 0;

  private push(buffer: Buffer): void {
    this.chunks.push(buffer);
    this.length += buffer.length;
  }

  u32(value: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(value);
    this.push(b);
  }

  i32(value: number): void {
    const b = Buffer.alloc(4);
    b.writeInt32LE(value);
    this.push(b);
  }

  u64(value: number): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(value));
    this.push(b);
  }

  f32(value: number): void {
    const b = Buffer.alloc(4);
    b.writeFloatLE(value);
    this.push(b);
  }

  string(value: string): void {
    const bytes = Buffer.from(value, 'utf8');
    this.u64(bytes.length);
    this.push(bytes);
  }

  bytes(buffer: Buffer): void {
    this.push(buffer);
  }

  padTo(alignment: number): void {
    const pad = (alignment - (this.length % alignment)) % alignment;
    if (pad > 0) this.push(Buffer.alloc(pad));
  }

  done(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

function writeValue(w: Writer, value: GgufValue): void {
  switch (value.type) {
    case 'u32':
      w.u32(ValueType.UINT32);
      w.u32(value.value);
      return;
    case 'i32':
      w.u32(ValueType.INT32);
      w.i32(value.value);
      return;
    case 'f32':
      w.u32(ValueType.FLOAT32);
      w.f32(value.value);
      return;
    case 'bool':
      w.u32(ValueType.BOOL);
      w.bytes(Buffer.from([value.value ? 1 : 0]));
      return;
    case 'string':
      w.u32(ValueType.STRING);
      w.string(value.value);
      return;
    case 'strings':
      w.u32(ValueType.ARRAY);
      w.u32(ValueType.STRING);
      w.u64(value.value.length);
      for (const item of value.value) w.string(item);
      return;
    case 'f32s':
      w.u32(ValueType.ARRAY);
      w.u32(ValueType.FLOAT32);
      w.u64(value.value.length);
      for (const item of value.value) w.f32(item);
      return;
    case 'i32s':
      w.u32(ValueType.ARRAY);
      w.u32(ValueType.INT32);
      w.u64(value.value.length);
      for (const item of value.value) w.i32(item);
      return;
  }
}

export function writeGguf(metadata: ReadonlyArray<[string, GgufValue]>, tensors: readonly GgufTensor[]): Buffer {
  const w = new Writer();
  w.bytes(Buffer.from(MAGIC, 'ascii'));
  w.u32(VERSION);
  w.u64(tensors.length);
  w.u64(metadata.length);
  for (const [key, value] of metadata) {
    w.string(key);
    writeValue(w, value);
  }
  let offset = 0;
  for (const tensor of tensors) {
    const elements = tensor.dims.reduce((a, b) => a * b, 1);
    if (elements !== tensor.data.length) throw new Error(`tensor ${tensor.name}: dims ${tensor.dims.join('x')} but ${tensor.data.length} values`);
    w.string(tensor.name);
    w.u32(tensor.dims.length);
    for (const dim of tensor.dims) w.u64(dim);
    w.u32(GGML_TYPE_F32);
    w.u64(offset);
    offset += Math.ceil((elements * 4) / ALIGNMENT) * ALIGNMENT;
  }
  w.padTo(ALIGNMENT);
  for (const tensor of tensors) {
    w.bytes(Buffer.from(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength));
    w.padTo(ALIGNMENT);
  }
  return w.done();
}

export function readGguf(buffer: Buffer): GgufFile {
  let at = 0;
  const u32 = (): number => {
    const v = buffer.readUInt32LE(at);
    at += 4;
    return v;
  };
  const i32 = (): number => {
    const v = buffer.readInt32LE(at);
    at += 4;
    return v;
  };
  const u64 = (): number => {
    const v = Number(buffer.readBigUInt64LE(at));
    at += 8;
    return v;
  };
  const f32 = (): number => {
    const v = buffer.readFloatLE(at);
    at += 4;
    return v;
  };
  const string = (): string => {
    const length = u64();
    const v = buffer.toString('utf8', at, at + length);
    at += length;
    return v;
  };

  if (buffer.toString('ascii', 0, 4) !== MAGIC) throw new Error('not a GGUF file');
  at = 4;
  const version = u32();
  const tensorCount = u64();
  const kvCount = u64();
  const metadata = new Map<string, GgufValue>();
  for (let i = 0; i < kvCount; i++) {
    const key = string();
    const type = u32();
    let value: GgufValue;
    if (type === ValueType.UINT32) value = { type: 'u32', value: u32() };
    else if (type === ValueType.INT32) value = { type: 'i32', value: i32() };
    else if (type === ValueType.FLOAT32) value = { type: 'f32', value: f32() };
    else if (type === ValueType.BOOL) value = { type: 'bool', value: buffer[at++] === 1 };
    else if (type === ValueType.STRING) value = { type: 'string', value: string() };
    else if (type === ValueType.ARRAY) {
      const itemType = u32();
      const count = u64();
      if (itemType === ValueType.STRING) value = { type: 'strings', value: Array.from({ length: count }, string) };
      else if (itemType === ValueType.FLOAT32) value = { type: 'f32s', value: Array.from({ length: count }, f32) };
      else if (itemType === ValueType.INT32) value = { type: 'i32s', value: Array.from({ length: count }, i32) };
      else throw new Error(`${key}: unsupported array item type ${itemType}`);
    } else throw new Error(`${key}: unsupported value type ${type}`);
    metadata.set(key, value);
  }
  const infos: Array<{ name: string; dims: number[]; type: number; offset: number }> = [];
  for (let i = 0; i < tensorCount; i++) {
    const name = string();
    const dimCount = u32();
    const dims = Array.from({ length: dimCount }, u64);
    infos.push({ name, dims, type: u32(), offset: u64() });
  }
  const alignmentValue = metadata.get('general.alignment');
  const alignment = alignmentValue?.type === 'u32' ? alignmentValue.value : ALIGNMENT;
  const dataStart = Math.ceil(at / alignment) * alignment;
  const tensors = infos.map((info) => {
    const elements = info.dims.reduce((a, b) => a * b, 1);
    const start = dataStart + info.offset;
    const copy = Buffer.from(buffer.subarray(start, start + elements * 4));
    return { ...info, data: new Float32Array(copy.buffer, copy.byteOffset, elements) };
  });
  return { version, alignment, metadata, tensors };
}

/** Deterministic pseudo-random numbers (mulberry32), so the model is the same file every run. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** SentencePiece token types as llama.cpp reads them. */
const TOKEN_NORMAL = 1;
const TOKEN_UNKNOWN = 2;
const TOKEN_CONTROL = 3;
const TOKEN_BYTE = 6;

export interface TinyLlamaShape {
  embedding: number;
  layers: number;
  feedForward: number;
  heads: number;
  contextLength: number;
}

export const TINY_LLAMA: TinyLlamaShape = { embedding: 64, layers: 2, feedForward: 128, heads: 4, contextLength: 4096 };

/**
 * A llama-architecture model with random weights and a SentencePiece-style vocabulary:
 * <unk>, <s>, </s>, the word marker "▁" (so spaces survive tokenize/detokenize), and the
 * 256 byte tokens <0x00>..<0xFF> that spell everything else.
 */
export function tinyLlamaGguf(shape: TinyLlamaShape = TINY_LLAMA, seed = 42): Buffer {
  const tokens = ['<unk>', '<s>', '</s>', '▁'];
  const types = [TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_CONTROL, TOKEN_NORMAL];
  for (let byte = 0; byte < 256; byte++) {
    tokens.push(`<0x${byte.toString(16).toUpperCase().padStart(2, '0')}>`);
    types.push(TOKEN_BYTE);
  }
  const vocab = tokens.length;
  const scores = tokens.map((_, i) => (i === 3 ? 0 : -1000 - i));

  const next = random(seed);
  const weights = (...dims: number[]): Float32Array => {
    const data = new Float32Array(dims.reduce((a, b) => a * b, 1));
    for (let i = 0; i < data.length; i++) data[i] = (next() - 0.5) * 0.2;
    return data;
  };
  const ones = (n: number): Float32Array => new Float32Array(n).fill(1);
  const { embedding: e, feedForward: ff, layers } = shape;

  // Random weights would now and then sample </s> and end a generation early, which makes token
  // counts in tests unpredictable. So one residual dimension is held constant: every token embeds
  // 1.0 there and no layer writes to it; the output rows of <unk>, <s> and </s> read it with a
  // large negative weight, so their logits sit far below every other token's.
  const held = 0;
  const never = [0, 1, 2];
  const embeddings = weights(e, vocab);
  for (let token = 0; token < vocab; token++) embeddings[token * e + held] = 1;
  const layerOutput = (inputs: number): Float32Array => {
    const data = weights(inputs, e);
    data.fill(0, held * inputs, (held + 1) * inputs);
    return data;
  };
  const output = weights(e, vocab);
  for (const token of never) {
    output.fill(0, token * e, (token + 1) * e);
    output[token * e + held] = -100;
  }

  const tensors: GgufTensor[] = [{ name: 'token_embd.weight', dims: [e, vocab], data: embeddings }];
  for (let layer = 0; layer < layers; layer++) {
    const p = `blk.${layer}`;
    tensors.push(
      { name: `${p}.attn_norm.weight`, dims: [e], data: ones(e) },
      { name: `${p}.attn_q.weight`, dims: [e, e], data: weights(e, e) },
      { name: `${p}.attn_k.weight`, dims: [e, e], data: weights(e, e) },
      { name: `${p}.attn_v.weight`, dims: [e, e], data: weights(e, e) },
      { name: `${p}.attn_output.weight`, dims: [e, e], data: layerOutput(e) },
      { name: `${p}.ffn_norm.weight`, dims: [e], data: ones(e) },
      { name: `${p}.ffn_gate.weight`, dims: [e, ff], data: weights(e, ff) },
      { name: `${p}.ffn_up.weight`, dims: [e, ff], data: weights(e, ff) },
      { name: `${p}.ffn_down.weight`, dims: [ff, e], data: layerOutput(ff) },
    );
  }
  tensors.push({ name: 'output_norm.weight', dims: [e], data: ones(e) }, { name: 'output.weight', dims: [e, vocab], data: output });

  const metadata: Array<[string, GgufValue]> = [
    ['general.architecture', { type: 'string', value: 'llama' }],
    ['general.name', { type: 'string', value: 'tiny-test-llama' }],
    ['general.basename', { type: 'string', value: 'tiny-test-llama' }],
    ['general.file_type', { type: 'u32', value: 0 }],
    ['general.alignment', { type: 'u32', value: ALIGNMENT }],
    ['llama.context_length', { type: 'u32', value: shape.contextLength }],
    ['llama.embedding_length', { type: 'u32', value: e }],
    ['llama.block_count', { type: 'u32', value: layers }],
    ['llama.feed_forward_length', { type: 'u32', value: ff }],
    ['llama.attention.head_count', { type: 'u32', value: shape.heads }],
    ['llama.attention.head_count_kv', { type: 'u32', value: shape.heads }],
    ['llama.attention.layer_norm_rms_epsilon', { type: 'f32', value: 1e-5 }],
    ['llama.rope.dimension_count', { type: 'u32', value: e / shape.heads }],
    ['llama.vocab_size', { type: 'u32', value: vocab }],
    ['tokenizer.ggml.model', { type: 'string', value: 'llama' }],
    ['tokenizer.ggml.tokens', { type: 'strings', value: tokens }],
    ['tokenizer.ggml.scores', { type: 'f32s', value: scores }],
    ['tokenizer.ggml.token_type', { type: 'i32s', value: types }],
    ['tokenizer.ggml.unknown_token_id', { type: 'u32', value: 0 }],
    ['tokenizer.ggml.bos_token_id', { type: 'u32', value: 1 }],
    ['tokenizer.ggml.eos_token_id', { type: 'u32', value: 2 }],
    ['tokenizer.ggml.add_bos_token', { type: 'bool', value: true }],
    ['tokenizer.ggml.add_eos_token', { type: 'bool', value: false }],
  ];
  return writeGguf(metadata, tensors);
}
