import type { IncomingMessage, ServerResponse } from 'node:http';
import type { RequestHandler } from 'express';
import { whenClosed } from '../api/call.js';
import { refusedOutcome } from '../api/generation.js';
import { identityOf, requestOf } from '../api/request.js';
import { allowed, isGeneration, rolesFor } from '../auth/access.js';
import type { Authenticator } from '../auth/authenticate.js';
import { isRefusal, type Limiter } from '../auth/limits.js';
import { BridgeError } from '../contract/index.js';

const CHALLENGE = 'Bearer realm="copilot-bridge"';

/**
 * Who is asking, and may they: resolves the identity (key, JWT, control token) into the request
 * record before any body is read, then checks the role the path needs. A refusal is thrown as a
 * BridgeError for the error boundary, which answers in the surface's own shape.
 */
export async function authorize(authenticator: Authenticator, req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
  if (rolesFor(req.method ?? 'GET', path) === null) return;
  // EventSource cannot send headers: the dashboard's live stream carries its credential in the query.
  const token = path === '/bridge/api/events' ? new URL(req.url ?? '/', 'http://bridge').searchParams.get('access_token') : null;
  const headers = token !== null && token !== '' ? { ...req.headers, authorization: `Bearer ${token}` } : req.headers;
  let identity;
  try {
    identity = await authenticator.identify(headers);
  } catch (error) {
    if (error instanceof BridgeError && error.status === 401) {
      res.setHeader('www-authenticate', CHALLENGE);
      // A client guessing keys gets no kept-alive connection to keep guessing on.
      res.setHeader('connection', 'close');
    }
    throw error;
  }
  requestOf(req).identity = identity;
  if (allowed(identity, req.method ?? 'GET', path)) return;
  if (identity.via === 'anonymous') {
    res.setHeader('www-authenticate', CHALLENGE);
    throw new BridgeError(401, 'this needs the control token (x-bridge-token) or an admin key', { code: 'invalid_api_key' });
  }
  throw new BridgeError(403, `${identity.name} (role ${identity.role}) may not ${req.method ?? 'GET'} ${path}`, { code: 'forbidden' });
}

/** The model a generation request names, for the history of a refused one. */
function requestedModel(body: unknown, path: string): string {
  const model = (body as { model?: unknown } | undefined)?.model;
  if (typeof model === 'string') return model;
  const engine = /^\/v1\/engines\/([^/]+)\//.exec(path)?.[1];
  if (engine === undefined) return '';
  try {
    return decodeURIComponent(engine);
  } catch {
    return engine;
  }
}

/**
 * Requests per minute, tokens per minute and concurrency for generation requests. Over a limit:
 * 429 with Retry-After in the surface's shape, and a history record saying which limit.
 */
export async function admit(limiter: Limiter, req: IncomingMessage & { body?: unknown }, res: ServerResponse, path: string): Promise<void> {
  if (!isGeneration(req.method ?? 'GET', path)) return;
  const admission = await limiter.admit(identityOf(req));
  if (isRefusal(admission)) {
    const message = `rate limit reached: ${admission.limit}; retry in ${admission.retryAfterSeconds} s`;
    requestOf(req).generation = refusedOutcome(requestedModel(req.body, path), message);
    throw new BridgeError(429, message, { code: 'rate_limit_exceeded', retryAfterSeconds: admission.retryAfterSeconds });
  }
  whenClosed(res, () => admission.release());
}

/** authorize() as express middleware, for the routes the fast path does not serve. */
export function authenticate(authenticator: Authenticator): RequestHandler {
  return (req, res, next) => {
    authorize(authenticator, req, res, req.path).then(() => next(), next);
  };
}

/** admit() as express middleware. */
export function limits(limiter: Limiter): RequestHandler {
  return (req, res, next) => {
    admit(limiter, req, res, req.path).then(() => next(), next);
  };
}

/**
 * For the metrics port, which has no request records: any known identity may read metrics (every
 * role does); without keys or a JWT issuer the Host guard before it is the only check.
 */
export function requireIdentity(authenticator: Authenticator): RequestHandler {
  return (req, res, next) => {
    authenticator.identify(req.headers).then(
      () => next(),
      (error: unknown) => {
        if (error instanceof BridgeError && error.status === 401) res.setHeader('www-authenticate', CHALLENGE);
        next(error);
      },
    );
  };
}
