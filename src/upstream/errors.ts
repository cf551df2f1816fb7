import { BridgeError } from '../contract/index.js';
import { LineNotObjectError, LineTooLongError } from './lines.js';

/**
 * Why an upstream could not give an answer; each maps to one gateway status. `incomplete`: the
 * connection closed cleanly, but before the answer's last line came.
 */
export type UpstreamFailure = 'unreachable' | 'incomplete' | 'timeout' | 'unavailable';

const STATUS: Record<UpstreamFailure, 502 | 503 | 504> = {
  unreachable: 502,
  incomplete: 502,
  unavailable: 503,
  timeout: 504,
};

/** An upstream that could not be asked or broke off; its code reads e.g. "upstream_timeout". */
export class UpstreamError extends BridgeError {
  declare readonly status: 502 | 503 | 504;
  declare readonly code: string;

  constructor(
    readonly failure: UpstreamFailure,
    readonly backend: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(STATUS[failure], message, { code: `upstream_${failure}`, cause: options?.cause });
    this.name = 'UpstreamError';
  }
}

/** A wait on an upstream connection that ran out (src/upstream/exchange.ts). */
export class UpstreamTimeout extends Error {
  constructor(
    readonly code: 'UPSTREAM_CONNECT_TIMEOUT' | 'UPSTREAM_FIRST_BYTE_TIMEOUT' | 'UPSTREAM_IDLE_TIMEOUT',
    message: string,
  ) {
    super(message);
    this.name = 'UpstreamTimeout';
  }
}

const CONNECT_TIMEOUT_CODES = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UPSTREAM_CONNECT_TIMEOUT']);
const IDLE_TIMEOUT_CODES = new Set(['UND_ERR_BODY_TIMEOUT', 'UPSTREAM_IDLE_TIMEOUT']);
const TIMEOUT_CODES = new Set([...CONNECT_TIMEOUT_CODES, ...IDLE_TIMEOUT_CODES, 'UND_ERR_HEADERS_TIMEOUT', 'UPSTREAM_FIRST_BYTE_TIMEOUT', 'ETIMEDOUT']);
const UNAVAILABLE_CODES = new Set(['UND_ERR_CLOSED', 'UND_ERR_DESTROYED']);

function errorCode(error: unknown): string | undefined {
  for (let current = error; typeof current === 'object' && current !== null; current = (current as { cause?: unknown }).cause) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

/** Codes of a connection that could not be made at all: nothing listens there, or there is no route to it. */
const REFUSED_CODES = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);

/**
 * Whether `error` says the upstream could not be connected to at all. A connection it accepted and
 * then lost (a reset, a socket closed before the answer) says it is up, so it is not one.
 */
export function connectionRefused(error: unknown): boolean {
  return REFUSED_CODES.has(errorCode(error) ?? '');
}

/**
 * Maps a connection error (node:http's, undici's, a socket's), or an answer the bridge could not
 * take (not JSON, a line too long), to the gateway failure a client should see.
 */
export function toUpstreamError(error: unknown, backend: string): UpstreamError {
  if (error instanceof UpstreamError) return error;
  if (error instanceof SyntaxError) return new UpstreamError('unreachable', backend, `${backend} sent a line that is not JSON`, { cause: error });
  if (error instanceof LineTooLongError || error instanceof LineNotObjectError)
    return new UpstreamError('unreachable', backend, `${backend} ${error.message}`, { cause: error });
  const code = error instanceof Error && error.name === 'TimeoutError' ? 'ETIMEDOUT' : (errorCode(error) ?? 'unknown');
  const detail = error instanceof Error ? error.message : String(error);
  if (TIMEOUT_CODES.has(code)) {
    const what = CONNECT_TIMEOUT_CODES.has(code) ? 'connecting' : IDLE_TIMEOUT_CODES.has(code) ? 'waiting for the next chunk' : 'waiting for the first byte';
    return new UpstreamError('timeout', backend, `backend ${backend} timed out while ${what}`, { cause: error });
  }
  if (UNAVAILABLE_CODES.has(code)) {
    return new UpstreamError('unavailable', backend, `backend ${backend} is shutting down`, { cause: error });
  }
  return new UpstreamError('unreachable', backend, `backend ${backend} is unreachable (${code}: ${detail})`, { cause: error });
}

