import type { Config } from '../config/schema.js';
import { canonicalModelName, type HistoryRecord, type UsageFigures, type UsageReport } from '../contract/index.js';
import { PRICES_DATE } from './accounting.js';
import type { HistorySelection, HistoryStore } from './store.js';

const DAY_MS = 86_400_000;
const MONTH_DAYS = 365.25 / 12;

function emptyFigures(): UsageFigures {
  return {
    requests: 0,
    errors: 0,
    tokensIn: 0,
    tokensOut: 0,
    gpuSeconds: 0,
    energyJoules: 0,
    cloudCostDollars: 0,
    energyCostDollars: 0,
    savedDollars: 0,
    timeSavedSeconds: 0,
  };
}

function add(figures: UsageFigures, record: HistoryRecord, secondsPerToken: number): void {
  figures.requests += 1;
  if (record.outcome === 'error') figures.errors += 1;
  figures.tokensIn += record.tokensIn ?? 0;
  figures.tokensOut += record.tokensOut ?? 0;
  figures.gpuSeconds += (record.gpuMs ?? 0) / 1000;
  figures.energyJoules += record.energyJoules ?? 0;
  figures.cloudCostDollars += record.cloudCostDollars ?? 0;
  figures.energyCostDollars += record.energyCostDollars ?? 0;
  figures.savedDollars += record.savedDollars ?? 0;
  // Only answers the developer actually got from local models count as time saved.
  if (record.outcome === 'ok' && record.fallback === null) figures.timeSavedSeconds += (record.tokensOut ?? 0) * secondsPerToken;
}

export interface UsageQuery {
  from: Date;
  to: Date;
  /** Only this person's requests (a user reading their own usage). */
  user?: string;
  /** Minutes to add to UTC for the heatmap's hours and weekdays (the dashboard sends its own). */
  utcOffsetMinutes: number;
}

/** Whether the record belongs to the query: in its range, and the asking user's own when it names one. */
function matchesQuery(record: HistoryRecord, query: UsageQuery): boolean {
  const time = Date.parse(record.time);
  return time >= query.from.getTime() && time < query.to.getTime() && (query.user === undefined || record.user === query.user);
}

function inRange(records: readonly HistoryRecord[], query: UsageQuery): HistoryRecord[] {
  return records.filter((record) => matchesQuery(record, query));
}

/** The query's records from the history, from its files when the range reaches back further than memory. */
export function usageRecords(history: HistoryStore, query: UsageQuery): Promise<HistorySelection> {
  return history.select(query.from, (record) => matchesQuery(record, query));
}

/**
 * Adds up the history for the Usage view: totals, per team, per person, top models, the week heatmap.
 * `oldestHeld` is the time of the oldest record the history still holds: a range starting before it is covered from there on only.
 */
export function usageReport(config: Config, records: readonly HistoryRecord[], query: UsageQuery, oldestHeld: string | null): UsageReport {
  const secondsPerToken = config.accounting.seconds_saved_per_output_token;
  const totals = emptyFigures();
  const teams = new Map<string, UsageFigures & { team: string }>();
  const people = new Map<string, UsageFigures & { name: string; team: string }>();
  const models = new Map<string, { model: string; requests: number; tokensOut: number }>();
  const heatmap = Array.from({ length: 7 }, () => new Array<number>(24).fill(0));
  for (const record of inRange(records, query)) {
    add(totals, record, secondsPerToken);
    const team = record.team ?? '(no team)';
    const name = record.user ?? '(anonymous)';
    let teamFigures = teams.get(team);
    if (teamFigures === undefined) teams.set(team, (teamFigures = { team, ...emptyFigures() }));
    add(teamFigures, record, secondsPerToken);
    const personKey = `${name}\u0000${team}`;
    let person = people.get(personKey);
    if (person === undefined) people.set(personKey, (person = { name, team, ...emptyFigures() }));
    add(person, record, secondsPerToken);
    // One model under any name Ollama takes for it (letter case, :latest), shown as first seen.
    const modelKey = canonicalModelName(record.model);
    let model = models.get(modelKey);
    if (model === undefined) models.set(modelKey, (model = { model: record.model, requests: 0, tokensOut: 0 }));
    model.requests += 1;
    model.tokensOut += record.tokensOut ?? 0;
    const local = new Date(Date.parse(record.time) + query.utcOffsetMinutes * 60_000);
    const weekday = (local.getUTCDay() + 6) % 7;
    const row = heatmap[weekday];
    if (row !== undefined) row[local.getUTCHours()] = (row[local.getUTCHours()] ?? 0) + 1;
  }
  const days = Math.max(0, query.to.getTime() - query.from.getTime()) / DAY_MS;
  const hardwareCostDollars = (config.accounting.hardware_cost_per_month * days) / MONTH_DAYS;
  const bySavings = <T extends UsageFigures>(a: T, b: T): number => b.savedDollars - a.savedDollars || b.requests - a.requests;
  return {
    from: query.from.toISOString(),
    to: query.to.toISOString(),
    scope: query.user === undefined ? 'everyone' : 'own',
    coversSince: oldestHeld !== null && Date.parse(oldestHeld) > query.from.getTime() ? oldestHeld : null,
    totals,
    hardwareCostDollars,
    roi: hardwareCostDollars > 0 ? (totals.savedDollars - hardwareCostDollars) / hardwareCostDollars : null,
    byTeam: [...teams.values()].sort(bySavings),
    byPerson: [...people.values()].sort(bySavings),
    topModels: [...models.values()].sort((a, b) => b.requests - a.requests).slice(0, 10),
    heatmap,
    prices: { date: PRICES_DATE, secondsSavedPerOutputToken: secondsPerToken, kwhPrice: config.accounting.kwh_price },
  };
}

const CSV_COLUMNS = [
  'time',
  'user',
  'team',
  'surface',
  'path',
  'model',
  'tier',
  'backend',
  'fallback',
  'status',
  'outcome',
  'tokensIn',
  'tokensOut',
  'gpuMs',
  'energyJoules',
  'cloudCostDollars',
  'energyCostDollars',
  'savedDollars',
  'localOnly',
] as const;

/** One cell; text a spreadsheet would run as a formula (=, +, -, @) is prefixed with ' so it stays text. */
function cell(value: unknown): string {
  if (value === null || value === undefined) return '';
  let text = typeof value === 'number' ? String(Math.round(value * 1e6) / 1e6) : String(value);
  if (typeof value === 'string' && /^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/** The requests of the range, one CSV row each, for a spreadsheet. */
export function usageCsv(records: readonly HistoryRecord[], query: UsageQuery): string {
  const rows = inRange(records, query).map((record) => CSV_COLUMNS.map((column) => cell(record[column])).join(','));
  return `${[CSV_COLUMNS.join(','), ...rows].join('\r\n')}\r\n`;
}
