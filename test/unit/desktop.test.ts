import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createServer, type AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import { startDesktop, type DesktopAdapter, type WindowHandle } from '../../electron/desktop.js';
import type { MenuItemSpec, TrayCommand, TrayIconState } from '../../electron/tray-menu.js';
import { startStandIn } from '../support/bridge.js';
import { sampleRecord } from '../support/history.js';
import { fakeOllamaBinary } from '../support/fake-ollama.js';
import { freePort } from '../support/ollama-rig.js';
import { childProcessConfig, markedProcesses, processMark } from '../support/processes.js';
import { tempDir } from '../support/temp.js';
import { until } from '../support/wait.js';

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** Electron, played by a recorder. */
class FakeElectron implements DesktopAdapter {
  lock = true;
  quits = 0;
  startAtLogin = false;
  copied: string[] = [];
  notices: string[] = [];
  images: TrayIconState[] = [];
  tooltips: string[] = [];
  menu: MenuItemSpec[] = [];
  menusSet = 0;
  runMenu: (command: TrayCommand) => Promise<void> = async () => undefined;
  windows: Array<{ url: string; origin: string; shows: number; onClose: () => boolean; destroyed: boolean }> = [];
  secondInstance: () => void = () => undefined;
  cleanup: () => Promise<void> = async () => undefined;

  constructor(private readonly userData: string) {}

  requestSingleInstanceLock = (): boolean => this.lock;
  onSecondInstance = (listener: () => void): void => {
    this.secondInstance = listener;
  };
  whenReady = async (): Promise<void> => undefined;
  userDataDir = (): string => this.userData;
  createTray = () => ({
    setImage: (state: TrayIconState) => this.images.push(state),
    setToolTip: (text: string) => this.tooltips.push(text),
    setMenu: (items: MenuItemSpec[], run: (command: TrayCommand) => Promise<void>) => {
      this.menu = items;
      this.menusSet += 1;
      this.runMenu = run;
    },
  });
  createWindow = (url: string, origin: string): WindowHandle => {
    const record = { url, origin, shows: 0, onClose: () => false, destroyed: false };
    this.windows.push(record);
    return {
      show: () => {
        record.shows += 1;
      },
      onClose: (handler) => {
        record.onClose = handler;
      },
      isDestroyed: () => record.destroyed,
    };
  };
  copyText = (text: string): void => {
    this.copied.push(text);
  };
  getStartAtLogin = (): boolean => this.startAtLogin;
  /** Why setting the login item fails, when it does (a config folder that cannot be written). */
  loginItemError: Error | undefined;
  setStartAtLogin = (enabled: boolean): void => {
    if (this.loginItemError !== undefined) throw this.loginItemError;
    this.startAtLogin = enabled;
  };
  onQuit = (cleanup: () => Promise<void>): void => {
    this.cleanup = cleanup;
  };
  quit = (): void => {
    this.quits += 1;
  };
  log = (): void => undefined;
  notify = (text: string): void => {
    this.notices.push(text);
  };

  /** Finds a menu item by its path of labels and clicks it. */
  async click(...labels: string[]): Promise<void> {
    let items = this.menu;
    let found: MenuItemSpec | undefined;
    for (const label of labels) {
      found = items.find((i) => i.label === label);
      assert.ok(found, `no "${label}" in ${JSON.stringify(items.map((i) => i.label))}`);
      items = found.submenu ?? [];
    }
    assert.ok(found?.command, `"${labels.join(' > ')}" has no command`);
    await this.runMenu(found.command);
  }
}

/** The desktop app over one backend at `url`, without GPU monitoring or managed Ollama. */
async function desktopOver(url: string, moreConfig = ''): Promise<{ fake: FakeElectron; desktop: NonNullable<Awaited<ReturnType<typeof startDesktop>>> }> {
  const userData = tempDir('desktop-');
  writeFileSync(
    path.join(userData, 'config.yaml'),
    `server:\n  port: 0\nbackends:\n  - { name: gpu0, url: "${url}" }\ngpu_monitor:\n  enabled: false\nollama:\n  autostart: false\n${moreConfig}`,
  );
  const fake = new FakeElectron(userData);
  const desktop = await startDesktop(fake, {});
  assert.ok(desktop);
  return { fake, desktop };
}

