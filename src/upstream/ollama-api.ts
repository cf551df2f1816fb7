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

/** What a line reader may do to the stream it reads. */
export interface LineFlow {
  pause(): void;
  resume(): void;
  /** Stops the stream for good (the consumer left, or a line was not JSON). */
  destroy(): void;
}

/**
 * An NDJSON answer parsed line by line as its chunks arrive (push), handed to one consumer as an
 * async iterator: a line that arrives while the consumer waits is handed over in the same tick, with
 * one promise and no stream machinery per chunk. A consumer that falls behind pauses the producer
 * (back-pressure) instead of buffering; stopping early (return()) destroys it.
 */
export class NdjsonLines implements AsyncIterableIterator<OllamaChunk> {
  private readonly decoder = new StringDecoder('utf8');
  private readonly ready: OllamaChunk[] = [];
  private pending = '';
  private ended = false;
  private paused = false;
  private failure: Error | undefined;
  private waiting: { resolve: (result: IteratorResult<OllamaChunk>) => void; reject: (error: Error) => void } | undefined;

  constructor(private readonly flow: LineFlow) {}

  push(chunk: Buffer): void {
    if (this.failure !== undefined || this.ended) return;
    const text = this.pending + this.decoder.write(chunk);
    let from = 0;
    let newline = text.indexOf('\n');
    while (newline >= 0) {
      if (!this.take(text.slice(from, newline))) return;
      from = newline + 1;
      newline = text.indexOf('\n', from);
    }
    this.pending = text.slice(from);
    if (this.ready.length >= PAUSE_AT_LINES && !this.paused) {
      this.paused = true;
      this.flow.pause();
    }
    this.settle();
  }

  end(): void {
    if (this.failure === undefined && !this.ended && this.take(this.pending + this.decoder.end())) this.ended = true;
    this.settle();
  }

  /** The answer broke off (or was aborted); a failure after the end changes nothing. */
  fail(error: Error): void {
    if (!this.ended) this.failure ??= error;
    this.settle();
  }

  next(): Promise<IteratorResult<OllamaChunk>> {
    const value = this.ready.shift();
    if (value !== undefined) {
      if (this.paused && this.ready.length < PAUSE_AT_LINES) {
        this.paused = false;
        this.flow.resume();
      }
      return Promise.resolve({ done: false, value });
    }
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.ended) return Promise.resolve({ done: true, value: undefined });
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
    });
  }

  return(): Promise<IteratorResult<OllamaChunk>> {
    if (!this.ended) this.flow.destroy();
    this.ended = true;
    this.ready.length = 0;
    return Promise.resolve({ done: true, value: undefined });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<OllamaChunk> {
    return this;
  }

  private take(line: string): boolean {
    if (line.trim() === '') return true;
    try {
      this.ready.push(JSON.parse(line) as OllamaChunk);
      return true;
    } catch (error) {
      this.failure = error as Error;
      this.flow.destroy();
      this.settle();
      return false;
    }
  }

  private settle(): void {
    const waiting = this.waiting;
    if (waiting === undefined) return;
    const value = this.ready.shift();
    if (value !== undefined) {
      this.waiting = undefined;
      waiting.resolve({ done: false, value });
    } else if (this.failure !== undefined) {
      this.waiting = undefined;
      waiting.reject(this.failure);
    } else if (this.ended) {
      this.waiting = undefined;
      waiting.resolve({ done: true, value: undefined });
    }
  }
}
