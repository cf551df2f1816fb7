import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, renameSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { startBridge } from '../../src/bridge.js';
import { ConfigError, loadConfig } from '../../src/config/load.js';
import { memoryLogger, nextRecord, startStandIn, startTestBridge } from '../support/bridge.js';
import { logFileHas, serveLoggingTo, startServingCli } from '../support/cli.js';
import { until } from '../support/wait.js';
import { UpstreamError } from '../../src/upstream/errors.js';
import { tempDir, configFile } from '../support/temp.js';

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

const CREATED = '2025-01-01T00:00:00Z';

async function chatBridge(yaml: string): Promise<{ url: string; lines: () => Array<Record<string, unknown>> }> {
  const upstream = await startStandIn(
    (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.end(
        `${JSON.stringify({ model: 'm', created_at: CREATED, message: { role: 'assistant', content: 'the secret answer' }, done: true, done_reason: 'stop' })}\n`,
      );
    },
    ['m:latest'],
  );
  const file = configFile(yaml);
  const { logger, lines } = memoryLogger();
  const bridge = await startTestBridge({ file, logger, env: { OLLAMA_HOST: upstream.url } });
  cleanups.push(() => upstream.close());
  const response = await fetch(`${bridge.url}/api/chat`, {
    method: 'POST',
    body: JSON.stringify({ model: 'm', stream: false, messages: [{ role: 'user', content: 'the private question' }] }),
  });
  await response.text();
  // Stopping waits for every connection to close, so the request's log line is written.
  await bridge.stop(100);
  return { url: bridge.url, lines };
}

