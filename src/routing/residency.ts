import type { Config } from '../config/schema.js';
import { sameModel, TIERS, type RoutingSettings, type Tier } from '../contract/index.js';

type TierConfig = Config['models']['simple'];

const GIB = 1024 ** 3;
/** Service-time seed of a model no tier names an expected_latency_ms for. */
const DEFAULT_SERVICE_MS = 5_000;

/** The config of the tier whose current model is `model` (the first such tier), if any. */
export function tierConfigOf(config: Config, settings: RoutingSettings, model: string): TierConfig | undefined {
  const tier = TIERS.find((t) => sameModel(settings.models[t], model));
  return tier === undefined ? undefined : tierConfig(config, tier);
}

function tierConfig(config: Config, tier: Tier): TierConfig {
  return tier === 'moderate' ? (config.models.moderate ?? config.models.complex) : config.models[tier];
}

/** The scheduler's guesses before anything was measured: expected_latency_ms and a size (Ollama's, else vram_gb). */
export function seedFor(
  config: Config,
  settings: RoutingSettings,
  model: string,
  reportedSize: number | undefined,
): { serviceMs: number; sizeBytes: number | undefined } {
  const tier = tierConfigOf(config, settings, model);
  return {
    serviceMs: tier?.expected_latency_ms ?? DEFAULT_SERVICE_MS,
    sizeBytes: reportedSize ?? (tier?.vram_gb === undefined ? undefined : tier.vram_gb * GIB),
  };
}

/**
 * Sets keep_alive and num_ctx of a native Ollama body so that the model stays put: Ollama reloads
 * a model whenever num_ctx differs from the loaded one. The context is the largest of what the
 * client asked for and the tier's num_ctx; when the model is already loaded with at least that
 * much, the loaded size is used instead. The tier's keep_alive (e.g. -1 to pin ghost text's
 * model) replaces the client's.
 */
export function normalizeResidency(body: Record<string, unknown>, tier: TierConfig | undefined, loadedContext: number | undefined): Record<string, unknown> {
  const options = typeof body.options === 'object' && body.options !== null ? { ...(body.options as Record<string, unknown>) } : {};
  const asked = typeof options.num_ctx === 'number' && options.num_ctx > 0 ? options.num_ctx : 0;
  let context = Math.max(asked, tier?.num_ctx ?? 0);
  if (loadedContext !== undefined && loadedContext >= context) context = loadedContext;
  const result: Record<string, unknown> = { ...body };
  if (context > 0) result.options = { ...options, num_ctx: context };
  if (tier?.keep_alive !== undefined) result.keep_alive = tier.keep_alive;
  return result;
}
