/**
 * The shapes the bridge's control API speaks (state, history, GPU figures, actions): plain data,
 * no runtime dependencies, so every layer, the dashboard and the tray can import them without seeing Node.
 */

import type { Surface } from './request.js';

export const TIERS = ['simple', 'moderate', 'complex'] as const;
export type Tier = (typeof TIERS)[number];

/** Scheduling lanes, highest first: ghost text, chat turns, work nobody watches. */
export const LANES = ['fim', 'interactive', 'background'] as const;
export type Lane = (typeof LANES)[number];

/** One point of a GPU's history, small enough to keep an hour of them per GPU. */
export interface GpuPoint {
  /** Milliseconds since the epoch. */
  t: number;
  memoryUsedBytes: number | null;
  utilizationRatio: number | null;
  temperatureCelsius: number | null;
  powerWatts: number | null;
}

/** A GPU another tool could see but whose live figures nobody reports (no nvidia-smi). */
export interface GpuController {
  vendor: string;
  model: string;
}

/** The machine's RAM and CPU (systeminformation), for the same dashboard. */
export interface SystemLoad {
  memoryTotalBytes: number;
  memoryUsedBytes: number;
  cpuLoadRatio: number;
}

export interface GpuStatus {
  source: 'nvidia-smi' | 'systeminformation' | 'none';
  /** True only when live memory and utilization figures come in. */
  live: boolean;
  /** What the dashboard says about the source, in words. */
  message: string;
  gpus: GpuReading[];
  controllers: GpuController[];
  processes: ComputeApp[];
  lastSampleAt: string | null;
  lastError: string | null;
  system: SystemLoad | null;
}

export interface PlacedModel {
  name: string;
  sizeBytes: number;
  vramBytes: number;
  contextLength: number | null;
  expiresAt: string;
}

/** Which models one Ollama instance holds, on which GPU, using how much. */
export interface Placement {
  backend: string;
  gpu: { index: number; uuid: string | null; name: string | null } | null;
  /** How the GPU was found: the instance the bridge started, the config, or its processes. */
  gpuFrom: 'managed' | 'config' | 'processes' | null;
  models: PlacedModel[];
  /** GPU memory of the instance's processes (nvidia-smi's per-process figures). */
  processVramBytes: number | null;
}

export type InstanceState = 'stopped' | 'starting' | 'running' | 'adopted' | 'stopping' | 'crashed' | 'failed';

export interface InstanceSnapshot {
  name: string;
  state: InstanceState;
  pid: number | null;
  port: number;
  device: string | null;
  restarts: number;
  lastExit: string | null;
  logFile: string;
  message: string | null;
  /** When a crashed instance is started again on its own (ISO time); null in every other state. */
  restartAt: string | null;
}

/** One routed request, as the dashboard and the history file keep it. No prompt or answer text. */
export interface HistoryRecord {
  id: string;
  time: string;
  /** The client's name, normalized (copilot, claude-code, codex, continue, ...; other when unknown). */
  client: string | null;
  /** The client's User-Agent. */
  userAgent: string | null;
  /** Copilot's X-Interaction-Type (conversation-agent, conversation-subagent, conversation-background, ...). */
  interaction: string | null;
  /** Copilot's OpenAI-Intent (conversation-panel, agent, inline, edits, summary, ...). */
  intent: string | null;
  /** The client's own id for the request (X-Request-Id, or Codex's X-Client-Request-Id). */
  clientRequestId: string | null;
  surface: Surface;
  path: string;
  requestedModel: string;
  tier: Tier | null;
  reason: string;
  backend: string | null;
  gpu: number | string | null;
  /** The model that answered. */
  model: string;
  retries: number;
  /** The cloud provider that answered, when local backends could not. */
  fallback: string | null;
  status: number;
  /** dropped: ghost text answered empty by the scheduler (superseded, or waited past fim_max_wait_ms). */
  outcome: 'ok' | 'error' | 'cancelled' | 'dropped';
  error: string | null;
  /** The scheduling lane; null in records written before lanes existed. */
  lane?: Lane | null;
  /** Milliseconds the request waited in the bridge's queue for a free slot. */
  queueMs?: number | null;
  /** Milliseconds until the first answer line. */
  ttftMs: number | null;
  totalMs: number;
  tokensIn: number | null;
  tokensOut: number | null;
  tokensPerSecond: number | null;
  /** Who asked: a key's name or a token's subject (never the key or token); null when nobody signed in. */
  user: string | null;
  team: string | null;
  /** Why the request was kept off cloud providers, when a policy did. */
  localOnly: string | null;
  /** Time the request held a GPU, and the GPU energy charged to it (its share while others ran too). */
  gpuMs: number | null;
  energyJoules: number | null;
  /** What the tokens would have cost at the reference cloud model, the electricity, and the difference. */
  cloudCostDollars: number | null;
  energyCostDollars: number | null;
  savedDollars: number | null;
}

