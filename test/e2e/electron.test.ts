import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { describe, it } from 'node:test';
import { _electron, type ElectronApplication } from 'playwright-core';
import type { Desktop } from '../../electron/desktop.js';
import { startStandIn, type StandIn } from '../support/bridge.js';
import { freePort } from '../support/ollama-rig.js';
import { tempDir } from '../support/temp.js';

/**
 * The real desktop app in Electron, driven by Playwright. It needs an Electron binary
 * (ELECTRON_PATH, or the one `npm start` fetches into node_modules) and a display (run it under
 * xvfb-run on a headless machine); elsewhere it reports itself as skipped.
 */

const require = createRequire(import.meta.url);

function electronBinary(): string | undefined {
  if (process.env.ELECTRON_PATH) return process.env.ELECTRON_PATH;
  if (!existsSync('node_modules/electron/path.txt')) return undefined;
  const binary = require('electron') as unknown as string;
  return existsSync(binary) ? binary : undefined;
}

const binary = electronBinary();
const skip =
  binary === undefined
    ? 'no Electron binary (set ELECTRON_PATH, or run npm start once to fetch it)'
    : process.env.DISPLAY === undefined && process.env.WAYLAND_DISPLAY === undefined
      ? 'no display (run under xvfb-run)'
      : false;
if (skip !== false) process.stderr.write(`\n!!! SKIPPING the Electron app test: ${skip}\n\n`);

describe('the desktop app in Electron', () => {
  // The whole scenario is one test, so that without a binary it counts as one skipped test.
  it('starts the bridge with its tray, opens the dashboard and toggles dual-GPU from it', { skip }, async () => {
    const upstream: StandIn = await startStandIn((_req, res) => res.end('{}'), ['qwen2.5-coder:1.5b']);
    const userData = tempDir('electron-app-');
    const port = await freePort();
    writeFileSync(
      path.join(userData, 'config.yaml'),
      `server:\n  port: ${port}\nbackends:\n  - { name: gpu0, url: "${upstream.url}" }\n  - { name: gpu1, url: "${upstream.url}" }\n`,
    );
    const app: ElectronApplication = await _electron.launch({
      executablePath: binary,
      args: ['dist/app/electron/main.js'],
      env: { ...process.env, COPILOT_BRIDGE_USER_DATA: userData },
    });
    try {
      await app.evaluate(async () => {
        for (let i = 0; i < 100 && (globalThis as { copilotBridge?: unknown }).copilotBridge === undefined; i++) await new Promise((r) => setTimeout(r, 100));
      });
      assert.ok(readFileSync(path.join(userData, 'control-token'), 'utf8').length > 16);
      const tray = await app.evaluate(() => ((globalThis as { copilotBridge?: Desktop }).copilotBridge as Desktop).tray());
      assert.equal(tray.icon, 'healthy');
      assert.ok(tray.menu.some((item) => item.label === 'Dual-GPU mode' && item.checked === false));
      assert.equal(((await (await fetch(`http://127.0.0.1:${port}/health`)).json()) as { status: string }).status, 'ok');

      await app.evaluate(() => ((globalThis as { copilotBridge?: Desktop }).copilotBridge as Desktop).openDashboard());
      const page = await app.firstWindow();
      await page.getByTestId('health').waitFor();
      await page.getByRole('tab', { name: 'Connect' }).click();
      await page.getByText('Dual-GPU mode').click();
      await page.waitForFunction(() => (document.querySelector('[data-testid="toggle-dual"]') as HTMLInputElement).checked);
      const state = (await (await fetch(`http://127.0.0.1:${port}/bridge/api/state`)).json()) as { settings: { dualGpu: boolean } };
      assert.equal(state.settings.dualGpu, true);
      const after = await app.evaluate(() => ((globalThis as { copilotBridge?: Desktop }).copilotBridge as Desktop).tray());
      assert.ok(after.menu.some((item) => item.label === 'Dual-GPU mode' && item.checked === true));
    } finally {
      await app.close();
      await upstream.close();
    }
  });
});
