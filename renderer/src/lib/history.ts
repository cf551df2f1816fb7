import type { HistoryRecord } from '../../../src/contract/index.js';

/**
 * The Usage view reads its report again when records come in: at once after a quiet while, else
 * once this long after the last read (a busy bridge records many a second, and a report may read
 * the history files).
 */
export const USAGE_REFRESH_MS = 2000;

/** What the history table is narrowed to; '' means any. */
export interface HistoryFilters {
  tier: string;
  model: string;
  backend: string;
  outcome: string;
  client: string;
  /** Free text, matched case-insensitively against id, reason, models, client, path, error and backend. */
  text: string;
}

export const NO_FILTERS: HistoryFilters = { tier: '', model: '', backend: '', outcome: '', client: '', text: '' };

/** The values a filter can take: each non-empty value once, sorted. */
export function distinct(records: readonly HistoryRecord[], pick: (r: HistoryRecord) => string | null): string[] {
  return [...new Set(records.map(pick).filter((v): v is string => v !== null && v !== ''))].sort();
}

export function matches(record: HistoryRecord, f: HistoryFilters): boolean {
  if (f.tier !== '' && (record.tier ?? 'none') !== f.tier) return false;
  if (f.model !== '' && record.model !== f.model) return false;
  if (f.backend !== '' && record.backend !== f.backend) return false;
  if (f.outcome !== '' && record.outcome !== f.outcome) return false;
  if (f.client !== '' && record.client !== f.client) return false;
  if (f.text !== '') {
    const needle = f.text.toLowerCase();
    const haystack = [record.id, record.reason, record.model, record.requestedModel, record.client, record.path, record.error, record.backend]
      .join(' ')
      .toLowerCase();
    if (!haystack.includes(needle)) return false;
  }
  return true;
}

/** The value at quantile `q` of an ascending list, or null for an empty one. */
export function quantile(sorted: readonly number[], q: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? null;
}

export interface HistorySummary {
  /** Over the last five minutes before `now`. */
  requestsPerMinute: number;
  /** Over the newest 1000 records. */
  latencyP50Ms: number | null;
  latencyP95Ms: number | null;
  latencyCount: number;
  /** Share of records per tier and per GPU/backend, largest first, as ratios of all records. */
  tiers: Array<[string, number]>;
  backends: Array<[string, number]>;
}

function shares(records: readonly HistoryRecord[], pick: (r: HistoryRecord) => string): Array<[string, number]> {
  const counts = new Map<string, number>();
  for (const r of records) counts.set(pick(r), (counts.get(pick(r)) ?? 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1]).map(([k, n]) => [k, n / Math.max(1, records.length)]);
}

/** The figures above the history table. */
export function summarize(records: readonly HistoryRecord[], now: number): HistorySummary {
  const recent = records.filter((r) => now - Date.parse(r.time) <= 5 * 60_000);
  // Requests that ran to their end: ghost text the editor left at the next keystroke lasted as long
  // as the typing, and a request the scheduler dropped was answered empty at once.
  const latencies = records
    .filter((r) => r.outcome === 'ok' || r.outcome === 'error')
    .slice(-1000)
    .map((r) => r.totalMs)
    .sort((a, b) => a - b);
  return {
    requestsPerMinute: recent.length / 5,
    latencyP50Ms: quantile(latencies, 0.5),
    latencyP95Ms: quantile(latencies, 0.95),
    latencyCount: latencies.length,
    tiers: shares(records, (r) => r.tier ?? 'none'),
    backends: shares(records, (r) => (r.gpu === null ? (r.backend ?? 'none') : `GPU ${r.gpu} (${r.backend})`)),
  };
}

/**
 * What tells one record from another: its id and its time. An id is the client's or balancer's
 * X-Request-Id when it sends one, and a client may send one again (a retry): another request.
 */
export function recordKey(record: HistoryRecord): string {
  return `${record.id} ${record.time}`;
}

/** Appends new records (by recordKey), oldest first, keeping the newest `maxRows`. */
export function mergeRecords(current: HistoryRecord[], incoming: readonly HistoryRecord[], maxRows: number): HistoryRecord[] {
  const seen = new Set(current.map(recordKey));
  const added = incoming.filter((r) => !seen.has(recordKey(r)));
  if (added.length === 0) return current;
  const merged = [...current, ...added].sort((a, b) => a.time.localeCompare(b.time));
  return merged.length > maxRows ? merged.slice(-maxRows) : merged;
}
