import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import type { BackendConfig, Config } from '../config/schema.js';
import { connectionRefused, errorMessageOf, toUpstreamError, UpstreamError, UpstreamStatusError } from './errors.js';
import { UpstreamOrigin, type ExchangeTimeouts } from './exchange.js';
import { BackendHealth, type Probes } from './health.js';
import { LazyPool } from './lazy-pool.js';
import { canonicalModelName, isJsonObject, jsonOf, type CancelSignal } from '../contract/index.js';
import { listedModels, MAX_ANSWER_DEPTH, NdjsonLines, nestsTooDeep, type OllamaChunk, type OllamaPsModel } from './ollama-api.js';
import { LineTooLongError } from './lines.js';
import type { GenerationRequest, GenerationSource } from './source.js';
import type { BackendSnapshot } from '../contract/index.js';
export type { BackendSnapshot } from '../contract/index.js';

/** How long the bridge waits on an upstream, and how much it takes from one. */
export interface UpstreamLimits {
  connectMs: number;
  /** Until the response head arrives; Ollama sends it with the first token, so cold loads count. */
  firstByteMs: number;
  /** Longest gap between two body chunks. */
  idleMs: number;
  /** Longest answer line (NDJSON, SSE), and largest JSON answer. */
  maxLineBytes: number;
}

export function limitsFrom(config: Config): UpstreamLimits {
  const t = config.routing.thresholds;
  return {
    connectMs: t.connect_timeout_seconds * 1000,
    firstByteMs: t.timeout_seconds * 1000,
    idleMs: t.idle_timeout_seconds * 1000,
    maxLineBytes: Math.round(t.max_line_mb * 1024 * 1024),
  };
}

/** A JSON answer's text as an object (an empty answer, as Ollama's delete sends, is `{}`); undefined when it is not JSON or not an object. */
function jsonObjectOf(text: string): Record<string, unknown> | undefined {
  if (text === '') return {};
  const parsed = jsonOf(text);
  return isJsonObject(parsed) ? parsed : undefined;
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
  /** Ollama may answer only once the work is done (a model pull without streaming), or fall silent while it works: no limit on the waits then. */
  answersWhenDone?: boolean;
}

/** The content type of a web page, which no Ollama answers with. */
const WEB_PAGE = /^text\/html\b/i;

/** How long an unused keep-alive connection to a backend stays open. */
const IDLE_CONNECTION_MS = 10_000;

