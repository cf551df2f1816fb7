import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { connect, createServer, type Socket } from 'node:net';
import { freePort } from './ollama-rig.js';
import { tempDir } from './temp.js';

export interface RedisServer {
  url: string;
  stop(): Promise<void>;
}

/** Why the Redis tests cannot run here, or undefined when Debian's redis-server is installed. */
export function redisSkipReason(): string | undefined {
  const found = spawnSync('redis-server', ['--version'], { encoding: 'utf8' });
  if (found.status === 0) return undefined;
  const reason = 'redis-server is not installed (Debian: apt-get install redis-server; npm test does it where it can)';
  if (process.env.CI === 'true') throw new Error(`CI=true and ${reason}`);
  return reason;
}

/** A throw-away redis-server on a free loopback port, nothing saved to disk. */
export async function startRedis(): Promise<RedisServer> {
  const port = await freePort();
  const dir = tempDir('redis-');
  const child: ChildProcess = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  await new Promise<void>((resolve, reject) => {
    let output = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes('Ready to accept connections')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`redis-server exited (${code}): ${output.slice(-500)}`)));
  });
  return {
    url: `redis://127.0.0.1:${port}`,
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

/** A TCP relay in front of a Redis: its URL, a cut that drops every connection and refuses new ones, and a restore. */
export interface RedisLink {
  url: string;
  cut(): Promise<void>;
  restore(): Promise<void>;
  close(): Promise<void>;
}

/** A loopback relay to `redis`, as a network between the bridge and Redis that can fail and come back. */
export async function startRedisLink(redis: RedisServer): Promise<RedisLink> {
  const target = new URL(redis.url);
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect(Number(target.port), target.hostname);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => undefined);
    }
    client.pipe(upstream).pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  const listen = (port: number): Promise<void> => new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  await listen(0);
  const port = (server.address() as { port: number }).port;
  const cut = (): Promise<void> =>
    new Promise((resolve) => {
      if (!server.listening) return resolve();
      server.close(() => resolve());
      for (const socket of sockets) socket.destroy();
    });
  return { url: `redis://127.0.0.1:${port}`, cut, restore: () => listen(port), close: cut };
}
