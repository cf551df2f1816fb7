import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { app, BrowserWindow, clipboard, Menu, nativeImage, Notification, shell, Tray, type MenuItemConstructorOptions } from 'electron';
import { autostartCommand, autostartFile, xdgLoginItem } from './autostart.js';
import { startDesktop, type DesktopAdapter, type TrayHandle, type WindowHandle } from './desktop.js';
import type { MenuItemSpec, TrayCommand, TrayIconState } from './tray-menu.js';

/** The Electron main process: the desktop logic with Electron's own tray, windows and app. */

const here = path.dirname(fileURLToPath(import.meta.url));
// Packaged: tray icons are extraResources; from source: build/tray in the repository.
const trayDir = app.isPackaged ? path.join(process.resourcesPath, 'tray') : path.join(here, '..', '..', '..', 'build', 'tray');

// A second app data folder for tests and side-by-side runs.
if (process.env.COPILOT_BRIDGE_USER_DATA) app.setPath('userData', process.env.COPILOT_BRIDGE_USER_DATA);

function toTemplate(items: MenuItemSpec[], run: (command: TrayCommand) => Promise<void>): MenuItemConstructorOptions[] {
  return items.map((item) => ({
    label: item.label,
    type: item.type,
    checked: item.checked,
    enabled: item.enabled,
    submenu: item.submenu === undefined ? undefined : toTemplate(item.submenu, run),
    click: item.command === undefined ? undefined : () => void run(item.command as TrayCommand),
  }));
}

const isWeb = (url: string): boolean => /^https?:\/\//i.test(url);

// Electron's login items are macOS's and Windows' only: Linux desktops start what the XDG autostart folder lists.
const loginItem =
  process.platform === 'linux'
    ? xdgLoginItem(
        autostartFile(process.env, os.homedir()),
        autostartCommand({ packaged: app.isPackaged, execPath: process.execPath, appPath: app.getAppPath(), env: process.env }),
      )
    : { get: () => app.getLoginItemSettings().openAtLogin, set: (enabled: boolean) => app.setLoginItemSettings({ openAtLogin: enabled }) };

const adapter: DesktopAdapter = {
  requestSingleInstanceLock: () => app.requestSingleInstanceLock(),
  onSecondInstance: (listener) => {
    app.on('second-instance', listener);
    // macOS starts no second instance: launching the app again, or clicking its Dock icon, reopens this one.
    app.on('activate', listener);
  },
  whenReady: () => app.whenReady(),
  userDataDir: () => app.getPath('userData'),
  createTray(): TrayHandle {
    const icon = (state: TrayIconState) => nativeImage.createFromPath(path.join(trayDir, `${state}.png`));
    const tray = new Tray(icon('healthy'));
    return {
      setImage: (state) => tray.setImage(icon(state)),
      setToolTip: (text) => tray.setToolTip(text),
      // Always a context menu (Linux shows nothing without one), built anew when what it shows changed.
      setMenu: (items, run) => tray.setContextMenu(Menu.buildFromTemplate(toTemplate(items, run))),
    };
  },
  createWindow(url: string, origin: string): WindowHandle {
    const window = new BrowserWindow({
      width: 1280,
      height: 800,
      show: false,
      title: 'copilot-bridge',
      autoHideMenuBar: true,
      webPreferences: { contextIsolation: true, sandbox: true, nodeIntegration: false, webSecurity: true, spellcheck: false },
    });
    const contents = window.webContents;
    // Only the bridge's own pages; links elsewhere open in the browser, and only http(s) ones.
    contents.on('will-navigate', (event, target) => {
      if (new URL(target).origin === origin) return;
      event.preventDefault();
      if (isWeb(target)) void shell.openExternal(target);
    });
    contents.setWindowOpenHandler(({ url: target }) => {
      if (isWeb(target) && new URL(target).origin !== origin) void shell.openExternal(target);
      return { action: 'deny' };
    });
    contents.session.setPermissionRequestHandler((_contents, permission, callback) => callback(permission === 'clipboard-sanitized-write'));
    void window.loadURL(url);
    window.once('ready-to-show', () => window.show());
    return {
      show: () => {
        window.show();
        window.focus();
      },
      onClose: (handler) => {
        window.on('close', (event) => {
          if (handler()) {
            event.preventDefault();
            window.hide();
          }
        });
      },
      isDestroyed: () => window.isDestroyed(),
    };
  },
  copyText: (text) => clipboard.writeText(text),
  getStartAtLogin: () => loginItem.get(),
  setStartAtLogin: (enabled) => loginItem.set(enabled),
  onQuit(cleanup) {
    let done = false;
    app.on('before-quit', (event) => {
      if (done) return;
      event.preventDefault();
      void cleanup().finally(() => {
        done = true;
        app.quit();
      });
    });
  },
  quit: () => app.quit(),
  log: (message, error) => console.error(`copilot-bridge: ${message}`, error),
  // Where the desktop has no notifications, the tray's menu and tooltip still say it.
  notify: (text) => {
    if (Notification.isSupported()) new Notification({ title: 'copilot-bridge', body: text }).show();
  },
};

// A tray app: closing the last window does not quit.
app.on('window-all-closed', () => undefined);

startDesktop(adapter)
  .then((desktop) => {
    // The automation hook: end-to-end tests drive the running app through it (Playwright's evaluate).
    (globalThis as { copilotBridge?: unknown }).copilotBridge = desktop;
  })
  .catch((error: unknown) => {
    console.error('copilot-bridge could not start:', error);
    app.exit(1);
  });