/**
 * One Ollama instance the bridge can send requests to, with its own keep-alive connections:
 * generations and requests relayed as they are go through an undici pool, loaded with the first
 * of them; the bridge's own small calls (health checks, model lists) go over node:http, so an
 * idle bridge never loads undici.
 */
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
  private readonly origin: UpstreamOrigin;
  private readonly timeouts: ExchangeTimeouts;
  private readonly pool: LazyPool;
  private readonly basePath: string;
  private inFlight = 0;
  private requests = 0;
  private failures = 0;
  private recheckedAt = Number.NEGATIVE_INFINITY;
  private rechecking: Promise<void> | undefined;

  constructor(
    config: BackendConfig,
    private readonly limits: UpstreamLimits,
    health: BackendHealth,
  ) {
    this.name = config.name;
    this.weight = config.weight;
    this.health = health;
    this.url = new URL(config.url);
    this.gpu = config.gpu ?? null;
    this.host = this.url.host;
    this.basePath = this.url.pathname.replace(/\/+$/, '');
    this.origin = new UpstreamOrigin(this.url, IDLE_CONNECTION_MS);
    this.timeouts = { connectMs: limits.connectMs, firstByteMs: limits.firstByteMs, idleMs: limits.idleMs };
    this.pool = new LazyPool(this.url.origin, {
      connect: { timeout: limits.connectMs },
      headersTimeout: limits.firstByteMs,
      bodyTimeout: limits.idleMs,
      keepAliveTimeout: IDLE_CONNECTION_MS,
    });
  }

  /**
   * Sends one client request. Its outcome feeds the health state: connection errors, timeouts and
   * 5xx answers count as failures. Rejects with an UpstreamError (or the abort reason).
   */
  async request(request: UpstreamRequest): Promise<Dispatcher.ResponseData> {
    const { model, probes } = this.begin(request.model);
    const started = performance.now();
    try {
      const pool = await this.pool.get();
      const response = await pool.request({
        method: request.method,
        path: this.basePath + request.path,
        headers: { ...request.headers, host: this.host },
        body: request.body ?? null,
        signal: request.signal,
        // 0: no limit; undefined: the pool's first-byte and idle timeouts. A model pull, create or
        // push may be silent for minutes (converting, hashing): the client, which can hang up, decides.
        headersTimeout: request.answersWhenDone === true ? 0 : undefined,
        bodyTimeout: request.answersWhenDone === true ? 0 : undefined,
      });
      response.body.once('close', () => {
        this.inFlight -= 1;
      });
      this.answered(response.statusCode, performance.now() - started, model);
      return response;
    } catch (error) {
      this.inFlight -= 1;
      // The client left before the answer: nothing was learnt of the backend, and a probe of a half-open circuit must not hold it shut.
      if (request.signal.aborted) this.health.release(model, probes);
      throw this.unanswered(error, request.signal);
    }
  }

  /** Counts a request that is about to be sent; returns its model's canonical name, and which circuits it probes. */
  private begin(requested: string | undefined): { model: string | undefined; probes: Probes } {
    this.inFlight += 1;
    this.requests += 1;
    const model = requested === undefined ? undefined : canonicalModelName(requested);
    return { model, probes: this.health.begin(model) };
  }

  /** Counts an answer by its status: 5xx is a failure; 503 is Ollama's "server busy" (its queue is full), the whole backend's. */
  private answered(status: number, latencyMs: number, model: string | undefined): void {
    if (status >= 500) this.noteFailure(`answered ${status}`, status === 503 ? undefined : model);
    else this.health.recordSuccess(latencyMs, model);
  }

  /** Counts a request that got no answer and returns what to throw: the abort as it is, anything else as an UpstreamError. */
  private unanswered(error: unknown, cancel: CancelSignal): unknown {
    if (cancel.aborted) return error;
    const failure = toUpstreamError(error, this.name);
    this.failures += 1;
    this.health.recordFailure(failure.message, connectionRefused(error));
    return failure;
  }

  /**
   * Asks for a generation and resolves with its lines once the answer started. Dispatched with a
   * handler of its own rather than as a request with a body stream: each chunk is parsed where it
   * arrives, with back-pressure through the connection's pause and resume. Rejects like request(),
   * and with UpstreamStatusError for an error status. (undici's dispatcher measured about 0.06 ms
   * less CPU per request than a node:http client with a keep-alive agent doing the same.)
   */
  async generate(request: GenerationRequest): Promise<AsyncIterable<OllamaChunk>> {
    const pool = this.pool.made ?? (await this.pool.get());
    const { model, probes } = this.begin(String(request.body.model));
    const started = performance.now();
    const { cancel } = request;
    const { maxLineBytes } = this.limits;
    return new Promise((resolve, reject) => {
      let controller: Dispatcher.DispatchController | undefined;
      let status = 0;
      let headMs = 0;
      // An error answer's bytes, decoded once whole: a character may arrive split over two chunks.
      const errorChunks: Buffer[] = [];
      let errorBytes = 0;
      let settled = false;
      const lines = new NdjsonLines(
        {
          pause: () => controller?.pause(),
          resume: () => controller?.resume(),
          destroy: () => controller?.abort(new Error('the answer was not read to its end')),
        },
        maxLineBytes,
      );
      const onAbort = (): void => controller?.abort(cancel.reason as Error);
      const finish = (): void => {
        if (settled) return;
        settled = true;
        this.inFlight -= 1;
        cancel.removeEventListener('abort', onAbort);
      };
      const statusError = (): UpstreamStatusError =>
        new UpstreamStatusError(status, this.name, errorMessageOf(status, Buffer.concat(errorChunks).toString('utf8')));
      cancel.addEventListener('abort', onAbort);
      pool.dispatch(
        {
          method: 'POST',
          path: this.basePath + request.path,
          headers: { 'content-type': 'application/json', accept: 'application/x-ndjson', 'user-agent': request.userAgent, host: this.host },
          body: JSON.stringify({ ...request.body, stream: true }),
        },
        {
          onRequestStart: (dispatch) => {
            controller = dispatch;
            if (cancel.aborted) dispatch.abort(cancel.reason as Error);
          },
          onResponseStart: (dispatch, statusCode, headers) => {
            status = statusCode;
            headMs = performance.now() - started;
            if (statusCode < 400 && WEB_PAGE.test(String(headers['content-type']))) {
              // A proxy's login page or a web server at the wrong address: read as lines it would only look cut off.
              const failure = new UpstreamError('unreachable', this.name, `${this.name} answered a web page (text/html) instead of NDJSON`);
              finish();
              this.noteFailure(failure.message);
              reject(failure);
              dispatch.abort(failure);
              return;
            }
            // A 200 head promises nothing yet: Ollama reports a runner that fails to load or
            // crashes as an error line after it. Such an answer counts once it ended well.
            if (statusCode < 400) resolve(lines);
            else this.answered(statusCode, headMs, model);
          },
          onResponseData: (_dispatch, chunk) => {
            if (status < 400) lines.push(chunk);
            // An error answer is read for its message, up to the longest line taken.
            else if (errorBytes < maxLineBytes) {
              errorChunks.push(chunk);
              errorBytes += chunk.length;
            }
          },
          onResponseEnd: () => {
            finish();
            if (status >= 400) reject(statusError());
            else {
              lines.end();
              if (lines.complete) this.answered(status, headMs, model);
            }
          },
          onResponseError: (_dispatch, error) => {
            finish();
            // The client left: nothing was learnt of the backend, and a probe of a half-open circuit must not hold it shut.
            if (cancel.aborted) this.health.release(model, probes);
            if (status === 0) reject(this.unanswered(error, cancel));
            else if (status >= 400) reject(statusError());
            else lines.fail(error);
          },
        },
      );
    });
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

  /** Why a request for `model` may not be sent here now ("down (...)", "circuit open ..."), or null when it may. */
  refusal(model: string): string | null {
    return this.health.refusal(canonicalModelName(model));
  }

  /** Whether `model` answered errors here lately (short of opening its circuit). */
  modelFailing(model: string): boolean {
    return this.health.modelFailing(canonicalModelName(model));
  }

  /**
   * The entry of /api/ps (as of the last check) that holds `model` in memory. Ollama runs one
   * runner per model file and lists it under the name that loaded it, so with the model's
   * `digest` another name of the same file (a copy, a second tag) counts as loaded too.
   */
  loadedEntry(model: string, digest?: string): OllamaPsModel | undefined {
    const key = canonicalModelName(model);
    return this.loaded.find((m) => canonicalModelName(m.model) === key || (digest !== undefined && m.digest === digest));
  }

  /** Whether this backend has `model` (or, given its digest, another name of its file) in memory as of the last check. */
  hasLoaded(model: string, digest?: string): boolean {
    return this.loadedEntry(model, digest) !== undefined;
  }

  /** One active health check: /api/ps answers liveness and what is loaded. */
  async check(timeoutMs: number): Promise<void> {
    try {
      const { models } = await this.callJson<{ models?: unknown }>('GET', '/api/ps', undefined, timeoutMs);
      this.loaded = listedModels<OllamaPsModel>(models);
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
  callJson<T>(method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown, timeoutMs = 5000): Promise<T> {
    const text = body === undefined ? undefined : JSON.stringify(body);
    const headers =
      text === undefined ? { host: this.host } : { host: this.host, 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) };
    const { maxLineBytes } = this.limits;
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let status = 0;
      const abort = this.origin.exchange(method, this.basePath + path, headers, text, this.timeouts, AbortSignal.timeout(timeoutMs), {
        response: (res) => {
          status = res.statusCode ?? 0;
        },
        data: (chunk) => {
          size += chunk.length;
          if (size > maxLineBytes) abort(new LineTooLongError(maxLineBytes));
          else chunks.push(chunk);
        },
        end: () => {
          const answer = Buffer.concat(chunks).toString('utf8');
          if (status >= 400) reject(new UpstreamStatusError(status, this.name, errorMessageOf(status, answer)));
          else if (nestsTooDeep(answer)) {
            reject(new UpstreamError('unreachable', this.name, `${this.name} sent an answer nested deeper than ${MAX_ANSWER_DEPTH} levels`));
          } else {
            const parsed = jsonObjectOf(answer);
            // Every answer read here is an object: anything else (a proxy's HTML page, NDJSON, null) is a broken upstream, not the bridge's fault.
            if (parsed === undefined) reject(new UpstreamError('unreachable', this.name, `${this.name} sent an answer that is not a JSON object`));
            else resolve(parsed as T);
          }
        },
        error: (error) => reject(toUpstreamError(error, this.name)),
      });
    });
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
      loaded: this.loaded.map((m) => m.model),
    };
  }

  async close(): Promise<void> {
    this.origin.close();
    await this.pool.destroy();
  }
}
