import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, closeSync, constants, fstatSync, openSync, readFileSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { makeFolder } from '../files.js';
import { startTimeOf } from '../gpu/procfs.js';
import { keepLogPrivate, LOG_FILE_MODE, type Logger } from '../log.js';
import { BridgeError, type InstanceState, type InstanceSnapshot } from '../contract/index.js';
export type { InstanceState, InstanceSnapshot } from '../contract/index.js';

export interface ManagedSpec {
  /** The backend this instance serves. */
  name: string;
  /** Loopback port it listens on. */
  port: number;
  /** CUDA_VISIBLE_DEVICES: a GPU UUID (preferred, stable across reboots) or index. */
  device: string | undefined;
  /** OLLAMA_NUM_PARALLEL: the slots per model the scheduler fills on this backend. */
  numParallel: number;
}

export interface ManagerOptions {
  binary: string | undefined;
  /** Shared model store; OLLAMA_NOPRUNE=1 is set then (and with two instances or more), so one instance never prunes another's blobs. */
  modelsDir: string | undefined;
  /** OLLAMA_KEEP_ALIVE, OLLAMA_MAX_LOADED_MODELS, OLLAMA_MAX_QUEUE; undefined: as the bridge's environment has them. */
  keepAlive: string | undefined;
  maxLoadedModels: number | undefined;
  maxQueue: number | undefined;
  logDir: string;
  logMaxBytes: number;
  restartLimit: number;
  restartWindowMs: number;
  stopGraceMs: number;
  /** How long a started `ollama serve` may take to listen; default 30 s. */
  startTimeoutMs?: number;
  log: Logger;
  /** Whether something already answers on the port (an instance the bridge did not start). */
  isListening: (port: number) => Promise<boolean>;
  /** Finds the ollama binary; default: findOllamaBinary(binary). */
  findBinary?: () => string | undefined;
  /** The system whose way of ending a process tree is used; default: this one's. */
  platform?: NodeJS.Platform;
  /** Runs taskkill on Windows; default: spawns it hidden and ignores how it ends. */
  runTaskkill?: (file: string, args: string[]) => void;
}

export class ManagerError extends BridgeError {
  constructor(status: 404 | 409 | 500, message: string) {
    super(status, message);
    this.name = 'ManagerError';
  }
}

export function isExecutable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Where Ollama's installers put it: its Windows installer (per user, or where it was told), else Homebrew's, Linux's and the macOS app's. */
export function installPlaces(platform: NodeJS.Platform, env: NodeJS.ProcessEnv): string[] {
  if (platform !== 'win32')
    return ['/usr/local/bin/ollama', '/usr/bin/ollama', '/opt/homebrew/bin/ollama', '/Applications/Ollama.app/Contents/Resources/ollama'];
  return [
    env.LOCALAPPDATA === undefined ? undefined : path.win32.join(env.LOCALAPPDATA, 'Programs', 'Ollama', 'ollama.exe'),
    env.ProgramFiles === undefined ? undefined : path.win32.join(env.ProgramFiles, 'Ollama', 'ollama.exe'),
  ].filter((file): file is string => file !== undefined);
}

/**
 * The files tried, in order: the configured path, OLLAMA_BIN, `ollama` in each PATH folder, then
 * `places`. On Windows the file is ollama.exe, and a path given without an extension is run as its
 * .exe (as CreateProcess does); PATH keeps the case it was set in ("Path"), which a copy of
 * process.env no longer looks up blind to case, and its folders may be quoted.
 */
export function ollamaCandidates(configured: string | undefined, env: NodeJS.ProcessEnv, platform: NodeJS.Platform, places: readonly string[]): string[] {
  const windows = platform === 'win32';
  const paths = windows ? path.win32 : path.posix;
  const pathKey = windows ? (Object.keys(env).find((key) => key.toUpperCase() === 'PATH') ?? 'PATH') : 'PATH';
  const given = [configured, env.OLLAMA_BIN].filter((file): file is string => file !== undefined && file !== '');
  return [
    ...given.flatMap((file) => (windows && paths.extname(file) === '' ? [file, `${file}.exe`] : [file])),
    ...(env[pathKey] ?? '')
      .split(paths.delimiter)
      .map((dir) => (windows ? dir.replace(/^"(.*)"$/, '$1') : dir))
      .filter(Boolean)
      .map((dir) => paths.join(dir, windows ? 'ollama.exe' : 'ollama')),
    ...places,
  ];
}

