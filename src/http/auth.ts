import type { Request, RequestHandler, Response } from 'express';
import { refusedOutcome } from '../api/generation.js';
import { sendAuthError, surfaceOf } from '../api/errors.js';
import { allowed, isGeneration, rolesFor } from '../auth/access.js';
import { AuthError, type Authenticator } from '../auth/authenticate.js';
import type { Identity } from '../auth/identity.js';
import { clientSignals } from '../routing/signals.js';
import { isRefusal, type Limiter } from '../auth/limits.js';

export function identityOf(res: Response): Identity {
  return res.locals.identity as Identity;
}

/**
 * Who is asking, and may they: resolves the identity (key, JWT, control token) before any body
 * is read, then checks the role the path needs. Refusals answer in the surface's own shape.
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
        res.locals.identity = identity;
        if (!allowed(identity, req.method, req.path)) {
          if (identity.via === 'anonymous') {
            sendAuthError(res, surfaceOf(req.path), new AuthError(401, 'missing_credentials', 'this needs the control token (x-bridge-token) or an admin key'));
            return;
          }
          sendAuthError(res, surfaceOf(req.path), new AuthError(403, 'forbidden', `${identity.name} (role ${identity.role}) may not ${req.method} ${req.path}`));
          return;
        }
        next();
      },
      (error: unknown) => {
        if (!(error instanceof AuthError)) {
          next(error);
          return;
        }
        // A client guessing keys gets no kept-alive connection to keep guessing on.
        res.setHeader('connection', 'close');
        sendAuthError(res, surfaceOf(req.path), error);
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
    const identity = identityOf(res);
    limiter.admit(identity).then((admission) => {
      if (isRefusal(admission)) {
        const message = `rate limit reached: ${admission.limit}; retry in ${admission.retryAfterSeconds} s`;
        res.locals.generation = refusedOutcome(requestedModel(req), message, clientSignals(req.headers));
        sendAuthError(res, surfaceOf(req.path), new AuthError(429, 'rate_limit_exceeded', message, admission.retryAfterSeconds));
        return;
      }
      res.once('close', () => admission.release());
      next();
    }, next);
  };
}
