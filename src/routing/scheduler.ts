import { dropMessage, LANES, type CancelSignal, type DropReason, type Lane, type SchedulerPool, type SchedulerSnapshot } from '../contract/index.js';
import { laneRank } from './lanes.js';

/** Time and timers, injected so tests drive the scheduler without waiting. */
export interface Clock {
  now(): number;
  setTimer(fn: () => void, ms: number): { cancel(): void };
}

export const systemClock: Clock = {
  now: () => performance.now(),
  setTimer(fn, ms) {
    const timer = setTimeout(fn, ms);
    timer.unref();
    return { cancel: () => clearTimeout(timer) };
  },
};

export interface SchedulerOptions {
  /** Off: requests go straight upstream in the router's order, as if there were no scheduler. */
  enabled: boolean;
  ageBoostMs: number;
  fimMaxWaitMs: number;
  /** Slots of each queue only ghost text may use, so it never waits for a running chat (other lanes keep at least one). */
  fimReservedSlots: number;
  /** Requests Ollama runs at once per model on this backend. */
  slots(backend: string): number;
  /** Whether the backend holds the model in memory (its last /api/ps). */
  resident(backend: string, model: string): boolean;
  /** Before anything was measured: a service time (expected_latency_ms) and a size for the cold-load guess. */
  seed(model: string): { serviceMs: number; sizeBytes: number | undefined };
  /**
   * What Ollama runs a model as on a backend: names of one model file (its digest there) share one
   * runner and its slots, so they share a queue here. Default: the name itself.
   */
  identity?(backend: string, model: string): string;
  clock?: Clock;
  /** Told each time a request leaves a queue for upstream, with how long it waited. */
  onDispatch?(lane: Lane, waitMs: number): void;
  /** Told when a request that found its model not resident ended: what the backend holds changed. */
  onColdLoad?(backend: string): void;
}

export class QueueDropped extends Error {
  constructor(readonly reason: DropReason) {
    super(dropMessage(reason));
    this.name = 'QueueDropped';
  }
}

export interface AdmitRequest {
  model: string;
  /** Backends that may serve it, in the router's order of preference (ties go to the earlier one). */
  choices: readonly string[];
  lane: Lane;
  /** Who sent it: a newer ghost-text request from the same client supersedes a queued one. */
  client: string | null;
  /** Prompt size, for the prefill part of the estimate. */
  promptTokens: number;
  /** Slots it takes at once (n > 1 choices run side by side). */
  weight?: number;
  signal: CancelSignal;
}

/** What a finished request tells the estimates (Ollama's own figures from its last line). */
export interface Completion {
  ok: boolean;
  loadDurationNs?: number;
  promptEvalCount?: number;
  promptEvalDurationNs?: number;
}

/** A request's turn upstream: hold it until the answer ended, then release it (once). */
export interface Slot {
  readonly backend: string;
  readonly lane: Lane;
  /** Time spent waiting in the bridge. */
  readonly queuedMs: number;
  /** The estimates behind the choice, for the route reason (empty with the scheduler off). */
  readonly why: string;
  /** Whether another backend's estimate was as good, so the router's order decided. */
  readonly tie: boolean;
  release(completion?: Completion): void;
}

/** Estimated time to first token on one backend, and its parts. */
export interface Estimate {
  backend: string;
  ms: number;
  waitMs: number;
  loadMs: number;
  prefillMs: number;
  resident: boolean;
  running: number;
  queued: number;
}

interface Entry {
  lane: Lane;
  /** Backends it may run on (its pool's is one of them). */
  choices: readonly string[];
  arrivedAt: number;
  client: string | null;
  weight: number;
  why: string;
  tie: boolean;
  pool: Pool;
  grant(slot: Slot): void;
  drop(error: Error): void;
}

interface Pool {
  /** backend and model identity: the key of this pool and of its model's figures. */
  key: string;
  backend: string;
  model: string;
  running: number;
  /** Of those, requests not in the fim lane: only they are kept out of reserved slots. */
  runningOther: number;
  queue: Entry[];
}

interface Measured {
  /** The name the first measured request used. */
  model: string;
  serviceMs: number;
  loadMs: number | null;
  promptTps: number | null;
  samples: number;
}

