import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { startBridge, type BridgeHandle } from '../src/bridge.js';
import type { BridgeState } from '../src/contract/index.js';
import { loadConfig } from '../src/config/load.js';
import { failureText, trayChanges, trayView, type MenuItemSpec, type TrayCommand, type TrayFailure, type TrayIconState, type TrayView } from './tray-menu.js';

/**
 * The desktop shell's logic, written against a small adapter instead of Electron itself, so it is
 * tested without the Electron binary; electron/main.ts gives it the real thing.
 */

export interface TrayHandle {
  setImage(state: TrayIconState): void;
  setToolTip(text: string): void;
  /** Replaces the whole menu; clicking an item runs its command (settled when the command and the menu refresh are done). */
  setMenu(items: MenuItemSpec[], run: (command: TrayCommand) => Promise<void>): void;
}

export interface WindowHandle {
  show(): void;
  /** Called when the user closes the window; return true to keep it (hidden) instead. */
  onClose(handler: () => boolean): void;
  isDestroyed(): boolean;
}

export interface DesktopAdapter {
  requestSingleInstanceLock(): boolean;
  /** The app was started again (on macOS: reopened, as a second launch starts no second instance there). */
  onSecondInstance(listener: () => void): void;
  whenReady(): Promise<void>;
  /** The app's own data folder (config.yaml, history, logs). */
  userDataDir(): string;
  createTray(): TrayHandle;
  /** A window showing `url`, locked to `origin` (contextIsolation, sandbox, no navigation away). */
  createWindow(url: string, origin: string): WindowHandle;
  copyText(text: string): void;
  getStartAtLogin(): boolean;
  setStartAtLogin(enabled: boolean): void;
  /** Runs `cleanup` before the app exits, whatever asked it to quit. */
  onQuit(cleanup: () => Promise<void>): void;
  quit(): void;
  log(message: string, error?: unknown): void;
  /** A desktop notification: the word to whoever just clicked, who is not looking at the log. */
  notify(text: string): void;
}

export interface Desktop {
  bridge: BridgeHandle;
  openDashboard(): void;
  run(command: TrayCommand): Promise<void>;
  /** What the tray shows now (for automation and tests). */
  tray(): TrayView;
}

/** The bridge for the desktop: config.yaml and all data in the app's folder, environment on top. */
export async function startDesktopBridge(userData: string, env: NodeJS.ProcessEnv): Promise<BridgeHandle> {
  const file = path.join(userData, 'config.yaml');
  const loaded = loadConfig({ file: existsSync(file) ? file : undefined, env: { BRIDGE_DATA_DIR: userData, ...env } });
  // A tray app has no terminal to log to: its log goes to the data folder too.
  const logging = loaded.monitoring.logging;
  const config =
    logging.destination === 'stdout'
      ? { ...loaded, monitoring: { ...loaded.monitoring, logging: { ...logging, destination: path.join(userData, 'logs') } } }
      : loaded;
  const onPort = (port: number): Promise<BridgeHandle> => startBridge({ ...config, server: { ...config.server, port } });
  const taken = (error: unknown): boolean => /already in use/.test((error as Error).message);
  try {
    return await startBridge(config);
  } catch (error) {
    if (!taken(error)) throw error;
  }
  // The configured port is taken (another bridge, a headless one; on macOS AirPlay Receiver holds
  // 5000): the free port picked last time, so clients set up with that endpoint still reach the app.
  const portFile = path.join(userData, 'fallback-port');
  const remembered = existsSync(portFile) ? Number(readFileSync(portFile, 'utf8').trim()) : NaN;
  if (Number.isInteger(remembered) && remembered > 0 && remembered <= 65535) {
    try {
      return await onPort(remembered);
    } catch (error) {
      if (!taken(error)) throw error;
    }
  }
  const bridge = await onPort(0);
  writeFileSync(portFile, `${new URL(bridge.url).port}\n`);
  return bridge;
}

/** Over the last five minutes: every record in memory from then on (oldest first), not a fixed number of the newest. */
function requestsPerMinute(bridge: BridgeHandle): number {
  const since = Date.now() - 5 * 60_000;
  const records = bridge.history.recent();
  let count = 0;
  while (count < records.length && Date.parse(records.at(-1 - count)?.time ?? '') >= since) count += 1;
  return count / 5;
}

export async function startDesktop(adapter: DesktopAdapter, env: NodeJS.ProcessEnv = process.env): Promise<Desktop | undefined> {
  if (!adapter.requestSingleInstanceLock()) {
    adapter.quit();
    return undefined;
  }
  await adapter.whenReady();
  const bridge = await startDesktopBridge(adapter.userDataDir(), env);
  const origin = new URL(bridge.url).origin;
  let window: WindowHandle | undefined;
  let quitting = false;

  const openDashboard = (): void => {
    if (window === undefined || window.isDestroyed()) {
      // Encoded: a configured token may hold characters the fragment's form reads otherwise (+, &, %, #).
      window = adapter.createWindow(`${bridge.url}/ui/#token=${encodeURIComponent(bridge.controlToken)}`, origin);
      // Closing hides the window: the app lives on in the tray until Quit.
      window.onClose(() => !quitting);
    }
    window.show();
  };

  const tray = adapter.createTray();
  let shown: TrayView | undefined;
  let failure: TrayFailure | undefined;
  const perform = async (command: TrayCommand): Promise<void> => {
    switch (command.kind) {
      case 'action':
        await bridge.actions.run(command.name, command.payload as never);
        break;
      case 'open-dashboard':
        openDashboard();
        break;
      case 'copy-endpoint':
        adapter.copyText(bridge.url);
        break;
      case 'toggle-start-at-login':
        adapter.setStartAtLogin(!adapter.getStartAtLogin());
        break;
      case 'quit':
        adapter.quit();
        break;
    }
  };
  // A menu click has no one to hand an error to: whoever clicked is told why instead, and the log keeps it.
  const run = async (command: TrayCommand): Promise<void> => {
    try {
      await perform(command);
      failure = undefined;
    } catch (error) {
      adapter.log(`${command.kind === 'action' ? command.name : command.kind} failed`, error);
      failure = { command, message: error instanceof Error ? error.message : String(error) };
      adapter.notify(failureText(failure));
    }
    if (command.kind !== 'quit') refresh(bridge.state);
  };
  const refresh = (state: BridgeState): TrayView => {
    const next = trayView({ state, startAtLogin: adapter.getStartAtLogin(), failure }, requestsPerMinute(bridge));
    const changed = trayChanges(shown, next);
    if (changed.icon) tray.setImage(next.icon);
    if (changed.tooltip) tray.setToolTip(next.tooltip);
    if (changed.menu) tray.setMenu(next.menu, run);
    shown = next;
    return next;
  };
  refresh(bridge.state);
  bridge.onStateChange(refresh);

  adapter.onSecondInstance(openDashboard);
  adapter.onQuit(async () => {
    quitting = true;
    // Stops managed Ollama instances and flushes the history file.
    await bridge.stop(2000);
  });
  return { bridge, openDashboard, run, tray: () => shown ?? refresh(bridge.state) };
}
