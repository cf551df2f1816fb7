import { useLayoutEffect, useMemo, useRef, useState, type JSX } from 'react';
import type { HistoryRecord } from '../../../src/control/api-types';
import { ms, quantile, time } from '../format';

const ROW_HEIGHT = 34;
const OVERSCAN = 12;

interface Filters {
  tier: string;
  model: string;
  backend: string;
  outcome: string;
  client: string;
  text: string;
}

const ALL = '';
const NO_FILTERS: Filters = { tier: ALL, model: ALL, backend: ALL, outcome: ALL, client: ALL, text: '' };

function distinct(records: readonly HistoryRecord[], pick: (r: HistoryRecord) => string | null): string[] {
  return [...new Set(records.map(pick).filter((v): v is string => v !== null && v !== ''))].sort();
}

function matches(record: HistoryRecord, f: Filters): boolean {
  if (f.tier !== ALL && (record.tier ?? 'none') !== f.tier) return false;
  if (f.model !== ALL && record.model !== f.model) return false;
  if (f.backend !== ALL && record.backend !== f.backend) return false;
  if (f.outcome !== ALL && record.outcome !== f.outcome) return false;
  if (f.client !== ALL && record.client !== f.client) return false;
  if (f.text !== '') {
    const needle = f.text.toLowerCase();
    const haystack = [record.id, record.reason, record.model, record.requestedModel, record.client, record.path, record.error, record.backend].join(' ').toLowerCase();
    if (!haystack.includes(needle)) return false;
  }
  return true;
}

function Summary({ records }: { records: readonly HistoryRecord[] }): JSX.Element {
  const now = Date.now();
  const recent = records.filter((r) => now - Date.parse(r.time) <= 5 * 60_000);
  const latencies = records.slice(-1000).map((r) => r.totalMs).sort((a, b) => a - b);
  const share = (pick: (r: HistoryRecord) => string): Array<[string, number]> => {
    const counts = new Map<string, number>();
    for (const r of records) counts.set(pick(r), (counts.get(pick(r)) ?? 0) + 1);
    return [...counts].sort((a, b) => b[1] - a[1]).map(([k, n]) => [k, n / Math.max(1, records.length)]);
  };
  const bars = (entries: Array<[string, number]>): JSX.Element => (
    <ul className="shares">
      {entries.slice(0, 4).map(([k, v]) => (
        <li key={k}>
          <span>{k}</span>
          <span className="share-bar">
            <span style={{ width: `${Math.round(v * 100)}%` }} />
          </span>
          <span className="num">{Math.round(v * 100)}%</span>
        </li>
      ))}
    </ul>
  );
  return (
    <div className="tiles">
      <div className="tile">
        <div className="label">Requests / min</div>
        <div className="value" data-testid="rpm">
          {(recent.length / 5).toFixed(1)}
        </div>
        <div className="muted small">last 5 minutes</div>
      </div>
      <div className="tile">
        <div className="label">Latency p50 / p95</div>
        <div className="value">
          {ms(quantile(latencies, 0.5))} / {ms(quantile(latencies, 0.95))}
        </div>
        <div className="muted small">last {latencies.length} requests</div>
      </div>
      <div className="tile">
        <div className="label">Per tier</div>
        {bars(share((r) => r.tier ?? 'none'))}
      </div>
      <div className="tile">
        <div className="label">Per GPU / backend</div>
        {bars(share((r) => (r.gpu === null ? (r.backend ?? 'none') : `GPU ${r.gpu} (${r.backend})`)))}
      </div>
    </div>
  );
}

function Details({ record, onClose }: { record: HistoryRecord; onClose: () => void }): JSX.Element {
  const rows: Array<[string, string]> = [
    ['Time', new Date(record.time).toLocaleString()],
    ['Client', record.client ?? '–'],
    ['User-Agent', record.userAgent ?? '–'],
    ['Intent', [record.interaction, record.intent].filter(Boolean).join(', ') || '–'],
    ['Client request id', record.clientRequestId ?? '–'],
    ['Surface', `${record.surface} ${record.path}`],
    ['Requested model', record.requestedModel],
    ['Tier', record.tier ?? 'none (a concrete model was asked for)'],
    ['Why', record.reason],
    ['Backend', record.backend === null ? '–' : `${record.backend}${record.gpu === null ? '' : ` (GPU ${record.gpu})`}`],
    ['Model used', record.model],
    ['Retries', String(record.retries)],
    ['Fallback', record.fallback ?? 'no'],
    ['Status', `${record.status} ${record.outcome}${record.error ? `: ${record.error}` : ''}`],
    ['Time to first token', ms(record.ttftMs)],
    ['Total time', ms(record.totalMs)],
    ['Tokens in / out', `${record.tokensIn ?? '–'} / ${record.tokensOut ?? '–'}`],
    ['Tokens per second', record.tokensPerSecond === null ? '–' : String(record.tokensPerSecond)],
    ['Request id', record.id],
  ];
  return (
    <aside className="drawer" role="dialog" aria-label="Request details" data-testid="details">
      <header>
        <h2>Request details</h2>
        <button onClick={onClose} aria-label="Close details" autoFocus>
          Close
        </button>
      </header>
      <dl>
        {rows.map(([k, v]) => (
          <div key={k}>
            <dt>{k}</dt>
            <dd>{v}</dd>
          </div>
        ))}
      </dl>
    </aside>
  );
}

