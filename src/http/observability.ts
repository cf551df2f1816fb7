import express, { type Router as ExpressRouter } from 'express';
import type { Registry } from 'prom-client';
import type { Backend } from '../upstream/backend.js';

/** Liveness, readiness and Prometheus metrics. */
export function observabilityRoutes(deps: {
  backends: readonly Backend[];
  registry: Registry | undefined;
  fallbackReady: () => boolean;
  startedAt: Date;
  /** True once a stop began: a load balancer must send new requests elsewhere. */
  draining: () => boolean;
}): ExpressRouter {
  const router = express.Router();

  router.get('/health', (_req, res) => {
    res.json({ status: 'ok', uptimeSeconds: Math.round((Date.now() - deps.startedAt.getTime()) / 1000) });
  });

  // Ready when not draining and at least one backend (or the cloud fallback) can take traffic;
  // the per-backend detail says why not. Load balancers check this route.
  router.get('/health/ready', (_req, res) => {
    const backends = deps.backends.map((b) => ({ name: b.name, url: b.url.href, canTakeTraffic: b.health.canTake(), ...b.health.snapshot() }));
    const draining = deps.draining();
    const fallbackAvailable = deps.fallbackReady();
    const ready = !draining && (backends.some((b) => b.canTakeTraffic) || fallbackAvailable);
    res.status(ready ? 200 : 503).json({ ready, draining, backends, fallbackAvailable });
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
