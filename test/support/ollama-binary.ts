import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { isExecutable } from '../../src/ollama/manager.js';
import os from 'node:os';
import path from 'node:path';

/** The Ollama release the rig builds: the last one `go install` builds without a git checkout. */
export const OLLAMA_VERSION = '0.11.4';

export function cacheDir(): string {
  const base = process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache');
  return path.join(base, 'copilot-bridge', `ollama-v${OLLAMA_VERSION}`);
}

const executable = isExecutable;

function onPath(command: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir !== '' && executable(path.join(dir, command))) return path.join(dir, command);
  }
  return undefined;
}

export type OllamaLookup = { found: string; how: string } | { missing: string };

/** OLLAMA_BIN, then `ollama` on PATH, then the binary built earlier into the cache folder. */
export function findOllama(): OllamaLookup {
  const fromEnv = process.env.OLLAMA_BIN;
  if (fromEnv !== undefined && fromEnv !== '') {
    return executable(fromEnv) ? { found: fromEnv, how: 'OLLAMA_BIN' } : { missing: `OLLAMA_BIN=${fromEnv} is not an executable file` };
  }
  const installed = onPath('ollama');
  if (installed !== undefined) return { found: installed, how: 'PATH' };
  const cached = path.join(cacheDir(), 'ollama');
  if (executable(cached)) return { found: cached, how: 'cache' };
  return { missing: `no ollama binary (OLLAMA_BIN unset, none on PATH, none in ${cacheDir()})` };
}

/**
 * Builds a CPU-only Ollama with `go install` into the cache folder (4 to 25 minutes the first time
 * on 2 cores; Go's build cache makes later builds quick). Output streams to `log`.
 */
export async function buildOllama(log: (line: string) => void): Promise<OllamaLookup> {
  const go = onPath('go');
  if (go === undefined) return { missing: 'no ollama binary and no Go toolchain to build one' };
  const bin = cacheDir();
  mkdirSync(bin, { recursive: true });
  const args = ['install', '-ldflags', `-X github.com/ollama/ollama/version.Version=${OLLAMA_VERSION}`, `github.com/ollama/ollama@v${OLLAMA_VERSION}`];
  log(`building Ollama ${OLLAMA_VERSION} with ${go} ${args.join(' ')} (GOBIN=${bin})`);
  const code = await new Promise<number | null>((resolve) => {
    const child = spawn(go, args, { env: { ...process.env, GOBIN: bin, CGO_ENABLED: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.on('data', (chunk: Buffer) => log(chunk.toString().trimEnd()));
    child.stderr.on('data', (chunk: Buffer) => log(chunk.toString().trimEnd()));
    child.once('close', resolve);
  });
  const built = path.join(bin, 'ollama');
  if (code !== 0 || !executable(built)) return { missing: `go install of Ollama ${OLLAMA_VERSION} failed (exit ${code})` };
  return { found: built, how: 'built' };
}
