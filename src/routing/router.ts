import type { Config } from '../config/schema.js';
import type { Backend } from '../upstream/backend.js';
import type { ModelCatalog } from '../upstream/catalog.js';
import { Classifier, TIERS, type RequestSignals, type Tier } from './classify.js';

/**
 * Models the bridge lists itself, so that a client's model picker can hand the choice to the
 * router: "auto" classifies each request, "bridge/<tier>" pins a tier.
 */
export const VIRTUAL_MODELS: ReadonlyArray<{ name: string; tier: Tier | null; description: string }> = [
  { name: 'auto', tier: null, description: 'routed per request: simple, moderate or complex' },
  ...TIERS.map((tier) => ({ name: `bridge/${tier}`, tier, description: `always the ${tier} tier's model` })),
];

/** The virtual model a name refers to ("auto", "auto:latest", "bridge/simple"), if any. */
export function virtualModel(name: string): (typeof VIRTUAL_MODELS)[number] | undefined {
  const bare = name.replace(/:latest$/, '');
  return VIRTUAL_MODELS.find((v) => v.name === bare);
}

export function tierModelName(config: Config, tier: Tier): string {
  if (tier === 'moderate') return (config.models.moderate ?? config.models.complex).name;
  return config.models[tier].name;
}

export type Capability = 'tools' | 'vision' | 'insert' | 'completion' | 'embedding';

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
  backend: Backend;
  tier: Tier | null;
  reason: string;
}

export class RouteError extends Error {
  constructor(
    readonly status: 400 | 404 | 503,
    message: string,
  ) {
    super(message);
    this.name = 'RouteError';
  }
}

/** Picks the model and the backend for each request, and says why. */
export class Router {
  private readonly classifier: Classifier;

  constructor(
    private readonly config: Config,
    private readonly backends: readonly Backend[],
    private readonly catalog: ModelCatalog,
  ) {
    this.classifier = new Classifier(config.routing.classification);
  }

  private get primary(): Backend {
    return this.backends[0] as Backend;
  }

  /** The backend for a concrete model: one that has it installed, else the primary (which answers 404 itself). */
  async backendFor(model: string): Promise<{ backend: Backend; why: string }> {
    if (!this.config.dual_gpu) return { backend: this.primary, why: `${this.primary.name} is the primary (dual-GPU off)` };
    const holders = await this.catalog.holders(model);
    const chosen = holders[0];
    if (chosen === undefined) return { backend: this.primary, why: `no backend lists it; ${this.primary.name} is the primary` };
    return { backend: chosen, why: `${chosen.name} has it` };
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
      const { backend, why } = await this.backendFor(model);
      return { requestedModel: model, model, backend, tier: null, reason: `model '${model}' requested; ${why}` };
    }

    const classified = virtual.tier === null ? this.classifier.classify(input.signals) : { tier: virtual.tier, reason: `${virtual.tier}: pinned by '${virtual.name}'` };
    let tier = classified.tier;
    let reason = classified.reason;
    // Escalate while the tier's model lacks what the request uses (tools, images).
    for (let i = TIERS.indexOf(tier); i < TIERS.length; i++) {
      const candidate = TIERS[i] as Tier;
      const capabilities = await this.capabilitiesOf(tierModelName(this.config, candidate));
      const missing = input.needs.filter((need) => capabilities !== undefined && !capabilities.includes(need));
      if (missing.length === 0) {
        if (candidate !== tier) reason += `; ${tier} model lacks ${input.needs.join(', ')}, using ${candidate}`;
        tier = candidate;
        break;
      }
    }
    const model = tierModelName(this.config, tier);
    if ((await this.catalog.holders(model)).length === 0) {
      throw new RouteError(404, `model '${model}' of the ${tier} tier (for '${input.requestedModel}') is not installed on any backend; pull it or change models.${tier}`);
    }
    const { backend, why } = await this.backendFor(model);
    return { requestedModel: input.requestedModel, model, backend, tier, reason: `${reason}; ${why}` };
  }
}
