import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib';
import type { NextFunction, Request, Response } from 'express';
import { nestedDeeperThan } from '../contract/index.js';

/** An error the body reader raises; `type` follows body-parser's names, which the error handler maps. */
export class BodyError extends Error {
  constructor(
    readonly type:
      | 'entity.too.large'
      | 'entity.parse.failed'
      | 'entity.decode.failed'
      | 'encoding.unsupported'
      | 'charset.unsupported'
      | 'request.aborted'
      | 'request.timeout',
    message: string,
  ) {
    super(message);
    this.name = 'BodyError';
  }
}

/** Answers whose client waits for `100 Continue` before it sends its body. */
const owedContinue = new WeakSet<ServerResponse>();

/**
 * For node's 'checkContinue': the client is told to send its body only when a reader wants it, so
 * a refusal before that (Host, Origin, key, size, encoding) costs it no upload. Node closes the
 * connection after an answer that never sent the `100 Continue`: the client may send the body yet.
 */
export function deferContinue(res: ServerResponse): void {
  owedContinue.add(res);
}

/** Tells a client that waits for `100 Continue` to send its body; nothing for any other. */
export function sendContinue(res: ServerResponse): void {
  if (owedContinue.delete(res)) res.writeContinue();
}

function decoded(req: IncomingMessage): Readable {
  const encoding = (req.headers['content-encoding'] ?? 'identity').toLowerCase();
  if (encoding === 'identity') return req;
  if (encoding === 'gzip') return req.pipe(createGunzip());
  if (encoding === 'deflate') return req.pipe(createInflate());
  if (encoding === 'br') return req.pipe(createBrotliDecompress());
  throw new BodyError('encoding.unsupported', `unsupported content encoding "${encoding}"`);
}

/**
 * Deepest nesting of objects and arrays a request may have. Real requests (tool schemas included)
 * stay far below; a deeper one would overflow the stack wherever it is copied or sent on.
 */
const MAX_JSON_DEPTH = 128;

/**
 * A request body's text as JSON (an object or an array); undefined when it is empty. Throws a
 * BodyError. A byte order mark in front is passed over, as RFC 8259 allows: some tools (Windows
 * PowerShell's UTF-8 files) write one.
 */
function parseJson(body: string): unknown {
  const text = body.charCodeAt(0) === 0xfeff ? body.slice(1) : body;
  const first = text.trimStart()[0];
  if (first === undefined) return undefined;
  if (nestedDeeperThan(text, MAX_JSON_DEPTH)) throw new BodyError('entity.parse.failed', `nested deeper than ${MAX_JSON_DEPTH} levels`);
  if (first !== '{' && first !== '[') {
    throw new BodyError('entity.parse.failed', `Unexpected token ${JSON.stringify(first)} at position 0: a JSON object is expected`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new BodyError('entity.parse.failed', (error as Error).message);
  }
}

/**
 * Reads a JSON request body (an object or an array) of at most `limit` bytes, which must arrive
 * whole within `timeoutMs` (a client that trickles its body cannot hold a connection); undefined
 * when the request has none. Rejects with a BodyError. Written for the hot path: express.json()
 * measured about 0.2 ms per request here, as much as the rest of the bridge's own work on a small
 * request.
 */
export function readJsonBody(req: IncomingMessage, res: ServerResponse, limit: number, timeoutMs: number): Promise<unknown> {
  const length = req.headers['content-length'];
  if (req.method === 'GET' || req.method === 'HEAD' || (length === undefined && req.headers['transfer-encoding'] === undefined) || length === '0') {
    return Promise.resolve(undefined);
  }
  if (length !== undefined && Number(length) > limit) return Promise.reject(new BodyError('entity.too.large', 'request entity too large'));
  // The value may be a quoted string (charset="utf-8"), as HTTP allows for any parameter.
  const charset = /charset="?([^;"]+)/i
    .exec(req.headers['content-type'] ?? '')?.[1]
    ?.trim()
    .toLowerCase();
  if (charset !== undefined && charset !== 'utf-8' && charset !== 'utf8') {
    return Promise.reject(new BodyError('charset.unsupported', `unsupported charset "${charset}"`));
  }
  let stream: Readable;
  try {
    stream = decoded(req);
  } catch (error) {
    return Promise.reject(error as Error);
  }
  // A client that already hung up (during an await before this) is not served: nothing would
  // notice it left, since its 'close' has passed.
  if (req.destroyed) return Promise.reject(new BodyError('request.aborted', 'request aborted'));
  sendContinue(res);
  if (stream === req && length !== undefined && req.readableLength >= Number(length)) {
    // The whole body came with the head (nearly every request): it is read at once, with no
    // listeners, no deadline timer and no wait for the parser to report the message complete
    // (which node does a turn of the event loop later). Resumed, so the end is consumed as usual.
    const body = req.read() as Buffer | null;
    req.resume();
    try {
      return Promise.resolve(parseJson(body === null ? '' : body.toString('utf8')));
    } catch (error) {
      return Promise.reject(error as Error);
    }
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const deadline = setTimeout(() => finish(new BodyError('request.timeout', `the request body did not arrive within ${timeoutMs / 1000} s`)), timeoutMs);
    const finish = (error: Error | undefined, body?: unknown): void => {
      if (done) return;
      done = true;
      clearTimeout(deadline);
      stream.removeAllListeners('data');
      if (error !== undefined && stream !== req) {
        // Decoding stops with the refusal: a compressed body of a few kilobytes can inflate to
        // gigabytes, which the decoder would otherwise work through after the answer.
        req.unpipe();
        stream.destroy();
      }
      if (error === undefined) resolve(body);
      else reject(error);
    };
    stream.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        finish(new BodyError('entity.too.large', 'request entity too large'));
        return;
      }
      chunks.push(chunk);
    });
    // The reader stops there, before the end of the body, whose rest stays unread on the connection.
    stream.on('error', () => finish(new BodyError('entity.decode.failed', 'the body could not be decoded')));
    req.on('close', () => {
      if (!req.complete) finish(new BodyError('request.aborted', 'request aborted'));
    });
    stream.on('end', () => {
      if (done) return;
      const text = chunks.length === 1 ? (chunks[0] as Buffer).toString('utf8') : Buffer.concat(chunks).toString('utf8');
      try {
        finish(undefined, parseJson(text));
      } catch (error) {
        finish(error as Error);
      }
    });
  });
}

/** The body reader as express middleware: the parsed body in req.body. */
export function jsonBody(limit: number, timeoutMs: number) {
  return (req: Request, res: Response, next: NextFunction): void => {
    readJsonBody(req, res, limit, timeoutMs).then(
      (body) => {
        if (body !== undefined) req.body = body;
        next();
      },
      (error: unknown) => next(error),
    );
  };
}
