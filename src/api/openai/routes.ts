import type { Router as ExpressRouter } from 'express';
import { mountRoutes, sendJson, type ApiHandler, type ApiRoute } from '../call.js';
import { fromAnthropicClient } from '../errors.js';
import { z } from 'zod';
import { VIRTUAL_MODELS } from '../../routing/router.js';
import { BridgeError, jsonOf } from '../../contract/index.js';
import { errorMessageOf, toUpstreamError, UpstreamError, UpstreamStatusError } from '../../upstream/errors.js';
import { countOf } from '../../upstream/ollama-api.js';
import { limitsFrom } from '../../upstream/backend.js';
import { readText } from '../../upstream/lines.js';
import { admitRelayed } from '../admit.js';
import type { ApiContext } from '../context.js';
import { serveChat } from '../chat-plan.js';
import { modelOffered, requireModelAllowed, requireModelOffered } from '../generation.js';
import { identityOf, requestOf } from '../request.js';
import { thinkFromEffort } from '../thinking.js';
import { parseBody } from '../validate.js';
import { chatRequestSchema, openAiChatFormat, toOllamaChat } from './chat.js';
import { completionRequestSchema, serveCompletion } from './completions.js';
import { responsesFormat, responsesRequestSchema, responsesThink, statelessProblem, toOllamaChat as responsesToOllama } from './responses.js';

/** OpenAI's limit on the texts of one embedding request. */
const MAX_EMBEDDING_INPUTS = 2048;

/** Room in Ollama's answer for one vector: up to 8192 float32 values as Go writes them (15 characters at most, and a comma). */
const VECTOR_ANSWER_BYTES = 8192 * 16;

const embeddingRequest = z.looseObject({
  model: z.string({ error: 'you must provide a model parameter' }).min(1),
  // Not empty, as OpenAI requires: Ollama embeds an empty text as no vector at all.
  input: z.union([z.string().min(1, 'must not be an empty text'), z.array(z.string().min(1, 'must not be an empty text')).min(1).max(MAX_EMBEDDING_INPUTS)], {
    error: 'input must be a string or an array of strings',
  }),
  encoding_format: z.enum(['float', 'base64']).nullish(),
  dimensions: z.number().int().positive().nullish(),
});

/** Float32 little-endian bytes in base64: what OpenAI SDKs decode when they asked for base64 (their default). */
function toBase64(vector: readonly number[]): string {
  return Buffer.from(Float32Array.from(vector).buffer).toString('base64');
}

interface EmbedAnswer {
  embeddings: number[][];
  prompt_eval_count?: unknown;
}

/** Ollama's /api/embed answer, or undefined when it is not one (not JSON, no list of number vectors). */
function embedAnswerOf(text: string): EmbedAnswer | undefined {
  const answer = jsonOf(text);
  const embeddings = (answer as { embeddings?: unknown } | null)?.embeddings;
  const vectors = Array.isArray(embeddings) && embeddings.every((vector) => Array.isArray(vector) && vector.every((x) => typeof x === 'number'));
  return vectors ? (answer as EmbedAnswer) : undefined;
}

/** What is wrong with embeddings answered for `inputs` texts: one vector each, all of one width. */
function mismatchOf(embeddings: readonly number[][], inputs: number): string | undefined {
  if (embeddings.length !== inputs) return `sent ${embeddings.length} embeddings for ${inputs} inputs`;
  const width = embeddings[0]?.length ?? 0;
  return width > 0 && embeddings.every((vector) => vector.length === width) ? undefined : 'sent embeddings of different widths or none';
}

/** A vector cut to its first `dimensions` values and scaled back to unit length, as OpenAI and newer Ollama answer `dimensions`. */
function cutTo(vector: readonly number[], dimensions: number): number[] {
  const cut = vector.slice(0, dimensions);
  const length = Math.sqrt(cut.reduce((sum, x) => sum + x * x, 0));
  return length === 0 ? cut : cut.map((x) => x / length);
}

