import type { RouteDecision } from '../routing/router.js';
import type { ModelCatalog } from '../upstream/catalog.js';

/** Ollama's `think`: on/off, or a level (gpt-oss reads levels; other thinking models only on/off). */
export type Think = boolean | 'low' | 'medium' | 'high';

/** A client's reasoning effort (OpenAI's reasoning_effort / reasoning.effort, Anthropic's output_config.effort) as `think`. */
export function thinkFromEffort(effort: string | null | undefined): Think | undefined {
  switch (effort) {
    case undefined:
    case null:
      return undefined;
    case 'none':
      return false;
    case 'minimal':
    case 'low':
      return 'low';
    case 'medium':
      return 'medium';
    default:
      // high, xhigh, max
      return 'high';
  }
}

/**
 * The `think` to send for the routed model, or undefined to send none: a model without the
 * `thinking` capability gets no `think` (Ollama would refuse the request), and a level becomes
 * plain `true` for model families that only switch thinking on and off.
 */
export async function thinkFor(think: Think | undefined, route: RouteDecision, catalog: ModelCatalog): Promise<Think | undefined> {
  if (think === undefined) return undefined;
  const backend = route.candidates[0];
  if (backend === undefined) return undefined;
  const show = await catalog.show(route.model, backend).catch(() => undefined);
  if (show === undefined || !(show.capabilities ?? []).includes('thinking')) return undefined;
  if (typeof think === 'string' && show.details?.family !== 'gptoss') return true;
  return think;
}
