import { StringDecoder } from 'node:string_decoder';
import { isJsonObject, jsonOf, nestedDeeperThan } from '../contract/index.js';
import { ERROR_TEXT_MAX, redactSecrets } from './errors.js';
import { LineNotObjectError, LineTooLongError } from './lines.js';

/** Shapes of Ollama's native API, as far as the bridge reads them. Unknown fields pass through. */

export interface OllamaToolCall {
  /** The id the client gave the call, where its API has one: a cloud provider pairs results with calls by id. */
  id?: string;
  function: { index?: number; name: string; arguments: Record<string, unknown> };
}

export interface OllamaMessage {
  role: string;
  content: string;
  thinking?: string;
  images?: string[];
  tool_calls?: OllamaToolCall[];
  tool_name?: string;
  /** A tool result's: the id of the call it answers, as the client gave it. */
  tool_call_id?: string;
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
 * The model a native request names: `model`, or `name` as older clients send it. Ollama's Go
 * client (and so the `ollama` CLI) sends both, one of them empty.
 */
export function modelNamed(body: unknown): string | undefined {
  if (typeof body !== 'object' || body === null) return undefined;
  const { model, name } = body as { model?: unknown; name?: unknown };
  if (typeof model === 'string' && model !== '') return model;
  return typeof name === 'string' && name !== '' ? name : undefined;
}

/** Ollama's native API (0.11) by path: the methods each path takes. */
const OLLAMA_ROUTES: ReadonlyMap<string, readonly string[]> = new Map([
  ['/api/version', ['GET', 'HEAD']],
  ['/api/tags', ['GET', 'HEAD']],
  ['/api/ps', ['GET']],
  ['/api/show', ['POST']],
  ['/api/chat', ['POST']],
  ['/api/generate', ['POST']],
  ['/api/embed', ['POST']],
  ['/api/embeddings', ['POST']],
  ['/api/pull', ['POST']],
  ['/api/push', ['POST']],
  ['/api/create', ['POST']],
  ['/api/copy', ['POST']],
  ['/api/delete', ['DELETE']],
]);

/** A blob's path: one digest segment of plain characters, so that nothing in it decodes or resolves to another path. */
const BLOB_PATH = /^\/api\/blobs\/[\w:-]+$/;
const BLOB_METHODS: readonly string[] = ['HEAD', 'POST'];

/** The methods Ollama's API takes on this path, as sent (not decoded); undefined when the path is not one of its routes. */
export function ollamaMethods(rawPath: string): readonly string[] | undefined {
  return BLOB_PATH.test(rawPath) ? BLOB_METHODS : OLLAMA_ROUTES.get(rawPath);
}

/**
 * Whether Ollama reads this key of a body as `field`. Its JSON decoder (Go's) matches keys
 * regardless of case, Unicode folds included ("ſource" is "source"), and the last match wins, so
 * `body.model` alone may not be the model Ollama uses.
 */
function readsAs(key: string, field: string): boolean {
  return key.toUpperCase().toLowerCase() === field;
}

/** Every string Ollama would read as `field` of this body. */
export function valuesOllamaReads(body: unknown, field: string): string[] {
  if (typeof body !== 'object' || body === null) return [];
  return Object.entries(body).flatMap(([key, value]) => (readsAs(key, field) && typeof value === 'string' ? [value] : []));
}

/** The body with `model` set, and no other key that Ollama would read as the model instead. */
export function withModel(body: Readonly<Record<string, unknown>>, model: string): Record<string, unknown> {
  const sent: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(body)) if (!readsAs(key, 'model')) sent[key] = value;
  sent.model = model;
  return sent;
}

/** The counts and durations of an answer line; the bridge adds them up, relays them and counts them in metrics. */
const COUNT_FIELDS = ['total_duration', 'load_duration', 'prompt_eval_count', 'prompt_eval_duration', 'eval_count', 'eval_duration'] as const;
const TEXT_FIELDS = ['model', 'created_at', 'response', 'thinking', 'done_reason'] as const;

/** A count or duration from an upstream: a whole number from 0 up, or nothing (text, negative, NaN, Infinity are dropped). */
export function countOf(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? value : undefined;
}

/**
 * A tool call's arguments as the object every surface sends on: JSON text of an object (as
 * OpenAI-style servers send them) parsed, anything else kept as `_raw` text, as a cloud
 * provider's arguments that are not JSON are; none at all is an empty object.
 */
function argumentsOf(value: unknown): Record<string, unknown> {
  if (isJsonObject(value)) return value;
  if (value === undefined || value === null) return {};
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  const parsed = jsonOf(text);
  return isJsonObject(parsed) ? parsed : { _raw: text };
}

