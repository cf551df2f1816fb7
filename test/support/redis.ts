import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
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
  const reason = 'redis-server is not installed (Debian: apt-get install redis-server; .ci/run does it)';
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
