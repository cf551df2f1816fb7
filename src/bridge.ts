import { randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { ErrorRequestHandler } from 'express';
import { mountRoutes } from './api/call.js';
import { asBridgeError, noSuchEndpoint, refuseOtherMethods, sendError } from './api/errors.js';
import type { GenerationPolicy } from './api/generation.js';
import { Authenticator } from './auth/authenticate.js';
import { Limiter } from './auth/limits.js';
import { isOllamaCloudModel, LOCAL_ONLY_HEADER, localOnlyReason } from './auth/policy.js';
import { EnergyMeter } from './history/accounting.js';
import { usageCsv, usageRecords, usageReport } from './history/usage.js';
import { isLoopbackHost } from './config/load.js';
import type { Config } from './config/schema.js';
import { createActions, type Actions } from './control/actions.js';
import { StateFeed } from './control/feed.js';
import { GpuMonitor } from './gpu/monitor.js';
import { placeModels, type Placement } from './gpu/placement.js';
import { ListenerCache } from './gpu/procfs.js';
import { historyRecord } from './history/record.js';
import { HistoryStore } from './history/store.js';
import { createRequestListener, type RequestCounters } from './http/app.js';
import { requireIdentity } from './http/auth.js';
import { guard } from './http/guard.js';
import { HttpServer } from './http/server.js';
import { observabilityRoutes } from './http/observability.js';
import { openLog, type Logger, type OwnedLog } from './log.js';
import { BridgeMetrics } from './metrics/metrics.js';
import { OllamaManager } from './ollama/manager.js';
import { checkFit } from './ollama/models.js';
import { normalizeResidency, seedFor, tierConfigOf } from './routing/residency.js';
import { Router, settingsFrom } from './routing/router.js';
import { Scheduler } from './routing/scheduler.js';
import { Cancel, canonicalModelName } from './contract/index.js';
import { Backend, limitsFrom } from './upstream/backend.js';
import { ModelCatalog } from './upstream/catalog.js';
import { AnthropicProvider } from './upstream/cloud/anthropic-provider.js';
import { OpenAiProvider } from './upstream/cloud/openai-provider.js';
import type { CloudProvider } from './upstream/cloud/provider.js';
import { BackendHealth } from './upstream/health.js';
import { HealthMonitor } from './upstream/health-monitor.js';
import { ModelRefresher } from './upstream/model-refresher.js';
import { Lifecycle } from './lifecycle.js';
import { sameModel, type BridgeState } from './contract/index.js';
export type { BridgeState } from './contract/index.js';

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
  /**
   * Drains, then closes: /health/ready answers 503, new connections are refused, answers carry
   * `Connection: close` and idle connections close; running requests may finish for the grace
   * period (default server.shutdown_grace_seconds), after which running answers end with the
   * surface's error.
   */
  stop(graceMs?: number): Promise<void>;
  /**
   * Opens the log file anew at its path (logrotate moved it away, SIGUSR2); nothing for a log on
   * standard output or a logger handed to the bridge.
   */
  reopenLog(): void;
}

export interface BridgeOptions {
  logger?: Logger;
  /** The built dashboard; default: dist/ui. */
  uiDir?: string;
  /** false: express serves the hot client routes too, as it does every other route (default true). */
  fastPath?: boolean;
}

/** Where history and the control token live when the config names no data_dir. */
export function defaultDataDir(): string {
  // The XDG spec has an empty or relative XDG_DATA_HOME ignored: it would put the data wherever the bridge was started.
  const xdg = process.env.XDG_DATA_HOME;
  const base = xdg !== undefined && path.isAbsolute(xdg) ? xdg : path.join(os.homedir(), '.local', 'share');
  return path.join(base, 'copilot-bridge');
}