/** The upstream answered, but with an error status; `message` is Ollama's own {"error"} text when it sent one. */
/** The codes of upstream statuses a client acts on: a model to pull or pick, a rate limit to wait out. */
const CODE_OF_STATUS: Readonly<Record<number, string>> = { 404: 'model_not_found', 429: 'rate_limit_exceeded' };

export class UpstreamStatusError extends BridgeError {
  constructor(
    status: number,
    readonly backend: string,
    message: string,
    options: { retryAfterSeconds?: number | null; code?: string } = {},
  ) {
    super(status, message, { code: options.code ?? CODE_OF_STATUS[status] ?? null, retryAfterSeconds: options.retryAfterSeconds });
    this.name = 'UpstreamStatusError';
  }
}

/**
 * A request no cloud provider takes, as the bridge finds before asking one (a tool result that
 * answers no call): each would refuse it alike, so no other is asked, and the client gets the 400.
 */
export class UntranslatableRequest extends UpstreamStatusError {
  constructor(provider: string, message: string) {
    super(400, provider, message, { code: 'invalid_request' });
    this.name = 'UntranslatableRequest';
  }
}

/**
 * An upstream's Retry-After (RFC 9110 §10.2.3: whole seconds, or an HTTP date) as seconds from
 * `now`; null for anything else, which is not passed on.
 */
export function retryAfterSecondsOf(value: string | string[] | undefined, now = Date.now()): number | null {
  const text = (Array.isArray(value) ? value[0] : value)?.trim() ?? '';
  if (/^\d{1,9}$/.test(text)) return Number(text);
  const date = /[a-z]/i.test(text) ? Date.parse(text) : NaN;
  return Number.isNaN(date) ? null : Math.max(0, Math.ceil((date - now) / 1000));
}

/** What credentials look like in an error text: bearer tokens, OpenAI- and Anthropic-style keys, key=value pairs. */
const CREDENTIAL_PATTERNS: ReadonlyArray<[RegExp, string]> = [
  [/\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}/gi, '$1 [redacted]'],
  [/\b(sk|pk|rk)-[A-Za-z0-9_-]{8,}/g, '$1-[redacted]'],
  [/\b(api[_-]?key|x-api-key|access[_-]?token|secret)(["']?\s*[:=]\s*["']?)[^\s"',;&]{8,}/gi, '$1$2[redacted]'],
];

/**
 * An upstream's error text with anything that looks like a credential taken out, and the given
 * secrets (the keys the bridge sends) wherever they appear: providers echo keys in their 401
 * answers, and the text goes on to the client, the history and the log.
 */
export function redactSecrets(text: string, secrets: ReadonlyArray<string | undefined> = []): string {
  let out = text;
  for (const secret of secrets) if (secret !== undefined && secret.length >= 4) out = out.split(secret).join('[redacted]');
  for (const [pattern, replacement] of CREDENTIAL_PATTERNS) out = out.replace(pattern, replacement);
  return out;
}

/** Reads Ollama's {"error": "..."} body, or falls back to the raw text; credentials are redacted either way. */
export function errorMessageOf(status: number, text: string): string {
  return redactSecrets(rawErrorMessageOf(status, text));
}

/** The longest error text taken from an upstream (an error line, an error answer); Ollama's own are a sentence or two, and the text goes on to the client and the history, which keeps thousands of records in memory. */
export const ERROR_TEXT_MAX = 500;

function rawErrorMessageOf(status: number, text: string): string {
  const answered = `upstream answered ${status}`;
  try {
    const parsed = JSON.parse(text) as { error?: unknown };
    const message =
      typeof parsed.error === 'string'
        ? parsed.error
        : typeof parsed.error === 'object' && parsed.error !== null
          ? (parsed.error as { message?: unknown }).message
          : undefined;
    // An error whose message is empty says no more than its status.
    if (typeof message === 'string') return message.trim() === '' ? answered : message.slice(0, ERROR_TEXT_MAX);
  } catch {
    // not JSON
  }
  return text.trim() === '' ? answered : text.trim().slice(0, ERROR_TEXT_MAX);
}
