import { appendFile, open, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { isJsonObject, jsonOf, type HistoryRecord } from '../contract/index.js';
import { makeFolder } from '../files.js';
export type { HistoryRecord } from '../contract/index.js';

export interface HistoryOptions {
  /** Folder of the durable file; without it history lives in memory only. */
  dir?: string;
  maxRecords: number;
  maxFileBytes: number;
  keepFiles: number;
  flushIntervalMs?: number;
  /**
   * Told once per file of the lines that could not be read back (a torn write at a crash, a
   * damaged file): how many, and the numbers of the first few.
   */
  onUnreadableLines?: (file: string, count: number, firstLines: number[]) => void;
  /** Told when the file cannot be written (disk full, folder gone); the records stay in memory. */
  onWriteError?: (error: Error) => void;
}

const FILE = 'history.jsonl';
/** A rotated file: history.1.jsonl is the newest of them. */
const ROTATED_FILE = /^history\.([1-9]\d*)\.jsonl$/;
/** History says what was asked of which model when: readable by this user only. */
const FILE_MODE = 0o600;
/** Line numbers told of a file's unreadable lines: enough to find the damage, however much there is. */
const FIRST_LINES_TOLD = 5;

/** Records written before identities and accounting existed read back with those fields empty. */
function withAccountingFields(record: Partial<HistoryRecord>): HistoryRecord {
  return {
    user: null,
    team: null,
    localOnly: null,
    gpuMs: null,
    energyJoules: null,
    cloudCostDollars: null,
    energyCostDollars: null,
    savedDollars: null,
    ...record,
  } as HistoryRecord;
}

/** The figures usage reports add up: a string among them would be joined to the totals, not added. */
const COUNTED_FIELDS = ['tokensIn', 'tokensOut', 'gpuMs', 'energyJoules', 'cloudCostDollars', 'energyCostDollars', 'savedDollars'] as const;

/** Whether a parsed line can be read as a record: reports select by its time and user and add up its figures. */
function isRecord(value: unknown): value is Partial<HistoryRecord> & { time: string } {
  if (!isJsonObject(value)) return false;
  const numberOrNull = (field: unknown): boolean => field === undefined || field === null || (typeof field === 'number' && Number.isFinite(field));
  const textOrNull = (field: unknown): boolean => field === undefined || field === null || typeof field === 'string';
  return (
    typeof value.time === 'string' &&
    !Number.isNaN(Date.parse(value.time)) &&
    textOrNull(value.user) &&
    textOrNull(value.team) &&
    COUNTED_FIELDS.every((name) => numberOrNull(value[name]))
  );
}

/** One line of the file as a record; undefined for a line that does not parse (a torn write) or is no record (a damaged file). */
function parseLine(line: string): HistoryRecord | undefined {
  const value = jsonOf(line);
  return isRecord(value) ? withAccountingFields(value) : undefined;
}

/** A record is some 650 bytes; a line past this is damage, dropped as it is read rather than held in memory. */
const MAX_LINE_BYTES = 1024 * 1024;
const NEWLINE = 0x0a;

interface FileLine {
  /** Counted from 1. */
  number: number;
  /** null for a line longer than MAX_LINE_BYTES. */
  text: string | null;
  /** false for a last line without its newline (a torn write). */
  terminated: boolean;
}

/** The lines of a file, read in chunks: memory stays bounded however long a line or the file is. */
async function* linesOf(file: FileHandle): AsyncGenerator<FileLine> {
  let parts: Buffer[] = [];
  let length = 0;
  let number = 0;
  const line = (terminated: boolean): FileLine => {
    const text = length > MAX_LINE_BYTES ? null : Buffer.concat(parts).toString('utf8');
    parts = [];
    length = 0;
    return { number: ++number, text, terminated };
  };
  for await (const chunk of file.createReadStream() as AsyncIterable<Buffer>) {
    let start = 0;
    for (let end = chunk.indexOf(NEWLINE); end !== -1; end = chunk.indexOf(NEWLINE, start)) {
      if (length <= MAX_LINE_BYTES) parts.push(chunk.subarray(start, end));
      length += end - start;
      yield line(true);
      start = end + 1;
    }
    // The rest of the chunk starts the next line; of one already too long only its length is kept.
    if (length <= MAX_LINE_BYTES) parts.push(chunk.subarray(start));
    length += chunk.length - start;
  }
  if (length > 0) yield line(false);
}

/** Records picked from the history, and how far back the history they were picked from reaches. */
export interface HistorySelection {
  /** Oldest first. */
  records: HistoryRecord[];
  /** Time of the oldest record held (in the ring, or in the files when they were read); null when none is. */
  oldest: string | null;
}

/**
 * Routing history: a bounded ring in memory for the dashboard, and an append-only JSONL file that
 * is written at most a second behind (so a crash loses at most the last second) and rotated by size.
 * On start the newest records are read back; a line that does not parse is skipped, not fatal.
 */
export class HistoryStore {
  readonly name = 'history store';
  private readonly ring: HistoryRecord[] = [];
  /**
   * The latest start (ms) of a record trimmed from the ring. Records arrive as requests end, not as
   * they start, so one that started after the ring's first record may have left it already.
   */
  private droppedLatestStart = -Infinity;
  /** Records not yet in the file; they are turned into lines when written, off the request path. */
  private pending: HistoryRecord[] = [];
  private writing: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;
  /** The current file may end in a torn line (a crash or a failed write): the next write starts a new line. */
  private tornTail = false;
  private readonly listeners = new Set<(record: HistoryRecord) => void>();

  constructor(private readonly options: HistoryOptions) {}

  /** Reads the newest records back and checks the file can be written: a folder that cannot is a failed start. */
  async start(): Promise<void> {
    const { dir } = this.options;
    if (dir === undefined) return;
    makeFolder(dir);
    // keep_files may have been lowered since the last start: the files past it are no longer kept.
    await this.removeRotatedPast(dir);
    await this.load(dir);
    await appendFile(this.fileAt(0), '', { mode: FILE_MODE });
    this.timer = setInterval(() => void this.flush(), this.options.flushIntervalMs ?? 1000);
    this.timer.unref();
  }

  private fileAt(generation: number): string {
    const dir = this.options.dir as string;
    return path.join(dir, generation === 0 ? FILE : `history.${generation}.jsonl`);
  }

  /**
   * The files there are, oldest first: the rotated ones kept (each by its number), then the current
   * one (0). Read from the folder, so keep_files in the millions ("keep everything") costs no more.
   */
  private async generations(): Promise<number[]> {
    // A folder deleted under the running bridge has no files: the records in memory still answer.
    const names = await readdir(this.options.dir as string).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return [];
      throw error;
    });
    const rotated = names
      .map((name) => Number(ROTATED_FILE.exec(name)?.[1] ?? 0))
      .filter((generation) => generation > 0 && generation <= this.options.keepFiles)
      .sort((a, b) => b - a);
    return [...rotated, 0];
  }

  private async load(dir: string): Promise<void> {
    for (const generation of await this.generations()) {
      const name = this.fileAt(generation);
      let file: FileHandle;
      try {
        file = await open(name);
      } catch {
        continue;
      }
      let unreadable = 0;
      const firstUnreadable: number[] = [];
      try {
        // Older versions created it readable by everyone; what was asked of which model is this user's
        // only. A name that leads to something else (a device, a folder) keeps that thing's mode.
        if ((await file.stat()).isFile()) await file.chmod(FILE_MODE).catch(() => undefined);
        for await (const line of linesOf(file)) {
          if (generation === 0) this.tornTail = !line.terminated;
          if (line.text?.trim() === '') continue;
          const record = line.text === null ? undefined : parseLine(line.text);
          if (record !== undefined) this.remember(record);
          else {
            unreadable += 1;
            if (firstUnreadable.length < FIRST_LINES_TOLD) firstUnreadable.push(line.number);
          }
        }
      } catch {
        // A file that cannot be read (a folder, an I/O error) is skipped like a missing one.
      } finally {
        await file.close();
      }
      if (unreadable > 0) this.options.onUnreadableLines?.(path.relative(dir, name), unreadable, firstUnreadable);
    }
  }

  private remember(record: HistoryRecord): void {
    this.ring.push(record);
    // Trimmed in steps, not on every record: dropping the oldest one moves the whole array.
    const { maxRecords } = this.options;
    if (this.ring.length >= maxRecords + Math.max(64, maxRecords >> 3))
      for (const dropped of this.ring.splice(0, this.ring.length - maxRecords))
        this.droppedLatestStart = Math.max(this.droppedLatestStart, Date.parse(dropped.time));
  }

  add(record: HistoryRecord): void {
    this.remember(record);
    if (this.options.dir !== undefined) this.pending.push(record);
    for (const listener of this.listeners) listener(record);
  }

  /** The newest records, oldest first. */
  recent(limit = this.options.maxRecords): HistoryRecord[] {
    const { maxRecords } = this.options;
    const kept = this.ring.length > maxRecords ? this.ring.slice(this.ring.length - maxRecords) : this.ring;
    return kept.slice(-limit);
  }

  /**
   * The records `keep` picks among those from `from` on. The ring answers when no record it dropped
   * started at or after `from`; else the files are read, all kept generations line by line
   * (a range of weeks can be far more than the ring holds), plus the records not yet written.
   */
  async select(from: Date, keep: (record: HistoryRecord) => boolean): Promise<HistorySelection> {
    const kept = this.recent();
    const oldest = kept[0]?.time ?? null;
    // The ring holds every record of the range when none it no longer holds (trimmed, or past maxRecords) started in it.
    const beyond = this.ring.slice(0, Math.max(0, this.ring.length - this.options.maxRecords));
    const droppedLatestStart = beyond.reduce((latest, record) => Math.max(latest, Date.parse(record.time)), this.droppedLatestStart);
    if (this.options.dir === undefined || droppedLatestStart < from.getTime()) {
      return { records: kept.filter(keep), oldest };
    }
    // Taken now, and read after the writes queued before: together exactly the records held now.
    // Writes queued meanwhile wait for the read, so no rotation renames a file while it is read.
    const unwritten = this.pending.slice();
    const reading = this.writing.then(() => this.selectFromFiles(unwritten, keep));
    this.writing = reading.then(
      () => undefined,
      () => undefined,
    );
    return reading;
  }

  private async selectFromFiles(unwritten: readonly HistoryRecord[], keep: (record: HistoryRecord) => boolean): Promise<HistorySelection> {
    const records: HistoryRecord[] = [];
    let oldest: string | null = null;
    const take = (record: HistoryRecord): void => {
      oldest ??= record.time;
      if (keep(record)) records.push(record);
    };
    for (const generation of await this.generations()) {
      const file = await open(this.fileAt(generation)).catch((error: NodeJS.ErrnoException) => {
        if (error.code === 'ENOENT') return undefined;
        throw error;
      });
      if (file === undefined) continue;
      // Unreadable lines were reported when the bridge started (a torn write is only made by a crash).
      for await (const line of linesOf(file)) {
        const record = line.text === null || line.text.trim() === '' ? undefined : parseLine(line.text);
        if (record !== undefined) take(record);
      }
    }
    unwritten.forEach(take);
    return { records, oldest };
  }

  get size(): number {
    return Math.min(this.ring.length, this.options.maxRecords);
  }

  onRecord(listener: (record: HistoryRecord) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Writes what is pending, rotating first when the file would grow past its limit. */
  flush(): Promise<void> {
    if (this.pending.length === 0 || this.options.dir === undefined) return this.writing;
    let text = '';
    for (const record of this.pending) text += `${JSON.stringify(record)}\n`;
    this.pending = [];
    this.writing = this.writing.then(async () => {
      try {
        const size = await stat(this.fileAt(0)).then(
          (s) => s.size,
          () => 0,
        );
        if (size > 0 && size + Buffer.byteLength(text) > this.options.maxFileBytes) {
          await this.rotate();
          this.tornTail = false;
        }
        await appendFile(this.fileAt(0), this.tornTail ? `\n${text}` : text, { mode: FILE_MODE });
        this.tornTail = false;
      } catch (error) {
        // A failed write must not stop the bridge, nor every write after it. It may have written part
        // of a line (disk full): the next write starts a new one, or its first record is lost with it.
        this.tornTail = true;
        this.options.onWriteError?.(error as Error);
      }
    });
    return this.writing;
  }

  private async rotate(): Promise<void> {
    for (const generation of await this.generations()) {
      await rename(this.fileAt(generation), this.fileAt(generation + 1)).catch(() => undefined);
    }
    await this.removeRotatedPast(this.options.dir as string);
  }

  /** Removes every rotated file past the configured number, whichever number it has. */
  private async removeRotatedPast(dir: string): Promise<void> {
    for (const name of await readdir(dir)) {
      const generation = Number(ROTATED_FILE.exec(name)?.[1] ?? 0);
      if (generation > this.options.keepFiles) await rm(path.join(dir, name), { force: true });
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
  }
}
