import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import type { BridgeHandle } from '../../src/bridge.js';
import type { BridgeState, GpuReading } from '../../src/contract/index.js';
import { startTestBridge } from '../support/bridge.js';
import { USAGE_REFRESH_MS } from '../../renderer/src/lib/history.js';
import { sampleRecord } from '../support/history.js';
import { browserSkipReason, launchChromium } from '../support/browser.js';
import { freePort } from '../support/ollama-rig.js';

/**
 * The dashboard in real Chromium on states a test bridge cannot easily be brought into: the page is
 * served by a bridge without Ollama, and its state (read and streamed) is replaced by the test's.
 */

const skip = browserSkipReason();

function gpuReading(index: number, fields: Partial<GpuReading> = {}): GpuReading {
  return {
    index,
    uuid: `GPU-${index}`,
    name: 'NVIDIA H100',
    busId: null,
    memoryTotalBytes: 80 * 1024 ** 3,
    memoryUsedBytes: 20 * 1024 ** 3,
    memoryFreeBytes: 60 * 1024 ** 3,
    memoryReservedBytes: null,
    utilizationRatio: 0.5,
    memoryUtilizationRatio: 0.1,
    temperatureCelsius: 50,
    powerWatts: 300,
    powerLimitWatts: 700,
    graphicsClockMhz: 1000,
    memoryClockMhz: 1000,
    pstate: 'P0',
    ...fields,
  };
}

