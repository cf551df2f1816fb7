import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';

export const CLI = path.resolve('bin/copilot-bridge.js');

export interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs the real `copilot-bridge` command to completion; one still running after `killAfterMs` is killed (code null). */
export async function runCliToEnd(args: string[], env: Record<string, string> = {}, killAfterMs?: number): Promise<CliRun> {
  const child = spawn(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH, ...env }, timeout: killAfterMs, killSignal: 'SIGKILL' });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const [code, signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
  return { code, signal, stdout, stderr };
}

export interface ServingCli {
  child: ChildProcessWithoutNullStreams;
  url: string;
  /** Every JSON log line printed so far. */
  logs: Array<Record<string, unknown>>;
}

/** Starts `copilot-bridge serve` and resolves with its URL once it logs that it listens. */
export async function startServingCli(args: string[], env: Record<string, string>): Promise<ServingCli> {
  const child = spawn(process.execPath, [CLI, 'serve', ...args], { env: { PATH: process.env.PATH, ...env } });
  const logs: Array<Record<string, unknown>> = [];
  let pending = '';
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (chunk: Buffer) => {
      pending += chunk.toString();
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) {
        const entry = JSON.parse(line) as Record<string, unknown>;
        logs.push(entry);
        if (entry.msg === 'bridge listening') resolve(String(entry.url));
      }
    });
    child.once('close', (code) => reject(new Error(`copilot-bridge exited (${code}) before listening: ${stderr}`)));
  });
  return { child, url, logs };
}
