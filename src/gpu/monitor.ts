import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { EventEmitter } from 'node:events';
import { createInterface } from 'node:readline';
import type { Logger } from '../log.js';
import { COMPUTE_APP_FIELDS, GPU_FIELDS, parseComputeApps, parseSupportedFields, SampleSplitter, type GpuReading } from './nvidia-smi.js';
import { gpuPoint, type GpuPoint, type GpuController, type SystemLoad, type GpuStatus } from '../contract/index.js';
export type { GpuPoint, GpuController, SystemLoad, GpuStatus } from '../contract/index.js';

export interface GpuMonitorOptions {
  /** The nvidia-smi to run (a path, or a name on PATH). */
  command: string;
  /** Those tried in turn until one exists; default: nvidiaSmiCommands(command) for this system. */
  commands?: readonly string[];
  intervalMs: number;
  /** How many points each GPU keeps (3600 at 1 s: one hour). */
  historyPoints: number;
  /** Longest time between two per-process memory queries; one also runs when used memory changes. */
  processesEveryMs: number;
  log: Logger;
  /** Lists other vendors' GPUs when nvidia-smi is missing (systeminformation, loaded only then). */
  listControllers?: () => Promise<GpuController[]>;
  /** How often RAM and CPU are read; 0 turns it off. */
  systemEveryMs?: number;
  /** How long a one-off query (per-process memory, supported fields) may take; default 10 s. */
  queryTimeoutMs?: number;
}

const MAX_BACKOFF_MS = 60_000;
/** The most of nvidia-smi's last words that a failure message quotes: lines, and characters. */
const REASON_LINES = 3;
const REASON_CHARS = 300;

/** The last REASON_LINES things nvidia-smi said, with `note` as the newest: the same error each round is said once. */
function withNote(notes: readonly string[], note: string): string[] {
  return [...notes.filter((said) => said !== note), note].slice(-REASON_LINES);
}

/** How long a stop waits for nvidia-smi to end after SIGTERM, then after SIGKILL. */
const STOP_GRACE_MS = 1000;
const MIB = 1024 * 1024;
/** The most a one-off query may print, and the longest line of the loop: real ones are a few KiB. */
const MAX_ANSWER_CHARS = MIB;
/** Rounds without a line after which nvidia-smi counts as hung (a wedged driver blocks it, it never exits). */
const SILENT_ROUNDS = 10;

/**
 * The nvidia-smi commands to try, in order. Windows drivers put nvidia-smi.exe in System32 (on
 * PATH), older ones only in NVSMI under Program Files (never on PATH): the default name is looked
 * for there too. A configured path is run as given; macOS has no NVIDIA driver to look for.
 */
export function nvidiaSmiCommands(command: string, platform: NodeJS.Platform, env: NodeJS.ProcessEnv): string[] {
  if (platform !== 'win32' || command !== 'nvidia-smi') return [command];
  return [
    command,
    path.win32.join(env.SystemRoot ?? 'C:\\Windows', 'System32', 'nvidia-smi.exe'),
    ...(env.ProgramFiles === undefined ? [] : [path.win32.join(env.ProgramFiles, 'NVIDIA Corporation', 'NVSMI', 'nvidia-smi.exe')]),
  ];
}

/**
 * Runs a command to completion (its console window hidden, as every nvidia-smi here: on Windows the
 * desktop app has no console, so each would open one of its own) and returns its stdout; rejects with its stderr or spawn error, or
 * once it has run past `timeoutMs`: it is ended then as a stop ends the loop, within a bounded
 * time, since one stuck in the driver (or whose pipes a child of its own holds) may never close.
 */
