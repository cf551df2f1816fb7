import { readlinkSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
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

/** Internals of a connection's libuv handle: its descriptor, and what it has not yet handed to the kernel of the write in flight. */
type Handle = { fd?: number; writeQueueSize?: number } | null | undefined;

function handleOf(socket: Socket): Handle {
  return (socket as Socket & { _handle?: Handle })._handle;
}

/**
 * Bytes of a connection's answers the network has not taken yet: those node holds, and of the
 * write in flight what libuv still holds.
 */
function unsent(socket: Socket): number {
  return socket.writableLength + (handleOf(socket)?.writeQueueSize ?? 0);
}

/**
 * Where a connection's answer stood when looked at: bytes of its finished writes (each one the
 * kernel took whole), and what libuv still holds of the write in flight (node reads the same to
 * tell a slow write from a stalled one). Either moving is the client reading.
 */
interface Taken {
  written: number;
  inFlight: number;
}

function takenOf(socket: Socket): Taken {
  // bytesWritten counts what node was given; writableLength what of it is buffered or in flight.
  return { written: socket.bytesWritten - socket.writableLength, inFlight: handleOf(socket)?.writeQueueSize ?? 0 };
}

function moved(before: Taken, now: Taken): boolean {
  return now.written > before.written || (now.written === before.written && now.inFlight < before.inFlight);
}

/**
 * Bytes in each TCP socket's kernel send queue, by socket inode (Linux: /proc/net/tcp and tcp6);
 * empty where they cannot be read. The kernel lets node write again only once a good part of its
 * queue (megabytes on a fast link) is gone, so a client that reads slowly can take for seconds
 * what only the kernel sees it take.
 */
async function kernelSendQueues(): Promise<Map<string, number>> {
  const queues = new Map<string, number>();
  if (process.platform !== 'linux') return queues;
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const text = await readFile(table, 'latin1').catch(() => '');
    // "sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ..."
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      const sendQueue = fields[4]?.split(':')[0];
      const inode = fields[9];
      if (sendQueue !== undefined && inode !== undefined) queues.set(inode, Number.parseInt(sendQueue, 16));
    }
  }
  return queues;
}

/** The inode /proc/net/tcp names a connection by (Linux); undefined elsewhere. */
function inodeOf(socket: Socket): string | undefined {
  const fd = handleOf(socket)?.fd;
  if (process.platform !== 'linux' || fd === undefined || fd < 0) return undefined;
  try {
    return /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`))?.[1];
  } catch {
    return undefined;
  }
}

/** A connection with bytes waiting for its client: where it stood, since when nothing moved, and what the kernel held then. */
interface Stall {
  taken: Taken;
  since: number;
  kernelQueue: number | undefined;
}

/**
 * Closes a client connection whose answer has waited `stallMs` for the client to read any of it.
 * Streams wait for a client that is slow to read (back-pressure): one that stops reading would
 * hold its connection, its upstream request and its generation slot for good. A client that reads
 * at all, however slowly, is not cut: what it took shows in node's writes, or (Linux) in the
 * kernel's send queue, which is read only for connections node saw nothing of. Looked at once a
 * second or so, not on each write, so the hot path pays nothing for it.
 */
export function cutStalledReaders(server: Server, stallMs: number): void {
  const connections = new Map<Socket, Stall | undefined>();
  server.on('connection', (socket: Socket) => {
    connections.set(socket, undefined);
    socket.once('close', () => connections.delete(socket));
  });
  const look = async (): Promise<void> => {
    const now = performance.now();
    const quiet: Array<[Socket, Stall]> = [];
    for (const [socket, stall] of connections) {
      if (unsent(socket) === 0) {
        connections.set(socket, undefined);
        continue;
      }
      const taken = takenOf(socket);
      if (stall === undefined || moved(stall.taken, taken)) connections.set(socket, { taken, since: now, kernelQueue: undefined });
      else quiet.push([socket, stall]);
    }
    if (quiet.length === 0) return;
    const queues = await kernelSendQueues();
    for (const [socket, stall] of quiet) {
      // Closed, or moved on, while the tables were read.
      if (connections.get(socket) !== stall) continue;
      const inode = inodeOf(socket);
      const kernelQueue = inode === undefined ? undefined : queues.get(inode);
      // The first look cannot tell whether the kernel's queue moved since node saw the answer move:
      // taken as moving, so that a reader is never cut before a whole stallMs without either.
      if (kernelQueue !== undefined && (stall.kernelQueue === undefined || kernelQueue < stall.kernelQueue)) stall.since = now;
      stall.kernelQueue = kernelQueue;
      if (now - stall.since >= stallMs) socket.destroy();
    }
  };
  let looking: Promise<void> | undefined;
  const check = setInterval(
    () => {
      looking ??= look().finally(() => (looking = undefined));
    },
    Math.min(1000, stallMs / 2),
  );
  check.unref();
  server.once('close', () => clearInterval(check));
}
