import assert from 'node:assert/strict';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { findOllamaBinary, ManagerError, OllamaManager, type ManagerOptions } from '../../src/ollama/manager.js';
import { tempDir } from '../support/temp.js';
import { until } from '../support/wait.js';

function options(overrides: Partial<ManagerOptions>): ManagerOptions {
  return {
    binary: undefined,
    modelsDir: undefined,
    keepAlive: '5m',
    numParallel: 1,
    maxLoadedModels: 3,
    maxQueue: 512,
    logDir: tempDir('manager-logs-'),
    logMaxBytes: 1024 * 1024,
    restartLimit: 2,
    restartWindowMs: 60_000,
    stopGraceMs: 500,
    log: pino({ level: 'silent' }),
    isListening: async () => false,
    ...overrides,
  };
}

describe('Ollama manager', () => {
  it('says how to install Ollama when no binary can be found', async () => {
    const emptyPath = tempDir('empty-path-');
    assert.equal(findOllamaBinary(undefined, { PATH: emptyPath }, []), undefined);
    assert.equal(findOllamaBinary('/nonexistent/ollama', { PATH: emptyPath }, []), undefined);
    const manager = new OllamaManager(
      [{ name: 'gpu0', port: 1, device: undefined }],
      options({ findBinary: () => findOllamaBinary('/nonexistent/ollama', { PATH: emptyPath }, []) }),
    );
    await assert.rejects(manager.start('gpu0'), (error: unknown) => {
      assert.ok(error instanceof ManagerError);
      assert.equal(
        error.message,
        'no ollama binary found: install Ollama from https://ollama.com/download, or set ollama.binary in config.yaml (or OLLAMA_BIN)',
      );
      return true;
    });
    assert.equal(manager.snapshot()[0]?.state, 'failed');
  });

  it('gives up on an instance that keeps crashing, after the restart limit, with its output in the log', async () => {
    const dir = tempDir('crashing-ollama-');
    const binary = path.join(dir, 'ollama');
    writeFileSync(binary, '#!/bin/sh\necho "Error: listen tcp: address already in use ($CUDA_VISIBLE_DEVICES $OLLAMA_HOST $OLLAMA_NOPRUNE)" >&2\nexit 1\n');
    chmodSync(binary, 0o755);
    const manager = new OllamaManager([{ name: 'gpu0', port: 45678, device: 'GPU-abc' }], options({ binary, modelsDir: dir }));
    await assert.rejects(manager.start('gpu0'), /exited at start/);
    await until(() => (manager.snapshot()[0]?.state === 'failed' ? true : undefined), 'the instance to be given up', 8000);
    const instance = manager.snapshot()[0];
    assert.equal(instance?.state, 'failed');
    assert.equal(instance?.restarts, 2);
    assert.match(instance?.message ?? '', /^crashed 3 times within 60 s; not restarting/);
    const log = readFileSync(instance?.logFile ?? '', 'utf8');
    // Pinned to its GPU, on its own port, with the shared model store protected from pruning.
    assert.match(log, /address already in use \(GPU-abc 127\.0\.0\.1:45678 1\)/);
    await manager.stopAll();
  });

  it('refuses unknown instances clearly', async () => {
    const manager = new OllamaManager([], options({}));
    await assert.rejects(manager.start('gpu7'), /no managed Ollama instance for backend 'gpu7'/);
  });
});
