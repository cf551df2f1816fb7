import {
  clockTimeOf,
  describeQueued,
  dollarsOf,
  gibOf,
  healthyBackendCount,
  ollamaControls,
  queuedPerLane,
  sameModel,
  type ActionName,
  type ActionPayloads,
  type BridgeState,
  type GpuStatus,
  type InstanceSnapshot,
  type Tier,
} from '../src/contract/index.js';

/**
 * The tray: its menu, icon and tooltip are pure functions of the bridge's state, set again when
 * what they show changes. Menu items carry commands, not callbacks; the shell runs them, and every
 * setting goes through the same control actions the dashboard uses.
 */

export type TrayCommand =
  | { [N in ActionName]: { kind: 'action'; name: N; payload: ActionPayloads[N] } }[ActionName]
  | { kind: 'open-dashboard' }
  | { kind: 'copy-endpoint' }
  | { kind: 'toggle-start-at-login' }
  | { kind: 'quit' };

export interface MenuItemSpec {
  label?: string;
  type?: 'normal' | 'separator' | 'checkbox' | 'radio' | 'submenu';
  checked?: boolean;
  enabled?: boolean;
  submenu?: MenuItemSpec[];
  command?: TrayCommand;
}

/** A tray item whose command failed (a control action the bridge refused, a login item not written), and why. */
export interface TrayFailure {
  command: TrayCommand;
  message: string;
}

export interface TrayInput {
  state: BridgeState;
  startAtLogin: boolean;
  /** The last tray item clicked, when it failed: told until the next one succeeds. */
  failure?: TrayFailure;
}

/** What each control action was to do, for telling that it could not. */
const ACTION_WORDS: { [N in ActionName]: string } = {
  setDualGpu: 'turn dual-GPU mode on or off',
  setFallback: 'turn cloud fallback on or off',
  setTierModel: 'change the tier model',
  preloadModel: 'load the model',
  unloadModel: 'unload the model',
  startOllama: 'start Ollama',
  stopOllama: 'stop Ollama',
  restartOllama: 'restart Ollama',
};

/** What each of the app's own commands was to do, for telling that it could not. */
const COMMAND_WORDS: { [K in Exclude<TrayCommand['kind'], 'action'>]: string } = {
  'open-dashboard': 'open the dashboard',
  'copy-endpoint': 'copy the endpoint URL',
  'toggle-start-at-login': 'turn start at login on or off',
  quit: 'quit',
};

/** The words of a failed tray item: its notification, the menu's first line and the tooltip's last. */
export function failureText({ command, message }: TrayFailure): string {
  return `Could not ${command.kind === 'action' ? ACTION_WORDS[command.name] : COMMAND_WORDS[command.kind]}: ${message}`;
}

export type TrayIconState = 'healthy' | 'degraded' | 'down' | 'busy';

const gib = (bytes: number | null): string => gibOf(bytes) ?? '?';

function gpuLabel(state: BridgeState, backend: string): string {
  const gpu = state.placements.find((p) => p.backend === backend)?.gpu;
  if (gpu !== null && gpu !== undefined) return `GPU ${gpu.index}`;
  const configured = state.backends.find((b) => b.name === backend)?.gpu;
  return configured === null || configured === undefined ? backend : `GPU ${configured}`;
}

/** "Ollama on GPU 1" per managed instance; with two on one GPU, each also says which backend it serves. */
function instanceLabels(state: BridgeState): Map<string, string> {
  const onGpu = state.ollama.map((i) => [i.name, `Ollama on ${gpuLabel(state, i.name)}`] as const);
  const shared = (label: string): boolean => onGpu.filter(([, l]) => l === label).length > 1;
  return new Map(onGpu.map(([name, label]) => [name, shared(label) ? `${label} (${name})` : label]));
}

/**
 * VRAM per GPU while nvidia-smi answers. Once it fails, its last figures are no measure of the GPUs
 * now, and a GPU it cannot read (or nvidia-smi missing beside a GPU systeminformation lists) may
 * still be the one Ollama uses: the line says why there are no figures instead.
 */
