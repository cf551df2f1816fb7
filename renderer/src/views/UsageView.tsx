import { useEffect, useRef, useState, type JSX } from 'react';
import { dollarsOf, type HistoryRecord, type UsageFigures, type UsageReport, type WhoAmI } from '../../../src/contract';
import { downloadUsageCsv, getUsage } from '../api';
import { USAGE_REFRESH_MS } from '../lib/history';

const WEEKDAYS = ['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'];

function isoDay(date: Date): string {
  const local = new Date(date.getTime() - date.getTimezoneOffset() * 60_000);
  return local.toISOString().slice(0, 10);
}

const dollars = (amount: number): string => dollarsOf(amount, 4);

function kwh(joules: number): string {
  return `${(joules / 3_600_000).toFixed(3)} kWh`;
}

function hours(seconds: number): string {
  return seconds >= 3600 ? `${(seconds / 3600).toFixed(1)} h` : `${Math.round(seconds / 60)} min`;
}

function FiguresRow({ label, sub, figures }: { label: string; sub?: string; figures: UsageFigures }): JSX.Element {
  return (
    <tr>
      <td>
        {label}
        {sub !== undefined && <span className="muted small"> · {sub}</span>}
      </td>
      <td className="num">{figures.requests}</td>
      <td className="num">{figures.tokensIn + figures.tokensOut}</td>
      <td className="num">{kwh(figures.energyJoules)}</td>
      <td className="num">{dollars(figures.savedDollars)}</td>
      <td className="num">{hours(figures.timeSavedSeconds)}</td>
    </tr>
  );
}

function FiguresTable({
  title,
  testId,
  rows,
}: {
  title: string;
  testId: string;
  rows: Array<{ key: string; label: string; sub?: string; figures: UsageFigures }>;
}): JSX.Element {
  return (
    <section className="card">
      <h2>{title}</h2>
      <table className="table" data-testid={testId}>
        <thead>
          <tr>
            <th>{title === 'Teams' ? 'Team' : 'Person'}</th>
            <th className="num">Requests</th>
            <th className="num">Tokens</th>
            <th className="num">Energy</th>
            <th className="num">Saved</th>
            <th className="num">Time saved*</th>
          </tr>
        </thead>
        <tbody>
          {rows.length === 0 ? (
            <tr>
              <td colSpan={6} className="muted">
                No requests in this range.
              </td>
            </tr>
          ) : (
            rows.map((row) => <FiguresRow key={row.key} label={row.label} sub={row.sub} figures={row.figures} />)
          )}
        </tbody>
      </table>
    </section>
  );
}

function Heatmap({ heatmap }: { heatmap: number[][] }): JSX.Element {
  const max = Math.max(1, ...heatmap.flat());
  return (
    <section className="card">
      <h2>When the team works with it</h2>
      <div className="heatmap" role="grid" aria-label="Requests by weekday and hour" data-testid="heatmap">
        <div className="heatmap-corner" />
        {Array.from({ length: 24 }, (_, hour) => (
          <div key={hour} className="heatmap-hour muted small">
            {hour % 3 === 0 ? hour : ''}
          </div>
        ))}
        {heatmap.map((row, day) => [
          <div key={`d${day}`} className="heatmap-day muted small">
            {WEEKDAYS[day]}
          </div>,
          ...row.map((count, hour) => (
            <div
              key={`${day}-${hour}`}
              role="gridcell"
              className="heatmap-cell"
              data-count={count}
              title={`${WEEKDAYS[day]} ${String(hour).padStart(2, '0')}:00 – ${count} request${count === 1 ? '' : 's'}`}
              aria-label={`${WEEKDAYS[day]} ${hour}:00, ${count} requests`}
              style={{ opacity: count === 0 ? 0.08 : 0.25 + (0.75 * count) / max }}
            />
          )),
        ])}
      </div>
    </section>
  );
}

/**
 * Usage per team and person for a date range: what the local GPUs served, what it saved, when.
 * `history` is the page's history: a new list whenever a request is recorded, and the figures are read again (at most every USAGE_REFRESH_MS).
 */
