import type { IncomingHttpHeaders } from 'node:http';
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

  return new Promise((resolve) => {
    const finish = (): void => resolve(outcome);
    body.on('data', (chunk: Buffer) => {
      if (outcome.firstChunkMs === null) outcome.firstChunkMs = performance.now() - started;
      outcome.bytes += chunk.length;
    });
    body.pipe(res, { end: false });
    body.once('end', () => {
      res.end();
    });
    body.once('error', (error: Error) => {
      if (res.destroyed || res.writableEnded) {
        outcome.clientAborted = !res.writableFinished;
        return;
      }
      const failure = toUpstreamError(error, backend);
      outcome.error = failure.message;
      const tail = headers['content-length'] === undefined ? streamErrorTail(headers['content-type'] ?? '', surface, failure) : undefined;
      if (tail === undefined) res.destroy(error);
      else res.end(tail);
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
