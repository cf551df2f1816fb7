import type { JSX } from 'react';
import { ollamaControls, type BridgeState } from '../../../src/contract';
import { runAction } from '../api';
import { useAction } from '../useAction';
import { useNow } from '../useNow';
import { ms } from '../format';
import { restartCountdown } from '../lib/ollama';
import { backendQueue, droppedSummary, estimateCells } from '../lib/scheduler';

/** `readOnly`: the signed-in role may not run actions, so managed Ollama instances show their state only. */
export function BackendsView({ state, readOnly }: { state: BridgeState; readOnly: boolean }): JSX.Element {
  const { error: message, act } = useAction();
  const ollama = new Map(state.ollama.map((i) => [i.name, i]));
  // A crashed instance counts down to its automatic restart: the view is drawn again each second meanwhile.
  const now = useNow(state.ollama.some((i) => i.restartAt !== null));
  return (
    <div className="view">
      <div className="toolbar">
        <h1>Backends</h1>
        <span className="muted">
          {state.settings.dualGpu ? 'Dual-GPU mode: work spreads over all healthy backends.' : 'Dual-GPU mode off: the primary serves everything.'}
        </span>
      </div>
      {message !== null && (
        <p className="problem" role="alert">
          {message}
        </p>
      )}
      <section className="card">
        <table className="table">
          <thead>
            <tr>
              <th>Backend</th>
              <th>GPU</th>
              <th>Health</th>
              <th>Circuit</th>
              <th className="num">In flight</th>
              <th>Queued</th>
              <th className="num">Requests</th>
              <th className="num">Failures</th>
              <th className="num">Latency</th>
              <th>Loaded</th>
              <th>Ollama</th>
            </tr>
          </thead>
          <tbody>
            {state.backends.map((b) => {
              const managed = ollama.get(b.name);
              return (
                <tr key={b.name} data-testid={`backend-${b.name}`}>
                  <th scope="row">
                    {b.name}
                    <div className="muted small">{b.url}</div>
                  </th>
                  <td>{b.gpu ?? '–'}</td>
                  <td>
                    <span className={`badge ${b.health.status}`} title={b.health.lastError ?? ''}>
                      {b.health.status}
                    </span>
                  </td>
                  <td>{b.health.circuit}</td>
                  <td className="num">{b.inFlight}</td>
                  <td data-testid={`queued-${b.name}`}>{backendQueue(state.scheduler, b.name).text}</td>
                  <td className="num">{b.requests}</td>
                  <td className="num">{b.failures}</td>
                  <td className="num">{ms(b.health.latencyMs)}</td>
                  <td>{b.loaded.length === 0 ? <span className="muted">none</span> : b.loaded.join(', ')}</td>
                  <td className="actions">
                    {managed === undefined ? (
                      <span className="muted">not managed</span>
                    ) : (
                      <>
                        <span className={`badge ${managed.state}`}>{managed.state}</span>
                        {/* A failed instance waits for the user, who needs the bridge's why (no binary, a crash loop). */}
                        {managed.state === 'failed' && managed.message !== null && <div className="muted small">{managed.message}</div>}
                        {managed.restartAt !== null && (
                          <div className="muted small" data-testid={`restart-${b.name}`}>
                            {managed.lastExit === null ? '' : `${managed.lastExit}; `}
                            {restartCountdown(managed.restartAt, now)}
                          </div>
                        )}
                        {!readOnly && (
                          <>
                            <button
                              disabled={!ollamaControls(managed.state).start}
                              onClick={() => void act(() => runAction('startOllama', { backend: b.name }))}
                            >
                              Start
                            </button>
                            <button disabled={!ollamaControls(managed.state).stop} onClick={() => void act(() => runAction('stopOllama', { backend: b.name }))}>
                              Stop
                            </button>
                            <button
                              disabled={!ollamaControls(managed.state).restart}
                              onClick={() => void act(() => runAction('restartOllama', { backend: b.name }))}
                            >
                              Restart
                            </button>
                          </>
                        )}
                      </>
                    )}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </section>
      <section className="card" aria-label="Scheduler">
        <h2>Scheduler</h2>
        <p className="muted small" data-testid="scheduler-summary">
          {state.scheduler.enabled
            ? `On: requests wait here for a free Ollama slot; ghost text first, then chat, then background (one lane up per ${ms(state.scheduler.ageBoostMs)} waited); ghost text waiting over ${ms(state.scheduler.fimMaxWaitMs)} is answered empty. Each request goes where its estimated time to first token is shortest.`
            : 'Off: requests go straight to Ollama, which queues them first come, first served.'}{' '}
          {droppedSummary(state.scheduler)}
        </p>
        {state.scheduler.pools.length === 0 ? (
          <p className="empty">No requests yet: estimates appear after the first ones.</p>
        ) : (
          <table className="table">
            <thead>
              <tr>
                <th>Backend</th>
                <th>Model</th>
                <th className="num">Slots</th>
                <th className="num">Running</th>
                <th className="num">Ghost text</th>
                <th className="num">Chat</th>
                <th className="num">Background</th>
                <th className="num">Per request</th>
                <th className="num">Cold load</th>
                <th className="num">Prompt</th>
                <th className="num">Samples</th>
              </tr>
            </thead>
            <tbody>
              {state.scheduler.pools.map((p) => {
                const cells = estimateCells(p);
                return (
                  <tr key={`${p.backend}/${p.model}`} data-testid={`pool-${p.backend}-${p.model}`}>
                    <th scope="row">{p.backend}</th>
                    <td>{p.model}</td>
                    <td className="num">{p.slots}</td>
                    <td className="num">{p.running}</td>
                    <td className="num">{p.queued.fim}</td>
                    <td className="num">{p.queued.interactive}</td>
                    <td className="num">{p.queued.background}</td>
                    <td className="num">{cells.service}</td>
                    <td className="num">{cells.load}</td>
                    <td className="num">{cells.prompt}</td>
                    <td className="num">{p.samples}</td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        )}
      </section>
    </div>
  );
}
