import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { Worker } from 'node:worker_threads';

export interface SynHole {
  port: number;
  close(): Promise<void>;
}

/**
 * A loopback port whose new connections are never completed: a listener with backlog 1 on a thread
 * that never accepts, its accept queue filled. Linux then drops further SYNs (with
 * tcp_abort_on_overflow off, its default), as a firewalled or unreachable host does, so a client
 * waits out its connect timeout.
 */
export async function startSynHole(): Promise<SynHole> {
  const wake = new Int32Array(new SharedArrayBuffer(4));
  // The worker's event loop is blocked in Atomics.wait, so its listener accepts nothing until woken.
  const worker = new Worker(
    `const { createServer } = require('node:net');
     const { parentPort, workerData } = require('node:worker_threads');
     const server = createServer();
     server.listen(0, '127.0.0.1', 1, () => {
       parentPort.postMessage(server.address().port);
       Atomics.wait(workerData, 0, 0);
       server.close();
     });`,
    { eval: true, workerData: wake },
  );
  const [port] = (await once(worker, 'message')) as [number];
  // Linux queues backlog + 1 finished handshakes; these two fill the queue.
  const fillers: Socket[] = [connect(port, '127.0.0.1'), connect(port, '127.0.0.1')];
  await Promise.all(fillers.map((socket) => once(socket, 'connect')));
  return {
    port,
    close: async () => {
      for (const socket of fillers) socket.destroy();
      Atomics.store(wake, 0, 1);
      Atomics.notify(wake, 0);
      await once(worker, 'exit');
    },
  };
}
