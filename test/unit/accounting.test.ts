import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import YAML from 'yaml';
import { generateKey, hashKey } from '../../src/auth/keys.js';
import { loadConfig } from '../../src/config/load.js';
import type { HistoryRecord, UsageReport } from '../../src/contract/index.js';
import { costOf, EnergyMeter, priceOf } from '../../src/history/accounting.js';
import { usageCsv, usageReport } from '../../src/history/usage.js';
import { startTestBridge } from '../support/bridge.js';
import { startChatUpstream } from '../support/chat-upstream.js';
import { nvidiaSmiStandIn, TWO_GPU_REPLIES } from '../support/gpu.js';
import { sampleRecord } from '../support/history.js';
import { configFile } from '../support/temp.js';

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** GPU 0's power.draw in the two-GPU nvidia-smi capture (test/fixtures/nvidia-smi/two-gpu); GPU 1 reports [N/A]. */
const FIXTURE_WATTS = 698.04;

const close = (actual: number, expected: number, what: string): void =>
  assert.ok(Math.abs(actual - expected) <= Math.abs(expected) * 1e-9 + 1e-9, `${what}: ${actual} != ${expected}`);

describe('energy metering', () => {
  it('charges each request its share of the sampled power: known watts x known time, split while two run', () => {
    let now = 0;
    const meter = new EnergyMeter(() => now);
    meter.sample([
      { index: 0, powerWatts: 200 },
      { index: 1, powerWatts: null },
    ]);
    now = 1000;
    const a = meter.start(0);
    now = 3000; // a alone for 2 s at 200 W: 400 J
    const b = meter.start(0);
    now = 4000; // both for 1 s at 200 W: 100 J each
    meter.sample([{ index: 0, powerWatts: 500 }]);
    now = 5000; // both for 1 s at 500 W: 250 J each
    const usedA = a();
    now = 7000; // b alone for 2 s at 500 W: 1000 J
    const usedB = b();
    assert.deepEqual(usedA, { gpuMs: 4000, joules: 400 + 100 + 250 });
    assert.deepEqual(usedB, { gpuMs: 4000, joules: 100 + 250 + 1000 });
    assert.deepEqual(a(), usedA, 'stopping twice changes nothing');
    const offGpu = meter.start(1);
    now = 9000;
    assert.deepEqual(offGpu(), { gpuMs: 2000, joules: 0 }, 'a GPU without power figures charges no energy');
  });

  it("on a running bridge, from the nvidia-smi stand-in's power figures: one request alone, and one running inside another", async () => {
    const smi = nvidiaSmiStandIn(TWO_GPU_REPLIES);
    const gates = new Map<string, () => void>();
    const upstream = await startChatUpstream({
      hold: (body) => (String(body.prompt).startsWith('hold') ? new Promise<void>((resolve) => gates.set(String(body.prompt), resolve)) : Promise.resolve()),
    });
    const key = generateKey();
    const file = configFile(
      YAML.stringify({
        // Two requests at once on the one backend (OLLAMA_NUM_PARALLEL=2), so the scheduler lets both run.
        backends: [{ name: 'gpu0', url: upstream.url, gpu: 0, parallel: 2 }],
        gpu_monitor: { command: smi.command, interval_seconds: 0.2 },
        auth: { keys: [{ name: 'ann', team: 'web', role: 'user', hash: hashKey(key) }] },
        accounting: { prices: { 'm-small': { input: 1, output: 2, reference: 'test cloud model' } }, kwh_price: 0.5, hardware_cost_per_month: 365.25 / 12 },
      }),
    );
    const bridge = await startTestBridge({ file });
    cleanups.push(
      () => bridge.stop(100),
      () => upstream.close(),
    );
    // Metering needs a power figure: wait for the monitor's first sample of GPU 0.
    while (bridge.gpuMonitor.status.gpus[0]?.powerWatts !== FIXTURE_WATTS) await new Promise((resolve) => bridge.gpuMonitor.once('sample', resolve));

    const records = new Map<string, HistoryRecord>();
    const recorded = (count: number): Promise<void> =>
      new Promise((resolve) => {
        const off = bridge.history.onRecord((record) => {
          records.set(record.id, record);
          if (records.size >= count) {
            off();
            resolve();
          }
        });
      });
    const generate = (prompt: string): Promise<Response> =>
      fetch(`${bridge.url}/api/generate`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'm-small', prompt, stream: true }),
      });
    const gate = async (prompt: string): Promise<() => void> => {
      while (!gates.has(prompt)) await new Promise((resolve) => setImmediate(resolve));
      return gates.get(prompt) as () => void;
    };

    // Alone: all of the GPU's power for the whole time it served the request.
    let done = recorded(1);
    const solo = await generate('hold-solo');
    (await gate('hold-solo'))();
    await solo.text();
    await done;
    const alone = [...records.values()][0] as HistoryRecord;
    assert.ok((alone.gpuMs ?? 0) > 0);
    // gpuMs is rounded to 0.1 ms in the record: compare at that precision.
    const tolerance = (FIXTURE_WATTS * 0.05) / 1000;
    assert.ok(Math.abs((alone.energyJoules as number) - (FIXTURE_WATTS * (alone.gpuMs as number)) / 1000) <= tolerance, 'solo: all of the power throughout');
    close(alone.cloudCostDollars ?? -1, (10 * 1 + 20 * 2) / 1e6, 'cloud-equivalent cost');
    close(alone.energyCostDollars ?? -1, ((alone.energyJoules as number) / 3_600_000) * 0.5, 'energy cost');
    close(alone.savedDollars ?? -1, (alone.cloudCostDollars as number) - (alone.energyCostDollars as number), 'savings');

    // Inner runs entirely while outer runs: the GPU's power is split in two for the inner's whole time.
    records.clear();
    done = recorded(2);
    const outer = await generate('hold-outer');
    const releaseOuter = await gate('hold-outer');
    const inner = await generate('hold-inner');
    (await gate('hold-inner'))();
    await inner.text();
    releaseOuter();
    await outer.text();
    await done;
    const [outerRecord, innerRecord] = [...records.values()].sort((x, y) => (y.gpuMs ?? 0) - (x.gpuMs ?? 0)) as [HistoryRecord, HistoryRecord];
    const outerMs = outerRecord.gpuMs as number;
    const innerMs = innerRecord.gpuMs as number;
    assert.ok(innerMs < outerMs);
    assert.ok(Math.abs((innerRecord.energyJoules as number) - (FIXTURE_WATTS * innerMs) / 2 / 1000) <= tolerance, 'inner: half the power throughout');
    assert.ok(
      Math.abs((outerRecord.energyJoules as number) - (FIXTURE_WATTS * (outerMs - innerMs / 2)) / 1000) <= 2 * tolerance,
      'outer: all of it alone, half while shared',
    );
    assert.ok(
      Math.abs((outerRecord.energyJoules as number) + (innerRecord.energyJoules as number) - (FIXTURE_WATTS * outerMs) / 1000) <= tolerance,
      'nothing counted twice',
    );

    // The series Grafana reads, with bounded labels.
    const metrics = await (await fetch(`${bridge.url}/metrics`, { headers: { 'x-bridge-token': bridge.controlToken } })).text();
    const series = (name: string): number => Number(new RegExp(`^${name}\\{team="web",tier="none"\\} (\\S+)$`, 'm').exec(metrics)?.[1]);
    const all = [alone, outerRecord, innerRecord];
    close(
      series('copilot_bridge_energy_joules_total'),
      all.reduce((sum, r) => sum + (r.energyJoules as number), 0),
      'energy series',
    );
    close(
      series('copilot_bridge_cost_saved_dollars_total'),
      all.reduce((sum, r) => sum + (r.savedDollars as number), 0),
      'savings series',
    );
    assert.match(metrics, /^copilot_bridge_identity_requests_total\{team="web",tier="none",status="200"\} 3$/m);
    assert.match(metrics, /^copilot_bridge_tokens_total\{direction="out",model="m-small",team="web"\} 60$/m);

    // The Usage API adds the same records up; a day of a $1-a-day machine gives the ROI.
    // One clock reading for both ends: two could be a millisecond apart, and the day a millisecond longer.
    const now = Date.now();
    const from = new Date(now - 12 * 3_600_000).toISOString();
    const to = new Date(now + 12 * 3_600_000).toISOString();
    const usage = (await (
      await fetch(`${bridge.url}/bridge/api/usage?from=${from}&to=${to}`, { headers: { authorization: `Bearer ${key}` } })
    ).json()) as UsageReport;
    assert.equal(usage.totals.requests, 3);
    assert.equal(usage.totals.tokensOut, 60);
    close(
      usage.totals.energyJoules,
      all.reduce((sum, r) => sum + (r.energyJoules as number), 0),
      'usage energy',
    );
    close(usage.hardwareCostDollars, 1, 'a day of hardware');
    close(usage.roi ?? NaN, usage.totals.savedDollars - 1, 'ROI');
  });
});

