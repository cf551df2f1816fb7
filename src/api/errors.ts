import type { Response } from 'express';
import type { AuthError } from '../auth/authenticate.js';

/**
 * Each client-facing surface has its own error shape:
 * Ollama's native API answers {"error": "..."}; OpenAI clients expect {"error": {message, type, param, code}};
 * Anthropic clients {"type": "error", "error": {type, message}}.
 */
export type Surface = 'ollama' | 'openai' | 'anthropic';

export function surfaceOf(path: string): Surface {
  if (path.startsWith('/v1/messages')) return 'anthropic';
  return path.startsWith('/v1/') || path === '/v1' || path.startsWith('/chat/completions') ? 'openai' : 'ollama';
}

/** Anthropic's error types by status (its SDKs pick their exception class from the status, Claude Code its message from the type). */
function anthropicType(status: number): string {
  if (status === 401) return 'authentication_error';
  if (status === 403) return 'permission_error';
  if (status === 404) return 'not_found_error';
  if (status === 413) return 'request_too_large';
  if (status === 429) return 'rate_limit_error';
  if (status === 503 || status === 529) return 'overloaded_error';
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

export function errorBody(surface: Surface, status: number, message: string, code?: string, param?: string | null): ErrorBodies[Surface] {
  if (surface === 'ollama') return { error: message };
  if (surface === 'anthropic') return { type: 'error', error: { type: anthropicType(status), message } };
  return { error: { message, type: openAiType(status), param: param ?? null, code: code ?? null } };
}

export function sendError(res: Response, surface: Surface, status: number, message: string, code?: string, param?: string | null): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.status(status).json(errorBody(surface, status, message, code, param));
}

/** The last piece of a stream that already started with 200: the client's own way to say "it broke". */
export function streamErrorTail(contentType: string, surface: Surface, message: string, code: string): string | undefined {
  if (contentType.startsWith('application/x-ndjson')) return `${JSON.stringify({ error: message })}\n`;
  if (contentType.startsWith('text/event-stream')) {
    if (surface === 'anthropic') return `event: error\ndata: ${JSON.stringify(errorBody('anthropic', 502, message, code))}\n\n`;
    return `data: ${JSON.stringify(errorBody(surface === 'ollama' ? 'openai' : surface, 502, message, code))}\n\n`;
  }
  return undefined;
}

/** A refusal of the auth layer (401, 403, 429) in the surface's own shape, with the headers each status calls for. */
export function sendAuthError(res: Response, surface: Surface, error: AuthError): void {
  if (error.status === 401) res.setHeader('www-authenticate', 'Bearer realm="copilot-bridge"');
  if (error.retryAfterSeconds !== undefined) res.setHeader('retry-after', String(error.retryAfterSeconds));
  sendError(res, surface, error.status, error.message, error.code);
}