/** The figures the Usage view adds up, for everyone or one team or person. */
export interface UsageFigures {
  requests: number;
  errors: number;
  tokensIn: number;
  tokensOut: number;
  gpuSeconds: number;
  energyJoules: number;
  cloudCostDollars: number;
  energyCostDollars: number;
  savedDollars: number;
  /** An estimate: generated tokens x accounting.seconds_saved_per_output_token. */
  timeSavedSeconds: number;
}

export interface UsageReport {
  from: string;
  to: string;
  /** "everyone" for admins and viewers; a user sees their own requests only. */
  scope: 'everyone' | 'own';
  /**
   * Time of the oldest request the bridge still has a record of, when that is after `from` (older
   * records were rotated out of the history files, or the history began later): the figures cover
   * the range from then on only. Null when the history reaches back to `from`.
   */
  coversSince: string | null;
  totals: UsageFigures;
  /** accounting.hardware_cost_per_month for the days of the range. */
  hardwareCostDollars: number;
  /** (savings - hardware cost) / hardware cost; null without a hardware cost. */
  roi: number | null;
  byTeam: Array<UsageFigures & { team: string }>;
  byPerson: Array<UsageFigures & { name: string; team: string }>;
  topModels: Array<{ model: string; requests: number; tokensOut: number }>;
  /** Requests by weekday (0 = Monday) and hour of day, in the time zone the caller asked for. */
  heatmap: number[][];
  /** Where the cloud-equivalent prices come from. */
  prices: { date: string; secondsSavedPerOutputToken: number; kwhPrice: number };
}

/** Who the dashboard is signed in as, and what that role may do. */
export interface WhoAmI {
  name: string;
  team: string | null;
  role: 'admin' | 'user' | 'viewer';
  /** Whether the bridge asks clients for a key or token at all. */
  authRequired: boolean;
  cloud: 'allow' | 'never';
  can: { actions: boolean; generate: boolean; everyonesUsage: boolean };
}

export interface BackendSnapshot {
  name: string;
  url: string;
  gpu: number | string | null;
  weight: number;
  inFlight: number;
  requests: number;
  failures: number;
  health: HealthSnapshot;
  /** Models in memory at the last check (/api/ps). */
  loaded: string[];
}

export type BackendStatus = 'unknown' | 'healthy' | 'failing' | 'down';

export type CircuitState = 'closed' | 'open' | 'half-open';

export interface HealthSnapshot {
  status: BackendStatus;
  circuit: CircuitState;
  consecutiveFailures: number;
  lastError: string | null;
  lastCheckAt: string | null;
  /** Smoothed time to response headers of recent requests. */
  latencyMs: number | null;
  /** Models that answered errors here lately; each has a circuit of its own. */
  models: ModelCircuitSnapshot[];
}

export interface ModelCircuitSnapshot {
  model: string;
  circuit: CircuitState;
  consecutiveFailures: number;
  lastError: string | null;
}

/** Settings the user can switch while the bridge runs (tray, dashboard); they start from the config. */
export interface RoutingSettings {
  dualGpu: boolean;
  fallbackEnabled: boolean;
  models: Record<Tier, string>;
}

export interface FitCheck {
  /** null when there are no VRAM figures to check against (no nvidia-smi, or the GPU is unknown). */
  fits: boolean | null;
  needBytes: number | null;
  freeBytes: number | null;
  gpu: number | null;
  message: string;
}

/** What an action says back besides the new state (the fit check of a preload, for example). */
export interface ActionResult {
  message: string;
  fit?: FitCheck;
}

/** One GPU as nvidia-smi reports it; a field the GPU does not support is null. */
export interface GpuReading {
  index: number;
  uuid: string | null;
  name: string | null;
  busId: string | null;
  memoryTotalBytes: number | null;
  memoryUsedBytes: number | null;
  memoryFreeBytes: number | null;
  /** Held back by the driver: total is used + free + reserved. */
  memoryReservedBytes: number | null;
  utilizationRatio: number | null;
  memoryUtilizationRatio: number | null;
  temperatureCelsius: number | null;
  powerWatts: number | null;
  powerLimitWatts: number | null;
  graphicsClockMhz: number | null;
  memoryClockMhz: number | null;
  pstate: string | null;
}

