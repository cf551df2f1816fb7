import { randomUUID } from 'node:crypto';
import express, { type ErrorRequestHandler, type Express, type RequestHandler, type Router } from 'express';
import { primaryOf, type ApiContext } from '../api/context.js';
import { anthropicRoutes } from '../api/anthropic/routes.js';
import { copilotRoutes } from '../api/copilot/routes.js';
import { asBridgeError, sendError } from '../api/errors.js';
import { ollamaRoutes } from '../api/ollama/routes.js';
import { openAiRoutes } from '../api/openai/routes.js';
import { passthrough } from '../api/passthrough.js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import { BodyError, jsonBody } from './body.js';
import type { Authenticator } from '../auth/authenticate.js';
import type { Limiter } from '../auth/limits.js';
import { authenticate, limits } from './auth.js';
import { guard } from './guard.js';
import { beginRequest, requestOf } from '../api/request.js';
import { BridgeError, type RequestCounters, type RequestEnd, type RequestRecord } from '../contract/index.js';
export type { RequestCounters } from '../contract/index.js';


/** Called once per request when its connection closes, finished or not, with its record complete. */
export type RequestFinished = (request: RequestRecord & { end: RequestEnd }) => void;

function requestLog(log: Logger, counters: RequestCounters, onFinished: RequestFinished): RequestHandler {
  return (req, res, next) => {
    const started = performance.now();
    // Mounted routers rewrite req.path on the way; the record keeps what the client asked for.
    const request = beginRequest(req, randomUUID(), req.path);
    counters.total += 1;
    counters.inFlight += 1;
    res.setHeader('x-request-id', request.id);
    res.once('close', () => {
      counters.inFlight -= 1;
      const end: RequestEnd = { status: res.statusCode, totalMs: performance.now() - started, completed: res.writableFinished };
      request.end = end;
      onFinished({ ...request, end });
      const { generation } = request;
      // Method, path and outcome only: request and answer bodies stay out of the log.
      log.info(
        {
          id: request.id,
          method: request.method,
          path: request.path,
          status: end.status,
          ms: Math.round(end.totalMs * 10) / 10,
          backend: request.backend ?? undefined,
          model: generation?.model,
          tier: generation?.tier,
          retries: generation?.retries,
          fallback: generation?.fallback,
          upstreamError: request.upstreamError ?? generation?.error ?? undefined,
          relay: request.relay ?? undefined,
          completed: end.completed,
          userAgent: request.client.userAgent ?? undefined,
        },
        'request',
      );
    });
    next();
  };
}

/** A body the reader refused, as the error the client reads. */
function bodyError(error: BodyError, limitMb: number): BridgeError {
  switch (error.type) {
    case 'entity.too.large':
      return new BridgeError(413, `request body is larger than ${limitMb} MiB (server.body_limit_mb)`, { code: 'request_too_large', cause: error });
    case 'entity.parse.failed':
      return new BridgeError(400, `request body is not valid JSON: ${error.message}`, { code: 'invalid_json', cause: error });
    default:
      return new BridgeError(415, error.message, { code: 'unsupported_encoding', cause: error });
  }
}

/**
 * The one place where what a handler threw becomes an answer: a BridgeError in the shape of the
 * request's surface, anything unexpected logged and answered as a bare 500.
 */
function errorBoundary(config: Config, log: Logger): ErrorRequestHandler {
  return (thrown: unknown, req, res, _next) => {
    if (thrown instanceof BodyError && thrown.type === 'request.aborted') {
      // The client left while sending its body: nobody to answer.
      res.destroy();
      return;
    }
    const error = thrown instanceof BodyError ? bodyError(thrown, config.server.body_limit_mb) : asBridgeError(thrown);
    if (!(thrown instanceof BridgeError) && !(thrown instanceof BodyError)) log.error({ err: thrown, path: req.path }, 'unhandled error');
    // The rest of an oversized body is not worth reading: the connection goes.
    if (error.status === 413) res.setHeader('connection', 'close');
    sendError(res, requestOf(req).surface, error);
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

  app.use((req) => {
    throw new BridgeError(404, `no such endpoint: ${req.method} ${req.path}`, { code: 'not_found' });
  });
  app.use(errorBoundary(config, log));
  return app;
}
