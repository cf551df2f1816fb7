import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import type { ProviderConfig } from '../../config/schema.js';
import type { UpstreamLimits } from '../backend.js';
import { isJsonObject, jsonOf } from '../../contract/index.js';
import { errorMessageOf, redactSecrets, retryAfterSecondsOf, toUpstreamError, UpstreamStatusError, UpstreamTimeout } from '../errors.js';
import { LazyPool } from '../lazy-pool.js';
import { LineNotObjectError, LineTooLongError, readText } from '../lines.js';
import { checkedChunk, LineTooDeepError, nestsTooDeep, type OllamaChunk, type OllamaToolCall } from '../ollama-api.js';
import { readSse, type SseEvent } from '../sse.js';
import type { GenerationRequest, GenerationSource } from '../source.js';

/** A provider's translated lines, checked like a local backend's: numbers and texts it sent of the wrong type are dropped. */
export async function* checkedLines(lines: AsyncIterable<OllamaChunk>): AsyncGenerator<OllamaChunk, void, undefined> {
  for await (const line of lines) yield checkedChunk(line);
}

/** An SSE event's data as the JSON object every provider event is; anything else fails the answer. */
export function eventObject(data: string): Record<string, unknown> {
  // Parsed, a deeper one would overflow the stack where the answer is written on.
  if (nestsTooDeep(data)) throw new LineTooDeepError();
  const event = JSON.parse(data) as unknown;
  if (!isJsonObject(event)) throw new LineNotObjectError();
  return event;
}

/** A provider's field read as an object; one of another type (null, text, a list) reads as empty. */
export function objectOf(value: unknown): Record<string, unknown> {
  return isJsonObject(value) ? value : {};
}

/** A provider's field read as text; one of another type reads as empty. */
export function textOf(value: unknown): string {
  return typeof value === 'string' ? value : '';
}

/** A provider's field read as a list of objects; entries of another type are left out. */
export function objectsOf(value: unknown): Array<Record<string, unknown>> {
  return Array.isArray(value) ? value.filter(isJsonObject) : [];
}

/** What a call adds to its line beyond its name and arguments: `{"function":{"name":"","arguments":{}}}`. */
const CALL_FRAME_SIZE = 39;

/**
 * Tool calls whose name and JSON arguments arrive in pieces, held until they are complete. What
 * they hold may not grow past the line limit (a call leaves as one line): a provider that never
 * ends a call must not fill the bridge's memory.
 */
export class HeldToolCalls {
  private readonly calls = new Map<number | string, { name: string; json: string }>();
  private size = 0;

  constructor(private readonly maxBytes: number) {}

  /**
   * Adds a piece of JSON to the call under `key`, which starts when it is new. A name replaces the
   * one held, as the OpenAI SDK reads it: some servers (MiniMax through NVIDIA NIM, newer GPT
   * models) send the whole name again with every fragment.
   */
  add(key: number | string, name: string, json: string): void {
    const call = this.calls.get(key);
    const named = name === '' ? (call?.name ?? '') : name;
    this.size += named.length + json.length + (call === undefined ? CALL_FRAME_SIZE : -call.name.length);
    if (this.size > this.maxBytes) throw new LineTooLongError(this.maxBytes);
    if (call === undefined) this.calls.set(key, { name: named, json });
    else {
      call.name = named;
      call.json += json;
    }
  }

  has(key: number | string): boolean {
    return this.calls.has(key);
  }

  /** The call under `key` as Ollama sends it, no longer held; arguments that are not valid JSON are kept as `_raw`. */
  take(key: number | string): OllamaToolCall | undefined {
    const call = this.calls.get(key);
    if (call === undefined) return undefined;
    this.calls.delete(key);
    this.size -= call.name.length + call.json.length + CALL_FRAME_SIZE;
    if (nestsTooDeep(call.json)) throw new LineTooDeepError('tool-call arguments');
    const parsed = jsonOf(call.json === '' ? '{}' : call.json);
    return { function: { name: call.name, arguments: isJsonObject(parsed) ? parsed : { _raw: call.json } } };
  }

