import assert from 'node:assert/strict';
import childProcess, { fork, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import type { BridgeHandle } from '../../src/bridge.js';
import { availableMemory, GpuMonitor, nvidiaSmiCommands, parseVmStat, type GpuStatus } from '../../src/gpu/monitor.js';
import { ListenerCache } from '../../src/gpu/procfs.js';
import { FIXTURE_GPU_FIELDS, H100, nvidiaSmiStandIn, TWO_GPU_REPLIES } from '../support/gpu.js';
import { memoryLogger, startStandIn, startTestBridge } from '../support/bridge.js';
import { freePort } from '../support/ollama-rig.js';
import { until } from '../support/wait.js';
import { tempDir, configFile } from '../support/temp.js';

const MIB = 1024 * 1024;
const silent = pino({ level: 'silent' });
const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

function monitorWith(command: string, historyPoints = 50): GpuMonitor {
  const monitor = new GpuMonitor({ command, intervalMs: 100, historyPoints, processesEveryMs: 60_000, log: silent });
  cleanups.push(() => monitor.stop());
  return monitor;
}

describe('GPU monitor against an nvidia-smi stand-in', () => {
  it('samples two GPUs from one long-lived process, follows changes, and keeps a bounded history', async () => {
    const smi = nvidiaSmiStandIn(TWO_GPU_REPLIES);
    const monitor = monitorWith(smi.command, 12);
    await monitor.start();
    const first = await until(() => (monitor.status.gpus.length === 2 ? monitor.status : undefined), 'two GPUs');
    assert.equal(first.live, true);
    assert.equal(first.source, 'nvidia-smi');
    assert.deepEqual(
      first.gpus.map((g) => g.memoryUsedBytes),
      [28287 * MIB, 9650 * MIB],
    );

    // The GPU changes: a single idle H100 now.
    smi.set({ gpu: path.join(H100, 'query-gpu.noheader-nounits.idle.txt'), gpuFields: FIXTURE_GPU_FIELDS });
    await until(() => (monitor.status.gpus.length === 1 && monitor.status.gpus[0]?.memoryUsedBytes === 0 ? true : undefined), 'the idle sample');
    await until(() => (monitor.history(0).length === 12 ? true : undefined), 'the history to fill');
    // Three more samples past a full history: it must stay at its bound.
    const fullAt = monitor.history(0).at(-1)?.t ?? 0;
    await until(() => (monitor.history(0).filter((p) => p.t > fullAt).length >= 3 ? true : undefined), 'three more samples');
    const points = monitor.history(0);
    assert.equal(points.length, 12, 'history keeps at most 12 points');
    assert.equal(points.at(-1)?.memoryUsedBytes, 0);
    assert.ok(points.every((p, i) => i === 0 || p.t >= (points[i - 1]?.t ?? 0)));

    const launches = readFileSync(smi.log, 'utf8')
      .split('\n')
      .filter((l) => l.includes('--query-gpu=') && l.includes('-lms'));
    assert.equal(launches.length, 1, 'one long-lived nvidia-smi, not one per poll');
    assert.match(launches[0] ?? '', /--query-gpu=index,uuid,name,pci\.bus_id,memory\.total,memory\.used,memory\.free,memory\.reserved,/);
    assert.match(launches[0] ?? '', /--format=csv,noheader,nounits -lms 100$/);
    // Per-process memory is asked for when used memory changes, not on every sample.
    const appQueries = readFileSync(smi.log, 'utf8')
      .split('\n')
      .filter((l) => l.includes('--query-compute-apps='));
    assert.ok(appQueries.length >= 1 && appQueries.length <= 4, `${appQueries.length} compute-apps queries`);
    assert.deepEqual(monitor.status.processes.map((p) => p.pid).sort(), [4242, 707, 708]);
    // RAM and CPU come from systeminformation alongside.
    const system = await until(() => monitor.status.system ?? undefined, 'RAM and CPU figures');
    assert.equal(system.memoryTotalBytes, os.totalmem());
    assert.ok(system.memoryUsedBytes > 0 && system.memoryUsedBytes < system.memoryTotalBytes);
    assert.ok(system.cpuLoadRatio >= 0 && system.cpuLoadRatio <= 1);
  });

  it('restarts a failing nvidia-smi with back-off and says so meanwhile', async () => {
    const smi = nvidiaSmiStandIn({
      gpu: path.join(H100, 'query-gpu.noheader-nounits.loaded.txt'),
      gpuFields: FIXTURE_GPU_FIELDS,
      apps: path.join(H100, 'compute-apps.noheader-nounits.loaded.txt'),
    });
    const monitor = monitorWith(smi.command);
    await monitor.start();
    await until(() => (monitor.status.live ? true : undefined), 'a first sample');
    smi.set({ exit: 9 });
    const down = await until(() => (monitor.status.live ? undefined : monitor.status), 'the failure');
    assert.match(down.lastError ?? '', /nvidia-smi exited \(9\)/);
    assert.match(down.message, /nvidia-smi failed; retrying in 1 s/);
    smi.set({ exit: null });
    const back = await until(() => (monitor.status.live ? monitor.status : undefined), 'recovery', 4000);
    assert.equal(back.lastError, null);
    const launches = readFileSync(smi.log, 'utf8')
      .split('\n')
      .filter((l) => l.includes('-lms'));
    assert.ok(launches.length >= 2);
  });

  it('says nvidia-smi failed, not live, when it dies right after printing a round', async () => {
    const smi = nvidiaSmiStandIn({
      ...TWO_GPU_REPLIES,
      exitAfterRound: 15,
    });
    const monitor = monitorWith(smi.command);
    const seen: GpuStatus[] = [];
    const failures = (): number => seen.filter((s) => s.lastError !== null).length;
    monitor.on('sample', (status) => {
      seen.push(status);
      // The restart (a back-off later) fails before printing anything: its failure ends the test.
      if (failures() === 1) smi.set({ exitAfterRound: null, exit: 9 });
    });
    await monitor.start();
    await until(() => (failures() === 2 ? true : undefined), 'the restart to fail too', 4000);
    const first = seen.findIndex((s) => s.lastError !== null);
    assert.match(seen[first]?.lastError ?? '', /nvidia-smi exited \(15\)/);
    assert.ok(
      seen.slice(first).every((s) => !s.live),
      `live again after the failure: ${seen.map((s) => s.live).join(', ')}`,
    );
    assert.deepEqual(
      seen.slice(0, first).map((s) => s.gpus.length),
      [2],
      'the round printed before the exit still counts',
    );
  });

  it('says which GPU nvidia-smi lost while it goes on reading the others, and stops saying so once it is back', async () => {
    const [gpu0, gpu1] = readFileSync(TWO_GPU_REPLIES.gpu, 'utf8').trim().split('\n');
    const lost = 'Unable to determine the device handle for GPU0000:00:07.0: Unknown Error';
    const dir = tempDir('lost-gpu-');
    // nvidia-smi prints the lost GPU's error before the line of the one it still reads, or after it.
    const errorFirst = path.join(dir, 'error-first.txt');
    const errorAfter = path.join(dir, 'error-after.txt');
    writeFileSync(errorFirst, `${lost}\n${gpu0}\n`);
    writeFileSync(errorAfter, `${gpu0}\n${lost}\n`);
    const smi = nvidiaSmiStandIn({ ...TWO_GPU_REPLIES, gpu: errorFirst });
    const monitor = monitorWith(smi.command);
    await monitor.start();
    const partial = await until(() => (monitor.status.live && monitor.history(0).length >= 3 ? monitor.status : undefined), 'samples of the GPU left');
    assert.deepEqual(
      partial.gpus.map((g) => g.index),
      [0],
    );
    assert.match(partial.message, /^1 GPU \(nvidia-smi\); Unable to determine the device handle for GPU0000:00:07\.0: Unknown Error$/);
    assert.equal(partial.lastError, lost);

    smi.set({ gpu: errorAfter });
    const before = monitor.history(0).length;
    await until(() => (monitor.history(0).length >= before + 3 ? true : undefined), 'three rounds with the error after the reading');
    assert.equal(monitor.status.lastError, lost);

    writeFileSync(errorAfter, `${gpu0}\n${gpu1}\n`);
    const back = await until(() => (monitor.status.gpus.length === 2 ? monitor.status : undefined), 'both GPUs again');
    assert.equal(back.message, '2 GPUs (nvidia-smi)');
    assert.equal(back.lastError, null);
  });

  it('forgets the per-process memory it can no longer read, rather than place models by it', { timeout: 15_000 }, async () => {
    const smi = nvidiaSmiStandIn(TWO_GPU_REPLIES);
    const monitor = monitorWith(smi.command);
    await monitor.start();
    await until(() => (monitor.status.processes.length === 3 ? true : undefined), 'the GPU processes');
    smi.set({ exit: 9 });
    const down = await until(() => (monitor.status.live ? undefined : monitor.status), 'the failure');
    assert.deepEqual(down.processes, []);

    // The loop reads on, but the per-process query no longer answers.
    const stuck = nvidiaSmiStandIn(TWO_GPU_REPLIES);
    const queried = new GpuMonitor({ command: stuck.command, intervalMs: 100, historyPoints: 10, processesEveryMs: 0, queryTimeoutMs: 300, log: silent });
    cleanups.push(async () => {
      await queried.stop();
      process.kill(stuck.stuckPid(), 'SIGKILL');
    });
    await queried.start();
    await until(() => (queried.status.processes.length === 3 ? true : undefined), 'the GPU processes');
    stuck.set({ appsStuck: true });
    await until(() => (existsSync(`${stuck.dir}/state.json.stuck-pid`) ? true : undefined), 'the stuck query');
    const unknown = await until(() => (queried.status.processes.length === 0 ? queried.status : undefined), 'the processes to be forgotten', 4000);
    assert.equal(unknown.live, true, 'the GPUs themselves still read');
  });

  it('is not live while nvidia-smi prints only errors in place of its GPUs, and says what it printed', async () => {
    const smi = nvidiaSmiStandIn(TWO_GPU_REPLIES);
    const monitor = monitorWith(smi.command);
    await monitor.start();
    await until(() => (monitor.status.live ? true : undefined), 'a first sample');
    // Every GPU lost, and nvidia-smi printing so each round, without ending.
    const lostAll = path.join(tempDir('lost-gpus-'), 'lost.txt');
    writeFileSync(
      lostAll,
      'Unable to determine the device handle for GPU0000:00:06.0: Unknown Error\nUnable to determine the device handle for GPU0000:00:07.0: Unknown Error\n',
    );
    smi.set({ gpu: lostAll });
    const down = await until(() => (monitor.status.live ? undefined : monitor.status), 'the readings to be missed', 4000);
    assert.equal(
      down.lastError,
      'nvidia-smi printed no reading for 1 s (Unable to determine the device handle for GPU0000:00:06.0: Unknown Error Unable to determine the device handle for GPU0000:00:07.0: Unknown Error); killed it',
    );
  });

  it('backs off from an nvidia-smi that dies after each round it prints, rather than restart it every second', async () => {
    const smi = nvidiaSmiStandIn({ ...TWO_GPU_REPLIES, exitAfterRound: 15 });
    const monitor = monitorWith(smi.command);
    const retries: string[] = [];
    monitor.on('sample', (status) => {
      if (!status.live) retries.push(status.message);
    });
    await monitor.start();
    await until(() => (retries.length >= 2 ? true : undefined), 'two failures', 4000);
    assert.deepEqual(retries.slice(0, 2), ['nvidia-smi failed; retrying in 1 s', 'nvidia-smi failed; retrying in 2 s']);
  });

  it('ends an nvidia-smi loop that prints on without a line end, rather than hold it all', async () => {
    const smi = nvidiaSmiStandIn(TWO_GPU_REPLIES);
    const monitor = monitorWith(smi.command);
    await monitor.start();
    await until(() => (monitor.status.live ? true : undefined), 'a first sample');
    const garbage = path.join(tempDir('garbage-'), 'garbage.txt');
    writeFileSync(garbage, 'x'.repeat(400 * 1024));
    smi.set({ gpu: garbage });
    const down = await until(() => (monitor.status.live ? undefined : monitor.status), 'the garbage to be refused', 4000);
    assert.equal(down.lastError, 'nvidia-smi printed more than 1 MiB without a line end; killed it');
  });

  it('restarts an nvidia-smi that stops printing without exiting', async () => {
    const smi = nvidiaSmiStandIn(TWO_GPU_REPLIES);
    const monitor = monitorWith(smi.command);
    await monitor.start();
    await until(() => (monitor.status.live ? true : undefined), 'a first sample');
    smi.set({ hang: true });
    const down = await until(() => (monitor.status.live ? undefined : monitor.status), 'the silence to be noticed', 4000);
    assert.match(down.lastError ?? '', /^nvidia-smi printed nothing for 1 s/);
    smi.set({ hang: false });
    await until(() => (monitor.status.live ? true : undefined), 'a sample from the restarted nvidia-smi', 4000);
    const launches = readFileSync(smi.log, 'utf8')
      .split('\n')
      .filter((l) => l.includes('-lms'));
    assert.equal(launches.length, 2);
  });

  it('says why nvidia-smi ended, from what it printed on stdout, not from warnings on stderr long before', async () => {
    const smi = nvidiaSmiStandIn({
      ...TWO_GPU_REPLIES,
      warn: 'WARNING: infoROM is corrupted at gpu 0000:00:07.0\n',
    });
    const monitor = monitorWith(smi.command);
    await monitor.start();
    // Warnings of many rounds, more than the reason may take, come before the end.
    await until(() => (monitor.history(0).length >= 10 ? true : undefined), 'ten rounds');
    // nvidia-smi says why on stdout: a GPU lost from the bus, a driver updated under a running system.
    smi.set({ exit: 6, say: 'No devices were found\n', warn: null });
    const gone = await until(() => (monitor.status.lastError === null ? undefined : monitor.status.lastError), 'the failure');
    assert.equal(gone, 'nvidia-smi exited (6): No devices were found');

    smi.set({ exit: 18, say: 'Failed to initialize NVML: Driver/library version mismatch\nNVML library version: 535.161\n' });
    const mismatch = await until(() => (monitor.status.lastError?.includes('(18)') === true ? monitor.status.lastError : undefined), 'the next failure', 4000);
    assert.equal(mismatch, 'nvidia-smi exited (18): Failed to initialize NVML: Driver/library version mismatch NVML library version: 535.161');
  });

  it('stops an nvidia-smi that outlives SIGTERM: a quit never waits on a wedged driver', { timeout: 15_000 }, async () => {
    const smi = nvidiaSmiStandIn({
      ...TWO_GPU_REPLIES,
      ignoreTerm: true,
    });
    const monitor = monitorWith(smi.command);
    await monitor.start();
    await until(() => (monitor.status.live ? true : undefined), 'a first sample');
    const pid = smi.loopPid();
    // Before the stop ends, the stand-in must be gone: the bridge stops its Ollama instances only after this.
    await monitor.stop();
    assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' });
  });

  it('gives up on a per-process query that never ends, so later ones and a stop do not wait on it', { timeout: 15_000 }, async () => {
    const smi = nvidiaSmiStandIn({
      ...TWO_GPU_REPLIES,
      appsStuck: true,
    });
    const { logger, lines } = memoryLogger();
    // A query on every sample, and a short timeout on it.
    const monitor = new GpuMonitor({ command: smi.command, intervalMs: 100, historyPoints: 10, processesEveryMs: 0, queryTimeoutMs: 300, log: logger });
    cleanups.push(async () => {
      await monitor.stop();
      process.kill(smi.stuckPid(), 'SIGKILL');
    });
    await monitor.start();
    await until(() => (existsSync(`${smi.dir}/state.json.stuck-pid`) ? true : undefined), 'the stuck query');
    smi.set({ appsStuck: false });
    const processes = await until(() => (monitor.status.processes.length > 0 ? monitor.status.processes : undefined), 'a later query to answer');
    assert.deepEqual(processes.map((p) => p.pid).sort(), [4242, 707, 708]);
    assert.ok(
      lines().some((line) => line.msg === 'GPU monitor: compute-apps query failed' && line.error === `${smi.command} gave no answer within 0.3 s`),
      'the stuck query is reported',
    );
  });

  it('says a query ran past its timeout, not how the ending it caused looked', async () => {
    const smi = nvidiaSmiStandIn({ ...TWO_GPU_REPLIES, appsHang: true });
    const { logger, lines } = memoryLogger();
    const monitor = new GpuMonitor({ command: smi.command, intervalMs: 100, historyPoints: 10, processesEveryMs: 60_000, queryTimeoutMs: 300, log: logger });
    cleanups.push(() => monitor.stop());
    await monitor.start();
    const failure = await until(() => lines().find((line) => line.msg === 'GPU monitor: compute-apps query failed'), 'the query to time out');
    assert.equal(failure.error, `${smi.command} gave no answer within 0.3 s`);
  });

  it('ends a query that prints without end, rather than hold all it prints until its timeout', { timeout: 15_000 }, async () => {
    const smi = nvidiaSmiStandIn({ ...TWO_GPU_REPLIES, appsFlood: true });
    const { logger, lines } = memoryLogger();
    const monitor = new GpuMonitor({ command: smi.command, intervalMs: 100, historyPoints: 10, processesEveryMs: 60_000, queryTimeoutMs: 60_000, log: logger });
    cleanups.push(() => monitor.stop());
    await monitor.start();
    const failure = await until(() => lines().find((line) => line.msg === 'GPU monitor: compute-apps query failed'), 'the flood to be cut off', 8000);
    assert.equal(failure.error, `${smi.command} printed more than 1 MiB; ended it`);
  });

  it('asks again which fields the driver knows when nvidia-smi fails that first question, rather than go without it', async () => {
    const smi = nvidiaSmiStandIn({
      ...TWO_GPU_REPLIES,
      helpFails: 1,
    });
    const monitor = monitorWith(smi.command);
    await monitor.start();
    assert.equal(monitor.status.live, false);
    assert.match(monitor.status.lastError ?? '', /exited 255: Failed to initialize NVML: Unknown Error$/);
    assert.match(monitor.status.message, /^nvidia-smi failed; retrying in 1 s/);
    await until(() => (monitor.status.live ? true : undefined), 'a sample after the retry', 4000);
    const helpQueries = readFileSync(smi.log, 'utf8')
      .split('\n')
      .filter((l) => l.includes('--help-query-gpu'));
    assert.equal(helpQueries.length, 2);
  });

  it('says plainly when there are no live VRAM figures, listing what systeminformation sees', async () => {
    const controllers = (
      JSON.parse(readFileSync(path.join(H100, 'si-graphics.loaded.json'), 'utf8')) as { graphics: { controllers: Array<{ vendor: string; model: string }> } }
    ).graphics.controllers;
    const monitor = new GpuMonitor({
      command: '/nonexistent/nvidia-smi',
      intervalMs: 100,
      historyPoints: 10,
      processesEveryMs: 1000,
      log: silent,
      listControllers: async () => controllers.map((c) => ({ vendor: c.vendor, model: c.model })),
    });
    await monitor.start();
    const status: GpuStatus = monitor.status;
    assert.equal(status.live, false);
    assert.equal(status.source, 'systeminformation');
    assert.deepEqual(status.gpus, []);
    assert.deepEqual(status.controllers, [{ vendor: 'NVIDIA Corporation', model: 'NVIDIA H100 80GB HBM3' }]);
    assert.match(status.message, /^No live VRAM figures: \/nonexistent\/nvidia-smi not found/);

    const none = new GpuMonitor({
      command: '/nonexistent/nvidia-smi',
      intervalMs: 100,
      historyPoints: 10,
      processesEveryMs: 1000,
      log: silent,
      listControllers: async () => [],
    });
    await none.start();
    assert.equal(none.status.source, 'none');
    assert.match(none.status.message, /^No NVIDIA GPU found/);
  });
});

describe('nvidia-smi on Windows and macOS', () => {
  it('is looked for where Windows drivers put it when it is not on PATH; a configured one is run as given', () => {
    const env = { SystemRoot: 'C:\\Windows', ProgramFiles: 'C:\\Program Files' };
    assert.deepEqual(nvidiaSmiCommands('nvidia-smi', 'win32', env), [
      'nvidia-smi',
      'C:\\Windows\\System32\\nvidia-smi.exe',
      'C:\\Program Files\\NVIDIA Corporation\\NVSMI\\nvidia-smi.exe',
    ]);
    assert.deepEqual(nvidiaSmiCommands('nvidia-smi', 'win32', {}), ['nvidia-smi', 'C:\\Windows\\System32\\nvidia-smi.exe']);
    assert.deepEqual(nvidiaSmiCommands('D:\\tools\\nvidia-smi.exe', 'win32', env), ['D:\\tools\\nvidia-smi.exe']);
    // macOS has no NVIDIA driver: one missing nvidia-smi, then the quiet "no live figures".
    assert.deepEqual(nvidiaSmiCommands('nvidia-smi', 'darwin', env), ['nvidia-smi']);
  });

  it('runs the first of its places that exists, for the loop and every later query', async () => {
    const smi = nvidiaSmiStandIn(TWO_GPU_REPLIES);
    const monitor = new GpuMonitor({
      command: 'nvidia-smi',
      commands: [path.join(tempDir('no-smi-'), 'nvidia-smi'), smi.command],
      intervalMs: 100,
      historyPoints: 10,
      processesEveryMs: 60_000,
      log: silent,
      listControllers: async () => [],
    });
    cleanups.push(() => monitor.stop());
    await monitor.start();
    await until(() => (monitor.status.live && monitor.status.processes.length > 0 ? true : undefined), 'live samples and processes');
    const calls = readFileSync(smi.log, 'utf8');
    assert.match(calls, /--help-query-gpu/);
    assert.match(calls, /-lms 100/);
    assert.match(calls, /--query-compute-apps=/);
  });

  it('starts nvidia-smi with its console window hidden: the desktop app on Windows would flash one each query', async () => {
    const seen: Array<SpawnOptions | undefined> = [];
    const original = childProcess.spawn;
    childProcess.spawn = ((command: string, args: readonly string[], options: SpawnOptions) => {
      seen.push(options);
      return original(command, args, options);
    }) as typeof childProcess.spawn;
    // The monitor's own `spawn` binding follows the module's export only once this is called.
    syncBuiltinESMExports();
    try {
      const smi = nvidiaSmiStandIn(TWO_GPU_REPLIES);
      const monitor = monitorWith(smi.command);
      await monitor.start();
      await until(() => (monitor.status.live && monitor.status.processes.length > 0 ? true : undefined), 'live samples and processes');
      await monitor.stop();
    } finally {
      childProcess.spawn = original;
      syncBuiltinESMExports();
    }
    assert.ok(seen.length >= 3, `${seen.length} spawns: the fields question, the loop, a per-process query`);
    assert.deepEqual(
      seen.map((options) => options?.windowsHide),
      seen.map(() => true),
    );
  });
});

describe('RAM in use on macOS', () => {
  // vm_stat on an Apple Silicon Mac (16 KiB pages): free pages are few, the file cache is inactive.
  const VM_STAT = `Mach Virtual Memory Statistics: (page size of 16384 bytes)
Pages free:                                6000.
Pages active:                            400000.
Pages inactive:                          380000.
Pages speculative:                         4000.
Pages throttled:                              0.
Pages wired down:                        150000.
Pages purgeable:                          20000.
"Translation faults":                 912345678.
Pages copy-on-write:                   12345678.
Pages zero filled:                    234567890.
Pages reactivated:                      3456789.
Pages purged:                            456789.
File-backed pages:                       300000.
Anonymous pages:                         484000.
Pages stored in compressor:              200000.
Pages occupied by compressor:             60000.
Decompressions:                          345678.
Compressions:                            456789.
Pageins:                                5678901.
Pageouts:                                 67890.
Swapins:                                      0.
Swapouts:                                     0.
`;

  it('counts the inactive pages (the file cache) as available, as Activity Monitor does, not only the free ones', async () => {
    assert.equal(parseVmStat(VM_STAT), (6000 + 4000 + 380000) * 16384);
    assert.equal(parseVmStat('vm_stat: unexpected output'), undefined);
    assert.equal(await availableMemory('darwin', async () => VM_STAT), (6000 + 4000 + 380000) * 16384);
    // Without vm_stat, the system's own free figure (which moves from one read to the next).
    const fallback = await availableMemory('darwin', async () => {
      throw new Error('spawn vm_stat ENOENT');
    });
    assert.ok(fallback > 0 && fallback <= os.totalmem(), `${fallback} bytes`);
  });
});

describe('GPU figures in the bridge', () => {
  const GIB = 1024 ** 3;

  /** A bridge whose backend gpu1 (on GPU 1, 71429 MiB free) lists a small and a huge model. */
  async function bridgeOnGpu1(): Promise<{
    bridge: BridgeHandle;
    upstream: Awaited<ReturnType<typeof startStandIn>>;
    smi: ReturnType<typeof nvidiaSmiStandIn>;
  }> {
    const smi = nvidiaSmiStandIn(TWO_GPU_REPLIES);
    const upstream = await startStandIn(
      (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"done":true,"done_reason":"load"}');
      },
      [
        { name: 'small:1b', size: 2 * GIB },
        { name: 'huge:70b', size: 75 * GIB },
      ],
    );
    const file = configFile(
      `gpu_monitor:\n  command: ${smi.command}\n  interval_seconds: 0.1\nbackends:\n  - name: gpu1\n    url: ${upstream.url}\n    gpu: 1\n`,
    );
    const bridge = await startTestBridge({ file });
    cleanups.push(
      () => bridge.stop(100),
      () => upstream.close(),
    );
    await until(() => (bridge.gpuMonitor.status.gpus.length === 2 ? true : undefined), 'GPU samples');
    return { bridge, upstream, smi };
  }

  it('exposes gpu_* metrics per GPU from the live samples', async () => {
    const { bridge } = await bridgeOnGpu1();
    const metrics = await (await fetch(`${bridge.url}/metrics`)).text();
    const gpu0 = 'gpu="0",uuid="GPU-dcb97cc3-bfea-612d-75e8-f8d20ee6e2e0",name="NVIDIA H100 80GB HBM3"';
    const gpu1 = 'gpu="1",uuid="GPU-5f3e2a10-7c44-4b1e-9d2a-0c6b1e8f7a21",name="NVIDIA H100 80GB HBM3"';
    assert.ok(metrics.includes(`gpu_memory_used_bytes{${gpu0}} ${28287 * MIB}`), 'used bytes of GPU 0');
    assert.ok(metrics.includes(`gpu_memory_total_bytes{${gpu1}} ${81559 * MIB}`), 'total bytes of GPU 1');
    assert.ok(metrics.includes(`gpu_utilization_ratio{${gpu1}} 0.12`), 'utilization of GPU 1');
    assert.ok(metrics.includes(`gpu_temperature_celsius{${gpu0}} 65`), 'temperature of GPU 0');
    assert.ok(metrics.includes(`gpu_power_watts{${gpu0}} 698.04`), 'power of GPU 0');
    // GPU 1 reports no power draw ([N/A]): no made-up value.
    assert.ok(!metrics.includes(`gpu_power_watts{${gpu1}}`), 'no power figure for GPU 1');
  });

  it('drops the gpu_* metrics while nvidia-smi is down, rather than repeat its last sample', async () => {
    const smi = nvidiaSmiStandIn(TWO_GPU_REPLIES);
    const file = configFile(`gpu_monitor:\n  command: ${smi.command}\n  interval_seconds: 0.1\n`);
    const bridge = await startTestBridge({ file });
    cleanups.push(() => bridge.stop(100));
    await until(() => (bridge.gpuMonitor.status.live ? true : undefined), 'GPU samples');
    const gpuLines = async (): Promise<string[]> => (await (await fetch(`${bridge.url}/metrics`)).text()).split('\n').filter((l) => l.startsWith('gpu_'));
    assert.ok((await gpuLines()).some((l) => l.startsWith('gpu_memory_used_bytes{gpu="1"')));
    // The GPUs fell off the bus: every restart of nvidia-smi fails.
    smi.set({ exit: 9 });
    await until(() => (bridge.gpuMonitor.status.live ? undefined : true), 'the failure');
    assert.deepEqual(await gpuLines(), []);
  });

  it('sends a cold load to the GPU that can hold it, not to the one without room', async () => {
    const smi = nvidiaSmiStandIn(TWO_GPU_REPLIES);
    // 55 GiB with the allowance is 66 GiB: GPU 0 has 51.6 GiB free, GPU 1 69.8 GiB.
    const models = [{ name: 'big:55b', size: 55 * GIB }];
    const answer = (res: import('node:http').ServerResponse): void => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.end('{"model":"big:55b","created_at":"2025-01-01T00:00:00Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop"}\n');
    };
    const a = await startStandIn((_req, res) => answer(res), models);
    const b = await startStandIn((_req, res) => answer(res), models);
    const file = configFile(
      `gpu_monitor:\n  command: ${smi.command}\n  interval_seconds: 0.1\ndual_gpu: true\nbackends:\n  - name: gpu0\n    url: ${a.url}\n    gpu: 0\n  - name: gpu1\n    url: ${b.url}\n    gpu: 1\n`,
    );
    const bridge = await startTestBridge({ file });
    cleanups.push(
      () => bridge.stop(100),
      () => a.close(),
      () => b.close(),
    );
    await until(() => (bridge.state.placements.every((p) => p.gpu !== null) && bridge.gpuMonitor.status.gpus.length === 2 ? true : undefined), 'GPU placement');
    const response = await fetch(`${bridge.url}/api/chat`, {
      method: 'POST',
      body: JSON.stringify({ model: 'big:55b', stream: false, messages: [{ role: 'user', content: 'x' }] }),
    });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('x-bridge-backend'), 'gpu1');
    assert.match(response.headers.get('x-bridge-route-reason') ?? '', /gpu0 lacks VRAM for a cold load/);
    assert.equal(a.requests.length, 0);
  });

  it('refuses to preload a model that will not fit in the GPU’s free memory, unless forced', async () => {
    const { bridge, upstream } = await bridgeOnGpu1();
    const preload = (payload: unknown): Promise<Response> =>
      fetch(`${bridge.url}/bridge/api/actions/preloadModel`, {
        method: 'POST',
        headers: { 'x-bridge-token': bridge.controlToken, 'content-type': 'application/json' },
        body: JSON.stringify(payload),
      });

    const refused = await preload({ backend: 'gpu1', model: 'huge:70b' });
    assert.equal(refused.status, 409);
    const body = (await refused.json()) as { error: string; fit: { fits: boolean; needBytes: number; freeBytes: number; gpu: number } };
    assert.equal(body.error, 'huge:70b needs about 90.0 GiB but GPU 1 (gpu1) has only 69.8 GiB free; unload a model first or force the load');
    assert.deepEqual([body.fit.fits, body.fit.gpu, body.fit.freeBytes], [false, 1, 71429 * MIB]);
    assert.equal(upstream.requests.filter((r) => r.url === '/api/generate').length, 0);

    const small = await preload({ backend: 'gpu1', model: 'small:1b' });
    assert.equal(small.status, 200);
    assert.match(((await small.json()) as { result: { message: string } }).result.message, /small:1b loaded on gpu1/);
    const forced = await preload({ backend: 'gpu1', model: 'huge:70b', force: true });
    assert.equal(forced.status, 200);
    const loads = upstream.requests
      .filter((r) => r.url === '/api/generate')
      .map((r) => JSON.parse(r.body) as { model: string; prompt: string; keep_alive: string });
    assert.deepEqual(
      loads.map((l) => [l.model, l.prompt, l.keep_alive]),
      [
        ['small:1b', '', '30m'],
        ['huge:70b', '', '30m'],
      ],
    );
  });
  it('does not weigh a load against the last figures of an nvidia-smi that is down', async () => {
    const { bridge, smi } = await bridgeOnGpu1();
    smi.set({ exit: 9 });
    await until(() => (bridge.gpuMonitor.status.live ? undefined : true), 'the failure');
    const response = await fetch(`${bridge.url}/bridge/api/actions/preloadModel`, {
      method: 'POST',
      headers: { 'x-bridge-token': bridge.controlToken, 'content-type': 'application/json' },
      body: JSON.stringify({ backend: 'gpu1', model: 'huge:70b' }),
    });
    assert.equal(response.status, 200);
    const { fit } = ((await response.json()) as { result: { fit: { fits: boolean | null; freeBytes: number | null; message: string } } }).result;
    assert.deepEqual([fit.fits, fit.freeBytes, fit.message], [null, null, 'no live VRAM figures for gpu1; not checked']);
  });
});

