import type { Config } from '../config/schema.js';
import type { Backend } from '../upstream/backend.js';
import type { ModelCatalog } from '../upstream/catalog.js';
import { Classifier, TIERS, type RequestSignals, type Tier } from './classify.js';
import { BridgeError, type RoutingSettings } from '../contract/index.js';
export type { RoutingSettings } from '../contract/index.js';

/**
 * Models the bridge lists itself, so that a client's model picker can hand the choice to the
 * router: "auto" classifies each request, "bridge/<tier>" pins a tier.
 */
export const VIRTUAL_MODELS: ReadonlyArray<{ name: string; tier: Tier | null; description: string }> = [
  { name: 'auto', tier: null, description: 'routed per request: simple, moderate or complex' },
  ...TIERS.map((tier) => ({ name: `bridge/${tier}`, tier, description: `always the ${tier} tier's model` })),
];

/** The virtual model a name refers to ("auto", "Auto", "auto:latest", "bridge/simple"), if any: a name a user typed may differ in case or spaces. */
export function virtualModel(name: string): (typeof VIRTUAL_MODELS)[number] | undefined {
  const bare = name
    .trim()
    .toLowerCase()
    .replace(/:latest$/, '');
  return VIRTUAL_MODELS.find((v) => v.name === bare);
}

export type Capability = 'tools' | 'vision' | 'insert' | 'completion' | 'embedding';

export function settingsFrom(config: Config): RoutingSettings {
  return {
    dualGpu: config.dual_gpu,
    fallbackEnabled: config.fallback.enabled,
    models: {
      simple: config.models.simple.name,
      moderate: (config.models.moderate ?? config.models.complex).name,
      complex: config.models.complex.name,
    },
  };
}

export interface RouteInput {
  requestedModel: string;
  signals: RequestSignals;
  /** Capabilities the request uses; a virtual model escalates to a tier whose model has them. */
  needs: readonly Capability[];
}

export interface RouteDecision {
  requestedModel: string;
  /** The real model that answers. */
  model: string;
  /** Backends to try, best first; empty when none can take traffic. */
  candidates: Backend[];
  tier: Tier | null;
  reason: string;
  /** Why this model: the classification, or the model the client named. */
  modelReason: string;
  /** Why the candidates are in this order; the scheduler's estimates replace it unless they tie. */
  rankReason: string;
  /** Whether any candidate may serve it (dual-GPU on), or the first one only, the rest as failover. */
  spread: boolean;
  /** Candidates whose GPU lacks the free VRAM to load the model: chosen only when no other can be. */
  noRoom: string[];
}

/**
 * The backends the scheduler may choose from, of those still usable in the router's order: with
 * dual-GPU on, every one whose GPU has room to load the model (all of them when none has: the
 * VRAM check decides only while there is a choice); with it off, the first one.
 */
export function schedulerChoices<B extends { name: string }>(spread: boolean, noRoom: readonly string[], usable: readonly B[]): B[] {
  if (!spread) return usable.slice(0, 1);
  const roomy = usable.filter((b) => !noRoom.includes(b.name));
  return roomy.length > 0 ? roomy : [...usable];
}

/** The backends for a model, best first, and why. */
export interface Ranking {
  candidates: Backend[];
  why: string;
  /** Backends whose GPU lacks the VRAM to load the model. */
  noRoom: string[];
  /** Whether any backend lists the model (not asked when no backend can take traffic). */
  installed: boolean;
}

/** No model or backend for the request; clients read it as an unknown model. */
export class RouteError extends BridgeError {
  constructor(status: 400 | 404 | 503, message: string) {
    super(status, message, { code: 'model_not_found' });
    this.name = 'RouteError';
  }
}

/** Picks the model and the order of backends for each request, and says why. */
export class Router {
  private readonly classifier: Classifier;

  constructor(
    private readonly config: Config,
    private readonly backends: readonly Backend[],
    private readonly catalog: ModelCatalog,
    readonly settings: RoutingSettings,
    /** Whether a cold load of the model fits in the backend's free VRAM (null: no figures). */
    private readonly coldLoadFits: (backend: Backend, model: string) => boolean | null = () => null,
    /** A GPU's index from its index or UUID (the GPU monitor knows both), when known. */
    private readonly gpuIndexOf: (gpu: number | string) => number | undefined = (gpu) => (typeof gpu === 'number' ? gpu : undefined),
  ) {
    this.classifier = new Classifier(config.routing.classification);
  }

  private get primary(): Backend {
    return this.backends[0] as Backend;
  }