  /** Every call still held, in the order they started. */
  takeAll(): OllamaToolCall[] {
    return [...this.calls.keys()].flatMap((key) => this.take(key) ?? []);
  }
}

/**
 * Cuts streamed text at the first of `stops`, for stop sequences a provider does not take. A tail
 * that may be the start of a stop is held back until the next piece tells.
 */
export class StopCutter {
  private held = '';
  stopped = false;

  private constructor(private readonly stops: readonly string[]) {}

  /** A cutter for the stops the bridge applies itself; none when there are none, so no text piece pays for an empty scan. */
  static of(stops: readonly string[] | undefined): StopCutter | undefined {
    return stops === undefined || stops.length === 0 ? undefined : new StopCutter(stops);
  }

  /** The text that may be sent now. */
  push(text: string): string {
    const all = this.held + text;
    const at = Math.min(...this.stops.map((stop) => all.indexOf(stop)).filter((i) => i >= 0));
    if (Number.isFinite(at)) {
      this.stopped = true;
      this.held = '';
      return all.slice(0, at);
    }
    let keep = 0;
    for (const stop of this.stops) {
      for (let n = Math.min(stop.length - 1, all.length); n > keep; n--) {
        if (all.endsWith(stop.slice(0, n))) {
          keep = n;
          break;
        }
      }
    }
    this.held = all.slice(all.length - keep);
    return all.slice(0, all.length - keep);
  }

  /** What was held back, once the answer ends. */
  rest(): string {
    const rest = this.held;
    this.held = '';
    return rest;
  }
}

/**
 * The longest wait for an event that moves an answer on. undici's body timeout is reset by any
 * byte, so a provider that sends only keep-alives (Anthropic's pings, SSE comments, empty chunks)
 * would otherwise hold the request, and the client, for good.
 */
class ProgressTimeout {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly body: Readable,
    private readonly ms: number,
  ) {}

  /** The events of `events`, while the wait runs; when it runs out, the body is destroyed with an idle timeout. */
  async *over<T>(events: AsyncIterable<T>): AsyncGenerator<T, void, undefined> {
    this.timer = setTimeout(() => this.body.destroy(new UpstreamTimeout('UPSTREAM_IDLE_TIMEOUT', `no progress for ${this.ms} ms, only keep-alives`)), this.ms);
    try {
      yield* events;
    } finally {
      clearTimeout(this.timer);
    }
  }

  /** An event carried part of the answer: the wait starts again. */
  progressed(): void {
    this.timer?.refresh();
  }
}

/**
 * Statuses that refuse what the bridge itself chose: its key (401, 403) and its configured model or
 * URL (404). To the client they are the gateway's failure (502): passed on, they would send it
 * after its own key or model, which are fine.
 */
const REFUSALS_OF_THE_BRIDGE = new Set([401, 403, 404]);

/** Refusals one request learns from before its 400 is the answer (each leaves out or changes one parameter). */
const MAX_LEARNT_REFUSALS = 3;

/** What every cloud provider shares: its connection pool (undici, loaded with the first request), the POST with error mapping, closing. */
export abstract class CloudProvider implements GenerationSource {
  readonly kind = 'cloud';
  readonly name: string;
  private readonly pool: LazyPool;
  private readonly base: URL;
  private readonly timeoutMs: number;

  /** Longest SSE line or event the provider may send. */
  protected readonly maxLineBytes: number;

  constructor(
    protected readonly config: ProviderConfig,
    /** The bridge's connect wait and line limit, as its local backends have them. */
    limits: Pick<UpstreamLimits, 'connectMs' | 'maxLineBytes'>,
  ) {
    this.name = config.name;
    this.base = new URL(config.base_url);
    this.timeoutMs = config.timeout_seconds * 1000;
    this.maxLineBytes = limits.maxLineBytes;
    this.pool = new LazyPool(this.base.origin, { connect: { timeout: limits.connectMs }, headersTimeout: this.timeoutMs, bodyTimeout: this.timeoutMs });
  }