export function UsageView({ whoami, history }: { whoami: WhoAmI | null; history: readonly HistoryRecord[] }): JSX.Element {
  const [from, setFrom] = useState(() => isoDay(new Date(Date.now() - 6 * 86_400_000)));
  const [to, setTo] = useState(() => isoDay(new Date()));
  const [report, setReport] = useState<UsageReport | null>(null);
  const [problem, setProblem] = useState<string | null>(null);
  // New records mark the figures stale; stale figures are read again at most every USAGE_REFRESH_MS.
  const [stale, setStale] = useState(false);
  const [refreshes, setRefreshes] = useState(0);
  const mountedWith = useRef(history);
  const readAt = useRef(0);
  useEffect(() => {
    if (history !== mountedWith.current) setStale(true);
  }, [history]);
  useEffect(() => {
    if (!stale) return undefined;
    const timer = setTimeout(
      () => {
        setStale(false);
        setRefreshes((n) => n + 1);
      },
      Math.max(0, readAt.current + USAGE_REFRESH_MS - Date.now()),
    );
    return () => clearTimeout(timer);
  }, [stale]);

  useEffect(() => {
    let cancelled = false;
    readAt.current = Date.now();
    getUsage(from, to).then(
      (r) => {
        if (cancelled) return;
        setReport(r);
        setProblem(null);
      },
      (error: Error) => !cancelled && setProblem(error.message),
    );
    return () => {
      cancelled = true;
    };
  }, [from, to, refreshes]);

  const totals = report?.totals;
  return (
    <div className="view">
      <div className="toolbar">
        <h1>Usage{report?.scope === 'own' && whoami !== null ? ` of ${whoami.name}` : ''}</h1>
        <label>
          From <input type="date" aria-label="From" value={from} max={to} onChange={(e) => e.target.value !== '' && setFrom(e.target.value)} />
        </label>
        <label>
          To <input type="date" aria-label="To" value={to} min={from} onChange={(e) => e.target.value !== '' && setTo(e.target.value)} />
        </label>
        <button onClick={() => void downloadUsageCsv(from, to).catch((error: Error) => setProblem(error.message))}>Export CSV</button>
      </div>
      {problem !== null && (
        <p className="problem" role="alert">
          {problem}
        </p>
      )}
      {report === null || totals === undefined ? (
        <p className="empty">Loading usage…</p>
      ) : (
        <>
          {report.coversSince !== null && (
            <p className="muted small" data-testid="usage-coverage">
              Covers requests since {new Date(report.coversSince).toLocaleString()}, the oldest the history still holds (history.max_file_mb,
              history.keep_files).
            </p>
          )}
          <div className="tiles" data-testid="usage-totals">
            <div className="tile">
              <div className="label">Requests</div>
              <div className="value" data-testid="usage-requests">
                {totals.requests}
              </div>
              <div className="muted small">{totals.errors} failed</div>
            </div>
            <div className="tile">
              <div className="label">Tokens</div>
              <div className="value" data-testid="usage-tokens">
                {totals.tokensIn + totals.tokensOut}
              </div>
              <div className="muted small">
                {totals.tokensIn} in · {totals.tokensOut} out
              </div>
            </div>
            <div className="tile">
              <div className="label">Saved vs cloud</div>
              <div className="value" data-testid="usage-saved">
                {dollars(totals.savedDollars)}
              </div>
              <div className="muted small">
                {dollars(totals.cloudCostDollars)} cloud-equivalent − {dollars(totals.energyCostDollars)} energy
              </div>
            </div>
            <div className="tile">
              <div className="label">Energy</div>
              <div className="value" data-testid="usage-energy">
                {kwh(totals.energyJoules)}
              </div>
              <div className="muted small">{hours(totals.gpuSeconds)} of GPU time</div>
            </div>
            <div className="tile">
              <div className="label">Time saved (estimate*)</div>
              <div className="value">{hours(totals.timeSavedSeconds)}</div>
            </div>
            <div className="tile">
              <div className="label">Return on hardware</div>
              <div className="value" data-testid="usage-roi">
                {report.roi === null ? '–' : `${Math.round(report.roi * 100)} %`}
              </div>
              <div className="muted small">
                {report.roi === null ? 'set accounting.hardware_cost_per_month' : `against ${dollars(report.hardwareCostDollars)} of hardware`}
              </div>
            </div>
          </div>
          {report.scope === 'everyone' && (
            <FiguresTable title="Teams" testId="usage-teams" rows={report.byTeam.map((t) => ({ key: t.team, label: t.team, figures: t }))} />
          )}
          <FiguresTable
            title="People"
            testId="usage-people"
            rows={report.byPerson.map((p) => ({ key: `${p.name}/${p.team}`, label: p.name, sub: p.team, figures: p }))}
          />
          <section className="card">
            <h2>Top models</h2>
            <table className="table" data-testid="usage-models">
              <tbody>
                {report.topModels.map((m) => (
                  <tr key={m.model}>
                    <td>{m.model}</td>
                    <td className="num">{m.requests} requests</td>
                    <td className="num">{m.tokensOut} tokens out</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </section>
          <Heatmap heatmap={report.heatmap} />
          <p className="muted small">
            Cloud-equivalent cost uses the price table (defaults dated {report.prices.date}; accounting.prices overrides them), energy the GPUs’ measured power
            at ${report.prices.kwhPrice}/kWh. *Time saved is an estimate: {report.prices.secondsSavedPerOutputToken} s per token generated locally
            (accounting.seconds_saved_per_output_token), not a measurement.
          </p>
        </>
      )}
    </div>
  );
}