describe('placement of instances the bridge did not start', () => {
  it('finds the GPU of an Ollama from the processes it started in the compute-apps list, and counts only theirs', async () => {
    // A stand-in "ollama serve" in its own process, holding one model, with a runner it started.
    const port = await freePort();
    const script = path.join(tempDir('fake-ollama-'), 'serve.mjs');
    writeFileSync(
      script,
      `import http from 'node:http';
import { spawn } from 'node:child_process';
const runner = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  if (req.url === '/api/ps') res.end(JSON.stringify({ models: [{ name: 'm:1b', model: 'm:1b', size: 2000, size_vram: 1500, digest: 'd', expires_at: '2030-01-01T00:00:00Z', context_length: 4096 }] }));
  else res.end(JSON.stringify({ models: [{ name: 'm:1b', model: 'm:1b', modified_at: '2025-01-01T00:00:00Z', size: 2000, digest: 'd', details: {} }] }));
}).listen(${port}, '127.0.0.1', () => process.send({ runner: runner.pid }));
`,
    );
    const serve = fork(script, [], { stdio: 'ignore' });
    const { runner } = await new Promise<{ runner: number }>((resolve) => serve.once('message', resolve));
    cleanups.push(async () => {
      process.kill(runner, 'SIGKILL');
      serve.kill('SIGKILL');
    });
    const apps = path.join(tempDir('apps-'), 'apps.txt');
    // The server, its runner, and a process of someone else's on the same GPU.
    writeFileSync(
      apps,
      [
        `${serve.pid}, /usr/local/bin/ollama, 10, GPU-5f3e2a10-7c44-4b1e-9d2a-0c6b1e8f7a21`,
        `${runner}, /usr/local/bin/ollama, 1843, GPU-5f3e2a10-7c44-4b1e-9d2a-0c6b1e8f7a21`,
        `${process.pid}, /usr/bin/python3, 999, GPU-5f3e2a10-7c44-4b1e-9d2a-0c6b1e8f7a21`,
        '',
      ].join('\n'),
    );
    const smi = nvidiaSmiStandIn({ ...TWO_GPU_REPLIES, apps });
    const file = configFile(`gpu_monitor:\n  command: ${smi.command}\n  interval_seconds: 0.1\nrouting:\n  health:\n    interval_seconds: 0.2\n`);
    const bridge = await startTestBridge({ file, env: { OLLAMA_HOST: `127.0.0.1:${port}` } });
    cleanups.push(() => bridge.stop(100));
    const placement = await until(() => {
      const found = bridge.state.placements[0];
      return found?.gpu !== null && found !== undefined && found.models.length > 0 ? found : undefined;
    }, 'the placement join');
    assert.deepEqual(placement, {
      backend: 'local',
      gpu: { index: 1, uuid: 'GPU-5f3e2a10-7c44-4b1e-9d2a-0c6b1e8f7a21', name: 'NVIDIA H100 80GB HBM3' },
      gpuFrom: 'processes',
      models: [{ name: 'm:1b', sizeBytes: 2000, vramBytes: 1500, contextLength: 4096, expiresAt: '2030-01-01T00:00:00Z' }],
      processVramBytes: (10 + 1843) * MIB,
    });
  });
});

describe('the process listening on a port', () => {
  it('is remembered while it listens, and found again once another process listens there', async () => {
    const port = await freePort();
    const listen = async (): Promise<ChildProcess> => {
      const server = spawn(process.execPath, ['-e', `require('net').createServer().listen(${port}, '127.0.0.1', () => console.log('up'))`], {
        stdio: ['ignore', 'pipe', 'ignore'],
      });
      cleanups.push(async () => {
        server.kill('SIGKILL');
      });
      await once(server.stdout as NodeJS.ReadableStream, 'data');
      return server;
    };
    const cache = new ListenerCache(0);
    const first = await listen();
    assert.equal(cache.pidOf(port), first.pid);
    assert.equal(cache.pidOf(port), first.pid);
    first.kill('SIGKILL');
    await once(first, 'exit');
    assert.equal(cache.pidOf(port), undefined);
    const second = await listen();
    assert.equal(cache.pidOf(port), second.pid);
  });
});
