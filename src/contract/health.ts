import type { BackendSnapshot } from './types.js';

/** Backends counted as healthy in summaries: those that answered their last check, or were not checked yet. */
export function healthyBackendCount(backends: readonly BackendSnapshot[]): number {
  return backends.filter((b) => b.health.status === 'healthy' || b.health.status === 'unknown').length;
}