describe('desktop shell (main-process wiring, without the Electron binary)', () => {
  it('quits at once when another instance already runs', async () => {
    const fake = new FakeElectron(tempDir('desktop-'));
    fake.lock = false;
    assert.equal(await startDesktop(fake, {}), undefined);
    assert.equal(fake.quits, 1);
    assert.equal(fake.windows.length, 0);
  });

  it('on a taken port starts on a free one, and the failed try leaves no process behind', async () => {
    const mark = processMark();
    process.env[mark.name] = mark.value;
    cleanups.push(async () => {
      delete process.env[mark.name];
    });
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((resolve) => taken.close(() => resolve())));
    const takenPort = (taken.address() as AddressInfo).port;
    const userData = tempDir('desktop-');
    writeFileSync(path.join(userData, 'config.yaml'), `server:\n  port: ${takenPort}\n${await childProcessConfig()}`);
    const fake = new FakeElectron(userData);
    const desktop = await startDesktop(fake, {});
    assert.ok(desktop);
    assert.notEqual(new URL(desktop.bridge.url).port, String(takenPort));
    // The failed try started no Ollama of its own, so the second one started it rather than adopting a leftover.
    assert.equal(desktop.bridge.state.ollama[0]?.state, 'running');
    const running = markedProcesses(mark);
    assert.equal(running.filter((p) => p.includes('serve.mjs')).length, 1, running.join('\n'));
    assert.equal(running.filter((p) => p.includes('nvidia-smi-standin.mjs') && p.includes('-lms')).length, 1, running.join('\n'));
    await fake.cleanup();
    assert.deepEqual(markedProcesses(mark), []);
  });

  it('on a port taken at every start (AirPlay Receiver holds 5000 on macOS) keeps the free port it picked the first time', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((resolve) => taken.close(() => resolve())));
    const takenPort = (taken.address() as AddressInfo).port;
    const userData = tempDir('desktop-');
    writeFileSync(path.join(userData, 'config.yaml'), `server:\n  port: ${takenPort}\ngpu_monitor:\n  command: /nonexistent/nvidia-smi\n`);
    const first = new FakeElectron(userData);
    const firstDesktop = await startDesktop(first, {});
    const picked = new URL(firstDesktop?.bridge.url ?? '').port;
    assert.notEqual(picked, String(takenPort));
    await first.cleanup();

    const again = new FakeElectron(userData);
    const desktop = await startDesktop(again, {});
    cleanups.push(() => again.cleanup());
    assert.equal(new URL(desktop?.bridge.url ?? '').port, picked, 'the endpoint clients were given still answers');
  });

  it('survives an upstream whose token counts are text or negative: the app keeps serving', async () => {
    const upstream = await startStandIn(
      (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        res.end(
          '{"model":"m","created_at":"2025-01-01T00:00:00Z","message":{"role":"assistant","content":"x"},"done":true,"eval_count":"12","prompt_eval_count":-5}\n',
        );
      },
      ['m:latest'],
    );
    cleanups.push(() => upstream.close());
    const { fake, desktop } = await desktopOver(upstream.url);
    const recorded = new Promise<void>((resolve) => desktop.bridge.history.onRecord(() => resolve()));
    const chat = await fetch(`${desktop.bridge.url}/api/chat`, {
      method: 'POST',
      body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'x' }] }),
    });
    assert.equal(chat.status, 200);
    await chat.text();
    // The request was recorded (history and metrics) after its answer: the process is still here to say so.
    await recorded;
    assert.equal((await fetch(`${desktop.bridge.url}/health`)).status, 200);
    const record = desktop.bridge.history.recent().at(-1);
    // The counts that were not numbers were dropped, not added up: they are unknown.
    assert.deepEqual([record?.tokensIn, record?.tokensOut], [null, null]);
    await fake.cleanup();
  });

  it('counts every request of the last five minutes in the tooltip, however many there were', async () => {
    const upstream = await startStandIn((_req, res) => res.end(), ['m:latest']);
    cleanups.push(() => upstream.close());
    const { fake, desktop } = await desktopOver(upstream.url);
    cleanups.push(() => fake.cleanup());
    // A busy morning: 3000 requests in the last minute, 600 a minute over five.
    const now = Date.now();
    for (let i = 0; i < 3000; i++) desktop.bridge.history.add(sampleRecord({ id: `r${i}`, time: new Date(now - i * 10).toISOString() }));
    await fake.click('Start at login');
    assert.match(fake.tooltips.at(-1) ?? '', /\n600\.0 requests\/min\n/);
  });

  it('sets the tray menu again only when what it shows changed, not on every change of the state', async () => {
    const upstream = await startStandIn((_req, res) => res.end(), ['m:latest']);
    cleanups.push(() => upstream.close());
    const { fake, desktop } = await desktopOver(upstream.url);
    cleanups.push(() => fake.cleanup());
    await until(
      () => (fake.menu.find((i) => i.label === 'Simple model')?.submenu?.some((i) => i.label === 'm:latest') ? true : undefined),
      'the model in the tray',
    );
    const menus = fake.menusSet;
    // A finished request changes the state and the tooltip (today's count), not the menu.
    desktop.bridge.history.add(sampleRecord({ id: 'one', time: new Date().toISOString() }));
    await until(() => (/Today: 1 requests/.test(fake.tooltips.at(-1) ?? '') ? true : undefined), 'the request in the tooltip');
    assert.equal(fake.menusSet, menus);
    await fake.click('Dual-GPU mode');
    assert.equal(fake.menusSet, menus + 1);
  });

  it('tells whoever clicked a tray item that its action failed, and why, until an action succeeds', async () => {
    const upstream = await startStandIn((_req, res) => res.end(), ['m:latest']);
    cleanups.push(() => upstream.close());
    const { fake, desktop } = await desktopOver(upstream.url);
    cleanups.push(() => fake.cleanup());
    // No cloud provider is configured: the bridge refuses to turn the fallback on.
    await desktop.run({ kind: 'action', name: 'setFallback', payload: { enabled: true } });
    const words = 'Could not turn cloud fallback on or off: no cloud provider is configured (fallback.providers): there is nothing to fall back to';
    assert.deepEqual(fake.notices, [words]);
    assert.equal(fake.menu[0]?.label, words.slice(0, 120));
    assert.equal(fake.tooltips.at(-1)?.split('\n').at(-1), words);
    await fake.click('Dual-GPU mode');
    assert.ok(!fake.menu.some((i) => i.label?.startsWith('Could not')));
    assert.doesNotMatch(fake.tooltips.at(-1) ?? '', /Could not/);
    assert.equal(fake.notices.length, 1);
    // Not only control actions: an item of the app itself may fail as well.
    fake.loginItemError = new Error("EACCES: permission denied, open '/home/me/.config/autostart/copilot-bridge.desktop'");
    await fake.click('Start at login');
    assert.equal(fake.notices.at(-1), `Could not turn start at login on or off: ${fake.loginItemError.message}`);
    assert.equal(fake.menu.find((i) => i.label === 'Start at login')?.checked, false);
  });

  it('hands the dashboard a configured control token as it is, whatever characters it has', async () => {
    const upstream = await startStandIn((_req, res) => res.end(), ['m:latest']);
    cleanups.push(() => upstream.close());
    const token = 'a+b&c%d=e#f g-0123456789';
    const { fake, desktop } = await desktopOver(upstream.url, `control:\n  token: "${token}"\n`);
    cleanups.push(() => fake.cleanup());
    desktop.openDashboard();
    // The page reads the fragment as the browser's URLSearchParams does.
    assert.equal(new URLSearchParams(new URL(fake.windows[0]?.url ?? '').hash.slice(1)).get('token'), token);
  });

  it('runs the bridge from the app folder, and every tray item does what it says on a real bridge', async () => {
    const userData = tempDir('desktop-');
    const upstream = await startStandIn((_req, res) => res.end('{}'), ['qwen2.5-coder:1.5b', 'qwen2.5-coder:7b-instruct-q8_0']);
    const cloud = await startStandIn((_req, res) => res.end('{}'));
    const managedPort = await freePort();
    writeFileSync(
      path.join(userData, 'config.yaml'),
      `server:
  port: 0
ollama:
  binary: ${fakeOllamaBinary()}
backends:
  - { name: gpu0, url: "${upstream.url}", gpu: 0 }
  - { name: gpu1, url: "http://127.0.0.1:${managedPort}", gpu: 1, manage: true }
gpu_monitor:
  command: /nonexistent/nvidia-smi
fallback:
  providers:
    - { name: cloud, type: openai, base_url: "${cloud.url}/v1", model: gpt-test }
`,
    );
    const fake = new FakeElectron(userData);
    const desktop = await startDesktop(fake, {});
    assert.ok(desktop);
    const { bridge } = desktop;
    cleanups.push(
      () => bridge.stop(100),
      () => upstream.close(),
      () => cloud.close(),
    );

    // Config, history, logs and the control token live in the app's folder.
    assert.equal(bridge.config.data_dir, userData);
    assert.equal(bridge.config.monitoring.logging.destination, path.join(userData, 'logs'));
    assert.equal(readFileSync(path.join(userData, 'control-token'), 'utf8'), bridge.controlToken);
    assert.equal(fake.images.at(-1), 'healthy');
    assert.match(fake.tooltips.at(-1) ?? '', /^copilot-bridge: healthy\n0\.0 requests\/min\nno GPU figures\nToday: 0 requests, \$0\.000 saved vs cloud$/);

    // The model list arrives after the start; the tray shows it when it does.
    await until(
      () => (fake.menu.find((i) => i.label === 'Simple model')?.submenu?.some((i) => i.label === 'qwen2.5-coder:7b-instruct-q8_0') ? true : undefined),
      'the models in the tray',
    );
    await fake.click('Dual-GPU mode');
    assert.equal(bridge.state.settings.dualGpu, true);
    await fake.click('Dual-GPU mode');
    assert.equal(bridge.state.settings.dualGpu, false);
    await fake.click('Simple model', 'qwen2.5-coder:7b-instruct-q8_0');
    assert.equal(bridge.state.settings.models.simple, 'qwen2.5-coder:7b-instruct-q8_0');
    await fake.click('Complex model', 'qwen2.5-coder:1.5b');
    assert.equal(bridge.state.settings.models.complex, 'qwen2.5-coder:1.5b');
    await fake.click('Cloud fallback');
    assert.equal(bridge.state.settings.fallbackEnabled, true);

    const ollama = (): string | undefined => bridge.state.ollama.find((i) => i.name === 'gpu1')?.state;
    assert.equal(ollama(), 'running');
    await fake.click('Ollama on GPU 1', 'Stop');
    assert.equal(ollama(), 'stopped');
    await assert.rejects(fetch(`http://127.0.0.1:${managedPort}/api/version`));
    await fake.click('Ollama on GPU 1', 'Start');
    await until(() => (ollama() === 'running' ? true : undefined), 'Ollama on GPU 1 to run');
    const pid = bridge.state.ollama.find((i) => i.name === 'gpu1')?.pid;
    await fake.click('Ollama on GPU 1', 'Restart');
    await until(() => (ollama() === 'running' && bridge.state.ollama.find((i) => i.name === 'gpu1')?.pid !== pid ? true : undefined), 'a new Ollama on GPU 1');

    await fake.click('Open dashboard');
    assert.equal(fake.windows.length, 1);
    assert.equal(fake.windows[0]?.url, `${bridge.url}/ui/#token=${bridge.controlToken}`);
    assert.equal(fake.windows[0]?.origin, new URL(bridge.url).origin);
    await fake.click('Open dashboard');
    assert.equal(fake.windows.length, 1, 'the window is reused');
    assert.equal(fake.windows[0]?.shows, 2);
    assert.equal(fake.windows[0]?.onClose(), true, 'closing hides the window while the app runs');
    fake.secondInstance();
    assert.equal(fake.windows[0]?.shows, 3, 'a second launch shows the window');

    await fake.click('Copy endpoint URL');
    assert.deepEqual(fake.copied, [bridge.url]);
    await fake.click('Start at login');
    assert.equal(fake.startAtLogin, true);
    assert.equal(fake.menu.find((i) => i.label === 'Start at login')?.checked, true);
    await fake.click('Quit copilot-bridge');
    assert.equal(fake.quits, 1);

    // The quit path: managed Ollama stopped, history flushed, the bridge closed.
    await fetch(`${bridge.url}/api/chat`, { method: 'POST', body: '{"model":"qwen2.5-coder:1.5b","messages":[]}' }).then((r) => r.text());
    await fake.cleanup();
    assert.equal(fake.windows[0]?.onClose(), false, 'while quitting, closing really closes');
    assert.equal(bridge.state.ollama.find((i) => i.name === 'gpu1')?.state, 'stopped');
    await assert.rejects(fetch(`http://127.0.0.1:${managedPort}/api/version`));
    await assert.rejects(fetch(`${bridge.url}/health`));
    assert.match(readFileSync(path.join(userData, 'logs', 'copilot-bridge.log'), 'utf8'), /"msg":"bridge listening"/);
    const historyFile = path.join(userData, 'history.jsonl');
    assert.ok(existsSync(historyFile));
    assert.equal(readFileSync(historyFile, 'utf8').trim().split('\n').length, 1);
  });
});