describe('request costs', () => {
  const config = loadConfig({ env: {} });

  it('charges the energy of an answer whose token counts never came (cancelled, or failed mid-answer): it saved nothing', () => {
    const cost = costOf(config, { model: 'm', tier: 'simple', tokensIn: null, tokensOut: null, fallback: null, energyJoules: 7_200_000 });
    const energy = 2 * config.accounting.kwh_price;
    assert.deepEqual(cost, { cloudCostDollars: null, energyCostDollars: energy, savedDollars: -energy });
    assert.deepEqual(
      costOf(config, { model: 'm', tier: 'simple', tokensIn: null, tokensOut: null, fallback: null, energyJoules: null }),
      { cloudCostDollars: null, energyCostDollars: null, savedDollars: null },
      'nothing known, nothing charged',
    );
  });

  it('prices a model by its own entry whatever the letter case or tag form the client wrote it in, as Ollama runs the same model for it', () => {
    const priced = loadConfig({
      file: configFile('accounting:\n  prices:\n    qwen2.5-coder:7b: { input: 1, output: 2 }\n    llama3:latest: { input: 3, output: 4 }\n'),
      env: {},
    });
    for (const [model, input, output] of [
      ['Qwen2.5-Coder:7B', 1, 2],
      ['LLAMA3', 3, 4],
    ] as const) {
      assert.deepEqual([priceOf(priced, model, 'simple').input, priceOf(priced, model, 'simple').output], [input, output], model);
    }
  });

  it('prices a model named like a property every object has (constructor, toString, __proto__) at its tier, not as NaN', () => {
    const expected = costOf(config, { model: 'm', tier: 'simple', tokensIn: 1000, tokensOut: 1000, fallback: null, energyJoules: null });
    assert.ok(expected.cloudCostDollars !== null && expected.cloudCostDollars > 0);
    for (const model of ['constructor', 'toString', '__proto__', 'hasOwnProperty']) {
      assert.deepEqual(costOf(config, { model, tier: 'simple', tokensIn: 1000, tokensOut: 1000, fallback: null, energyJoules: null }), expected, model);
    }
  });
});