/** The configured path, OLLAMA_BIN, then `ollama` on PATH, then the usual install places. */
export function findOllamaBinary(
  configured: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
  platform: NodeJS.Platform = process.platform,
  places: readonly string[] = installPlaces(platform, env),
): string | undefined {
  return ollamaCandidates(configured, env, platform, places).find((file) => isExecutable(file));
}

/**
 * An append-only log file that is rotated to `<file>.1` once it passes `maxBytes`. Ollama's output
 * names the models asked for and what failed, so both files are this user's only, as the bridge's
 * own log is.
 */
class RotatingLog {
  private fd: number | undefined;
  private size = 0;

  constructor(
    private readonly file: string,
    private readonly maxBytes: number,
  ) {
    keepLogPrivate(`${file}.1`);
    this.open();
  }

  private open(): void {
    makeFolder(path.dirname(this.file));
    this.fd = openSync(this.file, 'a', LOG_FILE_MODE);
    keepLogPrivate(this.file);
    this.size = fstatSync(this.fd).size;
  }

  /**
   * Writes in the handlers of Ollama's output, where a throw would end the bridge: a log that
   * cannot be written (a full disk, its folder removed) drops the output, and the next write opens
   * the file again.
   */
  write(chunk: Buffer): void {
    try {
      // Closed by a stop or a failed write: opened again, then rotated like any other write would be.
      if (this.fd === undefined) this.open();
      if (this.size + chunk.length > this.maxBytes && this.size > 0) {
        this.close();
        renameSync(this.file, `${this.file}.1`);
        this.open();
      }
      writeSync(this.fd as number, chunk);
      this.size += chunk.length;
    } catch {
      this.close();
    }
  }

  close(): void {
    if (this.fd === undefined) return;
    try {
      closeSync(this.fd);
    } catch {
      // Closed already, or its file is gone: nothing left to release.
    }
    this.fd = undefined;
  }
}

/**
 * How `ollama serve` is spawned. Elsewhere detached, so serve leads a process group its runners
 * share, which one signal ends. Windows has no process groups, and a detached child there has no
 * console, so every console program serve starts (its runners) would open a console window of its
 * own; attached and hidden, serve and its runners share one console nobody sees.
 */
export function serveSpawnOptions(platform: NodeJS.Platform): { detached: boolean; windowsHide: boolean } {
  return { detached: platform !== 'win32', windowsHide: true };
}

/**
 * The taskkill that ends a process and every process it started (/T), forcefully (/F): Windows has
 * no signals (Node's kill is TerminateProcess of that one process, which leaves the runners), and
 * a console program without a window cannot be asked to close. Named by its full path, as PATH may not hold it.
 */
export function taskkillCommand(pid: number, env: NodeJS.ProcessEnv): { file: string; args: string[] } {
  return { file: path.win32.join(env.SystemRoot ?? 'C:\\Windows', 'System32', 'taskkill.exe'), args: ['/PID', String(pid), '/T', '/F'] };
}

/** Whether anything accepts connections on a loopback port, whatever it speaks. */
function portTaken(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1', timeout: 1000 });
    const answer = (taken: boolean): void => {
      socket.destroy();
      resolve(taken);
    };
    socket.once('connect', () => answer(true));
    socket.once('error', () => answer(false));
    socket.once('timeout', () => answer(false));
  });
}

function runTaskkill(file: string, args: string[]): void {
  const child = spawn(file, args, { stdio: 'ignore', windowsHide: true });
  // Not found (the tree is gone already) or refused: nothing more to end.
  child.once('error', () => undefined);
}

/** A running `ollama serve` and the bridge that started it, each by pid and start time. */
interface RecordedServe {
  pid: number;
  startTime: string;
  bridge: { pid: number; startTime: string };
}

/** The record as the bridge writes it, or undefined for anything else (damaged, or of another version). */
function recordedServe(value: unknown): RecordedServe | undefined {
  const isProcess = (p: unknown): p is { pid: number; startTime: string } =>
    typeof p === 'object' && p !== null && Number.isInteger((p as { pid: unknown }).pid) && typeof (p as { startTime: unknown }).startTime === 'string';
  return isProcess(value) && isProcess((value as { bridge?: unknown }).bridge) ? (value as RecordedServe) : undefined;
}

