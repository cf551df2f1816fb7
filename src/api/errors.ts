import type { Response } from 'express';
import { BridgeError, type Surface } from '../contract/index.js';

/**
 * Where a BridgeError becomes what the client reads. Each client-facing surface has its own error
 * shape: Ollama's native API answers {"error": "..."}; OpenAI clients expect
 * {"error": {message, type, param, code}}.
 */
export type { Surface } from '../contract/index.js';

export function surfaceOf(path: string): Surface {
  return path.startsWith('/v1/') || path === '/v1' || path.startsWith('/chat/completions') ? 'openai' : 'ollama';
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
}

export function errorBody(surface: Surface, error: BridgeError): ErrorBodies[Surface] {
  if (surface === 'ollama') return { error: error.message };
  return { error: { message: error.message, type: openAiType(error.status), param: error.param, code: error.code } };
}

/** Any thrown value as the error a client may see: a BridgeError as it is, anything else as a 500 that tells nothing of the inside. */
export function asBridgeError(error: unknown): BridgeError {
  return error instanceof BridgeError ? error : new BridgeError(500, 'internal error in copilot-bridge', { code: 'internal_error', cause: error });
}

/** Answers with the error in the surface's shape; once the answer has started there is nothing left to say but to cut it. */
export function sendError(res: Response, surface: Surface, error: BridgeError): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.status(error.status).json(errorBody(surface, error));
}

/** The last piece of a stream that already started with 200: the client's own way to say "it broke". */
export function streamErrorTail(contentType: string, surface: Surface, error: BridgeError): string | undefined {
  if (contentType.startsWith('application/x-ndjson')) return `${JSON.stringify({ error: error.message })}\n`;
  if (contentType.startsWith('text/event-stream')) return `data: ${JSON.stringify(errorBody(surface === 'ollama' ? 'openai' : surface, error))}\n\n`;
  return undefined;
}