function run(command: string, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], windowsHide: true });
    // Why it was ended, if it was: said once it is gone, rather than the exit that ending it caused.
    let ended: Error | undefined;
    const giveUp = (why: string): void => {
      if (ended !== undefined) return;
      ended = new Error(why);
      clearTimeout(timer);
      void end(child).then(() => reject(ended));
    };
    // Our own timer, cleared on every outcome: spawn's `timeout` option outlives a failed spawn.
    const timer = setTimeout(() => giveUp(`${command} gave no answer within ${timeoutMs / 1000} s`), timeoutMs);
    let out = '';
    let err = '';
    // A tool printing without end would grow these past what a string can hold: a throw that ends the bridge.
    const read = (chunk: Buffer, into: string): string => {
      if (ended !== undefined) return into;
      if (into.length + chunk.length > MAX_ANSWER_CHARS) giveUp(`${command} printed more than ${MAX_ANSWER_CHARS / MIB} MiB; ended it`);
      return into + chunk.toString();
    };
    child.stdout.on('data', (chunk: Buffer) => (out = read(chunk, out)));
    child.stderr.on('data', (chunk: Buffer) => (err = read(chunk, err)));
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      if (ended !== undefined) return;
      if (code === 0) resolve(out);
      else reject(new Error(`${command} exited ${code}: ${(err || out).trim().slice(0, 300)}`));
    });
  });
}

/**
 * Ends a child within a bounded time: SIGTERM, then SIGKILL. One blocked inside a wedged driver
 * outlives both for as long as the driver holds it; the bridge's stop (which stops the Ollama
 * instances after this) does not wait for it then. Its pipes are released either way (a child of
 * its own may hold them after it exited), so they no longer keep the event loop alive.
 */
async function end(child: ChildProcessByStdio<null, Readable, Readable>): Promise<void> {
  const exited = new Promise<boolean>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve(true);
    else child.once('exit', () => resolve(true));
  });
  const within = (ms: number): Promise<boolean> => {
    let timer: NodeJS.Timeout | undefined;
    return Promise.race([exited, new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)))]).finally(() => clearTimeout(timer));
  };
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    child.kill(signal);
    if (await within(STOP_GRACE_MS)) break;
  }
  child.stdout.destroy();
  child.stderr.destroy();
  child.unref();
}

/** Busy and total CPU time of all cores so far, in ms. */
function cpuTimes(): { busy: number; total: number } {
  let busy = 0;
  let total = 0;
  for (const { times } of os.cpus()) {
    busy += times.user + times.nice + times.sys + times.irq;
    total += times.user + times.nice + times.sys + times.irq + times.idle;
  }
  return { busy, total };
}

/**
 * Memory macOS can hand out without swapping, from `vm_stat`: free (speculative ones too) and
 * inactive pages, the file cache among them. os.freemem() there counts the free pages only, which
 * macOS keeps few of, so RAM would read as nearly all used.
 */
export function parseVmStat(text: string): number | undefined {
  const pageSize = Number(/page size of (\d+) bytes/.exec(text)?.[1]);
  const pages = (name: string): number => Number(new RegExp(`^Pages ${name}:\\s+(\\d+)\\.?\\s*$`, 'm').exec(text)?.[1]);
  const available = (pages('free') + pages('speculative') + pages('inactive')) * pageSize;
  return Number.isFinite(available) ? available : undefined;
}

/** Memory the system can hand out without swapping: Linux's MemAvailable, macOS's vm_stat, else free memory (Windows counts its standby cache in). */
export async function availableMemory(
  platform: NodeJS.Platform = process.platform,
  vmStat: () => Promise<string> = () => run('vm_stat', [], 2000),
): Promise<number> {
  if (platform === 'darwin') {
    const available = parseVmStat(await vmStat().catch(() => ''));
    if (available !== undefined) return available;
  }
  try {
    const match = /^MemAvailable:\s+(\d+) kB/m.exec(await readFile('/proc/meminfo', 'utf8'));
    if (match !== null) return Number(match[1]) * 1024;
  } catch {
    // not Linux
  }
  return os.freemem();
}

/**
 * RAM in use (leaving out reclaimable caches, which is what "used" means to a person) and the CPU
 * load since the previous reading, from the OS itself: no module to load, and no process to start
 * but macOS's vm_stat.
 */
async function systemLoad(previous: { busy: number; total: number }): Promise<{ load: SystemLoad; times: { busy: number; total: number } }> {
  const times = cpuTimes();
  const total = os.totalmem();
  const elapsed = times.total - previous.total;
  return {
    load: {
      memoryTotalBytes: total,
      memoryUsedBytes: total - (await availableMemory()),
      cpuLoadRatio: elapsed > 0 ? (times.busy - previous.busy) / elapsed : 0,
    },
    times,
  };
}

