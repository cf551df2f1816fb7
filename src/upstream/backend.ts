import type { Readable } from 'node:stream';
import { Pool, type Dispatcher } from 'undici';
import type { BackendConfig, Config } from '../config/schema.js';
import { errorMessageOf, toUpstreamError, UpstreamStatusError } from './errors.js';
import { BackendHealth } from './health.js';
import { canonicalModelName } from '../contract/index.js';
import { readNdjson, type OllamaChunk, type OllamaPsModel } from './ollama-api.js';
import type { GenerationRequest, GenerationSource } from './source.js';
import type { BackendSnapshot } from '../contract/index.js';
export type { BackendSnapshot } from '../contract/index.js';

export interface UpstreamTimeouts {
  connectMs: number;
  /** Until the response head arrives; Ollama sends it with the first token, so cold loads count. */
  firstByteMs: number;
  /** Longest gap between two body chunks. */
  idleMs: number;
}

export function timeoutsFrom(config: Config): UpstreamTimeouts {
  const t = config.routing.thresholds;
  return {
    connectMs: t.connect_timeout_seconds * 1000,
    firstByteMs: t.timeout_seconds * 1000,
    idleMs: t.idle_timeout_seconds * 1000,
  };
}

export interface UpstreamRequest {
  method: Dispatcher.HttpMethod;
  /** Path and query as the client sent them, e.g. "/api/chat" or "/v1/models?x=1". */
  path: string;
  headers: Record<string, string>;
  body?: string | Buffer | Readable;
  signal: AbortSignal;
  /** The model the request is for: an error answer then counts against this (backend, model) only. */
  model?: string;
}


/** One Ollama instance the bridge can send requests to, with its own keep-alive connection pool. */
export class Backend implements GenerationSource {
  readonly kind = 'local';
  readonly name: string;
  readonly url: URL;
  readonly gpu: number | string | null;
  readonly weight: number;
  readonly health: BackendHealth;
  /** Models in memory as of the last health check, from /api/ps. */
  loaded: OllamaPsModel[] = [];
  /** The Host header this upstream expects: Ollama refuses non-local names on loopback. */
  readonly host: string;
  private readonly pool: Pool;
  private readonly basePath: string;
  private inFlight = 0;
  private requests = 0;
  private failures = 0;
  private recheckedAt = Number.NEGATIVE_INFINITY;
  private rechecking: Promise<void> | undefined;

  constructor(config: BackendConfig, timeouts: UpstreamTimeouts, health: BackendHealth) {
    this.name = config.name;
    this.weight = config.weight;
    this.health = health;
    this.url = new URL(config.url);
    this.gpu = config.gpu ?? null;
    this.host = this.url.host;
    this.basePath = this.url.pathname.replace(/\/+$/, '');
    this.pool = new Pool(this.url.origin, {
      connect: { timeout: timeouts.connectMs },
      headersTimeout: timeouts.firstByteMs,
      bodyTimeout: timeouts.idleMs,
      keepAliveTimeout: 10_000,
    });
  }

  /**
   * Sends one client request. Its outcome feeds the health state: connection errors, timeouts and
   * 5xx answers count as failures. Rejects with an UpstreamError (or the abort reason).
   */
  async request(request: UpstreamRequest): Promise<Dispatcher.ResponseData> {
    this.inFlight += 1;
    this.requests += 1;
    const model = request.model === undefined ? undefined : canonicalModelName(request.model);
    this.health.begin(model);
    const started = performance.now();
    try {
      const response = await this.pool.request({
        method: request.method,
        path: this.basePath + request.path,
        headers: { ...request.headers, host: this.host },
        body: request.body ?? null,
        signal: request.signal,
      });
      response.body.once('close', () => {
        this.inFlight -= 1;
      });
      // 503 is Ollama's "server busy" (its queue is full): the whole backend, whatever the model.
      if (response.statusCode >= 500) this.noteFailure(`answered ${response.statusCode}`, response.statusCode === 503 ? undefined : model);
      else this.health.recordSuccess(performance.now() - started, model);
      return response;
    } catch (error) {
      this.inFlight -= 1;
      if (request.signal.aborted) throw error;
      const failure = toUpstreamError(error, this.name);
      this.failures += 1;
      this.health.recordFailure(failure.message, failure.failure === 'unreachable');
      throw failure;
    }
  }

