import type { IncomingHttpHeaders } from 'node:http';
import { Transform, type TransformCallback } from 'node:stream';
import type { Response } from 'express';
import type { Dispatcher } from 'undici';
import { whenClosed } from './call.js';
import { streamErrorTail, type Surface } from './errors.js';
import type { RelayOutcome } from '../contract/index.js';
import { CREDENTIAL_HEADERS } from '../auth/authenticate.js';
import { toUpstreamError } from '../upstream/errors.js';

/** Headers that describe one connection, not the message (RFC 9110 §7.6.1); never forwarded. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/** Client headers that belong to the bridge, not to the upstream: its credentials above all. */
const CLIENT_ONLY = new Set(['host', 'content-length', 'cookie', 'expect', 'origin', ...CREDENTIAL_HEADERS]);

type HeaderBag = IncomingHttpHeaders | Record<string, string | string[] | undefined>;

function connectionTokens(headers: HeaderBag): Set<string> {
  const value = headers.connection;
  const text = Array.isArray(value) ? value.join(',') : (value ?? '');
  return new Set(
    text
      .split(',')
      .map((token) => token.trim().toLowerCase())
      .filter(Boolean),
  );
}

function endToEnd(headers: HeaderBag, alsoDrop: ReadonlySet<string>): Record<string, string> {
  const listed = connectionTokens(headers);
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    const lower = name.toLowerCase();
    if (value === undefined || HOP_BY_HOP.has(lower) || listed.has(lower) || alsoDrop.has(lower)) continue;
    out[lower] = Array.isArray(value) ? value.join(', ') : value;
  }
  return out;
}

/** Headers to send upstream for a client request (the Host is set by the backend). */
export function upstreamRequestHeaders(headers: IncomingHttpHeaders): Record<string, string> {
  return endToEnd(headers, CLIENT_ONLY);
}

const NONE = new Set<string>();

/** The longest start of a line held back for its end; a longer line goes on as it comes, so memory stays bounded. */
const MAX_HELD_LINE = 1024 * 1024;

/**
 * Passes NDJSON on in whole lines: the start of a line waits for the rest of it. A stream that
 * breaks mid-line then ends after its last whole line, so the error line written after it parses:
 * ollama's Go client reads line by line and fails at the first that does not parse, before it
 * reaches the error.
 */
class WholeLines extends Transform {
  private held: Buffer = Buffer.alloc(0);

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    const end = chunk.lastIndexOf(0x0a);
    if (end < 0) {
      this.held = Buffer.concat([this.held, chunk]);
      if (this.held.length > MAX_HELD_LINE) this.flushHeld();
    } else if (this.held.length === 0 && end === chunk.length - 1) {
      this.push(chunk);
    } else {
      this.push(Buffer.concat([this.held, chunk.subarray(0, end + 1)]));
      this.held = chunk.subarray(end + 1);
    }
    done();
  }

  override _flush(done: TransformCallback): void {
    this.flushHeld();
    done();
  }

  /** Ends the stream without the line it holds: the upstream broke before that line ended. */
  cut(): void {
    this.held = Buffer.alloc(0);
    this.end();
  }

  private flushHeld(): void {
    if (this.held.length > 0) this.push(this.held);
    this.held = Buffer.alloc(0);
  }
}

/**
 * Streams an upstream answer to the client chunk by chunk, with back-pressure (pipe pauses the
 * upstream while the client socket is full). A break after the status line was sent cannot change
 * the status any more: the stream then ends with the surface's own error form.
 */
export function relayResponse(upstream: Dispatcher.ResponseData, res: Response, surface: Surface, backend: string): Promise<RelayOutcome> {
  const started = performance.now();
  const outcome: RelayOutcome = { firstChunkMs: null, bytes: 0, error: null, clientAborted: false };
  res.status(upstream.statusCode);
  const headers = endToEnd(upstream.headers, NONE);
  for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
  const body = upstream.body;
  const contentType = headers['content-type'] ?? '';
  // Compressed lines are not told by their bytes: those go on as they come.
  const lines =
    headers['content-length'] === undefined && headers['content-encoding'] === undefined && contentType.startsWith('application/x-ndjson')
      ? new WholeLines()
      : undefined;
  const source = lines === undefined ? body : body.pipe(lines);

  return new Promise((resolve) => {
    const finish = (): void => resolve(outcome);
    body.on('data', (chunk: Buffer) => {
      if (outcome.firstChunkMs === null) outcome.firstChunkMs = performance.now() - started;
      outcome.bytes += chunk.length;
    });
    source.pipe(res, { end: false });
    // The error line, when the upstream broke: written after the whole lines still on their way.
    let errorTail: string | undefined;
    source.once('end', () => {
      res.end(errorTail);
    });
    body.once('error', (error: Error) => {
      if (res.destroyed || res.writableEnded) {
        outcome.clientAborted = !res.writableFinished;
        return;
      }
      const failure = toUpstreamError(error, backend);
      outcome.error = failure.message;
      // A tail cannot go after an answer of known length, nor in plain text after compressed bytes.
      const tail =
        headers['content-length'] === undefined && headers['content-encoding'] === undefined ? streamErrorTail(contentType, surface, failure) : undefined;
      if (tail === undefined) res.destroy(error);
      else if (lines === undefined) res.end(tail);
      else {
        errorTail = tail;
        lines.cut();
      }
    });
    whenClosed(res, () => {
      if (!res.writableFinished) {
        outcome.clientAborted = outcome.error === null;
        body.destroy();
      }
      finish();
    });
  });
}
