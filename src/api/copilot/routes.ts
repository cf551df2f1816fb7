import type { Router as ExpressRouter } from 'express';
import { mountRoutes, type ApiHandler, type ApiRoute } from '../call.js';
import { virtualModel } from '../../routing/router.js';
import type { ApiContext } from '../context.js';
import { completionRequestSchema, serveCompletion } from '../openai/completions.js';
import { parseBody } from '../validate.js';

/**
 * GitHub Copilot's inline completions (ghost text), on every typing pause:
 * POST {base}/v1/engines/{engine}/completions.
 * Any engine name is accepted: an installed model is used as it is, anything else ("copilot-codex")
 * is routed like `auto`, which puts fill-in-the-middle on the simple tier.
 */
export function copilotHotRoutes(context: ApiContext): ApiRoute[] {
  const completions: ApiHandler = async (req, res) => {
    const request = parseBody(completionRequestSchema, req);
    // The path parameter arrives percent-decoded: "qwen2.5-coder%3A7b" as "qwen2.5-coder:7b".
    const engine = String(req.params.engine);
    const installed = virtualModel(engine) !== undefined || (await context.catalog.holders(engine)).length > 0;
    await serveCompletion(context, req, res, installed ? engine : 'auto', request, true);
  };
  return [{ method: 'POST', path: '/v1/engines/:engine/completions', handler: completions }];
}

/** GitHub Copilot's inline completions and what its language server asks besides; mounted on `router`. */
export function copilotRoutes(context: ApiContext, router: ExpressRouter): ExpressRouter {
  mountRoutes(router, copilotHotRoutes(context));

  // Harmless answers to what the Copilot language server asks besides completions (/health is the bridge's own).
  router.all('/copilot_internal/v2/token', (req, res) => {
    const expiresAt = Math.floor(Date.now() / 1000) + 3600;
    const base = `http://${req.headers.host ?? '127.0.0.1'}`;
    res.json({
      token: `tid=copilot-bridge;exp=${expiresAt};proxy-ep=${req.headers.host ?? '127.0.0.1'}`,
      expires_at: expiresAt,
      refresh_in: 1500,
      endpoints: { api: base, proxy: base },
    });
  });
  router.all('/copilot_internal/*rest', (_req, res) => {
    res.json({});
  });

  return router;
}
