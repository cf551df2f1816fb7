import type { Dispatcher } from 'undici';
import type { ProviderConfig } from '../../config/schema.js';
import { errorMessageOf, redactSecrets, toUpstreamError, UpstreamStatusError } from '../errors.js';
import { LazyPool } from '../lazy-pool.js';
import { readText } from '../lines.js';
import { checkedChunk, type OllamaChunk } from '../ollama-api.js';
import type { GenerationRequest, GenerationSource } from '../source.js';

/** A provider's translated lines, checked like a local backend's: numbers and texts it sent of the wrong type are dropped. */
export async function* checkedLines(lines: AsyncIterable<OllamaChunk>): AsyncGenerator<OllamaChunk, void, undefined> {
  for await (const line of lines) yield checkedChunk(line);
}

/** What every cloud provider shares: its connection pool (undici, loaded with the first request), the POST with error mapping, closing. */
export abstract class CloudProvider implements GenerationSource {
  readonly kind = 'cloud';
  readonly name: string;
  private readonly pool: LazyPool;
  private readonly base: URL;

  constructor(
    protected readonly config: ProviderConfig,
    /** Longest SSE line or event the provider may send. */
    protected readonly maxLineBytes: number,
  ) {
    this.name = config.name;
    this.base = new URL(config.base_url);
    const timeoutMs = config.timeout_seconds * 1000;
    this.pool = new LazyPool(this.base.origin, { headersTimeout: timeoutMs, bodyTimeout: timeoutMs });
  }

  abstract generate(request: GenerationRequest): Promise<AsyncIterable<OllamaChunk>>;

  /** POSTs JSON below the base URL (keeping its query, e.g. Azure's api-version); an error status rejects. */
  protected async post(path: string, body: unknown, headers: Record<string, string>, signal: AbortSignal): Promise<Dispatcher.ResponseData> {
    const url = new URL(this.base.href);
    url.pathname = `${url.pathname.replace(/\/+$/, '')}${path}`;
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
    if (response.statusCode >= 400) {
      const text = await readText(response.body, this.maxLineBytes).catch(() => '');
      throw new UpstreamStatusError(response.statusCode, this.name, `${this.name}: ${this.redact(errorMessageOf(response.statusCode, text))}`);
    }
    return response;
  }

  /** An error text from the provider without its key, which some providers echo back. */
  protected redact(text: string): string {
    return redactSecrets(text, [this.config.api_key]);
  }

  async close(): Promise<void> {
    await this.pool.destroy();
  }
}
