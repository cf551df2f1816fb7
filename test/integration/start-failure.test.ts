import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { CLI, runCliToEnd } from '../support/cli.js';
import { fakeOllamaBinary } from '../support/fake-ollama.js';
import { freePort } from '../support/ollama-rig.js';
import { childProcessConfig, markedProcesses, processMark } from '../support/processes.js';
import { tempDir, configFile } from '../support/temp.js';

const servers: Server[] = [];
after(() => {
  for (const server of servers) server.close();
});

/** A port something else listens on. */
async function takenPort(): Promise<number> {
  const server = createServer();
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as { port: number }).port;
}

/** A config with everything that starts a child process: a managed Ollama and the GPU monitor. */
async function configWithChildren(dataDir: string): Promise<string> {
  return configFile(`data_dir: ${dataDir}\n${await childProcessConfig()}`);
}

/** Runs `copilot-bridge serve`, which must give up by itself: a hang is killed after 10 s and fails. */
async function failedServe(args: string[], mark: ReturnType<typeof processMark>): Promise<{ code: number | null; stderr: string; ms: number }> {
  const started = performance.now();
  const run = await runCliToEnd(['serve', ...args], { ...mark.env, LOG_LEVEL: 'error' }, 10_000);
  return { code: run.code, stderr: run.stderr, ms: performance.now() - started };
}

describe('a failed start', () => {
  it('on a port in use: exits 1 at once, says why, and leaves no child process (GPU monitor and managed Ollama on)', async (t) => {
    const mark = processMark();
    const port = await takenPort();
    const result = await failedServe(['--port', String(port), '--config', await configWithChildren(tempDir('start-failure-data-'))], mark);
    t.diagnostic(`exited after ${result.ms.toFixed(0)} ms`);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, new RegExp(`port ${port} on 127\\.0\\.0\\.1 is already in use`));
    assert.deepEqual(markedProcesses(mark), []);
  });

  it('on a data folder whose files cannot be written: exits 1, names the file, and leaves no child process', async (t) => {
    const mark = processMark();
    const dataDir = tempDir('start-failure-data-');
    // Folders where the history file and the control token go: unwritable even for root.
    mkdirSync(path.join(dataDir, 'history.jsonl'));
    mkdirSync(path.join(dataDir, 'control-token'));
    const result = await failedServe(['--port', '0', '--config', await configWithChildren(dataDir)], mark);
    t.diagnostic(`exited after ${result.ms.toFixed(0)} ms`);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /EISDIR.*history\.jsonl/);
    assert.deepEqual(markedProcesses(mark), []);
  });
});

describe('a stop asked for during start', () => {
  it('SIGTERM while a managed Ollama starts: stops it once started, exits 0, and leaves no child process', async () => {
    const mark = processMark();
    const gate = createServer();
    servers.push(gate);
    await new Promise<void>((resolve) => gate.listen(0, '127.0.0.1', resolve));
    const ollamaStarting = once(gate, 'connection') as Promise<[Socket]>;
    const config = configFile(`data_dir: ${tempDir('start-stop-data-')}
ollama:
  binary: ${fakeOllamaBinary({ startGate: (gate.address() as { port: number }).port })}
backends:
  - { name: gpu0, url: "http://127.0.0.1:${await freePort()}", manage: true }
gpu_monitor:
  enabled: false
`);
    const child = spawn(process.execPath, [CLI, 'serve', '--port', '0', '--config', config], {
      env: { PATH: process.env.PATH, LOG_LEVEL: 'error', ...mark.env },
    });
    let stderr = '';
    const exited = once(child, 'close') as Promise<[number | null, NodeJS.Signals | null]>;
    const [ollama] = await ollamaStarting;
    const stopNoted = new Promise<void>((resolve) => {
      child.stderr.on('data', (chunk: Buffer) => {
        stderr += chunk.toString();
        if (stderr.includes('stopping once started')) resolve();
      });
    });
    try {
      // The bridge is waiting for its Ollama to answer.
      child.kill('SIGTERM');
      await Promise.race([stopNoted, exited]);
      ollama.write('start');
      const [code, signal] = await exited;
      assert.deepEqual({ code, signal }, { code: 0, signal: null }, stderr);
      assert.match(stderr, /^copilot-bridge: SIGTERM while starting; stopping once started\n/);
      assert.deepEqual(markedProcesses(mark), []);
    } finally {
      ollama.destroy();
    }
  });
});
