import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser } from 'playwright-core';
import YAML from 'yaml';
import { generateKey, hashKey } from '../../src/auth/keys.js';
import type { BridgeHandle } from '../../src/bridge.js';
import { startTestBridge } from '../support/bridge.js';
import { browserSkipReason, launchChromium } from '../support/browser.js';
import { sampleRecord } from '../support/history.js';
import { freePort } from '../support/ollama-rig.js';
import { configFile } from '../support/temp.js';
import { fakeOllamaBinary } from '../support/fake-ollama.js';

/**
 * The dashboard's live updates in real Chromium, against a bridge with no Ollama at all (history
 * is seeded straight into the store, which feeds the event stream as a request would).
 */

const skip = browserSkipReason();

describe('dashboard live updates in Chromium', { skip }, () => {
  let bridge: BridgeHandle;
  let browser: Browser;
  const pageErrors: string[] = [];

  before(async () => {
    bridge = await startTestBridge({ env: { OLLAMA_HOST: `127.0.0.1:${await freePort()}` } });
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    await bridge?.stop(100);
    assert.deepEqual(pageErrors, []);
  });

  it('after the event stream drops and reconnects, shows the requests made meanwhile, each once', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    page.on('pageerror', (error) => pageErrors.push(error.message));
    // While `dropped`, every event stream the page opens ends at once, as when the connection
    // breaks: the page keeps reconnecting and hears nothing the bridge sends meanwhile.
    let dropped = true;
    await page.route('**/bridge/api/events**', (route) =>
      dropped ? route.fulfill({ status: 200, headers: { 'content-type': 'text/event-stream' }, body: 'retry: 50\n\n' }) : route.continue(),
    );
    await page.goto(`${bridge.url}/ui/#token=${bridge.controlToken}`);
    await page.getByRole('tab', { name: 'History' }).click();
    await page
      .getByTestId('row-count')
      .filter({ hasText: /^0 of 0$/ })
      .waitFor();

    bridge.history.add(sampleRecord({ id: 'during-the-drop', time: new Date().toISOString(), client: 'while-dropped' }));
    dropped = false;
    // Reconnected: the request made while the stream was down is there without a reload.
    await page.getByTestId('history-row').filter({ hasText: 'while-dropped' }).waitFor({ timeout: 10_000 });
    await page.locator('[aria-label="live updates on"]').waitFor();

    // A live one after that arrives once, and the one from the drop is not doubled.
    bridge.history.add(sampleRecord({ id: 'after-the-drop', time: new Date().toISOString(), client: 'after-reconnect' }));
    await page.getByTestId('history-row').filter({ hasText: 'after-reconnect' }).waitFor();
    assert.equal(await page.getByTestId('row-count').innerText(), '2 of 2');
    await page.close();
  });

  it('reconnects when the event stream is refused with an error status, as when too many are open', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    page.on('pageerror', (error) => pageErrors.push(error.message));
    // EventSource gives up for good on an answer that is not an event stream (the bridge's 503 when
    // MAX_EVENT_SUBSCRIBERS are open, a proxy's 502 while the bridge restarts): the page must try again.
    let refused = true;
    await page.route('**/bridge/api/events**', (route) =>
      refused ? route.fulfill({ status: 503, headers: { 'retry-after': '1' }, json: { error: 'too many event streams' } }) : route.continue(),
    );
    await page.goto(`${bridge.url}/ui/#token=${bridge.controlToken}`);
    await page.locator('[aria-label="live updates reconnecting"]').waitFor();
    refused = false;
    await page.locator('[aria-label="live updates on"]').waitFor({ timeout: 10_000 });
    await page.close();
  });

  it('keeps the Usage figures live once the page holds as many history rows as it keeps', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    page.on('pageerror', (error) => pageErrors.push(error.message));
    // The page keeps 20,000 rows: a full page, from an hour ago.
    const start = Date.now() - 60 * 60_000;
    const full = Array.from({ length: 20_000 }, (_, i) => sampleRecord({ id: `full-${i}`, time: new Date(start + i * 100).toISOString() }));
    await page.route('**/bridge/api/history?**', (route) => route.fulfill({ json: { records: full } }));
    await page.goto(`${bridge.url}/ui/#token=${bridge.controlToken}`);
    await page.getByRole('tab', { name: 'History' }).click();
    await page
      .getByTestId('row-count')
      .filter({ hasText: /^20000 of 20000$/ })
      .waitFor();
    await page.getByRole('tab', { name: 'Usage' }).click();
    await page.locator('[aria-label="live updates on"]').waitFor();
    const requests = page.getByTestId('usage-requests');
    const before = Number(await requests.innerText());

    bridge.history.add(sampleRecord({ id: 'past-the-cap', time: new Date().toISOString() }));
    await requests.filter({ hasText: new RegExp(`^${before + 1}$`) }).waitFor({ timeout: 5000 });
    await page.close();
  });
});

