import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { GpuReading } from '../gpu/nvidia-smi.js';
import type { Config } from '../config/schema.js';
import { LANES, TIERS, type HistoryRecord, type Lane, type SchedulerSnapshot, type Tier } from '../contract/index.js';
import type { Backend } from '../upstream/backend.js';

/** Latency buckets from a fast inline completion to a slow cold-loaded answer, in seconds. */
const LATENCY_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300];

/**
 * Label values of the accounting series stay bounded: a team or person the config names keeps its
 * name; anyone else (a JWT subject, a team claim nobody configured) is "other"; nobody is "none".
 */
export function accountingLabels(config: Config): { team(team: string | null): string; user(user: string | null): string } {
  const teams = new Set([...Object.keys(config.auth.teams), ...config.auth.keys.flatMap((k) => (k.team === undefined ? [] : [k.team]))]);
  const users = new Set(config.auth.keys.map((k) => k.name));
  return {
    team: (team) => (team === null ? 'none' : teams.has(team) ? team : 'other'),
    user: (user) => (user === null ? 'none' : users.has(user) ? user : 'other'),
  };
}

/**
 * The bridge's Prometheus metrics, in a registry of its own (no process-wide default registry),
 * so several bridges can run in one process. Names follow the deployment document.
 */
interface Series {
  requests: { inc(): void };
  errors: { inc(): void };
  responseTime: { observe(value: number): void };
  firstToken: { observe(value: number): void };
  tokensIn: { inc(value: number): void };
  tokensOut: { inc(value: number): void };
  identityRequests: { inc(): void };
  energy: { inc(value: number): void };
  cloudEquivalent: { inc(value: number): void };
  saved: { inc(value: number): void };
}

export class BridgeMetrics {
  readonly registry = new Registry();
  private readonly requests: Counter<'tier' | 'model' | 'backend' | 'status' | 'outcome'>;
  private readonly errors: Counter<'tier' | 'model' | 'backend' | 'outcome'>;
  private readonly responseTime: Histogram<'tier' | 'backend'>;
  private readonly firstToken: Histogram<'tier' | 'backend'>;
  private readonly tokens: Counter<'direction' | 'model' | 'team'>;
  private readonly fallbacks: Counter<'provider'>;
  private readonly identityRequests: Counter<string>;
  private readonly energy: Counter<string>;
  private readonly saved: Counter<string>;
  private readonly cloudEquivalent: Counter<string>;
  private readonly rateLimited: Counter<'team'>;
  private readonly limitStoreFailures: Counter;
  private readonly labels: ReturnType<typeof accountingLabels>;
  private readonly perUser: boolean;

  private readonly series = new Map<string, Series>();
  private readonly queueWait: Histogram<'lane'>;

