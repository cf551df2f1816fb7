import type { Request, RequestHandler, Response } from 'express';
import type { Dispatcher } from 'undici';
import { upstreamRequestHeaders, relayResponse } from './relay.js';
import type { Backend } from '../upstream/backend.js';
import { UpstreamError } from '../upstream/errors.js';
import { modelNamed } from '../upstream/ollama-api.js';
import { BridgeError } from '../contract/index.js';
import { whenClosed } from './call.js';
import { requestOf } from './request.js';

/** Everything passed through is below Ollama's /api/. */
const FORWARDED_PREFIX = '/api/';

/**
 * The path and query to send upstream, with dot segments resolved (also percent-encoded ones,
 * "%2e%2e", which the upstream would resolve itself); undefined when that leaves /api/.
 */
function forwardedPath(originalUrl: string): string | undefined {
  let url: URL;
  try {
    url = new URL(originalUrl, 'http://bridge.invalid');
  } catch {
    return undefined;
  }
  if (url.origin !== 'http://bridge.invalid' || !url.pathname.startsWith(FORWARDED_PREFIX)) return undefined;
  return url.pathname + url.search;
}

/** Chooses the backend for one request; undefined when it has already been answered (the client left while it waited). */
export type BackendChoice = (req: Request, res: Response) => Backend | undefined | Promise<Backend | undefined>;

/**
 * Forwards the request to one backend as it is and streams the answer back.
 * A JSON body parsed by the bridge is sent again as JSON; anything else (model blobs) streams through.
 */
export function passthrough(choose: BackendChoice, afterEach?: () => void): RequestHandler {
  return async (req: Request, res: Response) => {
    const path = forwardedPath(req.originalUrl);
    if (path === undefined) {
      throw new BridgeError(400, `invalid path: only ${FORWARDED_PREFIX}... is forwarded, without dot segments that leave it`, { code: 'invalid_path' });
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
    let body: string | Request | undefined;
    if (req.body !== undefined) {
      body = JSON.stringify(req.body);
      headers['content-type'] = 'application/json';
    } else if (
      req.readable &&
      req.headers['content-length'] !== '0' &&
      (req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined)
    ) {
      body = req;
      if (req.headers['content-length'] !== undefined) headers['content-length'] = req.headers['content-length'];
    }

    let upstream: Dispatcher.ResponseData;
    try {
      upstream = await backend.request({
        method: req.method as Dispatcher.HttpMethod,
        path,
        headers,
        body,
        signal: abort.signal,
        model: modelNamed(req.body),
      });
    } catch (error) {
      if (abort.signal.aborted) return;
      const failure = error instanceof UpstreamError ? error : new BridgeError(502, 'upstream request failed', { cause: error });
      request.upstreamError = failure.code ?? 'internal';
      throw failure;
    }
    request.relay = await relayResponse(upstream, res, request.surface, backend.name);
  };
}
