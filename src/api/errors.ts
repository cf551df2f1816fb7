import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import type { RequestHandler, Router as ExpressRouter } from 'express';
import { BridgeError, type Surface } from '../contract/index.js';
import { sendJson } from './call.js';

/**
 * Where a BridgeError becomes what the client reads. Each client-facing surface has its own error
 * shape: Ollama's native API answers {"error": "..."}; OpenAI clients expect
 * {"error": {message, type, param, code}}; Anthropic clients {"type": "error", "error": {type, message}}.
 */
export type { Surface } from '../contract/index.js';

/** Anthropic's clients (its SDKs, Claude Code) send anthropic-version with every request. */
export function fromAnthropicClient(headers: IncomingHttpHeaders): boolean {
  return headers['anthropic-version'] !== undefined;
}

export function surfaceOf(path: string, headers: IncomingHttpHeaders): Surface {
  // Express matches routes in any letter case, so /V1/chat/completions is served as OpenAI's too.
  const lower = path.toLowerCase();
  if (lower.startsWith('/v1/messages')) return 'anthropic';
  // Anthropic's Models API has OpenAI's paths: its clients read their own shape there, errors included.
  if ((lower === '/v1/models' || lower.startsWith('/v1/models/')) && fromAnthropicClient(headers)) return 'anthropic';
  return lower.startsWith('/v1/') || lower === '/v1' || lower.startsWith('/chat/completions') ? 'openai' : 'ollama';
}

/** Anthropic's error types by status (its SDKs pick their exception class from the status, Claude Code its message from the type). */
function anthropicType(status: number): string {
  if (status === 401) return 'authentication_error';
  if (status === 403) return 'permission_error';
  if (status === 404) return 'not_found_error';
  if (status === 413) return 'request_too_large';
  if (status === 429) return 'rate_limit_error';
  if (status === 503 || status === 529) return 'overloaded_error';
  if (status === 504) return 'timeout_error';
  if (status >= 500) return 'api_error';
  return 'invalid_request_error';
}

function openAiType(status: number): string {
  if (status === 401) return 'authentication_error';
  if (status === 403) return 'permission_error';
  if (status === 404) return 'not_found_error';
  if (status === 429) return 'rate_limit_error';
  if (status >= 500) return 'api_error';
  return 'invalid_request_error';
}

export interface ErrorBodies {
  ollama: { error: string };
  openai: { error: { message: string; type: string; param: string | null; code: string | null } };
  anthropic: { type: 'error'; error: { type: string; message: string } };
}

export function errorBody(surface: Surface, error: BridgeError): ErrorBodies[Surface] {
  if (surface === 'ollama') return { error: error.message };
  if (surface === 'anthropic') return { type: 'error', error: { type: anthropicType(error.status), message: error.message } };
  return { error: { message: error.message, type: openAiType(error.status), param: error.param, code: error.code } };
}

/** Any thrown value as the error a client may see: a BridgeError as it is, anything else as a 500 that tells nothing of the inside. */
export function asBridgeError(error: unknown): BridgeError {
  return error instanceof BridgeError ? error : new BridgeError(500, 'internal error in copilot-bridge', { code: 'internal_error', cause: error });
}

/** Answers with the error in the surface's shape; once the answer has started there is nothing left to say but to cut it. */
export function sendError(res: ServerResponse, surface: Surface, error: BridgeError): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  if (error.retryAfterSeconds !== null) res.setHeader('retry-after', String(error.retryAfterSeconds));
  sendJson(res, error.status, errorBody(surface, error));
}

/** The last piece of a stream that already started with 200: the client's own way to say "it broke". */
export function streamErrorTail(contentType: string, surface: Surface, error: BridgeError): string | undefined {
  if (contentType.startsWith('application/x-ndjson')) return `${JSON.stringify({ error: error.message })}\n`;
  if (contentType.startsWith('text/event-stream')) {
    if (surface === 'anthropic') return `event: error\ndata: ${JSON.stringify(errorBody('anthropic', error))}\n\n`;
    return `data: ${JSON.stringify(errorBody(surface === 'ollama' ? 'openai' : surface, error))}\n\n`;
  }
  return undefined;
}

/** The last handler of an express app: whatever nothing else served is a 404 in the error shape, not express's HTML page. */
export function noSuchEndpoint(req: { method: string; path: string }): never {
  throw new BridgeError(404, `no such endpoint: ${req.method} ${req.path}`, { code: 'not_found' });
}

/**
 * For a method a path does not take: OPTIONS that is not a preflight (the guard answers those) is
 * told the methods it does take, 204 with Allow; any other method gets 405 with Allow (RFC 9110
 * §15.5.6), thrown for the error boundary to answer in the surface's shape.
 */
export function refuseMethod(method: string, res: ServerResponse, path: string, allowed: readonly string[]): void {
  res.setHeader('allow', allowed.join(', '));
  if (method === 'OPTIONS') {
    res.statusCode = 204;
    res.end();
    return;
  }
  throw new BridgeError(405, `${method} is not allowed on ${path}; it takes ${allowed.join(', ')}`, { code: 'method_not_allowed' });
}

/**
 * The router, with its routes followed by a refusal: a request for one of their paths with a
 * method none of them takes is refused by refuseMethod, not passed on to end as a 404. Routes that
 * take every method are left out. A GET route answers HEAD too (express does), so Allow says so.
 */
export function refuseOtherMethods(router: ExpressRouter): ExpressRouter {
  const allowed = new Map<string, { path: string; methods: Set<string> }>();
  for (const { route } of router.stack) {
    if (route === undefined) continue;
    const methods = route.stack.map((layer) => layer.method as string | undefined);
    if (methods.some((method) => method === undefined)) continue;
    const key = JSON.stringify(route.path);
    const entry = allowed.get(key) ?? { path: route.path, methods: new Set<string>() };
    for (const method of methods as string[]) entry.methods.add(method.toUpperCase());
    if (entry.methods.has('GET')) entry.methods.add('HEAD');
    allowed.set(key, entry);
  }
  for (const { path, methods } of allowed.values()) {
    const refuse: RequestHandler = (req, res) => refuseMethod(req.method, res, req.path, [...methods].sort());
    router.all(path, refuse);
  }
  return router;
}
