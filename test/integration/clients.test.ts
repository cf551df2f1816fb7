import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import type { BridgeHandle } from '../../src/bridge.js';
import { startTestBridge } from '../support/bridge.js';
import { readLines, readSseEvents } from '../support/streams.js';
import { tempDir, configFile } from '../support/temp.js';
import { findOllama } from '../support/ollama-binary.js';
import { RIG_MODELS, rigSkipReason, startRig, type OllamaRig, type RigInstance } from '../support/ollama-rig.js';

/**
 * Each client's request sequence, replayed as the client's own source sends it (design §3),
 * against the bridge in front of a real Ollama; every field the client reads is checked.
 */

const skip = rigSkipReason();

// The simple tier pinned as the README suggests for ghost text: "-1" as text, which Ollama itself refuses in a request.
const CONFIG = `
models:
  simple:
    name: "${RIG_MODELS.simple}"
    keep_alive: "-1"
  complex:
    name: "${RIG_MODELS.complex}"
routing:
  classification:
    complex_keywords: [architect, design]
    simple_keywords: [format]
`;

/** Copilot Chat's check: numeric comparison against 0.6.4, with 0.0.0 (a dev build) accepted. */
function copilotAcceptsVersion(version: string): boolean {
  if (version === '0.0.0') return true;
  const [a = 0, b = 0, c = 0] = version.split('.').map((p) => Number.parseInt(p, 10));
  return a > 0 || b > 6 || (b === 6 && c >= 4);
}

