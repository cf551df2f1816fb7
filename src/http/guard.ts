import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { NextFunction, Request, Response } from 'express';
import { isLoopbackHost } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { BridgeError } from '../contract/index.js';

/** Browser origins Ollama itself trusts by default: local pages and editor webviews. */
const TRUSTED_ORIGIN = /^(https?:\/\/(localhost|127\.0\.0\.1|\[::1\]|0\.0\.0\.0)(:\d+)?|(app|file|tauri|vscode-webview|vscode-file):\/\/.*)$/i;

function hostName(hostHeader: string): string {
  // "[::1]:5000" -> "[::1]", "localhost:5000" -> "localhost"
  const match = /^(\[[^\]]+\]|[^:]+)(:\d+)?$/.exec(hostHeader.trim());
  return (match?.[1] ?? hostHeader).toLowerCase();
}

/** Compares secrets in constant time, so timing does not reveal how much of a guess was right. */
export function sameSecret(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

function bearer(req: IncomingMessage): string | undefined {
  const header = req.headers.authorization;
  if (header !== undefined && /^bearer /i.test(header)) return header.slice(7).trim();
  const apiKey = req.headers['x-api-key'];
  return typeof apiKey === 'string' ? apiKey : undefined;
}

/** A refused client gets its connection closed after the answer: it holds no place it may not use. */
function refuse(res: ServerResponse): void {
  res.setHeader('connection', 'close');
}

/**
 * Safe defaults (design §8): without API keys the bridge trusts only loopback Host names (a page on
 * another site cannot reach it through DNS rebinding) and only local browser origins; with API keys
 * every request must carry one.
 */
export function guardRequest(config: Config): (req: IncomingMessage, res: ServerResponse) => boolean {
  const { api_keys: apiKeys, allowed_hosts: allowedHosts, cors_origins: corsOrigins } = config.server;
  const hosts = new Set([...allowedHosts.map((h) => h.toLowerCase()), config.server.host.toLowerCase()]);
  const origins = new Set(corsOrigins);

  // True when the request may go on, false when answered here (a preflight); a refusal is thrown.
  return (req, res) => {
    if (apiKeys.length === 0) {
      const name = hostName(req.headers.host ?? '');
      if (!isLoopbackHost(name) && !hosts.has(name)) {
        refuse(res);
        throw new BridgeError(403, `host ${JSON.stringify(name)} is not allowed; add it to server.allowed_hosts`, { code: 'host_not_allowed' });
      }
    }
    const origin = req.headers.origin;
    if (origin !== undefined) {
      if (!TRUSTED_ORIGIN.test(origin) && !origins.has(origin)) {
        refuse(res);
        throw new BridgeError(403, `origin ${JSON.stringify(origin)} is not allowed; add it to server.cors_origins`, { code: 'origin_not_allowed' });
      }
      res.setHeader('Access-Control-Allow-Origin', origin);
      res.setHeader('Vary', 'Origin');
      if (req.method === 'OPTIONS') {
        res.setHeader('Access-Control-Allow-Methods', 'GET, POST, PUT, DELETE, HEAD, OPTIONS');
        res.setHeader('Access-Control-Allow-Headers', req.headers['access-control-request-headers'] ?? 'authorization, content-type');
        res.setHeader('Access-Control-Max-Age', '600');
        res.statusCode = 204;
        res.end();
        return false;
      }
    }
    if (apiKeys.length > 0) {
      const given = bearer(req);
      if (given === undefined || !apiKeys.some((key) => sameSecret(given, key))) {
        refuse(res);
        throw new BridgeError(401, 'a valid API key is required (Authorization: Bearer <key>)', { code: 'invalid_api_key' });
      }
    }
    return true;
  };
}

/** The guard as express middleware, for every route the fast path does not serve. */
export function guard(config: Config) {
  const allowed = guardRequest(config);
  return (req: Request, res: Response, next: NextFunction): void => {
    try {
      if (allowed(req, res)) next();
    } catch (error) {
      next(error);
    }
  };
}
