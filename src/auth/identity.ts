import type { LimitsConfig, Role } from '../config/schema.js';

/** Who sent a request, as far as the bridge knows. Never holds the key or token itself. */
export interface Identity {
  /** The person or service (key name, JWT subject), or "local" / "control". */
  name: string;
  team: string | null;
  role: Role;
  /** How the identity was established. */
  via: 'key' | 'api_key' | 'jwt' | 'control' | 'anonymous';
  /** Model patterns this identity may use; undefined: any model. */
  models: readonly string[] | undefined;
  cloud: 'allow' | 'never';
  limits: LimitsConfig | undefined;
}

/** "qwen2.5-coder:*" style patterns: "*" stands for any text; everything else is literal. */
export function matchesPattern(pattern: string, name: string): boolean {
  const escaped = pattern.split('*').map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&'));
  return new RegExp(`^${escaped.join('.*')}$`, 'i').test(name);
}

export function matchesAny(patterns: readonly string[], name: string): boolean {
  return patterns.some((pattern) => matchesPattern(pattern, name));
}

/** Whether this identity may use the model (its own allow-list and its team's, when set). */
export function modelAllowed(identity: Identity, model: string): boolean {
  return identity.models === undefined || matchesAny(identity.models, model);
}
