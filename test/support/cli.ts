import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { freePort } from './ollama-rig.js';
import { configFile, tempDir } from './temp.js';

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

/** `copilot-bridge serve` on a free port (no backend reachable), logging to copilot-bridge.log in `logDir` instead of stdout. */
export async function serveLoggingTo(logDir: string): Promise<{ child: ChildProcessWithoutNullStreams; port: number }> {
  const port = await freePort();
  const child = spawn(
    process.execPath,
    [CLI, 'serve', '--port', String(port), '--config', configFile(`monitoring:\n  logging:\n    destination: ${logDir}\n`)],
    { env: { PATH: process.env.PATH, OLLAMA_HOST: '127.0.0.1:9', BRIDGE_DATA_DIR: tempDir('bridge-data-') } },
  );
  return { child, port };
}

/** true when the log file holds a line with this `msg`; undefined otherwise (for until()). */
export function logFileHas(file: string, msg: string): true | undefined {
  return existsSync(file) && readFileSync(file, 'utf8').includes(`"msg":"${msg}"`) ? true : undefined;
}