/** Weight of the newest sample in the moving averages. */
const ALPHA = 0.3;
/** Cold load guess before one was measured: start-up plus reading the weights at this rate. */
const LOAD_BASE_MS = 500;
const LOAD_BYTES_PER_MS = (2 * 1024 ** 3) / 1000;
/** Prompt evaluation rate assumed before one was measured. */
const SEED_PROMPT_TPS = 1000;
/** Beyond any GPU's prompt evaluation (the fastest reach tens of thousands of tokens per second). */
const MAX_PROMPT_TPS = 1e6;
/**
 * (backend, model) pairs whose figures are kept. A client may name any model the upstream answers
 * to (every tag and alias of one), so without a limit the figures would grow with each new name.
 */
export const MAX_MEASURED = 256;
/** Estimates closer than this are a tie, which the router's preference breaks. */
const TIE_MS = 100;

const ewma = (old: number | null, sample: number, samples: number): number => (old === null || samples === 0 ? sample : old * (1 - ALPHA) + sample * ALPHA);
const key = (backend: string, identity: string): string => `${backend}\u0000${identity}`;
const seconds = (ms: number): string => `~${(ms / 1000).toFixed(1)} s`;

/**
 * The bridge's queue in front of Ollama. Per backend and model it sends at most as many requests
 * as Ollama runs at once; the rest wait here, where a client that hangs up leaves without a trace
 * upstream. A free slot goes to the highest lane (fim > interactive > background), first come
 * first served within a lane; every `ageBoostMs` waited lifts a request one lane, so none starves.
 * A request picks its backend by estimated time to first token: queue wait + cold load + prefill.
 */
export class Scheduler {
  private readonly clock: Clock;
  private readonly pools = new Map<string, Pool>();
  private readonly measured = new Map<string, Measured>();
  private readonly dropped = { superseded: 0, deadline: 0, cancelled: 0 };
  private stopped = false;

  constructor(private readonly options: SchedulerOptions) {
    this.clock = options.clock ?? systemClock;
  }

  get enabled(): boolean {
    return this.options.enabled;
  }

  readonly name = 'scheduler';

  async start(): Promise<void> {
    this.stopped = false;
  }

