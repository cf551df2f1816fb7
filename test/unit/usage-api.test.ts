import assert from 'node:assert/strict';
import { mkdirSync, rmdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { addKey } from '../../src/auth/keys.js';
import type { BridgeHandle } from '../../src/bridge.js';
import type { UsageReport } from '../../src/contract/index.js';
import { nextRecord, startStandIn, startTestBridge, type StandIn } from '../support/bridge.js';
import { sampleRecord } from '../support/history.js';
import { configFile, tempDir } from '../support/temp.js';

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

/** An upstream that answers every chat with a short Ollama answer from m:7b. */
async function startChatUpstream(): Promise<StandIn> {
  const upstream = await startStandIn(
    (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.end(
        `${JSON.stringify({ model: 'm:7b', created_at: '2025-01-01T00:00:00Z', message: { role: 'assistant', content: 'ok' }, done: true, done_reason: 'stop', prompt_eval_count: 5, eval_count: 7 })}\n`,
      );
    },
    ['m:7b'],
  );
  cleanups.push(() => upstream.close());
  return upstream;
}

/** One chat through the bridge with `key`, once its history record is written. */
async function chat(bridge: BridgeHandle, key: string): Promise<void> {
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

const getWith = (bridge: BridgeHandle) => (pathname: string, key: string) => fetch(`${bridge.url}${pathname}`, { headers: { authorization: `Bearer ${key}` } });

/** The data rows of a usage CSV, each split into its cells (none of the test's cells holds a comma). */
async function csvRows(response: Response): Promise<string[][]> {
  return (await response.text())
    .trimEnd()
    .split('\r\n')
    .slice(1)
    .map((row) => row.split(','));
}

describe('usage export', () => {
  let bridge: BridgeHandle;
  const keys: Record<'admin' | 'ann' | 'bob', string> = { admin: '', ann: '', bob: '' };

  before(async () => {
    const upstream = await startChatUpstream();
    const file = path.join(tempDir('usage-'), 'config.yaml');
    keys.admin = addKey(file, { name: 'ada', role: 'admin' });
    keys.ann = addKey(file, { name: 'ann', team: 'web', role: 'user' });
    keys.bob = addKey(file, { name: 'bob', team: 'data', role: 'user' });
    bridge = await startTestBridge({ file, env: { OLLAMA_HOST: upstream.url } });
    cleanups.push(() => bridge.stop(100));
    for (const key of [keys.ann, keys.ann, keys.bob]) await chat(bridge, key);
  });

  const get = (pathname: string, key: string): Promise<Response> => getWith(bridge)(pathname, key);

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

  it('reads a time without an offset in the asked time zone too, not in the zone the bridge runs in', async () => {
    // An offset the bridge's own zone does not have on that day, so the two readings differ.
    const tz = -new Date('2025-06-01T09:00:00').getTimezoneOffset() + 180;
    const query = `from=2025-06-01T09:00&to=2025-06-01 17:30:00&tz=${tz}`;
    const report = (await (await get(`/bridge/api/usage?${query}`, keys.ann)).json()) as UsageReport;
    const utc = (time: string): string => new Date(Date.parse(`${time}Z`) - tz * 60_000).toISOString();
    assert.deepEqual([report.from, report.to], [utc('2025-06-01T09:00:00'), utc('2025-06-01T17:30:00')]);
    const withOffset = (await (await get(`/bridge/api/usage?from=2025-06-01T09:00:00%2B02:00&tz=${tz}`, keys.ann)).json()) as UsageReport;
    assert.equal(withOffset.from, '2025-06-01T07:00:00.000Z', 'a time that says its offset is read with it');
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
      // What JavaScript's Date would still read, each in the bridge's own zone: 2001-01-01, and a local midnight.
      ['from=1', 'from and to must be dates (2025-06-01) or times (2025-06-01T12:00:00Z)'],
      ['to=2025/06/01', 'from and to must be dates (2025-06-01) or times (2025-06-01T12:00:00Z)'],
      // Days no calendar has, which Date.parse rolls over into March rather than refusing.
      ['from=2025-02-01&to=2025-02-30', 'from and to must be dates (2025-06-01) or times (2025-06-01T12:00:00Z)'],
      ['from=2025-02-31T12:00Z', 'from and to must be dates (2025-06-01) or times (2025-06-01T12:00:00Z)'],
      // Given twice: neither is the one meant, and the default range is not what was asked for either.
      ['from=2025-06-01&from=2025-05-01', 'from and to must be dates (2025-06-01) or times (2025-06-01T12:00:00Z)'],
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

describe('usage of more days than the history holds in memory', () => {
  let bridge: BridgeHandle;
  let dataDir: string;
  const keys: Record<'admin' | 'ann', string> = { admin: '', ann: '' };
  /** One request a day, 2025-05-01 to 2025-05-12 at 10:00 UTC, by ann and bob in turn. */
  const onDisk = Array.from({ length: 12 }, (_, day) =>
    sampleRecord({
      id: `d${day + 1}`,
      time: `2025-05-${String(day + 1).padStart(2, '0')}T10:00:00.000Z`,
      ...(day % 2 === 0 ? { user: 'ann', team: 'web' } : { user: 'bob', team: 'data' }),
    }),
  );
  const lines = (records: typeof onDisk): string => records.map((r) => `${JSON.stringify(r)}\n`).join('');
  const tomorrow = new Date(Date.now() + DAY_MS).toISOString().slice(0, 10);
  const get = (pathname: string, key: string): Promise<Response> => getWith(bridge)(pathname, key);

  before(async () => {
    const upstream = await startChatUpstream();
    // The first six days were rotated into an older file; the ring (5 records) holds days 9-12 and today's request.
    dataDir = tempDir('usage-data-');
    writeFileSync(path.join(dataDir, 'history.1.jsonl'), lines(onDisk.slice(0, 6)));
    writeFileSync(path.join(dataDir, 'history.jsonl'), lines(onDisk.slice(6)));
    const file = configFile('history:\n  max_records: 5\n');
    keys.admin = addKey(file, { name: 'ada', role: 'admin' });
    keys.ann = addKey(file, { name: 'ann', team: 'web', role: 'user' });
    bridge = await startTestBridge({ file, env: { OLLAMA_HOST: upstream.url, BRIDGE_DATA_DIR: dataDir } });
    cleanups.push(() => bridge.stop(100));
    await chat(bridge, keys.ann);
    assert.deepEqual(
      bridge.history.recent().map((r) => /^d\d+$/.test(r.id)),
      [true, true, true, true, false],
    );
  });

  it('counts every request of the range, those in the files and the one not written yet, in the report and the CSV', async () => {
    const query = `from=2025-05-01&to=${tomorrow}&tz=0`;
    const report = (await (await get(`/bridge/api/usage?${query}`, keys.admin)).json()) as UsageReport;
    assert.equal(report.totals.requests, 13);
    assert.deepEqual(
      report.byPerson.map((p) => [p.name, p.requests]),
      [
        ['ann', 7],
        ['bob', 6],
      ],
    );
    const rows = await csvRows(await get(`/bridge/api/usage.csv?${query}`, keys.admin));
    assert.deepEqual(
      rows.slice(0, 12).map((row) => row[0]),
      onDisk.map((r) => r.time),
    );
    assert.equal(rows.length, 13);
    assert.equal(rows[12]?.[1], 'ann');
  });

  it('counts a range that ended before the oldest record in memory', async () => {
    const query = 'from=2025-05-02&to=2025-05-05&tz=0';
    const report = (await (await get(`/bridge/api/usage?${query}`, keys.admin)).json()) as UsageReport;
    assert.equal(report.totals.requests, 3);
    assert.equal(report.coversSince, null, 'the files reach back before the range');
    const rows = await csvRows(await get(`/bridge/api/usage.csv?${query}`, keys.admin));
    assert.deepEqual(
      rows.map((row) => row[0]),
      ['2025-05-02T10:00:00.000Z', '2025-05-03T10:00:00.000Z', '2025-05-04T10:00:00.000Z'],
    );
  });

  it('says from when on it covers a range that starts before the oldest record kept', async () => {
    const report = (await (await get(`/bridge/api/usage?from=2025-04-01&to=${tomorrow}&tz=0`, keys.admin)).json()) as UsageReport;
    assert.equal(report.coversSince, '2025-05-01T10:00:00.000Z');
    assert.equal(report.totals.requests, 13);
  });

  it('gives a user only their own requests from the files', async () => {
    const query = `from=2025-05-01&to=${tomorrow}&tz=0`;
    const report = (await (await get(`/bridge/api/usage?${query}`, keys.ann)).json()) as UsageReport;
    assert.equal(report.scope, 'own');
    assert.equal(report.totals.requests, 7);
    const rows = await csvRows(await get(`/bridge/api/usage.csv?${query}`, keys.ann));
    assert.equal(rows.length, 7);
    assert.deepEqual(new Set(rows.map((row) => row[1])), new Set(['ann']));
  });

  it('answers 500 with the reason in the control API shape when the files cannot be read, and keeps serving', async () => {
    const unreadable = path.join(dataDir, 'history.2.jsonl');
    mkdirSync(unreadable);
    try {
      for (const pathname of ['/bridge/api/usage', '/bridge/api/usage.csv']) {
        const response = await get(`${pathname}?from=2025-05-01&to=${tomorrow}`, keys.admin);
        assert.equal(response.status, 500, pathname);
        assert.deepEqual(await response.json(), { error: 'could not read the usage history; the bridge log says why' });
      }
    } finally {
      rmdirSync(unreadable);
    }
    assert.equal((await get(`/bridge/api/usage?from=2025-05-01&to=${tomorrow}`, keys.admin)).status, 200);
  });
});
