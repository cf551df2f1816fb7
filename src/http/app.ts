import { randomUUID } from 'node:crypto';
import express, { type ErrorRequestHandler, type Express, type Request, type RequestHandler, type Response, type Router } from 'express';
import { primaryOf, type ApiContext } from '../api/context.js';
import { anthropicRoutes } from '../api/anthropic/routes.js';
import { copilotRoutes } from '../api/copilot/routes.js';
import { sendError, surfaceOf } from '../api/errors.js';
import { ollamaRoutes } from '../api/ollama/routes.js';
import { openAiRoutes } from '../api/openai/routes.js';
import { passthrough } from '../api/passthrough.js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import { jsonBody } from './body.js';
import type { Authenticator } from '../auth/authenticate.js';
import type { Limiter } from '../auth/limits.js';
import { authenticate, limits } from './auth.js';
import { guard } from './guard.js';
import type { RequestCounters } from '../control/api-types.js';
export type { RequestCounters } from '../control/api-types.js';


/** Called once per request when its connection closes, finished or not. */
export type RequestFinished = (req: Request, res: Response, startedAt: Date, totalMs: number) => void;

function requestLog(log: Logger, counters: RequestCounters, onFinished: RequestFinished): RequestHandler {
  return (req, res, next) => {
    const started = performance.now();
    const startedAt = new Date();
    // Mounted routers rewrite req.path on the way; the log wants what the client asked for.
    const path = req.path;
    const id = randomUUID();
    counters.total += 1;
    counters.inFlight += 1;
    res.setHeader('x-request-id', id);
    res.once('close', () => {
      counters.inFlight -= 1;
      const totalMs = performance.now() - started;
      onFinished(req, res, startedAt, totalMs);
      // Method, path and outcome only: request and answer bodies stay out of the log.
      log.info(
        {
          id,
          method: req.method,
          path,
          status: res.statusCode,
          ms: Math.round(totalMs * 10) / 10,
          backend: res.locals.backend,
          model: res.locals.generation?.route.model,
          tier: res.locals.generation?.route.tier,
          retries: res.locals.generation?.retries,
          fallback: res.locals.generation?.fallback,
          upstreamError: res.locals.upstreamError ?? res.locals.generation?.error ?? undefined,
          relay: res.locals.relay,
          completed: res.writableFinished,
          userAgent: req.headers['user-agent'],
        },
        'request',
      );
    });
    next();
  };
}

function bodyErrors(config: Config): ErrorRequestHandler {
  return (error: unknown, req, res, next) => {
    const surface = surfaceOf(req.path);
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
    next(error);
  };
}

function lastResort(log: Logger): ErrorRequestHandler {
  return (error: unknown, req, res, _next) => {
    log.error({ err: error, path: req.path }, 'unhandled error');
    sendError(res, surfaceOf(req.path), 500, 'internal error in copilot-bridge', 'internal_error');
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
  authenticator: Authenticator;
  limiter: Limiter;
}

/** The HTTP surface of the bridge: guards, the client APIs and error shapes. */
export function createApp(context: ApiContext, parts: AppParts): Express {
  const { config, log } = context;
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use(requestLog(log, parts.counters, parts.onFinished));
  app.use(guard(config));
  app.use(authenticate(parts.authenticator));
  const toPrimary = passthrough(() => primaryOf(context), () => context.catalog.invalidate());
  // Model blobs (ollama create) are large binaries: streamed through, never parsed or size-limited.
  app.all('/api/blobs/*digest', toPrimary);
  app.use(jsonBody(Math.round(config.server.body_limit_mb * 1024 * 1024)));
  app.use(limits(parts.limiter));
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
  app.use(bodyErrors(config));
  app.use(lastResort(log));
  return app;
}