describe('clients against the bridge and a real Ollama', { skip }, () => {
  let rig: OllamaRig;
  let ollama: RigInstance;
  let bridge: BridgeHandle;

  before(async () => {
    rig = await startRig(1);
    ollama = rig.instances[0] as RigInstance;
    const file = configFile(CONFIG);
    bridge = await startTestBridge({ file, env: { OLLAMA_HOST: ollama.url } });
  });
  after(async () => {
    await bridge?.stop(100);
    await rig?.stop();
  });

  const post = (urlPath: string, body: unknown, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<Response> =>
    fetch(`${bridge.url}${urlPath}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body), signal });

  describe('GitHub Copilot Chat (Ollama provider)', () => {
    it('discovers every model: version, tags by .model, show with capabilities, architecture, context length and basename', async () => {
      const version = (await (await fetch(`${bridge.url}/api/version`)).json()) as { version: string };
      assert.ok(copilotAcceptsVersion(version.version), `Copilot refuses version ${version.version}`);

      const tags = (await (await fetch(`${bridge.url}/api/tags`)).json()) as { models: Array<Record<string, unknown>> };
      const ids = tags.models.map((m) => m.model as string);
      for (const id of ['auto', 'bridge/simple', 'bridge/complex', RIG_MODELS.simple, RIG_MODELS.complex])
        assert.ok(ids.includes(id), `${id} missing from /api/tags`);
      for (const model of tags.models) {
        for (const field of ['name', 'model', 'modified_at', 'size', 'digest', 'details']) assert.ok(field in model, `${String(model.model)} lacks ${field}`);
        const details = model.details as Record<string, unknown>;
        for (const field of ['format', 'family', 'families', 'parameter_size', 'quantization_level'])
          assert.ok(field in details, `${String(model.model)} details lack ${field}`);
      }

      const basenames = new Set<string>();
      for (const id of ids) {
        const response = await post('/api/show', { model: id });
        assert.equal(response.status, 200, `/api/show ${id}`);
        const show = (await response.json()) as { capabilities: unknown; model_info: Record<string, unknown> };
        assert.ok(Array.isArray(show.capabilities), `${id}: capabilities must be an array`);
        assert.ok((show.capabilities as string[]).includes('tools'), `${id}: the rig model can call tools`);
        const architecture = show.model_info['general.architecture'];
        assert.equal(architecture, 'llama');
        assert.equal(typeof show.model_info[`${String(architecture)}.context_length`], 'number');
        assert.equal(typeof show.model_info['general.basename'], 'string');
        basenames.add(`${id}:${String(show.model_info['general.basename'])}`);
      }
      // The virtual models must not collide with each other in Copilot's picker (it names models by basename).
      const virtualBasenames = [...basenames].filter((b) => /^(auto|bridge\/)/.test(b)).map((b) => b.split(':')[1]);
      assert.equal(new Set(virtualBasenames).size, virtualBasenames.length);
    });

    for (const chatPath of ['/v1/chat/completions', '/chat/completions']) {
      it(`streams a chat with tools through ${chatPath} as Copilot parses it`, async () => {
        const response = await post(
          chatPath,
          {
            model: 'auto',
            messages: [
              { role: 'system', content: 'You are a coding assistant.', copilot_cache_control: { type: 'ephemeral' } },
              { role: 'user', content: 'How should I architect this service?', copilot_references: [{ type: 'file', id: 'a.ts' }] },
            ],
            stream: true,
            stream_options: { include_usage: true },
            tools: [
              {
                type: 'function',
                function: { name: 'read_file', description: 'read a file', parameters: { type: 'object', properties: { path: { type: 'string' } } } },
              },
            ],
            temperature: 0.1,
            top_p: 1,
            n: 1,
          },
          { authorization: 'Bearer ', 'user-agent': 'GitHubCopilotChat/0.30.0' },
        );
        assert.equal(response.status, 200);
        assert.equal(response.headers.get('x-bridge-tier'), 'complex');
        assert.equal(response.headers.get('x-bridge-model'), RIG_MODELS.complex);
        assert.match(response.headers.get('x-bridge-route-reason') ?? '', /^complex: keyword 'architect'/);
        const events: string[] = [];
        for await (const event of readSseEvents(response)) events.push(event);
        assert.equal(events.at(-1), '[DONE]');
        const chunks = events.slice(0, -1).map(
          (e) =>
            JSON.parse(e) as {
              model: string;
              choices: Array<{ delta: { content?: string; tool_calls?: unknown[] }; finish_reason: string | null }>;
              usage?: { completion_tokens: number };
            },
        );
        assert.ok(chunks.every((c) => c.model === 'auto'));
        const finish = chunks.flatMap((c) => c.choices.map((x) => x.finish_reason)).filter((r) => r !== null);
        assert.equal(finish.length, 1);
        assert.ok(['stop', 'length', 'tool_calls'].includes(finish[0] as string));
        assert.equal(typeof chunks.at(-1)?.usage?.completion_tokens, 'number');
        const text = chunks.map((c) => c.choices[0]?.delta.content ?? '').join('');
        assert.equal(typeof text, 'string');
      });
    }
  });

  describe('GitHub Copilot inline completions', () => {
    const ghostText = {
      prompt: '// add two numbers\nfunction add(a, b) {\n  ',
      suffix: '\n}\n',
      max_tokens: 24,
      temperature: 0.2,
      top_p: 0.95,
      n: 3,
      stop: ['\n\n'],
      stream: true,
      nwo: 'octo/repo',
      extra: { language: 'javascript', next_indent: 0, trim_by_indentation: true },
    };

    it('decodes %3A in the engine, answers n: 3 choices as SSE with "data: " and blank lines, then [DONE]', async () => {
      const response = await post('/v1/engines/qwen2.5-coder%3A1.5b/completions', ghostText);
      assert.equal(response.status, 200);
      assert.match(response.headers.get('content-type') ?? '', /^text\/event-stream/);
      assert.equal(response.headers.get('x-bridge-model'), RIG_MODELS.simple);
      const raw = await response.text();
      const events = raw.split('\n\n');
      assert.equal(events.pop(), '', 'every event ends with a blank line');
      for (const event of events) assert.ok(event.startsWith('data: '), `event without "data: ": ${event.slice(0, 40)}`);
      assert.equal(events.at(-1), 'data: [DONE]');
      const finished = new Map<number, string>();
      for (const event of events.slice(0, -1)) {
        const data = JSON.parse(event.slice(6)) as { choices: Array<{ text: string; index: number; finish_reason: string | null }> };
        for (const choice of data.choices) {
          assert.equal(typeof choice.text, 'string');
          if (choice.finish_reason !== null) finished.set(choice.index, choice.finish_reason);
        }
      }
      assert.deepEqual([...finished.keys()].sort(), [0, 1, 2]);
      for (const reason of finished.values()) assert.ok(['stop', 'length'].includes(reason));
    });

    it('routes an engine name that is not a model (copilot-codex) to the simple tier', async () => {
      const response = await post('/v1/engines/copilot-codex/completions', { ...ghostText, n: 1 });
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('x-bridge-tier'), 'simple');
      assert.equal(response.headers.get('x-bridge-model'), RIG_MODELS.simple);
      assert.match(response.headers.get('x-bridge-route-reason') ?? '', /^simple: fill-in-the-middle completion/);
      assert.match(await response.text(), /data: \[DONE\]\n\n$/);
    });

    it('stops the generation on Ollama when Copilot cancels', async () => {
      const controller = new AbortController();
      const response = await post('/v1/engines/copilot-codex/completions', { ...ghostText, n: 1, stop: [], max_tokens: 100000 }, {}, controller.signal);
      const lines = readLines(response);
      assert.ok((await lines.next()).value);
      controller.abort();
      await lines.return(undefined).catch(() => undefined);
      const started = performance.now();
      const next = await fetch(`${ollama.url}/api/generate`, {
        method: 'POST',
        body: JSON.stringify({ model: RIG_MODELS.simple, prompt: 'x', stream: false, options: { num_predict: 2 } }),
        signal: AbortSignal.timeout(20_000),
      });
      assert.equal(((await next.json()) as { done: boolean }).done, true);
      assert.ok(performance.now() - started < 5000, 'the cancelled completion kept Ollama busy');
    });

    it('answers the language server’s side requests harmlessly', async () => {
      const health = (await (await fetch(`${bridge.url}/health`)).json()) as { status: string; uptimeSeconds: number };
      assert.equal(health.status, 'ok');
      assert.equal(typeof health.uptimeSeconds, 'number');
      const token = (await (await fetch(`${bridge.url}/copilot_internal/v2/token`)).json()) as { token: string; expires_at: number; refresh_in: number };
      assert.match(token.token, /^tid=copilot-bridge;exp=\d+;/);
      assert.ok(token.expires_at > Date.now() / 1000);
      assert.equal((await fetch(`${bridge.url}/copilot_internal/user`)).status, 200);
    });
  });

  describe('Continue', () => {
    it('reads the template and parameters from /api/show {"name"}, then fills in the middle', async () => {
      const show = (await (await post('/api/show', { name: RIG_MODELS.simple })).json()) as { template: string; parameters: string };
      assert.match(show.template, /\.Suffix/);
      assert.match(show.parameters, /num_ctx/);
      const response = await post('/api/generate', {
        model: RIG_MODELS.simple,
        prompt: 'def f(',
        suffix: '):\n    pass',
        options: { num_predict: 12 },
        keep_alive: '30m',
      });
      assert.equal(response.headers.get('content-type'), 'application/x-ndjson');
      const lines: Array<{ response: string; done: boolean; done_reason?: string }> = [];
      for await (const l of readLines(response)) lines.push(JSON.parse(l) as { response: string; done: boolean });
      assert.equal(lines.at(-1)?.done, true);
      assert.equal(lines.at(-1)?.done_reason, 'length');
      for (const l of lines) assert.equal(typeof l.response, 'string');
    });

    it('shows a virtual model with a template that says whether FIM works', async () => {
      const show = (await (await post('/api/show', { name: 'auto' })).json()) as { template: string; capabilities: string[] };
      assert.match(show.template, /\.Suffix/);
      assert.ok(show.capabilities.includes('insert'));
    });
  });

  describe('Zed', () => {
    it('gets /api/show for every listed model, and strict NDJSON lines from /api/chat with keep_alive -1', async () => {
      const tags = (await (await fetch(`${bridge.url}/api/tags`)).json()) as { models: Array<{ name: string }> };
      const shows = await Promise.all(tags.models.map((m) => post('/api/show', { model: m.name })));
      assert.deepEqual(
        shows.map((s) => s.status),
        tags.models.map(() => 200),
      );

      const response = await post('/api/chat', {
        model: 'bridge/simple',
        messages: [{ role: 'user', content: 'format this' }],
        keep_alive: -1,
        options: { num_predict: 30 },
      });
      assert.equal(response.headers.get('content-type'), 'application/x-ndjson');
      const lines: Array<Record<string, unknown>> = [];
      for await (const l of readLines(response)) lines.push(JSON.parse(l) as Record<string, unknown>);
      assert.ok(lines.length > 1);
      for (const l of lines) {
        assert.equal(l.model, 'bridge/simple');
        assert.equal(typeof l.created_at, 'string');
        const message = l.message as { role: string; content: string };
        assert.equal(message.role, 'assistant');
        assert.equal(typeof message.content, 'string');
        assert.equal(typeof l.done, 'boolean');
      }
      assert.equal(lines.at(-1)?.done, true);
    });
  });

  describe('tools with the real model', () => {
    it('accepts and answers a request carrying tools, on both surfaces', async () => {
      const tools = [{ type: 'function', function: { name: 'list_files', description: 'list files', parameters: { type: 'object', properties: {} } } }];
      const native = await post('/api/chat', {
        model: RIG_MODELS.complex,
        messages: [{ role: 'user', content: 'files?' }],
        tools,
        stream: false,
        options: { num_predict: 8 },
      });
      assert.equal(native.status, 200);
      assert.equal(((await native.json()) as { done: boolean }).done, true);
      const openai = await post('/v1/chat/completions', { model: RIG_MODELS.complex, messages: [{ role: 'user', content: 'files?' }], tools, max_tokens: 8 });
      assert.equal(openai.status, 200);
      const body = (await openai.json()) as { choices: Array<{ finish_reason: string }> };
      assert.ok(['stop', 'length', 'tool_calls'].includes(body.choices[0]?.finish_reason ?? ''));
    });
  });

  describe('model management through the facade', () => {
    it('creates, copies and deletes models on the backend, and the merged list follows', async () => {
      const created = await post('/api/create', { model: 'scratch:1', from: RIG_MODELS.simple, stream: false });
      assert.equal(created.status, 200);
      const copied = await post('/api/copy', { source: 'scratch:1', destination: 'scratch:2' });
      assert.equal(copied.status, 200);
      const names = async (): Promise<string[]> =>
        ((await (await fetch(`${bridge.url}/api/tags`)).json()) as { models: Array<{ model: string }> }).models.map((m) => m.model);
      assert.ok((await names()).includes('scratch:1'));
      assert.ok((await names()).includes('scratch:2'));
      for (const model of ['scratch:1', 'scratch:2']) {
        const deleted = await fetch(`${bridge.url}/api/delete`, { method: 'DELETE', body: JSON.stringify({ model }) });
        assert.equal(deleted.status, 200);
      }
      assert.ok(!(await names()).some((n) => n.startsWith('scratch:')));
      const again = await fetch(`${bridge.url}/api/delete`, { method: 'DELETE', body: JSON.stringify({ model: 'scratch:1' }) });
      assert.equal(again.status, 404);
      assert.deepEqual(await again.json(), { error: "model 'scratch:1' not found" });
    });

    it('serves the official ollama CLI (Go client: "model" and "name" both sent, one empty): show and rm', async () => {
      const lookup = findOllama();
      assert.ok('found' in lookup, 'the rig runs, so there is an ollama binary');
      // Asynchronous: the bridge answering the CLI runs in this process.
      const cli = (...args: string[]): Promise<{ status: number | null; out: string }> =>
        new Promise((resolve) => {
          execFile(
            lookup.found,
            args,
            { env: { PATH: process.env.PATH, HOME: tempDir('ollama-cli-home-'), OLLAMA_HOST: bridge.url }, timeout: 60_000 },
            (error, stdout, stderr) => {
              resolve({ status: error === null ? 0 : typeof error.code === 'number' ? error.code : null, out: `${stdout}${stderr}` });
            },
          );
        });
      const shown = await cli('show', RIG_MODELS.simple);
      assert.equal(shown.status, 0, shown.out);
      assert.match(shown.out, /architecture\s+llama/);
      assert.equal((await post('/api/copy', { source: RIG_MODELS.simple, destination: 'scratch:cli' })).status, 200);
      const removed = await cli('rm', 'scratch:cli');
      assert.equal(removed.status, 0, removed.out);
      const names = ((await (await fetch(`${bridge.url}/api/tags`)).json()) as { models: Array<{ model: string }> }).models.map((m) => m.model);
      assert.ok(!names.includes('scratch:cli'));
    });

    it('says which backend holds each loaded model in /api/ps, and serves the legacy /api/embeddings', async () => {
      await post('/api/generate', { model: RIG_MODELS.simple, prompt: '', stream: false });
      const ps = (await (await fetch(`${bridge.url}/api/ps`)).json()) as { models: Array<{ model: string; backend: string; gpu: unknown }> };
      // Both rig names share one file, so Ollama may list the runner under either name.
      assert.ok(ps.models.length > 0);
      for (const loaded of ps.models) {
        assert.ok(Object.values(RIG_MODELS).includes(loaded.model as (typeof RIG_MODELS)[keyof typeof RIG_MODELS]));
        assert.equal(loaded.backend, 'local');
        assert.equal(loaded.gpu, null);
      }
      const legacy = (await (await post('/api/embeddings', { model: RIG_MODELS.simple, prompt: 'alpha' })).json()) as { embedding: number[] };
      assert.equal(legacy.embedding.length, 64);
      // The virtual models both model lists show embed too, with their tier's model.
      const auto = await post('/api/embed', { model: 'auto', input: ['alpha'] });
      assert.equal(auto.status, 200);
      assert.equal(((await auto.json()) as { embeddings: number[][] }).embeddings[0]?.length, 64);
      const pinned = await post('/v1/embeddings', { model: 'bridge/complex', input: 'alpha', encoding_format: 'float' });
      assert.equal(pinned.status, 200);
      assert.equal(((await pinned.json()) as { data: Array<{ embedding: number[] }> }).data[0]?.embedding.length, 64);
    });

    it('rejects a malformed inline completion in OpenAI’s shape', async () => {
      const response = await post('/v1/engines/copilot-codex/completions', { prompt: 42 });
      assert.equal(response.status, 400);
      const body = (await response.json()) as { error: { type: string; param: string } };
      assert.equal(body.error.type, 'invalid_request_error');
      assert.equal(body.error.param, 'prompt');
    });
  });

  describe('OpenAI surface extras', () => {
    it('serves /v1/models/{id} for real and virtual models, 404 in OpenAI’s shape otherwise', async () => {
      const real = (await (await fetch(`${bridge.url}/v1/models/${RIG_MODELS.simple}`)).json()) as { id: string; object: string };
      assert.deepEqual([real.id, real.object], [RIG_MODELS.simple, 'model']);
      const virtual = (await (await fetch(`${bridge.url}/v1/models/bridge/complex`)).json()) as { id: string; owned_by: string };
      assert.deepEqual([virtual.id, virtual.owned_by], ['bridge/complex', 'copilot-bridge']);
      const missing = await fetch(`${bridge.url}/v1/models/nope`);
      assert.equal(missing.status, 404);
      assert.deepEqual(await missing.json(), {
        error: { message: "The model 'nope' does not exist", type: 'not_found_error', param: 'model', code: 'model_not_found' },
      });
    });

    it('serves /v1/completions streaming and not', async () => {
      const whole = (await (await post('/v1/completions', { model: RIG_MODELS.simple, prompt: 'x', max_tokens: 5 })).json()) as {
        object: string;
        choices: Array<{ finish_reason: string }>;
        usage: { completion_tokens: number };
      };
      assert.equal(whole.object, 'text_completion');
      assert.equal(whole.choices[0]?.finish_reason, 'length');
      assert.equal(whole.usage.completion_tokens, 5);
    });
  });
});
