import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import YAML from 'yaml';
import { generateKey, hashKey } from '../../src/auth/keys.js';
import type { BridgeHandle } from '../../src/bridge.js';
import type { HistoryRecord } from '../../src/contract/index.js';
import { startTestBridge } from '../support/bridge.js';
import { browserSkipReason, launchChromium } from '../support/browser.js';
import { nvidiaSmiStandIn, TWO_GPU_REPLIES } from '../support/gpu.js';
import { RIG_MODELS, rigSkipReason, startRig, type OllamaRig, type RigInstance } from '../support/ollama-rig.js';
import { configFile } from '../support/temp.js';

/**
 * The Usage view in real Chromium: people of two teams generate through a bridge on real Ollama
 * instances, with keys; the view's figures must be the history's, per role.
 */

const skip = browserSkipReason() ?? rigSkipReason();

describe('Usage view in Chromium', { skip }, () => {
  let rig: OllamaRig;
  let bridge: BridgeHandle;
  let browser: Browser;
  const keys = { alice: generateKey(), bob: generateKey() };
  const pageErrors: string[] = [];

  before(async () => {
    rig = await startRig(1);
    const [gpu0] = rig.instances as [RigInstance];
    const smi = nvidiaSmiStandIn(TWO_GPU_REPLIES);
    const file = configFile(
      YAML.stringify({
        gpu_monitor: { command: smi.command, interval_seconds: 0.5 },
        backends: [{ name: 'gpu0', url: gpu0.url, gpu: 0 }],
        models: { simple: { name: RIG_MODELS.simple }, complex: { name: RIG_MODELS.complex } },
        auth: {
          keys: [
            { name: 'alice', team: 'web', role: 'admin', hash: hashKey(keys.alice) },
            { name: 'bob', team: 'ops', role: 'user', hash: hashKey(keys.bob) },
          ],
          teams: { ops: { cloud: 'never' } },
        },
        accounting: { hardware_cost_per_month: 100 },
      }),
    );
    bridge = await startTestBridge({ file });
    browser = await launchChromium();

    const generate = async (key: string, content: string): Promise<void> => {
      const response = await fetch(`${bridge.url}/api/chat`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}` },
        body: JSON.stringify({ model: RIG_MODELS.simple, stream: false, messages: [{ role: 'user', content }], options: { num_predict: 4 } }),
      });
      assert.equal(response.status, 200);
      await response.text();
    };
    const recorded = new Promise<void>((resolve) => {
      let count = 0;
      const off = bridge.history.onRecord(() => {
        if (++count === 3) {
          off();
          resolve();
        }
      });
    });
    await generate(keys.alice, 'hello');
    await generate(keys.alice, 'format this');
    await generate(keys.bob, 'hi there');
    await recorded;
  });

  after(async () => {
    await browser?.close();
    await bridge?.stop(100);
    await rig?.stop();
    assert.deepEqual(pageErrors, []);
  });

  async function signedIn(key: string): Promise<Page> {
    const page = await (await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 900 } })).newPage();
    page.on('pageerror', (error) => pageErrors.push(error.message));
    await page.goto(`${bridge.url}/ui/#usage`);
    // No credential yet: the bridge answers 401 and the dashboard asks for one.
    await page.getByTestId('sign-in').getByLabel('API key, token or control token').fill(key);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByTestId('usage-totals').waitFor();
    return page;
  }

  const sum = (records: HistoryRecord[], pick: (r: HistoryRecord) => number | null): number => records.reduce((total, r) => total + (pick(r) ?? 0), 0);

  it('shows an admin everyone: totals, teams and people as the history has them, and the heatmap', async () => {
    const page = await signedIn(keys.alice);
    assert.equal(await page.getByTestId('signed-in').innerText(), 'alice · admin');
    const records = bridge.history.recent();
    assert.equal(await page.getByTestId('usage-requests').innerText(), String(records.length));
    assert.equal(await page.getByTestId('usage-tokens').innerText(), String(sum(records, (r) => r.tokensIn) + sum(records, (r) => r.tokensOut)));
    assert.ok(sum(records, (r) => r.energyJoules) > 0, 'the stand-in GPU drew power for them');
    assert.equal(await page.getByTestId('usage-energy').innerText(), `${(sum(records, (r) => r.energyJoules) / 3_600_000).toFixed(3)} kWh`);
    // The bridge's history began today, after the start of the week the view shows.
    assert.match(await page.getByTestId('usage-coverage').innerText(), /^Covers requests since .+, the oldest the history still holds/);
    const teams = await page.getByTestId('usage-teams').locator('tbody tr td:first-child').allInnerTexts();
    assert.deepEqual(teams.sort(), ['ops', 'web']);
    const people = await page.getByTestId('usage-people').locator('tbody tr').allInnerTexts();
    assert.ok(
      people.some((row) => row.startsWith('alice · web\t2\t')),
      JSON.stringify(people),
    );
    assert.ok(
      people.some((row) => row.startsWith('bob · ops\t1\t')),
      JSON.stringify(people),
    );
    // Every request sits in the heatmap cell of its local weekday and hour.
    const cells = await page
      .getByTestId('heatmap')
      .locator('[data-count]')
      .evaluateAll((nodes) => nodes.map((n) => Number(n.getAttribute('data-count'))));
    assert.equal(
      cells.reduce((a, b) => a + b, 0),
      records.length,
    );
    const when = await page.evaluate(
      (times) =>
        times.map((t) => {
          const d = new Date(t);
          return ((d.getDay() + 6) % 7) * 24 + d.getHours();
        }),
      records.map((r) => r.time),
    );
    for (const index of when) assert.ok((cells[index] ?? 0) > 0, `cell ${index} counts its request`);
    assert.match(await page.getByText(/Cloud-equivalent cost uses the price table \(defaults dated/).innerText(), /Time saved is an estimate/);
  });

  it('narrows to a date range and exports that range as CSV', async () => {
    const page = await signedIn(keys.alice);
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Export CSV' }).click()]);
    const csv = readFileSync((await download.path()) as string, 'utf8')
      .trim()
      .split('\r\n');
    assert.equal(csv[0]?.split(',').slice(0, 3).join(','), 'time,user,team');
    assert.equal(csv.length - 1, bridge.history.recent().length);
    assert.deepEqual(
      csv
        .slice(1)
        .map((row) => row.split(',')[1])
        .sort(),
      bridge.history
        .recent()
        .map((r) => r.user)
        .sort(),
    );
    // A range that ended before today holds none of them.
    await page.getByLabel('From').fill('2024-01-01');
    await page.getByLabel('To').fill('2024-01-31');
    await page.getByTestId('usage-requests').filter({ hasText: /^0$/ }).waitFor();
    assert.equal(await page.getByTestId('usage-saved').innerText(), '$0.0000');
  });

  it('shows a user their own usage only, and the settings read only', async () => {
    const page = await signedIn(keys.bob);
    assert.equal(await page.getByTestId('signed-in').innerText(), 'bob · user');
    assert.equal(await page.getByTestId('usage-teams').count(), 0, 'no team table for a user');
    const people = await page.getByTestId('usage-people').locator('tbody tr td:first-child').allInnerTexts();
    assert.deepEqual(people, ['bob · ops']);
    assert.equal(await page.getByTestId('usage-requests').innerText(), '1');
    await page.getByRole('tab', { name: 'Connect' }).click();
    assert.match(await page.getByTestId('read-only').innerText(), /bob \(user\): settings are read only/);
    assert.match(await page.getByTestId('never-cloud').innerText(), /team ops/);
  });
});
