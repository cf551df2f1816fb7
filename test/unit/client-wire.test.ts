import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { after, before, describe, it } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import type { BridgeHandle } from '../../src/bridge.js';
import { startStandIn, startTestBridge, type StandIn, postJson } from '../support/bridge.js';
import { namedSseEvents, readSseEvents } from '../support/streams.js';
import { configFile } from '../support/temp.js';

/**
 * Details of each client's wire format that a demanding user notices: answers cut by the token
 * limit, thinking in a stream, usage when asked for, several choices, the endpoints agents call
 * besides generations, and a tier model that lacks what a request uses.
 */

const SMALL = 'wire-small:1b';
const LARGE = 'wire-large:7b';

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** What every generation of the stand-in answers: its lines before the last, and the last line's done_reason. */
interface Script {
  thinking?: string[];
  text: string[];
  doneReason?: 'stop' | 'length';
}

/** Capabilities /api/show reports per model. */
const CAPABILITIES: Record<string, string[]> = { [SMALL]: ['completion', 'insert'], [LARGE]: ['completion', 'tools', 'thinking'] };

/** An Ollama stand-in that answers /api/chat and /api/generate from `script`, /api/embed with fixed vectors, /api/version with `version`. */
function startWireUpstream(script: Script, version = '0.11.4'): Promise<StandIn> {
  return startStandIn(
    (req: IncomingMessage, res: ServerResponse, text: string) => {
      const body = text === '' ? {} : (JSON.parse(text) as Record<string, unknown>);
      const json = (status: number, answer: unknown): void => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(answer));
      };
      if (req.url === '/api/version') return json(200, { version });
      if (req.url === '/api/show') {
        const capabilities = CAPABILITIES[String(body.model)];
        if (capabilities === undefined) return json(404, { error: `model '${String(body.model)}' not found` });
        return json(200, { capabilities, details: {}, model_info: { 'general.architecture': 'llama' }, template: '{{ .Prompt }}{{ .Suffix }}' });
      }
      if (req.url === '/api/embed') return json(200, { model: body.model, embeddings: [[0.25, -1.5, 3]], prompt_eval_count: 2 });
      const chat = req.url === '/api/chat';
      const { thinking = [], text: pieces, doneReason = 'stop' } = script;
      const line = (fields: Record<string, unknown>): string => `${JSON.stringify({ model: body.model, created_at: '2025-01-01T00:00:00Z', ...fields })}\n`;
      const piece = (content: string, thought = ''): string =>
        line({
          ...(chat ? { message: { role: 'assistant', content, ...(thought === '' ? {} : { thinking: thought }) } } : { response: content }),
          done: false,
        });
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      for (const thought of thinking) res.write(piece('', thought));
      for (const content of pieces) res.write(piece(content));
      res.end(
        line({
          ...(chat ? { message: { role: 'assistant', content: '' } } : { response: '' }),
          done: true,
          done_reason: doneReason,
          prompt_eval_count: 5,
          eval_count: pieces.length,
          eval_duration: 1_000_000,
        }),
      );
      return undefined;
    },
    [SMALL, LARGE],
  );
}

async function wireBridge(script: Script, version?: string): Promise<{ upstream: StandIn; bridge: BridgeHandle }> {
  const upstream = await startWireUpstream(script, version);
  const file = configFile(`models:\n  simple:\n    name: "${SMALL}"\n  complex:\n    name: "${LARGE}"\n`);
  const bridge = await startTestBridge({ file, env: { OLLAMA_HOST: upstream.url } });
  cleanups.push(
    () => bridge.stop(100),
    () => upstream.close(),
  );
  return { upstream, bridge };
}

/** The JSON payloads of an SSE stream, up to (not including) [DONE], and whether [DONE] came. */
async function dataEvents(response: Response): Promise<{ events: Array<Record<string, unknown>>; done: boolean }> {
  const events: Array<Record<string, unknown>> = [];
  let done = false;
  for await (const data of readSseEvents(response)) {
    if (data === '[DONE]') done = true;
    else events.push(JSON.parse(data) as Record<string, unknown>);
  }
  return { events, done };
}