function record(overrides: Partial<HistoryRecord>): HistoryRecord {
  return sampleRecord({
    tokensIn: 100,
    tokensOut: 50,
    user: 'ann',
    team: 'web',
    gpuMs: 1000,
    energyJoules: 300,
    cloudCostDollars: 0.01,
    energyCostDollars: 0.001,
    savedDollars: 0.009,
    ...overrides,
  });
}

describe('usage report', () => {
  const config = loadConfig({ env: {} });

  it('adds up per team and person, places requests on the weekday x hour map in the asked time zone, and estimates time saved', () => {
    const records = [
      record({ id: 'a' }),
      record({ id: 'b', user: 'ben', time: '2025-06-02T09:45:00.000Z', savedDollars: 0.02 }),
      record({ id: 'c', user: 'cid', team: 'ops', time: '2025-06-08T23:10:00.000Z', tokensOut: 10, outcome: 'error' }),
      record({ id: 'd', user: 'dee', team: 'ops', fallback: 'cloud', savedDollars: 0 }),
      record({ id: 'old', time: '2025-05-01T00:00:00.000Z' }),
    ];
    const query = { from: new Date('2025-06-01T00:00:00Z'), to: new Date('2025-06-09T00:00:00Z'), utcOffsetMinutes: 120 };
    const report = usageReport(config, records, query, '2025-05-01T00:00:00.000Z');
    assert.equal(report.totals.requests, 4, 'the record outside the range is left out');
    assert.deepEqual(
      report.byTeam.map((t) => [t.team, t.requests]),
      [
        ['web', 2],
        ['ops', 2],
      ],
    );
    assert.deepEqual(
      report.byPerson.map((p) => p.name),
      ['ben', 'ann', 'cid', 'dee'],
    );
    // 2025-06-02 is a Monday: 09:30 UTC is 11:30 at UTC+2. Sunday 23:10 UTC is Monday 01:10 at UTC+2.
    assert.equal(report.heatmap[0]?.[11], 3);
    assert.equal(report.heatmap[0]?.[1], 1);
    assert.equal(
      report.heatmap.flat().reduce((a, b) => a + b, 0),
      4,
    );
    // Only local answers that succeeded count towards time saved: a, b at 50 tokens each.
    close(report.totals.timeSavedSeconds, 100 * config.accounting.seconds_saved_per_output_token, 'time saved');
    assert.equal(report.roi, null, 'no hardware cost configured');
    assert.equal(report.coversSince, null, 'the history reaches back before the range');
    assert.equal(usageReport(config, records, query, '2025-06-02T09:30:00.000Z').coversSince, '2025-06-02T09:30:00.000Z', 'its oldest record is in the range');
  });

  it('counts a model once among the top models, whatever letter case or :latest its requests named it with, as Ollama does', () => {
    const records = [
      record({ id: 'a', model: 'qwen2.5-coder:7b' }),
      record({ id: 'b', model: 'Qwen2.5-Coder:7B' }),
      record({ id: 'c', model: 'llama3' }),
      record({ id: 'd', model: 'llama3:latest' }),
    ];
    const query = { from: new Date('2025-06-01T00:00:00Z'), to: new Date('2025-06-09T00:00:00Z'), utcOffsetMinutes: 0 };
    assert.deepEqual(
      usageReport(config, records, query, null).topModels.map((m) => [m.model, m.requests]),
      [
        ['qwen2.5-coder:7b', 2],
        ['llama3', 2],
      ],
    );
  });

  it('exports CSV a spreadsheet cannot run: formula-like text stays text', () => {
    const csv = usageCsv([record({ user: '=HYPERLINK("http://evil")', team: 'a,b' })], {
      from: new Date('2025-06-01'),
      to: new Date('2025-06-03'),
      utcOffsetMinutes: 0,
    });
    const [header, row] = csv.split('\r\n');
    assert.match(header ?? '', /^time,user,team,/);
    assert.match(row ?? '', /^2025-06-02T09:30:00.000Z,"'=HYPERLINK\(""http:\/\/evil""\)","a,b",/);
  });
});
