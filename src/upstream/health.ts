import type { BackendStatus, CircuitState, HealthSnapshot } from '../contract/index.js';
export type { BackendStatus, CircuitState, HealthSnapshot } from '../contract/index.js';

export interface HealthOptions {
  /** Consecutive failed requests that open the circuit. */
  failureThreshold: number;
  /** Time the circuit stays open before one probe request may go through. */
  cooldownMs: number;
}


/**
 * Health of one backend from two sources: active checks (is it reachable?) and the outcome of real
 * requests (does it answer them?). A backend that is reachable but keeps failing requests is
 * "failing", and after `failureThreshold` failures in a row its circuit opens: no traffic until
 * the cool-down has passed and one probe request succeeded.
 */
export class BackendHealth {
  private reachable: boolean | null = null;
  private failures = 0;
  private openedAt: number | null = null;
  private probing = false;
  private lastError: string | null = null;
  private lastFailureAt: number | null = null;
  private lastCheckAt: number | null = null;
  private latency: number | null = null;

  constructor(
    private readonly options: HealthOptions,
    private readonly now: () => number = Date.now,
  ) {}

  get circuit(): CircuitState {
    if (this.openedAt === null) return 'closed';
    return this.now() - this.openedAt >= this.options.cooldownMs ? 'half-open' : 'open';
  }

  get status(): BackendStatus {
    if (this.reachable === false) return 'down';
    if (this.circuit !== 'closed' || this.failures > 0) return 'failing';
    return this.reachable === true ? 'healthy' : 'unknown';
  }

  /** Whether a request may be sent now; a half-open circuit lets exactly one probe through. */
  canTake(): boolean {
    if (this.reachable === false) return false;
    const circuit = this.circuit;
    return circuit === 'closed' || (circuit === 'half-open' && !this.probing);
  }

  /** Call when a request is actually sent: in half-open state it becomes the probe. */
  begin(): void {
    if (this.circuit === 'half-open') this.probing = true;
  }

  recordCheck(ok: boolean, error?: string): void {
    this.lastCheckAt = this.now();
    if (ok) {
      // Failures while it was unreachable are explained by that; a fresh start deserves traffic.
      // A backend that answers its checks and has not failed for a cool-down is given back its
      // traffic too: a failing backend ranks last and might otherwise never be probed again.
      const quiet = this.lastFailureAt === null || this.now() - this.lastFailureAt >= this.options.cooldownMs;
      if (this.reachable === false || quiet) this.reset();
      this.reachable = true;
    } else {
      this.reachable = false;
      this.lastError = error ?? 'health check failed';
    }
  }

  recordSuccess(latencyMs?: number): void {
    this.reset();
    this.reachable = true;
    if (latencyMs !== undefined) this.latency = this.latency === null ? latencyMs : this.latency * 0.8 + latencyMs * 0.2;
  }

  /** A failed request; `unreachable` (connection refused) marks it down at once, before the next check. */
  recordFailure(error: string, unreachable = false): void {
    this.failures += 1;
    this.lastFailureAt = this.now();
    this.lastError = error;
    if (unreachable) this.reachable = false;
    if (this.probing || (this.openedAt === null && this.failures >= this.options.failureThreshold)) this.openedAt = this.now();
    this.probing = false;
  }

  private reset(): void {
    this.failures = 0;
    this.openedAt = null;
    this.probing = false;
  }

  snapshot(): HealthSnapshot {
    return {
      status: this.status,
      circuit: this.circuit,
      consecutiveFailures: this.failures,
      lastError: this.lastError,
      lastCheckAt: this.lastCheckAt === null ? null : new Date(this.lastCheckAt).toISOString(),
      latencyMs: this.latency === null ? null : Math.round(this.latency * 10) / 10,
    };
  }
}