async function systeminformationControllers(): Promise<GpuController[]> {
  const si = await import('systeminformation');
  const { controllers } = await si.graphics();
  return controllers.map((c) => ({ vendor: c.vendor, model: c.model }));
}

/**
 * Watches the GPUs. With nvidia-smi it keeps ONE long-lived `--query-gpu ... -lms <interval>`
 * process: a fresh nvidia-smi costs about 26 ms of CPU per call (real driver 580 figures), which
 * at 1 Hz alone would exceed the 1%-of-a-core budget. Per-process memory comes from a one-shot
 * `--query-compute-apps` when used memory changes, and at least every `processesEveryMs`.
 * When the tool dies or falls silent it is restarted with an exponential back-off. Without nvidia-smi it lists
 * what systeminformation sees and says plainly that there are no live figures.
 */
export class GpuMonitor extends EventEmitter<{ sample: [GpuStatus] }> {
  readonly name = 'GPU monitor';
  private child: ChildProcessByStdio<null, Readable, Readable> | undefined;
  private fields: string[] = [...GPU_FIELDS];
  private readonly points = new Map<number, GpuPoint[]>();
  private current: GpuStatus = {
    source: 'none',
    live: false,
    message: 'starting',
    gpus: [],
    controllers: [],
    processes: [],
    lastSampleAt: null,
    lastError: null,
    system: null,
  };
  private systemTimer: NodeJS.Timeout | undefined;
  private backoffMs = 1000;
  private restartTimer: NodeJS.Timeout | undefined;
  private processesQuery: Promise<void> | undefined;
  private flushTimer: NodeJS.Timeout | undefined;
  private lastProcessesAt = 0;
  private lastUsed = '';
  private stopped = false;
  /** The nvidia-smi that answered the first question; the configured one until then. */
  private command: string;
  /** CPU times at the previous RAM/CPU reading (zero: the first reading covers the time since boot). */
  private cpuBefore = { busy: 0, total: 0 };

  constructor(private readonly options: GpuMonitorOptions) {
    super();
    this.command = options.command;
  }

  private get queryTimeoutMs(): number {
    return this.options.queryTimeoutMs ?? 10_000;
  }

  get status(): GpuStatus {
    return this.current;
  }

  /** The points of one GPU, oldest first; `sinceMs` limits them to the recent past. */
  history(index: number, sinceMs?: number): GpuPoint[] {
    const all = this.points.get(index) ?? [];
    return sinceMs === undefined ? [...all] : all.filter((p) => p.t >= Date.now() - sinceMs);
  }

  async start(): Promise<void> {
    void this.readSystem();
    await this.queryFields();
  }

  /**
   * Asks which fields this driver knows, then starts the loop. Only a missing nvidia-smi means
   * there is none; any other failure (NVML not ready yet, a driver being reloaded) is retried.
   */
  private async queryFields(): Promise<void> {
    if (this.stopped) return;
    let help: string | undefined;
    for (const command of this.options.commands ?? nvidiaSmiCommands(this.options.command, process.platform, process.env)) {
      try {
        help = await run(command, ['--help-query-gpu'], this.queryTimeoutMs);
        this.command = command;
        break;
      } catch (error) {
        // Not there: the next place may hold it. Any other failure is this nvidia-smi's.
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue;
        this.failed((error as Error).message, () => void this.queryFields());
        return;
      }
    }
    if (help === undefined) {
      await this.withoutNvidiaSmi();
      return;
    }
    // Ask only for fields this driver knows; an older one would refuse the whole query.
    const supported = parseSupportedFields(help);
    this.fields = GPU_FIELDS.filter((field) => supported.size === 0 || supported.has(field));
    this.current = { ...this.current, source: 'nvidia-smi', message: 'waiting for the first sample from nvidia-smi' };
    this.launch();
  }

