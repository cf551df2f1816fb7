import { useState, type JSX } from 'react';
import { sameModel, TIERS, type ActionResponse, type BridgeState, type FitCheck, type Tier } from '../../../src/contract';
import { ActionFailure, runAction } from '../api';
import { gib } from '../format';

interface Problem {
  key: string;
  message: string;
  fit?: FitCheck;
  retry?: () => Promise<void>;
}

function loadedOn(state: BridgeState, model: string): Array<{ backend: string; gpu: number | null; vramBytes: number }> {
  return state.placements.flatMap((p) =>
    p.models.filter((m) => sameModel(m.name, model)).map((m) => ({ backend: p.backend, gpu: p.gpu?.index ?? null, vramBytes: m.vramBytes })),
  );
}

/** `readOnly`: the signed-in role may not run actions, so nothing here can be changed. */
export function ModelsView({ state, readOnly }: { state: BridgeState; readOnly: boolean }): JSX.Element {
  const [problem, setProblem] = useState<Problem | null>(null);
  /** What the last action on a row said it did (a model that stays in memory while in use says so). */
  const [notice, setNotice] = useState<{ key: string; message: string } | null>(null);
  const [busy, setBusy] = useState<string | null>(null);

  const act = async (key: string, run: () => Promise<ActionResponse>, force?: () => Promise<ActionResponse>): Promise<void> => {
    setBusy(key);
    setProblem(null);
    setNotice(null);
    try {
      setNotice({ key, message: (await run()).result.message });
    } catch (error) {
      const failure = error instanceof ActionFailure ? error : new ActionFailure(0, String(error));
      setProblem({ key, message: failure.message, fit: failure.fit, retry: failure.status === 409 && force !== undefined ? () => act(key, force) : undefined });
    } finally {
      setBusy(null);
    }
  };

  /** `model` null: a tier set to a model outside the signed-in identity's allow-list, which the state does not name. */
  const modelRow = (model: string | null, tier: Tier | null): JSX.Element => {
    const key = tier ?? model ?? '';
    const loaded = model === null ? [] : loadedOn(state, model);
    // As Ollama lists it: a tier set to "llama3" uses the installed "llama3:latest".
    const installed = model === null ? undefined : state.models.find((m) => sameModel(m.name, model));
    const installedOn = installed?.backends ?? [];
    return (
      <tr key={key} data-testid={tier === null ? `model-${model}` : `tier-${tier}`}>
        {tier !== null && (
          <th scope="row" className="tier">
            {tier}
          </th>
        )}
        <td>
          {tier === null ? (
            model
          ) : (
            <select
              aria-label={`Model of the ${tier} tier`}
              value={installed?.name ?? model ?? ''}
              disabled={readOnly || busy !== null}
              onChange={(event) => void act(key, () => runAction('setTierModel', { tier, model: event.target.value }))}
            >
              {installed === undefined && (
                <option value={model ?? ''}>{model === null ? 'a model outside your allow-list' : `${model} (not installed)`}</option>
              )}
              {state.models.map((m) => (
                <option key={m.name} value={m.name}>
                  {m.name}
                </option>
              ))}
            </select>
          )}
        </td>
        <td data-testid={`loaded-${key}`}>
          {loaded.length === 0 ? (
            <span className="muted">not loaded</span>
          ) : (
            loaded.map((l) => `${l.backend}${l.gpu === null ? '' : ` (GPU ${l.gpu})`} ${gib(l.vramBytes)}`).join(', ')
          )}
        </td>
        <td className="actions">
          {!readOnly &&
            model !== null &&
            state.backends
              .filter((b) => installedOn.includes(b.name))
              .map((b) =>
                loaded.some((l) => l.backend === b.name) ? (
                  <button key={b.name} disabled={busy !== null} onClick={() => void act(key, () => runAction('unloadModel', { backend: b.name, model }))}>
                    Unload from {b.name}
                  </button>
                ) : (
                  <button
                    key={b.name}
                    disabled={readOnly || busy !== null}
                    onClick={() =>
                      void act(
                        key,
                        () => runAction('preloadModel', { backend: b.name, model }),
                        () => runAction('preloadModel', { backend: b.name, model, force: true }),
                      )
                    }
                  >
                    Preload on {b.name}
                  </button>
                ),
              )}
          {notice?.key === key && (
            <div className="notice" role="status" data-testid={`notice-${key}`}>
              {notice.message}
            </div>
          )}
          {problem?.key === key && (
            <div className="problem" role="alert" data-testid={`problem-${key}`}>
              {problem.message}
              {problem.retry !== undefined && (
                <button className="danger" onClick={() => void problem.retry?.()}>
                  Load anyway
                </button>
              )}
            </div>
          )}
        </td>
      </tr>
    );
  };

  return (
    <div className="view">
      <div className="toolbar">
        <h1>Models</h1>
        <span className="muted">Which model each tier uses, and where it is loaded.</span>
      </div>
      <section className="card">
        <h2>Tiers</h2>
        <table className="table">
          <thead>
            <tr>
              <th>Tier</th>
              <th>Model</th>
              <th>Loaded on</th>
              <th>Actions</th>
            </tr>
          </thead>
          <tbody>{TIERS.map((tier) => modelRow(state.settings.models[tier], tier))}</tbody>
        </table>
      </section>
      <section className="card">
        <h2>Installed models</h2>
        <table className="table">
          <thead>
            <tr>
              <th>Model</th>
              <th>Loaded on</th>
              <th>Actions</th>
            </tr>
          </thead>
          <tbody>{state.models.map((m) => modelRow(m.name, null))}</tbody>
        </table>
      </section>
    </div>
  );
}
