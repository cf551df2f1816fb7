import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { ollamaControls } from '../../src/contract/index.js';
import {
  findOllamaBinary,
  installPlaces,
  ollamaCandidates,
  ManagerError,
  OllamaManager,
  serveSpawnOptions,
  taskkillCommand,
  type InstanceSnapshot,
  type ManagerOptions,
} from '../../src/ollama/manager.js';
import { loadConfig } from '../../src/config/load.js';
import { startStandIn, startTestBridge } from '../support/bridge.js';
import { readSseEvents } from '../support/streams.js';
import { fakeOllamaBinary } from '../support/fake-ollama.js';
import { freePort } from '../support/ollama-rig.js';
import { configFile, tempDir } from '../support/temp.js';
import { until } from '../support/wait.js';

/** Whether an Ollama (or the stand-in) answers on `port`: the manager's check that an instance listens. */
const listeningOn = (port: number) => async (): Promise<boolean> => {
  try {
    return (await fetch(`http://127.0.0.1:${port}/api/version`)).ok;
  } catch {
    return false;
  }
};

function options(overrides: Partial<ManagerOptions>): ManagerOptions {
  return {
    binary: undefined,
    modelsDir: undefined,
    keepAlive: '5m',
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
    assert.equal(findOllamaBinary(undefined, { PATH: emptyPath }, process.platform, []), undefined);
    assert.equal(findOllamaBinary('/nonexistent/ollama', { PATH: emptyPath }, process.platform, []), undefined);
    const manager = new OllamaManager(
      [{ name: 'gpu0', port: 1, device: undefined, numParallel: 1 }],
      options({ findBinary: () => findOllamaBinary('/nonexistent/ollama', { PATH: emptyPath }, process.platform, []) }),
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

  it('looks for ollama.exe on Windows: in PATH however its name is cased, and where the Ollama installer puts it', () => {
    const env = { Path: 'C:\\Tools;"C:\\Program Files\\Ollama";', LOCALAPPDATA: 'C:\\Users\\me\\AppData\\Local', ProgramFiles: 'C:\\Program Files' };
    assert.deepEqual(ollamaCandidates('D:\\ollama\\ollama', env, 'win32', installPlaces('win32', env)), [
      'D:\\ollama\\ollama',
      // Named without its extension, as CreateProcess would run it.
      'D:\\ollama\\ollama.exe',
      'C:\\Tools\\ollama.exe',
      'C:\\Program Files\\Ollama\\ollama.exe',
      'C:\\Users\\me\\AppData\\Local\\Programs\\Ollama\\ollama.exe',
      'C:\\Program Files\\Ollama\\ollama.exe',
    ]);
    assert.deepEqual(installPlaces('win32', {}), []);
  });

  it('looks for ollama on PATH and in the places Homebrew and the macOS and Linux installers use', () => {
    const env = { PATH: '/home/me/bin:/usr/bin', OLLAMA_BIN: '/opt/ollama/bin/ollama' };
    assert.deepEqual(ollamaCandidates(undefined, env, 'darwin', installPlaces('darwin', env)), [
      '/opt/ollama/bin/ollama',
      '/home/me/bin/ollama',
      '/usr/bin/ollama',
      '/usr/local/bin/ollama',
      '/usr/bin/ollama',
      '/opt/homebrew/bin/ollama',
      '/Applications/Ollama.app/Contents/Resources/ollama',
    ]);
  });

  it('gives up on an instance that keeps crashing, after the restart limit, with its output in the log', async () => {
    const dir = tempDir('crashing-ollama-');
    const binary = path.join(dir, 'ollama');
    writeFileSync(binary, '#!/bin/sh\necho "Error: listen tcp: address already in use ($CUDA_VISIBLE_DEVICES $OLLAMA_HOST $OLLAMA_NOPRUNE)" >&2\nexit 1\n');
    chmodSync(binary, 0o755);
    const manager = new OllamaManager([{ name: 'gpu0', port: 45678, device: 'GPU-abc', numParallel: 1 }], options({ binary, modelsDir: dir }));
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

  it('creates its log readable by this user only, rotated ones too, and tightens those an older version created', async () => {
    const dir = tempDir('private-log-ollama-');
    const said = path.join(dir, 'said');
    const binary = path.join(dir, 'ollama');
    writeFileSync(binary, `#!/bin/sh\necho "ollama serve is starting"\ntouch "${said}"\nexec sleep 60\n`);
    chmodSync(binary, 0o755);
    const spec = { name: 'gpu0', port: 45681, device: undefined, numParallel: 1 };
    /** Runs the instance once in `logDir`; a stop waits for its output to close, so all of it went through the log. */
    const runIn = async (logDir: string, logMaxBytes: number): Promise<void> => {
      const manager = new OllamaManager([spec], options({ binary, logDir, logMaxBytes, isListening: async () => existsSync(said) }));
      await manager.start('gpu0');
      await manager.stopAll();
      // Else the next run would find "it" listening, and adopt it.
      rmSync(said);
    };
    const log = (logDir: string, name: string): { text: string; mode: number } => ({
      text: readFileSync(path.join(logDir, name), 'utf8'),
      mode: statSync(path.join(logDir, name)).mode & 0o777,
    });

    // A new log, beside a rotated one an older version left readable by everyone.
    const fresh = tempDir('manager-logs-');
    writeFileSync(path.join(fresh, 'ollama-gpu0.log.1'), 'oldest output\n', { mode: 0o644 });
    await runIn(fresh, 1024 * 1024);
    assert.deepEqual(log(fresh, 'ollama-gpu0.log'), { text: 'ollama serve is starting\n', mode: 0o600 });
    assert.deepEqual(log(fresh, 'ollama-gpu0.log.1'), { text: 'oldest output\n', mode: 0o600 });

    // An older version's log, tightened, then rotated by the new output: the file it starts is this user's only too.
    const older = tempDir('manager-logs-');
    writeFileSync(path.join(older, 'ollama-gpu0.log'), 'older output\n', { mode: 0o644 });
    await runIn(older, 16);
    assert.deepEqual(log(older, 'ollama-gpu0.log'), { text: 'ollama serve is starting\n', mode: 0o600 });
    assert.deepEqual(log(older, 'ollama-gpu0.log.1'), { text: 'older output\n', mode: 0o600 });
  });

  it('rotates the log of an instance started again when the last run left it full', async () => {
    const dir = tempDir('restarted-ollama-');
    const said = path.join(dir, 'said');
    const binary = path.join(dir, 'ollama');
    writeFileSync(binary, `#!/bin/sh\necho "run $(cat "${dir}/run")"\ntouch "${said}"\nexec sleep 60\n`);
    chmodSync(binary, 0o755);
    const logDir = tempDir('manager-logs-');
    const manager = new OllamaManager(
      [{ name: 'gpu0', port: 45682, device: undefined, numParallel: 1 }],
      options({ binary, logDir, logMaxBytes: 8, isListening: async () => existsSync(said) }),
    );
    for (const run of ['one', 'two']) {
      writeFileSync(path.join(dir, 'run'), run);
      await manager.start('gpu0');
      // A stop waits for the instance's output to close: all of it went through the log.
      await manager.stopAll();
      rmSync(said);
    }
    // The second run's output did not fit beside the first's: the first was rotated away.
    assert.equal(readFileSync(path.join(logDir, 'ollama-gpu0.log'), 'utf8'), 'run two\n');
    assert.equal(readFileSync(path.join(logDir, 'ollama-gpu0.log.1'), 'utf8'), 'run one\n');
  });

  it('keeps running when its log cannot be written (a full disk): the output is dropped, not the bridge', async () => {
    const dir = tempDir('full-disk-ollama-');
    const logDir = path.join(dir, 'logs');
    mkdirSync(logDir);
    // Every write to /dev/full fails with ENOSPC, as on a full disk.
    symlinkSync('/dev/full', path.join(logDir, 'ollama-gpu0.log'));
    const fullMode = statSync('/dev/full').mode & 0o777;
    const said = path.join(dir, 'said');
    const binary = path.join(dir, 'ollama');
    writeFileSync(binary, `#!/bin/sh\necho "starting"\necho "warming up" >&2\ntouch "${said}"\nexec sleep 60\n`);
    chmodSync(binary, 0o755);
    const manager = new OllamaManager(
      [{ name: 'gpu0', port: 45680, device: undefined, numParallel: 1 }],
      options({ binary, logDir, isListening: async () => existsSync(said) }),
    );
    await manager.start('gpu0');
    assert.equal(manager.snapshot()[0]?.state, 'running');
    // A stop waits for the instance's output to close: every line of it went through the log by then.
    await manager.stopAll();
    assert.equal(manager.snapshot()[0]?.state, 'stopped');
    // The log is a device, whose mode is the system's: a bridge running as root leaves it as it was.
    assert.equal(statSync('/dev/full').mode & 0o777, fullMode);
  });

  it('says that another program holds its port, rather than crash and restart into that port again', async (t) => {
    // Something that is no Ollama: it takes connections and answers nothing an HTTP client understands.
    const squatter = net.createServer((socket) => {
      // Its callers hang up as they please.
      socket.on('error', () => undefined);
      socket.end('SSH-2.0-OpenSSH_9.2\r\n');
    });
    await new Promise<void>((resolve) => squatter.listen(0, '127.0.0.1', resolve));
    t.after(() => squatter.close());
    const port = (squatter.address() as net.AddressInfo).port;
    const listening = listeningOn(port);
    const manager = new OllamaManager(
      [{ name: 'gpu0', port, device: undefined, numParallel: 1 }],
      options({ binary: fakeOllamaBinary(), isListening: listening }),
    );
    t.after(() => manager.stopAll());
    await assert.rejects(manager.start('gpu0'), new RegExp(`^ManagerError: port ${port} is in use by another program`));
    const [instance] = manager.snapshot();
    assert.equal(instance?.state, 'failed', 'no restart is waiting: it would only find the port taken again');
    assert.match(instance?.message ?? '', new RegExp(`^port ${port} is in use by another program`));
  });

  it('pins an instance to the GPU that nvidia-smi numbers so: CUDA counts devices by PCI bus, as nvidia-smi does', async () => {
    const dir = tempDir('pinned-ollama-');
    const binary = path.join(dir, 'ollama');
    const seen = path.join(dir, 'env');
    // CUDA's own order is fastest first: with two unlike GPUs its device 1 is nvidia-smi's GPU 0.
    writeFileSync(binary, `#!/bin/sh\necho "$CUDA_VISIBLE_DEVICES $CUDA_DEVICE_ORDER" > ${seen}\nexec sleep 30\n`);
    chmodSync(binary, 0o755);
    const manager = new OllamaManager(
      [{ name: 'gpu1', port: 45679, device: '1', numParallel: 1 }],
      options({ binary, isListening: async () => existsSync(seen) }),
    );
    await manager.start('gpu1');
    await manager.stopAll();
    assert.equal(readFileSync(seen, 'utf8').trim(), '1 PCI_BUS_ID');
  });

  it("leaves Ollama's own settings a user exported (OLLAMA_KEEP_ALIVE, OLLAMA_MAX_LOADED_MODELS, OLLAMA_MAX_QUEUE) to the instance unless the config sets them", async () => {
    const dir = tempDir('own-settings-ollama-');
    const binary = path.join(dir, 'ollama');
    const seen = path.join(dir, 'env');
    writeFileSync(binary, `#!/bin/sh\necho "$OLLAMA_KEEP_ALIVE $OLLAMA_MAX_LOADED_MODELS $OLLAMA_MAX_QUEUE" > ${seen}\nexec sleep 30\n`);
    chmodSync(binary, 0o755);
    const exported = { OLLAMA_KEEP_ALIVE: '-1', OLLAMA_MAX_LOADED_MODELS: '1', OLLAMA_MAX_QUEUE: '64' };
    Object.assign(process.env, exported);
    try {
      const { ollama } = loadConfig({ env: {} });
      const manager = new OllamaManager(
        [{ name: 'gpu0', port: 45680, device: undefined, numParallel: 1 }],
        options({
          binary,
          keepAlive: ollama.keep_alive,
          maxLoadedModels: ollama.max_loaded_models,
          maxQueue: ollama.max_queue,
          isListening: async () => existsSync(seen),
        }),
      );
      await manager.start('gpu0');
      await manager.stopAll();
      assert.equal(readFileSync(seen, 'utf8').trim(), '-1 1 64');
    } finally {
      for (const name of Object.keys(exported)) delete process.env[name];
    }
  });

  it('runs one start or stop of an instance at a time: a double click starts one ollama serve, and a stop while it starts stops it', async (t) => {
    const port = await freePort();
    const listening = listeningOn(port);
    const manager = new OllamaManager(
      [{ name: 'gpu0', port, device: undefined, numParallel: 1 }],
      options({ binary: fakeOllamaBinary(), isListening: listening }),
    );
    t.after(() => manager.stopAll());

    const [first, second] = await Promise.all([manager.start('gpu0'), manager.start('gpu0')]);
    assert.equal(first.state, 'running');
    assert.equal(second.state, 'running');
    assert.equal(second.pid, first.pid, 'one ollama serve');
    await manager.stop('gpu0');
    assert.equal(await listening(), false, 'the stop ended the only ollama serve there was');

    const [, stopped] = await Promise.all([manager.start('gpu0'), manager.stop('gpu0')]);
    assert.equal(stopped.state, 'stopped');
    assert.equal(await listening(), false, 'the stop came after the start, and ended what it started');
  });

  it('stops an instance still starting at once, rather than wait for it to listen or to time out', { timeout: 10_000 }, async (t) => {
    const dir = tempDir('slow-ollama-');
    const binary = path.join(dir, 'ollama');
    // A serve that takes its time (a slow GPU discovery, a stuck driver) before it listens.
    writeFileSync(binary, '#!/bin/sh\nexec sleep 60\n');
    chmodSync(binary, 0o755);
    const manager = new OllamaManager([{ name: 'gpu0', port: 1, device: undefined, numParallel: 1 }], options({ binary, startTimeoutMs: 60_000 }));
    t.after(() => manager.stopAll());
    const refused = assert.rejects(manager.start('gpu0'), /^ManagerError: ollama serve for gpu0 was stopped before it listened$/);
    const starting = await until(() => manager.snapshot().find((i) => i.state === 'starting' && i.pid !== null), 'the serve to be started');
    const stopped = await manager.stop('gpu0');
    assert.equal(stopped.state, 'stopped');
    await refused;
    assert.throws(() => process.kill(starting.pid as number, 0), { code: 'ESRCH' }, 'its serve is ended');
  });

  it('gives each instance its backend’s parallel as OLLAMA_NUM_PARALLEL, the slots the scheduler fills there', async (t) => {
    const dir = tempDir('parallel-ollama-');
    const binary = path.join(dir, 'ollama');
    const seen = path.join(dir, 'env');
    writeFileSync(binary, `#!/bin/sh\necho "$OLLAMA_HOST $OLLAMA_NUM_PARALLEL" >> ${seen}\nexec ${fakeOllamaBinary()} "$@"\n`);
    chmodSync(binary, 0o755);
    const [reserved, plain] = [await freePort(), await freePort()];
    const file = configFile(
      `ollama:\n  binary: ${binary}\n  num_parallel: 2\nbackends:\n  - { name: gpu0, url: "http://127.0.0.1:${reserved}", manage: true, parallel: 3 }\n  - { name: gpu1, url: "http://127.0.0.1:${plain}", manage: true }\n`,
    );
    const bridge = await startTestBridge({ file });
    t.after(() => bridge.stop(100));
    assert.deepEqual(readFileSync(seen, 'utf8').trim().split('\n').sort(), [`127.0.0.1:${plain} 2`, `127.0.0.1:${reserved} 3`].sort());
  });

  it('keeps two instances from pruning each other’s downloads: their default model store is one and the same', async () => {
    const dir = tempDir('two-stores-ollama-');
    const seen = path.join(dir, 'env');
    const binary = path.join(dir, 'ollama');
    writeFileSync(binary, `#!/bin/sh\necho "$OLLAMA_HOST \${OLLAMA_NOPRUNE:-unset}" >> "${seen}"\nexec sleep 30\n`);
    chmodSync(binary, 0o755);
    const started = (port: number): boolean => existsSync(seen) && readFileSync(seen, 'utf8').includes(`:${port} `);
    const manager = new OllamaManager(
      [
        { name: 'gpu0', port: 45683, device: '0', numParallel: 1 },
        { name: 'gpu1', port: 45684, device: '1', numParallel: 1 },
      ],
      options({ binary, isListening: async (port) => started(port) }),
    );
    await manager.startAll();
    await manager.stopAll();
    // Without OLLAMA_MODELS both use ~/.ollama/models: a start that prunes deletes the other's partial pull.
    assert.deepEqual(readFileSync(seen, 'utf8').trim().split('\n').sort(), ['127.0.0.1:45683 1', '127.0.0.1:45684 1']);
  });

  it('refuses unknown instances clearly', async () => {
    const manager = new OllamaManager([], options({}));
    await assert.rejects(manager.start('gpu7'), /no managed Ollama instance for backend 'gpu7'/);
  });
});

describe('an Ollama the bridge did not start, on a managed port', () => {
  it('a Start while a crashed instance waits for its automatic restart replaces that restart', async (t) => {
    // The manager's timers are mocked so that the restart's back-off passes at once; process events stay real.
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const dir = tempDir('flaky-ollama-');
    const [crashedOnce, ready, binary] = ['crashed-once', 'ready', 'ollama'].map((name) => path.join(dir, name)) as [string, string, string];
    // Exits at once the first time; later runs stay up (their command line names `dir`, to be found afterwards).
    writeFileSync(
      binary,
      `#!/bin/sh\nif [ ! -e "${crashedOnce}" ]; then touch "${crashedOnce}"; exit 1; fi\ntouch "${ready}"\nexec "${process.execPath}" -e "setInterval(() => {}, 1000)" "${dir}"\n`,
    );
    chmodSync(binary, 0o755);
    t.after(() => {
      spawnSync('pkill', ['-f', dir]);
    });
    const manager = new OllamaManager(
      [{ name: 'gpu0', port: 1, device: undefined, numParallel: 1 }],
      options({ binary, isListening: async () => existsSync(ready) }),
    );
    /** Settles a manager call, moving the mocked clock on while it waits for its process. */
    const settled = async <T>(call: Promise<T>): Promise<T> => {
      let done = false;
      call.then(
        () => (done = true),
        () => (done = true),
      );
      while (!done) {
        t.mock.timers.tick(100);
        await new Promise((resolve) => setImmediate(resolve));
      }
      return call;
    };

    await assert.rejects(settled(manager.start('gpu0')), /exited at start/);
    assert.equal(manager.snapshot()[0]?.state, 'crashed');
    // The first back-off is half a second: the snapshot says when it ends, for the dashboard's and the tray's countdown.
    const due = Date.parse(manager.snapshot()[0]?.restartAt ?? '') - Date.now();
    assert.ok(due > -5000 && due <= 500, `restart due in ${due} ms`);
    const running = await settled(manager.start('gpu0'));
    assert.deepEqual([running.state, running.restartAt], ['running', null]);
    t.mock.timers.tick(60_000);
    assert.equal(manager.snapshot()[0]?.restarts, 0, 'the automatic restart ran as well, a second ollama serve');
    t.mock.timers.reset();
    assert.equal((await manager.stop('gpu0')).state, 'stopped');
  });

  it('gives up on an automatic restart that lives but never listens, and Start and Stop work on it as usual', async () => {
    const dir = tempDir('silent-ollama-');
    const [runs, ready, binary] = ['runs', 'ready', 'ollama'].map((name) => path.join(dir, name)) as [string, string, string];
    // Every run but the second (the automatic restart) says it listens; all of them stay up.
    writeFileSync(
      binary,
      `#!/bin/sh\nn=$(( $(cat "${runs}" 2>/dev/null || echo 0) + 1 ))\necho $n > "${runs}"\nif [ $n -ne 2 ]; then touch "${ready}"; fi\nexec sleep 60\n`,
    );
    chmodSync(binary, 0o755);
    const manager = new OllamaManager(
      [{ name: 'gpu0', port: 1, device: undefined, numParallel: 1 }],
      options({ binary, restartLimit: 1, startTimeoutMs: 500, isListening: async () => existsSync(ready) }),
    );
    const first = await manager.start('gpu0');
    assert.equal(first.state, 'running');
    // It crashes; what restarts it never listens.
    rmSync(ready);
    process.kill(first.pid ?? 0, 'SIGKILL');
    await until(() => (manager.snapshot()[0]?.restarts === 1 ? true : undefined), 'the automatic restart');
    const given = await until(() => {
      const instance = manager.snapshot()[0];
      return instance?.state === 'failed' ? instance : undefined;
    }, 'the silent restart to be given up');
    assert.equal(given.pid, null);
    assert.match(given.message ?? '', /^crashed 2 times within 60 s; not restarting/);
    assert.equal((await manager.start('gpu0')).state, 'running');
    assert.equal((await manager.stop('gpu0')).state, 'stopped');
  });

  it('tells the dashboard at once when a Start fails, not at the next health round', { timeout: 10_000 }, async (t) => {
    const dir = tempDir('failing-ollama-');
    const binary = path.join(dir, 'ollama');
    writeFileSync(binary, '#!/bin/sh\necho "Error: no GPU for you" >&2\nexit 1\n');
    chmodSync(binary, 0o755);
    const port = await freePort();
    const file = configFile(
      `ollama:\n  binary: ${binary}\n  autostart: false\n  restart_limit: 0\nbackends:\n  - { name: gpu0, url: "http://127.0.0.1:${port}", gpu: 0, manage: true }\nrouting:\n  health:\n    interval_seconds: 3600\n`,
    );
    const bridge = await startTestBridge({ file });
    const events = await fetch(`${bridge.url}/bridge/api/events`, { headers: { 'x-bridge-token': bridge.controlToken } });
    t.after(async () => {
      await events.body?.cancel();
      await bridge.stop(100);
    });
    const states = readSseEvents(events);
    const instanceIn = (data: string): string | undefined =>
      (JSON.parse(data) as { ollama?: Array<{ name: string; state: string }> }).ollama?.find((i) => i.name === 'gpu0')?.state;
    assert.equal(instanceIn(((await states.next()).value ?? '{}') as string), 'stopped');

    const start = await fetch(`${bridge.url}/bridge/api/actions/startOllama`, {
      method: 'POST',
      headers: { 'x-bridge-token': bridge.controlToken, 'content-type': 'application/json' },
      body: JSON.stringify({ backend: 'gpu0' }),
    });
    assert.equal(start.status, 500);
    // The next state event says so; without it the dashboard would show "stopped" until the next health round, an hour away.
    for await (const data of states) if (instanceIn(data) === 'failed') return;
    assert.fail('the event stream ended without the failed start');
  });

  it('is adopted and left alone, and once it is gone, Start runs the bridge’s own', async (t) => {
    const foreign = await startStandIn((_req, res) => res.end('{"version":"0.11.4"}'));
    const port = new URL(foreign.url).port;
    const file = configFile(`ollama:\n  binary: ${fakeOllamaBinary()}\nbackends:\n  - { name: gpu0, url: "${foreign.url}", gpu: 0, manage: true }\n`);
    const bridge = await startTestBridge({ file });
    t.after(async () => {
      await bridge.stop(100);
      await foreign.close();
    });
    const instance = (): InstanceSnapshot | undefined => bridge.state.ollama.find((i) => i.name === 'gpu0');
    const action = async (name: string): Promise<{ status: number; body: { error?: string } }> => {
      const response = await fetch(`${bridge.url}/bridge/api/actions/${name}`, {
        method: 'POST',
        headers: { 'x-bridge-token': bridge.controlToken, 'content-type': 'application/json' },
        body: JSON.stringify({ backend: 'gpu0' }),
      });
      return { status: response.status, body: (await response.json()) as { error?: string } };
    };

    assert.equal(instance()?.state, 'adopted');
    assert.equal(instance()?.pid, null);
    const stop = await action('stopOllama');
    assert.equal(stop.status, 409);
    assert.equal(stop.body.error, `the Ollama on port ${port} was not started by the bridge; stop it where it was started`);
    const restart = await action('restartOllama');
    assert.equal(restart.status, 409, 'a restart the bridge cannot do is not answered as done');
    assert.equal(restart.body.error, `the Ollama on port ${port} was not started by the bridge; restart it where it was started`);

    await foreign.close();
    const start = await action('startOllama');
    assert.equal(start.status, 200);
    assert.equal(instance()?.state, 'running');
    assert.notEqual(instance()?.pid, null);
    assert.equal((await fetch(`http://127.0.0.1:${port}/api/version`)).status, 200, 'the bridge’s own Ollama answers on the port');
  });
});

describe('an ollama serve left running by a bridge that died', () => {
  it(
    'is ended and replaced by the next bridge’s own, not adopted as one it cannot stop',
    { skip: process.platform !== 'linux' && 'reads /proc' },
    async (t) => {
      const port = await freePort();
      const logDir = tempDir('manager-logs-');
      const binary = fakeOllamaBinary();
      const listening = listeningOn(port);
      // A bridge in a process of its own starts the instance, then is killed as a crash or an OOM kill would.
      const script = path.join(tempDir('dying-bridge-'), 'bridge.mjs');
      writeFileSync(
        script,
        `import { OllamaManager } from ${JSON.stringify(path.resolve('src/ollama/manager.ts'))};
const quiet = { info() {}, warn() {}, error() {}, debug() {} };
const listening = async () => { try { return (await fetch('http://127.0.0.1:${port}/api/version')).ok; } catch { return false; } };
const manager = new OllamaManager([{ name: 'gpu0', port: ${port}, device: undefined, numParallel: 1 }], {
  binary: ${JSON.stringify(binary)}, modelsDir: undefined, keepAlive: '5m', maxLoadedModels: 3, maxQueue: 512,
  logDir: ${JSON.stringify(logDir)}, logMaxBytes: 1048576, restartLimit: 2, restartWindowMs: 60000, stopGraceMs: 500,
  log: quiet, isListening: listening,
});
const started = await manager.start('gpu0');
process.stdout.write(JSON.stringify(started) + '\\n');
setInterval(() => undefined, 60000);
`,
      );
      const dying = spawn(process.execPath, ['--import', 'tsx', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      const [line] = (await once(createInterface({ input: dying.stdout }), 'line')) as [string];
      const orphan = JSON.parse(line) as InstanceSnapshot;
      t.after(() => {
        try {
          process.kill(-(orphan.pid as number), 'SIGKILL');
        } catch {
          // ended, as it should be
        }
      });
      assert.equal(orphan.state, 'running');
      // While that bridge runs (a second one on the same data folder), its instance is its own.
      const second = new OllamaManager([{ name: 'gpu0', port, device: undefined, numParallel: 1 }], options({ binary, logDir, isListening: listening }));
      assert.equal((await second.start('gpu0')).state, 'adopted');
      dying.kill('SIGKILL');
      await once(dying, 'exit');
      assert.equal(await listening(), true, 'its ollama serve outlived it');

      const manager = new OllamaManager([{ name: 'gpu0', port, device: undefined, numParallel: 1 }], options({ binary, logDir, isListening: listening }));
      t.after(() => manager.stopAll());
      const started = await manager.start('gpu0');
      assert.equal(started.state, 'running', started.message ?? '');
      assert.notEqual(started.pid, orphan.pid);
      assert.equal(existsSync(`/proc/${orphan.pid}`) && !readFileSync(`/proc/${orphan.pid}/stat`, 'utf8').includes(') Z '), false, 'the orphan is gone');
      await manager.stop('gpu0');
      assert.equal(await listening(), false, 'the bridge stops what now runs there');
    },
  );
});

describe('the record of a running ollama serve', () => {
  it('that is not one the bridge wrote (damaged, or of another version) is ignored, and the start goes on', async (t) => {
    const port = await freePort();
    const logDir = tempDir('manager-logs-');
    writeFileSync(path.join(logDir, 'ollama-gpu0.pid'), '{"pid":1}');
    const listening = listeningOn(port);
    const manager = new OllamaManager(
      [{ name: 'gpu0', port, device: undefined, numParallel: 1 }],
      options({ binary: fakeOllamaBinary(), logDir, isListening: listening }),
    );
    t.after(() => manager.stopAll());
    assert.equal((await manager.start('gpu0')).state, 'running');
  });
});

describe('an adopted Ollama that goes away', () => {
  it('is no longer shown as adopted, and the tray and the dashboard offer Start again', async (t) => {
    const foreign = await startStandIn((_req, res) => res.end('{"version":"0.11.4"}'));
    const file = configFile(
      `ollama:\n  binary: ${fakeOllamaBinary()}\nbackends:\n  - { name: gpu0, url: "${foreign.url}", gpu: 0, manage: true }\nrouting:\n  health:\n    interval_seconds: 0.1\n`,
    );
    const bridge = await startTestBridge({ file });
    t.after(async () => {
      await bridge.stop(100);
      await foreign.close();
    });
    const instance = (): InstanceSnapshot | undefined => bridge.state.ollama.find((i) => i.name === 'gpu0');
    assert.equal(instance()?.state, 'adopted');
    assert.deepEqual(ollamaControls('adopted'), { start: false, stop: false, restart: false });

    await foreign.close();
    const gone = await until(() => (instance()?.state === 'adopted' ? undefined : instance()), 'the bridge to notice the Ollama has gone');
    assert.equal(gone.state, 'stopped');
    assert.match(gone.message ?? '', /^the Ollama started outside the bridge on port \d+ has gone/);
    assert.equal(ollamaControls(gone.state).start, true);
  });
});

/**
 * A stand-in `ollama serve` that starts one runner sharing its stdout, as a real runner gets serve's
 * own (Ollama sets cmd.Stdout = os.Stdout), and writes the runner's pid to `runnerFile`.
 */
function serveWithRunner(prefix: string): { runnerFile: string; binary: string } {
  const dir = tempDir(prefix);
  const runnerFile = path.join(dir, 'runner');
  const serve = path.join(dir, 'serve.mjs');
  writeFileSync(
    serve,
    `import http from 'node:http';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
const runner = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: ['ignore', 'inherit', 'ignore'] });
writeFileSync(${JSON.stringify(runnerFile)}, String(runner.pid));
const [host, port] = process.env.OLLAMA_HOST.split(':');
http.createServer((req, res) => res.end('{"version":"0.11.4"}')).listen(Number(port), host);
`,
  );
  const binary = path.join(dir, 'ollama');
  writeFileSync(binary, `#!/bin/sh\nexec "${process.execPath}" "${serve}"\n`);
  chmodSync(binary, 0o755);
  return { runnerFile, binary };
}

describe('an ollama serve that dies while its runners live', () => {
  it('is noticed and restarted, and its runners, which hold its output, do not outlive it', async (t) => {
    // A real runner gets serve's own stdout (Ollama sets cmd.Stdout = os.Stdout) and its process group.
    const { runnerFile, binary } = serveWithRunner('orphaning-ollama-');
    const port = await freePort();
    const manager = new OllamaManager(
      [{ name: 'gpu0', port, device: undefined, numParallel: 1 }],
      options({
        binary,
        isListening: async () => {
          try {
            return (await fetch(`http://127.0.0.1:${port}/api/version`)).ok;
          } catch {
            return false;
          }
        },
      }),
    );
    const alive = (pid: number): boolean => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    t.after(async () => {
      await manager.stopAll();
      const runner = Number(readFileSync(runnerFile, 'utf8'));
      if (alive(runner)) process.kill(runner, 'SIGKILL');
    });

    const started = await manager.start('gpu0');
    const runner = Number(readFileSync(runnerFile, 'utf8'));
    // A crash of serve alone (a segfault, the OOM killer).
    process.kill(started.pid as number, 'SIGKILL');
    const crashed = await until(() => manager.snapshot()[0]?.lastExit ?? undefined, 'the crash to be noticed');
    assert.match(crashed, /SIGKILL$/);
    await until(() => (alive(runner) ? undefined : true), 'the orphaned runner to be ended');
    await until(() => (manager.snapshot()[0]?.restarts === 1 ? true : undefined), 'the automatic restart');
  });
});

describe('ollama serve on Windows, which has neither process groups nor signals', () => {
  it('is spawned attached with its console hidden, and ended with its runners by taskkill /T /F', () => {
    assert.deepEqual(serveSpawnOptions('win32'), { detached: false, windowsHide: true });
    assert.deepEqual(serveSpawnOptions('linux'), { detached: true, windowsHide: true });
    assert.deepEqual(serveSpawnOptions('darwin'), { detached: true, windowsHide: true });
    assert.deepEqual(taskkillCommand(4321, { SystemRoot: 'D:\\WINNT' }), { file: 'D:\\WINNT\\System32\\taskkill.exe', args: ['/PID', '4321', '/T', '/F'] });
    assert.deepEqual(taskkillCommand(7, {}), { file: 'C:\\Windows\\System32\\taskkill.exe', args: ['/PID', '7', '/T', '/F'] });
  });

  it('is stopped through taskkill, which ends its whole tree', async (t) => {
    const port = await freePort();
    const calls: string[][] = [];
    const manager = new OllamaManager(
      [{ name: 'gpu0', port, device: undefined, numParallel: 1 }],
      options({
        binary: fakeOllamaBinary(),
        isListening: listeningOn(port),
        platform: 'win32',
        // What taskkill /F does to the process named: this host has no taskkill.
        runTaskkill: (file, args) => {
          calls.push([file, ...args]);
          try {
            process.kill(Number(args[1]), 'SIGKILL');
          } catch {
            // gone already, as taskkill would report
          }
        },
      }),
    );
    t.after(() => manager.stopAll());
    const started = await manager.start('gpu0');
    const stopped = await manager.stop('gpu0');
    assert.equal(stopped.state, 'stopped');
    assert.deepEqual(calls[0]?.slice(1), ['/PID', String(started.pid), '/T', '/F']);
    assert.match(calls[0]?.[0] ?? '', /System32\\taskkill\.exe$/);
    assert.equal(await listeningOn(port)(), false);
  });

  it('that cannot be spawned fails its start at once, as elsewhere', async () => {
    const port = await freePort();
    const missing = path.join(tempDir('no-ollama-'), 'ollama');
    const manager = new OllamaManager(
      [{ name: 'gpu0', port, device: undefined, numParallel: 1 }],
      // Found, then gone before it ran; no 'exit' follows a spawn error, only 'close'.
      options({ findBinary: () => missing, isListening: listeningOn(port), platform: 'win32', startTimeoutMs: 60_000, runTaskkill: () => undefined }),
    );
    await assert.rejects(manager.start('gpu0'), /exited at start/);
  });

  it('is still ended when taskkill cannot run: a quit never waits on it', async (t) => {
    const port = await freePort();
    const calls: string[][] = [];
    const manager = new OllamaManager(
      [{ name: 'gpu0', port, device: undefined, numParallel: 1 }],
      options({ binary: fakeOllamaBinary(), isListening: listeningOn(port), platform: 'win32', runTaskkill: (_file, args) => void calls.push(args) }),
    );
    t.after(() => manager.stopAll());
    const started = await manager.start('gpu0');
    const stopped = await manager.stop('gpu0');
    assert.equal(stopped.state, 'stopped');
    // At the stop, and once the grace period is over.
    assert.deepEqual(
      calls,
      [1, 2].map(() => ['/PID', String(started.pid), '/T', '/F']),
    );
    assert.equal(await listeningOn(port)(), false);
  });

  it('is restarted after a crash even while a runner it started still holds its output', async (t) => {
    const { runnerFile, binary } = serveWithRunner('orphaning-ollama-win-');
    const port = await freePort();
    const calls: string[][] = [];
    const manager = new OllamaManager(
      [{ name: 'gpu0', port, device: undefined, numParallel: 1 }],
      options({
        binary,
        isListening: listeningOn(port),
        platform: 'win32',
        // taskkill /T finds no tree under a process already gone; a live one it ends.
        runTaskkill: (file, args) => {
          calls.push(args);
          try {
            process.kill(Number(args[1]), 'SIGKILL');
          } catch {
            // not found
          }
        },
      }),
    );
    const runners: number[] = [];
    t.after(async () => {
      await manager.stopAll();
      for (const pid of runners) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // ended already
        }
      }
    });

    const started = await manager.start('gpu0');
    runners.push(Number(readFileSync(runnerFile, 'utf8')));
    process.kill(started.pid as number, 'SIGKILL');
    const crashed = await until(() => manager.snapshot()[0]?.lastExit ?? undefined, 'the crash to be noticed');
    assert.match(crashed, /SIGKILL$/);
    // No taskkill for a process gone: its pid may name another one by then.
    assert.deepEqual(calls, []);
    await until(() => (manager.snapshot()[0]?.restarts === 1 ? true : undefined), 'the automatic restart');
    await until(() => (manager.snapshot()[0]?.state === 'running' ? true : undefined), 'the restarted serve to listen');
    runners.push(Number(readFileSync(runnerFile, 'utf8')));
  });
});