interface ChatChoice {
  index: number;
  delta: { role?: string; content?: string; reasoning_content?: string; reasoning?: string };
  finish_reason: string | null;
}

describe('answers cut by the token limit, in each client’s words', () => {
  let bridge: BridgeHandle;
  before(async () => {
    ({ bridge } = await wireBridge({ text: ['a', 'b'], doneReason: 'length' }));
  });

  it('chat completions stream: finish_reason length, then the usage chunk asked for, then [DONE]', async () => {
    const response = await postJson(`${bridge.url}/v1/chat/completions`, {
      model: LARGE,
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: 2,
      messages: [{ role: 'user', content: 'hi' }],
    });
    const { events, done } = await dataEvents(response);
    assert.ok(done);
    const choices = events.flatMap((e) => e.choices as ChatChoice[]);
    assert.equal(choices.map((c) => c.delta.content ?? '').join(''), 'ab');
    assert.deepEqual(
      choices.filter((c) => c.finish_reason !== null).map((c) => c.finish_reason),
      ['length'],
    );
    const last = events.at(-1);
    assert.deepEqual(last?.choices, []);
    assert.deepEqual(last?.usage, { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 });
  });

  it('Copilot ghost text with n = 3: each choice streams its text and ends with finish_reason length, then usage and [DONE]', async () => {
    const response = await postJson(`${bridge.url}/v1/engines/${encodeURIComponent(SMALL)}/completions`, {
      prompt: 'def add(a, b):\n    return',
      suffix: '\n',
      max_tokens: 2,
      n: 3,
      stream: true,
      stream_options: { include_usage: true },
    });
    assert.equal(response.status, 200);
    const { events, done } = await dataEvents(response);
    assert.ok(done);
    const choices = events.flatMap((e) => e.choices as Array<{ text: string; index: number; finish_reason: string | null }>);
    for (const index of [0, 1, 2]) {
      const mine = choices.filter((c) => c.index === index);
      assert.equal(mine.map((c) => c.text).join(''), 'ab', `choice ${index}`);
      assert.deepEqual(
        mine.filter((c) => c.finish_reason !== null).map((c) => c.finish_reason),
        ['length'],
        `choice ${index}`,
      );
    }
    // The prompt counted once, as OpenAI counts it, however many choices ran it.
    assert.deepEqual(events.at(-1)?.usage, { prompt_tokens: 5, completion_tokens: 6, total_tokens: 11 });
  });

  it('Messages: stop_reason max_tokens, streamed and whole', async () => {
    const request = { model: LARGE, max_tokens: 2, messages: [{ role: 'user', content: 'hi' }] };
    const whole = (await (await postJson(`${bridge.url}/v1/messages`, request)).json()) as { stop_reason: string; content: unknown };
    assert.equal(whole.stop_reason, 'max_tokens');
    assert.deepEqual(whole.content, [{ type: 'text', text: 'ab' }]);
    const events = await namedSseEvents(await postJson(`${bridge.url}/v1/messages?beta=true`, { ...request, stream: true }));
    const delta = events.find(([name]) => name === 'message_delta')?.[1] as { delta: { stop_reason: string } } | undefined;
    assert.equal(delta?.delta.stop_reason, 'max_tokens');
    assert.equal(events.at(-1)?.[0], 'message_stop');
  });

  it('Responses: status incomplete for max_output_tokens, streamed as response.incomplete and whole', async () => {
    const request = { model: LARGE, max_output_tokens: 16, input: 'hi' };
    const whole = (await (await postJson(`${bridge.url}/v1/responses`, request)).json()) as { status: string; incomplete_details: unknown };
    assert.equal(whole.status, 'incomplete');
    assert.deepEqual(whole.incomplete_details, { reason: 'max_output_tokens' });
    const events = await namedSseEvents(await postJson(`${bridge.url}/v1/responses`, { ...request, stream: true }));
    const [name, last] = events.at(-1) as [string, { response: { status: string; incomplete_details: unknown } }];
    assert.equal(name, 'response.incomplete');
    assert.equal(last.response.status, 'incomplete');
    assert.deepEqual(last.response.incomplete_details, { reason: 'max_output_tokens' });
    assert.ok(!events.some(([event]) => event === 'response.completed'));
  });
});

