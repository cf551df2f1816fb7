import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { clockTimeOf, type BackendSnapshot, type BridgeState, type GpuReading, type InstanceSnapshot } from '../../src/contract/index.js';
import { buildTrayMenu, trayChanges, trayIconState, trayTooltip, trayView, type MenuItemSpec } from '../../electron/tray-menu.js';

const GIB = 1024 ** 3;

function backend(name: string, status: BackendSnapshot['health']['status'] = 'healthy', gpu: number | null = null): BackendSnapshot {
  return {
    name,
    url: `http://127.0.0.1:1143${name.at(-1)}/`,
    gpu,
    weight: 1,
    inFlight: 0,
    requests: 0,
    failures: status === 'failing' ? 2 : 0,
    health: {
      status,
      circuit: 'closed',
      consecutiveFailures: 0,
      lastError: status === 'healthy' ? null : 'ECONNREFUSED',
      lastCheckAt: null,
      latencyMs: null,
      models: [],
    },
    loaded: [],
  };
}

function gpu(index: number, usedGib: number): GpuReading {
  return {
    index,
    uuid: `GPU-${index}`,
    name: 'NVIDIA H100 80GB HBM3',
    busId: null,
    memoryTotalBytes: 80 * GIB,
    memoryUsedBytes: usedGib * GIB,
    memoryFreeBytes: (80 - usedGib) * GIB,
    memoryReservedBytes: null,
    utilizationRatio: 0.5,
    memoryUtilizationRatio: null,
    temperatureCelsius: 50,
    powerWatts: 300,
    powerLimitWatts: 700,
    graphicsClockMhz: null,
    memoryClockMhz: null,
    pstate: 'P0',
  };
}

function instance(name: string, state: InstanceSnapshot['state']): InstanceSnapshot {
  return {
    name,
    state,
    pid: state === 'running' ? 4242 : null,
    port: 11434,
    device: null,
    restarts: 0,
    lastExit: null,
    logFile: '/tmp/x.log',
    message: null,
    restartAt: null,
  };
}

function state(overrides: Partial<BridgeState> = {}): BridgeState {
  return {
    revision: 1,
    startedAt: '2026-01-01T00:00:00Z',
    url: 'http://127.0.0.1:5000',
    settings: { dualGpu: true, fallbackEnabled: false, models: { simple: 'qwen2.5-coder:1.5b', moderate: 'qwen2.5-coder:7b', complex: 'qwen2.5-coder:7b' } },
    backends: [backend('gpu0', 'healthy', 0)],
    gpu: {
      source: 'none',
      live: false,
      message: 'No NVIDIA GPU found',
      gpus: [],
      controllers: [],
      processes: [],
      lastSampleAt: null,
      lastError: null,
      system: null,
    },
    placements: [],
    ollama: [],
    models: [
      { name: 'qwen2.5-coder:1.5b', sizeBytes: GIB, backends: ['gpu0'] },
      { name: 'qwen2.5-coder:7b', sizeBytes: 8 * GIB, backends: ['gpu0'] },
    ],
    fallbackProviders: [],
    requests: { total: 0, inFlight: 0 },
    historyRecords: 0,
    cloudPolicy: { header: 'x-bridge-local-only', neverModels: [], localOnlyTeams: [], localOnlyKeys: [] },
    today: { requests: 0, savedDollars: 0 },
    scheduler: { enabled: true, ageBoostMs: 10_000, fimMaxWaitMs: 1_500, queued: 0, pools: [], dropped: { superseded: 0, deadline: 0, cancelled: 0 } },
    ...overrides,
  };
}

const labels = (items: MenuItemSpec[]): string[] => items.filter((i) => i.type !== 'separator').map((i) => i.label ?? '');
const item = (items: MenuItemSpec[], label: string): MenuItemSpec => {
  const found = items.find((i) => i.label === label);
  assert.ok(found, `no menu item "${label}" in ${JSON.stringify(labels(items))}`);
  return found;
};
const statusLines = (items: MenuItemSpec[]): string[] =>
  items
    .slice(
      0,
      items.findIndex((i) => i.type === 'separator'),
    )
    .map((i) => i.label ?? '');

