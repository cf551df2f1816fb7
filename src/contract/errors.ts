export interface BridgeErrorOptions {
  /** Machine-readable, e.g. "model_not_found"; null when nothing more specific than the status applies. */
  code?: string | null;
  /** The request field at fault, e.g. "messages.0.content". */
  param?: string | null;
  /** How long the client should wait before it asks again (a rate limit): sent as Retry-After. */
  retryAfterSeconds?: number | null;
  cause?: unknown;
}

/**
 * The one error type the bridge raises on purpose: an HTTP status, a code, a message for people,
 * the request field at fault and the cause. Handlers throw it and keep to the happy path; one
 * boundary per front door turns it into that surface's error shape (src/api/errors.ts for the
 * client APIs, the control routes for the dashboard and the tray).
 */
export class BridgeError extends Error {
  readonly code: string | null;
  readonly param: string | null;
  readonly retryAfterSeconds: number | null;

  constructor(
    readonly status: number,
    message: string,
    options: BridgeErrorOptions = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'BridgeError';
    this.code = options.code ?? null;
    this.param = options.param ?? null;
    this.retryAfterSeconds = options.retryAfterSeconds ?? null;
  }
}