export interface ComputeApp {
  pid: number;
  processName: string;
  usedMemoryBytes: number | null;
  gpuUuid: string;
}

/** One (backend, model) queue of the scheduler with its measured estimates. */
export interface SchedulerPool {
  backend: string;
  model: string;
  /** Requests Ollama runs at once for this model there (backends[].parallel). */
  slots: number;
  running: number;
  queued: Record<Lane, number>;
  /** Moving average of dispatch-to-end time of one request. */
  serviceMs: number;
  /** Moving average of Ollama's load_duration of cold loads here; null before one was seen. */
  loadMs: number | null;
  /** Moving average of prompt tokens per second here; null before one was measured. */
  promptTokensPerSecond: number | null;
  /** Finished requests the averages are made of. */
  samples: number;
}

export interface SchedulerSnapshot {
  enabled: boolean;
  ageBoostMs: number;
  fimMaxWaitMs: number;
  /** Requests waiting in the bridge now, over all queues. */
  queued: number;
  pools: SchedulerPool[];
  /** Requests that left a queue without being sent upstream, by why. */
  dropped: { superseded: number; deadline: number; cancelled: number };
}

/** What each lane is called in the dashboard and the tray. */
export const LANE_LABELS: Record<Lane, string> = { fim: 'ghost text', interactive: 'chat', background: 'background' };

/** Requests waiting per lane, over every queue or over those of one backend. */
export function queuedPerLane(scheduler: SchedulerSnapshot, backend?: string): Record<Lane, number> {
  const totals: Record<Lane, number> = { fim: 0, interactive: 0, background: 0 };
  for (const pool of scheduler.pools) {
    if (backend !== undefined && pool.backend !== backend) continue;
    for (const lane of LANES) totals[lane] += pool.queued[lane];
  }
  return totals;
}

/** "1 ghost text, 3 chat": the lanes that have requests waiting; '' when none do. */
export function describeQueued(queued: Record<Lane, number>): string {
  return LANES.filter((lane) => queued[lane] > 0)
    .map((lane) => `${queued[lane]} ${LANE_LABELS[lane]}`)
    .join(', ');
}

export interface BridgeState {
  /**
   * Counts up with each state the bridge takes: of two, the higher is the newer. A read's answer
   * can arrive after a newer state came down the event stream.
   */
  revision: number;
  startedAt: string;
  url: string;
  /** A tier's model is null where the identity reading the state may not use it (its model allow-list). */
  settings: Omit<RoutingSettings, 'models'> & { models: Record<Tier, string | null> };
  backends: BackendSnapshot[];
  gpu: GpuStatus;
  placements: Placement[];
  ollama: InstanceSnapshot[];
  /** Installed models: name, size and the backends that have it. */
  models: Array<{ name: string; sizeBytes: number; backends: string[] }>;
  fallbackProviders: string[];
  requests: RequestCounters;
  historyRecords: number;
  /** Who may never reach a cloud provider (the global switch is settings.fallbackEnabled). */
  cloudPolicy: { header: string; neverModels: string[]; localOnlyTeams: string[]; localOnlyKeys: string[] };
  /** Since local midnight, for the tray tooltip. */
  today: { requests: number; savedDollars: number };
  scheduler: SchedulerSnapshot;
}

export interface RequestCounters {
  total: number;
  inFlight: number;
}

/** The payload of each control action (validated by the bridge with the same shapes). */
export interface ActionPayloads {
  setDualGpu: { enabled: boolean };
  setFallback: { enabled: boolean };
  setTierModel: { tier: Tier; model: string };
  preloadModel: { backend: string; model: string; keepAlive?: string | number; force?: boolean };
  unloadModel: { backend: string; model: string };
  startOllama: { backend: string };
  stopOllama: { backend: string };
  restartOllama: { backend: string };
}

export type ActionName = keyof ActionPayloads;

/** The answer to an action: what it did, and the state after it. */
export interface ActionResponse {
  ok: true;
  result: ActionResult;
  state: BridgeState;
}

/** What the event stream (/bridge/api/events) sends. */
export interface BridgeEvents {
  /** The whole state, at most a few times a second, whenever something in it changed. */
  state: BridgeState;
  /** One new routing history record. */
  history: HistoryRecord;
}
