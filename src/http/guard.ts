import type { IncomingMessage, ServerResponse } from 'node:http';
import type { NextFunction, Request, Response } from 'express';
import { authConfigured, isLoopbackHost } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { BridgeError } from '../contract/index.js';
import { absoluteForm } from '../api/request.js';

/** Browser origins Ollama itself trusts by default: local pages and editor webviews. */
const TRUSTED_ORIGIN = /^(https?:\/\/(localhost|127\.0\.0\.1|\[::1\]|0\.0\.0\.0)(:\d+)?|(app|file|tauri|vscode-webview|vscode-file):\/\/.*)$/i;

function hostName(hostHeader: string): string {
  // "[::1]:5000" -> "[::1]", "localhost:5000" -> "localhost"
  const match = /^(\[[^\]]+\]|[^:]+)(:\d+)?$/.exec(hostHeader.trim());
  return (match?.[1] ?? hostHeader).toLowerCase();
}

/**
 * The host name a request is for: an absolute-form target's (`GET http://host/path`), which comes
 * before the Host header (RFC 9112 §3.2.2; express routes such a request by its path), else the
 * Host header's. Undefined when it has more than one Host header, which node would read as the first.
 */
function requestHostName(req: IncomingMessage): string | undefined {
  const authority = absoluteForm(req.url ?? '/')?.authority;
  if (authority !== undefined) return hostName(authority);
  const raw = req.rawHeaders;
  let hosts = 0;
  for (let i = 0; i < raw.length; i += 2) if ((raw[i] as string).length === 4 && (raw[i] as string).toLowerCase() === 'host') hosts += 1;
  return hosts > 1 ? undefined : hostName(req.headers.host ?? '');
}

const EXPOSED_HEADERS = 'retry-after, x-request-id, x-bridge-model, x-bridge-backend, x-bridge-tier, x-bridge-route-reason, x-bridge-dropped';

/** The host name of an http(s) origin ("https://bridge.lan:8443" -> "bridge.lan"); undefined for any other. */
function originHostName(origin: string): string | undefined {
  return /^https?:\/\/(\[[^\]]+\]|[^:/]+)(:\d+)?$/i.exec(origin)?.[1]?.toLowerCase();
}

/** A refused client gets its connection closed after the answer: it holds no place it may not use. */
function refuse(res: ServerResponse): void {
  res.setHeader('connection', 'close');
}

/**
 * Safe defaults (design §8): without API keys or a JWT issuer the bridge trusts only loopback Host
 * names (a page on another site cannot reach it through DNS rebinding) and only local browser
 * origins; with them, every request must say who it is (checked next, by the auth layer).
 */
export function guardRequest(config: Config): (req: IncomingMessage, res: ServerResponse) => boolean {
  const { allowed_hosts: allowedHosts, cors_origins: corsOrigins } = config.server;
  // With keys or a JWT issuer the bridge may listen beyond loopback: who is asking is checked next, by the auth layer.
  const checkHost = !authConfigured(config);
  const hosts = new Set([...allowedHosts.map((h) => h.toLowerCase()), config.server.host.toLowerCase()]);
  const origins = new Set(corsOrigins);

  // True when the request may go on, false when answered here (a preflight); a refusal is thrown.
  return (req, res) => {
    if (checkHost) {
      const name = requestHostName(req);
      if (name === undefined) {
        refuse(res);
        throw new BridgeError(400, 'the request has more than one Host header', { code: 'invalid_request' });
      }
      if (!isLoopbackHost(name) && !hosts.has(name)) {
        refuse(res);
        throw new BridgeError(403, `host ${JSON.stringify(name)} is not allowed; add it to server.allowed_hosts`, { code: 'host_not_allowed' });
      }
    }
    const origin = req.headers.origin;
    if (origin !== undefined) {
      // A page under one of the bridge's own names is its own dashboard there: a browser sends
      // Origin on its POSTs (the control actions) even to the same site.
      const ownName = hosts.has(originHostName(origin) ?? '');
      if (!TRUSTED_ORIGIN.test(origin) && !origins.has(origin) && !ownName) {
        refuse(res);
        throw new BridgeError(403, `origin ${JSON.stringify(origin)} is not allowed; add it to server.cors_origins`, { code: 'origin_not_allowed' });
      }
      res.setHeader('Access-Control-Allow-Origin', origin);
      res.setHeader('Vary', 'Origin');
      // A page's script reads only the answer headers it is told it may: how long to wait after a
      // 429, which request it was, and how the bridge routed it.
      res.setHeader('Access-Control-Expose-Headers', EXPOSED_HEADERS);
      if (req.method === 'OPTIONS') {
        res.setHeader('Access-Control-Allow-Methods', 'GET, POST, PUT, DELETE, HEAD, OPTIONS');
        res.setHeader(
          'Access-Control-Allow-Headers',
          req.headers['access-control-request-headers'] ?? 'authorization, content-type, x-api-key, api-key, x-bridge-local-only',
        );
        res.setHeader('Access-Control-Max-Age', '600');
        res.statusCode = 204;
        res.end();
        return false;
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