describe('thinking in an OpenAI chat stream', () => {
  it('comes as reasoning_content and reasoning deltas before the content', async () => {
    const { bridge } = await wireBridge({ thinking: ['Let me ', 'see.'], text: ['Four.'] });
    const response = await postJson(`${bridge.url}/v1/chat/completions`, {
      model: LARGE,
      stream: true,
      reasoning_effort: 'low',
      messages: [{ role: 'user', content: '2+2?' }],
    });
    const { events, done } = await dataEvents(response);
    assert.ok(done);
    const deltas = events.flatMap((e) => e.choices as ChatChoice[]).map((c) => c.delta);
    assert.equal(deltas[0]?.role, 'assistant');
    assert.equal(deltas.map((d) => d.reasoning_content ?? '').join(''), 'Let me see.');
    assert.equal(deltas.map((d) => d.reasoning ?? '').join(''), 'Let me see.');
    assert.equal(deltas.map((d) => d.content ?? '').join(''), 'Four.');
    const firstContent = deltas.findIndex((d) => (d.content ?? '') !== '');
    const lastThought = deltas.map((d) => d.reasoning_content !== undefined).lastIndexOf(true);
    assert.ok(lastThought < firstContent, 'the thinking comes before the answer');
  });
});

describe('what agents call besides generations', () => {
  let bridge: BridgeHandle;
  let upstream: StandIn;
  before(async () => {
    ({ bridge, upstream } = await wireBridge({ text: ['x'] }));
  });

  it('Claude Code’s count_tokens (?beta=true) answers an estimate from the system prompt, messages and tools, without a generation', async () => {
    const generations = upstream.requests.length;
    const count = async (body: Record<string, unknown>): Promise<number> => {
      const response = await postJson(`${bridge.url}/v1/messages/count_tokens?beta=true`, { model: LARGE, ...body });
      assert.equal(response.status, 200);
      return ((await response.json()) as { input_tokens: number }).input_tokens;
    };
    const messages = [{ role: 'user', content: 'x'.repeat(400) }];
    const alone = await count({ messages });
    assert.equal(alone, 100);
    assert.ok((await count({ messages, system: [{ type: 'text', text: 'y'.repeat(400) }] })) > alone);
    assert.ok((await count({ messages, tools: [{ name: 'Read', input_schema: { type: 'object' } }] })) > alone);
    assert.equal(upstream.requests.length, generations);
    const bad = await postJson(`${bridge.url}/v1/messages/count_tokens`, { model: LARGE });
    assert.equal(bad.status, 400);
    assert.equal(((await bad.json()) as { error: { type: string } }).error.type, 'invalid_request_error');
  });

  it('Codex’s WebSocket try on GET /v1/responses gets a plain 404, so it posts instead', async () => {
    const response = await fetch(`${bridge.url}/v1/responses`);
    assert.equal(response.status, 404);
    assert.equal(response.headers.get('connection'), 'close');
    const body = (await response.json()) as { error: { message: string } };
    assert.match(body.error.message, /POST \/v1\/responses/);
  });

  it('the model list and its errors in the Anthropic SDK’s shape for a client that sends anthropic-version (Claude Code’s gateway model discovery), OpenAI’s for others', async () => {
    const anthropic = new Anthropic({ baseURL: bridge.url, apiKey: 'unused', maxRetries: 0 });
    const page = await anthropic.models.list({ limit: 1000 });
    const small = page.data.find((model) => model.id === SMALL);
    assert.deepEqual(small, { type: 'model', id: SMALL, display_name: SMALL, created_at: '2025-01-01T00:00:00.000Z' });
    assert.ok(page.data.every((model) => model.type === 'model' && model.display_name === model.id && !Number.isNaN(Date.parse(model.created_at))));
    const raw = (await (await fetch(`${bridge.url}/v1/models`, { headers: { 'anthropic-version': '2023-06-01' } })).json()) as Record<string, unknown>;
    assert.equal(raw.has_more, false);
    assert.equal(raw.first_id, page.data[0]?.id);
    assert.equal(raw.last_id, page.data.at(-1)?.id);
    assert.deepEqual(await anthropic.models.retrieve(SMALL), small);
    // Its errors too: an Anthropic client reads Anthropic's error shape.
    const missing = await fetch(`${bridge.url}/v1/models/no-such-model`, { headers: { 'anthropic-version': '2023-06-01' } });
    assert.equal(missing.status, 404);
    assert.deepEqual(await missing.json(), { type: 'error', error: { type: 'not_found_error', message: "The model 'no-such-model' does not exist" } });

    const openai = new OpenAI({ baseURL: `${bridge.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const listed = (await openai.models.list()).data.find((model) => model.id === SMALL);
    assert.deepEqual(listed, { id: SMALL, object: 'model', created: Date.parse('2025-01-01T00:00:00Z') / 1000, owned_by: 'library' });
    assert.deepEqual(await openai.models.retrieve(SMALL), listed);
    const missingForOpenAi = await fetch(`${bridge.url}/v1/models/no-such-model`);
    assert.equal(((await missingForOpenAi.json()) as { error: { code: string } }).error.code, 'model_not_found');
  });

  it('OpenAI SDK embeddings (base64 on the wire by default) decode to the backend’s vectors', async () => {
    const openai = new OpenAI({ baseURL: `${bridge.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const answer = await openai.embeddings.create({ model: SMALL, input: 'hello' });
    assert.deepEqual(answer.data[0]?.embedding, [0.25, -1.5, 3]);
    assert.deepEqual(answer.usage, { prompt_tokens: 2, total_tokens: 2 });
    const floats = (await (await postJson(`${bridge.url}/v1/embeddings`, { model: SMALL, input: ['hello'], encoding_format: 'float' })).json()) as {
      data: Array<{ embedding: number[] }>;
    };
    assert.deepEqual(floats.data[0]?.embedding, [0.25, -1.5, 3]);
  });
});

describe('GET /api/version without a configured version', () => {
  it('answers the lowest version among the backends, raised to the API level the bridge implements', async () => {
    const { bridge: old } = await wireBridge({ text: [] }, '0.11.4');
    assert.deepEqual(await (await fetch(`${old.url}/api/version`)).json(), { version: '0.13.4' });
    const { bridge: recent } = await wireBridge({ text: [] }, '0.14.10');
    assert.deepEqual(await (await fetch(`${recent.url}/api/version`)).json(), { version: '0.14.10' });
  });
});

describe('a tier whose model lacks what the request uses', () => {
  it('moves a request with tools from bridge/simple to the next tier whose model has tools, and says why', async () => {
    const { upstream, bridge } = await wireBridge({ text: ['ok'] });
    const response = await postJson(`${bridge.url}/v1/chat/completions`, {
      model: 'bridge/simple',
      messages: [{ role: 'user', content: 'hi' }],
      tools: [{ type: 'function', function: { name: 'read', parameters: { type: 'object', properties: {} } } }],
    });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('x-bridge-model'), LARGE);
    assert.match(response.headers.get('x-bridge-route-reason') ?? '', /simple model lacks tools, using moderate/);
    const sent = upstream.requests.filter((r) => r.url === '/api/chat').at(-1);
    assert.equal((JSON.parse(sent?.body ?? '{}') as { model: string }).model, LARGE);
  });

  it('keeps a request on its tier when no tier’s model has what it uses, and says so', async () => {
    const { bridge } = await wireBridge({ text: ['ok'] });
    const response = await postJson(`${bridge.url}/api/chat`, {
      model: 'bridge/simple',
      messages: [{ role: 'user', content: 'what is this?', images: ['aGk='] }],
      stream: false,
    });
    assert.equal(response.headers.get('x-bridge-model'), SMALL);
    assert.match(response.headers.get('x-bridge-route-reason') ?? '', /; no model from the simple tier up has vision, staying on simple;/);
  });
});

describe('Copilot’s model details from an Ollama that predates capabilities', () => {
  it('answers /api/show with capabilities as an empty array and a display name, never without them', async () => {
    const upstream = await startStandIn(
      (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ details: { family: 'llama' }, model_info: { 'general.architecture': 'llama', 'llama.context_length': 8192 }, template: '' }));
      },
      ['old-model:7b'],
    );
    const bridge = await startTestBridge({ env: { OLLAMA_HOST: upstream.url } });
    cleanups.push(
      () => bridge.stop(100),
      () => upstream.close(),
    );
    const response = await postJson(`${bridge.url}/api/show`, { model: 'old-model:7b' });
    assert.equal(response.status, 200);
    const show = (await response.json()) as { capabilities: unknown; model_info: Record<string, unknown> };
    assert.deepEqual(show.capabilities, []);
    assert.equal(show.model_info['general.basename'], 'old-model');
    assert.equal(show.model_info['llama.context_length'], 8192);
  });
});

