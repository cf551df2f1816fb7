import { useRef, useState, type JSX } from 'react';
import type { BridgeState, WhoAmI } from '../../../src/contract';
import { controlToken, runAction, setControlToken } from '../api';
import { useAction } from '../useAction';

function CopyField({ label, value, hint }: { label: string; value: string; hint: string }): JSX.Element {
  const [done, setDone] = useState<'copied' | 'selected' | null>(null);
  const shown = useRef<HTMLElement>(null);
  const say = (what: 'copied' | 'selected'): void => {
    setDone(what);
    setTimeout(() => setDone(null), 1500);
  };
  // Without the clipboard (a page opened over plain http from another machine is no secure context,
  // and has no navigator.clipboard) the value is selected, to be copied by hand.
  const select = (): void => {
    if (shown.current === null) return;
    window.getSelection()?.selectAllChildren(shown.current);
    say('selected');
  };
  return (
    <div className="copy-field">
      <div>
        <div className="label">{label}</div>
        <div className="muted small">{hint}</div>
      </div>
      <code ref={shown}>{value}</code>
      <button
        aria-label={`Copy ${label}`}
        onClick={() =>
          void Promise.resolve()
            .then(() => navigator.clipboard.writeText(value))
            .then(() => say('copied'), select)
        }
      >
        {done === 'copied' ? 'Copied' : done === 'selected' ? 'Selected: copy it' : 'Copy'}
      </button>
    </div>
  );
}

function Toggle({
  label,
  checked,
  disabled,
  onChange,
  testId,
}: {
  label: string;
  checked: boolean;
  disabled: boolean;
  onChange: (next: boolean) => void;
  testId: string;
}): JSX.Element {
  return (
    <label className="toggle">
      <input type="checkbox" role="switch" checked={checked} disabled={disabled} onChange={(event) => onChange(event.target.checked)} data-testid={testId} />
      <span className="track" aria-hidden="true" />
      {label}
    </label>
  );
}

/** Who never reaches a cloud provider, whatever the global switch says. */
function NeverCloud({ state }: { state: BridgeState }): JSX.Element {
  const { localOnlyTeams, localOnlyKeys, neverModels, header } = state.cloudPolicy;
  const rules = [...localOnlyTeams.map((team) => `team ${team}`), ...localOnlyKeys.map((key) => `key ${key}`), ...neverModels.map((model) => `model ${model}`)];
  return (
    <p className="muted small" data-testid="never-cloud">
      Never sent to a cloud: {rules.length === 0 ? 'no team, key or model is marked cloud: never' : rules.join(', ')}; any request with the {header}: 1 header;
      Ollama’s own cloud models count as cloud.
    </p>
  );
}

/** `readOnly`: the signed-in role may not run actions, so the switches only show the settings. */
export function ConnectView({ state, whoami, readOnly }: { state: BridgeState; whoami: WhoAmI | null; readOnly: boolean }): JSX.Element {
  const { error, act } = useAction();
  const [hasToken, setHasToken] = useState(controlToken() !== null);
  const origin = window.location.origin;
  return (
    <div className="view">
      <div className="toolbar">
        <h1>Settings & connect</h1>
      </div>
      <section className="card">
        <h2>Routing</h2>
        <Toggle
          label="Dual-GPU mode"
          testId="toggle-dual"
          checked={state.settings.dualGpu}
          disabled={readOnly}
          onChange={(enabled) => void act(() => runAction('setDualGpu', { enabled }))}
        />
        <Toggle
          label={`Cloud fallback${state.fallbackProviders.length === 0 ? ' (no provider configured)' : ` (${state.fallbackProviders.join(', ')})`}`}
          testId="toggle-fallback"
          checked={state.settings.fallbackEnabled}
          // Without a provider there is nothing to fall back to: it can only be turned off, as in the tray.
          disabled={readOnly || (state.fallbackProviders.length === 0 && !state.settings.fallbackEnabled)}
          onChange={(enabled) => void act(() => runAction('setFallback', { enabled }))}
        />
        <NeverCloud state={state} />
        {readOnly && whoami !== null && (
          <p className="muted small" data-testid="read-only">
            Signed in as {whoami.name} ({whoami.role}): settings are read only; an admin key or the control token can change them.
          </p>
        )}
        {error !== null && (
          <p className="problem" role="alert">
            {error}
          </p>
        )}
        {!hasToken && (
          <form
            className="token"
            onSubmit={(event) => {
              event.preventDefault();
              const input = new FormData(event.currentTarget).get('token');
              if (typeof input === 'string' && input.trim() !== '') {
                setControlToken(input);
                setHasToken(true);
              }
            }}
          >
            <label>
              Control token <span className="muted small">(from the data folder’s control-token file)</span>
              <input name="token" type="password" autoComplete="off" />
            </label>
            <button type="submit">Use token</button>
          </form>
        )}
      </section>
      <section className="card">
        <h2>Endpoints</h2>
        <CopyField label="VS Code Copilot Chat" value={origin} hint="github.copilot.chat.byok.ollamaEndpoint, then Manage Models → Ollama" />
        <CopyField label="Copilot inline completions" value={origin} hint="github.copilot.advanced → debug.overrideProxyUrl" />
        <CopyField label="Continue, Cline, Zed (Ollama)" value={origin} hint="apiBase / Base URL / api_url, provider Ollama" />
        <CopyField label="OpenAI SDKs and tools" value={`${origin}/v1`} hint="baseURL; any API key unless the bridge has keys" />
        <CopyField label="Prometheus" value={`${origin}/metrics`} hint="scrape target" />
      </section>
    </div>
  );
}
