import assert from 'node:assert/strict';
import { appendFileSync, chmodSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import fsPromises from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import { describe, it, mock } from 'node:test';
import { HistoryStore, type HistoryOptions, type HistoryRecord } from '../../src/history/store.js';
import { memoryLogger, startTestBridge } from '../support/bridge.js';
import { sampleRecord } from '../support/history.js';
import { freePort } from '../support/ollama-rig.js';
import { tempDir } from '../support/temp.js';
import { until } from '../support/wait.js';

function record(id: number): HistoryRecord {
  return sampleRecord({ id: `r${String(id).padStart(2, '0')}`, time: new Date(1_700_000_000_000 + id).toISOString(), surface: 'ollama', path: '/api/chat' });
}

const options = (dir: string) => ({ dir, maxRecords: 100, maxFileBytes: 1024 * 1024, keepFiles: 2 });

async function openStore(storeOptions: HistoryOptions): Promise<HistoryStore> {
  const store = new HistoryStore(storeOptions);
  await store.start();
  return store;
}

describe('history store', () => {
  it('survives a restart: what was added comes back, in order', async () => {
    const dir = tempDir('history-');
    const first = await openStore(options(dir));
    for (let i = 0; i < 5; i++) first.add(record(i));
    await first.stop();
    const second = await openStore(options(dir));
    assert.deepEqual(
      second.recent().map((r) => r.id),
      ['r00', 'r01', 'r02', 'r03', 'r04'],
    );
    await second.stop();
  });

  it('writes within about a second without being closed (a crash loses at most the last second)', async () => {
    const dir = tempDir('history-');
    const store = await openStore({ ...options(dir), flushIntervalMs: 200 });
    store.add(record(1));
    const onDisk = await until(() => readFileSync(path.join(dir, 'history.jsonl'), 'utf8').trim() || undefined, 'the record on disk', 2000);
    assert.equal(JSON.parse(onDisk).id, 'r01');
    await store.stop();
  });

  it('skips a torn last line instead of failing', async () => {
    const dir = tempDir('history-');
    const store = await openStore(options(dir));
    store.add(record(1));
    store.add(record(2));
    await store.stop();
    appendFileSync(path.join(dir, 'history.jsonl'), '{"id":"r03","time":"20');
    const told: unknown[] = [];
    const reopened = await openStore({ ...options(dir), onUnreadableLines: (...report) => told.push(report) });
    assert.deepEqual(
      reopened.recent().map((r) => r.id),
      ['r01', 'r02'],
    );
    assert.deepEqual(told, [['history.jsonl', 1, [3]]]);
    // The next record starts a line of its own, so it is not lost with the torn one.
    reopened.add(record(4));
    await reopened.stop();
    const third = await openStore(options(dir));
    assert.deepEqual(
      third.recent().map((r) => r.id),
      ['r01', 'r02', 'r04'],
    );
    await third.stop();
  });

  it('skips lines that parse but are no record (not an object, no time, a count that is no number), and reads the rest', async () => {
    const dir = tempDir('history-');
    const line = (overrides: Record<string, unknown>): string => JSON.stringify({ ...record(1), ...overrides });
    const lines = [
      line({ id: 'a' }),
      '5',
      'null',
      '[]',
      '"text"',
      line({ id: 'b', time: 'yesterday' }),
      line({ id: 'c', time: 1_700_000_000_000 }),
      line({ id: 'd', tokensIn: '12' }),
      line({ id: 'e', savedDollars: '0.5' }),
      // Older records have no accounting fields, or null ones: they are records all the same.
      line({ id: 'f', savedDollars: null, gpuMs: undefined }),
    ];
    writeFileSync(path.join(dir, 'history.jsonl'), `${lines.join('\n')}\n`);
    const told: unknown[] = [];
    const store = await openStore({ ...options(dir), onUnreadableLines: (...report) => told.push(report) });
    assert.deepEqual(
      store.recent().map((r) => r.id),
      ['a', 'f'],
    );
    // Eight lines, told once: how many, and where the first few are.
    assert.deepEqual(told, [['history.jsonl', 8, [2, 3, 4, 5, 6]]]);
    await store.stop();
  });

  it('skips a line far longer than any record without holding it, at start and in a report read from the files', async () => {
    const dir = tempDir('history-');
    // A record is some 650 bytes; a line of megabytes is damage (hundreds of them would exhaust memory or end the process).
    const huge = JSON.stringify({ ...record(2), reason: 'x'.repeat(3 * 1024 * 1024) });
    writeFileSync(path.join(dir, 'history.jsonl'), `${JSON.stringify(record(1))}\n${huge}\n${JSON.stringify(record(3))}\n`);
    const told: unknown[] = [];
    const store = await openStore({ dir, maxRecords: 1, maxFileBytes: 16 * 1024 * 1024, keepFiles: 0, onUnreadableLines: (...report) => told.push(report) });
    assert.deepEqual(
      store.recent().map((r) => r.id),
      ['r03'],
    );
    assert.deepEqual(told, [['history.jsonl', 1, [2]]]);
    const selection = await store.select(new Date(0), () => true);
    assert.deepEqual(
      selection.records.map((r) => r.id),
      ['r01', 'r03'],
    );
    await store.stop();
  });

  it('creates its file readable by this user only, and tightens one an older version created', async () => {
    const dir = tempDir('history-');
    const store = await openStore(options(dir));
    store.add(record(1));
    await store.stop();
    const file = path.join(dir, 'history.jsonl');
    assert.equal(statSync(file).mode & 0o777, 0o600);
    chmodSync(file, 0o644);
    const reopened = await openStore(options(dir));
    assert.equal(statSync(file).mode & 0o777, 0o600);
    await reopened.stop();
  });

  it('tightens only files of its own: a history name that leads elsewhere (a link to a folder, a device) keeps its mode', async () => {
    const dir = tempDir('history-');
    // Run as root, a chmod through such a link would change what it leads to for every user (/dev/null).
    const elsewhere = tempDir('not-history-');
    chmodSync(elsewhere, 0o755);
    symlinkSync(elsewhere, path.join(dir, 'history.1.jsonl'));
    const store = await openStore(options(dir));
    await store.stop();
    assert.equal(statSync(elsewhere).mode & 0o777, 0o755);
  });

  it('rotates by size, keeps the configured number of old files, and reads them back', async () => {
    const dir = tempDir('history-');
    const size = Buffer.byteLength(`${JSON.stringify(record(0))}\n`);
    const store = await openStore({ dir, maxRecords: 1000, maxFileBytes: size * 3, keepFiles: 2 });
    for (let i = 0; i < 12; i++) {
      store.add(record(i));
      await store.flush();
    }
    await store.stop();
    assert.deepEqual(readdirSync(dir).sort(), ['history.1.jsonl', 'history.2.jsonl', 'history.jsonl']);
    const reopened = await openStore({ dir, maxRecords: 1000, maxFileBytes: size * 3, keepFiles: 2 });
    // 3 files of 3 records: the 9 newest survive.
    assert.deepEqual(
      reopened.recent().map((r) => r.id),
      ['r03', 'r04', 'r05', 'r06', 'r07', 'r08', 'r09', 'r10', 'r11'],
    );
    await reopened.stop();
  });

  it('removes the files past a lowered keep_files at start, and keeps the configured number on each rotation', async () => {
    const dir = tempDir('history-');
    const size = Buffer.byteLength(`${JSON.stringify(record(0))}\n`);
    const fill = async (store: HistoryStore, from: number, count: number): Promise<void> => {
      for (let i = from; i < from + count; i++) {
        store.add(record(i));
        await store.flush();
      }
    };
    const generous = await openStore({ dir, maxRecords: 1000, maxFileBytes: size * 2, keepFiles: 4 });
    await fill(generous, 0, 10);
    await generous.stop();
    assert.deepEqual(readdirSync(dir).sort(), ['history.1.jsonl', 'history.2.jsonl', 'history.3.jsonl', 'history.4.jsonl', 'history.jsonl']);
    // A file past the highest generation ever kept (from a still older setting) goes too.
    writeFileSync(path.join(dir, 'history.9.jsonl'), `${JSON.stringify(record(99))}\n`);
    const lowered = await openStore({ dir, maxRecords: 1000, maxFileBytes: size * 2, keepFiles: 1 });
    assert.deepEqual(readdirSync(dir).sort(), ['history.1.jsonl', 'history.jsonl']);
    assert.deepEqual(
      lowered.recent().map((r) => r.id),
      ['r06', 'r07', 'r08', 'r09'],
    );
    await fill(lowered, 10, 3);
    await lowered.stop();
    assert.deepEqual(readdirSync(dir).sort(), ['history.1.jsonl', 'history.jsonl']);
  });

  it('starts, rotates and reads back as fast with keep_files in the millions (keep everything) as with a few', { timeout: 10_000 }, async () => {
    const dir = tempDir('history-');
    const size = Buffer.byteLength(`${JSON.stringify(record(0))}\n`);
    const keepAll = { dir, maxRecords: 2, maxFileBytes: size * 2, keepFiles: 10_000_000 };
    const store = await openStore(keepAll);
    for (let i = 0; i < 6; i++) {
      store.add(record(i));
      await store.flush();
    }
    // The ring holds 2: the rest come from the files.
    const { records } = await store.select(new Date(0), () => true);
    assert.deepEqual(
      records.map((r) => r.id),
      ['r00', 'r01', 'r02', 'r03', 'r04', 'r05'],
    );
    await store.stop();
    assert.deepEqual(readdirSync(dir).sort(), ['history.1.jsonl', 'history.2.jsonl', 'history.jsonl']);
    const reopened = await openStore({ ...keepAll, maxRecords: 100 });
    assert.equal(reopened.size, 6);
    await reopened.stop();
  });

  it('keeps working when its file cannot be written, and says so', async () => {
    const dir = tempDir('history-');
    const errors: string[] = [];
    const store = await openStore({ ...options(dir), onWriteError: (error) => errors.push(error.message) });
    rmSync(dir, { recursive: true, force: true });
    writeFileSync(dir, 'not a folder');
    store.add(record(1));
    await store.flush();
    store.add(record(2));
    await store.flush();
    assert.equal(errors.length, 2);
    assert.deepEqual(
      store.recent().map((r) => r.id),
      ['r01', 'r02'],
    );
    await store.stop();
  });

  it('starts a new line after a write that failed part way (disk full), so the next records are not lost with it', async (t) => {
    const dir = tempDir('history-');
    const errors: string[] = [];
    const store = await openStore({ ...options(dir), onWriteError: (error) => errors.push(error.message) });
    store.add(record(1));
    await store.flush();
    // The disk fills up mid-write: part of the record reaches the file, then the write fails.
    const { appendFile: append } = fsPromises;
    const appendFile = mock.method(fsPromises, 'appendFile', async (file: string, text: string) => {
      await append(file, text.slice(0, 20));
      throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    });
    syncBuiltinESMExports();
    t.after(() => {
      appendFile.mock.restore();
      syncBuiltinESMExports();
    });
    store.add(record(2));
    await store.flush();
    assert.deepEqual(errors, ['ENOSPC: no space left on device, write']);
    // Space again: the next record is written whole, on a line of its own.
    appendFile.mock.restore();
    syncBuiltinESMExports();
    store.add(record(3));
    await store.stop();
    const told: unknown[] = [];
    const reopened = await openStore({ ...options(dir), onUnreadableLines: (...report) => told.push(report) });
    assert.deepEqual(
      reopened.recent().map((r) => r.id),
      ['r01', 'r03'],
    );
    assert.deepEqual(told, [['history.jsonl', 1, [2]]], 'only the torn record is skipped');
    await reopened.stop();
  });

  it('answers a range past the ring from the records not yet written once its folder was deleted', async () => {
    const dir = tempDir('history-');
    const store = await openStore({ dir, maxRecords: 2, maxFileBytes: 1024 * 1024, keepFiles: 2, flushIntervalMs: 3_600_000 });
    for (let i = 0; i < 4; i++) store.add(record(i));
    rmSync(dir, { recursive: true, force: true });
    const { records } = await store.select(new Date(0), () => true);
    assert.deepEqual(
      records.map((r) => r.id),
      ['r00', 'r01', 'r02', 'r03'],
    );
    await store.stop();
  });

  it('picks records older than the ring holds from all kept files and the records not yet written, oldest first', async () => {
    const dir = tempDir('history-');
    const size = Buffer.byteLength(`${JSON.stringify(record(0))}\n`);
    const store = await openStore({ dir, maxRecords: 3, maxFileBytes: size * 3, keepFiles: 2 });
    for (let i = 0; i < 12; i++) {
      store.add(record(i));
      await store.flush();
    }
    appendFileSync(path.join(dir, 'history.1.jsonl'), '{"id":"torn\n');
    store.add(record(12));
    store.add(record(13));
    const everything = (): boolean => true;
    // A write queued while the files are read waits for the read: nothing is read twice or missed.
    store.add(record(14));
    const [selection] = await Promise.all([store.select(new Date(0), everything), store.flush()]);
    // r00-r02 were rotated away; r03-r11 are in 3 files of 3; r12-r14 were not written yet when asked.
    assert.deepEqual(
      selection.records.map((r) => r.id),
      ['r03', 'r04', 'r05', 'r06', 'r07', 'r08', 'r09', 'r10', 'r11', 'r12', 'r13', 'r14'],
    );
    assert.equal(selection.oldest, record(3).time);
    // Writing r12-r14 rotated r03-r05 away.
    const odd = await store.select(new Date(0), (r) => Number(r.id.slice(1)) % 2 === 1);
    assert.deepEqual(
      odd.records.map((r) => r.id),
      ['r07', 'r09', 'r11', 'r13'],
    );
    assert.equal(odd.oldest, record(6).time);
    // A range the ring reaches back to is answered from the ring.
    const recent = await store.select(new Date(record(12).time), everything);
    assert.deepEqual(
      recent.records.map((r) => r.id),
      ['r12', 'r13', 'r14'],
    );
    await store.stop();
  });

  it('reads the files for a range that a record dropped from the ring started in, though an older-started one is still held', async () => {
    const dir = tempDir('history-');
    const store = await openStore({ dir, maxRecords: 3, maxFileBytes: 1024 * 1024, keepFiles: 1 });
    // Records are kept in the order requests end: r00, which began first, ended after r01 and r02.
    // r01 and r02 leave the ring, r00 stays, though they began after it.
    for (const id of [1, 2, 0, 3, 4]) store.add(record(id));
    await store.flush();
    const from = new Date(record(1).time);
    const selection = await store.select(from, (r) => Date.parse(r.time) >= from.getTime());
    assert.deepEqual(selection.records.map((r) => r.id).sort(), ['r01', 'r02', 'r03', 'r04']);
    await store.stop();
  });

  it('picks from the ring alone when history lives in memory', async () => {
    const store = await openStore({ maxRecords: 3, maxFileBytes: 1, keepFiles: 0 });
    for (let i = 0; i < 5; i++) store.add(record(i));
    const selection = await store.select(new Date(0), () => true);
    assert.deepEqual(
      selection.records.map((r) => r.id),
      ['r02', 'r03', 'r04'],
    );
    assert.equal(selection.oldest, record(2).time);
    await store.stop();
  });

  it('keeps a bounded ring in memory and tells listeners about each record', async () => {
    const store = await openStore({ maxRecords: 3, maxFileBytes: 1, keepFiles: 0 });
    const heard: string[] = [];
    store.onRecord((r) => heard.push(r.id));
    for (let i = 0; i < 5; i++) store.add(record(i));
    assert.deepEqual(
      store.recent().map((r) => r.id),
      ['r02', 'r03', 'r04'],
    );
    assert.deepEqual(heard, ['r00', 'r01', 'r02', 'r03', 'r04']);
    await store.stop();
  });
});

describe('a data folder that cannot be created', () => {
  // /proc takes no new folders, yet has the ones above: Node's recursive mkdir retries there for ever.
  const unmakeable = '/proc/copilot-bridge-data';
  it('fails the start at once, naming the folder', { skip: process.platform !== 'linux', timeout: 5000 }, async () => {
    await assert.rejects(openStore(options(path.join(unmakeable, 'history'))), new RegExp(`could not create the folder ${unmakeable} \\(ENOENT`));
    await assert.rejects(
      startTestBridge({ env: { BRIDGE_DATA_DIR: unmakeable, OLLAMA_HOST: `127.0.0.1:${await freePort()}` } }),
      new RegExp(`could not create the folder ${unmakeable}`),
    );
  });
});

describe('history files read at start', () => {
  it('logs one warning per damaged file, with how many lines it skipped and the first few, not one per line', async () => {
    const dataDir = tempDir('bridge-data-');
    const garbage = Array.from({ length: 3000 }, (_, i) => `garbage ${i}`);
    writeFileSync(path.join(dataDir, 'history.jsonl'), `${JSON.stringify(record(2))}\n${garbage.join('\n')}\n`);
    writeFileSync(path.join(dataDir, 'history.1.jsonl'), `{"id":"r00","time":"20\n${JSON.stringify(record(1))}\n`);
    const { logger, lines } = memoryLogger();
    const bridge = await startTestBridge({ env: { BRIDGE_DATA_DIR: dataDir, OLLAMA_HOST: `127.0.0.1:${await freePort()}` }, logger });
    assert.deepEqual(
      bridge.history.recent().map((r) => r.id),
      ['r01', 'r02'],
    );
    await bridge.stop(100);
    const warnings = lines().filter((line) => line.level === 40 && String(line.msg).includes('history'));
    assert.deepEqual(
      warnings.map(({ msg, file, skippedLines, firstLines }) => ({ msg, file, skippedLines, firstLines })),
      [
        { msg: 'skipped unreadable history lines', file: 'history.1.jsonl', skippedLines: 1, firstLines: [1] },
        { msg: 'skipped unreadable history lines', file: 'history.jsonl', skippedLines: 3000, firstLines: [2, 3, 4, 5, 6] },
      ],
    );
  });
});