  abstract generate(request: GenerationRequest): Promise<AsyncIterable<OllamaChunk>>;

  /**
   * POSTs JSON below the base URL (keeping its query, e.g. Azure's api-version); an error status, or
   * JSON instead of a stream, rejects. A 400 the provider learns from (a parameter its model does not
   * take) is asked again as adapted, a few times at most.
   */
  protected async post(path: string, payload: Record<string, unknown>, headers: Record<string, string>, signal: AbortSignal): Promise<Dispatcher.ResponseData> {
    const url = new URL(this.base.href);
    url.pathname = `${url.pathname.replace(/\/+$/, '')}${path}`;
    for (let learnt = 0; ; learnt++) {
      const body = this.adapted(payload);
      let response: Dispatcher.ResponseData;
      try {
        const pool = await this.pool.get();
        response = await pool.request({
          method: 'POST',
          path: url.pathname + url.search,
          headers: { 'content-type': 'application/json', accept: 'text/event-stream', ...headers },
          body: JSON.stringify(body),
          signal,
        });
      } catch (error) {
        throw toUpstreamError(error, this.name);
      }
      // Some gateways answer an error (a quota, a policy) as 200 with a JSON body: read as a stream it
      // would only look cut off, and its reason would be lost.
      const contentType = String(response.headers['content-type'] ?? '');
      const jsonInsteadOfStream = response.statusCode < 400 && /^application\/json\b/i.test(contentType);
      if (response.statusCode >= 400 || jsonInsteadOfStream) {
        const text = await readText(response.body, this.maxLineBytes).catch(() => '');
        if (response.statusCode === 400 && learnt < MAX_LEARNT_REFUSALS && this.learn(body, text)) continue;
        const reason = this.redact(errorMessageOf(response.statusCode, text));
        if (jsonInsteadOfStream) throw new UpstreamStatusError(502, this.name, `${this.name} answered JSON instead of an event stream: ${reason}`);
        if (REFUSALS_OF_THE_BRIDGE.has(response.statusCode))
          throw new UpstreamStatusError(502, this.name, `${this.name} answered ${response.statusCode}: ${reason}`);
        // A rate limit says how long to wait: the client, which gets the 429, waits that long.
        throw new UpstreamStatusError(response.statusCode, this.name, `${this.name}: ${reason}`, {
          retryAfterSeconds: retryAfterSecondsOf(response.headers['retry-after']),
        });
      }
      // A captive portal or a wrong base_url answers a page: read as a stream it would only look cut off.
      if (/^text\/html\b/i.test(contentType)) {
        // Read up to undici's dump limit, then the connection is let go: a portal's page is of no use.
        await response.body.dump().catch(() => undefined);
        throw new UpstreamStatusError(502, this.name, `${this.name} answered a web page (text/html) instead of an event stream`);
      }
      return response;
    }
  }

  /** The payload with what the provider refused before left out or changed; as it is by default. */
  protected adapted(payload: Record<string, unknown>): Record<string, unknown> {
    return payload;
  }

  /** Learns from a 400's body what of `sent` the provider refuses; true when asking again would differ. Nothing by default. */
  protected learn(_sent: Record<string, unknown>, _refusal: string): boolean {
    return false;
  }

  /**
   * The SSE events of an answer that carry data. One whose data is empty (a keep-alive some servers
   * send as "data:") carries nothing: read as JSON, it would fail the answer.
   */
  protected async *eventsOf(response: Dispatcher.ResponseData): AsyncGenerator<SseEvent, void, undefined> {
    for await (const event of readSse(response.body, this.maxLineBytes)) if (event.data.trim() !== '') yield event;
  }

  /** The wait for progress on this answer (timeout_seconds). */
  protected progressTimeout(response: Dispatcher.ResponseData): ProgressTimeout {
    return new ProgressTimeout(response.body, this.timeoutMs);
  }

  /** An error text from the provider without its key, which some providers echo back. */
  protected redact(text: string): string {
    return redactSecrets(text, [this.config.api_key]);
  }

  async close(): Promise<void> {
    await this.pool.destroy();
  }
}
