import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { startStandIn } from '../support/bridge.js';
import { tempDir } from '../support/temp.js';

/**
 * electron/main.js itself (compiled), run under Node with a stand-in `electron` module that records
 * what it is asked to do: the tray and its icon files, the window's security settings, navigation
 * and new-window rules, and the quit path. The real binary runs it in test/e2e/electron.test.ts.
 */

const MAIN = path.resolve('dist/app/electron/main.js');
const REGISTER = path.resolve('test/support/fake-electron/register.mjs');
const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups) await cleanup();
});

type Report = Record<string, unknown> & { fake: string };

/** Where the app's XDG autostart entry goes (start at login on Linux). */
const configHome = tempDir('electron-config-');

async function runMain(steps: unknown[]): Promise<{ reports: Report[]; code: number | null }> {
  const upstream = await startStandIn((_req, res) => res.end('{}'), ['qwen2.5-coder:1.5b']);
  cleanups.push(() => upstream.close());
  const userData = tempDir('electron-main-');
  writeFileSync(
    path.join(userData, 'config.yaml'),
    `server:\n  port: 0\nbackends:\n  - { name: gpu0, url: "${upstream.url}", gpu: 0 }\ngpu_monitor:\n  command: /nonexistent/nvidia-smi\n`,
  );
  const child = spawn(process.execPath, ['--import', REGISTER, MAIN], {
    env: { PATH: process.env.PATH, COPILOT_BRIDGE_USER_DATA: userData, XDG_CONFIG_HOME: configHome, FAKE_ELECTRON_SCRIPT: JSON.stringify(steps) },
  });
  const reports: Report[] = [];
  let pending = '';
  child.stdout.on('data', (chunk: Buffer) => {
    pending += chunk.toString();
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) {
      const parsed = JSON.parse(line) as Report;
      if (typeof parsed.fake === 'string') reports.push(parsed);
    }
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.once('close', (exit) => {
      clearTimeout(timer);
      resolve(exit);
    });
  });
  assert.equal(code, 0, `main.js exited ${code}: ${stderr}`);
  return { reports, code };
}

describe('electron/main.js with a stand-in Electron', () => {
  it('puts a tray up with the state icon, opens a locked-down dashboard window, and quits cleanly', async () => {
    const { reports } = await runMain([
      { click: ['Open dashboard'] },
      { navigate: 'https://example.com/docs' },
      { navigate: 'file:///etc/passwd' },
      { open: 'https://example.com/new' },
      { permission: 'camera' },
      { close: true },
      { click: ['Start at login'] },
      { click: ['Copy endpoint URL'] },
      // No cloud provider is configured: the bridge refuses, and the desktop says so.
      { click: ['Cloud fallback (no provider configured)'] },
      { click: ['Quit copilot-bridge'] },
    ]);
    const tray = reports.find((r) => r.fake === 'tray');
    assert.ok(tray && existsSync(String(tray.image)), `tray icon file ${String(tray?.image)}`);
    assert.match(String(tray.image), /build[/\\]tray[/\\]healthy\.png$/);
    const menu = reports.find((r) => r.fake === 'menu') as Report & { labels: string[]; tooltip: string };
    assert.ok(menu.labels.includes('Dual-GPU mode') && menu.labels.includes('Quit copilot-bridge'));
    assert.match(menu.tooltip, /^copilot-bridge: healthy/);

    const window = reports.find((r) => r.fake === 'window') as Report & { url: string; webPreferences: Record<string, unknown> };
    assert.match(window.url, /^http:\/\/127\.0\.0\.1:\d+\/ui\/#token=[0-9a-f]{48}$/);
    assert.deepEqual(
      {
        contextIsolation: window.webPreferences.contextIsolation,
        sandbox: window.webPreferences.sandbox,
        nodeIntegration: window.webPreferences.nodeIntegration,
        preload: window.webPreferences.preload,
      },
      { contextIsolation: true, sandbox: true, nodeIntegration: false, preload: undefined },
    );
    // Navigation away is blocked; web links go to the browser, anything else nowhere.
    assert.deepEqual(
      reports.filter((r) => r.fake === 'navigated').map((r) => [r.url, r.blocked]),
      [
        ['https://example.com/docs', true],
        ['file:///etc/passwd', true],
      ],
    );
    assert.deepEqual(
      reports.filter((r) => r.fake === 'external').map((r) => r.url),
      ['https://example.com/docs', 'https://example.com/new'],
    );
    assert.deepEqual(reports.find((r) => r.fake === 'open')?.answer, { action: 'deny' });
    assert.equal(reports.find((r) => r.fake === 'permission')?.granted, false);
    // Closing hides: the app lives on in the tray.
    assert.equal(reports.find((r) => r.fake === 'closed')?.kept, true);
    // Electron's login items on macOS and Windows; on Linux, where they do nothing, an XDG autostart entry.
    if (process.platform === 'linux') assert.match(readFileSync(path.join(configHome, 'autostart', 'copilot-bridge.desktop'), 'utf8'), /^Exec=".+"/m);
    else assert.equal(reports.find((r) => r.fake === 'login')?.openAtLogin, true);
    assert.match(String(reports.find((r) => r.fake === 'clipboard')?.text), /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.match(String(reports.find((r) => r.fake === 'notification')?.body), /^Could not turn cloud fallback on or off: no cloud provider is configured/);
    assert.equal(reports.at(-1)?.fake, 'exited');
  });

  it('opens the dashboard when macOS reopens the running app, which starts no second instance there', async () => {
    const { reports } = await runMain([{ activate: true }, { click: ['Quit copilot-bridge'] }]);
    const window = reports.find((r) => r.fake === 'window') as (Report & { url: string }) | undefined;
    assert.match(window?.url ?? '', /^http:\/\/127\.0\.0\.1:\d+\/ui\/#token=[0-9a-f]{48}$/);
    assert.equal(reports.at(-1)?.fake, 'exited');
  });
});
