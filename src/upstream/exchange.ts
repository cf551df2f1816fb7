import { Agent, request as httpRequest, type ClientRequest, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import type { Agent as HttpsAgent } from 'node:https';
import { UpstreamTimeout } from './errors.js';

/** How long one exchange may wait: for the connection, for the answer's head, between two chunks of its body. */
export interface ExchangeTimeouts {
  connectMs: number;
  firstByteMs: number;
  idleMs: number;
}

/** What happens to one exchange, each called at most once except `data`; after `error` nothing else is called. */
export interface ExchangeHandlers {
  /** The answer's head arrived. */
  response(res: IncomingMessage): void;
  data(chunk: Buffer): void;
  end(): void;
  /** It failed, before the head arrived or while the body came; an abort fails with the signal's reason. */
  error(error: Error): void;
}

/** Ends an exchange for good: the connection is closed, `handlers.error` gets `reason`. */
export type AbortExchange = (reason: Error) => void;

/** Where an upstream listens, and the keep-alive connections kept to it. */
export class UpstreamOrigin {
  readonly hostname: string;
  readonly port: number;
  private readonly agent: Agent | HttpsAgent;
  private readonly send: typeof httpRequest;

  constructor(url: URL, idleConnectionMs: number) {
    const secure = url.protocol === 'https:';
    // URL keeps an IPv6 address in brackets; a socket wants it bare.
    this.hostname = url.hostname.replace(/^\[(.*)\]$/, '$1');
    this.port = Number(url.port || (secure ? 443 : 80));
    // TLS only loads for an upstream that needs it.
    const https = secure ? process.getBuiltinModule('node:https') : undefined;
    const options = { keepAlive: true, timeout: idleConnectionMs, scheduling: 'lifo' as const };
    this.agent = https === undefined ? new Agent(options) : new https.Agent(options);
    this.send = https === undefined ? httpRequest : https.request;
  }

  /**
   * One request with its body sent whole, its answer handed over chunk by chunk as it arrives
   * (no stream machinery in between). Timeouts and aborts end it with `handlers.error`.
   */
  exchange(
    method: string,
    path: string,
    headers: OutgoingHttpHeaders,
    body: string | undefined,
    timeouts: ExchangeTimeouts,
    signal: AbortSignal | undefined,
    handlers: ExchangeHandlers,
  ): AbortExchange {
    if (signal?.aborted === true) {
      queueMicrotask(() => handlers.error(signal.reason as Error));
      return () => undefined;
    }
    let timer: NodeJS.Timeout | undefined;
    let done = false;
    const req: ClientRequest = this.send({ agent: this.agent, hostname: this.hostname, port: this.port, method, path, headers });
    const finish = (): boolean => {
      if (done) return false;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      return true;
    };
    const fail = (error: Error): void => {
      if (!finish()) return;
      req.destroy();
      handlers.error(error);
    };
    const onAbort = (): void => fail(signal?.reason as Error);
    const idle = (): void => fail(new UpstreamTimeout('UPSTREAM_IDLE_TIMEOUT', `no data for ${timeouts.idleMs} ms`));
    signal?.addEventListener('abort', onAbort, { once: true });
    timer = setTimeout(() => fail(new UpstreamTimeout('UPSTREAM_FIRST_BYTE_TIMEOUT', `no answer within ${timeouts.firstByteMs} ms`)), timeouts.firstByteMs);
    req.once('socket', (socket) => {
      if (!socket.connecting) return;
      const connecting = setTimeout(
        () => fail(new UpstreamTimeout('UPSTREAM_CONNECT_TIMEOUT', `no connection within ${timeouts.connectMs} ms`)),
        timeouts.connectMs,
      );
      socket.once('connect', () => clearTimeout(connecting));
      socket.once('close', () => clearTimeout(connecting));
    });
    req.on('error', fail);
    req.once('response', (res: IncomingMessage) => {
      if (done) {
        res.destroy();
        return;
      }
      clearTimeout(timer);
      timer = setTimeout(idle, timeouts.idleMs);
      res.on('data', (chunk: Buffer) => {
        timer?.refresh();
        if (!done) handlers.data(chunk);
      });
      res.once('end', () => {
        if (finish()) handlers.end();
      });
      res.on('error', fail);
      res.once('close', () => {
        if (!res.complete) fail(Object.assign(new Error('the connection closed before the answer was complete'), { code: 'ECONNRESET' }));
      });
      handlers.response(res);
    });
    req.end(body);
    return fail;
  }

  close(): void {
    this.agent.destroy();
  }
}