describe('ollama show --verbose', () => {
  it('asks the backend for the verbose details (whole token lists), even after a plain /api/show of the same model', async () => {
    const tokens = ['<s>', '</s>', 'a', 'b', 'c', 'd'];
    const upstream = await startStandIn(
      (_req, res, body) => {
        const { verbose } = JSON.parse(body) as { verbose?: boolean };
        // As Ollama answers: an array of more than 5 values is emptied unless verbose.
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(
          JSON.stringify({
            details: {},
            model_info: { 'general.architecture': 'llama', 'tokenizer.ggml.tokens': verbose === true ? tokens : [] },
            capabilities: ['completion'],
          }),
        );
      },
      ['m:latest'],
    );
    const bridge = await startTestBridge({ env: { OLLAMA_HOST: upstream.url } });
    cleanups.push(
      () => bridge.stop(100),
      () => upstream.close(),
    );
    const tokensShown = async (body: Record<string, unknown>): Promise<unknown> => {
      const response = await postJson(`${bridge.url}/api/show`, body);
      assert.equal(response.status, 200);
      return ((await response.json()) as { model_info: Record<string, unknown> }).model_info['tokenizer.ggml.tokens'];
    };
    assert.deepEqual(await tokensShown({ model: 'm' }), []);
    assert.deepEqual(await tokensShown({ name: 'm', verbose: true }), tokens);
    assert.deepEqual(await tokensShown({ model: 'm', verbose: null }), []);
    // Ollama decodes verbose as a bool: another type is a 400.
    assert.equal((await postJson(`${bridge.url}/api/show`, { model: 'm', verbose: 'yes' })).status, 400);
  });
});

