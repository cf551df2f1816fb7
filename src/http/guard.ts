import type { NextFunction, Request, Response } from 'express';
import { authConfigured, isLoopbackHost } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { BridgeError } from '../contract/index.js';

/** Browser origins Ollama itself trusts by default: local pages and editor webviews. */
const TRUSTED_ORIGIN = /^(https?:\/\/(localhost|127\.0\.0\.1|\[::1\]|0\.0\.0\.0)(:\d+)?|(app|file|tauri|vscode-webview|vscode-file):\/\/.*)$/i;

function hostName(hostHeader: string): string {
  // "[::1]:5000" -> "[::1]", "localhost:5000" -> "localhost"
  const match = /^(\[[^\]]+\]|[^:]+)(:\d+)?$/.exec(hostHeader.trim());
  return (match?.[1] ?? hostHeader).toLowerCase();
}

/**
 * Safe defaults (design §8): without API keys or a JWT issuer the bridge trusts only loopback Host
 * names (a page on another site cannot reach it through DNS rebinding) and only local browser
 * origins; with them, every request must say who it is (checked next, by the auth layer).
 */
export function guard(config: Config) {
  const { allowed_hosts: allowedHosts, cors_origins: corsOrigins } = config.server;
  const checkHost = !authConfigured(config);
  const hosts = new Set([...allowedHosts.map((h) => h.toLowerCase()), config.server.host.toLowerCase()]);
  const origins = new Set(corsOrigins);

  return (req: Request, res: Response, next: NextFunction): void => {
    if (checkHost) {
      const name = hostName(req.headers.host ?? '');
      if (!isLoopbackHost(name) && !hosts.has(name)) {
        next(new BridgeError(403, `host ${JSON.stringify(name)} is not allowed; add it to server.allowed_hosts`, { code: 'host_not_allowed' }));
        return;
      }
    }
    const origin = req.headers.origin;
    if (origin !== undefined) {
      if (!TRUSTED_ORIGIN.test(origin) && !origins.has(origin)) {
        next(new BridgeError(403, `origin ${JSON.stringify(origin)} is not allowed; add it to server.cors_origins`, { code: 'origin_not_allowed' }));
        return;
      }
      res.setHeader('Access-Control-Allow-Origin', origin);
      res.setHeader('Vary', 'Origin');
      if (req.method === 'OPTIONS') {
        res.setHeader('Access-Control-Allow-Methods', 'GET, POST, PUT, DELETE, HEAD, OPTIONS');
        res.setHeader('Access-Control-Allow-Headers', req.headers['access-control-request-headers'] ?? 'authorization, content-type, x-api-key, api-key, x-bridge-local-only');
        res.setHeader('Access-Control-Max-Age', '600');
        res.status(204).end();
        return;
      }
    }
    next();
  };
}
