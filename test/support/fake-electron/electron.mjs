// A stand-in for the `electron` module, to run electron/main.js under plain Node in tests. It keeps
// what main.js does with Electron's API and reports it as JSON lines on stdout; the test steers it
// with the FAKE_ELECTRON_SCRIPT environment variable (a list of steps).
import { EventEmitter } from 'node:events';

const report = (event, data = {}) => process.stdout.write(`${JSON.stringify({ fake: event, ...data })}\n`);
const appEvents = new EventEmitter();
let userData = '/tmp';
let openAtLogin = false;
let quitting = false;
const windows = [];
let tray;

export const app = {
  isPackaged: false,
  requestSingleInstanceLock: () => true,
  whenReady: () => Promise.resolve(),
  getPath: () => userData,
  getAppPath: () => process.cwd(),
  setPath: (_name, value) => {
    userData = value;
  },
  on: (event, listener) => appEvents.on(event, listener),
  getLoginItemSettings: () => ({ openAtLogin }),
  setLoginItemSettings: ({ openAtLogin: value }) => {
    openAtLogin = value;
    report('login', { openAtLogin });
  },
  quit: () => {
    const event = {
      defaultPrevented: false,
      preventDefault() {
        this.defaultPrevented = true;
      },
    };
    appEvents.emit('before-quit', event);
    if (!event.defaultPrevented && !quitting) {
      quitting = true;
      report('exited');
      process.exit(0);
    }
  },
  exit: (code) => process.exit(code),
};

export const nativeImage = { createFromPath: (path) => ({ path }) };

export class Tray {
  constructor(image) {
    this.image = image;
    // The stand-in keeps the last tray so the test can inspect what the app did with it.
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    tray = this;
    report('tray', { image: image.path });
  }
  setImage(image) {
    this.image = image;
  }
  setToolTip(text) {
    this.tooltip = text;
  }
  setContextMenu(menu) {
    this.menu = menu;
    report('menu', { labels: menu.map((item) => item.label ?? '-'), tooltip: this.tooltip, image: this.image.path });
  }
}

export const Menu = { buildFromTemplate: (template) => template };

export class BrowserWindow {
  constructor(options) {
    this.options = options;
    this.handlers = {};
    const contents = new EventEmitter();
    contents.setWindowOpenHandler = (handler) => {
      this.openHandler = handler;
    };
    contents.session = { setPermissionRequestHandler: (handler) => (this.permissions = handler) };
    this.webContents = contents;
    windows.push(this);
  }
  loadURL(url) {
    this.url = url;
    report('window', { url, webPreferences: this.options.webPreferences });
    return Promise.resolve();
  }
  once() {}
  on(event, handler) {
    this.handlers[event] = handler;
  }
  show() {}
  focus() {}
  hide() {
    report('hidden');
  }
  isDestroyed() {
    return false;
  }
}

export class Notification {
  static isSupported() {
    return true;
  }
  constructor({ title, body }) {
    this.title = title;
    this.body = body;
  }
  show() {
    report('notification', { title: this.title, body: this.body });
  }
}

export const clipboard = { writeText: (text) => report('clipboard', { text }) };
export const shell = { openExternal: (url) => report('external', { url }) };

/** Steps the test asks for, run once the tray has its first menu. */
function click(labels) {
  let items = tray.menu;
  let item;
  for (const label of labels) {
    item = items.find((i) => i.label === label);
    items = item?.submenu ?? [];
  }
  item.click();
}

const steps = JSON.parse(process.env.FAKE_ELECTRON_SCRIPT ?? '[]');
const waitForMenu = setInterval(async () => {
  if (tray?.menu === undefined) return;
  clearInterval(waitForMenu);
  for (const step of steps) {
    await new Promise((resolve) => setTimeout(resolve, 150));
    if (step.click) click(step.click);
    if (step.navigate) {
      const event = {
        defaultPrevented: false,
        preventDefault() {
          this.defaultPrevented = true;
        },
      };
      windows[0].webContents.emit('will-navigate', event, step.navigate);
      report('navigated', { url: step.navigate, blocked: event.defaultPrevented });
    }
    if (step.open) report('open', { url: step.open, answer: windows[0].openHandler({ url: step.open }) });
    if (step.permission) windows[0].permissions(null, step.permission, (granted) => report('permission', { name: step.permission, granted }));
    if (step.close) {
      const event = {
        defaultPrevented: false,
        preventDefault() {
          this.defaultPrevented = true;
        },
      };
      windows[0].handlers.close(event);
      report('closed', { kept: event.defaultPrevented });
    }
    if (step.secondInstance) appEvents.emit('second-instance');
    // macOS reopening the running app: its Dock icon clicked, or the app launched again.
    if (step.activate) appEvents.emit('activate', {}, false);
  }
}, 50);