describe('Copilot ghost text at the end of a file, where its suffix is empty', () => {
  let bridge: BridgeHandle;
  let upstream: StandIn;
  before(async () => {
    ({ bridge, upstream } = await wireBridge({ text: ['    return a + b'] }));
  });

  /** The /api/generate body of the last generation. */
  const lastGenerate = (): Record<string, unknown> =>
    JSON.parse(upstream.requests.filter((r) => r.url === '/api/generate').at(-1)?.body ?? '{}') as Record<string, unknown>;

  it('stays on the simple tier however long the file above the cursor is, as fill-in-the-middle does', async () => {
    // Past long_context_tokens (6000, about 4 characters each), which moves a plain completion to complex.
    const prompt = `${'x = 1\n'.repeat(5000)}def add(a, b):\n`;
    const response = await postJson(`${bridge.url}/v1/engines/copilot-codex/completions`, { prompt, suffix: '', max_tokens: 500, stream: true });
    assert.equal(response.status, 200);
    await response.text();
    assert.equal(response.headers.get('x-bridge-tier'), 'simple');
    assert.equal(response.headers.get('x-bridge-model'), SMALL);
  });

  for (const [name, suffix] of [
    ['empty', { suffix: '' }],
    ['absent', {}],
  ] as const) {
    it(`sends the code before the cursor raw (suffix ${name}), not wrapped in the model's chat template`, async () => {
      const response = await postJson(`${bridge.url}/v1/engines/${encodeURIComponent(SMALL)}/completions`, {
        prompt: 'def add(a, b):\n',
        ...suffix,
        stream: true,
      });
      assert.equal(response.status, 200);
      await response.text();
      const sent = lastGenerate();
      assert.equal(sent.raw, true);
      assert.equal(sent.suffix, undefined);
      assert.equal(sent.prompt, 'def add(a, b):\n');
    });
  }
});

