import type { Registry } from 'prom-client';
import { sendJson, type ApiRoute } from '../api/call.js';
import type { Backend } from '../upstream/backend.js';

/**
 * Liveness, readiness and Prometheus metrics: plain routes, served by the fast path on the main
 * port (load balancers and Prometheus call them all the time) and mounted on the metrics port.
 */
export function observabilityRoutes(deps: {
  backends: readonly Backend[];
  registry: Registry | undefined;
  fallbackReady: () => boolean;
  startedAt: Date;
  /** True once a stop began: a load balancer must send new requests elsewhere. */
  draining: () => boolean;
  /**
   * Whether readiness may tell each backend's URL, errors and model circuits. Anyone may ask it
   * (load balancers send no credentials), so a bridge that takes keys tells only names and readiness.
   */
  detailed: boolean;
}): ApiRoute[] {
  const routes: ApiRoute[] = [
    {
      method: 'GET',
      path: '/health',
      handler: (_req, res) => sendJson(res, 200, { status: 'ok', uptimeSeconds: Math.round((Date.now() - deps.startedAt.getTime()) / 1000) }),
    },
    // Ready when not draining and at least one backend (or the cloud fallback) can take traffic;
    // the per-backend detail says why not. Load balancers check this route.
    {
      method: 'GET',
      path: '/health/ready',
      handler: (_req, res) => {
        const backends = deps.backends.map((b) =>
          deps.detailed
            ? { name: b.name, url: b.url.href, canTakeTraffic: b.health.canTake(), ...b.health.snapshot() }
            : { name: b.name, canTakeTraffic: b.health.canTake() },
        );
        const draining = deps.draining();
        const fallbackAvailable = deps.fallbackReady();
        const ready = !draining && (backends.some((b) => b.canTakeTraffic) || fallbackAvailable);
        sendJson(res, ready ? 200 : 503, { ready, draining, backends, fallbackAvailable });
      },
    },
  ];
  const registry = deps.registry;
  if (registry !== undefined) {
    routes.push({
      method: 'GET',
      path: '/metrics',
      handler: async (_req, res) => {
        const text = await registry.metrics();
        res.statusCode = 200;
        res.setHeader('Content-Type', registry.contentType);
        res.setHeader('Content-Length', Buffer.byteLength(text));
        res.end(text);
      },
    });
  }
  return routes;
}
