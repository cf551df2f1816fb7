import type { Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';

/** Shapes of Ollama's native API, as far as the bridge reads them. Unknown fields pass through. */

export interface OllamaToolCall {
  function: { index?: number; name: string; arguments: Record<string, unknown> };
}

export interface OllamaMessage {
  role: string;
  content: string;
  thinking?: string;
  images?: string[];
  tool_calls?: OllamaToolCall[];
  tool_name?: string;
}

/** One line of a streamed /api/chat or /api/generate answer (or the whole non-streamed answer). */
export interface OllamaChunk {
  model?: string;
  created_at?: string;
  message?: OllamaMessage;
  response?: string;
  thinking?: string;
  done?: boolean;
  done_reason?: string;
  context?: number[];
  total_duration?: number;
  load_duration?: number;
  prompt_eval_count?: number;
  prompt_eval_duration?: number;
  eval_count?: number;
  eval_duration?: number;
  error?: string;
}

export interface OllamaModelDetails {
  parent_model?: string;
  format: string;
  family: string;
  families: string[] | null;
  parameter_size: string;
  quantization_level: string;
}

export interface OllamaTagModel {
  name: string;
  model: string;
  modified_at: string;
  size: number;
  digest: string;
  details: OllamaModelDetails;
  /** Set on Ollama's own cloud models: the server that really runs them. */
  remote_host?: string;
  remote_model?: string;
}

export interface OllamaShowResponse {
  template?: string;
  parameters?: string;
  modelfile?: string;
  details?: OllamaModelDetails;
  model_info?: Record<string, unknown>;
  capabilities?: string[];
  modified_at?: string;
  [key: string]: unknown;
}

export interface OllamaPsModel {
  name: string;
  model: string;
  size: number;
  size_vram: number;
  digest: string;
  details?: OllamaModelDetails;
  expires_at: string;
  context_length?: number;
}

/**
 * Parses an NDJSON body line by line as it arrives. Pulling from the iterator is what reads the
 * socket, so a slow consumer slows the upstream (back-pressure) instead of buffering.
 */
export async function* readNdjson(body: Readable): AsyncGenerator<OllamaChunk, void, undefined> {
  const decoder = new StringDecoder('utf8');
  let pending = '';
  for await (const chunk of body as AsyncIterable<Buffer>) {
    pending += decoder.write(chunk);
    let newline = pending.indexOf('\n');
    while (newline >= 0) {
      const line = pending.slice(0, newline).trim();
      pending = pending.slice(newline + 1);
      if (line !== '') yield JSON.parse(line) as OllamaChunk;
      newline = pending.indexOf('\n');
    }
  }
  if (pending.trim() !== '') yield JSON.parse(pending) as OllamaChunk;
}