export function HistoryView({ records }: { records: readonly HistoryRecord[] }): JSX.Element {
  const [filters, setFilters] = useState<Filters>(NO_FILTERS);
  const [selected, setSelected] = useState<HistoryRecord | null>(null);
  const [scrollTop, setScrollTop] = useState(0);
  const [viewport, setViewport] = useState(600);
  const scroller = useRef<HTMLDivElement>(null);

  // Newest first.
  const rows = useMemo(() => records.filter((r) => matches(r, filters)).reverse(), [records, filters]);
  const options = useMemo(
    () => ({
      model: distinct(records, (r) => r.model),
      backend: distinct(records, (r) => r.backend),
      client: distinct(records, (r) => r.client),
    }),
    [records],
  );

  // New rows enter at the top: keep what the reader is looking at where it is.
  const newestId = rows[0]?.id;
  const previous = useRef<{ newest: string | undefined; count: number }>({ newest: newestId, count: rows.length });
  useLayoutEffect(() => {
    const element = scroller.current;
    const before = previous.current;
    previous.current = { newest: newestId, count: rows.length };
    if (element === null || before.newest === undefined || before.newest === newestId) return;
    const added = rows.findIndex((r) => r.id === before.newest);
    if (added > 0 && element.scrollTop > 0) element.scrollTop += added * ROW_HEIGHT;
  }, [newestId, rows]);

  useLayoutEffect(() => {
    const element = scroller.current;
    if (element === null) return undefined;
    const observer = new ResizeObserver(() => setViewport(element.clientHeight));
    observer.observe(element);
    return () => observer.disconnect();
  }, []);

  const first = Math.max(0, Math.floor(scrollTop / ROW_HEIGHT) - OVERSCAN);
  const last = Math.min(rows.length, Math.ceil((scrollTop + viewport) / ROW_HEIGHT) + OVERSCAN);
  const set = (key: keyof Filters) => (event: { target: { value: string } }) => setFilters((f) => ({ ...f, [key]: event.target.value }));
  const select = (key: keyof Filters, label: string, plural: string, values: string[]): JSX.Element => (
    <label>
      <span className="sr-only">{label}</span>
      <select aria-label={label} value={filters[key]} onChange={set(key)} data-testid={`filter-${key}`}>
        <option value={ALL}>All {plural}</option>
        {values.map((v) => (
          <option key={v} value={v}>
            {v.length > 40 ? `${v.slice(0, 40)}…` : v}
          </option>
        ))}
      </select>
    </label>
  );

  return (
    <div className="view history">
      <Summary records={records} />
      <div className="filters">
        {select('tier', 'Tier', 'tiers', ['simple', 'moderate', 'complex', 'none'])}
        {select('model', 'Model', 'models', options.model)}
        {select('backend', 'Backend', 'backends', options.backend)}
        {select('outcome', 'Status', 'outcomes', ['ok', 'error', 'cancelled'])}
        {select('client', 'Client', 'clients', options.client)}
        <input type="search" placeholder="Search reason, model, client, id…" aria-label="Search history" value={filters.text} onChange={set('text')} data-testid="filter-text" />
        <span className="muted small" data-testid="row-count">
          {rows.length} of {records.length}
        </span>
      </div>
      <div className="table-head" role="row">
        <span>Time</span>
        <span>Tier</span>
        <span>Model</span>
        <span>Backend</span>
        <span>Status</span>
        <span className="num">First token</span>
        <span className="num">Total</span>
        <span className="num">Tok/s</span>
        <span>Client</span>
      </div>
      <div className="rows" ref={scroller} onScroll={(event) => setScrollTop(event.currentTarget.scrollTop)} data-testid="history-rows" role="table" aria-label="Routing history" tabIndex={0}>
        <div style={{ height: rows.length * ROW_HEIGHT, position: 'relative' }}>
          {rows.slice(first, last).map((r, i) => (
            <button
              key={r.id}
              className={`row ${r.outcome}`}
              style={{ top: (first + i) * ROW_HEIGHT, height: ROW_HEIGHT }}
              onClick={() => setSelected(r)}
              data-testid="history-row"
              data-tier={r.tier ?? 'none'}
              data-backend={r.backend ?? ''}
            >
              <span>{time(r.time)}</span>
              <span>
                <span className={`badge tier-${r.tier ?? 'none'}`}>{r.tier ?? 'none'}</span>
              </span>
              <span className="ellipsis">{r.model}</span>
              <span>{r.fallback !== null ? `${r.backend} (cloud)` : (r.backend ?? '–')}</span>
              <span>
                <span className={`badge ${r.outcome}`}>{r.status}</span>
              </span>
              <span className="num">{ms(r.ttftMs)}</span>
              <span className="num">{ms(r.totalMs)}</span>
              <span className="num">{r.tokensPerSecond ?? '–'}</span>
              <span className="ellipsis muted">{r.client ?? '–'}</span>
            </button>
          ))}
        </div>
        {rows.length === 0 && <p className="empty">No requests {records.length === 0 ? 'yet' : 'match these filters'}.</p>}
      </div>
      {selected !== null && <Details record={selected} onClose={() => setSelected(null)} />}
    </div>
  );
}
