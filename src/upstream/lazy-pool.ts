import type { Pool } from 'undici';

/**
 * An undici connection pool made with the first request that needs one, so that undici itself
 * loads only then: a bridge that only answers health checks and model lists never loads it.
 */
export class LazyPool {
  private pending: Promise<Pool> | undefined;
  /** The pool once made: a caller holding it dispatches without waiting a turn. */
  made: Pool | undefined;

  constructor(
    private readonly origin: string,
    private readonly options: Pool.Options,
  ) {}

  get(): Promise<Pool> {
    this.pending ??= import('undici').then(({ Pool }) => (this.made = new Pool(this.origin, this.options)));
    return this.pending;
  }

  async destroy(): Promise<void> {
    await (await this.pending)?.destroy();
  }
}