  /** Stops taking requests; every queued one is answered with QueueDropped('stopping'). */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const pool of this.pools.values()) {
      for (const entry of [...pool.queue]) this.remove(entry, new QueueDropped('stopping'));
    }
  }

  /**
   * Waits for a slot on the best backend among `choices`. Rejects with the signal's reason when
   * the client hangs up while queued, and with QueueDropped when ghost text is superseded or
   * waited past fim_max_wait_ms.
   */
  admit(request: AdmitRequest): Promise<Slot> {
    if (this.stopped) return Promise.reject(new QueueDropped('stopping'));
    if (request.signal.aborted) {
      this.dropped.cancelled += 1;
      return Promise.reject(request.signal.reason);
    }
    const weight = request.weight ?? 1;
    if (!this.options.enabled) {
      const backend = request.choices[0] as string;
      const pool = this.pool(backend, request.model);
      return Promise.resolve(
        this.dispatch(pool, { lane: request.lane, choices: request.choices, arrivedAt: this.clock.now(), client: request.client, weight, why: '', tie: false }),
      );
    }
    if (request.lane === 'fim' && request.client !== null) this.supersede(request.client);

    const estimates = request.choices.map((backend) => this.estimate(backend, request.model, request.lane, request.promptTokens, weight));
    const best = estimates.reduce((a, b) => (b.ms < a.ms - TIE_MS ? b : a));
    const why = [best, ...estimates.filter((e) => e !== best)].map(describe).join('; ');
    const tie = estimates.some((e) => e !== best && e.ms - best.ms <= TIE_MS);
    const pool = this.pool(best.backend, request.model);
    const arrival = { lane: request.lane, choices: request.choices, arrivedAt: this.clock.now(), client: request.client, weight, why, tie };
    // Nothing waiting there and a slot free: its turn is now, without a place in the queue.
    if (pool.queue.length === 0 && this.fits(pool, arrival)) return Promise.resolve(this.dispatch(pool, arrival));

    return new Promise<Slot>((resolve, reject) => {
      const onAbort = (): void => {
        this.dropped.cancelled += 1;
        this.remove(entry, request.signal.reason);
      };
      let timer: { cancel(): void } | undefined;
      const settle = (): void => {
        request.signal.removeEventListener('abort', onAbort);
        timer?.cancel();
      };
      const entry: Entry = {
        ...arrival,
        pool,
        grant: (slot) => {
          settle();
          resolve(slot);
        },
        drop: (error) => {
          settle();
          reject(error);
        },
      };
      request.signal.addEventListener('abort', onAbort);
      if (request.lane === 'fim') {
        timer = this.clock.setTimer(() => {
          this.dropped.deadline += 1;
          this.remove(entry, new QueueDropped('deadline'));
        }, this.options.fimMaxWaitMs);
      }
      pool.queue.push(entry);
      this.pump(pool);
    });
  }

  /**
   * Moves queued requests to another backend they may use that now holds their model with a slot
   * free: told when the backends' reports of what they hold came in (a load finished, a preload).
   */
  rebalance(): void {
    for (const entry of [...this.pools.values()].flatMap((pool) => pool.queue)) {
      for (const backend of entry.choices) {
        if (backend === entry.pool.backend || !this.options.resident(backend, entry.pool.model)) continue;
        const pool = this.pool(backend, entry.pool.model);
        if (pool.queue.length === 0) this.takeOver(pool);
        this.forgetIfIdle(pool);
      }
    }
  }

  /** Estimated time to first token of a new request of `lane` on `backend`, taking `weight` slots. */
  estimate(backend: string, model: string, lane: Lane, promptTokens: number, weight = 1): Estimate {
    const k = this.key(backend, model);
    const pool = this.pools.get(k);
    const measured = this.measuredFor(k, model);
    const now = this.clock.now();
    const running = pool?.running ?? 0;
    const queued = pool?.queue.length ?? 0;
    const slots = this.capacity(backend, lane);
    // Other lanes than fim count what runs in their slots: ghost text in the reserve is not in their way.
    const reserved = this.options.slots(backend) - slots;
    const busy = lane === 'fim' ? running : Math.max(running - reserved, pool?.runningOther ?? 0);
    // In slots: a request with n choices takes n of them.
    const ahead = busy + (pool?.queue.filter((e) => this.rankOf(e, now) <= laneRank(lane)).reduce((sum, e) => sum + e.weight, 0) ?? 0);
    // An idle backend takes a request of any width.
    const waitMs = ahead === 0 || ahead + weight <= slots ? 0 : ((ahead + weight - slots) * measured.serviceMs) / slots;
    const resident = this.isResident(backend, model, running);
    const loadMs = resident ? 0 : this.loadEstimate(k, model);
    const prefillMs = (promptTokens / (measured.promptTps ?? SEED_PROMPT_TPS)) * 1000;
    return { backend, ms: waitMs + loadMs + prefillMs, waitMs, loadMs, prefillMs, resident, running, queued };
  }

  snapshot(): SchedulerSnapshot {
    const keys = new Set([...this.pools.keys(), ...this.measured.keys()]);
    const pools: SchedulerPool[] = [...keys].sort().map((k) => {
      const pool = this.pools.get(k);
      const backend = k.slice(0, k.indexOf('\u0000'));
      // Several names of one model file share a row, named after the first one measured.
      const model = this.measured.get(k)?.model ?? (pool as Pool).model;
      const measured = this.measuredFor(k, model);
      const queued = Object.fromEntries(LANES.map((lane) => [lane, pool?.queue.filter((e) => e.lane === lane).length ?? 0])) as Record<Lane, number>;
      return {
        backend,
        model,
        slots: this.options.slots(backend),
        running: pool?.running ?? 0,
        queued,
        serviceMs: Math.round(measured.serviceMs),
        loadMs: measured.loadMs === null ? null : Math.round(measured.loadMs),
        promptTokensPerSecond: measured.promptTps === null ? null : Math.round(measured.promptTps),
        samples: this.measured.get(k)?.samples ?? 0,
      };
    });
    return {
      enabled: this.options.enabled,
      ageBoostMs: this.options.ageBoostMs,
      fimMaxWaitMs: this.options.fimMaxWaitMs,
      queued: [...this.pools.values()].reduce((sum, p) => sum + p.queue.length, 0),
      pools,
      dropped: { ...this.dropped },
    };
  }

  /** The lane a queued request competes in now: one higher for each ageBoostMs it waited. */
  private rankOf(entry: Entry, now: number): number {
    return Math.max(0, laneRank(entry.lane) - Math.floor((now - entry.arrivedAt) / this.options.ageBoostMs));
  }

  private key(backend: string, model: string): string {
    return key(backend, this.options.identity?.(backend, model) ?? model);
  }

  private pool(backend: string, model: string): Pool {
    const k = this.key(backend, model);
    let pool = this.pools.get(k);
    if (pool === undefined) {
      pool = { key: k, backend, model, running: 0, runningOther: 0, queue: [] };
      this.pools.set(k, pool);
    }
    return pool;
  }

  /** The figures under key `k` (see key()), or the seed for `model` before any were measured. */
  private measuredFor(k: string, model: string): Measured {
    return this.measured.get(k) ?? { model, serviceMs: this.options.seed(model).serviceMs, loadMs: null, promptTps: null, samples: 0 };
  }

  /** Resident as of the backend's last report, or busy with the model right now (`running` of its pool). */
  private isResident(backend: string, model: string, running: number): boolean {
    return running > 0 || this.options.resident(backend, model);
  }

  /** A cold load measured there (figures under key `k`), else measured on another backend, else guessed from the size. */
  private loadEstimate(k: string, model: string): number {
    const here = this.measured.get(k)?.loadMs;
    if (here !== undefined && here !== null) return here;
    for (const [other, m] of this.measured) {
      const elsewhere = other.slice(0, other.indexOf('\u0000'));
      if (m.loadMs !== null && other === this.key(elsewhere, model)) return m.loadMs;
    }
    return LOAD_BASE_MS + (this.options.seed(model).sizeBytes ?? 0) / LOAD_BYTES_PER_MS;
  }

  private supersede(client: string): void {
    for (const pool of this.pools.values()) {
      for (const entry of [...pool.queue]) {
        if (entry.lane === 'fim' && entry.client === client) {
          this.dropped.superseded += 1;
          this.remove(entry, new QueueDropped('superseded'));
        }
      }
    }
  }

  private remove(entry: Entry, error: unknown): void {
    const index = entry.pool.queue.indexOf(entry);
    if (index < 0) return;
    entry.pool.queue.splice(index, 1);
    entry.drop(error instanceof Error ? error : new Error(String(error)));
    // It may have held back the ones after it.
    this.pump(entry.pool);
    this.forgetIfIdle(entry.pool);
  }

  /** Slots a request of `lane` may use on a backend: all for ghost text, the unreserved ones for the rest. */
  private capacity(backend: string, lane: Lane): number {
    const slots = this.options.slots(backend);
    return lane === 'fim' ? slots : Math.max(1, slots - this.options.fimReservedSlots);
  }

  /** Whether `entry` may start now: a free slot, and for other lanes than fim one outside the reserve. */
  private fits(pool: Pool, entry: Pick<Entry, 'lane' | 'weight'>): boolean {
    if (pool.running === 0) return true;
    if (pool.running + entry.weight > this.options.slots(pool.backend)) return false;
    return entry.lane === 'fim' || pool.runningOther + entry.weight <= this.capacity(pool.backend, entry.lane);
  }

  /**
   * Hands free slots to queued requests, best first: lane order, then arrival. The best one that
   * does not fit yet (n > 1 asks for several slots at once) holds back every one after it, or
   * single requests would overtake it for as long as they keep coming; only ghost text that takes a
   * reserved slot, one the held-back request could not use anyway, still goes by.
   */
  private pump(pool: Pool): void {
    while (!this.stopped) {
      const [head, ...rest] = this.inTurn(pool.queue);
      if (head === undefined) return;
      const next = this.fits(pool, head) ? head : rest.find((entry) => entry.lane === 'fim');
      if (next === undefined || (next !== head && !this.passes(pool, head, next))) return;
      pool.queue.splice(pool.queue.indexOf(next), 1);
      next.grant(this.dispatch(pool, next));
    }
  }

  /** Queued requests best first: lane order (age boost included), then arrival. */
  private inTurn(entries: readonly Entry[]): Entry[] {
    const now = this.clock.now();
    return entries
      .map((entry) => ({ entry, rank: this.rankOf(entry, now) }))
      .sort((a, b) => a.rank - b.rank || a.entry.arrivedAt - b.entry.arrivedAt)
      .map(({ entry }) => entry);
  }

  /**
   * A slot freed on `pool`'s backend with nothing of its own waiting: requests queued for the same
   * model on another backend they may use start here now, best first, rather than wait there.
   * Called only while the model is in memory here, so moving never costs a cold load.
   */
  private takeOver(pool: Pool): void {
    while (!this.stopped && pool.queue.length === 0) {
      const elsewhere = [...this.pools.values()].filter((other) => other.backend !== pool.backend).flatMap((other) => other.queue);
      const entry = this.inTurn(elsewhere).find(
        (waiting) => waiting.choices.includes(pool.backend) && this.key(pool.backend, waiting.pool.model) === pool.key && this.fits(pool, waiting),
      );
      if (entry === undefined) return;
      const from = entry.pool;
      from.queue.splice(from.queue.indexOf(entry), 1);
      entry.pool = pool;
      entry.why += `; moved to ${pool.backend}: a slot freed there first`;
      entry.tie = false;
      entry.grant(this.dispatch(pool, entry));
      // It may have held back the ones after it there.
      this.pump(from);
      this.forgetIfIdle(from);
    }
  }

  /** Whether ghost text `fim` may start before `held`, a request of another lane waiting for a slot: only in the reserve, which `held` cannot use. */
  private passes(pool: Pool, held: Entry, fim: Entry): boolean {
    const slots = this.options.slots(pool.backend);
    const shared = this.capacity(pool.backend, held.lane);
    // A request wider than the shared slots waits for an idle backend: any ghost text would delay it.
    if (held.lane === 'fim' || held.weight > shared || !this.fits(pool, fim)) return false;
    return slots - pool.running - fim.weight >= shared - pool.runningOther;
  }

  private dispatch(pool: Pool, entry: Omit<Entry, 'pool' | 'grant' | 'drop'>): Slot {
    const dispatchedAt = this.clock.now();
    const resident = this.isResident(pool.backend, pool.model, pool.running);
    pool.running += entry.weight;
    const other = entry.lane === 'fim' ? 0 : entry.weight;
    pool.runningOther += other;
    const queuedMs = dispatchedAt - entry.arrivedAt;
    this.options.onDispatch?.(entry.lane, queuedMs);
    let released = false;
    return {
      backend: pool.backend,
      lane: entry.lane,
      queuedMs,
      why: entry.why,
      tie: entry.tie,
      release: (completion) => {
        if (released) return;
        released = true;
        pool.running -= entry.weight;
        pool.runningOther -= other;
        if (completion?.ok === true) this.learn(pool, dispatchedAt, resident, completion);
        if (!resident) this.options.onColdLoad?.(pool.backend);
        this.pump(pool);
        // An answer proves the model is in memory here; a failure does not, the backend's report may.
        if (completion?.ok === true || this.options.resident(pool.backend, pool.model)) this.takeOver(pool);
        this.forgetIfIdle(pool);
      },
    };
  }

  private learn(pool: Pool, dispatchedAt: number, wasResident: boolean, completion: Completion): void {
    const k = pool.key;
    const now = this.clock.now();
    const old = this.measured.get(k);
    const samples = old?.samples ?? 0;
    const elapsed = now - dispatchedAt;
    const load = completion.loadDurationNs;
    // The load happened within the request: a longer one is an upstream's wrong figure.
    const loadMs = load !== undefined && Number.isFinite(load) && load > 0 ? Math.min(load / 1e6, elapsed) : 0;
    const next: Measured = {
      model: old?.model ?? pool.model,
      // Without its load: a cold load is estimated on its own, and only for a backend that lacks the model.
      serviceMs: ewma(old?.serviceMs ?? null, elapsed - loadMs, samples),
      loadMs: old?.loadMs ?? null,
      promptTps: old?.promptTps ?? null,
      samples: samples + 1,
    };
    if (!wasResident && loadMs > 0) next.loadMs = ewma(next.loadMs, loadMs, next.loadMs === null ? 0 : 1);
    const count = completion.promptEvalCount;
    const duration = completion.promptEvalDurationNs;
    // Only a prompt evaluated within the request, at a rate a GPU reaches: one absurd figure would
    // make prefill look free (or endless) in the moving average for many requests after it.
    const rate = count !== undefined && duration !== undefined && count > 0 && duration > 0 && duration / 1e6 <= elapsed ? count / (duration / 1e9) : NaN;
    if (rate <= MAX_PROMPT_TPS) next.promptTps = ewma(next.promptTps, rate, next.promptTps === null ? 0 : 1);
    // Kept in the order last measured: past the limit, the model measured longest ago is forgotten.
    this.measured.delete(k);
    if (this.measured.size >= MAX_MEASURED) this.measured.delete(this.measured.keys().next().value as string);
    this.measured.set(k, next);
  }

  private forgetIfIdle(pool: Pool): void {
    if (pool.running === 0 && pool.queue.length === 0) this.pools.delete(pool.key);
  }
}

function describe(estimate: Estimate): string {
  const parts = [seconds(estimate.ms), estimate.resident ? 'resident' : 'cold load'];
  if (estimate.running === 0 && estimate.queued === 0) parts.push('idle');
  if (estimate.running > 0) parts.push(`${estimate.running} running`);
  if (estimate.queued > 0) parts.push(`${estimate.queued} queued`);
  return `${estimate.backend}: ${parts.join(', ')}`;
}
