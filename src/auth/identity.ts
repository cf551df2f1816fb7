import { BridgeError, canonicalModelName, type RequestIdentity } from '../contract/index.js';

/** Who sent a request, as far as the bridge knows (the request record's identity slot). */
export type Identity = RequestIdentity;

/**
 * "qwen2.5-coder:*" style patterns of model names: "*" stands for any text, everything else is
 * literal, letter case aside. A name without a tag is its ":latest", on either side, as Ollama
 * reads it: "llama3" matches "llama3:latest", and "llama3:latest" or "llama3:*" match "llama3".
 */
export function matchesPattern(pattern: string, name: string): boolean {
  // A pattern without "*" names one model: its tagless form is its ":latest" too.
  const literal = pattern.includes('*') ? pattern : canonicalModelName(pattern);
  const escaped = literal.split('*').map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&'));
  const matcher = new RegExp(`^${escaped.join('.*')}$`, 'i');
  return matcher.test(name) || matcher.test(canonicalModelName(name));
}

export function matchesAny(patterns: readonly string[], name: string): boolean {
  return patterns.some((pattern) => matchesPattern(pattern, name));
}

/** Whether this identity may use the model (its own allow-list, or its team's). */
export function modelAllowed(identity: Identity, model: string): boolean {
  return identity.models === undefined || matchesAny(identity.models, model);
}

/** The refusal of a model outside the identity's allow-list, as the client reads it, with why when the name alone does not say. */
export function modelNotAllowed(identity: Identity, model: string, why?: string): BridgeError {
  return new BridgeError(403, `${identity.name} may not use the model '${model}'${why === undefined ? '' : `: ${why}`}`, { code: 'model_not_allowed' });
}
