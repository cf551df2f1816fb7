import type { BackendStatus, CircuitState, HealthSnapshot, ModelCircuitSnapshot } from '../contract/index.js';
export type { BackendStatus, CircuitState, HealthSnapshot } from '../contract/index.js';

export interface HealthOptions {
  /** Consecutive failed requests that open the circuit. */
  failureThreshold: number;
  /** Time the circuit stays open before one probe request may go through. */
  cooldownMs: number;
}

/**
 * Model names a client made up must not grow memory: only failing models get a circuit, and at
 * most this many per backend (the oldest is dropped first).
 */
const MAX_MODEL_CIRCUITS = 64;

/** Which circuits a request sent is the half-open probe of, from begin(): only a probe's end releases its circuit. */
export interface Probes {
  backend: boolean;
  model: boolean;
}

/** Consecutive failures that open a circuit, and the one probe a half-open circuit lets through. */
class Circuit {
  failures = 0;
  lastError: string | null = null;
  lastFailureAt: number | null = null;
  private openedAt: number | null = null;
  private probing = false;

  constructor(
    private readonly options: HealthOptions,
    private readonly now: () => number,
  ) {}

  get state(): CircuitState {
    if (this.openedAt === null) return 'closed';
    return this.now() - this.openedAt >= this.options.cooldownMs ? 'half-open' : 'open';
  }

  canTake(): boolean {
    const state = this.state;
    return state === 'closed' || (state === 'half-open' && !this.probing);
  }

  /** Call when a request is sent; true when it is the probe of a half-open circuit. */
  begin(): boolean {
    if (this.state !== 'half-open') return false;
    this.probing = true;
    return true;
  }

  /** The probe ended with no verdict (its client left): the next request may probe. */
  release(): void {
    this.probing = false;
  }

  recordFailure(error: string): void {
    this.failures += 1;
    this.lastFailureAt = this.now();
    this.lastError = error;
    if (this.probing || (this.openedAt === null && this.failures >= this.options.failureThreshold)) this.openedAt = this.now();
    this.probing = false;
  }

  /** Why it lets no request through now, or null when it does. */
  refusal(): string | null {
    if (this.canTake()) return null;
    const last = this.lastError === null ? '' : ` (last: ${this.lastError})`;
    if (this.state === 'half-open') return `circuit half-open, its probe request still running${last}`;
    const leftMs = this.options.cooldownMs - (this.now() - (this.openedAt as number));
    return `circuit open after ${this.failures} failures in a row${last}, for ${Math.ceil(leftMs / 1000)} s more`;
  }

  /** No failure for a whole cool-down. */
  get quiet(): boolean {
    return this.lastFailureAt === null || this.now() - this.lastFailureAt >= this.options.cooldownMs;
  }

  reset(): void {
    this.failures = 0;
    this.openedAt = null;
    this.probing = false;
  }
}

/**
 * Health of one backend from two sources: active checks (is it reachable?) and the outcome of real
 * requests (does it answer them?). A backend that is reachable but keeps failing requests is
 * "failing", and after `failureThreshold` failures in a row its circuit opens: no traffic until
 * the cool-down has passed and one probe request succeeded.
 *
 * An error one model answers with (a runner that cannot load it, a crash while generating) says
 * nothing about the other models there: it counts against that (backend, model) pair, whose own
 * circuit keeps only that model away from this backend.
 */
export class BackendHealth {
  private reachable: boolean | null = null;
  private readonly backendCircuit: Circuit;
  private readonly models = new Map<string, Circuit>();
  private lastCheckAt: number | null = null;
  private latency: number | null = null;

  constructor(
    private readonly options: HealthOptions,
    private readonly now: () => number = Date.now,
  ) {
    this.backendCircuit = new Circuit(options, now);
  }

  get circuit(): CircuitState {
    return this.backendCircuit.state;
  }

  get status(): BackendStatus {
    if (this.reachable === false) return 'down';
    if (this.circuit !== 'closed' || this.backendCircuit.failures > 0) return 'failing';
    return this.reachable === true ? 'healthy' : 'unknown';
  }