/**
 * One upstream answer line with every field the bridge reads checked: a field of the wrong type
 * (a count that is text or negative, a message that is not an object) is dropped, never passed on
 * to the client, the history or the metrics. Unknown fields pass through. Checked in place, with
 * no copy per line: the value is the caller's own (just parsed, or just built by a translator).
 */
export function checkedChunk(chunk: unknown): OllamaChunk {
  if (!isJsonObject(chunk)) throw new LineNotObjectError();
  for (const field of COUNT_FIELDS) if (field in chunk && countOf(chunk[field]) === undefined) delete chunk[field];
  for (const field of TEXT_FIELDS) if (field in chunk && typeof chunk[field] !== 'string') delete chunk[field];
  if ('done' in chunk && typeof chunk.done !== 'boolean') chunk.done = chunk.done === 'true';
  if ('error' in chunk) {
    // null or "" is no error, as Ollama's own client reads a line (it fails only on an error text).
    if (chunk.error === null || chunk.error === '') delete chunk.error;
    // Cut before redacting, as an error answer's.
    else chunk.error = redactSecrets((typeof chunk.error === 'string' ? chunk.error : JSON.stringify(chunk.error)).slice(0, ERROR_TEXT_MAX));
  }
  if ('message' in chunk) {
    const message = chunk.message;
    if (!isJsonObject(message)) delete chunk.message;
    else {
      const checked = message as Record<string, unknown>;
      if (typeof checked.role !== 'string') checked.role = 'assistant';
      if (typeof checked.content !== 'string') checked.content = '';
      if ('thinking' in checked && typeof checked.thinking !== 'string') delete checked.thinking;
      if ('tool_calls' in checked && !Array.isArray(checked.tool_calls)) delete checked.tool_calls;
      if (Array.isArray(checked.tool_calls)) {
        checked.tool_calls = checked.tool_calls.filter(
          (call: unknown) => typeof call === 'object' && call !== null && typeof (call as { function?: { name?: unknown } }).function?.name === 'string',
        );
        for (const call of checked.tool_calls as OllamaToolCall[]) call.function.arguments = argumentsOf(call.function.arguments);
      }
    }
  }
  return chunk as OllamaChunk;
}

/**
 * A model's details (/api/show) with every field the bridge reads checked, as checkedChunk does for
 * answer lines: a field of the wrong type (capabilities that are not a list of names, model_info
 * that is not an object) is dropped, so routing, thinking and fill-in-the-middle checks read
 * nothing of the wrong type and /api/show answers in Ollama's shape. Checked in place.
 */
export function checkedShow(show: Record<string, unknown>): OllamaShowResponse {
  for (const field of ['template', 'parameters', 'modelfile', 'modified_at'] as const) if (field in show && typeof show[field] !== 'string') delete show[field];
  for (const field of ['details', 'model_info'] as const) if (field in show && !isJsonObject(show[field])) delete show[field];
  if ('capabilities' in show && !(Array.isArray(show.capabilities) && show.capabilities.every((name) => typeof name === 'string'))) delete show.capabilities;
  return show as OllamaShowResponse;
}

/**
 * The entries of a model list (/api/ps, /api/tags) that name a model, each with both `name` and
 * `model` as text (older Ollamas send only one): a list that is not an array, and entries of
 * another shape (null, a number, a name that is not text), are dropped, so nothing that looks
 * models up by name meets one.
 */
export function listedModels<T extends { name: string; model: string }>(models: unknown): T[] {
  if (!Array.isArray(models)) return [];
  return models.flatMap((entry: unknown) => {
    if (!isJsonObject(entry)) return [];
    const name = typeof entry.name === 'string' && entry.name !== '' ? entry.name : undefined;
    const model = typeof entry.model === 'string' && entry.model !== '' ? entry.model : undefined;
    if (name === undefined && model === undefined) return [];
    return [{ ...entry, name: name ?? model, model: model ?? name } as T];
  });
}

/**
 * Deepest nesting of objects and arrays an upstream answer (a line, a JSON answer) may have.
 * Parsed, a deeper one would overflow the stack where it is written on for the client
 * (JSON.stringify recurses; JSON.parse does not); real answers stay far below.
 */
export const MAX_ANSWER_DEPTH = 512;

/** Whether upstream JSON text nests deeper than MAX_ANSWER_DEPTH; text too short to have two brackets per level, nearly all of it, is not scanned. */
export function nestsTooDeep(text: string): boolean {
  return text.length > 2 * MAX_ANSWER_DEPTH && nestedDeeperThan(text, MAX_ANSWER_DEPTH);
}

