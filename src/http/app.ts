import { randomUUID } from 'node:crypto';
import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import type { Express } from 'express';
import type { ApiRoute } from '../api/call.js';
import type { ApiContext } from '../api/context.js';
import { anthropicHotRoutes } from '../api/anthropic/routes.js';
import { copilotHotRoutes } from '../api/copilot/routes.js';
import { asBridgeError, sendError, surfaceOf } from '../api/errors.js';
import { ollamaHotRoutes } from '../api/ollama/routes.js';
import { openAiHotRoutes } from '../api/openai/routes.js';
import type { Config } from '../config/schema.js';
import type { ControlDeps } from '../control/routes.js';
import type { Logger } from '../log.js';
import { BodyError } from './body.js';
import { fastPath } from './fast.js';
import { guardRequest } from './guard.js';
import type { Authenticator } from '../auth/authenticate.js';
import type { Limiter } from '../auth/limits.js';
import { admit, authorize } from './auth.js';
import { beginRequest, requestOf } from '../api/request.js';
import { BridgeError, type RequestCounters, type RequestEnd, type RequestRecord } from '../contract/index.js';
export type { RequestCounters } from '../contract/index.js';

/** Called once per request when its connection closes, finished or not, with its record complete. */
export type RequestFinished = (request: RequestRecord & { end: RequestEnd }) => void;

/** Request fields that carry the prompt's text, in any surface's request shape. */
const PROMPT_FIELDS = ['system', 'instructions', 'messages', 'prompt', 'suffix', 'input'] as const;

/** The prompt and answer text of a request, for a log that opted in (monitoring.logging.log_prompts). */
function conversationOf(req: { body?: unknown }, request: RequestRecord): { prompt?: Record<string, unknown>; answer?: unknown } {
  const body = req.body as Record<string, unknown> | undefined;
  const prompt =
    typeof body === 'object' && body !== null ? Object.fromEntries(PROMPT_FIELDS.filter((f) => body[f] !== undefined).map((f) => [f, body[f]])) : {};
  const answer = request.generation?.answer;
  return { ...(Object.keys(prompt).length > 0 ? { prompt } : {}), ...(answer ? { answer } : {}) };
}

/** What a request id from outside may be: nginx's $request_id, HAProxy's unique-id, a UUID; nothing that could forge a log line. */
const SANE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** The balancer's or client's X-Request-Id when it is sane, so its log and the bridge's can be joined; else one of the bridge's own. */
function requestIdOf(req: IncomingMessage): string {
  const given = req.headers['x-request-id'];
  return typeof given === 'string' && SANE_REQUEST_ID.test(given) ? given : randomUUID();
}

/** The parsed body is on the request by the time it closes (express's req.body, or set by the fast path). */
export type BeginRequest = (req: IncomingMessage & { body?: unknown }, res: ServerResponse, path: string) => void;

/** Starts each request's record, its id header and the counters; when it closes: history, metrics and the log line. */
function requestLog(log: Logger, counters: RequestCounters, onFinished: RequestFinished, logPrompts: boolean): BeginRequest {
  return (req, res, path) => {
    const started = performance.now();
    const request = beginRequest(req, requestIdOf(req), path);
    counters.total += 1;
    counters.inFlight += 1;
    res.setHeader('x-request-id', request.id);
    res.once('close', () => {
      counters.inFlight -= 1;
      const end: RequestEnd = { status: res.statusCode, totalMs: performance.now() - started, completed: res.writableFinished };
      request.end = end;
      onFinished({ ...request, end });
      // A failure of the bridge's own side is a warning: it shows with LOG_LEVEL=warn and among warnings.
      const level = end.status >= 500 ? 'warn' : 'info';
      if (!log.isLevelEnabled(level)) return;
      const { generation } = request;
      // Method, path and outcome only: request and answer text stay out of the log unless asked for.
      log[level](
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
          ...(logPrompts ? conversationOf(req, request) : {}),
        },
        'request',
      );
    });
  };
}

/** A body the reader refused, as the error the client reads. */
function bodyError(error: BodyError, limitMb: number): BridgeError {
  switch (error.type) {
    case 'entity.too.large':
      return new BridgeError(413, `request body is larger than ${limitMb} MiB (server.body_limit_mb)`, { code: 'request_too_large', cause: error });
    case 'entity.parse.failed':
    case 'entity.decode.failed':
      return new BridgeError(400, `request body is not valid JSON: ${error.message}`, { code: 'invalid_json', cause: error });
    case 'request.timeout':
      return new BridgeError(408, `${error.message} (server.request_timeout_seconds)`, { code: 'request_timeout', cause: error });
    default:
      return new BridgeError(415, error.message, { code: 'unsupported_encoding', cause: error });
  }
}