  /** Whether a request may be sent now (for `model`, when given); a half-open circuit lets exactly one probe through. */
  canTake(model?: string): boolean {
    if (this.reachable === false || !this.backendCircuit.canTake()) return false;
    return model === undefined || (this.models.get(model)?.canTake() ?? true);
  }

  /** Why a request (for `model`, when given) may not be sent now, for a route reason; null when it may. */
  refusal(model?: string): string | null {
    if (this.reachable === false) return `down (${this.backendCircuit.lastError ?? 'unreachable'})`;
    const backend = this.backendCircuit.refusal();
    if (backend !== null) return backend;
    const own = model === undefined ? null : (this.models.get(model)?.refusal() ?? null);
    return own === null ? null : `${own} for ${model}`;
  }

  /** Whether `model` failed here lately without its circuit being open yet (it then ranks last). */
  modelFailing(model: string): boolean {
    return (this.models.get(model)?.failures ?? 0) > 0;
  }

  /** Call when a request is actually sent: in half-open state it becomes the probe. */
  begin(model?: string): Probes {
    return { backend: this.backendCircuit.begin(), model: model !== undefined && (this.models.get(model)?.begin() ?? false) };
  }

  /**
   * A request that ended with no verdict on the backend (its client left before the answer did):
   * the circuits it was the probe of let the next request probe. Any other request's end says
   * nothing about a probe still running.
   */
  release(model: string | undefined, probes: Probes): void {
    if (probes.backend) this.backendCircuit.release();
    if (probes.model && model !== undefined) this.models.get(model)?.release();
  }

  recordCheck(ok: boolean, error?: string): void {
    this.lastCheckAt = this.now();
    if (ok) {
      // Failures while it was unreachable are explained by that; a fresh start deserves traffic.
      // A backend that answers its checks and has not failed for a cool-down is given back its
      // traffic too: a failing backend ranks last and might otherwise never be probed again.
      if (this.reachable === false || this.backendCircuit.quiet) this.backendCircuit.reset();
      for (const [model, circuit] of this.models) if (circuit.quiet) this.models.delete(model);
      this.reachable = true;
    } else {
      this.reachable = false;
      this.backendCircuit.lastError = error ?? 'health check failed';
    }
  }

  recordSuccess(latencyMs?: number, model?: string): void {
    this.backendCircuit.reset();
    if (model !== undefined) this.models.delete(model);
    this.reachable = true;
    if (latencyMs !== undefined) this.latency = this.latency === null ? latencyMs : this.latency * 0.8 + latencyMs * 0.2;
  }

  /** A failed request; `unreachable` (connection refused) marks it down at once, before the next check. */
  recordFailure(error: string, unreachable = false): void {
    this.backendCircuit.recordFailure(error);
    if (unreachable) this.reachable = false;
  }

  /** An error answer for one model: counted against (this backend, model) only. */
  recordModelFailure(model: string, error: string): void {
    let circuit = this.models.get(model);
    if (circuit === undefined) {
      if (this.models.size >= MAX_MODEL_CIRCUITS) this.models.delete(this.models.keys().next().value as string);
      circuit = new Circuit(this.options, this.now);
      this.models.set(model, circuit);
    }
    circuit.recordFailure(error);
  }

  snapshot(): HealthSnapshot {
    const models: ModelCircuitSnapshot[] = [...this.models].map(([model, circuit]) => ({
      model,
      circuit: circuit.state,
      consecutiveFailures: circuit.failures,
      lastError: circuit.lastError,
    }));
    return {
      status: this.status,
      circuit: this.circuit,
      consecutiveFailures: this.backendCircuit.failures,
      lastError: this.backendCircuit.lastError,
      lastCheckAt: this.lastCheckAt === null ? null : new Date(this.lastCheckAt).toISOString(),
      latencyMs: this.latency === null ? null : Math.round(this.latency * 10) / 10,
      models,
    };
  }
}
