import { useLayoutEffect, useMemo, useRef, useState, type JSX } from 'react';
import { clockTimeOf, LANE_LABELS, type HistoryRecord } from '../../../src/contract';
import { ms } from '../format';
import { distinct, matches, NO_FILTERS, recordKey, summarize, type HistoryFilters } from '../lib/history';

const ROW_HEIGHT = 34;
const OVERSCAN = 12;

function Summary({ records }: { records: readonly HistoryRecord[] }): JSX.Element {
  const summary = summarize(records, Date.now());
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
          {summary.requestsPerMinute.toFixed(1)}
        </div>
        <div className="muted small">last 5 minutes</div>
      </div>
      <div className="tile">
        <div className="label">Latency p50 / p95</div>
        <div className="value">
          {ms(summary.latencyP50Ms)} / {ms(summary.latencyP95Ms)}
        </div>
        <div className="muted small">last {summary.latencyCount} requests that ran to their end</div>
      </div>
      <div className="tile">
        <div className="label">Per tier</div>
        {bars(summary.tiers)}
      </div>
      <div className="tile">
        <div className="label">Per GPU / backend</div>
        {bars(summary.backends)}
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
    ['Lane', record.lane == null ? '–' : LANE_LABELS[record.lane]],
    ['Queue wait', ms(record.queueMs)],
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
  const [filters, setFilters] = useState<HistoryFilters>(NO_FILTERS);
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
  const newestId = rows[0] === undefined ? undefined : recordKey(rows[0]);
  const previous = useRef<{ newest: string | undefined; count: number }>({ newest: newestId, count: rows.length });
  useLayoutEffect(() => {
    const element = scroller.current;
    const before = previous.current;
    previous.current = { newest: newestId, count: rows.length };
    if (element === null || before.newest === undefined || before.newest === newestId) return;
    const added = rows.findIndex((r) => recordKey(r) === before.newest);
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
  const set = (key: keyof HistoryFilters) => (event: { target: { value: string } }) => setFilters((f) => ({ ...f, [key]: event.target.value }));
  const select = (key: keyof HistoryFilters, label: string, plural: string, values: string[]): JSX.Element => (
    <label>
      <span className="sr-only">{label}</span>
      <select aria-label={label} value={filters[key]} onChange={set(key)} data-testid={`filter-${key}`}>
        <option value="">All {plural}</option>
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
        {select('outcome', 'Status', 'outcomes', ['ok', 'error', 'cancelled', 'dropped'])}
        {select('client', 'Client', 'clients', options.client)}
        <input
          type="search"
          placeholder="Search reason, model, client, id…"
          aria-label="Search history"
          value={filters.text}
          onChange={set('text')}
          data-testid="filter-text"
        />
        <span className="muted small" data-testid="row-count">
          {rows.length} of {records.length}
        </span>
      </div>
      <div className="table-head" role="row">
        <span>Time</span>
        <span>Tier</span>
        <span>Lane</span>
        <span>Model</span>
        <span>Backend</span>
        <span>Status</span>
        <span className="num">Wait</span>
        <span className="num">First token</span>
        <span className="num">Total</span>
        <span className="num">Tok/s</span>
        <span>Client</span>
      </div>
      <div
        className="rows"
        ref={scroller}
        onScroll={(event) => setScrollTop(event.currentTarget.scrollTop)}
        data-testid="history-rows"
        role="table"
        aria-label="Routing history"
        tabIndex={0}
      >
        <div style={{ height: rows.length * ROW_HEIGHT, position: 'relative' }}>
          {rows.slice(first, last).map((r, i) => (
            <button
              key={recordKey(r)}
              className={`row ${r.outcome}`}
              style={{ top: (first + i) * ROW_HEIGHT, height: ROW_HEIGHT }}
              onClick={() => setSelected(r)}
              data-testid="history-row"
              data-tier={r.tier ?? 'none'}
              data-backend={r.backend ?? ''}
              data-lane={r.lane ?? ''}
            >
              <span>{clockTimeOf(r.time)}</span>
              <span>
                <span className={`badge tier-${r.tier ?? 'none'}`}>{r.tier ?? 'none'}</span>
              </span>
              <span className="muted">{r.lane == null ? '–' : LANE_LABELS[r.lane]}</span>
              <span className="ellipsis">{r.model}</span>
              <span>{r.fallback !== null ? `${r.backend} (cloud)` : (r.backend ?? '–')}</span>
              <span>
                <span className={`badge ${r.outcome}`}>{r.status}</span>
              </span>
              <span className="num" data-testid="wait">
                {ms(r.queueMs)}
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
