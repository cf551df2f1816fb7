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