describe('tray menu, built from the state', () => {
  it('without a GPU: says so, and has every control', () => {
    const menu = buildTrayMenu({ state: state(), startAtLogin: false });
    assert.deepEqual(statusLines(menu), ['Backends: 1/1 healthy', 'No NVIDIA GPU: models run on the CPU']);
    for (const line of menu.slice(0, 2)) assert.equal(line.enabled, false);
    assert.deepEqual(labels(menu).slice(2), [
      'Dual-GPU mode',
      'Simple model',
      'Complex model',
      'Cloud fallback (no provider configured)',
      'Open dashboard',
      'Copy endpoint URL',
      'Start at login',
      'Quit copilot-bridge',
    ]);
    assert.deepEqual(item(menu, 'Dual-GPU mode').command, { kind: 'action', name: 'setDualGpu', payload: { enabled: false } });
    const simple = item(menu, 'Simple model').submenu ?? [];
    assert.deepEqual(
      simple.map((m) => [m.label, m.type, m.checked]),
      [
        ['qwen2.5-coder:1.5b', 'radio', true],
        ['qwen2.5-coder:7b', 'radio', false],
      ],
    );
    assert.deepEqual(simple[1]?.command, { kind: 'action', name: 'setTierModel', payload: { tier: 'simple', model: 'qwen2.5-coder:7b' } });
    assert.equal(item(menu, 'Cloud fallback (no provider configured)').enabled, false);
    assert.equal(item(menu, 'Start at login').checked, false);
    assert.equal(trayIconState(state()), 'healthy');
  });

  it('ticks the model a tier uses as Ollama names it, and names one that is not installed rather than ticking none', () => {
    // A config says "llama3"; Ollama lists it as "llama3:latest": the same model.
    const untagged = state({
      settings: { ...state().settings, models: { simple: 'llama3', moderate: 'llama3', complex: 'qwen2.5-coder:14b' } },
      models: [
        { name: 'llama3:latest', sizeBytes: 5 * GIB, backends: ['gpu0'] },
        { name: 'qwen2.5-coder:7b', sizeBytes: 8 * GIB, backends: ['gpu0'] },
      ],
    });
    const menu = buildTrayMenu({ state: untagged, startAtLogin: false });
    assert.deepEqual(
      (item(menu, 'Simple model').submenu ?? []).map((m) => [m.label, m.checked]),
      [
        ['llama3:latest', true],
        ['qwen2.5-coder:7b', false],
      ],
    );
    const complex = item(menu, 'Complex model').submenu ?? [];
    assert.deepEqual(
      complex.map((m) => [m.label, m.checked, m.enabled ?? true]),
      [
        ['qwen2.5-coder:14b (not installed)', true, false],
        ['llama3:latest', false, true],
        ['qwen2.5-coder:7b', false, true],
      ],
    );
    assert.equal(complex[0]?.command, undefined);
  });

  it("shows today's savings in the tooltip and the never-cloud policy next to the global Cloud fallback switch", () => {
    const withPolicy = state({
      fallbackProviders: ['openai'],
      today: { requests: 42, savedDollars: 12.345 },
      cloudPolicy: { header: 'x-bridge-local-only', neverModels: ['secret-*'], localOnlyTeams: ['legal'], localOnlyKeys: ['bob'] },
    });
    assert.match(trayTooltip(withPolicy, 1), /\nToday: 42 requests, \$12\.35 saved vs cloud$/);
    // Savings go below zero when the energy cost more than the cloud would have: the sign before the
    // dollar, and none on a figure that rounds to nothing.
    assert.match(trayTooltip(state({ today: { requests: 3, savedDollars: -2.5 } }), 1), /\nToday: 3 requests, -\$2\.50 saved vs cloud$/);
    assert.match(trayTooltip(state({ today: { requests: 3, savedDollars: -0.0001 } }), 1), /\nToday: 3 requests, \$0\.000 saved vs cloud$/);
    const names = labels(buildTrayMenu({ state: withPolicy, startAtLogin: false }));
    assert.equal(names[names.indexOf('Cloud fallback') + 1], 'Never cloud: teams legal; keys bob; models secret-*');
    assert.equal(item(buildTrayMenu({ state: withPolicy, startAtLogin: false }), 'Never cloud: teams legal; keys bob; models secret-*').enabled, false);
    assert.ok(!labels(buildTrayMenu({ state: state(), startAtLogin: false })).some((l) => l.startsWith('Never cloud')));
  });

  it('with one GPU and with two: a VRAM line per GPU, in the tooltip too', () => {
    const one = state({ gpu: { ...state().gpu, source: 'nvidia-smi', live: true, gpus: [gpu(0, 20)] } });
    assert.deepEqual(statusLines(buildTrayMenu({ state: one, startAtLogin: true })), ['Backends: 1/1 healthy', 'GPU 0: 20.0 / 80.0 GiB VRAM']);
    const two = state({ backends: [backend('gpu0', 'healthy', 0), backend('gpu1', 'healthy', 1)], gpu: { ...one.gpu, gpus: [gpu(0, 20), gpu(1, 64.5)] } });
    assert.deepEqual(statusLines(buildTrayMenu({ state: two, startAtLogin: true })), [
      'Backends: 2/2 healthy',
      'GPU 0: 20.0 / 80.0 GiB VRAM',
      'GPU 1: 64.5 / 80.0 GiB VRAM',
    ]);
    assert.equal(
      trayTooltip(two, 12.4),
      'copilot-bridge: healthy\n12.4 requests/min\nGPU 0: 20.0 / 80.0 GiB\nGPU 1: 64.5 / 80.0 GiB\nToday: 0 requests, $0.000 saved vs cloud',
    );
    assert.equal(item(buildTrayMenu({ state: two, startAtLogin: true }), 'Start at login').checked, true);
  });

  it('with nvidia-smi down: says why, shows no stale VRAM figures, and does not claim there is no GPU', () => {
    const down = { ...state().gpu, source: 'nvidia-smi' as const, live: false, message: 'nvidia-smi failed; retrying in 2 s' };
    const lost = state({ gpu: { ...down, gpus: [gpu(0, 20)], lastError: 'nvidia-smi exited (6): No devices were found' } });
    assert.deepEqual(statusLines(buildTrayMenu({ state: lost, startAtLogin: false })), [
      'Backends: 1/1 healthy',
      'No live GPU figures: nvidia-smi exited (6): No devices were found',
    ]);
    assert.doesNotMatch(trayTooltip(lost, 1), /GPU 0/);
    assert.match(trayTooltip(lost, 1), /\nno GPU figures\n/);
    // Failing from its first run (a driver/library mismatch): the GPU is there, and Ollama may use it.
    const never = state({ gpu: { ...down, lastError: 'nvidia-smi exited (18): Failed to initialize NVML: Driver/library version mismatch' } });
    assert.deepEqual(statusLines(buildTrayMenu({ state: never, startAtLogin: false })), [
      'Backends: 1/1 healthy',
      'No live GPU figures: nvidia-smi exited (18): Failed to initialize NVML: Driver/library version mismatch',
    ]);
  });

  it('with Ollama down: the managed instance can be started, not stopped; the icon says down', () => {
    const down = state({ backends: [backend('gpu0', 'down', 0)], ollama: [instance('gpu0', 'stopped')] });
    const menu = buildTrayMenu({ state: down, startAtLogin: false });
    assert.deepEqual(statusLines(menu), [
      'Backends: 0/1 healthy',
      'gpu0: down (ECONNREFUSED)',
      'No NVIDIA GPU: models run on the CPU',
      'Ollama on GPU 0: stopped',
    ]);
    const ollama = item(menu, 'Ollama on GPU 0').submenu ?? [];
    assert.deepEqual(
      ollama.map((m) => [m.label, m.enabled]),
      [
        ['Start', true],
        ['Stop', false],
        ['Restart', false],
      ],
    );
    assert.deepEqual(ollama[0]?.command, { kind: 'action', name: 'startOllama', payload: { backend: 'gpu0' } });
    assert.equal(trayIconState(down), 'down');
    const running = buildTrayMenu({ state: state({ ollama: [instance('gpu0', 'running')] }), startAtLogin: false });
    assert.deepEqual(
      (item(running, 'Ollama on GPU 0').submenu ?? []).map((m) => m.enabled),
      [false, true, true],
    );
  });

  it('says why a managed Ollama failed, as the bridge knows it', () => {
    const missing = 'no ollama binary found: install Ollama from https://ollama.com/download, or set ollama.binary in config.yaml (or OLLAMA_BIN)';
    const failed = state({ ollama: [{ ...instance('gpu0', 'failed'), message: missing }] });
    assert.equal(statusLines(buildTrayMenu({ state: failed, startAtLogin: false })).at(-1), `Ollama on GPU 0: failed (${missing})`.slice(0, 120));
    // Crashed restarts on its own: the line says why it ended and when it starts again.
    const restartAt = new Date(2026, 0, 1, 9, 30, 5).toISOString();
    const crashed = state({ ollama: [{ ...instance('gpu0', 'crashed'), message: 'crashed (exit code 2)', lastExit: 'exit code 2', restartAt }] });
    assert.equal(
      statusLines(buildTrayMenu({ state: crashed, startAtLogin: false })).at(-1),
      `Ollama on GPU 0: crashed (exit code 2), restarts at ${clockTimeOf(restartAt)}`,
    );
    assert.match(clockTimeOf(restartAt), /^09\D30\D05$/);
  });

  it('with two instances on one GPU: each has its own name, so Stop stops the one meant', () => {
    const shared = state({
      backends: [backend('chat', 'healthy', 0), backend('fim', 'healthy', 0)],
      ollama: [instance('chat', 'running'), instance('fim', 'stopped')],
    });
    const menu = buildTrayMenu({ state: shared, startAtLogin: false });
    assert.deepEqual(statusLines(menu).slice(-2), ['Ollama on GPU 0 (chat): running', 'Ollama on GPU 0 (fim): stopped']);
    assert.deepEqual(item(menu, 'Ollama on GPU 0 (fim)').submenu?.[0]?.command, { kind: 'action', name: 'startOllama', payload: { backend: 'fim' } });
    // One instance per GPU keeps the short label.
    assert.ok(labels(buildTrayMenu({ state: state({ ollama: [instance('gpu0', 'running')] }), startAtLogin: false })).includes('Ollama on GPU 0'));
  });

  it('with a degraded backend: named in the status, amber icon; busy when requests are in flight', () => {
    const degraded = state({ backends: [backend('gpu0', 'healthy', 0), backend('gpu1', 'failing', 1)] });
    assert.deepEqual(statusLines(buildTrayMenu({ state: degraded, startAtLogin: false })).slice(0, 2), [
      'Backends: 1/2 healthy',
      'gpu1: failing (ECONNREFUSED)',
    ]);
    assert.equal(trayIconState(degraded), 'degraded');
    assert.equal(trayIconState(state({ requests: { total: 3, inFlight: 1 } })), 'busy');
  });

  it('with fallback on: the checkbox is ticked and unticks it', () => {
    const on = state({ settings: { ...state().settings, fallbackEnabled: true }, fallbackProviders: ['openai'] });
    const fallback = item(buildTrayMenu({ state: on, startAtLogin: false }), 'Cloud fallback');
    assert.deepEqual([fallback.type, fallback.checked, fallback.enabled], ['checkbox', true, true]);
    assert.deepEqual(fallback.command, { kind: 'action', name: 'setFallback', payload: { enabled: false } });
  });

  it('says in the tooltip how many requests wait in the bridge, per lane, and nothing when none wait', () => {
    const pool = (backend: string, fim: number, interactive: number) => ({
      backend,
      model: 'm',
      slots: 1,
      running: 1,
      queued: { fim, interactive, background: 0 },
      serviceMs: 1000,
      loadMs: null,
      promptTokensPerSecond: null,
      samples: 0,
    });
    const busy = state({ scheduler: { ...state().scheduler, queued: 4, pools: [pool('gpu0', 1, 2), pool('gpu1', 0, 1)] } });
    assert.equal(
      trayTooltip(busy, 3),
      'copilot-bridge: healthy\n3.0 requests/min\n4 queued (1 ghost text, 3 chat)\nno GPU figures\nToday: 0 requests, $0.000 saved vs cloud',
    );
    assert.doesNotMatch(trayTooltip(state(), 3), /queued/);
  });

  it('sets again only the parts of the tray whose content changed, not the whole tray on every state change', () => {
    const shown = trayView({ state: state(), startAtLogin: false }, 0);
    assert.deepEqual(trayChanges(undefined, shown), { icon: true, tooltip: true, menu: true });
    // A GPU sample or a finished request changes the state, but nothing the tray shows of it.
    const same = trayView({ state: state({ requests: { total: 7, inFlight: 0 }, historyRecords: 7 }), startAtLogin: false }, 0);
    assert.deepEqual(trayChanges(shown, same), { icon: false, tooltip: false, menu: false });
    const busy = trayView({ state: state({ requests: { total: 8, inFlight: 1 } }), startAtLogin: false }, 0);
    assert.deepEqual(trayChanges(shown, busy), { icon: true, tooltip: true, menu: false });
    const rate = trayView({ state: state(), startAtLogin: false }, 2);
    assert.deepEqual(trayChanges(shown, rate), { icon: false, tooltip: true, menu: false });
    const single = trayView({ state: state({ settings: { ...state().settings, dualGpu: false } }), startAtLogin: false }, 0);
    assert.deepEqual(trayChanges(shown, single), { icon: false, tooltip: false, menu: true });
    assert.deepEqual(trayChanges(shown, trayView({ state: state(), startAtLogin: true }, 0)), { icon: false, tooltip: false, menu: true });
  });

  it('tells of an action that failed, in the menu and the tooltip, until the next one', () => {
    const failure = {
      command: { kind: 'action', name: 'startOllama', payload: { backend: 'gpu0' } } as const,
      message: 'the Ollama on port 11434 was not started by the bridge; stop it where it was started',
    };
    const failed = trayView({ state: state(), startAtLogin: false, failure }, 0);
    const words = `Could not start Ollama: ${failure.message}`;
    assert.deepEqual(failed.menu[0], { label: words.slice(0, 120), enabled: false });
    assert.equal(failed.tooltip.split('\n').at(-1), words);
    const fine = trayView({ state: state(), startAtLogin: false }, 0);
    assert.ok(!labels(fine.menu).some((label) => label.startsWith('Could not')));
    assert.doesNotMatch(fine.tooltip, /Could not/);
  });
});
