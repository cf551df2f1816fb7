import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Ollama } from 'ollama';
import OpenAI from 'openai';
import type { BridgeHandle } from '../../src/bridge.js';
import { startTestBridge } from '../support/bridge.js';
import { readLines, readSseEvents } from '../support/streams.js';
import { RIG_MODELS, rigSkipReason, startRig, type OllamaRig, type RigInstance } from '../support/ollama-rig.js';

const skip = rigSkipReason();
const VIRTUAL_NAMES = ['auto', 'bridge/simple', 'bridge/moderate', 'bridge/complex'];
const MODEL = RIG_MODELS.simple;

interface NdjsonLine {
  model?: string;
  created_at?: string;
  response?: string;
  message?: { role: string; content: string };
  done?: boolean;
  done_reason?: string;
  eval_count?: number;
  eval_duration?: number;
  error?: string;
}

describe('pass-through to a real Ollama', { skip }, () => {
  let rig: OllamaRig;
  let ollama: RigInstance;
  let bridge: BridgeHandle;

  before(async () => {
    rig = await startRig(1);
    ollama = rig.instances[0] as RigInstance;
    bridge = await startTestBridge({ env: { OLLAMA_HOST: ollama.url } });
  });
  after(async () => {
    await bridge?.stop(100);
    await rig?.stop();
  });

  const post = (path: string, body: unknown, signal?: AbortSignal): Promise<Response> =>
    fetch(`${bridge.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal });

  it('answers GET /api/version with the backend’s version raised to the API level the bridge implements (Codex --oss needs 0.13.4)', async () => {
    const direct = (await (await fetch(`${rig.instances[0]?.url}/api/version`)).json()) as { version: string };
    assert.equal(direct.version, '0.11.4');
    const viaBridge = await fetch(`${bridge.url}/api/version`);
    assert.equal(viaBridge.status, 200);
    assert.deepEqual(await viaBridge.json(), { version: '0.13.4' });
  });

  it('lists the registered models in /api/tags and describes them in /api/show', async () => {
    const tags = (await (await fetch(`${bridge.url}/api/tags`)).json()) as { models: Array<{ model: string; name: string }> };
    assert.deepEqual(tags.models.map((m) => m.model).sort(), [...VIRTUAL_NAMES, ...Object.values(RIG_MODELS)].sort());
    const show = (await (await post('/api/show', { model: MODEL })).json()) as {
      capabilities: string[];
      model_info: Record<string, unknown>;
      template: string;
    };
    assert.deepEqual([...show.capabilities].sort(), ['completion', 'insert', 'tools']);
    assert.equal(show.model_info['general.architecture'], 'llama');
    assert.equal(show.model_info['llama.context_length'], 4096);
    assert.match(show.template, /\.Suffix/);
  });

  it('serves /api/generate without streaming', async () => {
    const response = await post('/api/generate', { model: MODEL, prompt: 'def add(a, b):', stream: false, options: { num_predict: 8 } });
    assert.equal(response.status, 200);
    const body = (await response.json()) as NdjsonLine;
    assert.equal(body.done, true);
    assert.equal(body.done_reason, 'length');
    assert.equal(body.eval_count, 8);
    assert.equal(typeof body.response, 'string');
  });

  it('streams /api/generate as NDJSON, line by line while Ollama generates', async () => {
    const started = performance.now();
    const response = await post('/api/generate', { model: MODEL, prompt: 'hello', options: { num_predict: 400 } });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('content-type'), 'application/x-ndjson');
    const lines: Array<{ line: NdjsonLine; at: number }> = [];
    for await (const line of readLines(response)) lines.push({ line: JSON.parse(line) as NdjsonLine, at: performance.now() - started });
    const last = lines.at(-1);
    assert.ok(last && lines.length > 2, `expected many lines, got ${lines.length}`);
    assert.equal(last.line.done, true);
    assert.equal(last.line.eval_count, 400);
    for (const { line } of lines.slice(0, -1)) assert.equal(line.done, false);
    // Buffering would deliver everything at once; a stream spreads the lines over the generation.
    const generationMs = (last.line.eval_duration ?? 0) / 1e6;
    const spreadMs = last.at - (lines[0]?.at ?? 0);
    assert.ok(spreadMs > generationMs * 0.5, `first line came only ${spreadMs.toFixed(0)} ms before the last; generation took ${generationMs.toFixed(0)} ms`);
  });

  it('serves fill-in-the-middle (/api/generate with suffix)', async () => {
    const response = await post('/api/generate', {
      model: MODEL,
      prompt: 'def f(x):\n    ',
      suffix: '\n    return y',
      stream: false,
      options: { num_predict: 6 },
    });
    assert.equal(response.status, 200);
    const body = (await response.json()) as NdjsonLine;
    assert.equal(body.done, true);
    assert.equal(body.eval_count, 6);
  });

  it('serves /api/chat streaming and not', async () => {
    const whole = await post('/api/chat', { model: MODEL, messages: [{ role: 'user', content: 'hi' }], stream: false, options: { num_predict: 5 } });
    const body = (await whole.json()) as NdjsonLine;
    assert.equal(body.message?.role, 'assistant');
    assert.equal(body.done, true);

    const streamed = await post('/api/chat', { model: MODEL, messages: [{ role: 'user', content: 'hi' }], options: { num_predict: 50 } });
    assert.equal(streamed.headers.get('content-type'), 'application/x-ndjson');
    const lines: NdjsonLine[] = [];
    for await (const line of readLines(streamed)) lines.push(JSON.parse(line) as NdjsonLine);
    assert.ok(lines.length >= 2);
    for (const line of lines) {
      assert.equal(line.model, MODEL);
      assert.equal(typeof line.created_at, 'string');
      assert.equal(line.message?.role, 'assistant');
      assert.equal(typeof line.done, 'boolean');
    }
    assert.equal(lines.at(-1)?.done, true);
  });

  it('shows the loaded model in /api/ps', async () => {
    const ps = (await (await fetch(`${bridge.url}/api/ps`)).json()) as { models: Array<{ model: string; size_vram: number; context_length: number }> };
    const loaded = ps.models.find((m) => m.model === MODEL);
    assert.ok(loaded, `${MODEL} not in /api/ps`);
    assert.equal(loaded.size_vram, 0);
    assert.equal(loaded.context_length, 2048);
  });

  it('serves /v1/chat/completions without streaming', async () => {
    const response = await post('/v1/chat/completions', { model: MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: 5 });
    assert.equal(response.status, 200);
    const body = (await response.json()) as {
      object: string;
      choices: Array<{ message: { role: string }; finish_reason: string }>;
      usage: { completion_tokens: number };
    };
    assert.equal(body.object, 'chat.completion');
    assert.equal(body.choices[0]?.message.role, 'assistant');
    assert.equal(body.choices[0]?.finish_reason, 'length');
    assert.equal(body.usage.completion_tokens, 5);
  });

  it('streams /v1/chat/completions as SSE with usage and [DONE]', async () => {
    const response = await post('/v1/chat/completions', {
      model: MODEL,
      messages: [{ role: 'user', content: 'hi' }],
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: 20,
    });
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /^text\/event-stream/);
    const events = [];
    for await (const event of readSseEvents(response)) events.push(event);
    assert.equal(events.at(-1), '[DONE]');
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e) as { choices: Array<{ finish_reason: string | null }>; usage?: { completion_tokens: number } });
    assert.equal(chunks.at(-1)?.usage?.completion_tokens, 20);
    assert.ok(chunks.some((c) => c.choices[0]?.finish_reason === 'length'));
  });

  it('lists models in /v1/models', async () => {
    const body = (await (await fetch(`${bridge.url}/v1/models`)).json()) as { object: string; data: Array<{ id: string }> };
    assert.equal(body.object, 'list');
    assert.deepEqual(body.data.map((m) => m.id).sort(), [...VIRTUAL_NAMES, ...Object.values(RIG_MODELS)].sort());
  });

  it('passes an unknown model’s 404 through in each surface’s shape', async () => {
    const native = await post('/api/chat', { model: 'nope:1b', messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(native.status, 404);
    const nativeBody = (await native.json()) as { error: string };
    assert.deepEqual(Object.keys(nativeBody), ['error']);
    assert.match(nativeBody.error, /model "nope:1b" not found/);

    const openai = await post('/v1/chat/completions', { model: 'nope:1b', messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(openai.status, 404);
    const openaiBody = (await openai.json()) as { error: { message: string; type: string } };
    assert.match(openaiBody.error.message, /model "nope:1b" not found/);
    assert.equal(typeof openaiBody.error.type, 'string');
  });

  it('stops the generation on Ollama when the client disconnects mid-stream', async () => {
    const controller = new AbortController();
    // Long enough to run for minutes; the rig allows one generation at a time.
    const response = await post('/api/generate', { model: MODEL, prompt: 'go on', options: { num_predict: 100000 } }, controller.signal);
    const lines = readLines(response);
    assert.ok((await lines.next()).value, 'no first line');
    controller.abort();
    await lines.return(undefined).catch(() => undefined);

    // If the abandoned generation were still running, this one would queue behind it for minutes.
    const started = performance.now();
    const direct = await fetch(`${ollama.url}/api/generate`, {
      method: 'POST',
      body: JSON.stringify({ model: MODEL, prompt: 'next', stream: false, options: { num_predict: 3 } }),
      signal: AbortSignal.timeout(20_000),
    });
    const body = (await direct.json()) as NdjsonLine;
    assert.equal(body.done, true);
    const waited = performance.now() - started;
    assert.ok(waited < 5000, `the next request waited ${waited.toFixed(0)} ms: the cancelled generation kept running`);
  });

  it('works with the real openai npm client: chat, streaming, models and embeddings', async () => {
    const client = new OpenAI({ baseURL: `${bridge.url}/v1`, apiKey: 'unused' });
    const completion = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 });
    assert.equal(completion.choices[0]?.message.role, 'assistant');
    assert.equal(completion.usage?.completion_tokens, 4);

    const stream = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'hi' }],
      max_tokens: 12,
      stream: true,
      stream_options: { include_usage: true },
    });
    let usage: number | undefined;
    let finish: string | null | undefined;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage.completion_tokens;
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    assert.equal(usage, 12);
    assert.equal(finish, 'length');

    const models = await client.models.list();
    assert.ok(models.data.some((m) => m.id === MODEL));
    // The SDK asks for base64 by default; the bridge encodes it (Ollama itself always answers floats).
    const embedding = await client.embeddings.create({ model: MODEL, input: ['alpha', 'beta'] });
    assert.equal(embedding.data.length, 2);
    assert.equal(embedding.data[0]?.embedding.length, 64);
    const floats = await client.embeddings.create({ model: MODEL, input: 'alpha', encoding_format: 'float' });
    const direct = (await (await fetch(`${ollama.url}/api/embed`, { method: 'POST', body: JSON.stringify({ model: MODEL, input: 'alpha' }) })).json()) as {
      embeddings: number[][];
    };
    assert.deepEqual(floats.data[0]?.embedding, direct.embeddings[0]);
    assert.deepEqual(
      embedding.data[0]?.embedding.map((v) => Math.fround(v)),
      direct.embeddings[0]?.map((v) => Math.fround(v)),
    );
  });

  it('works with the real ollama npm client: chat stream, generate, list, show and embed', async () => {
    const client = new Ollama({ host: bridge.url });
    const parts = await client.chat({ model: MODEL, messages: [{ role: 'user', content: 'hi' }], stream: true, options: { num_predict: 10 } });
    let done = false;
    for await (const part of parts) done = part.done;
    assert.equal(done, true);
    const generated = await client.generate({ model: MODEL, prompt: 'x', options: { num_predict: 3 } });
    assert.equal(generated.eval_count, 3);
    const list = await client.list();
    assert.ok(list.models.some((m) => m.model === MODEL));
    const show = await client.show({ model: MODEL });
    assert.equal(show.details.family, 'llama');
    const embedded = await client.embed({ model: MODEL, input: 'alpha' });
    assert.equal(embedded.embeddings[0]?.length, 64);
  });

  it('answers 502 JSON while the upstream is down, and recovers when it is back', async () => {
    await ollama.stop();
    try {
      const down = await fetch(`${bridge.url}/api/tags`);
      assert.equal(down.status, 502);
      const body = (await down.json()) as { error: string };
      assert.match(body.error, /^no backend is reachable: backend local is unreachable \(ECONNREFUSED/);
    } finally {
      await ollama.start();
    }
    const back = await fetch(`${bridge.url}/api/tags`);
    assert.equal(back.status, 200);
  });
});
