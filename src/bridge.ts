import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Config } from './config/schema.js';
import { createApp, type RequestCounters } from './http/app.js';
import { createLogger, type Logger } from './log.js';
import { Router } from './routing/router.js';
import { Backend, timeoutsFrom, type BackendSnapshot } from './upstream/backend.js';
import { ModelCatalog } from './upstream/catalog.js';

export interface BridgeState {
  startedAt: string;
  url: string;
  backends: BackendSnapshot[];
  requests: RequestCounters;
}

export interface BridgeHandle {
  /** Base URL clients point at, e.g. http://127.0.0.1:5000 */
  readonly url: string;
  readonly config: Config;
  /** A fresh snapshot of the live state on every read. */
  readonly state: BridgeState;
  /** Stops accepting requests, lets running ones end (up to the grace period), then closes. */
  stop(graceMs?: number): Promise<void>;
}

export interface BridgeOptions {
  logger?: Logger;
}

function listen(server: Server, host: string, port: number): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException): void => {
      const why = error.code === 'EADDRINUSE' ? `port ${port} on ${host} is already in use` : error.message;
      reject(new Error(`cannot listen on ${host}:${port}: ${why}`, { cause: error }));
    };
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve(server.address() as AddressInfo);
    });
  });
}

/** Starts one bridge: the one way to run it, headless or inside the desktop app. All state lives in the handle. */
export async function startBridge(config: Config, options: BridgeOptions = {}): Promise<BridgeHandle> {
  const log = options.logger ?? createLogger(config);
  const timeouts = timeoutsFrom(config);
  const backends = config.backends.map((backend) => new Backend(backend, timeouts));
  const counters: RequestCounters = { total: 0, inFlight: 0 };
  const started = new Date();
  const startedAt = started.toISOString();
  const catalog = new ModelCatalog(backends);
  const router = new Router(config, backends, catalog);

  const app = createApp({ config, log, router, catalog, backends, startedAt: started }, counters);
  // noDelay: a streamed token must leave at once, not wait for Nagle.
  const server = createServer({ noDelay: true, keepAliveTimeout: 65_000 }, app);
  const address = await listen(server, config.server.host, config.server.port);
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}`;
  log.info({ url, backends: backends.map((b) => ({ name: b.name, url: b.url.href })) }, 'bridge listening');

  let stopping: Promise<void> | undefined;
  const stop = (graceMs = 5000): Promise<void> => {
    stopping ??= (async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const timer = setTimeout(() => server.closeAllConnections(), graceMs);
      await closed;
      clearTimeout(timer);
      await Promise.all(backends.map((backend) => backend.close()));
      log.info('bridge stopped');
    })();
    return stopping;
  };

  return {
    url,
    config,
    get state(): BridgeState {
      return { startedAt, url, backends: backends.map((b) => b.snapshot()), requests: { ...counters } };
    },
    stop,
  };
}