describe('OpenAI completions with echo', () => {
  it('answers the prompt before each choice’s completion, streamed and whole (the openai SDK)', async () => {
    const { bridge } = await wireBridge({ text: ['a', 'b'] });
    const openai = new OpenAI({ baseURL: `${bridge.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const whole = await openai.completions.create({ model: SMALL, prompt: 'def add(', echo: true, n: 2 });
    assert.deepEqual(
      whole.choices.map((c) => c.text),
      ['def add(ab', 'def add(ab'],
    );
    const stream = await openai.completions.create({ model: SMALL, prompt: 'def add(', echo: true, n: 2, stream: true });
    const texts = ['', ''];
    for await (const chunk of stream) for (const choice of chunk.choices) texts[choice.index] += choice.text;
    assert.deepEqual(texts, ['def add(ab', 'def add(ab']);
  });
});

describe('OpenAI completions with several choices', () => {
  it('counts the prompt once in usage with n = 2, as OpenAI does, and both choices’ completions, streamed and whole', async () => {
    const { bridge } = await wireBridge({ text: ['a', 'b'] });
    const request = { model: SMALL, prompt: 'def add(', n: 2 };
    const usage = { prompt_tokens: 5, completion_tokens: 4, total_tokens: 9 };
    const whole = (await (await postJson(`${bridge.url}/v1/completions`, request)).json()) as { usage: unknown };
    assert.deepEqual(whole.usage, usage);
    const { events } = await dataEvents(await postJson(`${bridge.url}/v1/completions`, { ...request, stream: true, stream_options: { include_usage: true } }));
    assert.deepEqual(events.at(-1)?.usage, usage);
  });
});

describe('Continue autocomplete through /api/generate', () => {
  let bridge: BridgeHandle;
  let upstream: StandIn;
  before(async () => {
    ({ bridge, upstream } = await wireBridge({ text: ['    return a + b'] }));
  });

  // Past long_context_tokens (6000, about 4 characters each), which moves a plain completion to complex.
  const longPrefix = `${'x = 1\n'.repeat(5000)}def add(a, b):\n`;

  /** Sends one autocomplete request; the tier, route reason and lane it got, and the body Ollama got. */
  const complete = async (
    body: Record<string, unknown>,
  ): Promise<{ tier: string | null; reason: string; lane: string | undefined; sent: Record<string, unknown> }> => {
    const response = await postJson(`${bridge.url}/api/generate`, { options: { num_predict: 24 }, keep_alive: 1800, ...body });
    assert.equal(response.status, 200);
    await response.text();
    const sent = JSON.parse(upstream.requests.filter((r) => r.url === '/api/generate').at(-1)?.body ?? '{}') as Record<string, unknown>;
    return {
      tier: response.headers.get('x-bridge-tier'),
      reason: response.headers.get('x-bridge-route-reason') ?? '',
      lane: bridge.history.recent().at(-1)?.lane ?? undefined,
      sent,
    };
  };

  it('is fill-in-the-middle at the end of a file, where Continue sends suffix "": the ghost-text lane, the simple tier however long the prefix', async () => {
    const atEnd = await complete({ model: 'auto', prompt: longPrefix, suffix: '' });
    assert.equal(atEnd.tier, 'simple');
    assert.match(atEnd.reason, /^simple: fill-in-the-middle/);
    assert.equal(atEnd.lane, 'fim');
    // Passed on as Continue sent it: Ollama reads an empty suffix as none.
    assert.equal(atEnd.sent.suffix, '');
    assert.equal((await complete({ model: SMALL, prompt: 'def add(a, b):\n', suffix: '' })).lane, 'fim');
  });

  it('is fill-in-the-middle when Continue sends its own FIM template raw (a model whose Ollama template has no .Suffix)', async () => {
    for (const prompt of [
      `<fim_prefix>${longPrefix}<fim_suffix>\n<fim_middle>`,
      `<|fim_prefix|>${longPrefix}<|fim_suffix|>\n<|fim_middle|>`,
      `<PRE> ${longPrefix} <SUF>\n <MID>`,
      `[SUFFIX]\n[PREFIX]${longPrefix}`,
      `<｜fim▁begin｜>${longPrefix}<｜fim▁hole｜>\n<｜fim▁end｜>`,
    ]) {
      const raw = await complete({ model: 'auto', prompt, raw: true });
      assert.equal(raw.tier, 'simple', prompt.slice(0, 12));
      assert.equal(raw.lane, 'fim', prompt.slice(0, 12));
      assert.equal(raw.sent.raw, true);
    }
  });

  it('stays a plain completion without a suffix or FIM markers', async () => {
    const plain = await complete({ model: 'auto', prompt: longPrefix });
    assert.equal(plain.tier, 'complex');
    assert.equal(plain.lane, 'interactive');
    const rawText = await complete({ model: 'auto', prompt: 'Once upon a time', raw: true });
    assert.equal(rawText.lane, 'interactive');
  });
});

describe('an OpenAI-compatible autocomplete sending its own FIM template to /v1/completions', () => {
  let bridge: BridgeHandle;
  let upstream: StandIn;
  before(async () => {
    ({ bridge, upstream } = await wireBridge({ text: ['    return a + b'] }));
  });

  it('is ghost text sent raw, so Ollama does not wrap the markers in its chat template; a plain prompt is not', async () => {
    const complete = async (prompt: string): Promise<{ lane: string | undefined; sent: Record<string, unknown> }> => {
      const response = await postJson(`${bridge.url}/v1/completions`, { model: 'auto', prompt, max_tokens: 24 });
      assert.equal(response.status, 200);
      await response.text();
      const sent = JSON.parse(upstream.requests.filter((r) => r.url === '/api/generate').at(-1)?.body ?? '{}') as Record<string, unknown>;
      return { lane: bridge.history.recent().at(-1)?.lane ?? undefined, sent };
    };
    const template = await complete('<|fim_prefix|>def add(a, b):\n<|fim_suffix|>\n<|fim_middle|>');
    assert.equal(template.lane, 'fim');
    assert.equal(template.sent.raw, true);
    const plain = await complete('Once upon a time');
    assert.equal(plain.lane, 'interactive');
    assert.equal(plain.sent.raw, undefined);
  });
});

describe('fill-in-the-middle on a simple tier whose model cannot insert', () => {
  it('keeps an empty suffix on the simple tier (Ollama needs insert only for a suffix with text), and escalates one with text', async () => {
    const upstream = await startWireUpstream({ text: ['x'] });
    // The stand-in's LARGE has no insert capability; SMALL has.
    const file = configFile(`models:\n  simple:\n    name: "${LARGE}"\n  complex:\n    name: "${SMALL}"\n`);
    const bridge = await startTestBridge({ file, env: { OLLAMA_HOST: upstream.url } });
    cleanups.push(
      () => bridge.stop(100),
      () => upstream.close(),
    );
    const modelFor = async (suffix: string): Promise<string | null> => {
      const response = await postJson(`${bridge.url}/api/generate`, { model: 'auto', prompt: 'def add(a, b):\n', suffix });
      assert.equal(response.status, 200);
      await response.text();
      return response.headers.get('x-bridge-model');
    };
    assert.equal(await modelFor(''), LARGE);
    assert.equal(await modelFor('\n'), SMALL);
  });
});