/** Removes a file whatever stands in the way: called where a throw would end the bridge. */
function forget(file: string): void {
  try {
    rmSync(file, { force: true });
  } catch {
    // Left behind: its pid and start time will name no running process.
  }
}

interface Instance {
  spec: ManagedSpec;
  state: InstanceState;
  child: ChildProcess | undefined;
  exited: Promise<void>;
  wanted: boolean;
  crashes: number[];
  restarts: number;
  lastExit: string | null;
  message: string | null;
  retryTimer: NodeJS.Timeout | undefined;
  /** When the automatic restart after the last crash is due (ms); read while the state is `crashed`. */
  restartAt: number;
  log: RotatingLog | undefined;
  /** The start, stop or restart under way: the next one waits for it, so two never interleave. */
  turn: Promise<unknown>;
}

/**
 * Starts and stops one `ollama serve` per GPU: CUDA_VISIBLE_DEVICES pins it, OLLAMA_HOST gives it
 * its own loopback port. An instance already listening on that port is adopted, never started twice.
 * A crash is restarted with an exponential back-off, up to `restartLimit` times per window; a stop
 * sends SIGTERM to the whole process group (serve and its runners) and SIGKILL after a grace period,
 * or on Windows ends the process tree with taskkill.
 */
export class OllamaManager {
  private readonly instances = new Map<string, Instance>();

  constructor(
    specs: readonly ManagedSpec[],
    private readonly options: ManagerOptions,
  ) {
    for (const spec of specs) {
      this.instances.set(spec.name, {
        spec,
        state: 'stopped',
        child: undefined,
        exited: Promise.resolve(),
        wanted: false,
        crashes: [],
        restarts: 0,
        lastExit: null,
        message: null,
        retryTimer: undefined,
        restartAt: 0,
        log: undefined,
        turn: Promise.resolve(),
      });
    }
  }

  private get platform(): NodeJS.Platform {
    return this.options.platform ?? process.platform;
  }

  /** Signals `ollama serve` and its runners: its process group, or on Windows its process tree. */
  private signalTree(child: ChildProcess, signal: NodeJS.Signals): void {
    if (child.pid === undefined) return;
    if (this.platform === 'win32') {
      const { file, args } = taskkillCommand(child.pid, process.env);
      (this.options.runTaskkill ?? runTaskkill)(file, args);
      return;
    }
    try {
      process.kill(-child.pid, signal);
    } catch {
      // already gone
    }
  }

  private get(name: string): Instance {
    const instance = this.instances.get(name);
    if (instance === undefined) throw new ManagerError(404, `no managed Ollama instance for backend '${name}' (set manage: true on the backend)`);
    return instance;
  }

  /** The device a managed instance was given, for placing its models on a GPU. */
  deviceOf(name: string): string | undefined {
    return this.instances.get(name)?.spec.device;
  }

  snapshot(): InstanceSnapshot[] {
    return [...this.instances.values()].map((i) => ({
      name: i.spec.name,
      state: i.state,
      pid: i.child?.pid ?? null,
      port: i.spec.port,
      device: i.spec.device ?? null,
      restarts: i.restarts,
      lastExit: i.lastExit,
      logFile: this.logFile(i.spec.name),
      message: i.message,
      restartAt: i.state === 'crashed' ? new Date(i.restartAt).toISOString() : null,
    }));
  }

  private logFile(name: string): string {
    return path.join(this.options.logDir, `ollama-${name}.log`);
  }

  /**
   * Runs a start, stop or restart once the previous one of that instance has ended: two starts at
   * once (a double click) would otherwise both spawn, and the one left without the port would take
   * the other's place, leaving it running untracked.
   */
  private async inTurn(name: string, operation: (instance: Instance) => Promise<InstanceSnapshot>): Promise<InstanceSnapshot> {
    const instance = this.get(name);
    const done = instance.turn.then(() => operation(instance));
    instance.turn = done.catch(() => undefined);
    return done;
  }

  start(name: string): Promise<InstanceSnapshot> {
    return this.inTurn(name, (instance) => this.startNow(instance));
  }