  /**
   * @param knownModel whether a model name is configured or installed: only those become label
   *   values (the rest count as "other"), so client input cannot add series without bound.
   * @param tierModels the model each tier routes to at start, so the error series exist (at 0)
   *   before the first error.
   */
  constructor(
    backends: readonly Backend[],
    gpus: () => readonly GpuReading[],
    private readonly knownModel: (name: string) => boolean,
    scheduler: () => SchedulerSnapshot,
    tierModels: Readonly<Record<Tier, string>>,
    config: Config,
  ) {
    const registers = [this.registry];
    this.labels = accountingLabels(config);
    this.perUser = config.accounting.per_user_metrics;
    // GPU gauges (names from the deployment document's alert rules), read from the monitor at scrape time.
    const gpuGauge = (name: string, help: string, value: (g: GpuReading) => number | null): void => {
      new Gauge({
        name,
        help,
        labelNames: ['gpu', 'uuid', 'name'],
        registers,
        collect() {
          this.reset();
          for (const gpu of gpus()) {
            const v = value(gpu);
            if (v !== null) this.set({ gpu: String(gpu.index), uuid: gpu.uuid ?? '', name: gpu.name ?? '' }, v);
          }
        },
      });
    };
    gpuGauge('gpu_memory_used_bytes', 'GPU memory in use', (g) => g.memoryUsedBytes);
    gpuGauge('gpu_memory_total_bytes', 'GPU memory in all', (g) => g.memoryTotalBytes);
    gpuGauge('gpu_utilization_ratio', 'GPU busy time over the last sample, 0 to 1', (g) => g.utilizationRatio);
    gpuGauge('gpu_temperature_celsius', 'GPU core temperature', (g) => g.temperatureCelsius);
    gpuGauge('gpu_power_watts', 'GPU power draw', (g) => g.powerWatts);
    this.requests = new Counter({
      name: 'copilot_bridge_requests_total',
      help: 'Routed requests by tier, model, backend, HTTP status and outcome (ok, error, cancelled by the client, dropped)',
      // The outcome apart from the status: a request the client left (ghost text at every
      // keystroke) still has status 200, and is no answer.
      labelNames: ['tier', 'model', 'backend', 'status', 'outcome'],
      registers,
    });
    this.errors = new Counter({
      name: 'copilot_bridge_errors_total',
      help: 'Routed requests that failed on the serving side (5xx, or an answer that broke after it started); a client error (4xx) is not one',
      labelNames: ['tier', 'model', 'backend', 'outcome'],
      registers,
    });
    this.responseTime = new Histogram({
      name: 'copilot_bridge_response_time_seconds',
      help: 'Time from request to the end of the answer (or its failure), of requests that ran to their end: not those the client cancelled or the scheduler dropped',
      labelNames: ['tier', 'backend'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.firstToken = new Histogram({
      name: 'copilot_bridge_time_to_first_token_seconds',
      help: 'Time from request to the first answer line',
      labelNames: ['tier', 'backend'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.tokens = new Counter({
      name: 'copilot_bridge_tokens_total',
      help: 'Prompt (in) and generated (out) tokens',
      labelNames: ['direction', 'model', 'team'],
      registers,
    });
    // Per-person labels only when asked for: one series per person multiplies every team's series.
    const accounting = this.perUser ? ['team', 'tier', 'user'] : ['team', 'tier'];
    this.identityRequests = new Counter({
      name: 'copilot_bridge_identity_requests_total',
      help: 'Requests by team (and person with accounting.per_user_metrics) and HTTP status',
      labelNames: [...accounting, 'status'],
      registers,
    });
    this.energy = new Counter({
      name: 'copilot_bridge_energy_joules_total',
      help: "GPU energy charged to requests (each request's share of the GPU's measured power)",
      labelNames: accounting,
      registers,
    });
    this.saved = new Counter({
      name: 'copilot_bridge_cost_saved_dollars_total',
      help: 'Cloud-equivalent cost minus energy cost of locally served requests',
      labelNames: accounting,
      registers,
    });
    this.cloudEquivalent = new Counter({
      name: 'copilot_bridge_cloud_equivalent_dollars_total',
      help: "What the requests' tokens would have cost at the reference cloud prices",
      labelNames: accounting,
      registers,
    });
    this.rateLimited = new Counter({
      name: 'copilot_bridge_rate_limited_total',
      help: 'Requests refused with 429 by a rate, token or concurrency limit',
      labelNames: ['team'],
      registers,
    });
    // Exported at 0 from the start: an alert on its increase needs a series before the first failure.
    this.limitStoreFailures = new Counter({
      name: 'copilot_bridge_limit_store_failures_total',
      help: 'Calls to the limit counter store (Redis, limits.redis_url) that failed; meanwhile requests are let through without limits',
      registers,
    });
    this.fallbacks = new Counter({ name: 'copilot_bridge_fallback_total', help: 'Requests answered by a cloud provider', labelNames: ['provider'], registers });
    // rate() of a series that does not exist yet is no result, not 0: an error-rate alert or panel
    // would stay silent until the first error. Every tier x backend starts at 0.
    for (const tier of TIERS) {
      for (const backend of backends) this.errors.inc({ tier, model: tierModels[tier], backend: backend.name, outcome: 'error' }, 0);
    }
    // Only configured or installed models are label values; several queues may add up in "other".
    const labelOf = (model: string): string => (knownModel(model) ? model : 'other');
    new Gauge({
      name: 'copilot_bridge_queue_depth',
      help: 'Requests waiting in the bridge for a free Ollama slot, per backend, model and lane',
      labelNames: ['backend', 'model', 'lane'],
      registers,
      collect() {
        this.reset();
        for (const pool of scheduler().pools) {
          for (const lane of LANES)
            if (pool.queued[lane] > 0 || pool.running > 0) this.inc({ backend: pool.backend, model: labelOf(pool.model), lane }, pool.queued[lane]);
        }
      },
    });
    this.queueWait = new Histogram({
      name: 'copilot_bridge_queue_wait_seconds',
      help: 'Time a request waited in the bridge before it was sent upstream',
      labelNames: ['lane'],
      buckets: [0, 0.01, ...LATENCY_BUCKETS],
      registers,
    });
    new Gauge({
      name: 'copilot_bridge_backend_up',
      help: '1 when the backend can take traffic (reachable, circuit not open)',
      labelNames: ['backend'],
      registers,
      collect() {
        for (const backend of backends) this.set({ backend: backend.name }, backend.health.canTake() ? 1 : 0);
      },
    });
  }

  observe(record: HistoryRecord): void {
    // Only configured or installed models become label values, so the series map stays bounded too.
    const model = this.knownModel(record.model) ? record.model : 'other';
    const series = this.seriesOf(record.tier ?? 'none', model, record.backend ?? 'none', String(record.status), record.outcome, record.team, record.user);
    series.requests.inc();
    // A failure on the serving side: a client's own 4xx (a rate limit, a request Ollama refused) is
    // counted by its status in requests_total, and must not make error-rate alerts fire.
    if (record.outcome === 'error' && !(record.status >= 400 && record.status < 500)) series.errors.inc();
    // A request the client left (ghost text at the next keystroke) lasted as long as the typing,
    // and one the scheduler dropped was answered empty at once: neither says how fast the bridge
    // answers, and both would pull the latency figures (dashboards, HighLatency) their way.
    if (record.outcome === 'ok' || record.outcome === 'error') series.responseTime.observe(record.totalMs / 1000);
    if (record.ttftMs !== null) series.firstToken.observe(record.ttftMs / 1000);
    if (record.tokensIn !== null) series.tokensIn.inc(record.tokensIn);
    if (record.tokensOut !== null) series.tokensOut.inc(record.tokensOut);
    if (record.fallback !== null) this.fallbacks.inc({ provider: record.fallback });
    series.identityRequests.inc();
    if (record.energyJoules !== null) series.energy.inc(record.energyJoules);
    if (record.cloudCostDollars !== null) series.cloudEquivalent.inc(record.cloudCostDollars);
    // A counter only goes up: a request whose energy cost more than its cloud equivalent adds nothing.
    if (record.savedDollars !== null && record.savedDollars > 0) series.saved.inc(record.savedDollars);
  }

  /** The series one request counts in, built once per label combination rather than label objects per call. */
  private seriesOf(
    tier: string,
    model: string,
    backend: string,
    status: string,
    outcome: HistoryRecord['outcome'],
    teamName: string | null,
    userName: string | null,
  ): Series {
    const team = this.labels.team(teamName);
    const user = this.perUser ? this.labels.user(userName) : '';
    const key = `${tier}\u0000${model}\u0000${backend}\u0000${status}\u0000${outcome}\u0000${team}\u0000${user}`;
    let series = this.series.get(key);
    if (series === undefined) {
      const who: Record<string, string> = this.perUser ? { team, tier, user } : { team, tier };
      series = {
        requests: this.requests.labels({ tier, model, backend, status, outcome }),
        errors: this.errors.labels({ tier, model, backend, outcome: 'error' }),
        responseTime: this.responseTime.labels({ tier, backend }),
        firstToken: this.firstToken.labels({ tier, backend }),
        tokensIn: this.tokens.labels({ direction: 'in', model, team }),
        tokensOut: this.tokens.labels({ direction: 'out', model, team }),
        identityRequests: this.identityRequests.labels({ ...who, status }),
        energy: this.energy.labels(who),
        cloudEquivalent: this.cloudEquivalent.labels(who),
        saved: this.saved.labels(who),
      };
      this.series.set(key, series);
    }
    return series;
  }

  limitStoreFailed(): void {
    this.limitStoreFailures.inc();
  }

  /** A request refused by one of the bridge's limits; counted where the limiter refuses, since a 429 of a cloud provider passed on looks alike in its record. */
  rateLimitedRequest(team: string | null): void {
    this.rateLimited.inc({ team: this.labels.team(team) });
  }

  observeQueueWait(lane: Lane, waitMs: number): void {
    this.queueWait.observe({ lane }, waitMs / 1000);
  }
}