describe('logging', () => {
  it("names a logged error by its own name, not its class's (which the minified bundle renames)", () => {
    // A subclass named as the bundle names classes: one or two letters.
    class Xe extends UpstreamError {}
    const { logger, lines } = memoryLogger();
    logger.error({ err: new Xe('timeout', 'gpu0', 'no first byte') }, 'upstream failed');
    const [line] = lines();
    assert.equal((line?.err as { type?: unknown } | undefined)?.type, 'UpstreamError');
    assert.equal((line?.err as { message?: unknown } | undefined)?.message, 'no first byte');
  });

  it('keeps prompt and answer text out of the log by default', async () => {
    const { lines } = await chatBridge('');
    const request = lines().find((l) => l.msg === 'request' && l.path === '/api/chat');
    assert.ok(request);
    const text = JSON.stringify(lines());
    assert.ok(!text.includes('the private question'));
    assert.ok(!text.includes('the secret answer'));
    assert.ok(!lines().some((l) => String(l.msg).includes('log_prompts')));
  });

  it('takes a balancer’s or client’s sane X-Request-Id as the request’s id in the answer, the log and history, and makes one otherwise', async () => {
    const upstream = await startStandIn(
      (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        res.end(`${JSON.stringify({ model: 'm', created_at: CREATED, message: { role: 'assistant', content: 'hi' }, done: true, done_reason: 'stop' })}\n`);
      },
      ['m:latest'],
    );
    cleanups.push(() => upstream.close());
    const { logger, lines } = memoryLogger();
    const bridge = await startTestBridge({ logger, env: { OLLAMA_HOST: upstream.url } });
    const send = async (requestId: string | undefined): Promise<{ answered: string | null; recorded: string }> => {
      const recorded = nextRecord(bridge);
      const response = await fetch(`${bridge.url}/api/chat`, {
        method: 'POST',
        headers: requestId === undefined ? {} : { 'x-request-id': requestId },
        body: JSON.stringify({ model: 'm', stream: false, messages: [{ role: 'user', content: 'x' }] }),
      });
      await response.text();
      return { answered: response.headers.get('x-request-id'), recorded: (await recorded).id };
    };
    const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
    // nginx's $request_id, HAProxy's unique-id, a client's UUID, 128 characters.
    const taken = [
      '4f0c1b9e8d7a6f5e4d3c2b1a09f8e7d6',
      '7F000001:C1A4_0A000005:1F90_6650E3A1_0001:1A2B',
      'b5e3c1d2-0f4a-4e8b-9c7d-112233445566',
      'a'.repeat(128),
    ];
    const refused = ['a'.repeat(129), 'two words', 'id;drop', 'a,b', '<script>', 'a/b%20'];
    for (const id of taken) assert.deepEqual(await send(id), { answered: id, recorded: id }, id);
    for (const id of [...refused, undefined, '']) {
      const { answered, recorded } = await send(id);
      assert.match(answered ?? '', uuid, `${String(id)} is replaced by an id of the bridge's own`);
      assert.equal(recorded, answered);
    }
    await bridge.stop(100);
    const logged = lines()
      .filter((l) => l.msg === 'request' && l.path === '/api/chat')
      .map((l) => l.id);
    assert.deepEqual(logged.slice(0, taken.length), taken);
  });

  it('logs a request answered 5xx as a warning, so LOG_LEVEL=warn and a warnings panel still show failures', async () => {
    const upstream = await startStandIn(
      (_req, res) => {
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end('{"error":"model runner crashed"}');
      },
      ['m:latest'],
    );
    cleanups.push(() => upstream.close());
    const { logger, lines } = memoryLogger('warn');
    const bridge = await startTestBridge({ logger, env: { OLLAMA_HOST: upstream.url } });
    const failed = await fetch(`${bridge.url}/api/chat`, {
      method: 'POST',
      body: JSON.stringify({ model: 'm', stream: false, messages: [{ role: 'user', content: 'x' }] }),
    });
    assert.equal(failed.status, 500);
    await failed.text();
    assert.equal((await fetch(`${bridge.url}/api/tags`)).status, 200);
    await bridge.stop(100);
    const requests = lines().filter((l) => l.msg === 'request');
    assert.deepEqual(
      requests.map((l) => [l.path, l.status, l.level]),
      [['/api/chat', 500, 40]],
    );
  });

  it('logs prompt and answer text with monitoring.logging.log_prompts, and warns about it at start', async () => {
    const { lines } = await chatBridge('monitoring:\n  logging:\n    log_prompts: true\n');
    const request = lines().find((l) => l.msg === 'request' && l.path === '/api/chat');
    assert.deepEqual(request?.prompt, { messages: [{ role: 'user', content: 'the private question' }] });
    assert.deepEqual(request?.answer, [{ content: 'the secret answer' }]);
    const warning = lines().find((l) => String(l.msg).includes('log_prompts is on'));
    assert.equal(warning?.level, 40);
  });

  it('has no logging.format setting any more: a config that has one is told to delete it', () => {
    const file = configFile('monitoring:\n  logging:\n    format: json\n');
    assert.throws(
      () => loadConfig({ file }),
      (error: unknown) =>
        error instanceof ConfigError && /monitoring\.logging\.format: removed: the log is always JSON lines .*delete this key/.test(error.message),
    );
  });

  it('creates the log file readable by this user only, and tightens one an older version created', async () => {
    const upstream = await startStandIn((_req, res) => res.end('{}'));
    cleanups.push(() => upstream.close());
    const dir = tempDir('bridge-log-file-');
    const file = path.join(dir, 'copilot-bridge.log');
    const config = loadConfig({ env: { OLLAMA_HOST: upstream.url, BRIDGE_DATA_DIR: tempDir('bridge-data-') }, flags: { port: '0' } });
    const withLogFile = { ...config, monitoring: { ...config.monitoring, logging: { ...config.monitoring.logging, destination: dir } } };
    // Without a logger of its own the bridge writes its log file; stopping flushes it.
    await (await startBridge(withLogFile)).stop(100);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    chmodSync(file, 0o644);
    await (await startBridge(withLogFile)).stop(100);
    assert.equal(statSync(file).mode & 0o777, 0o600);
  });

  it(
    'refuses to start at once, naming the folder, when the log folder cannot be created (/proc takes no new folders)',
    { skip: process.platform !== 'linux' },
    async () => {
      const config = loadConfig({ env: { BRIDGE_DATA_DIR: tempDir('bridge-data-') }, flags: { port: '0' } });
      const destination = '/proc/copilot-bridge-logs';
      const unmakeable = { ...config, monitoring: { ...config.monitoring, logging: { ...config.monitoring.logging, destination } } };
      await assert.rejects(startBridge(unmakeable), new RegExp(`could not create the folder ${destination} \\(ENOENT`));
    },
  );

  /** The exit code of a child asked to stop, or a failed test when it does not end within 10 s. */
  const stopped = async (child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> => {
    let code: number | null | undefined;
    child.once('close', (exitCode) => (code = exitCode));
    child.kill(signal);
    try {
      return await until(() => code, 'the bridge to exit after SIGTERM', 10_000);
    } finally {
      child.kill('SIGKILL');
    }
  };

  it('stops on SIGTERM when the reader of its standard output is gone (serve | head, a restarted journald)', async () => {
    const serving = await startServingCli(['--port', '0'], { OLLAMA_HOST: '127.0.0.1:9', BRIDGE_DATA_DIR: tempDir('bridge-data-') });
    cleanups.push(async () => void serving.child.kill('SIGKILL'));
    serving.child.stdout.destroy();
    assert.equal(await stopped(serving.child), 0);
  });

  it('stops as on SIGTERM when its terminal closes (SIGHUP): drained, its log closed, exit code 0', async () => {
    const serving = await startServingCli(['--port', '0'], { OLLAMA_HOST: '127.0.0.1:9', BRIDGE_DATA_DIR: tempDir('bridge-data-') });
    cleanups.push(async () => void serving.child.kill('SIGKILL'));
    assert.equal(await stopped(serving.child, 'SIGHUP'), 0);
    assert.ok(serving.logs.some((line) => line.msg === 'bridge stopped'));
  });

  it('keeps serving when its log file cannot be written (a full disk), says so once, and stops on SIGTERM', async () => {
    const logs = tempDir('bridge-logs-');
    mkdirSync(logs, { recursive: true });
    // /dev/full answers every write with ENOSPC, as a full disk does.
    symlinkSync('/dev/full', path.join(logs, 'copilot-bridge.log'));
    const { child, port } = await serveLoggingTo(logs);
    cleanups.push(async () => void child.kill('SIGKILL'));
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    await until(() => (stderr.includes('log lines are dropped') ? true : undefined), 'the bridge to say its log cannot be written', 10_000);
    assert.match(stderr, /the log cannot be written \(ENOSPC\)/);
    assert.equal((await fetch(`http://127.0.0.1:${port}/health`)).status, 200);
    assert.equal(await stopped(child), 0);
    assert.equal(stderr.match(/log lines are dropped/g)?.length, 1);
  });

  it('opens its log file anew on SIGUSR2, as logrotate moves it away: the moved file keeps the earlier lines, a new one (this user’s only) the later', async () => {
    const logs = tempDir('bridge-logs-');
    const file = path.join(logs, 'copilot-bridge.log');
    const rotated = `${file}.1`;
    const { child, port } = await serveLoggingTo(logs);
    cleanups.push(async () => void child.kill('SIGKILL'));
    await until(() => logFileHas(file, 'bridge listening'), 'the bridge to log that it listens', 10_000);
    // logrotate's create mode: the file is renamed, then the program is told to open its path again.
    renameSync(file, rotated);
    child.kill('SIGUSR2');
    await until(() => logFileHas(file, 'log file reopened'), 'a new log file', 10_000);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal((await fetch(`http://127.0.0.1:${port}/health`)).status, 200, 'still serving');
    assert.equal(await stopped(child), 0);
    assert.ok(logFileHas(file, 'bridge stopped'), 'later lines go to the new file');
    assert.equal(logFileHas(rotated, 'bridge stopped'), undefined);
    assert.ok(logFileHas(rotated, 'bridge listening'));
  });

  it('writes the control token readable by this user only, and tightens the file an older version left', async () => {
    const upstream = await startStandIn((_req, res) => res.end('{}'));
    cleanups.push(() => upstream.close());
    const dataDir = tempDir('bridge-data-');
    const file = path.join(dataDir, 'control-token');
    writeFileSync(file, 'an older token', { mode: 0o644 });
    chmodSync(file, 0o644);
    const bridge = await startBridge(loadConfig({ env: { OLLAMA_HOST: upstream.url, BRIDGE_DATA_DIR: dataDir }, flags: { port: '0' } }), {
      logger: memoryLogger().logger,
    });
    cleanups.push(() => bridge.stop(100));
    assert.equal(readFileSync(file, 'utf8'), bridge.controlToken);
    assert.equal(statSync(file).mode & 0o777, 0o600);
  });

  it('warns at start that a bind beyond loopback is plain HTTP', async () => {
    const upstream = await startStandIn((_req, res) => res.end('{}'));
    cleanups.push(() => upstream.close());
    const config = loadConfig({
      env: { OLLAMA_HOST: upstream.url, BRIDGE_DATA_DIR: tempDir('bridge-data-'), BRIDGE_API_KEYS: '0123456789abcdef0123' },
      flags: { host: '0.0.0.0', port: '0' },
    });
    const { logger, lines } = memoryLogger();
    const bridge = await startBridge(config, { logger });
    await bridge.stop(100);
    const warning = lines().find((l) => String(l.msg).includes('plain HTTP'));
    assert.equal(warning?.level, 40);
    assert.equal(warning?.host, '0.0.0.0');

    const quiet = memoryLogger();
    const local = await startBridge(loadConfig({ env: { OLLAMA_HOST: upstream.url, BRIDGE_DATA_DIR: tempDir('bridge-data-') }, flags: { port: '0' } }), {
      logger: quiet.logger,
    });
    await local.stop(100);
    assert.ok(quiet.lines().some((l) => l.msg === 'bridge listening'));
    assert.ok(!quiet.lines().some((l) => String(l.msg).includes('plain HTTP')));
  });
});