  private async startNow(instance: Instance): Promise<InstanceSnapshot> {
    const { name } = instance.spec;
    if (instance.state === 'running' || instance.state === 'starting') return this.describe(name);
    await this.endLeftOver(instance);
    // An adopted instance is looked at again: once it has gone, the bridge starts its own.
    if (await this.options.isListening(instance.spec.port)) {
      if (instance.state === 'adopted') return this.describe(name);
      instance.state = 'adopted';
      instance.message = `an Ollama already listens on port ${instance.spec.port}; using it as it is`;
      this.options.log.info({ backend: name, port: instance.spec.port }, 'adopted a running Ollama');
      return this.describe(name);
    }
    const binary = (this.options.findBinary ?? (() => findOllamaBinary(this.options.binary)))();
    if (binary === undefined) {
      instance.state = 'failed';
      instance.message = 'no ollama binary found: install Ollama from https://ollama.com/download, or set ollama.binary in config.yaml (or OLLAMA_BIN)';
      throw new ManagerError(500, instance.message);
    }
    instance.wanted = true;
    instance.crashes = [];
    // This start replaces an automatic restart still waiting (after a crash): both would spawn, and
    // the second, finding the port taken, would take the first one's place, leaving it untracked.
    clearTimeout(instance.retryTimer);
    this.spawn(instance, binary);
    await this.waitReady(instance);
    return this.describe(name);
  }

  /** Where the serve of `name` is written down while it runs, so the next run of the bridge knows it as its own. */
  private pidFile(name: string): string {
    return path.join(this.options.logDir, `ollama-${name}.pid`);
  }

  /**
   * Ends an `ollama serve` that a previous run of the bridge started and left running (that run was
   * killed, or crashed): serve leads its own process group, so it outlives the bridge, still on the
   * port. Adopted, it could be neither stopped nor restarted, and its output, a pipe nobody reads
   * now, ends it at its next log line (a write to a closed pipe kills it): the bridge starts its own
   * instead. Known by its pid and start time (Linux), so a pid given to another process since is
   * left alone.
   */
  private async endLeftOver(instance: Instance): Promise<void> {
    const file = this.pidFile(instance.spec.name);
    let recorded: RecordedServe | undefined;
    try {
      recorded = recordedServe(JSON.parse(readFileSync(file, 'utf8')));
    } catch {
      // No record, or not JSON: nothing to end.
    }
    if (recorded === undefined) return;
    const runs = (p: { pid: number; startTime: string }): boolean => startTimeOf(p.pid) === p.startTime;
    // The bridge that started it still runs (another bridge on the same data folder): it is that one's.
    if (instance.child !== undefined || runs(recorded.bridge)) return;
    forget(file);
    const alive = (): boolean => runs(recorded);
    if (!alive()) return;
    this.options.log.warn({ backend: instance.spec.name, pid: recorded.pid }, 'ending the ollama serve a previous run of the bridge left running');
    for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
      try {
        process.kill(-recorded.pid, signal);
      } catch {
        return;
      }
      const deadline = Date.now() + this.options.stopGraceMs;
      while (alive() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
      if (!alive()) return;
    }
  }

