import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Router as ExpressRouter } from 'express';

/**
 * What a client API handler reads from a request: plain node:http plus the parsed body, the path
 * without its query and the path parameters. Express's Request has all of these, and the fast
 * path (src/http/fast.ts) sets them on a plain IncomingMessage, so one handler serves both.
 */
export type ApiRequest = IncomingMessage & {
  body?: unknown;
  path: string;
  params: Record<string, string | string[]>;
};

export type ApiHandler = (req: ApiRequest, res: ServerResponse) => Promise<void> | void;

/**
 * One client API route. `path` is exact, or has one ":name" segment (any single path segment,
 * percent-decoded into params.name).
 */
export interface ApiRoute {
  method: 'GET' | 'POST';
  path: string;
  handler: ApiHandler;
}

/**
 * Runs `onClose` when the response closes, or at once when it already has: a client can hang up
 * during any await before, and a listener added after its 'close' would never run (a concurrency
 * slot never given back, a generation never stopped). Returns what removes the listener.
 */
export function whenClosed(res: ServerResponse, onClose: () => void): () => void {
  if (res.destroyed) {
    onClose();
    return () => undefined;
  }
  res.once('close', onClose);
  return () => res.off('close', onClose);
}

/** Mounts client API routes on an express router or app: the same handlers the fast path calls. */
export function mountRoutes(router: Pick<ExpressRouter, 'get' | 'post'>, routes: readonly ApiRoute[]): void {
  for (const route of routes) {
    if (route.method === 'GET') router.get(route.path, route.handler);
    else router.post(route.path, route.handler);
  }
}

const JSON_TYPE = 'application/json; charset=utf-8';

/** Answers with a JSON body, headers as express's res.json writes them (content type with charset, length). */
export function sendJson(res: ServerResponse, status: number, value: unknown): void {
  const text = JSON.stringify(value);
  res.statusCode = status;
  // Header names spelled as express spells them, so both paths write the same bytes.
  res.setHeader('Content-Type', JSON_TYPE);
  res.setHeader('Content-Length', Buffer.byteLength(text));
  res.end(text);
}

/** Answers with plain text, headers as express's res.type('text/plain').send() writes them. */
export function sendText(res: ServerResponse, status: number, text: string): void {
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/plain; charset=utf-8');
  res.setHeader('Content-Length', Buffer.byteLength(text));
  res.end(text);
}