  async generate(request: GenerationRequest): Promise<AsyncIterable<OllamaChunk>> {
    const response = await this.request({
      method: 'POST',
      path: request.path,
      headers: { 'content-type': 'application/json', accept: 'application/x-ndjson', 'user-agent': request.userAgent },
      body: JSON.stringify({ ...request.body, stream: true }),
      signal: request.signal,
      model: String(request.body.model),
    });
    if (response.statusCode >= 400) {
      const text = await response.body.text().catch(() => '');
      throw new UpstreamStatusError(response.statusCode, this.name, errorMessageOf(response.statusCode, text));
    }
    return readNdjson(response.body);
  }

  /**
   * A request that failed, also after its answer started (a broken stream). With `model`, the
   * backend answered but that model failed: it counts against (backend, model) only.
   */
  noteFailure(message: string, model?: string): void {
    this.failures += 1;
    if (model === undefined) this.health.recordFailure(message);
    else this.health.recordModelFailure(canonicalModelName(model), message);
  }

  /** Whether a request for `model` may be sent here now. */
  canTake(model: string): boolean {
    return this.health.canTake(canonicalModelName(model));
  }

  /** Whether `model` answered errors here lately (short of opening its circuit). */
  modelFailing(model: string): boolean {
    return this.health.modelFailing(canonicalModelName(model));
  }

  /** Whether this backend has `model` in memory as of the last check. */
  hasLoaded(model: string): boolean {
    const key = canonicalModelName(model);
    return this.loaded.some((m) => canonicalModelName(m.model ?? m.name) === key);
  }

  /** One active health check: /api/ps answers liveness and what is loaded. */
  async check(timeoutMs: number): Promise<void> {
    try {
      const { models } = await this.callJson<{ models?: OllamaPsModel[] }>('GET', '/api/ps', undefined, timeoutMs);
      this.loaded = models ?? [];
      this.health.recordCheck(true);
    } catch (error) {
      this.loaded = [];
      this.health.recordCheck(false, (error as Error).message);
    }
  }

  /**
   * A check asked for by a request that found no backend up. Concurrent callers share one, and it
   * runs at most once per `minIntervalMs`: a backend that hangs instead of refusing would otherwise
   * cost every request the whole check timeout.
   */
  recheck(timeoutMs: number, minIntervalMs: number): Promise<void> {
    if (this.rechecking !== undefined) return this.rechecking;
    const now = performance.now();
    if (now - this.recheckedAt < minIntervalMs) return Promise.resolve();
    this.recheckedAt = now;
    this.rechecking = this.check(timeoutMs).finally(() => (this.rechecking = undefined));
    return this.rechecking;
  }

  get inFlightCount(): number {
    return this.inFlight;
  }

  /**
   * A small JSON call the bridge makes for itself (model lists, model details); not counted as a
   * client request. Rejects with UpstreamError or UpstreamStatusError.
   */
  async callJson<T>(method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown, timeoutMs = 5000): Promise<T> {
    let response: Dispatcher.ResponseData;
    try {
      response = await this.pool.request({
        method,
        path: this.basePath + path,
        headers: { host: this.host, 'content-type': 'application/json' },
        body: body === undefined ? null : JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (error) {
      throw toUpstreamError(error, this.name);
    }
    const text = await response.body.text();
    if (response.statusCode >= 400) throw new UpstreamStatusError(response.statusCode, this.name, errorMessageOf(response.statusCode, text));
    return (text === '' ? {} : JSON.parse(text)) as T;
  }

  snapshot(): BackendSnapshot {
    return {
      name: this.name,
      url: this.url.href,
      gpu: this.gpu,
      weight: this.weight,
      inFlight: this.inFlight,
      requests: this.requests,
      failures: this.failures,
      health: this.health.snapshot(),
      loaded: this.loaded.map((m) => m.model ?? m.name),
    };
  }

  async close(): Promise<void> {
    await this.pool.destroy();
  }
}