/** A line (or tool-call arguments sent as JSON text) that nests deeper than MAX_ANSWER_DEPTH; reported, as a line that is not an object is, as the upstream's fault. */
export class LineTooDeepError extends LineNotObjectError {
  constructor(what: 'a line' | 'tool-call arguments' = 'a line') {
    super();
    this.message = `sent ${what} nested deeper than ${MAX_ANSWER_DEPTH} levels`;
    this.name = 'LineTooDeepError';
  }
}

/** Lines a reader holds before it pauses the socket: the consumer is that far behind. */
const PAUSE_AT_LINES = 64;

/** What a line reader may do to the stream it reads. */
export interface LineFlow {
  pause(): void;
  resume(): void;
  /** Stops the stream for good (the consumer left, or a line was refused). */
  destroy(): void;
}

/**
 * An NDJSON answer parsed line by line as its chunks arrive (push), each line checked
 * (checkedChunk), handed to one consumer as an async iterator: a line that arrives while the
 * consumer waits is handed over in the same tick, with one promise and no stream machinery per
 * chunk. A consumer that falls behind pauses the producer (back-pressure) instead of buffering; a
 * line may not grow past `maxLineBytes` (an upstream that never ends a line must not fill the
 * bridge's memory); stopping early (return()) destroys the producer.
 */
export class NdjsonLines implements AsyncIterableIterator<OllamaChunk> {
  private readonly decoder = new StringDecoder('utf8');
  private readonly ready: OllamaChunk[] = [];
  /** The start of a line whose end has not arrived yet, in pieces. */
  private readonly parts: string[] = [];
  private partsLength = 0;
  private ended = false;
  private paused = false;
  private failure: Error | undefined;
  private last: OllamaChunk | undefined;
  private waiting: { resolve: (result: IteratorResult<OllamaChunk>) => void; reject: (error: Error) => void } | undefined;

  constructor(
    private readonly flow: LineFlow,
    private readonly maxLineBytes: number,
  ) {}

  push(chunk: Buffer): void {
    if (this.failure !== undefined || this.ended) return;
    const text = this.decoder.write(chunk);
    let start = 0;
    let newline = text.indexOf('\n');
    while (newline >= 0) {
      if (!this.take(this.line(text.slice(start, newline)))) {
        this.settle();
        return;
      }
      start = newline + 1;
      newline = text.indexOf('\n', start);
    }
    if (start < text.length) {
      this.parts.push(start === 0 ? text : text.slice(start));
      this.partsLength += text.length - start;
      if (this.partsLength > this.maxLineBytes) {
        this.refuse(new LineTooLongError(this.maxLineBytes));
        return;
      }
    }
    if (this.ready.length >= PAUSE_AT_LINES && !this.paused) {
      this.paused = true;
      this.flow.pause();
    }
    this.settle();
  }

  end(): void {
    if (this.failure === undefined && !this.ended) {
      const tail = this.line(this.decoder.end());
      // A last line without its newline that is not JSON was cut off on its way: the answer ends
      // before it, so it reads as cut off (no final line), not as a line the upstream got wrong.
      if (jsonOf(tail) === undefined || this.take(tail)) this.ended = true;
    }
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

  /** Whether the answer ended with its final line (done: true): not cut off, not ended by an error line. */
  get complete(): boolean {
    return this.ended && this.failure === undefined && this.last?.done === true;
  }

  /** A whole line: the pieces held so far and its tail. */
  private line(tail: string): string {
    if (this.parts.length === 0) return tail;
    const line = this.parts.join('') + tail;
    this.parts.length = 0;
    this.partsLength = 0;
    return line;
  }

  /** Takes one line; false when nothing after it is read (the final line, or a line refused). */
  private take(line: string): boolean {
    if (line.length > this.maxLineBytes) {
      this.refuse(new LineTooLongError(this.maxLineBytes));
      return false;
    }
    if (nestsTooDeep(line)) {
      this.refuse(new LineTooDeepError());
      return false;
    }
    const trimmed = line.trim();
    if (trimmed === '') return true;
    try {
      this.last = checkedChunk(JSON.parse(trimmed));
      this.ready.push(this.last);
    } catch (error) {
      this.refuse(error as Error);
      return false;
    }
    if (this.last.done !== true) return true;
    // The final line ends the answer: whatever an upstream sends after it (more text, a second
    // final line, a reset) is not read, so the client gets one ending, after the text it ends.
    this.ended = true;
    if (this.paused) {
      // Nothing is held back any more, and a consumer that stops now must not leave the connection paused.
      this.paused = false;
      this.flow.resume();
    }
    return false;
  }

  private refuse(error: Error): void {
    this.failure = error;
    this.flow.destroy();
    this.settle();
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