describe('dashboard on unusual states in Chromium', { skip }, () => {
  let bridge: BridgeHandle;
  let browser: Browser;
  let real: BridgeState;
  const pageErrors: string[] = [];

  before(async () => {
    bridge = await startTestBridge({ env: { OLLAMA_HOST: `127.0.0.1:${await freePort()}` } });
    browser = await launchChromium();
    real = (await (await fetch(`${bridge.url}/bridge/api/state`)).json()) as BridgeState;
  });
  after(async () => {
    await browser?.close();
    await bridge?.stop(100);
    assert.deepEqual(pageErrors, []);
  });

  /** The dashboard with `change` applied to the bridge's state, in `view`, `width` pixels wide. */
  async function showing(view: string, change: (state: BridgeState) => void, width = 1280): Promise<Page> {
    const state = structuredClone(real);
    change(state);
    const page = await browser.newPage({ viewport: { width, height: 800 } });
    page.on('pageerror', (error) => pageErrors.push(error.message));
    await page.route('**/bridge/api/state', (route) => route.fulfill({ json: state }));
    await page.route('**/bridge/api/events**', (route) =>
      route.fulfill({ headers: { 'content-type': 'text/event-stream' }, body: `retry: 60000\n\nevent: state\ndata: ${JSON.stringify(state)}\n\n` }),
    );
    await page.goto(`${bridge.url}/ui/#token=${bridge.controlToken}`);
    await page.getByRole('tab', { name: view }).click();
    return page;
  }

  it('shows GPU memory nvidia-smi does not report as unknown, not as 0 GiB', async () => {
    const page = await showing('GPUs', (state) => {
      state.gpu = {
        ...state.gpu,
        source: 'nvidia-smi',
        live: true,
        gpus: [gpuReading(0, { memoryTotalBytes: null, memoryUsedBytes: null, memoryFreeBytes: null })],
        lastSampleAt: new Date().toISOString(),
      };
    });
    assert.equal(await page.getByTestId('vram-0').innerText(), '– used of –');
    await page.close();
  });

  it('shows no figures from before nvidia-smi failed as if they were live', async () => {
    const page = await showing('GPUs', (state) => {
      // nvidia-smi stopped answering: the state keeps its last reading, marked not live.
      state.gpu = {
        ...state.gpu,
        source: 'nvidia-smi',
        live: false,
        message: 'nvidia-smi failed; retrying in 2 s',
        lastError: 'nvidia-smi exited (6): No devices were found',
        gpus: [gpuReading(0)],
        lastSampleAt: new Date(Date.now() - 60_000).toISOString(),
      };
    });
    await page.getByTestId('gpu-0').waitFor();
    assert.equal(await page.getByTestId('vram-0').innerText(), '– used of 80.0 GiB');
    assert.deepEqual(await Promise.all(['util-0', 'temp-0'].map((id) => page.getByTestId(id).innerText())), ['–', '–']);
    assert.match(await page.getByTestId('power-0').innerText(), /^n\/a/);
    await page.close();
  });

  it('says why a managed Ollama failed', async () => {
    const missing = 'no ollama binary found: install Ollama from https://ollama.com/download, or set ollama.binary in config.yaml (or OLLAMA_BIN)';
    const page = await showing('Backends', (state) => {
      const name = state.backends[0]?.name ?? '';
      state.ollama = [
        {
          name,
          state: 'failed',
          pid: null,
          port: 11434,
          device: null,
          restarts: 0,
          lastExit: null,
          logFile: '/tmp/ollama.log',
          message: missing,
          restartAt: null,
        },
      ];
    });
    const row = page.getByTestId(`backend-${real.backends[0]?.name ?? ''}`);
    await row.getByText(missing).waitFor({ timeout: 5000 });
    await page.close();
  });

  it('counts down to the automatic restart of a crashed managed Ollama', async () => {
    const name = real.backends[0]?.name ?? '';
    const restartAt = new Date(Date.now() + 30_000).toISOString();
    const page = await showing('Backends', (state) => {
      state.ollama = [
        {
          name,
          state: 'crashed',
          pid: null,
          port: 11434,
          device: null,
          restarts: 1,
          lastExit: 'exit code 2',
          logFile: '/tmp/ollama.log',
          message: 'crashed (exit code 2)',
          restartAt,
        },
      ];
    });
    const countdown = page.getByTestId(`restart-${name}`);
    await countdown.waitFor({ timeout: 5000 });
    const first = await countdown.innerText();
    const seconds = Number(/^exit code 2; restarting in (\d+) s$/.exec(first)?.[1]);
    assert.ok(seconds > 20 && seconds <= 30, first);
    // It counts on by itself, with no new state from the bridge.
    await page
      .getByTestId(`restart-${name}`)
      .filter({ hasText: `restarting in ${seconds - 1} s` })
      .waitFor({ timeout: 5000 });
    await page.close();
  });

  it('shows a tier model named without its tag as the installed model it is', async () => {
    const page = await showing('Models', (state) => {
      // Ollama lists llama3 as llama3:latest; the config may name it either way.
      state.settings.models.simple = 'llama3';
      state.models = [
        { name: 'llama3:latest', sizeBytes: 4e9, backends: [state.backends[0]?.name ?? ''] },
        { name: 'qwen2.5-coder:7b', sizeBytes: 5e9, backends: [state.backends[0]?.name ?? ''] },
      ];
    });
    const select = page.getByLabel('Model of the simple tier');
    await select.waitFor();
    assert.equal(await select.evaluate((element: HTMLSelectElement) => element.selectedOptions[0]?.textContent), 'llama3:latest');
    assert.deepEqual(await select.locator('option').allInnerTexts(), ['llama3:latest', 'qwen2.5-coder:7b']);
    await page.close();
  });

  it('shows a tier set to a model outside the allow-list of whoever is signed in without naming it', async () => {
    const page = await showing('Models', (state) => {
      // The state an allow-listed identity gets: the tier's model is null, and only its models are listed.
      state.settings.models.complex = null;
      state.models = [{ name: 'qwen2.5-coder:7b', sizeBytes: 5e9, backends: [state.backends[0]?.name ?? ''] }];
    });
    const select = page.getByLabel('Model of the complex tier');
    await select.waitFor();
    assert.equal(await select.evaluate((element: HTMLSelectElement) => element.selectedOptions[0]?.textContent), 'a model outside your allow-list');
    assert.equal(await page.getByTestId('loaded-complex').innerText(), 'not loaded');
    await page.getByTestId('model-qwen2.5-coder:7b').waitFor();
    await page.close();
  });

  it('says why the bridge refused a usage range', async () => {
    const page = await showing('Usage', () => undefined);
    await page.getByTestId('usage-totals').waitFor();
    const to = await page.getByLabel('To').inputValue();
    // A date typed in past the picker's max: the bridge answers 400 and says why.
    await page.getByLabel('From').fill(`${Number(to.slice(0, 4)) + 1}${to.slice(4)}`);
    await page.getByRole('alert').filter({ hasText: 'from must not be after to' }).waitFor({ timeout: 5000 });
    await page.close();
  });

  it('says what went wrong when an action is answered by something other than the bridge (a proxy in front of it)', async () => {
    const page = await showing('Connect', () => undefined);
    // nginx's page while the bridge behind it restarts: HTML, not the control API's {"error": ...}.
    await page.route('**/bridge/api/actions/**', (route) =>
      route.fulfill({ status: 502, contentType: 'text/html', body: '<html><body><h1>502 Bad Gateway</h1></body></html>' }),
    );
    await page.getByText('Dual-GPU mode').click();
    const alert = page.getByRole('alert');
    await alert.waitFor({ timeout: 5000 });
    assert.equal(await alert.innerText(), 'setDualGpu answered 502');
    await page.close();
  });

  it('reads the history again when the bridge says the page missed records it could not keep up with', { timeout: 20_000 }, async () => {
    const page = await browser.newPage();
    page.on('pageerror', (error) => pageErrors.push(error.message));
    let reads = 0;
    const readAgain = new Promise<void>((resolve) => {
      void page.route('**/bridge/api/history**', (route) => {
        reads += 1;
        if (reads === 2) resolve();
        return route.fulfill({ json: { records: [] } });
      });
    });
    await page.route('**/bridge/api/events**', (route) =>
      route.fulfill({
        headers: { 'content-type': 'text/event-stream' },
        // No reconnect (which reads the history again too) within the test.
        body: `retry: 3600000\n\nevent: state\ndata: ${JSON.stringify(real)}\n\nevent: history-gap\ndata: {}\n\n`,
      }),
    );
    await page.goto(`${bridge.url}/ui/#token=${bridge.controlToken}`);
    await readAgain;
    assert.equal(reads, 2);
    await page.close();
  });

  it('reads the usage report again as requests come in, but not once for each of a run of them', async () => {
    const page = await browser.newPage();
    page.on('pageerror', (error) => pageErrors.push(error.message));
    let reports = 0;
    await page.route('**/bridge/api/usage?**', (route) => {
      reports += 1;
      return route.continue();
    });
    // One record per stream (each ends at once, and the page opens the next), so the page takes
    // each in on its own, as it does requests recorded one after another.
    const run = Array.from({ length: 20 }, (_, i) => sampleRecord({ id: `run-${i}`, time: new Date(Date.now() - i).toISOString() }));
    // The last stream's state tells the test when the page has taken in every record before it.
    const after = structuredClone(real);
    // Taken after every state the page reads from the bridge meanwhile.
    after.revision = Number.MAX_SAFE_INTEGER;
    for (const backend of after.backends) backend.health.status = 'healthy';
    let shown: () => void = () => undefined;
    const usageShown = new Promise<void>((resolve) => {
      shown = resolve;
    });
    let streams = 0;
    await page.route('**/bridge/api/events**', async (route) => {
      streams += 1;
      const record = run[streams - 2];
      const events =
        streams === 1
          ? `retry: 1\n\nevent: state\ndata: ${JSON.stringify(real)}\n\n`
          : record !== undefined
            ? `retry: 1\n\nevent: history\ndata: ${JSON.stringify(record)}\n\n`
            : `retry: 3600000\n\nevent: state\ndata: ${JSON.stringify(after)}\n\n`;
      // The records come once the view has its first report.
      if (streams === 2) await usageShown;
      await route.fulfill({ headers: { 'content-type': 'text/event-stream' }, body: events });
    });
    await page.goto(`${bridge.url}/ui/#usage`);
    await page.getByTestId('usage-totals').waitFor();
    const started = Date.now();
    shown();
    await page
      .getByTestId('health')
      .filter({ hasText: `${after.backends.length}/${after.backends.length} backends healthy` })
      .waitFor();
    const readAgain = page.waitForRequest('**/bridge/api/usage?**');
    // The first, then at most one for each USAGE_REFRESH_MS the run took (and one it began in).
    const most = 2 + Math.floor((Date.now() - started) / USAGE_REFRESH_MS);
    assert.ok(reports <= most, `${reports} usage reports for a run of ${run.length} requests`);
    // And the figures do come again for the run.
    if (reports < 2) await readAgain;
    else void readAgain.catch(() => undefined);
    await page.close();
  });

  it('offers no cloud fallback switch to turn on where no cloud provider is configured, and one to turn it off', async () => {
    const page = await showing('Connect', (state) => {
      state.fallbackProviders = [];
      state.settings.fallbackEnabled = false;
    });
    assert.equal(await page.getByTestId('toggle-fallback').isDisabled(), true);
    await page.close();
    const on = await showing('Connect', (state) => {
      state.fallbackProviders = [];
      state.settings.fallbackEnabled = true;
    });
    assert.equal(await on.getByTestId('toggle-fallback').isDisabled(), false);
    await on.close();
  });

  it('asks to sign in again when the bridge stops taking the credential the page holds (a token that expired)', async () => {
    const page = await browser.newPage();
    page.on('pageerror', (error) => pageErrors.push(error.message));
    const whoami = await (await fetch(`${bridge.url}/bridge/api/whoami`)).json();
    // The first stream ends (as the bridge ends it when the token expires); opened again, it is refused, and so is the token.
    let streams = 0;
    const refused = { status: 401, json: { error: 'the token has expired' } };
    await page.route('**/bridge/api/whoami', (route) => route.fulfill(streams > 1 ? refused : { json: whoami }));
    await page.route('**/bridge/api/state', (route) => route.fulfill({ json: real }));
    await page.route('**/bridge/api/events**', (route) => {
      streams += 1;
      return route.fulfill(
        streams > 1 ? refused : { headers: { 'content-type': 'text/event-stream' }, body: `retry: 100\n\nevent: state\ndata: ${JSON.stringify(real)}\n\n` },
      );
    });
    await page.goto(`${bridge.url}/ui/#token=${bridge.controlToken}`);
    await page.getByTestId('sign-in').waitFor({ timeout: 10_000 });
    await page.close();
  });

  it('selects an endpoint for copying by hand where the page may not use the clipboard', async () => {
    const page = await showing('Connect', () => undefined);
    // Opened over plain http from another machine, the page is no secure context: no navigator.clipboard.
    await page.evaluate(() => Object.defineProperty(navigator, 'clipboard', { value: undefined }));
    const errors: string[] = [];
    page.on('pageerror', (error) => errors.push(error.message));
    await page.getByRole('button', { name: 'Copy Prometheus' }).click();
    await page.getByRole('button', { name: 'Copy Prometheus' }).filter({ hasText: 'Selected: copy it' }).waitFor({ timeout: 2000 });
    assert.equal(await page.evaluate(() => window.getSelection()?.toString()), `${bridge.url}/metrics`);
    assert.deepEqual(errors, []);
    await page.close();
  });

  it('opens a link with a view and the token (#usage&token=...) on that view, signed in, with the token gone from the address', async () => {
    const page = await browser.newPage();
    page.on('pageerror', (error) => pageErrors.push(error.message));
    await page.goto(`${bridge.url}/ui/#usage&token=${bridge.controlToken}`);
    await page.getByTestId('usage-totals').waitFor({ timeout: 5000 });
    assert.equal(await page.getByRole('tab', { selected: true }).innerText(), 'Usage');
    assert.equal(new URL(page.url()).hash, '#usage');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('copilot-bridge-control-token')), bridge.controlToken);
    await page.close();
  });

  it('keeps a streamed state over an older one that its first read of the state answers later', async () => {
    const page = await browser.newPage();
    page.on('pageerror', (error) => pageErrors.push(error.message));
    // The bridge took the read's state first (no backend up) and streamed a newer one (all up) before the read's answer arrived.
    const older = { ...structuredClone(real), revision: real.revision + 1 };
    const newer = { ...structuredClone(real), revision: real.revision + 2 };
    for (const backend of newer.backends) backend.health.status = 'healthy';
    const healthy = `${newer.backends.length}/${newer.backends.length} backends healthy`;
    let streamedShown: () => void = () => undefined;
    const shown = new Promise<void>((resolve) => {
      streamedShown = resolve;
    });
    await page.route('**/bridge/api/state', async (route) => {
      await shown;
      await route.fulfill({ json: older });
    });
    await page.route('**/bridge/api/events**', (route) =>
      route.fulfill({ headers: { 'content-type': 'text/event-stream' }, body: `retry: 3600000\n\nevent: state\ndata: ${JSON.stringify(newer)}\n\n` }),
    );
    const read = page.waitForEvent('requestfinished', (request) => request.url().endsWith('/bridge/api/state'));
    await page.goto(`${bridge.url}/ui/#token=${bridge.controlToken}`);
    await page.getByTestId('health').filter({ hasText: healthy }).waitFor({ timeout: 5000 });
    streamedShown();
    await read;
    // The page has taken the answer in once it has drawn a frame after it.
    await page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve))));
    assert.equal(await page.getByTestId('health').innerText(), healthy);
    await page.close();
  });

  it('opens on GPUs for a fragment that names no view, even one that is no valid percent-encoding', async () => {
    for (const fragment of ['#nothing', '#%E0%A4%A']) {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on('pageerror', (error) => errors.push(error.message));
      await page.goto(`${bridge.url}/ui/${fragment}`);
      await page.getByRole('tab', { selected: true }).filter({ hasText: 'GPUs' }).waitFor({ timeout: 5000 });
      assert.deepEqual(errors, [], fragment);
      await page.close();
    }
  });

  it('fits the tabs and a GPU card into a narrow window', async () => {
    const width = 420;
    const page = await showing(
      'GPUs',
      (state) => {
        state.gpu = { ...state.gpu, source: 'nvidia-smi', live: true, gpus: [gpuReading(0)], lastSampleAt: new Date().toISOString() };
      },
      width,
    );
    await page.getByTestId('gpu-0').waitFor();
    for (const element of [...(await page.getByRole('tab').all()), page.getByTestId('health'), page.getByTestId('gpu-0')]) {
      const box = await element.boundingBox();
      assert.ok(box !== null && box.x + box.width <= width, `${await element.innerText()} ends at ${box?.x ?? 0} + ${box?.width ?? 0}, past ${width}`);
    }
    await page.close();
  });
});