function gpuLines(gpu: GpuStatus): string[] {
  if (gpu.live)
    return gpu.gpus.length === 0 ? ['No GPU'] : gpu.gpus.map((g) => `GPU ${g.index}: ${gib(g.memoryUsedBytes)} / ${gib(g.memoryTotalBytes)} GiB VRAM`);
  if (gpu.source === 'none') return ['No NVIDIA GPU: models run on the CPU'];
  return [`No live GPU figures: ${gpu.lastError ?? gpu.message}`.slice(0, 120)];
}

/**
 * A failed instance waits for the user, who needs the bridge's why (no binary, a crash loop); a
 * crashed one says when it starts again on its own (a clock time stays true while the menu is shown).
 */
function instanceStatus(instance: InstanceSnapshot): string {
  if (instance.state === 'failed' && instance.message !== null) return `failed (${instance.message})`;
  if (instance.restartAt !== null)
    return `${instance.state}${instance.lastExit === null ? '' : ` (${instance.lastExit})`}, restarts at ${clockTimeOf(instance.restartAt)}`;
  return instance.state;
}

function statusLines(state: BridgeState): MenuItemSpec[] {
  const up = healthyBackendCount(state.backends);
  const lines = [`Backends: ${up}/${state.backends.length} healthy`];
  for (const backend of state.backends.filter((b) => b.health.status === 'failing' || b.health.status === 'down')) {
    lines.push(`${backend.name}: ${backend.health.status}${backend.health.lastError ? ` (${backend.health.lastError.slice(0, 60)})` : ''}`);
  }
  lines.push(...gpuLines(state.gpu));
  const instances = instanceLabels(state);
  for (const instance of state.ollama) lines.push(`${instances.get(instance.name)}: ${instanceStatus(instance)}`.slice(0, 120));
  return lines.map((label) => ({ label, enabled: false }));
}

/**
 * The installed models, the tier's ticked as Ollama names it ("llama3" is "llama3:latest"); a tier
 * set to a model not installed names it first, ticked and disabled, as the dashboard does.
 */
function tierSubmenu(state: BridgeState, tier: Tier, label: string): MenuItemSpec {
  const current = state.settings.models[tier];
  const names = state.models.map((m) => m.name);
  const missing: MenuItemSpec[] =
    current === null || names.some((model) => sameModel(model, current))
      ? []
      : [{ label: `${current} (not installed)`, type: 'radio', checked: true, enabled: false }];
  const choices: MenuItemSpec[] = names.map((model) => ({
    label: model,
    type: 'radio',
    checked: current !== null && sameModel(model, current),
    command: { kind: 'action', name: 'setTierModel', payload: { tier, model } },
  }));
  return {
    label,
    type: 'submenu',
    submenu: [...missing, ...(names.length === 0 ? [{ label: 'No models installed', enabled: false }] : choices)],
  };
}

function ollamaSubmenus(state: BridgeState): MenuItemSpec[] {
  const labels = instanceLabels(state);
  return state.ollama.map((instance) => {
    const controls = ollamaControls(instance.state);
    return {
      label: labels.get(instance.name),
      type: 'submenu',
      submenu: [
        { label: 'Start', enabled: controls.start, command: { kind: 'action', name: 'startOllama', payload: { backend: instance.name } } },
        { label: 'Stop', enabled: controls.stop, command: { kind: 'action', name: 'stopOllama', payload: { backend: instance.name } } },
        { label: 'Restart', enabled: controls.restart, command: { kind: 'action', name: 'restartOllama', payload: { backend: instance.name } } },
        ...(instance.state === 'adopted' ? [{ label: 'Started outside the bridge', enabled: false }] : []),
      ],
    };
  });
}

/** Who never goes to a cloud whatever the Cloud fallback switch says (the switch stays the global one). */
function neverCloudLines(state: BridgeState): MenuItemSpec[] {
  const { localOnlyTeams, localOnlyKeys, neverModels } = state.cloudPolicy;
  const parts = [
    localOnlyTeams.length > 0 ? `teams ${localOnlyTeams.join(', ')}` : null,
    localOnlyKeys.length > 0 ? `keys ${localOnlyKeys.join(', ')}` : null,
    neverModels.length > 0 ? `models ${neverModels.join(', ')}` : null,
  ].filter((p): p is string => p !== null);
  if (parts.length === 0) return [];
  return [{ label: `Never cloud: ${parts.join('; ')}`.slice(0, 120), enabled: false }];
}

