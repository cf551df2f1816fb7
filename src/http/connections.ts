import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

/**
 * Caps the client connections a server holds at `max`. A connection over the cap takes the place
 * of the one that has waited longest without a request being served on it (an idle keep-alive,
 * or one still sending its request), so clients that open connections and stall cannot lock out
 * the others (nor the health checks); when every connection is serving a request, the new one is
 * refused. A request counts as served once its body has been read.
 */
export function limitConnections(server: Server, max: number): void {
  // Insertion order is the order they started waiting: the first key is the one to let go.
  const waiting = new Set<Socket>();
  const serving = new Set<Socket>();
  const wait = (socket: Socket): void => {
    serving.delete(socket);
    waiting.delete(socket);
    if (!socket.destroyed) waiting.add(socket);
  };
  server.on('connection', (socket: Socket) => {
    if (waiting.size + serving.size >= max) {
      const oldest = waiting.values().next().value;
      if (oldest === undefined) {
        socket.destroy();
        return;
      }
      waiting.delete(oldest);
      oldest.destroy();
    }
    waiting.add(socket);
    socket.once('close', () => {
      waiting.delete(socket);
      serving.delete(socket);
    });
  });
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket;
    const serve = (): void => {
      if (!waiting.delete(socket)) return;
      serving.add(socket);
    };
    if (req.complete) serve();
    else req.once('end', serve);
    res.once('close', () => {
      // A body left unread is drained by node after the answer: its end must not count the idle
      // connection as serving again.
      req.off('end', serve);
      wait(socket);
    });
  });
}

/**
 * Bytes of a connection's answers the network has not taken yet: those node holds, and of the
 * write in flight what libuv still holds (node reads the same to tell a slow write from a stalled
 * one); the first alone stays the same while one large answer is taken slowly.
 */
function unsent(socket: Socket): number {
  const handle = (socket as Socket & { _handle?: { writeQueueSize?: number } | null })._handle;
  return socket.writableLength + (handle?.writeQueueSize ?? 0);
}

/**
 * Closes a client connection whose answer has waited `stallMs` for the client to read any of it.
 * Streams wait for a client that is slow to read (back-pressure): one that stops reading would
 * hold its connection, its upstream request and its generation slot for good. Looked at once a
 * second or so, not on each write, so the hot path pays nothing for it.
 */
export function cutStalledReaders(server: Server, stallMs: number): void {
  // Each connection with bytes waiting for its client: how many, and since when none were read.
  const connections = new Map<Socket, { waiting: number; since: number } | undefined>();
  server.on('connection', (socket: Socket) => {
    connections.set(socket, undefined);
    socket.once('close', () => connections.delete(socket));
  });
  const check = setInterval(
    () => {
      const now = performance.now();
      for (const [socket, stall] of connections) {
        const waiting = unsent(socket);
        if (waiting === 0) connections.set(socket, undefined);
        // Fewer bytes waiting: the client read some.
        else if (stall === undefined || waiting < stall.waiting) connections.set(socket, { waiting, since: now });
        else if (now - stall.since >= stallMs) socket.destroy();
        else stall.waiting = waiting;
      }
    },
    Math.min(1000, stallMs / 2),
  );
  check.unref();
  server.once('close', () => clearInterval(check));
}
