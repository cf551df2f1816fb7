import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import express from 'express';
import type { GenerationOutcome, GenerationPolicy } from './api/generation.js';
import { Authenticator } from './auth/authenticate.js';
import type { Identity } from './auth/identity.js';
import { Limiter } from './auth/limits.js';
import { isOllamaCloudModel, LOCAL_ONLY_HEADER, localOnlyReason } from './auth/policy.js';
import { EnergyMeter } from './history/accounting.js';
import { usageCsv, usageReport } from './history/usage.js';
import type { Config } from './config/schema.js';
import { createActions, type Actions } from './control/actions.js';
import { StateFeed } from './control/feed.js';
import { controlRoutes } from './control/routes.js';
import { GpuMonitor, type GpuStatus } from './gpu/monitor.js';
import { placeModels, type Placement } from './gpu/placement.js';
import { ListenerCache } from './gpu/procfs.js';
import { historyRecord } from './history/record.js';
import { HistoryStore } from './history/store.js';
import { createApp, type RequestCounters } from './http/app.js';
import { observabilityRoutes } from './http/observability.js';
import { defaultUiDir, uiRoutes } from './http/ui.js';
import { createLogger, type Logger } from './log.js';
import { BridgeMetrics } from './metrics/metrics.js';
import { OllamaManager, type InstanceSnapshot } from './ollama/manager.js';
import { checkFit } from './ollama/models.js';
import { Router, settingsFrom, type RoutingSettings } from './routing/router.js';
import { Backend, timeoutsFrom, type BackendSnapshot } from './upstream/backend.js';
import { ModelCatalog } from './upstream/catalog.js';
import { AnthropicProvider } from './upstream/cloud/anthropic-provider.js';
import { OpenAiProvider } from './upstream/cloud/openai-provider.js';
import type { CloudProvider } from './upstream/cloud/provider.js';
import { BackendHealth } from './upstream/health.js';
import { HealthMonitor } from './upstream/health-monitor.js';
import type { BridgeState } from './control/api-types.js';
export type { BridgeState } from './control/api-types.js';


export interface BridgeHandle {
  /** Base URL clients point at, e.g. http://127.0.0.1:5000 */
  readonly url: string;
  readonly config: Config;
  /** A fresh snapshot of the live state on every read. */
  readonly state: BridgeState;
  /** The control actions, the same ones the HTTP control API runs. */
  readonly actions: Actions;
  /** The token the control API asks for in `x-bridge-token`. */
  readonly controlToken: string;
  readonly history: HistoryStore;
  readonly metrics: BridgeMetrics;
  readonly gpuMonitor: GpuMonitor;
  readonly ollama: OllamaManager;
  /** The Prometheus endpoint on its own port, when monitoring.prometheus.port is set. */
  readonly metricsUrl: string | null;
  /** Called with the new state whenever it changes (GPU samples, health, actions, requests). */
  onStateChange(listener: (state: BridgeState) => void): () => void;
  /** Stops accepting requests, lets running ones end (up to the grace period), then closes. */
  stop(graceMs?: number): Promise<void>;
}

export interface BridgeOptions {
  logger?: Logger;
  /** The built dashboard; default: dist/ui. */
  uiDir?: string;
}

/** Where history and the control token live when the config names no data_dir. */
export function defaultDataDir(): string {
  const base = process.env.XDG_DATA_HOME ?? path.join(os.homedir(), '.local', 'share');
  return path.join(base, 'copilot-bridge');
}

function listen(server: Server, host: string, port: number): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException): void => {
      const why = error.code === 'EADDRINUSE' ? `port ${port} on ${host} is already in use` : error.message;
      reject(new Error(`cannot listen on ${host}:${port}: ${why}`, { cause: error }));
    };
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve(server.address() as AddressInfo);
    });
  });
}

function urlOf(address: AddressInfo): string {
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return `http://${host}:${address.port}`;
}

function closeServer(server: Server, graceMs: number): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeIdleConnections();
  const timer = setTimeout(() => server.closeAllConnections(), graceMs);
  return closed.finally(() => clearTimeout(timer));
}