/** Dollars with cents, or tenths of a cent under a dollar (local savings per request are small). */
export function buildTrayMenu({ state, startAtLogin, failure }: TrayInput): MenuItemSpec[] {
  return [
    ...(failure === undefined ? [] : [{ label: failureText(failure).slice(0, 120), enabled: false }]),
    ...statusLines(state),
    { type: 'separator' },
    {
      label: 'Dual-GPU mode',
      type: 'checkbox',
      checked: state.settings.dualGpu,
      command: { kind: 'action', name: 'setDualGpu', payload: { enabled: !state.settings.dualGpu } },
    },
    tierSubmenu(state, 'simple', 'Simple model'),
    tierSubmenu(state, 'complex', 'Complex model'),
    ...ollamaSubmenus(state),
    {
      label: state.fallbackProviders.length === 0 ? 'Cloud fallback (no provider configured)' : 'Cloud fallback',
      type: 'checkbox',
      checked: state.settings.fallbackEnabled,
      enabled: state.fallbackProviders.length > 0 || state.settings.fallbackEnabled,
      command: { kind: 'action', name: 'setFallback', payload: { enabled: !state.settings.fallbackEnabled } },
    },
    ...neverCloudLines(state),
    { type: 'separator' },
    { label: 'Open dashboard', command: { kind: 'open-dashboard' } },
    { label: 'Copy endpoint URL', command: { kind: 'copy-endpoint' } },
    { label: 'Start at login', type: 'checkbox', checked: startAtLogin, command: { kind: 'toggle-start-at-login' } },
    { type: 'separator' },
    { label: 'Quit copilot-bridge', command: { kind: 'quit' } },
  ];
}

/** Down: no backend can take traffic; degraded: some cannot; busy: requests in flight; else healthy. */
export function trayIconState(state: BridgeState): TrayIconState {
  const usable = state.backends.filter((b) => b.health.status !== 'down' && b.health.circuit !== 'open');
  if (usable.length === 0) return 'down';
  if (usable.length < state.backends.length || state.backends.some((b) => b.health.status === 'failing')) return 'degraded';
  return state.requests.inFlight > 0 ? 'busy' : 'healthy';
}

export function trayTooltip(state: BridgeState, requestsPerMinute: number, failure?: TrayFailure): string {
  const lines = [`copilot-bridge: ${trayIconState(state)}`, `${requestsPerMinute.toFixed(1)} requests/min`];
  // Requests waiting in the bridge for a free Ollama slot.
  if (state.scheduler.queued > 0) lines.push(`${state.scheduler.queued} queued (${describeQueued(queuedPerLane(state.scheduler))})`);
  const figures = state.gpu.live ? state.gpu.gpus : [];
  for (const gpu of figures) lines.push(`GPU ${gpu.index}: ${gib(gpu.memoryUsedBytes)} / ${gib(gpu.memoryTotalBytes)} GiB`);
  if (figures.length === 0) lines.push('no GPU figures');
  lines.push(`Today: ${state.today.requests} requests, ${dollarsOf(state.today.savedDollars, 3)} saved vs cloud`);
  if (failure !== undefined) lines.push(failureText(failure));
  return lines.join('\n');
}

/** Everything the tray shows. */
export interface TrayView {
  icon: TrayIconState;
  tooltip: string;
  menu: MenuItemSpec[];
}

export function trayView(input: TrayInput, requestsPerMinute: number): TrayView {
  return { icon: trayIconState(input.state), tooltip: trayTooltip(input.state, requestsPerMinute, input.failure), menu: buildTrayMenu(input) };
}

/**
 * The parts of the tray that differ from what it shows (all of them when it shows nothing yet).
 * The state changes with every GPU sample and request; a native menu built again for each would
 * cost the shell that much work, mostly to show the same.
 */
export function trayChanges(shown: TrayView | undefined, next: TrayView): { icon: boolean; tooltip: boolean; menu: boolean } {
  return {
    icon: shown?.icon !== next.icon,
    tooltip: shown?.tooltip !== next.tooltip,
    // Menu items are plain data (commands, not callbacks): equal JSON is an equal menu.
    menu: shown === undefined || JSON.stringify(shown.menu) !== JSON.stringify(next.menu),
  };
}
