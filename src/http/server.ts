import { createServer, type RequestListener, type Server, type ServerOptions } from 'node:http';
import type { AddressInfo } from 'node:net';
import { limitConnections } from './connections.js';

function urlOf(address: AddressInfo): string {
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return `http://${host}:${address.port}`;
}

/** One listening HTTP server: binds on start, and on stop lets running requests end within a grace period. */
export class HttpServer {
  private readonly server: Server;
  private address: AddressInfo | undefined;
  private closing: Promise<void> | undefined;

  constructor(
    readonly name: string,
    private readonly host: string,
    private readonly port: number,
    handler: RequestListener,
    { maxConnections, ...options }: ServerOptions & { maxConnections?: number } = {},
  ) {
    this.server = createServer(options, handler);
    if (maxConnections !== undefined) limitConnections(this.server, maxConnections);
  }

  /** The base URL, once listening. */
  get url(): string {
    if (this.address === undefined) throw new Error(`${this.name} is not listening`);
    return urlOf(this.address);
  }

  start(): Promise<void> {
    const { server, host, port } = this;
    return new Promise((resolve, reject) => {
      const onError = (error: NodeJS.ErrnoException): void => {
        const why = error.code === 'EADDRINUSE' ? `port ${port} on ${host} is already in use` : error.message;
        reject(new Error(`cannot listen on ${host}:${port}: ${why}`, { cause: error }));
      };
      server.once('error', onError);
      server.listen(port, host, () => {
        server.off('error', onError);
        this.address = server.address() as AddressInfo;
        resolve();
      });
    });
  }

  /** Stops listening and waits for running requests, at most `graceMs`; a second call waits for the first. */
  stop(graceMs: number): Promise<void> {
    if (this.closing === undefined && this.server.listening) {
      const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
      this.server.closeIdleConnections();
      const timer = setTimeout(() => this.server.closeAllConnections(), graceMs);
      this.closing = closed.finally(() => clearTimeout(timer));
    }
    return this.closing ?? Promise.resolve();
  }
}
