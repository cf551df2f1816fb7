import type { Request, RequestHandler, Response } from 'express';
import type { Dispatcher } from 'undici';
import { upstreamRequestHeaders, relayResponse } from './relay.js';
import type { Backend } from '../upstream/backend.js';
import { UpstreamError } from '../upstream/errors.js';
import { BridgeError } from '../contract/index.js';
import { requestOf } from './request.js';

/** The model a native request names (`model`, or `name` as older clients send it), if any. */
function modelOf(body: unknown): string | undefined {
  if (typeof body !== 'object' || body === null) return undefined;
  const { model, name } = body as { model?: unknown; name?: unknown };
  if (typeof model === 'string' && model !== '') return model;
  return typeof name === 'string' && name !== '' ? name : undefined;
}

/** Chooses the backend for one request. */
export type BackendChoice = (req: Request) => Backend | Promise<Backend>;

/**
 * Forwards the request to one backend as it is and streams the answer back.
 * A JSON body parsed by the bridge is sent again as JSON; anything else (model blobs) streams through.
 */
export function passthrough(choose: BackendChoice, afterEach?: () => void): RequestHandler {
  return async (req: Request, res: Response) => {
    const backend = await choose(req);
    if (afterEach !== undefined) res.once('close', afterEach);
    const request = requestOf(req);
    request.backend = backend.name;
    const abort = new AbortController();
    // The client hanging up (Copilot cancels on every keystroke) must stop the generation at once.
    const onClose = (): void => {
      if (!res.writableFinished) abort.abort();
    };
    res.once('close', onClose);

    const headers = upstreamRequestHeaders(req.headers);
    let body: string | Request | undefined;
    if (req.body !== undefined) {
      body = JSON.stringify(req.body);
      headers['content-type'] = 'application/json';
    } else if (req.readable && req.headers['content-length'] !== '0' && (req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined)) {
      body = req;
      if (req.headers['content-length'] !== undefined) headers['content-length'] = req.headers['content-length'];
    }

    let upstream: Dispatcher.ResponseData;
    try {
      upstream = await backend.request({
        method: req.method as Dispatcher.HttpMethod,
        path: req.originalUrl,
        headers,
        body,
        signal: abort.signal,
        model: modelOf(req.body),
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
