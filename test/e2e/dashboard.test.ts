import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import type { BridgeHandle } from '../../src/bridge.js';
import { startTestBridge } from '../support/bridge.js';
import { browserSkipReason, launchChromium } from '../support/browser.js';
import { nvidiaSmiStandIn, TWO_GPU_REPLIES } from '../support/gpu.js';
import { RIG_MODELS, rigSkipReason, startRig, type OllamaRig, type RigInstance } from '../support/ollama-rig.js';
import { sampleRecord } from '../support/history.js';
import { configFile } from '../support/temp.js';

/**
 * The dashboard in real Chromium against a real bridge: two real Ollama instances as GPU0/GPU1 and
 * the nvidia-smi stand-in replaying a two-GPU machine. Screenshots of every view, light and dark,
 * go to test-results/screenshots.
 */

const skip = browserSkipReason() ?? rigSkipReason();
const SCREENSHOTS = path.resolve('test-results', 'screenshots');

describe('dashboard in Chromium', { skip }, () => {
  let rig: OllamaRig;
  let bridge: BridgeHandle;
  let browser: Browser;
  let page: Page;
  const pageErrors: string[] = [];

  before(async () => {
    rig = await startRig(2);
    const [gpu0, gpu1] = rig.instances as [RigInstance, RigInstance];
    // Both GPUs warm, as after a while of use: the tiers' preferred GPUs then decide. (The rig's two
    // model names are one file, so a cold GPU would lose every request to the one that holds it.)
    for (const instance of [gpu0, gpu1])
      await (await fetch(`${instance.url}/api/generate`, { method: 'POST', body: JSON.stringify({ model: RIG_MODELS.simple, keep_alive: '30m' }) })).text();
    const smi = nvidiaSmiStandIn(TWO_GPU_REPLIES);
    const file = configFile(`gpu_monitor:
  command: ${smi.command}
  interval_seconds: 0.5
dual_gpu: true
backends:
  - { name: gpu0, url: "${gpu0.url}", gpu: 0 }
  - { name: gpu1, url: "${gpu1.url}", gpu: 1 }
models:
  simple: { name: "${RIG_MODELS.simple}", gpu_preference: 0 }
  complex: { name: "${RIG_MODELS.complex}", gpu_preference: 1 }
routing:
  classification:
    simple_keywords: [format]
    complex_keywords: [architect]
  health:
    interval_seconds: 0.5
`);
    bridge = await startTestBridge({ file });
    browser = await launchChromium();
    page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    page.on('pageerror', (error) => pageErrors.push(error.message));
    page.on('console', (message) => {
      if (message.type() === 'error') pageErrors.push(message.text());
    });
    mkdirSync(SCREENSHOTS, { recursive: true });
    await page.goto(`${bridge.url}/ui/#token=${bridge.controlToken}`);
    await page.getByTestId('gpu-0').waitFor();
  });
  after(async () => {
    await browser?.close();
    await bridge?.stop(100);
    await rig?.stop();
  });

  const chat = async (content: string): Promise<Response> => {
    const response = await fetch(`${bridge.url}/api/chat`, {
      method: 'POST',
      body: JSON.stringify({ model: 'auto', stream: false, messages: [{ role: 'user', content }], options: { num_predict: 4 } }),
    });
    await response.clone().text();
    return response;
  };
  const tab = (name: string) => page.getByRole('tab', { name });

  it('shows each GPU card with the fixture’s numbers', async () => {
    assert.equal(await page.getByTestId('vram-0').innerText(), '27.6 GiB used of 79.6 GiB · 0.5 GiB reserved');
    assert.equal(await page.getByTestId('util-0').innerText(), '100 %');
    assert.equal(await page.getByTestId('temp-0').innerText(), '65 °C');
    assert.equal(await page.getByTestId('power-0').innerText(), '698 W / 700 W');
    assert.equal(await page.getByTestId('vram-1').innerText(), '9.4 GiB used of 79.6 GiB · 0.5 GiB reserved');
    assert.equal(await page.getByTestId('util-1').innerText(), '12 %');
    // GPU 1 reports no power draw: shown as such, not as zero.
    assert.equal(await page.getByTestId('power-1').innerText(), 'n/a / 700 W');
    assert.equal(await page.locator('.gpu .uplot').count(), 2);
  });

  it('shows a request in the history within 2 s, with its tier and backend', async () => {
    await tab('History').click();
    const response = await chat('please format this');
    assert.equal(response.headers.get('x-bridge-tier'), 'simple');
    const row = page.getByTestId('history-row').first();
    await row.waitFor({ timeout: 2000 });
    assert.equal(await row.getAttribute('data-tier'), 'simple');
    assert.equal(await row.getAttribute('data-backend'), response.headers.get('x-bridge-backend'));
    assert.equal(await row.getAttribute('data-lane'), 'interactive');
    assert.match(await row.getByTestId('wait').innerText(), /^\d+ ms$/);
    await row.click();
    const details = page.getByTestId('details');
    await details.waitFor();
    assert.match(await details.innerText(), /simple: keyword 'format'/);
    await page.getByRole('button', { name: 'Close details' }).click();
  });

  it('toggles dual-GPU mode, and the next request goes to the primary', async () => {
    const before = await chat('how should I architect it');
    assert.equal(before.headers.get('x-bridge-backend'), 'gpu1', before.headers.get('x-bridge-route-reason') ?? '');
    await tab('Connect').click();
    const toggle = page.getByTestId('toggle-dual');
    assert.equal(await toggle.isChecked(), true);
    await page.getByText('Dual-GPU mode').click();
    await page.waitForFunction(() => !(document.querySelector('[data-testid="toggle-dual"]') as HTMLInputElement).checked);
    assert.equal(bridge.state.settings.dualGpu, false);
    const after = await chat('how should I architect it');
    assert.equal(after.headers.get('x-bridge-backend'), 'gpu0');
    await page.getByText('Dual-GPU mode').click();
    await page.waitForFunction(() => (document.querySelector('[data-testid="toggle-dual"]') as HTMLInputElement).checked);
    assert.equal(bridge.state.settings.dualGpu, true);
  });

  it('switches a tier’s model, and routing uses it', async () => {
    await tab('Models').click();
    await page.getByLabel('Model of the simple tier').selectOption(RIG_MODELS.complex);
    await page.waitForFunction(
      (model) => (document.querySelector('[aria-label="Model of the simple tier"]') as HTMLSelectElement).value === model,
      RIG_MODELS.complex,
    );
    assert.equal(bridge.state.settings.models.simple, RIG_MODELS.complex);
    const response = await chat('format this');
    assert.equal(response.headers.get('x-bridge-tier'), 'simple');
    assert.equal(response.headers.get('x-bridge-model'), RIG_MODELS.complex);
    await page.getByLabel('Model of the simple tier').selectOption(RIG_MODELS.simple);
    await page.waitForFunction(
      (model) => (document.querySelector('[aria-label="Model of the simple tier"]') as HTMLSelectElement).value === model,
      RIG_MODELS.simple,
    );
  });

  it('narrows the history with filters and search', async () => {
    await tab('History').click();
    const count = async (): Promise<number> => Number((await page.getByTestId('row-count').innerText()).split(' ')[0]);
    const all = await count();
    assert.ok(all >= 4, `${all} rows`);
    await page.getByTestId('filter-tier').selectOption('complex');
    const complex = await count();
    assert.ok(complex > 0 && complex < all, `${complex} complex of ${all}`);
    for (const row of await page.getByTestId('history-row').all()) assert.equal(await row.getAttribute('data-tier'), 'complex');
    await page.getByTestId('filter-tier').selectOption('');
    await page.getByTestId('filter-text').fill('architect');
    assert.equal(await count(), complex);
    await page.getByTestId('filter-text').fill('');
  });

  it('shows the queue per lane and the measured estimates in the Backends view', async () => {
    await bridge.actions.run('setDualGpu', { enabled: false });
    const aborts = Array.from({ length: 4 }, () => new AbortController());
    try {
      await tab('Backends').click();
      // Long answers on the primary: one runs, three wait in the bridge.
      const requests = aborts.map((abort, i) =>
        fetch(`${bridge.url}/api/chat`, {
          method: 'POST',
          body: JSON.stringify({ model: RIG_MODELS.complex, messages: [{ role: 'user', content: `long ${i}` }], options: { num_predict: 100000 } }),
          signal: abort.signal,
        }).catch(() => undefined),
      );
      await page.waitForFunction(() => document.querySelector('[data-testid="queued-gpu0"]')?.textContent === '3 chat', undefined, { timeout: 30_000 });
      // The rig's two model names are one file, so Ollama (and the scheduler) give them one queue.
      const row = page.locator('[data-testid^="pool-gpu0-"]');
      assert.equal(await row.count(), 1);
      assert.match(await row.innerText(), /^gpu0\s+\S+\s+1\s+1\s+0\s+3\s+0\s/);
      aborts.forEach((abort) => abort.abort());
      await Promise.all(requests);
      await page.waitForFunction(() => document.querySelector('[data-testid="queued-gpu0"]')?.textContent === 'none');
      assert.match(await page.getByTestId('scheduler-summary').innerText(), /Never sent to Ollama: .*3 cancelled while queued/);
      // Earlier requests were measured: the row shows figures, not the seed.
      const measured = await row.innerText();
      assert.doesNotMatch(measured, /seed/);
      assert.match(measured, /tok\/s/);
    } finally {
      aborts.forEach((abort) => abort.abort());
      await bridge.actions.run('setDualGpu', { enabled: true });
    }
  });

  it('takes screenshots of every view, light and dark', async () => {
    for (const scheme of ['light', 'dark'] as const) {
      await page.emulateMedia({ colorScheme: scheme });
      for (const view of ['GPUs', 'Models', 'History', 'Usage', 'Backends', 'Connect']) {
        await tab(view).click();
        await page.waitForTimeout(150);
        await page.screenshot({ path: path.join(SCREENSHOTS, `${view.toLowerCase()}-${scheme}.png`) });
      }
    }
    await page.emulateMedia({ colorScheme: 'light' });
  });

  it('scrolls 10,000 history rows smoothly and keeps the place when new rows arrive', async () => {
    const start = Date.now() - 60 * 60_000;
    for (let i = 0; i < 10_000; i++) {
      const record = sampleRecord({
        id: `seed-${i}`,
        time: new Date(start + i * 300).toISOString(),
        client: i % 3 === 0 ? 'copilot' : 'continue',
        userAgent: i % 3 === 0 ? 'GitHubCopilotChat/0.30' : 'Continue/1.0',
        tier: (['simple', 'moderate', 'complex'] as const)[i % 3] ?? 'simple',
        reason: 'seeded',
        backend: i % 2 === 0 ? 'gpu0' : 'gpu1',
        gpu: i % 2,
        model: RIG_MODELS.simple,
        ttftMs: 12,
        totalMs: 40 + (i % 50),
        tokensIn: 10,
        tokensOut: 20,
        tokensPerSecond: 300,
      });
      bridge.history.add(record);
    }
    await page.reload();
    await tab('History').click();
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="row-count"]')?.textContent?.split(' ')[0]) >= 10_000);
    const rows = page.getByTestId('history-rows');
    // Only what is on screen is rendered.
    const rendered = await page.getByTestId('history-row').count();
    assert.ok(rendered < 100, `${rendered} rows rendered for 10,000`);
    const started = Date.now();
    for (let step = 1; step <= 20; step++) {
      await rows.evaluate((element, fraction) => {
        element.scrollTop = (element.scrollHeight - element.clientHeight) * fraction;
      }, step / 20);
      await page.waitForTimeout(16);
    }
    const scrollMs = Date.now() - started;
    const lastVisible = await page.getByTestId('history-row').last().innerText();
    assert.match(lastVisible, /continue|copilot/);
    // Scrolled away from the top, a new request arrives: the rows on screen stay where they are.
    await rows.evaluate((element) => {
      element.scrollTop = 3400;
    });
    await page.waitForTimeout(100);
    const anchor = await page.getByTestId('history-row').nth(15).innerText();
    await chat('format again');
    await page.waitForFunction((n) => Number(document.querySelector('[data-testid="row-count"]')?.textContent?.split(' ')[0]) > n, 10_000);
    await page.waitForTimeout(100);
    const anchorNow = await page.getByTestId('history-row').nth(15).innerText();
    assert.equal(anchorNow, anchor);
    assert.deepEqual(pageErrors, []);
    assert.ok(scrollMs < 10_000, `scrolling took ${scrollMs} ms`);
  });

  it('runs the page under its strict CSP without loading anything from elsewhere', async () => {
    const response = await fetch(`${bridge.url}/ui/`);
    const csp = response.headers.get('content-security-policy') ?? '';
    assert.match(csp, /default-src 'self'/);
    assert.match(csp, /script-src 'self'/);
    assert.match(csp, /frame-ancestors 'none'/);
    const html = await response.text();
    assert.doesNotMatch(html, /https?:\/\//);
    assert.deepEqual(pageErrors, []);
  });

  // Last: the model leaves gpu1's memory.
  it('unloads a model from a GPU and says what it did', async () => {
    await tab('Models').click();
    const row = page.getByTestId('tier-simple');
    await row.getByRole('button', { name: 'Unload from gpu1' }).click();
    await page.getByTestId('notice-simple').waitFor();
    assert.equal(await page.getByTestId('notice-simple').innerText(), `${RIG_MODELS.simple} unloaded from gpu1`);
    await row.getByRole('button', { name: 'Preload on gpu1' }).waitFor();
    assert.doesNotMatch(await page.getByTestId('loaded-simple').innerText(), /gpu1/);
    assert.deepEqual(pageErrors, []);
  });
});