  /**
   * The GPU a tier prefers (index or UUID): a backend's `gpu`, the same GPU named the other way
   * (one by index, the other by UUID), or its "gpuN" name.
   */
  private prefers(tier: Tier | null, backend: Backend): boolean {
    if (tier === null) return false;
    const preference = (tier === 'moderate' ? (this.config.models.moderate ?? this.config.models.complex) : this.config.models[tier]).gpu_preference;
    if (preference === undefined) return false;
    if (backend.gpu === preference || backend.name === `gpu${preference}`) return true;
    const index = backend.gpu === null ? undefined : this.gpuIndexOf(backend.gpu);
    return index !== undefined && index === this.gpuIndexOf(preference);
  }

  /**
   * Orders the backends for `model`: only those that can take traffic (circuit not open), healthy
   * ones before failing ones; among them those that have the model installed (any, if none has
   * it); then the one that already holds it in memory, the tier's preferred GPU, the fewest
   * requests in flight, the higher weight. With dual-GPU off the primary comes first and the
   * others follow only as failover for retries.
   */
  async rank(model: string, tier: Tier | null): Promise<Ranking> {
    const notes: string[] = [];
    // Asked once, and only after the backends were checked: a check may bring one back, and a
    // lookup while all are down would remember the model as missing.
    let listed: ReadonlySet<string> | undefined;
    const listing = async (): Promise<ReadonlySet<string>> => (listed ??= new Set((await this.catalog.holders(model)).map((b) => b.name)));
    if (!this.settings.dualGpu) {
      const primary = await this.available([this.primary], model);
      const spare = this.backends.length > 1 ? await this.available(this.backends.slice(1), model) : [];
      const holders = await listing();
      const standby = this.ordered(model, tier, spare, holders);
      const installed = holders.size > 0;
      if (primary.length > 0)
        return { candidates: [this.primary, ...standby], why: `${this.primary.name} is the primary (dual-GPU off)`, noRoom: [], installed };
      if (standby.length > 0)
        return {
          candidates: standby,
          why: `primary ${this.primary.name} is ${this.stateOf(this.primary, model)}; failing over to ${standby[0]?.name}`,
          noRoom: [],
          installed,
        };
    }
    const available = await this.available(this.settings.dualGpu ? this.backends : [this.primary], model);
    if (available.length === 0) {
      const states = this.backends.map((b) => `${b.name} ${b.refusal(model) ?? b.health.status}`);
      return { candidates: [], why: `no backend can take traffic: ${states.join('; ')}`, noRoom: [], installed: listed !== undefined && listed.size > 0 };
    }

    const holders = await listing();
    const installed = holders.size > 0;
    if (!available.some((b) => holders.has(b.name))) notes.push('no backend lists the model');
    const ordered = this.ordered(model, tier, available, holders);
    const chosen = ordered[0] as Backend;
    if (this.holds(chosen, model)) notes.push(`${chosen.name} holds the model`);
    else if (this.prefers(tier, chosen)) notes.push(`${chosen.name} is the preferred GPU`);
    else notes.push(`${chosen.name} chosen`);
    const noRoom = ordered.filter((b) => !this.holds(b, model) && this.coldLoadFits(b, model) === false).map((b) => b.name);
    for (const other of ordered.slice(1)) {
      if (noRoom.includes(other.name)) notes.push(`${other.name} lacks VRAM for a cold load`);
    }
    for (const other of ordered.slice(1)) {
      if (other.inFlightCount > chosen.inFlightCount) notes.push(`${other.name} busy (${other.inFlightCount} in flight)`);
    }
    for (const down of this.backends.filter((b) => !b.canTake(model))) notes.push(`${down.name} ${this.stateOf(down, model)}`);
    return { candidates: ordered, why: notes.join('; '), noRoom, installed };
  }

  /** Whether `backend` has `model` in memory, under its own name or another name of its file there. */
  private holds(backend: Backend, model: string): boolean {
    return backend.hasLoaded(model, this.catalog.digestOf(model, backend.name));
  }

  /** Backends that have the model first (all, if none has it), then by the preference order above. */
  private ordered(model: string, tier: Tier | null, available: readonly Backend[], holders: ReadonlySet<string>): Backend[] {
    const withModel = available.filter((b) => holders.has(b.name));
    const eligible = withModel.length > 0 ? withModel : available;
    // One backend (the common single-GPU setup) has no order to work out.
    if (eligible.length < 2) return [...eligible];
    const score = (b: Backend): number[] => {
      const held = this.holds(b, model);
      return [
        b.health.status === 'failing' || b.modelFailing(model) ? 0 : 1,
        held ? 1 : 0,
        held || this.coldLoadFits(b, model) !== false ? 1 : 0,
        this.prefers(tier, b) ? 1 : 0,
        -b.inFlightCount,
        b.weight,
      ];
    };
    return eligible
      .map((backend, index) => ({ backend, key: [...score(backend), -index] }))
      .sort((a, b) => {
        for (let i = 0; i < a.key.length; i++) if (a.key[i] !== b.key[i]) return (b.key[i] as number) - (a.key[i] as number);
        return 0;
      })
      .map((entry) => entry.backend);
  }