export type AnswerError = (thrown: unknown, req: IncomingMessage, res: ServerResponse) => void;

/**
 * A percent-encoding that does not decode (`%ZZ`, overlong UTF-8 such as `%c0%ae`): Express
 * reports it from a route parameter, its static file server from a file path, both with status 400.
 */
function malformedUrl(thrown: unknown): BridgeError | undefined {
  const status = (thrown as { status?: unknown } | null)?.status;
  if (thrown instanceof BridgeError || (!(thrown instanceof URIError) && status !== 400)) return undefined;
  return new BridgeError(400, 'the URL is not valid: it has a percent-encoding that does not decode', { code: 'invalid_url', cause: thrown });
}

/**
 * The one place where what a handler threw becomes an answer: a BridgeError in the shape of the
 * request's surface, anything unexpected logged and answered as a bare 500.
 */
function errorBoundary(config: Config, log: Logger): AnswerError {
  return (thrown, req, res) => {
    if (thrown instanceof BodyError && thrown.type === 'request.aborted') {
      // The client left while sending its body: nobody to answer.
      res.destroy();
      return;
    }
    const error = thrown instanceof BodyError ? bodyError(thrown, config.server.body_limit_mb) : (malformedUrl(thrown) ?? asBridgeError(thrown));
    if (!(thrown instanceof BridgeError) && !(thrown instanceof BodyError) && error.status >= 500)
      log.error({ err: thrown, path: requestOf(req).path }, 'unhandled error');
    // The rest of an oversized, trickling or undecodable body is not worth reading: the connection
    // goes (left open, a later request on it would wait behind bytes nobody reads).
    if (error.status === 413 || error.status === 408 || (thrown instanceof BodyError && thrown.type === 'entity.decode.failed'))
      res.setHeader('connection', 'close');
    sendError(res, requestOf(req).surface, error);
  };
}

export interface AppParts {
  counters: RequestCounters;
  /** What the bridge's own API (state, actions, history) reads and runs. */
  control: ControlDeps;
  /** Liveness, readiness and metrics. */
  observability: ApiRoute[];
  /** The built dashboard, served at /ui; default: dist/ui. */
  uiDir: string | undefined;
  onFinished: RequestFinished;
  authenticator: Authenticator;
  limiter: Limiter;
}

/** The client API routes every editor calls all the time, served by the fast path. */
function hotRoutes(context: ApiContext): ApiRoute[] {
  return [...ollamaHotRoutes(context), ...openAiHotRoutes(context), ...anthropicHotRoutes(context), ...copilotHotRoutes(context)];
}

/**
 * The HTTP surface of the bridge: guards, the client APIs and error shapes. The hot client routes
 * and the health and metrics routes go through the fast path (src/http/fast.ts); everything else
 * through express, which loads with the first request that needs it (a headless bridge serving
 * editors, polled by a load balancer and scraped by Prometheus never does). With `fastPath: false`
 * express serves every request (the two answer alike, which a test holds them to).
 */
export function createRequestListener(context: ApiContext, parts: AppParts, options: { fastPath?: boolean } = {}): RequestListener {
  const { config, log } = context;
  const begin = requestLog(log, parts.counters, parts.onFinished, config.monitoring.logging.log_prompts);
  const answerError = errorBoundary(config, log);
  let app: Promise<Express> | undefined;
  const viaExpress = (req: IncomingMessage, res: ServerResponse): void => {
    app ??= import('./express-app.js').then(({ createApp }) => createApp(context, parts, begin, answerError));
    app.then(
      (handle) => {
        // A client that left while express loaded is not served (its 'close' has passed unseen).
        if (!res.destroyed) handle(req, res);
      },
      (error: unknown) => {
        // Tried again with the next request; this one gets a 500 in its surface's shape.
        app = undefined;
        log.error({ err: error }, 'could not load the HTTP app');
        sendError(res, surfaceOf(req.url ?? '/', req.headers), new BridgeError(500, 'the HTTP app could not be loaded'));
      },
    );
  };
  if (options.fastPath === false) return viaExpress;
  const fast = fastPath([...hotRoutes(context), ...parts.observability], {
    begin,
    allowed: guardRequest(config),
    authorize: (req, res, path) => authorize(parts.authenticator, req, res, path),
    admit: (req, res, path) => admit(parts.limiter, req, res, path),
    bodyLimit: Math.round(config.server.body_limit_mb * 1024 * 1024),
    bodyTimeoutMs: config.server.request_timeout_seconds * 1000,
    answerError,
  });
  return (req, res) => {
    if (!fast(req, res)) viaExpress(req, res);
  };
}
