import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { addKey } from '../../src/auth/keys.js';
import type { BridgeHandle } from '../../src/bridge.js';
import type { UsageReport } from '../../src/contract/index.js';
import { nextRecord, startStandIn, startTestBridge } from '../support/bridge.js';
import { tempDir } from '../support/temp.js';

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

const DAY_MS = 86_400_000;

/** The query the dashboard sends for the local day of today, as seen `tzMinutes` east of UTC: from its start to the start of the next. */
function todayIn(tzMinutes: number): { day: string; query: string } {
  const day = new Date(Date.now() + tzMinutes * 60_000).toISOString().slice(0, 10);
  const start = Date.parse(`${day}T00:00:00Z`) - tzMinutes * 60_000;
  const query = new URLSearchParams({ from: new Date(start).toISOString(), to: new Date(start + DAY_MS).toISOString(), tz: String(tzMinutes) });
  return { day, query: query.toString() };
}

describe('usage export', () => {
  let bridge: BridgeHandle;
  const keys: Record<'admin' | 'ann' | 'bob', string> = { admin: '', ann: '', bob: '' };

  before(async () => {
    const upstream = await startStandIn(
      (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        res.end(
          `${JSON.stringify({ model: 'm:7b', created_at: '2025-01-01T00:00:00Z', message: { role: 'assistant', content: 'ok' }, done: true, done_reason: 'stop', prompt_eval_count: 5, eval_count: 7 })}\n`,
        );
      },
      ['m:7b'],
    );
    const file = path.join(tempDir('usage-'), 'config.yaml');
    keys.admin = addKey(file, { name: 'ada', role: 'admin' });
    keys.ann = addKey(file, { name: 'ann', team: 'web', role: 'user' });
    keys.bob = addKey(file, { name: 'bob', team: 'data', role: 'user' });
    bridge = await startTestBridge({ file, env: { OLLAMA_HOST: upstream.url } });
    cleanups.push(
      () => bridge.stop(100),
      () => upstream.close(),
    );
    for (const key of [keys.ann, keys.ann, keys.bob]) {
      const recorded = nextRecord(bridge);
      const response = await fetch(`${bridge.url}/api/chat`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}` },
        body: JSON.stringify({ model: 'm:7b', stream: false, messages: [{ role: 'user', content: 'hi' }] }),
      });
      assert.equal(response.status, 200);
      await response.text();
      await recorded;
    }
  });

  const get = (pathname: string, key: string): Promise<Response> => fetch(`${bridge.url}${pathname}`, { headers: { authorization: `Bearer ${key}` } });

  it('gives a user a CSV of their own requests, named after the days they picked in their own time zone', async () => {
    for (const tz of [120, -300]) {
      const { day, query } = todayIn(tz);
      const response = await get(`/bridge/api/usage.csv?${query}`, keys.ann);
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('content-type'), 'text/csv; charset=utf-8');
      assert.equal(response.headers.get('content-disposition'), `attachment; filename="copilot-bridge-usage-${day}-${day}.csv"`, `tz ${tz}`);
      const [header, ...rows] = (await response.text()).trimEnd().split('\r\n');
      assert.match(header ?? '', /^time,user,team,surface,path,model,/);
      assert.deepEqual(
        rows.map((row) => row.split(',').slice(1, 3)),
        [
          ['ann', 'web'],
          ['ann', 'web'],
        ],
      );
    }
  });

  it("gives an admin everyone's requests", async () => {
    const { query } = todayIn(0);
    const rows = (await (await get(`/bridge/api/usage.csv?${query}`, keys.admin)).text()).trimEnd().split('\r\n').slice(1);
    assert.deepEqual(rows.map((row) => row.split(',')[1]).sort(), ['ann', 'ann', 'bob']);
  });

  it('reads dates as days in the asked time zone: from the start of the first to the start of the day `to` names', async () => {
    const query = 'from=2025-06-01&to=2025-06-08&tz=-300';
    const report = (await (await get(`/bridge/api/usage?${query}`, keys.ann)).json()) as UsageReport;
    assert.deepEqual([report.from, report.to], ['2025-06-01T05:00:00.000Z', '2025-06-08T05:00:00.000Z']);
    const csv = await get(`/bridge/api/usage.csv?${query}`, keys.ann);
    assert.equal(csv.headers.get('content-disposition'), 'attachment; filename="copilot-bridge-usage-2025-06-01-2025-06-07.csv"');
  });

  it("gives the tray today's figures, each request counted once", () => {
    // The three requests are the bridge's first: the first of them started the day's count.
    const records = bridge.history.recent();
    assert.equal(records.length, 3);
    assert.deepEqual(bridge.state.today, { requests: 3, savedDollars: records.reduce((sum, r) => sum + (r.savedDollars ?? 0), 0) });
  });

  it('answers 400 with the reason for a range it cannot read, in the report and the export alike', async () => {
    const cases = [
      ['from=last%20week', 'from and to must be dates (2025-06-01) or times (2025-06-01T12:00:00Z)'],
      ['from=2025-06-09&to=2025-06-01', 'from must not be after to'],
      ['from=2025-06-01&to=2025-06-09&tz=900', 'tz must be minutes east of UTC (-840 to 840)'],
      ['tz=east', 'tz must be minutes east of UTC (-840 to 840)'],
    ] as const;
    for (const [query, error] of cases) {
      for (const pathname of ['/bridge/api/usage', '/bridge/api/usage.csv']) {
        const response = await get(`${pathname}?${query}`, keys.ann);
        assert.equal(response.status, 400, `${pathname}?${query}`);
        assert.deepEqual(await response.json(), { error });
      }
    }
  });
});
