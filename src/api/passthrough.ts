import { Transform, type Readable } from 'node:stream';
import type { Request, RequestHandler, Response } from 'express';
import type { Dispatcher } from 'undici';
import { upstreamRequestHeaders, relayResponse } from './relay.js';
import type { Backend } from '../upstream/backend.js';
import { UpstreamError } from '../upstream/errors.js';
import { modelNamed, ollamaMethods } from '../upstream/ollama-api.js';
import { BridgeError } from '../contract/index.js';
import { whenClosed } from './call.js';
import { refuseMethod } from './errors.js';
import { absoluteForm, requestOf } from './request.js';

/**
 * The target as the client sent it, in origin form (`/api/pull?x=1`, also when it came in absolute
 * form through a proxy). The bridge's router matches paths undecoded and without regard to case,
 * while Ollama (Go) decodes them ("/api/%63hat" is its /api/chat): only a path that is exactly one
 * of Ollama's routes is safe to relay.
 */
function targetOf(req: Request): string {
  return absoluteForm(req.originalUrl)?.originForm ?? req.originalUrl;
}

/** The target's path, without its query. */
function rawPathOf(req: Request): string {
  const target = targetOf(req);
  const query = target.indexOf('?');
  return query < 0 ? target : target.slice(0, query);
}

/** Whether Ollama's API has a route for this method on this path exactly. */
function isOllamaRoute(method: string, rawPath: string): boolean {
  return ollamaMethods(rawPath)?.includes(method) ?? false;
}

/** One of Ollama's paths asked with a method it does not take is refused by refuseMethod (405, or 204 to OPTIONS); anything else is a 404. */
function refuseNonOllamaRoute(req: Request, res: Response, rawPath: string): void {
  const methods = ollamaMethods(rawPath);
  if (methods === undefined || methods.includes(req.method)) throw new BridgeError(404, `no such endpoint: ${req.method} ${rawPath}`, { code: 'not_found' });
  refuseMethod(req.method, res, rawPath, methods);
}

/**
 * For what reached /api/ without a route of the bridge's: the bridge serves or relays each of
 * Ollama's routes itself, so anything else is answered here and never sent upstream, where it
 * would skip model restrictions, routing and the scheduler.
 */
export const refuseUnrouted: RequestHandler = (req, res) => {
  refuseNonOllamaRoute(req, res, rawPathOf(req));
};

/** A streamed request body that stopped arriving: answered 408, and the error boundary closes the connection. */
class BodyStalled extends BridgeError {
  constructor(idleMs: number) {
    super(408, `the request body stopped arriving for ${idleMs / 1000} s (server.request_timeout_seconds)`, { code: 'request_timeout' });
  }
}

/**
 * The client's body as it streams upstream, aborting the upload when it stops arriving for
 * `idleMs`: a long upload is fine, a stalled one is not. Watched as it passes through a stream of
 * its own (a 'data' listener would start the body flowing before the upstream reads it). While
 * pieces wait for the upstream to take them, the client is not what is slow, and it is given time.
 */
function stallWatched(req: Request, idleMs: number, abort: AbortController): Readable {
  const watched = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      timer.refresh();
      done(null, chunk);
    },
  });
  const waitingForUpstream = (): boolean => watched.writableLength > 0 || watched.readableLength > 0 || req.readableLength > 0;
  const timer = setTimeout(() => {
    if (waitingForUpstream()) timer.refresh();
    else abort.abort(new BodyStalled(idleMs));
  }, idleMs);
  const stop = (): void => clearTimeout(timer);
  req.once('end', stop);
  req.once('close', stop);
  watched.once('close', stop);
  // Not pipeline(): it would destroy the request, and with it the connection the 408 is written to.
  req.pipe(watched);
  return watched;
}

/** Chooses the backend for one request; undefined when it has already been answered (the client left while it waited). */
export type BackendChoice = (req: Request, res: Response) => Backend | undefined | Promise<Backend | undefined>;

export interface PassthroughOptions {
  /** Runs when each answer has closed (a model changed: the catalog is asked again). */
  afterEach?: () => void;
  /** A streamed body (a model blob) that stops arriving for this long is answered 408. */
  bodyIdleMs?: number;
  /**
   * Model management: without streaming, Ollama answers once a pull, push or create is done, minutes
   * later; the client, which can hang up, decides how long to wait, not the first-byte timeout.
   */
  answersWhenDone?: boolean;
}

/**
 * Forwards the request to one backend as it is and streams the answer back, when it is one of
 * Ollama's routes exactly.
 * A JSON body parsed by the bridge is sent again as JSON; anything else (model blobs) streams
 * through, and one that stops arriving for `bodyIdleMs` is answered 408 with the upload stopped.
 */
export function passthrough(choose: BackendChoice, { afterEach, bodyIdleMs, answersWhenDone }: PassthroughOptions = {}): RequestHandler {
  return async (req: Request, res: Response) => {
    const rawPath = rawPathOf(req);
    if (!isOllamaRoute(req.method, rawPath)) {
      refuseNonOllamaRoute(req, res, rawPath);
      return;
    }
    const backend = await choose(req, res);
    if (backend === undefined) return;
    if (afterEach !== undefined) whenClosed(res, afterEach);
    const request = requestOf(req);
    request.backend = backend.name;
    const abort = new AbortController();
    // The client hanging up (Copilot cancels on every keystroke) must stop the generation at once.
    whenClosed(res, () => {
      if (!res.writableFinished) abort.abort();
    });

    const headers = upstreamRequestHeaders(req.headers);
    let body: string | Readable | undefined;
    if (req.body !== undefined) {
      body = JSON.stringify(req.body);
      headers['content-type'] = 'application/json';
      // Decoded when it was read (gzip, deflate, br): it goes on as the plain JSON it now is.
      delete headers['content-encoding'];
    } else if (
      req.readable &&
      req.headers['content-length'] !== '0' &&
      (req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined)
    ) {
      body = bodyIdleMs === undefined ? req : stallWatched(req, bodyIdleMs, abort);
      if (req.headers['content-length'] !== undefined) headers['content-length'] = req.headers['content-length'];
    }

    // An upstream that answers (or fails) before it read the whole body leaves the rest unread on
    // the client's connection: that connection cannot carry another request.
    const closeIfUnread = (): void => {
      if (body !== undefined && typeof body !== 'string' && !req.readableEnded && !res.headersSent) res.setHeader('connection', 'close');
    };
    let upstream: Dispatcher.ResponseData;
    try {
      upstream = await backend.request({
        method: req.method as Dispatcher.HttpMethod,
        path: targetOf(req),
        headers,
        body,
        signal: abort.signal,
        model: modelNamed(req.body),
        answersWhenDone,
      });
    } catch (error) {
      // A stalled upload is answered (the error boundary closes the connection); a client that left is not.
      if (abort.signal.reason instanceof BodyStalled) throw abort.signal.reason;
      if (abort.signal.aborted) return;
      closeIfUnread();
      const failure = error instanceof UpstreamError ? error : new BridgeError(502, 'upstream request failed', { cause: error });
      request.upstreamError = failure.code ?? 'internal';
      throw failure;
    }
    closeIfUnread();
    request.relay = await relayResponse(upstream, res, request.surface, backend.name);
  };
}
