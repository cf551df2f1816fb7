import type { ActionName, ActionPayloads, ActionResponse, BridgeState, FitCheck, GpuPoint, HistoryRecord } from '../../src/contract';

/**
 * The dashboard's only way to the bridge: its control API over HTTP and Server-Sent Events, on the
 * page's own origin (the same in a browser and in the desktop window).
 */

const TOKEN_KEY = 'copilot-bridge-control-token';

/** The control token: handed over in the URL fragment (never sent to a server), then kept for the session. */
export function controlToken(): string | null {
  const fromHash = new URLSearchParams(window.location.hash.slice(1)).get('token');
  if (fromHash !== null && fromHash !== '') {
    sessionStorage.setItem(TOKEN_KEY, fromHash);
    history.replaceState(null, '', window.location.pathname + window.location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setControlToken(token: string): void {
  sessionStorage.setItem(TOKEN_KEY, token.trim());
}

async function getJson<T>(path: string): Promise<T> {
  const response = await fetch(path);
  if (!response.ok) throw new Error(`${path} answered ${response.status}`);
  return (await response.json()) as T;
}

export const getState = (): Promise<BridgeState> => getJson('/bridge/api/state');
export const getHistory = async (limit: number): Promise<HistoryRecord[]> => (await getJson<{ records: HistoryRecord[] }>(`/bridge/api/history?limit=${limit}`)).records;
export const getGpuHistory = async (minutes: number): Promise<Record<string, GpuPoint[]>> => (await getJson<{ gpus: Record<string, GpuPoint[]> }>(`/bridge/api/gpu/history?minutes=${minutes}`)).gpus;

export class ActionFailure extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly fit?: FitCheck,
  ) {
    super(message);
  }
}

export async function runAction<N extends ActionName>(name: N, payload: ActionPayloads[N]): Promise<ActionResponse> {
  const token = controlToken();
  if (token === null) throw new ActionFailure(401, 'No control token: open the dashboard from the tray or the link the bridge logs, or paste the token in Connect.');
  const response = await fetch(`/bridge/api/actions/${name}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-bridge-token': token },
    body: JSON.stringify(payload),
  });
  const body = (await response.json()) as ActionResponse | { error: string; fit?: FitCheck };
  if (!response.ok || !('ok' in body)) {
    const failure = body as { error: string; fit?: FitCheck };
    throw new ActionFailure(response.status, failure.error, failure.fit);
  }
  return body;
}

export interface Subscription {
  onState: (state: BridgeState) => void;
  onHistory: (record: HistoryRecord) => void;
  onConnection: (connected: boolean) => void;
}

/** Live updates; the browser reconnects by itself after a drop. */
export function subscribe(handlers: Subscription): () => void {
  const source = new EventSource('/bridge/api/events');
  source.addEventListener('state', (event) => handlers.onState(JSON.parse((event as MessageEvent<string>).data) as BridgeState));
  source.addEventListener('history', (event) => handlers.onHistory(JSON.parse((event as MessageEvent<string>).data) as HistoryRecord));
  source.addEventListener('open', () => handlers.onConnection(true));
  source.addEventListener('error', () => handlers.onConnection(false));
  return () => source.close();
}
