import { createServer, type IncomingMessage, type RequestListener, type Server, type ServerOptions, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { deferContinue } from './body.js';
import { cutStalledReaders, limitConnections } from './connections.js';

function urlOf(address: AddressInfo): string {
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return `http://${host}:${address.port}`;
}

/** How long answers cut by the stop deadline get to write their error before connections are closed. */
const DEADLINE_FLUSH_MS = 1000;

/**
 * One listening HTTP server: binds on start; on stop it drains (no new connections, answers carry
 * `Connection: close`, kept-alive connections close as soon as they are idle) and lets running
 * requests end within a grace period. Then `onDeadline` runs, so running answers can write their
 * error, and a moment later every connection closes.
 */
export class HttpServer {
  private readonly server: Server;
  private address: AddressInfo | undefined;
  private closing: Promise<void> | undefined;

  constructor(
    readonly name: string,
    private readonly host: string,
    private readonly port: number,
    handler: RequestListener,
    { maxConnections, stalledReaderMs, ...options }: ServerOptions & { maxConnections?: number; stalledReaderMs?: number } = {},
    private readonly onDeadline: () => void = () => undefined,
  ) {
    this.server = createServer(options, handler);
    if (maxConnections !== undefined) limitConnections(this.server, maxConnections);
    if (stalledReaderMs !== undefined) cutStalledReaders(this.server, stalledReaderMs);
    // Node would answer `100 Continue` before any check: the body reader sends it when it reads.
    this.server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
      deferContinue(res);
      this.server.emit('request', req, res);
    });
    // Before the handler: while draining, answers tell the client (or balancer) not to reuse the
    // connection, and a connection whose running answer finished closes at once.
    this.server.prependListener('request', (_req: IncomingMessage, res: ServerResponse) => {
      if (this.draining) res.setHeader('connection', 'close');
      else res.once('finish', () => this.draining && setImmediate(() => this.server.closeIdleConnections()));
    });
  }

  /** True once stop began. */
  get draining(): boolean {
    return this.closing !== undefined;
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
        reject(new Error(`${this.name} cannot listen on ${host}:${port}: ${why}`, { cause: error }));
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
      let flush: NodeJS.Timeout | undefined;
      const deadline = setTimeout(() => {
        this.onDeadline();
        flush = setTimeout(() => this.server.closeAllConnections(), DEADLINE_FLUSH_MS);
      }, graceMs);
      this.closing = closed.finally(() => {
        clearTimeout(deadline);
        clearTimeout(flush);
      });
    }
    return this.closing ?? Promise.resolve();
  }
}
