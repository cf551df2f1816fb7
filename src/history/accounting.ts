import type { Config, PriceConfig } from '../config/schema.js';
import { sameModel, type HistoryRecord } from '../contract/index.js';
import type { Tier } from '../routing/classify.js';

/**
 * What the same tokens would have cost at a cloud provider, per tier, when `accounting.prices`
 * names neither the model nor its tier. List prices in US$ per million tokens as the providers
 * published them on PRICES_DATE; they change, so a team should put its own in the config.
 */
export const PRICES_DATE = '2025-06-01';
export const DEFAULT_PRICES: Record<Tier, Required<PriceConfig>> = {
  simple: { input: 0.15, output: 0.6, reference: 'OpenAI gpt-4o-mini' },
  moderate: { input: 2.5, output: 10, reference: 'OpenAI gpt-4o' },
  complex: { input: 3, output: 15, reference: 'Anthropic Claude Sonnet 4' },
};

/** The price of a model: its own entry, its tier's entry, then the shipped default of its tier. */
export function priceOf(config: Config, model: string, tier: Tier | null): PriceConfig & { reference: string } {
  const prices = config.accounting.prices;
  // Own entries only: a model named "constructor" or "toString" would otherwise find Object's member and cost NaN.
  const entry = (name: string): PriceConfig | undefined => (Object.hasOwn(prices, name) ? prices[name] : undefined);
  // The model's entry under any name Ollama takes for it ("Llama3" for "llama3:latest").
  const priced = Object.keys(prices).find((name) => sameModel(name, model));
  const modelEntry = priced === undefined ? undefined : entry(priced);
  const own = modelEntry ?? (tier === null ? undefined : entry(tier));
  if (own !== undefined) return { ...own, reference: own.reference ?? (modelEntry !== undefined ? model : `tier ${tier}`) };
  return DEFAULT_PRICES[tier ?? 'moderate'];
}

const JOULES_PER_KWH = 3_600_000;

/**
 * The money figures of one request. A cloud-served answer saved nothing: its cloud cost was real.
 * One whose token counts never came (cancelled, failed mid-answer) has no cloud equivalent, but
 * the energy it drew was spent all the same. `promptTokens` is the prompt counted once, as a cloud
 * bills a request with n choices (the record's tokensIn counts each choice's run).
 */
export function costOf(
  config: Config,
  record: Pick<HistoryRecord, 'model' | 'tier' | 'tokensIn' | 'tokensOut' | 'fallback' | 'energyJoules'>,
  promptTokens: number | null = record.tokensIn,
): Pick<HistoryRecord, 'cloudCostDollars' | 'energyCostDollars' | 'savedDollars'> {
  const tokensKnown = record.tokensIn !== null || record.tokensOut !== null;
  if (!tokensKnown && record.energyJoules === null) return { cloudCostDollars: null, energyCostDollars: null, savedDollars: null };
  const price = priceOf(config, record.model, record.tier);
  const cloud = tokensKnown ? ((promptTokens ?? 0) * price.input + (record.tokensOut ?? 0) * price.output) / 1e6 : null;
  const energy = ((record.energyJoules ?? 0) / JOULES_PER_KWH) * config.accounting.kwh_price;
  return { cloudCostDollars: cloud, energyCostDollars: energy, savedDollars: record.fallback === null ? (cloud ?? 0) - energy : 0 };
}

/** Time on a GPU and the energy it drew for one request. */
export interface EnergyUse {
  gpuMs: number;
  joules: number;
}

interface GpuState {
  /** The last power reading; held until the next one (the monitor samples every second or so). */
  watts: number | null;
  at: number;
  running: Set<Metering>;
}

interface Metering {
  started: number;
  joules: number;
}

/**
 * Splits each GPU's measured power between the requests running on it: between two events (a
 * power sample, a request starting or ending) the GPU draws its last sampled power, and each of
 * the n requests running then is charged 1/n of it.
 */
export class EnergyMeter {
  private readonly gpus = new Map<number, GpuState>();

  constructor(private readonly now: () => number = () => performance.now()) {}

  private gpu(index: number): GpuState {
    let state = this.gpus.get(index);
    if (state === undefined) this.gpus.set(index, (state = { watts: null, at: this.now(), running: new Set() }));
    return state;
  }

  private advance(state: GpuState, now: number): void {
    if (state.watts !== null && state.running.size > 0) {
      const share = (state.watts * (now - state.at)) / 1000 / state.running.size;
      for (const metering of state.running) metering.joules += share;
    }
    state.at = now;
  }

  /** A new power sample of each GPU (null where the GPU reports none). */
  sample(readings: ReadonlyArray<{ index: number; powerWatts: number | null }>): void {
    const now = this.now();
    for (const reading of readings) {
      const state = this.gpu(reading.index);
      this.advance(state, now);
      state.watts = reading.powerWatts;
    }
  }

  /** Starts charging a request to a GPU; the returned function stops it and tells what it used. */
  start(gpuIndex: number): () => EnergyUse {
    const state = this.gpu(gpuIndex);
    const now = this.now();
    this.advance(state, now);
    const metering: Metering = { started: now, joules: 0 };
    state.running.add(metering);
    let result: EnergyUse | undefined;
    return () => {
      if (result !== undefined) return result;
      const end = this.now();
      this.advance(state, end);
      state.running.delete(metering);
      result = { gpuMs: end - metering.started, joules: metering.joules };
      return result;
    };
  }
}