  /**
   * The backends of `pool` that can take a request for `model` now. When none can, the ones
   * marked down are checked once more on the spot (a refused connection costs a millisecond), so a
   * backend that came back is used at once instead of after the next health round; at most once
   * per health interval, since one that hangs costs the whole check timeout.
   */
  private async available(pool: readonly Backend[], model: string): Promise<Backend[]> {
    const ready = pool.filter((b) => b.canTake(model));
    if (ready.length > 0) return ready;
    const { interval_seconds: interval, timeout_seconds: timeout } = this.config.routing.health;
    await Promise.all(pool.filter((b) => b.health.status === 'down').map((b) => b.recheck(timeout * 1000, interval * 1000)));
    return pool.filter((b) => b.canTake(model));
  }

  /** A backend's state as a reason reads it: "down", or "failing" for this model only. */
  private stateOf(backend: Backend, model: string): string {
    if (!backend.health.canTake() || backend.health.status !== 'healthy') return backend.health.status;
    return backend.canTake(model) ? 'healthy' : `failing for ${model}`;
  }

  private async capabilitiesOf(model: string): Promise<string[] | undefined> {
    const holder = (await this.catalog.holders(model))[0];
    if (holder === undefined) return undefined;
    try {
      return (await this.catalog.show(model, holder)).capabilities ?? [];
    } catch {
      return undefined;
    }
  }

  async route(input: RouteInput): Promise<RouteDecision> {
    const virtual = virtualModel(input.requestedModel);
    if (virtual === undefined) {
      const model = input.requestedModel;
      const { candidates, why, noRoom } = await this.rank(model, null);
      const modelReason = `model '${model}' requested`;
      return {
        requestedModel: model,
        model,
        candidates,
        tier: null,
        reason: `${modelReason}; ${why}`,
        modelReason,
        rankReason: why,
        spread: this.settings.dualGpu,
        noRoom,
      };
    }

    const classified =
      virtual.tier === null ? this.classifier.classify(input.signals) : { tier: virtual.tier, reason: `${virtual.tier}: pinned by '${virtual.name}'` };
    let tier = classified.tier;
    let reason = classified.reason;
    // Escalate while the tier's model lacks what the request uses (tools, images).
    let capable = false;
    for (let i = TIERS.indexOf(tier); i < TIERS.length && !capable; i++) {
      const candidate = TIERS[i] as Tier;
      const capabilities = await this.capabilitiesOf(this.settings.models[candidate]);
      capable = input.needs.every((need) => capabilities === undefined || capabilities.includes(need));
      if (capable && candidate !== tier) {
        reason += `; ${tier} model lacks ${input.needs.join(', ')}, using ${candidate}`;
        tier = candidate;
      }
    }
    // Ollama's refusal that follows then has its explanation.
    if (!capable) reason += `; no model from the ${tier} tier up has ${input.needs.join(', ')}, staying on ${tier}`;
    const model = this.settings.models[tier];
    const { candidates, why, noRoom, installed } = await this.rank(model, tier);
    if (candidates.length > 0 && !installed) {
      throw new RouteError(
        404,
        `model '${model}' of the ${tier} tier (for '${input.requestedModel}') is not installed on any backend; pull it or change models.${tier}`,
      );
    }
    return {
      requestedModel: input.requestedModel,
      model,
      candidates,
      tier,
      reason: `${reason}; ${why}`,
      modelReason: reason,
      rankReason: why,
      spread: this.settings.dualGpu,
      noRoom,
    };
  }

  /**
   * Every real model a generation asked for `requested` can run: the name itself, or for a virtual
   * name the model of each tier it can end on. "auto" can be classified into any tier, and a
   * request needing what its tier's model lacks (tools, images, fill-in-the-middle) moves up.
   */
  modelsFor(requested: string): string[] {
    const virtual = virtualModel(requested);
    if (virtual === undefined) return [requested];
    return TIERS.slice(virtual.tier === null ? 0 : TIERS.indexOf(virtual.tier)).map((tier) => this.settings.models[tier]);
  }

  /**
   * The real model that computes embeddings for `requested`: a virtual name means models.embedding
   * when configured, else the model of its tier ("auto": the simple tier's). Always the same model
   * for one name, since vectors of different models cannot be compared.
   */
  embeddingModel(requested: string): string {
    const virtual = virtualModel(requested);
    if (virtual === undefined) return requested;
    return this.config.models.embedding?.name ?? this.settings.models[virtual.tier ?? 'simple'];
  }
}