/**
 * The vectors at the width the client asked for. Ollama 0.11 ignores `dimensions` and answers the
 * model's whole width; a model narrower than asked is the client's mistake, as it is at OpenAI.
 */
function atDimensions(embeddings: number[][], dimensions: number | null | undefined, model: string): number[][] {
  const width = embeddings[0]?.length ?? 0;
  if (dimensions === null || dimensions === undefined || dimensions === width) return embeddings;
  if (dimensions > width)
    throw new BridgeError(400, `dimensions: ${model} has ${width} dimensions, fewer than the ${dimensions} asked for`, {
      code: 'invalid_request',
      param: 'dimensions',
    });
  return embeddings.map((vector) => cutTo(vector, dimensions));
}

interface ListedModel {
  id: string;
  object: 'model';
  created: number;
  owned_by: string;
}

/**
 * A model as Anthropic's Models API describes it. Anthropic clients send anthropic-version with
 * every request, and read only this shape from GET /v1/models: the Anthropic SDKs' models.list(),
 * Claude Code's gateway model discovery (its /model picker).
 */
interface AnthropicModel {
  type: 'model';
  id: string;
  display_name: string;
  created_at: string;
}

function asAnthropicModel(model: ListedModel): AnthropicModel {
  return { type: 'model', id: model.id, display_name: model.id, created_at: new Date(model.created * 1000).toISOString() };
}

/** The model list, or the gateway error when no backend could be asked. */
async function modelList(context: ApiContext): Promise<ListedModel[]> {
  const created = Math.floor(context.startedAt.getTime() / 1000);
  const virtual = VIRTUAL_MODELS.map((v) => ({ id: v.name, object: 'model' as const, created, owned_by: 'copilot-bridge' }));
  const listed = await context.catalog.models(true).catch((error: unknown) => {
    throw toUpstreamError(error, 'all');
  });
  const real = listed.map((m) => ({
    id: m.model,
    object: 'model' as const,
    created: Math.floor((Date.parse(m.modified_at) || 0) / 1000),
    owned_by: 'library',
  }));
  return [...virtual, ...real];
}

/** The routes every editor calls all the time: generations and the model list. */
export function openAiHotRoutes(context: ApiContext): ApiRoute[] {
  const models: ApiHandler = async (req, res) => {
    const identity = identityOf(req);
    const offered = (await modelList(context)).filter((m) => modelOffered(context.router, identity, m.id));
    if (fromAnthropicClient(req.headers)) {
      // Every model on one page: Claude Code asks for limit=1000, and the bridge's list is short.
      const data = offered.map(asAnthropicModel);
      sendJson(res, 200, { data, has_more: false, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null });
      return;
    }
    sendJson(res, 200, { object: 'list', data: offered });
  };

  const chat: ApiHandler = async (req, res) => {
    const request = parseBody(chatRequestSchema, req);
    await serveChat(context, req, res, () => ({
      requestedModel: request.model,
      body: toOllamaChat(request),
      notes: [],
      think: thinkFromEffort(request.reasoning_effort),
      stream: request.stream === true,
      choices: request.n ?? 1,
      format: openAiChatFormat(request.model, request.stream_options?.include_usage === true, request.parallel_tool_calls !== false),
    }));
  };

  const responses: ApiHandler = async (req, res) => {
    const request = parseBody(responsesRequestSchema, req);
    const problem = statelessProblem(request);
    if (problem !== undefined) throw new BridgeError(400, problem.message, { code: 'unsupported_parameter', param: problem.param });
    await serveChat(context, req, res, () => ({
      requestedModel: request.model,
      ...responsesToOllama(request),
      think: responsesThink(request),
      stream: request.stream === true,
      format: responsesFormat(request),
    }));
  };

  const completions: ApiHandler = async (req, res) => {
    const request = parseBody(completionRequestSchema, req);
    if (request.model === undefined) throw new BridgeError(400, 'you must provide a model parameter', { code: 'invalid_request', param: 'model' });
    await serveCompletion(context, req, res, request.model, request, false);
  };

  return [
    { method: 'GET', path: '/v1/models', handler: models },
    { method: 'POST', path: '/v1/chat/completions', handler: chat },
    // Some Copilot Chat builds post to /chat/completions without the /v1 prefix.
    { method: 'POST', path: '/chat/completions', handler: chat },
    { method: 'POST', path: '/v1/responses', handler: responses },
    { method: 'POST', path: '/v1/completions', handler: completions },
  ];
}

