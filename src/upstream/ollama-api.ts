import type { Readable } from 'node:stream';
import { redactSecrets } from './errors.js';
import { readLines } from './lines.js';

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

/** The counts and durations of an answer line; the bridge adds them up, relays them and counts them in metrics. */
const COUNT_FIELDS = ['total_duration', 'load_duration', 'prompt_eval_count', 'prompt_eval_duration', 'eval_count', 'eval_duration'] as const;
const TEXT_FIELDS = ['model', 'created_at', 'response', 'thinking', 'done_reason'] as const;

/** A count or duration from an upstream: a whole number from 0 up, or nothing (text, negative, NaN, Infinity are dropped). */
export function countOf(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? value : undefined;
}

/**
 * One upstream answer line with every field the bridge reads checked: a field of the wrong type
 * (a count that is text or negative, a message that is not an object) is dropped, never passed on
 * to the client, the history or the metrics. Unknown fields pass through.
 */
export function checkedChunk(value: unknown): OllamaChunk {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new SyntaxError('an answer line is not a JSON object');
  const chunk: Record<string, unknown> = { ...value };
  for (const field of COUNT_FIELDS) if (field in chunk && countOf(chunk[field]) === undefined) delete chunk[field];
  for (const field of TEXT_FIELDS) if (field in chunk && typeof chunk[field] !== 'string') delete chunk[field];
  if ('done' in chunk && typeof chunk.done !== 'boolean') chunk.done = chunk.done === 'true';
  if ('error' in chunk) chunk.error = redactSecrets(typeof chunk.error === 'string' ? chunk.error : JSON.stringify(chunk.error).slice(0, 500));
  if ('message' in chunk) {
    const message = chunk.message;
    if (typeof message !== 'object' || message === null || Array.isArray(message)) delete chunk.message;
    else {
      const checked: Record<string, unknown> = { ...message };
      checked.role = typeof checked.role === 'string' ? checked.role : 'assistant';
      checked.content = typeof checked.content === 'string' ? checked.content : '';
      if ('thinking' in checked && typeof checked.thinking !== 'string') delete checked.thinking;
      if ('tool_calls' in checked && !Array.isArray(checked.tool_calls)) delete checked.tool_calls;
      if (Array.isArray(checked.tool_calls)) {
        checked.tool_calls = checked.tool_calls.filter(
          (call: unknown) => typeof call === 'object' && call !== null && typeof (call as { function?: { name?: unknown } }).function?.name === 'string',
        );
      }
      chunk.message = checked;
    }
  }
  return chunk as OllamaChunk;
}

/**
 * Parses an NDJSON body line by line as it arrives. Pulling from the iterator is what reads the
 * socket, so a slow consumer slows the upstream (back-pressure) instead of buffering.
 */
export async function* readNdjson(body: Readable, maxLineBytes: number): AsyncGenerator<OllamaChunk, void, undefined> {
  for await (const line of readLines(body, maxLineBytes)) {
    const trimmed = line.trim();
    if (trimmed !== '') yield checkedChunk(JSON.parse(trimmed));
  }
}
