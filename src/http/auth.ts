import type { Request, RequestHandler } from 'express';
import { refusedOutcome } from '../api/generation.js';
import { identityOf, requestOf } from '../api/request.js';
import { allowed, isGeneration, rolesFor } from '../auth/access.js';
import type { Authenticator } from '../auth/authenticate.js';
import { isRefusal, type Limiter } from '../auth/limits.js';
import { BridgeError } from '../contract/index.js';

/**
 * Who is asking, and may they: resolves the identity (key, JWT, control token) before any body
 * is read, then checks the role the path needs. Refusals go to the error boundary, which answers
 * in the surface's own shape.
 */
export function authenticate(authenticator: Authenticator): RequestHandler {
  return (req, res, next) => {
    if (rolesFor(req.method, req.path) === null) {
      next();
      return;
    }
    // EventSource cannot send headers: the dashboard's live stream carries its credential in the query.
    const token = req.path === '/bridge/api/events' ? req.query.access_token : undefined;
    const headers = typeof token === 'string' && token !== '' ? { ...req.headers, authorization: `Bearer ${token}` } : req.headers;
    authenticator.identify(headers).then(
      (identity) => {
        requestOf(req).identity = identity;
        if (allowed(identity, req.method, req.path)) {
          next();
          return;
        }
        if (identity.via === 'anonymous') {
          res.setHeader('www-authenticate', 'Bearer realm="copilot-bridge"');
          next(new BridgeError(401, 'this needs the control token (x-bridge-token) or an admin key', { code: 'invalid_api_key' }));
          return;
        }
        next(new BridgeError(403, `${identity.name} (role ${identity.role}) may not ${req.method} ${req.path}`, { code: 'forbidden' }));
      },
      (error: unknown) => {
        if (error instanceof BridgeError && error.status === 401) {
          res.setHeader('www-authenticate', 'Bearer realm="copilot-bridge"');
          // A client guessing keys gets no kept-alive connection to keep guessing on.
          res.setHeader('connection', 'close');
        }
        next(error);
      },
    );
  };
}

/** The model a generation request names, for the history of a refused one. */
function requestedModel(req: Request): string {
  const body = req.body as { model?: unknown } | undefined;
  if (typeof body?.model === 'string') return body.model;
  const engine = /^\/v1\/engines\/([^/]+)\//.exec(req.path)?.[1];
  return engine === undefined ? '' : decodeURIComponent(engine);
}

/**
 * Requests per minute, tokens per minute and concurrency for generation requests. Over a limit:
 * 429 with Retry-After in the surface's shape, and a history record saying which limit.
 */
export function limits(limiter: Limiter): RequestHandler {
  return (req, res, next) => {
    if (!isGeneration(req.method, req.path)) {
      next();
      return;
    }
    limiter.admit(identityOf(req)).then((admission) => {
      if (isRefusal(admission)) {
        const message = `rate limit reached: ${admission.limit}; retry in ${admission.retryAfterSeconds} s`;
        requestOf(req).generation = refusedOutcome(requestedModel(req), message);
        res.setHeader('retry-after', String(admission.retryAfterSeconds));
        next(new BridgeError(429, message, { code: 'rate_limit_exceeded' }));
        return;
      }
      res.once('close', () => admission.release());
      next();
    }, next);
  };
}