describe('dashboard for a role that may not change settings, in Chromium', { skip }, () => {
  let bridge: BridgeHandle;
  let browser: Browser;
  const user = generateKey();
  const listedUser = generateKey();

  before(async () => {
    const file = configFile(
      YAML.stringify({
        auth: {
          keys: [
            { name: 'carol', team: 'web', role: 'user', hash: hashKey(user) },
            { name: 'dave', team: 'web', role: 'user', hash: hashKey(listedUser), models: ['qwen2.5-coder:1.5b'] },
          ],
        },
      }),
    );
    bridge = await startTestBridge({ file, env: { OLLAMA_HOST: `127.0.0.1:${await freePort()}` } });
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    await bridge?.stop(100);
  });

  it('offers a user no control the bridge would refuse: tier models and switches are read only', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    await page.goto(`${bridge.url}/ui/#models`);
    await page.getByTestId('sign-in').getByLabel('API key, token or control token').fill(user);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByTestId('signed-in').filter({ hasText: 'carol · user' }).waitFor();
    await page.getByTestId('tier-simple').waitFor();
    assert.equal(await page.getByLabel('Model of the simple tier').isDisabled(), true, 'a user cannot switch a tier’s model');
    await page.getByRole('tab', { name: 'Connect' }).click();
    await page.getByTestId('read-only').waitFor();
    assert.equal(await page.getByTestId('toggle-dual').isDisabled(), true, 'a user cannot switch dual-GPU mode');
    assert.equal(await page.getByTestId('toggle-fallback').isDisabled(), true, 'a user cannot switch the cloud fallback');
    await page.close();
  });

  it('shows a user with a model allow-list its tiers, and a tier set to another model without naming it', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    const pageErrors: string[] = [];
    page.on('pageerror', (error) => pageErrors.push(error.message));
    await page.goto(`${bridge.url}/ui/#models`);
    await page.getByTestId('sign-in').getByLabel('API key, token or control token').fill(listedUser);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByTestId('signed-in').filter({ hasText: 'dave · user' }).waitFor();
    // The default tiers: simple qwen2.5-coder:1.5b, on the list; complex qwen2.5-coder:7b-instruct-q8_0, not.
    const selected = (tier: string): Promise<string | null | undefined> =>
      page.getByLabel(`Model of the ${tier} tier`).evaluate((element: HTMLSelectElement) => element.selectedOptions[0]?.textContent);
    await page.getByTestId('tier-complex').waitFor();
    assert.equal(await selected('simple'), 'qwen2.5-coder:1.5b (not installed)');
    assert.equal(await selected('complex'), 'a model outside your allow-list');
    assert.doesNotMatch(await page.locator('body').innerText(), /7b-instruct/);
    assert.deepEqual(pageErrors, []);
    await page.close();
  });
});

describe('dashboard Ollama controls in Chromium', { skip }, () => {
  let bridge: BridgeHandle;
  let browser: Browser;

  before(async () => {
    // A managed instance the bridge has not started (autostart off): it can be started, not stopped.
    const port = await freePort();
    const file = configFile(
      YAML.stringify({
        ollama: { binary: fakeOllamaBinary(), autostart: false },
        backends: [{ name: 'gpu0', url: `http://127.0.0.1:${port}`, gpu: 0, manage: true }],
      }),
    );
    bridge = await startTestBridge({ file });
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    await bridge?.stop(100);
  });

  it('offers only the Ollama actions that do something in the instance’s state, as the tray does', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    await page.goto(`${bridge.url}/ui/#token=${bridge.controlToken}`);
    await page.getByRole('tab', { name: 'Backends' }).click();
    const button = (name: string): ReturnType<typeof page.getByRole> => page.getByRole('button', { name, exact: true });
    await button('Start').waitFor();
    assert.deepEqual(
      [await button('Start').isDisabled(), await button('Stop').isDisabled(), await button('Restart').isDisabled()],
      [false, true, true],
      'a stopped instance: Start only',
    );
    await page.close();
  });
});