/** Starts one bridge: the one way to run it, headless or inside the desktop app. All state lives in the handle. */
export async function startBridge(config: Config, options: BridgeOptions = {}): Promise<BridgeHandle> {
  // A log the bridge opens is the bridge's to close; one handed to it is the caller's.
  const ownLog = options.logger === undefined ? openLog(config) : undefined;
  const log = options.logger ?? (ownLog as OwnedLog).logger;
  const limits = limitsFrom(config);
  const breaker = config.routing.circuit_breaker;
  const backends = config.backends.map(
    (backend) => new Backend(backend, limits, new BackendHealth({ failureThreshold: breaker.failure_threshold, cooldownMs: breaker.cooldown_seconds * 1000 })),
  );
  const providers: CloudProvider[] = config.fallback.providers.map((p) =>
    p.type === 'openai' ? new OpenAiProvider(p, limits) : new AnthropicProvider(p, limits),
  );
  const counters: RequestCounters = { total: 0, inFlight: 0 };
  const started = new Date();
  const dataDir = config.data_dir ?? defaultDataDir();
  const controlTokenFile = path.join(dataDir, 'control-token');
  const controlToken = config.control.token ?? randomBytes(24).toString('hex');

  const history = new HistoryStore({
    dir: dataDir,
    maxRecords: config.history.max_records,
    maxFileBytes: config.history.max_file_mb * 1024 * 1024,
    keepFiles: config.history.keep_files,
    onUnreadableLines: (file, count, firstLines) => log.warn({ file, skippedLines: count, firstLines }, 'skipped unreadable history lines'),
    onWriteError: (error) => log.error({ error: error.message }, 'could not write the history file'),
  });
  const gpuMonitor = new GpuMonitor({
    command: config.gpu_monitor.command,
    intervalMs: config.gpu_monitor.interval_seconds * 1000,
    historyPoints: Math.round((config.gpu_monitor.history_minutes * 60) / config.gpu_monitor.interval_seconds),
    processesEveryMs: 10_000,
    log,
  });

  const manager = new OllamaManager(
    config.backends
      .filter((b) => b.manage)
      .map((b) => ({
        name: b.name,
        port: Number(new URL(b.url).port),
        device: b.gpu === undefined ? undefined : String(b.gpu),
        numParallel: b.parallel ?? config.ollama.num_parallel,
      })),
    {
      binary: config.ollama.binary,
      modelsDir: config.ollama.models_dir,
      keepAlive: config.ollama.keep_alive,
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
  const catalog = new ModelCatalog(backends);
  const settings = settingsFrom(config);
  /** The model's size for a cold load: Ollama's, else the tier's vram_gb. */
  const sizeOf = (model: string): number | undefined => seedFor(config, settings, model, catalog.sizeOf(model)).sizeBytes;
  // A backend's or a tier's GPU is its index or UUID in the config; nvidia-smi knows both.
  const gpuIndexOf = (gpu: number | string): number | undefined =>
    typeof gpu === 'number' ? gpu : gpuMonitor.status.gpus.find((g) => g.uuid === gpu || String(g.index) === gpu)?.index;
  const router = new Router(
    config,
    backends,
    catalog,
    settings,
    (backend, model) => checkFit(model, backend, sizeOf(model), placementOf(backend.name), gpuMonitor.status).fits,
    gpuIndexOf,
  );
  const backendNamed = new Map(backends.map((b) => [b.name, b]));
  const slotsOf = new Map(config.backends.map((b) => [b.name, b.parallel ?? (b.manage ? config.ollama.num_parallel : 1)]));
  const scheduler = new Scheduler({
    enabled: config.routing.scheduler.enabled,
    ageBoostMs: config.routing.scheduler.age_boost_ms,
    fimMaxWaitMs: config.routing.scheduler.fim_max_wait_ms,
    fimReservedSlots: config.routing.scheduler.fim_reserved_slots,
    slots: (backend) => slotsOf.get(backend) ?? 1,
    resident: (backend, model) => backendNamed.get(backend)?.hasLoaded(model, catalog.digestOf(model, backend)) ?? false,
    seed: (model) => seedFor(config, settings, model, catalog.sizeOf(model)),
    identity: (backend, model) => catalog.digestOf(model, backend) ?? canonicalModelName(model),
    onDispatch: (lane, waitMs) => metrics.observeQueueWait(lane, waitMs),
    // One /api/ps after a cold load, so the next choice knows the model is there now, and requests
    // waiting for it elsewhere may move there.
    onColdLoad: (backend) =>
      void backendNamed
        .get(backend)
        ?.check(config.routing.health.timeout_seconds * 1000)
        .then(() => scheduler.rebalance()),
  });
  const loadedContext = (backend: string, model: string): number | undefined =>
    backendNamed.get(backend)?.loadedEntry(model, catalog.digestOf(model, backend))?.context_length;
  // Each GPU's power samples, split between the requests running on it (a backend's GPU is its configured index or UUID).
  const energy = new EnergyMeter();
  gpuMonitor.on('sample', (status) => energy.sample(status.gpus));
  // The JWT library is loaded only by a bridge that verifies JWTs: idle memory of the others.
  const jwt = config.auth.jwt === undefined ? undefined : new (await import('./auth/jwt.js')).JwtVerifier(config.auth.jwt);
  const authenticator = new Authenticator(config, controlToken, jwt);
  const limiter = new Limiter(config, log, Date.now, {
    storeFailed: () => metrics.limitStoreFailed(),
    refused: (identity) => metrics.rateLimitedRequest(identity.team),
  });
  // Aborted when a stop's grace period ran out; every running generation listens to it (a Cancel:
  // an AbortSignal's listeners cost each request an EventTarget registration and removal).
  const stopDeadline = new Cancel();
  const policy: GenerationPolicy = {
    maxRetries: config.routing.thresholds.max_retries,
    heartbeatMs: config.routing.thresholds.heartbeat_seconds * 1000,
    maxAnswerChars: Math.round(config.routing.thresholds.max_line_mb * 1024 * 1024),
    fallback: () => (settings.fallbackEnabled ? providers : []),
    scheduler,
    laneRules: config.routing.scheduler.lane_rules,
    prepare: (body, backend, model) => normalizeResidency(body, tierConfigOf(config, settings, model), loadedContext(backend, model)),
    deadline: stopDeadline,
    localOnly: (headers, identity, model) => localOnlyReason(identity, headers, model, config.fallback.never_models),
    isCloudModel: (model) => isOllamaCloudModel(model, catalog.isRemote(model)),
    meter: (source) => {
      const gpu = source.kind === 'local' ? backendNamed.get(source.name)?.gpu : undefined;
      const index = gpu === undefined || gpu === null ? undefined : gpuIndexOf(gpu);
      return index === undefined ? undefined : energy.start(index);
    },
  };
  const cloudPolicy = {
    header: LOCAL_ONLY_HEADER,
    neverModels: config.fallback.never_models,
    localOnlyTeams: Object.entries(config.auth.teams)
      .filter(([, team]) => team.cloud === 'never')
      .map(([name]) => name),
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
  const metrics = new BridgeMetrics(
    backends,
    // Only live samples: while nvidia-smi is down its last one would pass for the GPUs' state.
    () => (gpuMonitor.status.live ? gpuMonitor.status.gpus : []),
    (model) => Object.values(settings.models).some((configured) => sameModel(configured, model)) || catalog.lists(model),
    () => scheduler.snapshot(),
    settings.models,
    config,
  );

  // The snapshot reads the server's URL, known once it listens; the feed reads the snapshot only when it sends.
  let revision = 0;
  const snapshot = (): BridgeState => ({
    revision: ++revision,
    startedAt: started.toISOString(),
    url: server.url,
    settings: structuredClone(settings),
    backends: backends.map((b) => b.snapshot()),
    gpu: gpuMonitor.status,
    placements,
    ollama: manager.snapshot(),
    models: modelRefresher.models.map((m) => ({ name: m.model, sizeBytes: m.size, backends: m.backends })),
    fallbackProviders: providers.map((p) => p.name),
    requests: { ...counters },
    historyRecords: history.size,
    scheduler: scheduler.snapshot(),
    cloudPolicy,
    today: today(),
  });
  const stateFeed = new StateFeed(snapshot);
  const changed = (): void => {
    refreshPlacements();
    stateFeed.changed();
  };
  gpuMonitor.on('sample', changed);
  history.onRecord((record) => {
    const countedDay = todayTotals.day;
    today();
    // A fresh count (the first since start, or of a new day) read this record from the history already.
    if (todayTotals.day === countedDay) {
      todayTotals.requests += 1;
      todayTotals.savedDollars += record.savedDollars ?? 0;
    }
    stateFeed.record(record);
  });
  const modelRefresher = new ModelRefresher(catalog, 5000, changed);
  const healthMonitor = new HealthMonitor(backends, config.routing.health.interval_seconds * 1000, config.routing.health.timeout_seconds * 1000, () => {
    for (const backend of backends) if (backend.health.status === 'down') manager.unreachable(backend.name);
    scheduler.rebalance();
    changed();
  });
  const actions = createActions(
    { settings, catalog, backends, manager, placement: placementOf, gpu: () => gpuMonitor.status, fallbackProviders: providers.map((p) => p.name) },
    (name) => {
      log.info({ action: name, settings }, 'control action');
      modelRefresher.refresh();
      changed();
    },
  );

  const prometheusEnabled = config.monitoring.prometheus.enabled;
  let finished: Array<Parameters<typeof historyRecord>[0]> = [];
  const recordFinished = (): void => {
    const batch = finished;
    finished = [];
    for (const request of batch) {
      // Runs from a timer: anything thrown here would end the process, and the rest of the batch must still count.
      try {
        const record = historyRecord(request, (name) => backends.find((b) => b.name === name)?.gpu ?? null, config);
        history.add(record);
        metrics.observe(record);
        if (request.identity !== null) void limiter.charge(request.identity, (record.tokensIn ?? 0) + (record.tokensOut ?? 0));
      } catch (error) {
        log.error({ err: error, path: request.path }, 'could not record a finished request');
      }
    }
  };
  const listener = createRequestListener(
    { config, log, router, catalog, backends, policy, startedAt: started },
    {
      counters,
      authenticator,
      limiter,
      control: {
        log,
        actions,
        state: snapshot,
        feed: stateFeed,
        history: (limit) => history.recent(limit),
        gpuHistory: (sinceMs) => Object.fromEntries(gpuMonitor.status.gpus.map((g) => [g.index, gpuMonitor.history(g.index, sinceMs)])),
        usage: async (query) => {
          const { records, oldest } = await usageRecords(history, query);
          return usageReport(config, records, query, oldest);
        },
        usageCsv: async (query) => usageCsv((await usageRecords(history, query)).records, query),
        authRequired: authenticator.required,
      },
      uiDir: options.uiDir,
      observability: observabilityRoutes({
        backends,
        registry: prometheusEnabled ? metrics.registry : undefined,
        fallbackReady: () => policy.fallback().length > 0,
        startedAt: started,
        draining: () => server.draining,
        detailed: !authenticator.required,
      }),
      onFinished: (request) => {
        const { generation } = request;
        if (generation === null) return;
        // Recorded in batches after the current turn of the event loop: none of it delays the next request.
        if (finished.push({ ...request, generation }) === 1) setImmediate(recordFinished);
      },
    },
    { fastPath: options.fastPath },
  );
  const requestTimeoutMs = config.server.request_timeout_seconds * 1000;
  // noDelay: a streamed token must leave at once, not wait for Nagle. headersTimeout bounds a slow
  // request head; a slow body is bounded by the body reader (JSON) or its idle timer (model blobs,
  // which may take long but never stall). Node's own requestTimeout would also cut a long blob
  // upload, so it is off. Answers may take as long as they need. Node enforces headersTimeout only
  // when it checks its connections, every 30 s by default: a head would be cut up to 30 s late.
  // The metrics port takes the same: without a cap of its own, connections to it could use up the
  // process's file descriptors and so lock out the main port too.
  const serverOptions = {
    noDelay: true,
    keepAliveTimeout: 65_000,
    headersTimeout: requestTimeoutMs,
    connectionsCheckingInterval: Math.min(1000, requestTimeoutMs),
    requestTimeout: 0,
    maxConnections: config.server.max_connections,
    // A client that stops reading its answer cannot hold it (and the upstream behind it) for good.
    stalledReaderMs: requestTimeoutMs,
  };
  const server = new HttpServer('HTTP server', config.server.host, config.server.port, listener, serverOptions, () => stopDeadline.abort());
  const metricsPort = config.monitoring.prometheus.port;
  let metricsServer: HttpServer | undefined;
  if (prometheusEnabled && metricsPort !== undefined) {
    const { default: express } = await import('express');
    const metricsApp = express();
    metricsApp.disable('x-powered-by');
    // The same guard as the main port: loopback Host names (DNS rebinding), or a key or token.
    metricsApp.use(guard(config), requireIdentity(authenticator));
    const routes = express.Router();
    mountRoutes(
      routes,
      observabilityRoutes({
        backends,
        registry: metrics.registry,
        fallbackReady: () => policy.fallback().length > 0,
        startedAt: started,
        draining: () => server.draining,
        // Everything on this port needs a known identity where the bridge takes keys.
        detailed: true,
      }),
    );
    metricsApp.use(refuseOtherMethods(routes));
    metricsApp.use(noSuchEndpoint);
    const refused: ErrorRequestHandler = (error: unknown, _req, res, _next) => sendError(res, 'ollama', asBridgeError(error));
    metricsApp.use(refused);
    metricsServer = new HttpServer('metrics server', config.server.host, metricsPort, metricsApp, serverOptions);
  }

  // Start order: what fails most often and costs least first; ports are bound before any child
  // process is spawned, so a port in use spawns nothing. Stop runs the same list backwards, with
  // one twist: the servers stop taking requests and drain first (the entry near the end), while
  // Ollama and the upstream connections are still there to finish the running ones.
  const servers = metricsServer === undefined ? [server] : [server, metricsServer];
  const lifecycle = new Lifecycle((service, error) => log.error({ service, error: error.message }, 'could not stop cleanly'));
  await lifecycle.start([
    {
      name: 'upstream connections',
      start: async () => undefined,
      stop: async () => {
        await Promise.all([...backends.map((b) => b.close()), ...providers.map((p) => p.close())]);
      },
    },
    history,
    { name: 'limits', start: async () => undefined, stop: () => limiter.close() },
    {
      name: 'control token',
      // The tray and a dashboard opened from it read the token here; only this user may. The mode
      // applies to a new file only: one an older version left readable by everyone is tightened
      // before the token is in it.
      start: async () => {
        const file = await open(controlTokenFile, 'w', 0o600);
        try {
          await file.chmod(0o600);
          await file.writeFile(controlToken);
        } finally {
          await file.close();
        }
      },
      stop: async () => undefined,
    },
    ...servers,
    {
      name: 'Ollama manager',
      start: async () => {
        if (config.ollama.autostart) await manager.startAll();
      },
      // Instances started later from the tray or the dashboard stop here too.
      stop: () => manager.stopAll(),
    },
    ...(config.gpu_monitor.enabled ? [gpuMonitor] : []),
    healthMonitor,
    modelRefresher,
    // Stops after the servers drained: requests still queued then are served meanwhile, not refused.
    scheduler,
    {
      name: 'requests in flight',
      start: async () => undefined,
      stop: async (graceMs) => {
        log.info({ graceMs }, 'draining: finishing running requests');
        await server.stop(graceMs);
        // Metrics last, so readiness (503) and the drain's final figures can still be read.
        await metricsServer?.stop(0);
      },
    },
    // Open dashboard streams end first on stop, so they do not hold the server up for the grace period.
    { name: 'state feed', start: async () => undefined, stop: async () => stateFeed.close() },
  ]);
  const url = server.url;
  const metricsUrl = metricsServer?.url ?? null;
  if (config.monitoring.logging.log_prompts) {
    log.warn('monitoring.logging.log_prompts is on: the log holds the text of every prompt and answer');
  }
  if (!isLoopbackHost(config.server.host)) {
    log.warn(
      { host: config.server.host },
      'listening beyond loopback over plain HTTP: API keys, prompts and answers cross the network unencrypted; put a TLS proxy (nginx, HAProxy) in front, or listen on loopback',
    );
  }
  // The control token stays out of the log: it is in the data folder, readable by this user only.
  log.info(
    {
      url,
      dashboard: `${url}/ui/`,
      controlTokenFile,
      metricsUrl,
      dataDir,
      backends: backends.map((b) => ({ name: b.name, url: b.url.href, status: b.health.status })),
    },
    'bridge listening',
  );

  let stopping: Promise<void> | undefined;
  const stop = (graceMs = config.server.shutdown_grace_seconds * 1000): Promise<void> => {
    stopping ??= (async () => {
      await lifecycle.stop(graceMs);
      log.info('bridge stopped');
      // Its lines are written asynchronously: the last ones reach the file or pipe before the bridge says it stopped.
      await ownLog?.close();
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
    reopenLog: () => {
      if (stopping === undefined && ownLog?.reopen() === true) log.info({ file: config.monitoring.logging.destination }, 'log file reopened');
    },
  };
}
