import express, { type ErrorRequestHandler, type Express } from 'express';
import { mountRoutes } from '../api/call.js';
import { primaryOf, type ApiContext } from '../api/context.js';
import { anthropicRoutes } from '../api/anthropic/routes.js';
import { copilotRoutes } from '../api/copilot/routes.js';
import { ollamaRoutes } from '../api/ollama/routes.js';
import { openAiRoutes } from '../api/openai/routes.js';
import { passthrough, refuseUnrouted } from '../api/passthrough.js';
import { controlRoutes } from '../control/routes.js';
import { noSuchEndpoint, refuseOtherMethods } from '../api/errors.js';
import type { AnswerError, AppParts, BeginRequest } from './app.js';
import { authenticate, limits } from './auth.js';
import { jsonBody, sendContinue } from './body.js';
import { guard } from './guard.js';
import { defaultUiDir, uiRoutes } from './ui.js';

/** The express app: every route, the hot ones included, with the steps the fast path takes in the same order. */
export function createApp(context: ApiContext, parts: AppParts, begin: BeginRequest, answerError: AnswerError): Express {
  const { config } = context;
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use((req, res, next) => {
    // Mounted routers rewrite req.path on the way; the record keeps what the client asked for.
    begin(req, res, req.path);
    next();
  });
  app.use(guard(config));
  app.use(authenticate(parts.authenticator));
  // Model blobs (ollama create) are large binaries: streamed through, never parsed or size-limited.
  app.all(
    '/api/blobs/*digest',
    (_req, res, next) => {
      sendContinue(res);
      next();
    },
    passthrough(() => primaryOf(context), {
      afterEach: () => context.catalog.invalidate(),
      bodyIdleMs: config.server.request_timeout_seconds * 1000,
    }),
  );
  app.use(jsonBody(Math.round(config.server.body_limit_mb * 1024 * 1024), config.server.request_timeout_seconds * 1000));
  app.use(limits(parts.limiter));
  // The client APIs first: they carry every keystroke, and each router passed costs time.
  // Each router answers a method its paths do not take itself (405, or 204 to OPTIONS).
  app.use(refuseOtherMethods(ollamaRoutes(context, express.Router())));
  app.use(refuseOtherMethods(openAiRoutes(context, express.Router())));
  app.use(refuseOtherMethods(anthropicRoutes(context, express.Router())));
  app.use(refuseOtherMethods(copilotRoutes(context, express.Router())));
  app.use(refuseOtherMethods(controlRoutes(parts.control)));
  const observability = express.Router();
  mountRoutes(observability, parts.observability);
  app.use(refuseOtherMethods(observability));
  app.use(refuseOtherMethods(uiRoutes(parts.uiDir ?? defaultUiDir())));
  // Nothing else under /api/ goes upstream.
  app.all('/api/*rest', refuseUnrouted);

  app.use(noSuchEndpoint);
  app.use(((thrown, req, res, _next) => answerError(thrown, req, res)) satisfies ErrorRequestHandler);
  return app;
}