/** Starts one bridge: the one way to run it, headless or inside the desktop app. All state lives in the handle. */
export async function startBridge(config: Config, options: BridgeOptions = {}): Promise<BridgeHandle> {
  const log = options.logger ?? createLogger(config);
  const timeouts = timeoutsFrom(config);
  const breaker = config.routing.circuit_breaker;
  const backends = config.backends.map(
    (backend) => new Backend(backend, timeouts, new BackendHealth({ failureThreshold: breaker.failure_threshold, cooldownMs: breaker.cooldown_seconds * 1000 })),
  );
  const counters: RequestCounters = { total: 0, inFlight: 0 };
  const started = new Date();
  const catalog = new ModelCatalog(backends);
  const settings = settingsFrom(config);
  const router = new Router(config, backends, catalog, settings);
  const providers: CloudProvider[] = config.fallback.providers.map((p) => (p.type === 'openai' ? new OpenAiProvider(p) : new AnthropicProvider(p)));
  const energy = new EnergyMeter();
  // Filled once the GPU monitor exists; a backend's GPU is its configured index or UUID.
  let gpuIndexOf: (gpu: number | string) => number | undefined = () => undefined;
  const policy: GenerationPolicy = {
    maxRetries: config.routing.thresholds.max_retries,
    heartbeatMs: config.routing.thresholds.heartbeat_seconds * 1000,
    fallback: () => (settings.fallbackEnabled ? providers : []),
    localOnly: (req, identity, model) => localOnlyReason(identity, req.headers, model, config.fallback.never_models),
    isCloudModel: (model) => isOllamaCloudModel(model, catalog.isRemote(model)),
    meter: (source) => {
      const gpu = source.kind === 'local' ? backends.find((b) => b.name === source.name)?.gpu : undefined;
      const index = gpu === undefined || gpu === null ? undefined : gpuIndexOf(gpu);
      return index === undefined ? undefined : energy.start(index);
    },
  };

  const dataDir = config.data_dir ?? defaultDataDir();
  mkdirSync(dataDir, { recursive: true });
  const history = await HistoryStore.open({
    dir: dataDir,
    maxRecords: config.history.max_records,
    maxFileBytes: config.history.max_file_mb * 1024 * 1024,
    keepFiles: config.history.keep_files,
    onCorruptLine: (file, line) => log.warn({ file, line }, 'skipped an unreadable history line'),
    onWriteError: (error) => log.error({ error: error.message }, 'could not write the history file'),
  });
  const gpuMonitor = new GpuMonitor({
    command: config.gpu_monitor.command,
    intervalMs: config.gpu_monitor.interval_seconds * 1000,
    historyPoints: Math.round((config.gpu_monitor.history_minutes * 60) / config.gpu_monitor.interval_seconds),
    processesEveryMs: 10_000,
    log,
  });
  gpuIndexOf = (gpu) => (typeof gpu === 'number' ? gpu : gpuMonitor.status.gpus.find((g) => g.uuid === gpu || String(g.index) === gpu)?.index);
  gpuMonitor.on('sample', (status) => energy.sample(status.gpus));
  const metrics = new BridgeMetrics(backends, () => gpuMonitor.status.gpus, config);
  const manager = new OllamaManager(
    config.backends
      .filter((b) => b.manage)
      .map((b) => ({ name: b.name, port: Number(new URL(b.url).port || 11434), device: b.gpu === undefined ? undefined : String(b.gpu) })),
    {
      binary: config.ollama.binary,
      modelsDir: config.ollama.models_dir,
      keepAlive: config.ollama.keep_alive,
      numParallel: config.ollama.num_parallel,
      maxLoadedModels: config.ollama.max_loaded_models,
      maxQueue: config.ollama.max_queue,
      logDir: path.join(dataDir, 'logs'),
      logMaxBytes: config.ollama.log_max_mb * 1024 * 1024,
      restartLimit: config.ollama.restart_limit,
      restartWindowMs: config.ollama.restart_window_seconds * 1000,
      stopGraceMs: config.ollama.stop_grace_seconds * 1000,
      log,
      isListening: async (port) => {
        try {
          return (await fetch(`http://127.0.0.1:${port}/api/version`, { signal: AbortSignal.timeout(1000) })).ok;
        } catch {
          return false;
        }
      },
    },
  );

  // Placement joins /api/ps with the GPUs; recomputed when either changes, read by routing and the UI.
  let placements: Placement[] = [];
  const listeners = new ListenerCache();
  const refreshPlacements = (): void => {
    placements = placeModels(backends, gpuMonitor.status, (name) => manager.deviceOf(name), listeners);
  };
  const placementOf = (name: string): Placement | undefined => placements.find((p) => p.backend === name);
  router.coldLoadFits = (backend, model) => checkFit(model, backend, catalog.sizeOf(model), placementOf(backend.name), gpuMonitor.status).fits;
  let feed: StateFeed | undefined;
  const changed = (): void => {
    refreshPlacements();
    feed?.changed();
  };
  gpuMonitor.on('sample', changed);
  const monitor = new HealthMonitor(backends, config.routing.health.interval_seconds * 1000, config.routing.health.timeout_seconds * 1000, changed);
  if (config.ollama.autostart) {
    for (const instance of manager.snapshot()) {
      await manager.start(instance.name).catch((error: Error) => log.error({ backend: instance.name, error: error.message }, 'could not start ollama serve'));
    }
  }
  if (config.gpu_monitor.enabled) await gpuMonitor.start();
  await monitor.start();

  const controlToken = config.control.token ?? randomBytes(24).toString('hex');
  // The tray and a dashboard opened from it read the token here; only this user may.
  writeFileSync(path.join(dataDir, 'control-token'), controlToken, { mode: 0o600 });
  const authenticator = new Authenticator(config, controlToken);
  const limiter = new Limiter(config, log);

  let url = '';
  const snapshot = (): BridgeState => ({
    startedAt: started.toISOString(),
    url,
    settings: structuredClone(settings),
    backends: backends.map((b) => b.snapshot()),
    gpu: gpuMonitor.status,
    placements,
    ollama: manager.snapshot(),
    models: (catalogCache ?? []).map((m) => ({ name: m.model ?? m.name, sizeBytes: m.size, backends: m.backends })),
    fallbackProviders: providers.map((p) => p.name),
    requests: { ...counters },
    historyRecords: history.size,
    cloudPolicy,
    today: today(),
  });
  const cloudPolicy = {
    header: LOCAL_ONLY_HEADER,
    neverModels: config.fallback.never_models,
    localOnlyTeams: Object.entries(config.auth.teams).filter(([, team]) => team.cloud === 'never').map(([name]) => name),
    localOnlyKeys: config.auth.keys.filter((k) => k.cloud === 'never').map((k) => k.name),
  };
  // Today's figures for the tray tooltip, kept as records come in rather than summed on every snapshot.
  let todayTotals = { day: '', requests: 0, savedDollars: 0 };
  const today = (): { requests: number; savedDollars: number } => {
    const day = new Date().toDateString();
    if (todayTotals.day !== day) {
      const start = new Date(day).getTime();
      const records = history.recent().filter((r) => Date.parse(r.time) >= start);
      todayTotals = { day, requests: records.length, savedDollars: records.reduce((sum, r) => sum + (r.savedDollars ?? 0), 0) };
    }
    return { requests: todayTotals.requests, savedDollars: todayTotals.savedDollars };
  };
  // The state snapshot is synchronous: it shows the model list as of the last refresh.
  let catalogCache: Awaited<ReturnType<typeof catalog.models>> | undefined;
  const refreshModels = (): void => {
    void catalog.models().then((models) => (catalogCache = models), () => undefined);
  };
  refreshModels();
  const modelsTimer = setInterval(refreshModels, 5000);
  modelsTimer.unref();
  const actions = createActions(
    { settings, catalog, backends, manager, placement: placementOf, gpu: () => gpuMonitor.status },
    (name) => {
      log.info({ action: name, settings }, 'control action');
      refreshModels();
      changed();
    },
  );
  feed = new StateFeed(snapshot);
  const stateFeed = feed;
  history.onRecord((record) => {
    today();
    todayTotals.requests += 1;
    todayTotals.savedDollars += record.savedDollars ?? 0;
    stateFeed.record(record);
  });
  const prometheusEnabled = config.monitoring.prometheus.enabled;

  const app = createApp(
    { config, log, router, catalog, backends, policy, startedAt: started },
    {
      counters,
      authenticator,
      limiter,
      control: controlRoutes({
        actions,
        state: snapshot,
        feed: stateFeed,
        history: (limit) => history.recent(limit),
        gpuHistory: (sinceMs) => Object.fromEntries(gpuMonitor.status.gpus.map((g) => [g.index, gpuMonitor.history(g.index, sinceMs)])),
        usage: (query) => usageReport(config, history.recent(), query),
        usageCsv: (query) => usageCsv(history.recent(), query),
        authRequired: authenticator.required,
      }),
      ui: uiRoutes(options.uiDir ?? defaultUiDir()),
      observability: observabilityRoutes({ backends, registry: prometheusEnabled ? metrics.registry : undefined, fallbackReady: () => policy.fallback().length > 0, startedAt: started }),
      onFinished: (req, res, startedAt, totalMs) => {
        const outcome = res.locals.generation as GenerationOutcome | undefined;
        if (outcome === undefined) return;
        const record = historyRecord(req, res, outcome, startedAt, totalMs, backends, config);
        history.add(record);
        metrics.observe(record);
        const identity = res.locals.identity as Identity | undefined;
        if (identity !== undefined) void limiter.charge(identity, (record.tokensIn ?? 0) + (record.tokensOut ?? 0));
      },
    },
  );
  // noDelay: a streamed token must leave at once, not wait for Nagle.
  const server = createServer({ noDelay: true, keepAliveTimeout: 65_000 }, app);
  url = urlOf(await listen(server, config.server.host, config.server.port));

  let metricsServer: Server | undefined;
  let metricsUrl: string | null = null;
  const metricsPort = config.monitoring.prometheus.port;
  if (prometheusEnabled && metricsPort !== undefined) {
    const metricsApp = express();
    metricsApp.disable('x-powered-by');
    metricsApp.use(observabilityRoutes({ backends, registry: metrics.registry, fallbackReady: () => policy.fallback().length > 0, startedAt: started }));
    metricsServer = createServer(metricsApp);
    metricsUrl = urlOf(await listen(metricsServer, config.server.host, metricsPort));
  }
  // The control token stays out of the log: it is in the data folder, readable by this user only.
  log.info({ url, dashboard: `${url}/ui/`, controlTokenFile: path.join(dataDir, 'control-token'), metricsUrl, dataDir, backends: backends.map((b) => ({ name: b.name, url: b.url.href, status: b.health.status })) }, 'bridge listening');

  let stopping: Promise<void> | undefined;
  const stop = (graceMs = 5000): Promise<void> => {
    stopping ??= (async () => {
      // Open dashboard streams end first, so they do not hold the server up for the grace period.
      clearInterval(modelsTimer);
      stateFeed.close();
      await Promise.all([closeServer(server, graceMs), metricsServer === undefined ? undefined : closeServer(metricsServer, graceMs)]);
      await monitor.stop();
      await gpuMonitor.stop();
      await manager.stopAll();
      await history.close();
      await limiter.close();
      await Promise.all([...backends.map((b) => b.close()), ...providers.map((p) => p.close())]);
      log.info('bridge stopped');
      // A log file is written asynchronously: make sure its last lines reach the disk.
      await new Promise<void>((resolve) => log.flush(() => resolve()));
    })();
    return stopping;
  };

  return {
    url,
    config,
    get state(): BridgeState {
      return snapshot();
    },
    actions,
    controlToken,
    history,
    metrics,
    gpuMonitor,
    ollama: manager,
    metricsUrl,
    onStateChange: (listener) =>
      stateFeed.subscribe((event, data) => {
        if (event === 'state') listener(data as BridgeState);
      }),
    stop,
  };
}
