import type { Request, Response } from 'express';
import type { Dispatcher } from 'undici';
import { RouteError, type RouteDecision, type RouteInput, type Router } from '../routing/router.js';
import { errorMessageOf, toUpstreamError, UpstreamError } from '../upstream/errors.js';
import { readNdjson, type OllamaChunk, type OllamaToolCall } from '../upstream/ollama-api.js';
import { sendError, surfaceOf, type Surface } from './errors.js';

const surfaceOfRequest = (req: Request): Surface => surfaceOf(req.path);

/** Everything one choice of a generation produced, for answers that are not streamed. */
export interface GenerationResult {
  content: string;
  thinking: string;
  toolCalls: OllamaToolCall[];
  /** The last upstream line: done_reason, token counts and durations. */
  final: OllamaChunk;
}

/** How one surface writes a generation: its streaming form, its whole-answer form, its error form. */
export interface ResponseFormat {
  streamContentType: string;
  /** Text for one upstream line of choice `index` ('' to write nothing). */
  chunk(event: OllamaChunk, index: number): string;
  /** Text after every choice finished. */
  end(results: readonly GenerationResult[]): string;
  /** The last text of a stream that broke after it started. */
  error(message: string, code: string): string;
  /** The answer for a client that did not ask for a stream. */
  whole(results: readonly GenerationResult[]): unknown;
}

export interface GenerationPlan {
  surface: Surface;
  path: '/api/chat' | '/api/generate';
  /** One native Ollama request body per choice (n > 1 runs several); model and stream are set here. */
  bodies: ReadonlyArray<Record<string, unknown>>;
  stream: boolean;
  format: ResponseFormat;
}

/** Response headers that say how the request was routed. */
export function setRouteHeaders(res: Response, route: RouteDecision): void {
  const safe = (text: string): string => text.replace(/[^\x20-\x7e]/g, '?');
  res.setHeader('x-bridge-model', safe(route.model));
  res.setHeader('x-bridge-backend', safe(route.backend.name));
  res.setHeader('x-bridge-tier', route.tier ?? 'none');
  res.setHeader('x-bridge-route-reason', safe(route.reason));
}

/** Yields [index, value] from several async iterators as each produces, until all are done. */
async function* mergeStreams<T>(iterators: Array<AsyncIterator<T>>): AsyncGenerator<[number, T], void, undefined> {
  const pending = new Map<number, Promise<[number, IteratorResult<T>]>>();
  const pull = (index: number): void => {
    pending.set(index, (iterators[index] as AsyncIterator<T>).next().then((result) => [index, result]));
  };
  iterators.forEach((_, index) => pull(index));
  try {
    while (pending.size > 0) {
      const [index, result] = await Promise.race(pending.values());
      if (result.done === true) {
        pending.delete(index);
        continue;
      }
      pull(index);
      yield [index, result.value];
    }
  } finally {
    // The consumer stopped early (client gone, upstream error): reads still pending will reject on abort.
    for (const read of pending.values()) read.catch(() => undefined);
  }
}

function emptyResult(): GenerationResult {
  return { content: '', thinking: '', toolCalls: [], final: {} };
}

function accumulate(result: GenerationResult, event: OllamaChunk): void {
  result.content += event.message?.content ?? event.response ?? '';
  result.thinking += event.message?.thinking ?? event.thinking ?? '';
  if (event.message?.tool_calls) result.toolCalls.push(...event.message.tool_calls);
  result.final = event;
}

function write(res: Response, text: string): Promise<void> | undefined {
  if (text === '' || res.write(text)) return undefined;
  // Back-pressure: stop pulling from the upstream until the client socket drains.
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

/**
 * Runs a generation on the routed backend and writes it in the surface's format. The upstream is
 * always asked to stream: the answer is forwarded line by line, or gathered for `stream: false`.
 * Headers go out only with the first upstream line, so an upstream that fails before it answered
 * still gets a proper status.
 */
export async function serveGeneration(req: Request, res: Response, route: RouteDecision, plan: GenerationPlan): Promise<void> {
  const abort = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) abort.abort();
  });
  res.locals.backend = route.backend.name;
  res.locals.route = route;

  let responses: Dispatcher.ResponseData[];
  try {
    responses = await Promise.all(
      plan.bodies.map((body) =>
        route.backend.request({
          method: 'POST',
          path: plan.path,
          headers: { 'content-type': 'application/json', accept: 'application/x-ndjson', 'user-agent': req.headers['user-agent'] ?? 'copilot-bridge' },
          body: JSON.stringify({ ...body, model: route.model, stream: true }),
          signal: abort.signal,
        }),
      ),
    );
  } catch (error) {
    abort.abort();
    if (res.destroyed) return;
    const failure = toUpstreamError(error, route.backend.name);
    res.locals.upstreamError = failure.code;
    sendError(res, plan.surface, failure.status, failure.message, failure.code);
    return;
  }

  const failed = responses.find((r) => r.statusCode >= 400);
  if (failed !== undefined) {
    const text = await failed.body.text().catch(() => '');
    abort.abort();
    setRouteHeaders(res, route);
    sendError(res, plan.surface, failed.statusCode, errorMessageOf(failed.statusCode, text), failed.statusCode === 404 ? 'model_not_found' : undefined);
    return;
  }

  const results = plan.bodies.map(emptyResult);
  let started = false;
  const begin = (): void => {
    started = true;
    setRouteHeaders(res, route);
    if (plan.stream) {
      res.status(200);
      res.setHeader('content-type', plan.format.streamContentType);
      res.setHeader('cache-control', 'no-cache');
      res.flushHeaders();
    }
  };
  const fail = (message: string, code: string): void => {
    if (res.destroyed) return;
    res.locals.upstreamError = code;
    if (plan.stream && started) res.end(plan.format.error(message, code));
    else sendError(res, plan.surface, 502, message, code);
  };

  try {
    for await (const [index, event] of mergeStreams(responses.map((r) => readNdjson(r.body)))) {
      if (!started) begin();
      if (typeof event.error === 'string') {
        abort.abort();
        fail(event.error, 'upstream_error');
        return;
      }
      accumulate(results[index] as GenerationResult, event);
      if (plan.stream) await write(res, plan.format.chunk(event, index));
      if (res.destroyed) return;
    }
  } catch (error) {
    if (abort.signal.aborted || res.destroyed) return;
    abort.abort();
    const failure = error instanceof SyntaxError ? new UpstreamError('unreachable', route.backend.name, `backend ${route.backend.name} sent a line that is not JSON`) : toUpstreamError(error, route.backend.name);
    fail(failure.message, failure.code);
    return;
  }
  res.locals.results = results;
  if (!started) begin();
  if (plan.stream) res.end(plan.format.end(results));
  else res.status(200).json(plan.format.whole(results));
}

/**
 * Routes a generation and serves it. The plan may depend on the route (for example whether the
 * chosen model can fill in the middle). A routing refusal answers in the surface's error form.
 */
export async function routeAndServe(
  router: Router,
  req: Request,
  res: Response,
  input: RouteInput,
  plan: GenerationPlan | ((route: RouteDecision) => Promise<GenerationPlan>),
): Promise<void> {
  const surface = typeof plan === 'function' ? surfaceOfRequest(req) : plan.surface;
  let route: RouteDecision;
  try {
    route = await router.route(input);
  } catch (error) {
    if (error instanceof RouteError) {
      sendError(res, surface, error.status, error.message, 'model_not_found');
      return;
    }
    throw error;
  }
  await serveGeneration(req, res, route, typeof plan === 'function' ? await plan(route) : plan);
}
