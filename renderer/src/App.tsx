import { useCallback, useEffect, useMemo, useState, type JSX } from 'react';
import { mayRunActions } from './lib/access';
import { mergeRecords } from './lib/history';
import { newerState } from './lib/state';
import { healthyBackendCount, type BridgeState, type HistoryRecord, type WhoAmI } from '../../src/contract';
import { getHistory, getState, getWhoAmI, ReadFailure, setControlToken, subscribe } from './api';
import { BackendsView } from './views/BackendsView';
import { ConnectView } from './views/ConnectView';
import { GpuView } from './views/GpuView';
import { HistoryView } from './views/HistoryView';
import { ModelsView } from './views/ModelsView';
import { UsageView } from './views/UsageView';

const VIEWS = ['GPUs', 'Models', 'History', 'Usage', 'Backends', 'Connect'] as const;
type View = (typeof VIEWS)[number];

/** History kept in the page: enough for an afternoon, bounded so the page stays fast. */
const MAX_ROWS = 20_000;

function viewFromHash(): View {
  // Views have plain names: nothing to decode, and a fragment that is no valid percent-encoding cannot throw.
  const name = window.location.hash.replace(/^#\/?/, '').split('&')[0] ?? '';
  return VIEWS.find((v) => v.toLowerCase() === name.toLowerCase()) ?? 'GPUs';
}

export function App(): JSX.Element {
  const [state, setState] = useState<BridgeState | null>(null);
  const [records, setRecords] = useState<HistoryRecord[]>([]);
  const [connected, setConnected] = useState(false);
  const [view, setView] = useState<View>(viewFromHash);
  const [whoami, setWhoami] = useState<WhoAmI | null>(null);
  const [signIn, setSignIn] = useState(false);
  const [session, setSession] = useState(0);

  useEffect(() => {
    let cancelled = false;
    const refused = (error: unknown): void => {
      if (!cancelled && error instanceof ReadFailure && error.status === 401) setSignIn(true);
    };
    const askWho = (): void => {
      getWhoAmI().then((w) => !cancelled && setWhoami(w), refused);
    };
    askWho();
    const arrived = (next: BridgeState): void => setState((shown) => newerState(shown, next));
    getState().then((s) => !cancelled && arrived(s), refused);
    const loadHistory = (): void => {
      getHistory(MAX_ROWS).then((r) => !cancelled && setRecords((live) => mergeRecords(r, live, MAX_ROWS)), refused);
    };
    loadHistory();
    const unsubscribe = subscribe({
      onState: arrived,
      onHistory: (record) => setRecords((current) => mergeRecords(current, [record], MAX_ROWS)),
      onConnection: (live) => {
        setConnected(live);
        // The stream ends, and is refused when opened again, once the credential is no longer taken
        // (a token that expired): the event stream cannot say so, whoami can.
        if (!live) askWho();
      },
      // Records written during a drop or a gap never came down the stream; mergeRecords keeps each id once.
      onMissedHistory: loadHistory,
    });
    return () => {
      cancelled = true;
      unsubscribe();
    };
  }, [session]);

  const choose = useCallback((next: View) => {
    setView(next);
    history.replaceState(null, '', `#${next.toLowerCase()}`);
  }, []);

  const health = useMemo(() => {
    if (state === null) return { label: 'connecting', tone: 'muted' };
    const up = healthyBackendCount(state.backends);
    if (up === state.backends.length) return { label: `${up}/${state.backends.length} backends healthy`, tone: 'ok' };
    if (up === 0) return { label: 'no backend available', tone: 'bad' };
    return { label: `${up}/${state.backends.length} backends healthy`, tone: 'warn' };
  }, [state]);

  return (
    <div className="app">
      <header className="topbar">
        <div className="brand">
          <span className="logo" aria-hidden="true" />
          copilot-bridge
        </div>
        <nav className="tabs" role="tablist" aria-label="Views">
          {VIEWS.map((name) => (
            <button key={name} role="tab" aria-selected={view === name} className={view === name ? 'tab active' : 'tab'} onClick={() => choose(name)}>
              {name}
            </button>
          ))}
        </nav>
        <div className="status">
          {whoami !== null && whoami.authRequired && (
            <span className="pill muted role" data-testid="signed-in" title={whoami.can.actions ? 'may change settings' : 'read only settings'}>
              {whoami.name} · {whoami.role}
            </span>
          )}
          <span className={`pill ${health.tone}`} data-testid="health">
            {health.label}
          </span>
          <span
            className={`dot ${connected ? 'ok' : 'bad'}`}
            title={connected ? 'live' : 'reconnecting'}
            aria-label={connected ? 'live updates on' : 'live updates reconnecting'}
          />
        </div>
      </header>
      <main className="content" role="tabpanel" aria-label={view}>
        {signIn ? (
          <form
            className="token"
            data-testid="sign-in"
            onSubmit={(event) => {
              event.preventDefault();
              const input = new FormData(event.currentTarget).get('token');
              if (typeof input !== 'string' || input.trim() === '') return;
              setControlToken(input);
              setSignIn(false);
              setSession((n) => n + 1);
            }}
          >
            <p>This bridge asks who you are.</p>
            <label>
              API key, token or control token
              <input name="token" type="password" autoComplete="off" />
            </label>
            <button type="submit">Sign in</button>
          </form>
        ) : state === null ? (
          <p className="empty">Connecting to the bridge…</p>
        ) : view === 'GPUs' ? (
          <GpuView state={state} />
        ) : view === 'Models' ? (
          <ModelsView state={state} readOnly={!mayRunActions(whoami)} />
        ) : view === 'History' ? (
          <HistoryView records={records} />
        ) : view === 'Usage' ? (
          <UsageView whoami={whoami} history={records} />
        ) : view === 'Backends' ? (
          <BackendsView state={state} readOnly={!mayRunActions(whoami)} />
        ) : (
          <ConnectView state={state} whoami={whoami} readOnly={!mayRunActions(whoami)} />
        )}
      </main>
    </div>
  );
}
