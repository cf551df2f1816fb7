import type { Readable } from 'node:stream';
import { Pool, type Dispatcher } from 'undici';
import type { BackendConfig, Config } from '../config/schema.js';
import { errorMessageOf, toUpstreamError, UpstreamStatusError } from './errors.js';

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
}

export interface BackendSnapshot {
  name: string;
  url: string;
  gpu: number | string | null;
  inFlight: number;
  requests: number;
  failures: number;
}

/** One Ollama instance the bridge can send requests to, with its own keep-alive connection pool. */
export class Backend {
  readonly name: string;
  readonly url: URL;
  readonly gpu: number | string | null;
  /** The Host header this upstream expects: Ollama refuses non-local names on loopback. */
  readonly host: string;
  private readonly pool: Pool;
  private readonly basePath: string;
  private inFlight = 0;
  private requests = 0;
  private failures = 0;

  constructor(config: BackendConfig, timeouts: UpstreamTimeouts) {
    this.name = config.name;
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

  /** Sends one request; rejects with an UpstreamError (or the abort reason when the signal fired). */
  async request(request: UpstreamRequest): Promise<Dispatcher.ResponseData> {
    this.inFlight += 1;
    this.requests += 1;
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
      return response;
    } catch (error) {
      this.inFlight -= 1;
      if (request.signal.aborted) throw error;
      this.failures += 1;
      throw toUpstreamError(error, this.name);
    }
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
      inFlight: this.inFlight,
      requests: this.requests,
      failures: this.failures,
    };
  }

  async close(): Promise<void> {
    await this.pool.destroy();
  }
}
