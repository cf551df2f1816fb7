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

/** Lines a reader holds before it pauses the socket: the consumer is that far behind. */
const PAUSE_AT_LINES = 64;

/**
 * Parses an NDJSON body line by line as it arrives, straight from the stream's 'data' events: a
 * line that arrives while the consumer waits is handed over in the same tick, with one promise and
 * no per-chunk async iterator machinery. A consumer that falls behind pauses the socket
 * (back-pressure) instead of buffering; stopping early (return()) destroys the body.
 */
export function readNdjson(body: Readable): AsyncIterableIterator<OllamaChunk> {
  const decoder = new StringDecoder('utf8');
  const ready: OllamaChunk[] = [];
  let pending = '';
  let ended = false;
  let failure: Error | undefined;
  let waiting: { resolve: (result: IteratorResult<OllamaChunk>) => void; reject: (error: Error) => void } | undefined;

  const settle = (): void => {
    if (waiting === undefined) return;
    const { resolve, reject } = waiting;
    if (ready.length > 0) {
      waiting = undefined;
      resolve({ done: false, value: ready.shift() as OllamaChunk });
    } else if (failure !== undefined) {
      waiting = undefined;
      reject(failure);
    } else if (ended) {
      waiting = undefined;
      resolve({ done: true, value: undefined });
    }
  };
  const take = (line: string): boolean => {
    if (line.trim() === '') return true;
    try {
      ready.push(JSON.parse(line) as OllamaChunk);
      return true;
    } catch (error) {
      failure = error as Error;
      body.destroy();
      return false;
    }
  };
  body.on('data', (chunk: Buffer) => {
    if (failure !== undefined) return;
    pending += decoder.write(chunk);
    let newline = pending.indexOf('\n');
    let from = 0;
    while (newline >= 0) {
      if (!take(pending.slice(from, newline))) break;
      from = newline + 1;
      newline = pending.indexOf('\n', from);
    }
    pending = pending.slice(from);
    if (ready.length >= PAUSE_AT_LINES) body.pause();
    settle();
  });
  body.once('end', () => {
    if (failure === undefined) take(pending + decoder.end());
    ended = true;
    settle();
  });
  body.once('error', (error: Error) => {
    failure ??= error;
    settle();
  });
  // A body destroyed before its end (an abort) neither ends nor always errors.
  body.once('close', () => {
    if (!ended && failure === undefined) failure = new Error('the answer was cut off');
    settle();
  });

  const iterator: AsyncIterableIterator<OllamaChunk> = {
    next() {
      if (ready.length > 0) {
        const value = ready.shift() as OllamaChunk;
        if (ready.length < PAUSE_AT_LINES && body.isPaused() && !ended) body.resume();
        return Promise.resolve({ done: false, value });
      }
      if (failure !== undefined) return Promise.reject(failure);
      if (ended) return Promise.resolve({ done: true, value: undefined });
      return new Promise((resolve, reject) => {
        waiting = { resolve, reject };
      });
    },
    return() {
      ended = true;
      ready.length = 0;
      body.destroy();
      return Promise.resolve({ done: true, value: undefined });
    },
    [Symbol.asyncIterator]() {
      return iterator;
    },
  };
  return iterator;
}