  private spawn(instance: Instance, binary: string): void {
    const { spec } = instance;
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      OLLAMA_HOST: `127.0.0.1:${spec.port}`,
      OLLAMA_NUM_PARALLEL: String(spec.numParallel),
    };
    const { keepAlive, maxLoadedModels, maxQueue } = this.options;
    if (keepAlive !== undefined) env.OLLAMA_KEEP_ALIVE = keepAlive;
    if (maxLoadedModels !== undefined) env.OLLAMA_MAX_LOADED_MODELS = String(maxLoadedModels);
    if (maxQueue !== undefined) env.OLLAMA_MAX_QUEUE = String(maxQueue);
    if (spec.device !== undefined) {
      env.CUDA_VISIBLE_DEVICES = spec.device;
      // An index means nvidia-smi's, which counts by PCI bus; CUDA's default counts fastest first.
      env.CUDA_DEVICE_ORDER = 'PCI_BUS_ID';
    }
    if (this.options.modelsDir !== undefined) env.OLLAMA_MODELS = this.options.modelsDir;
    // A store shared by two instances (models_dir, or the same default one): a serve that prunes at
    // start would delete what the other is pulling, its partial files and its blobs not yet listed.
    if (this.options.modelsDir !== undefined || this.instances.size > 1) env.OLLAMA_NOPRUNE = '1';
    instance.log ??= new RotatingLog(this.logFile(spec.name), this.options.logMaxBytes);
    const log = instance.log;
    const child = spawn(binary, ['serve'], { env, ...serveSpawnOptions(this.platform), stdio: ['ignore', 'pipe', 'pipe'] });
    instance.child = child;
    instance.state = 'starting';
    instance.message = null;
    const startTime = child.pid === undefined ? undefined : startTimeOf(child.pid);
    const bridgeStartTime = startTimeOf(process.pid);
    if (child.pid !== undefined && startTime !== undefined && bridgeStartTime !== undefined) {
      const recorded: RecordedServe = { pid: child.pid, startTime, bridge: { pid: process.pid, startTime: bridgeStartTime } };
      try {
        writeFileSync(this.pidFile(spec.name), JSON.stringify(recorded));
      } catch {
        // Only a left-over serve goes unnoticed then.
      }
    }
    child.stdout?.on('data', (chunk: Buffer) => log.write(chunk));
    child.stderr?.on('data', (chunk: Buffer) => log.write(chunk));
    // Runners share serve's stdout (Ollama hands them its own), so once serve is gone its output
    // closes, and its exit counts, only when they are gone too: without serve they only hold VRAM.
    // Not on Windows: taskkill finds no tree under a process already gone, and its pid, free once
    // it exited, may name another process by then. Runners may so outlive a crashed serve there and
    // hold its output open: its exit counts then, and its output is read on.
    if (this.platform !== 'win32') child.once('exit', () => this.signalTree(child, 'SIGKILL'));
    // 'close' too, as a spawn that failed emits no 'exit'; whichever comes first counts.
    const ends: Array<'exit' | 'close'> = this.platform === 'win32' ? ['exit', 'close'] : ['close'];
    let ended = false;
    instance.exited = new Promise((resolve) => {
      child.once('error', (error) => {
        instance.message = error.message;
      });
      const onEnd = (code: number | null, signal: NodeJS.Signals | null): void => {
        if (ended) return;
        ended = true;
        if (startTime !== undefined) forget(this.pidFile(spec.name));
        instance.lastExit = `${new Date().toISOString()} ${signal ?? `exit ${code}`}`;
        if (instance.child === child) instance.child = undefined;
        resolve();
        this.onExit(instance, binary);
      };
      for (const event of ends) child.once(event, onEnd);
    });
    this.options.log.info({ backend: spec.name, pid: child.pid, port: spec.port, device: spec.device }, 'started ollama serve');
  }

  /**
   * Waits for the serve just started to listen. One that lives but never does (stuck at start) is
   * killed, so it counts as a crash like any other, rather than stay "starting" for good. One that
   * ended because another program holds its port is not restarted into it again, and that is said.
   */
  private async waitReady(instance: Instance): Promise<void> {
    const child = instance.child;
    const timeoutMs = this.options.startTimeoutMs ?? 30_000;
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (instance.child === undefined) {
        const { name, port } = instance.spec;
        if (instance.wanted && (await portTaken(port))) {
          // No restart: it would find the same port taken.
          instance.wanted = false;
          clearTimeout(instance.retryTimer);
          instance.state = 'failed';
          instance.message = `port ${port} is in use by another program: stop it, or give backend ${name} another port`;
          throw new ManagerError(500, instance.message);
        }
        throw new ManagerError(500, `ollama serve for ${name} exited at start (${instance.lastExit}); see ${this.logFile(name)}`);
      }
      if (!instance.wanted) throw new ManagerError(409, `ollama serve for ${instance.spec.name} was stopped before it listened`);
      if (await this.options.isListening(instance.spec.port)) {
        instance.state = 'running';
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const message = `ollama serve for ${instance.spec.name} did not answer within ${timeoutMs / 1000} s; killed it (see ${this.logFile(instance.spec.name)})`;
    if (instance.child === child && child !== undefined) {
      this.options.log.warn({ backend: instance.spec.name, pid: child.pid }, message);
      this.signalTree(child, 'SIGKILL');
    }
    throw new ManagerError(500, message);
  }

  private onExit(instance: Instance, binary: string): void {
    if (!instance.wanted) {
      instance.state = 'stopped';
      return;
    }
    const now = Date.now();
    instance.crashes = [...instance.crashes.filter((t) => now - t < this.options.restartWindowMs), now];
    if (instance.crashes.length > this.options.restartLimit) {
      instance.state = 'failed';
      instance.message = `crashed ${instance.crashes.length} times within ${this.options.restartWindowMs / 1000} s; not restarting (see ${this.logFile(instance.spec.name)})`;
      this.options.log.error({ backend: instance.spec.name }, instance.message);
      return;
    }
    const delay = Math.min(30_000, 500 * 2 ** (instance.crashes.length - 1));
    instance.state = 'crashed';
    instance.message = `crashed (${instance.lastExit})`;
    instance.restartAt = now + delay;
    this.options.log.warn({ backend: instance.spec.name, delayMs: delay }, 'ollama serve crashed; restarting');
    instance.retryTimer = setTimeout(() => {
      if (!instance.wanted) return;
      instance.restarts += 1;
      this.spawn(instance, binary);
      void this.waitReady(instance).catch((error: Error) => {
        instance.message = error.message;
      });
    }, delay);
    instance.retryTimer.unref();
  }

  /**
   * A stop waits for the start under way, but not for its serve to listen (up to the start timeout,
   * when it is stuck): that start gives up at once, and the stop ends what it started.
   */
  stop(name: string): Promise<InstanceSnapshot> {
    const instance = this.get(name);
    if (instance.state === 'starting') instance.wanted = false;
    return this.inTurn(name, (i) => this.stopNow(i));
  }

  private async stopNow(instance: Instance): Promise<InstanceSnapshot> {
    const { name } = instance.spec;
    if (instance.state === 'adopted')
      throw new ManagerError(409, `the Ollama on port ${instance.spec.port} was not started by the bridge; stop it where it was started`);
    instance.wanted = false;
    clearTimeout(instance.retryTimer);
    const child = instance.child;
    if (child?.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      instance.state = 'stopping';
      this.signalTree(child, 'SIGTERM');
      const timer = setTimeout(() => {
        this.signalTree(child, 'SIGKILL');
        // taskkill may not have run (missing, refused): serve at least is ended, so the stop ends.
        if (this.platform === 'win32') child.kill('SIGKILL');
      }, this.options.stopGraceMs);
      await instance.exited;
      clearTimeout(timer);
    }
    instance.state = 'stopped';
    return this.describe(name);
  }

  /**
   * Called when the backend of `name` does not answer: an adopted instance that has gone is nobody's
   * now. It is shown as stopped, so the tray and the dashboard offer Start (which runs the bridge's
   * own, or adopts again one that answers by then) instead of a dead "started outside the bridge".
   */
  unreachable(name: string): void {
    const instance = this.instances.get(name);
    if (instance?.state !== 'adopted') return;
    instance.state = 'stopped';
    instance.message = `the Ollama started outside the bridge on port ${instance.spec.port} has gone`;
    this.options.log.info({ backend: name, port: instance.spec.port }, 'the adopted Ollama has gone');
  }

  restart(name: string): Promise<InstanceSnapshot> {
    return this.inTurn(name, async (instance) => {
      if (instance.state !== 'adopted') await this.stopNow(instance);
      // An adopted instance that has gone is replaced by the bridge's own; one still there was not restarted.
      const started = await this.startNow(instance);
      if (started.state === 'adopted')
        throw new ManagerError(409, `the Ollama on port ${instance.spec.port} was not started by the bridge; restart it where it was started`);
      return started;
    });
  }

  /** Starts every managed instance; one that cannot start is logged and left to the user (tray, dashboard). */
  async startAll(): Promise<void> {
    for (const name of this.instances.keys()) {
      await this.start(name).catch((error: Error) => this.options.log.error({ backend: name, error: error.message }, 'could not start ollama serve'));
    }
  }

  /** Stops every instance the bridge started (adopted ones are left running). */
  async stopAll(): Promise<void> {
    await Promise.all([...this.instances.values()].filter((i) => i.state !== 'adopted').map((i) => this.stop(i.spec.name)));
    for (const instance of this.instances.values()) instance.log?.close();
  }

  private describe(name: string): InstanceSnapshot {
    return this.snapshot().find((s) => s.name === name) as InstanceSnapshot;
  }
}
