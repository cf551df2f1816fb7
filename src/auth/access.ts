import { ROLES, type Role } from '../config/schema.js';
import type { Identity } from './identity.js';

/** Ollama's model management: changes what every user sees, so only admins may. */
const MANAGEMENT = /^\/api\/(pull|push|create|delete|copy|blobs)(\/|$)/;

/** Paths that run a model and so count against limits. */
const GENERATION = new Set([
  '/api/chat',
  '/api/generate',
  '/api/embed',
  '/api/embeddings',
  '/v1/chat/completions',
  '/chat/completions',
  '/v1/completions',
  '/v1/embeddings',
  '/v1/messages',
  '/v1/responses',
]);

/**
 * The path as express's router matches it: letter case aside, and a trailing slash ignored
 * ("/API/Delete/" runs /api/delete). Roles and limits are checked on this form, or another
 * spelling of a path would reach its handler without them.
 */
function routed(path: string): string {
  return path.toLowerCase().replace(/(.)\/+$/, '$1');
}

export function isGeneration(method: string, path: string): boolean {
  const route = routed(path);
  return method === 'POST' && (GENERATION.has(route) || /^\/v1\/engines\/[^/]+\/completions$/.test(route));
}

const ADMIN: readonly Role[] = ['admin'];
const READERS: readonly Role[] = ROLES;
const CLIENTS: readonly Role[] = ['admin', 'user'];

/**
 * The roles each part of the HTTP surface admits; null: open to anyone who passes the Host/Origin
 * guard (health probes for load balancers, the dashboard's static files, which hold no data).
 * - admin: everything, including control actions and model management;
 * - user: generation and model lists, and the dashboard's reads (history and usage: their own);
 * - viewer: the dashboard's reads and metrics, nothing that runs a model.
 */
export function rolesFor(method: string, requested: string): readonly Role[] | null {
  const path = routed(requested);
  if (path === '/health' || path.startsWith('/health/')) return null;
  if (path === '/' || path === '/ui' || path.startsWith('/ui/')) return null;
  if (path.startsWith('/bridge/api/actions/')) return ADMIN;
  if (path.startsWith('/bridge/api/') || path === '/metrics') return READERS;
  if (MANAGEMENT.test(path) && method !== 'GET' && method !== 'HEAD') return ADMIN;
  return CLIENTS;
}

/** Whether the identity may reach this path. */
export function allowed(identity: Identity, method: string, path: string): boolean {
  const roles = rolesFor(method, path);
  if (roles === null) return true;
  // Changing the bridge needs proof (the control token or an admin identity), never just "it came from this machine".
  if (roles === ADMIN && routed(path).startsWith('/bridge/api/actions/') && identity.via === 'anonymous') return false;
  return roles.includes(identity.role);
}

/** Whether the identity reads everyone's history and usage, or only its own. */
export function seesEveryone(identity: Identity): boolean {
  return identity.role !== 'user' || identity.via === 'anonymous';
}
