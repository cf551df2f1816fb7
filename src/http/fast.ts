import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ApiRoute } from '../api/call.js';
import { readJsonBody } from './body.js';

/** What the fast path does around a handler: the same steps, in the same order, as the express app. */
export interface FastPathSteps {
  /** The request's record, id header and counters, and what runs when it closes. */
  begin(req: IncomingMessage & { body?: unknown }, res: ServerResponse, path: string): void;
  /** Host and origin checks: false when it answered (a preflight); a refusal is thrown. */
  allowed(req: IncomingMessage, res: ServerResponse): boolean;
  /** Who is asking and whether their role may call this path (before the body is read); a refusal is thrown. */
  authorize(req: IncomingMessage, res: ServerResponse, path: string): Promise<void>;
  /** The identity's and team's limits (after the body, so a refusal names the model); a refusal is thrown. */
  admit(req: IncomingMessage & { body?: unknown }, res: ServerResponse, path: string): Promise<void>;
  bodyLimit: number;
  /** How long a body may take to arrive whole. */
  bodyTimeoutMs: number;
  /** Answers what a step threw, in the surface's shape. */
  answerError(thrown: unknown, req: IncomingMessage, res: ServerResponse): void;
}

interface ParamRoute {
  method: string;
  prefix: string;
  suffix: string;
  name: string;
  route: ApiRoute;
}

/**
 * The hot client routes served straight from node:http's request event: one map lookup on method
 * and path, then guard, body and handler, with plain IncomingMessage and ServerResponse. Express
 * costs more than the bridge's own work on a small request (its router walks every layer and it
 * swaps the prototypes of both objects on each request), so it keeps only the rest: the control
 * API, the dashboard, the pass-through routes. Anything not matched exactly (another method, a
 * trailing slash, other letter case) returns false and goes to express, which answers as before.
 */
export function fastPath(routes: readonly ApiRoute[], steps: FastPathSteps): (req: IncomingMessage, res: ServerResponse) => boolean {
  const exact = new Map<string, ApiRoute>();
  const withParam: ParamRoute[] = [];
  for (const route of routes) {
    const at = route.path.indexOf('/:');
    if (at < 0) {
      exact.set(`${route.method} ${route.path}`, route);
      continue;
    }
    const end = route.path.indexOf('/', at + 1);
    withParam.push({
      method: route.method,
      prefix: route.path.slice(0, at + 1),
      name: route.path.slice(at + 2, end < 0 ? undefined : end),
      suffix: end < 0 ? '' : route.path.slice(end),
      route,
    });
  }

  const serve = async (route: ApiRoute, req: IncomingMessage, res: ServerResponse, path: string, params: Record<string, string>): Promise<void> => {
    steps.begin(req, res, path);
    try {
      if (!steps.allowed(req, res)) return;
      await steps.authorize(req, res, path);
      const body = await readJsonBody(req, res, steps.bodyLimit, steps.bodyTimeoutMs);
      const call = Object.assign(req, { body, path, params });
      await steps.admit(call, res, path);
      await route.handler(call, res);
    } catch (thrown) {
      steps.answerError(thrown, req, res);
    }
  };

  return (req, res) => {
    const method = req.method;
    if (method !== 'GET' && method !== 'POST') return false;
    const url = req.url ?? '/';
    const query = url.indexOf('?');
    const path = query < 0 ? url : url.slice(0, query);
    let route = exact.get(`${method} ${path}`);
    let params: Record<string, string> = {};
    if (route === undefined) {
      for (const candidate of withParam) {
        if (candidate.method !== method || path.length <= candidate.prefix.length + candidate.suffix.length) continue;
        if (!path.startsWith(candidate.prefix) || !path.endsWith(candidate.suffix)) continue;
        const segment = path.slice(candidate.prefix.length, path.length - candidate.suffix.length);
        if (segment.includes('/')) continue;
        try {
          params = { [candidate.name]: decodeURIComponent(segment) };
        } catch {
          // Not decodable: express answers that one.
          return false;
        }
        route = candidate.route;
        break;
      }
    }
    if (route === undefined) return false;
    void serve(route, req, res, path, params);
    return true;
  };
}
