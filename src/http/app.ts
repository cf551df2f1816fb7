import { randomUUID } from 'node:crypto';
import type { RequestListener, ServerResponse } from 'node:http';
import express, { type ErrorRequestHandler, type Express, type Router } from 'express';
import type { ApiRequest, ApiResponse, ApiRoute } from '../api/call.js';
import type { GenerationOutcome } from '../api/generation.js';
import { primaryOf, type ApiContext } from '../api/context.js';
import { anthropicHotRoutes, anthropicRoutes } from '../api/anthropic/routes.js';
import { copilotHotRoutes, copilotRoutes } from '../api/copilot/routes.js';
import { sendError, surfaceOf } from '../api/errors.js';
import { ollamaHotRoutes, ollamaRoutes } from '../api/ollama/routes.js';
import { openAiHotRoutes, openAiRoutes } from '../api/openai/routes.js';
import { passthrough } from '../api/passthrough.js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import { jsonBody } from './body.js';
import { fastPath } from './fast.js';
import { guard, guardRequest } from './guard.js';
import type { RequestCounters } from '../control/api-types.js';
export type { RequestCounters } from '../control/api-types.js';


/** Called once per request when its connection closes, finished or not. */
export type RequestFinished = (req: ApiRequest, res: ApiResponse, startedAt: Date, totalMs: number) => void;

type BeginRequest = (req: ApiRequest, res: ApiResponse, path: string) => void;

/** Starts each request's record: its id header and the counters; when it closes, history, metrics and the log line. */
function requestLog(log: Logger, counters: RequestCounters, onFinished: RequestFinished): BeginRequest {
  return (req, res, path) => {
    const started = performance.now();
    const startedAt = new Date();
    const id = randomUUID();
    counters.total += 1;
    counters.inFlight += 1;
    res.setHeader('x-request-id', id);
    res.once('close', () => {
      counters.inFlight -= 1;
      const totalMs = performance.now() - started;
      onFinished(req, res, startedAt, totalMs);
      if (!log.isLevelEnabled('info')) return;
      const generation = res.locals.generation as GenerationOutcome | undefined;
      // Method, path and outcome only: request and answer bodies stay out of the log.
      log.info(
        {
          id,
          method: req.method,
          path,
          status: res.statusCode,
          ms: Math.round(totalMs * 10) / 10,
          backend: res.locals.backend,
          model: generation?.route.model,
          tier: generation?.route.tier,
          retries: generation?.retries,
          fallback: generation?.fallback,
          upstreamError: res.locals.upstreamError ?? generation?.error ?? undefined,
          relay: res.locals.relay,
          completed: res.writableFinished,
          userAgent: req.headers['user-agent'],
        },
        'request',
      );
    });
  };
}

type AnswerError = (error: unknown, res: ServerResponse, path: string) => void;

/** Where an error thrown while serving a request (or reading its body) becomes an answer in the surface's shape. */
function errorBoundary(config: Config, log: Logger): AnswerError {
  return (error, res, path) => {
    const surface = surfaceOf(path);
    const type = (error as { type?: unknown }).type;
    if (type === 'entity.too.large') {
      res.setHeader('connection', 'close');
      sendError(res, surface, 413, `request body is larger than ${config.server.body_limit_mb} MiB (server.body_limit_mb)`, 'request_too_large');
      return;
    }
    if (type === 'entity.parse.failed') {
      const detail = error instanceof Error ? error.message : 'parse error';
      sendError(res, surface, 400, `request body is not valid JSON: ${detail}`, 'invalid_json');
      return;
    }
    if (type === 'request.aborted') {
      // The client left while sending its body: nobody to answer.
      res.destroy();
      return;
    }
    if (type === 'encoding.unsupported' || type === 'charset.unsupported') {
      sendError(res, surface, 415, error instanceof Error ? error.message : 'unsupported body encoding', 'unsupported_encoding');
      return;
    }
    log.error({ err: error, path }, 'unhandled error');
    sendError(res, surface, 500, 'internal error in copilot-bridge', 'internal_error');
  };
}

export interface AppParts {
  counters: RequestCounters;
  /** The bridge's own API (state, actions) and liveness/readiness/metrics. */
  control: Router;
  observability: Router;
  /** The dashboard's static files at /ui. */
  ui: Router;
  onFinished: RequestFinished;
}

/** The client API routes every editor calls all the time, served by the fast path. */
function hotRoutes(context: ApiContext): ApiRoute[] {
  return [...ollamaHotRoutes(context), ...openAiHotRoutes(context), ...anthropicHotRoutes(context), ...copilotHotRoutes(context)];
}

/** The express app: every route, the hot ones included, with the same steps the fast path takes. */
function createApp(context: ApiContext, parts: AppParts, begin: BeginRequest, answerError: AnswerError): Express {
  const { config } = context;
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use((req, res, next) => {
    // Mounted routers rewrite req.path on the way; the log wants what the client asked for.
    begin(req, res, req.path);
    next();
  });
  app.use(guard(config));
  const toPrimary = passthrough(() => primaryOf(context), () => context.catalog.invalidate());
  // Model blobs (ollama create) are large binaries: streamed through, never parsed or size-limited.
  app.all('/api/blobs/*digest', toPrimary);
  app.use(jsonBody(Math.round(config.server.body_limit_mb * 1024 * 1024)));
  // The client APIs first: they carry every keystroke, and each router passed costs time.
  app.use(ollamaRoutes(context));
  app.use(openAiRoutes(context));
  app.use(anthropicRoutes(context));
  app.use(copilotRoutes(context));
  app.use(parts.control);
  app.use(parts.observability);
  app.use(parts.ui);
  // The rest of Ollama's native API (push, tokenize, ...) goes to the primary as it is.
  app.all('/api/*rest', toPrimary);

  app.use((req, res) => {
    sendError(res, surfaceOf(req.path), 404, `no such endpoint: ${req.method} ${req.path}`, 'not_found');
  });
  app.use(((error, req, res, _next) => answerError(error, res, req.path)) satisfies ErrorRequestHandler);
  return app;
}

/**
 * The HTTP surface of the bridge: guards, the client APIs and error shapes. The hot client routes
 * go through the fast path (src/http/fast.ts) and everything else through express; `fastPath:
 * false` sends every request through express (the two answer alike, which a test holds them to).
 */
export function createRequestListener(context: ApiContext, parts: AppParts, options: { fastPath?: boolean } = {}): RequestListener {
  const { config, log } = context;
  const begin = requestLog(log, parts.counters, parts.onFinished);
  const answerError = errorBoundary(config, log);
  const app = createApp(context, parts, begin, answerError);
  if (options.fastPath === false) return app;
  const fast = fastPath(hotRoutes(context), {
    begin,
    allowed: guardRequest(config),
    bodyLimit: Math.round(config.server.body_limit_mb * 1024 * 1024),
    answerError,
  });
  return (req, res) => {
    if (!fast(req, res)) app(req, res);
  };
}
