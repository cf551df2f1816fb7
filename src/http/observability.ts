import express, { type Router as ExpressRouter } from 'express';
import type { Registry } from 'prom-client';
import type { Backend } from '../upstream/backend.js';

/** Liveness, readiness and Prometheus metrics. */
export function observabilityRoutes(deps: { backends: readonly Backend[]; registry: Registry | undefined; fallbackReady: () => boolean; startedAt: Date }): ExpressRouter {
  const router = express.Router();

  router.get('/health', (_req, res) => {
    res.json({ status: 'ok', uptimeSeconds: Math.round((Date.now() - deps.startedAt.getTime()) / 1000) });
  });

  // Ready when at least one backend can take traffic; the per-backend detail says why not.
  router.get('/health/ready', (_req, res) => {
    const backends = deps.backends.map((b) => ({ name: b.name, url: b.url.href, canTakeTraffic: b.health.canTake(), ...b.health.snapshot() }));
    const ready = backends.some((b) => b.canTakeTraffic);
    res.status(ready ? 200 : 503).json({ ready, backends, fallbackAvailable: deps.fallbackReady() });
  });

  const registry = deps.registry;
  if (registry !== undefined) {
    router.get('/metrics', async (_req, res) => {
      res.setHeader('content-type', registry.contentType);
      res.send(await registry.metrics());
    });
  }
  return router;
}