/** Every route of this surface, mounted on `router`. */
export function openAiRoutes(context: ApiContext, router: ExpressRouter): ExpressRouter {
  mountRoutes(router, openAiHotRoutes(context));

  router.get('/v1/models/*id', async (req, res) => {
    const id = (req.params as { id: string[] }).id.join('/');
    requireModelOffered(req, context.router, id);
    const found = (await modelList(context)).find((m) => m.id === id || m.id === `${id}:latest`);
    if (found === undefined) throw new BridgeError(404, `The model '${id}' does not exist`, { code: 'model_not_found', param: 'model' });
    res.json(fromAnthropicClient(req.headers) ? asAnthropicModel(found) : found);
  });

  // Codex tries a WebSocket on GET /v1/responses first and falls back to POST on a plain error answer.
  router.get('/v1/responses', (_req, res) => {
    res.setHeader('connection', 'close');
    throw new BridgeError(404, 'the Responses API WebSocket mode is not supported here; use POST /v1/responses', { code: 'not_found' });
  });
  router.get('/v1/responses/*id', () => {
    throw new BridgeError(404, 'copilot-bridge keeps no responses (store: false)', { code: 'not_found' });
  });

  router.post('/v1/embeddings', async (req, res) => {
    const request = parseBody(embeddingRequest, req);
    const model = context.router.embeddingModel(request.model);
    requireModelAllowed(req, request.model, model);
    const backend = await admitRelayed(context, req, res, model);
    if (backend === undefined) return;
    requestOf(req).backend = backend.name;
    const inputs = typeof request.input === 'string' ? 1 : request.input.length;
    const abort = new AbortController();
    res.once('close', () => abort.abort());
    try {
      const upstream = await backend.request({
        method: 'POST',
        path: '/api/embed',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model, input: request.input, ...(request.dimensions ? { dimensions: request.dimensions } : {}) }),
        signal: abort.signal,
        model,
      });
      // The answer grows with the texts: a batch from a wide model is many times max_line_mb, and bounded by the count of texts.
      const text = await readText(upstream.body, limitsFrom(context.config).maxLineBytes + inputs * VECTOR_ANSWER_BYTES);
      if (upstream.statusCode >= 400) throw new UpstreamStatusError(upstream.statusCode, backend.name, errorMessageOf(upstream.statusCode, text));
      const answer = embedAnswerOf(text);
      if (answer === undefined) throw new UpstreamError('unreachable', backend.name, `${backend.name} sent an embedding answer without embeddings`);
      const mismatch = mismatchOf(answer.embeddings, inputs);
      // The client pairs vectors with its texts by index: a short or ragged list would pair them wrongly.
      if (mismatch !== undefined) throw new UpstreamError('unreachable', backend.name, `${backend.name} ${mismatch}`);
      const base64 = request.encoding_format === 'base64';
      res.json({
        object: 'list',
        data: atDimensions(answer.embeddings, request.dimensions, request.model).map((vector, index) => ({
          object: 'embedding',
          index,
          embedding: base64 ? toBase64(vector) : vector,
        })),
        model: request.model,
        usage: { prompt_tokens: countOf(answer.prompt_eval_count) ?? 0, total_tokens: countOf(answer.prompt_eval_count) ?? 0 },
      });
    } catch (error) {
      if (abort.signal.aborted) return;
      throw error instanceof BridgeError ? error : toUpstreamError(error, backend.name);
    }
  });

  return router;
}
