import type { JSX } from 'react';
import type { BridgeState } from '../../../src/contract';
import { runAction } from '../api';
import { useAction } from '../useAction';
import { ms } from '../format';

export function BackendsView({ state }: { state: BridgeState }): JSX.Element {
  const { error: message, act } = useAction();
  const ollama = new Map(state.ollama.map((i) => [i.name, i]));
  return (
    <div className="view">
      <div className="toolbar">
        <h1>Backends</h1>
        <span className="muted">{state.settings.dualGpu ? 'Dual-GPU mode: work spreads over all healthy backends.' : 'Dual-GPU mode off: the primary serves everything.'}</span>
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
                        <button onClick={() => void act(() => runAction('startOllama', { backend: b.name }))}>Start</button>
                        <button onClick={() => void act(() => runAction('stopOllama', { backend: b.name }))}>Stop</button>
                        <button onClick={() => void act(() => runAction('restartOllama', { backend: b.name }))}>Restart</button>
                      </>
                    )}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </section>
    </div>
  );
}
