import type { IncomingHttpHeaders } from 'node:http';
import type { Identity } from './identity.js';
import { matchesAny } from './identity.js';

/** The request header with which a client asks that its request stay on local GPUs. */
export const LOCAL_ONLY_HEADER = 'x-bridge-local-only';

const YES = new Set(['1', 'true', 'yes', 'on']);

/**
 * Why this request must never reach a cloud provider, or null when it may. Checked in order:
 * the identity's own policy, its team's (folded into the identity), the request header, and
 * `fallback.never_models`.
 */
export function localOnlyReason(identity: Identity, headers: IncomingHttpHeaders, model: string, neverModels: readonly string[]): string | null {
  if (identity.cloud === 'never')
    return identity.team === null ? `${identity.name} is cloud: never` : `${identity.name} (team ${identity.team}) is cloud: never`;
  // Node joins a header sent more than once with ", ": any of its values asking for local is enough.
  const header = headers[LOCAL_ONLY_HEADER];
  if (typeof header === 'string' && header.split(',').some((value) => YES.has(value.trim().toLowerCase()))) return `${LOCAL_ONLY_HEADER} header`;
  if (matchesAny(neverModels, model)) return `${model} is in fallback.never_models`;
  return null;
}

/** Ollama's own cloud models: the "-cloud" / ":cloud" tags, or a listing with a remote_host. */
export function isOllamaCloudModel(model: string, listedRemote: boolean): boolean {
  return listedRemote || /[:-]cloud$/i.test(model);
}