  private async withoutNvidiaSmi(): Promise<void> {
    const reason = `${this.options.command} not found`;
    let controllers: GpuController[] = [];
    try {
      controllers = await (this.options.listControllers ?? systeminformationControllers)();
    } catch {
      // nothing more to say than "no live figures"
    }
    this.current = {
      ...this.current,
      source: controllers.length > 0 ? 'systeminformation' : 'none',
      live: false,
      controllers,
      message:
        controllers.length > 0
          ? `No live VRAM figures: ${reason}. Listing the GPUs systeminformation reports, without memory or utilization.`
          : `No NVIDIA GPU found (${reason}); models run on the CPU.`,
      lastError: reason,
    };
    this.emit('sample', this.current);
  }

  private launch(): void {
    if (this.stopped) return;
    const roundMs = Math.max(100, Math.round(this.options.intervalMs));
    const child = spawn(this.command, [`--query-gpu=${this.fields.join(',')}`, '--format=csv,noheader,nounits', `-lms`, String(roundMs)], {
      stdio: ['ignore', 'pipe', 'pipe'],
      windowsHide: true,
    });
    this.child = child;
    // What nvidia-smi printed in place of a reading since the last sample: a GPU it lost from the bus
    // ("Unable to determine the device handle for GPU...") is named there and nowhere else.
    let notes: string[] = [];
    let rounds = 0;
    const splitter = new SampleSplitter(this.fields, (readings) => {
      // A second round shows it runs again: one that dies after each round it prints is still backed off from.
      if (++rounds === 2) this.backoffMs = 1000;
      this.onSample(readings, notes);
      notes = [];
    });
    // Why it ends: nvidia-smi prints its errors ("No devices were found", "Failed to initialize
    // NVML: ...") on stdout; stderr is kept as a bounded tail, which a long life would grow otherwise.
    let said: string[] = [];
    let stderr = '';
    const silentMs = roundMs * SILENT_ROUNDS;
    let silence: NodeJS.Timeout | undefined;
    const kill = (why: string): void => {
      if (this.child !== child) return;
      clearTimeout(silence);
      // Given up on at once: one stuck in the driver may not even die of SIGKILL soon.
      this.child = undefined;
      child.kill('SIGKILL');
      this.failed(`${why}; killed it`);
    };
    // Only a reading counts: one that prints errors each round in place of every GPU reads nothing.
    const watchSilence = (): void => {
      clearTimeout(silence);
      silence = setTimeout(
        () =>
          kill(
            said.length === 0
              ? `nvidia-smi printed nothing for ${silentMs / 1000} s`
              : `nvidia-smi printed no reading for ${silentMs / 1000} s (${said.join(' ')})`,
          ),
        silentMs,
      );
      silence.unref();
    };
    watchSilence();
    // A line without end would be held whole until the silence is noticed, and past V8's largest
    // string, a throw that ends the bridge.
    let lineChars = 0;
    child.stdout.on('data', (chunk: Buffer) => {
      const lastBreak = chunk.lastIndexOf(0x0a);
      lineChars = lastBreak < 0 ? lineChars + chunk.length : chunk.length - lastBreak - 1;
      if (lineChars > MAX_ANSWER_CHARS) kill(`nvidia-smi printed more than ${MAX_ANSWER_CHARS / MIB} MiB without a line end`);
    });
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (this.child !== child) return;
      if (splitter.line(line)) {
        said = [];
        watchSilence();
      } else if (line.trim() !== '') {
        const note = line.trim().slice(0, REASON_CHARS);
        said = withNote(said, note);
        notes = withNote(notes, note);
      }
      // The last GPU of a round is only known when the next round starts: flush soon after.
      clearTimeout(this.flushTimer);
      this.flushTimer = setTimeout(() => splitter.flush(), Math.min(200, roundMs / 4));
    });
    child.stderr.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-REASON_CHARS * REASON_LINES)));
    child.once('error', (error) => this.failed(error.message));
    child.once('close', (code, signal) => {
      clearTimeout(silence);
      if (this.child !== child) return;
      // Its last round counts, but before the failure: a flush timer firing later said "live" again.
      clearTimeout(this.flushTimer);
      splitter.flush();
      const reason = (said.length > 0 ? said : stderr.trim().split(/\r?\n/).slice(-REASON_LINES)).join(' ').slice(-REASON_CHARS);
      this.failed(`nvidia-smi exited (${code ?? signal})${reason === '' ? '' : `: ${reason}`}`);
    });
  }

  /** Says why nvidia-smi failed and runs `retry` (by default, the loop again) after the back-off. */
  private failed(message: string, retry: () => void = () => this.launch()): void {
    this.child = undefined;
    if (this.stopped) return;
    // Which processes hold GPU memory is no longer known: placing models by the last list would be a guess.
    this.current = {
      ...this.current,
      live: false,
      processes: [],
      lastError: message,
      message: `nvidia-smi failed; retrying in ${Math.round(this.backoffMs / 1000)} s`,
    };
    this.options.log.warn({ error: message, retryInMs: this.backoffMs }, 'GPU monitor: nvidia-smi failed');
    this.emit('sample', this.current);
    clearTimeout(this.restartTimer);
    this.restartTimer = setTimeout(retry, this.backoffMs);
    this.restartTimer.unref();
    this.backoffMs = Math.min(MAX_BACKOFF_MS, this.backoffMs * 2);
  }

  /** A round of readings; `notes`, what nvidia-smi printed instead of the GPUs it could not read, is said alongside. */
  private onSample(readings: GpuReading[], notes: readonly string[]): void {
    const t = Date.now();
    for (const reading of readings) {
      let points = this.points.get(reading.index);
      if (points === undefined) this.points.set(reading.index, (points = []));
      points.push(gpuPoint(reading, t));
      if (points.length > this.options.historyPoints) points.splice(0, points.length - this.options.historyPoints);
    }
    this.current = {
      ...this.current,
      source: 'nvidia-smi',
      live: true,
      message: `${readings.length} GPU${readings.length === 1 ? '' : 's'} (nvidia-smi)${notes.length === 0 ? '' : `; ${notes.join(' ')}`}`,
      gpus: readings,
      lastSampleAt: new Date(t).toISOString(),
      lastError: notes.length === 0 ? null : notes.join(' '),
    };
    const used = readings.map((r) => r.memoryUsedBytes).join(',');
    if (used !== this.lastUsed || t - this.lastProcessesAt >= this.options.processesEveryMs) {
      this.lastUsed = used;
      this.refreshProcesses();
    }
    this.emit('sample', this.current);
  }

  /** RAM and CPU on a chained timer: the next read is scheduled when this one is done. */
  private async readSystem(): Promise<void> {
    const every = this.options.systemEveryMs ?? 5000;
    if (every <= 0 || this.stopped) return;
    try {
      const { load, times } = await systemLoad(this.cpuBefore);
      this.cpuBefore = times;
      this.current = { ...this.current, system: load };
    } catch (error) {
      this.options.log.debug({ error: (error as Error).message }, 'GPU monitor: RAM/CPU read failed');
    }
    if (this.stopped) return;
    this.systemTimer = setTimeout(() => void this.readSystem(), every);
    this.systemTimer.unref();
  }

  /** One per-process memory query; never two at once. */
  private refreshProcesses(): void {
    if (this.processesQuery !== undefined) return;
    this.lastProcessesAt = Date.now();
    this.processesQuery = run(this.command, [`--query-compute-apps=${COMPUTE_APP_FIELDS.join(',')}`, '--format=csv,noheader,nounits'], this.queryTimeoutMs)
      .then(
        (text) => {
          // One that ends after nvidia-smi failed is no news of the GPUs now.
          if (this.current.live) this.current = { ...this.current, processes: parseComputeApps(text) };
        },
        (error: Error) => {
          this.options.log.debug({ error: error.message }, 'GPU monitor: compute-apps query failed');
          this.current = { ...this.current, processes: [] };
        },
      )
      .finally(() => {
        this.processesQuery = undefined;
      });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.restartTimer);
    clearTimeout(this.flushTimer);
    clearTimeout(this.systemTimer);
    const child = this.child;
    this.child = undefined;
    if (child !== undefined) await end(child);
    // A per-process query is short, or ended within a bounded time: let it end rather than leave a child behind.
    await this.processesQuery;
  }
}
