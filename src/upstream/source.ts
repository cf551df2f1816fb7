import type { Cancel } from '../contract/index.js';
import type { OllamaChunk } from './ollama-api.js';

export interface GenerationRequest {
  path: '/api/chat' | '/api/generate';
  /** A native Ollama body with the model set. */
  body: Record<string, unknown>;
  userAgent: string;
  /** Aborts when the client left or the bridge stopped: the answer upstream stops. */
  cancel: Cancel;
}

/**
 * Anything that can answer a generation as a stream of Ollama's native lines: a local Ollama
 * backend, or a cloud provider whose stream is translated into the same lines. Rejects before the
 * answer starts with UpstreamError (transport) or UpstreamStatusError (an error status).
 */
export interface GenerationSource {
  readonly name: string;
  readonly kind: 'local' | 'cloud';
  generate(request: GenerationRequest): Promise<AsyncIterable<OllamaChunk>>;
  /**
   * Counts a failure that surfaced after the answer started: a broken stream (the source), or an
   * error line (with `model`: that model there).
   */
  noteFailure?(message: string, model?: string): void;
}
