import {
  isJsonObject,
  type ActionName,
  type ActionPayloads,
  type ActionResponse,
  type BridgeState,
  type FitCheck,
  type GpuPoint,
  type HistoryRecord,
  type UsageReport,
  type WhoAmI,
} from '../../src/contract';

/**
 * The dashboard's only way to the bridge: its control API over HTTP and Server-Sent Events, on the
 * page's own origin (the same in a browser and in the desktop window).
 */

const TOKEN_KEY = 'copilot-bridge-control-token';

/**
 * The dashboard's credential: the control token (handed over in the URL fragment, never sent to a
 * server that way), an API key or a JWT pasted in; kept for the browser session.
 */
export function controlToken(): string | null {
  const fromHash = new URLSearchParams(window.location.hash.slice(1)).get('token');
  if (fromHash !== null && fromHash !== '') {
    sessionStorage.setItem(TOKEN_KEY, fromHash);
    // Only the token leaves the address: the view named beside it (#usage&token=...) stays.
    const rest = window.location.hash
      .slice(1)
      .split('&')
      .filter((part) => !part.startsWith('token='))
      .join('&');
    history.replaceState(null, '', `${window.location.pathname}${window.location.search}${rest === '' ? '' : `#${rest}`}`);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setControlToken(token: string): void {
  sessionStorage.setItem(TOKEN_KEY, token.trim());
}

export function clearControlToken(): void {
  sessionStorage.removeItem(TOKEN_KEY);
}

function credentialHeaders(): Record<string, string> {
  const token = controlToken();
  return token === null ? {} : { authorization: `Bearer ${token}` };
}

/** A read the bridge refused: 401 means "sign in", 403 "this role may not". */
export class ReadFailure extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** The refusal as the bridge words it ({"error": "..."}); `what` and the status when the body says nothing. */
async function readFailure(response: Response, what: string): Promise<ReadFailure> {
  const body = (await response.json().catch(() => undefined)) as { error?: unknown } | undefined;
  return new ReadFailure(response.status, typeof body?.error === 'string' ? body.error : `${what} answered ${response.status}`);
}

async function getJson<T>(path: string): Promise<T> {
  const response = await fetch(path, { headers: credentialHeaders() });
  if (!response.ok) throw await readFailure(response, path.split('?')[0] ?? path);
  return (await response.json()) as T;
}

export const getWhoAmI = (): Promise<WhoAmI> => getJson('/bridge/api/whoami');

function usageParams(from: string, to: string): string {
  // Dates from the date pickers are local days: from the start of the first to the end of the last.
  const start = new Date(`${from}T00:00:00`);
  const end = new Date(`${to}T00:00:00`);
  end.setDate(end.getDate() + 1);
  return new URLSearchParams({ from: start.toISOString(), to: end.toISOString(), tz: String(-start.getTimezoneOffset()) }).toString();
}

export const getUsage = (from: string, to: string): Promise<UsageReport> => getJson(`/bridge/api/usage?${usageParams(from, to)}`);

/** Fetches the CSV with the credential (a plain link could not send it) and hands it to the browser as a download. */
export async function downloadUsageCsv(from: string, to: string): Promise<void> {
  const response = await fetch(`/bridge/api/usage.csv?${usageParams(from, to)}`, { headers: credentialHeaders() });
  if (!response.ok) throw await readFailure(response, 'the CSV export');
  const name = /filename="([^"]+)"/.exec(response.headers.get('content-disposition') ?? '')?.[1] ?? 'copilot-bridge-usage.csv';
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement('a');
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  URL.revokeObjectURL(url);
}

export const getState = (): Promise<BridgeState> => getJson('/bridge/api/state');
export const getHistory = async (limit: number): Promise<HistoryRecord[]> =>
  (await getJson<{ records: HistoryRecord[] }>(`/bridge/api/history?limit=${limit}`)).records;
export const getGpuHistory = async (minutes: number): Promise<Record<string, GpuPoint[]>> =>
  (await getJson<{ gpus: Record<string, GpuPoint[]> }>(`/bridge/api/gpu/history?minutes=${minutes}`)).gpus;

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
  if (token === null)
    throw new ActionFailure(
      401,
      'Not signed in: open the dashboard from the tray or the link the bridge logs, or paste the control token or an admin key in Connect.',
    );
  const response = await fetch(`/bridge/api/actions/${name}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify(payload),
  });
  // Not JSON when something in front of the bridge answered (a proxy's 502 page while it restarts).
  const body: unknown = await response.json().catch(() => undefined);
  if (response.ok && isJsonObject(body) && body.ok === true) return body as unknown as ActionResponse;
  const failure = isJsonObject(body) ? body : {};
  throw new ActionFailure(
    response.status,
    typeof failure.error === 'string' ? failure.error : `${name} answered ${response.status}`,
    failure.fit as FitCheck | undefined,
  );
}

export interface Subscription {
  onState: (state: BridgeState) => void;
  onHistory: (record: HistoryRecord) => void;
  onConnection: (connected: boolean) => void;
  /**
   * History records were written that never came down the stream: it is back after a drop, or the
   * bridge dropped them while the page did not keep up (it says so with `history-gap`). The bridge
   * sends the state again on its own, but those records must be read again.
   */
  onMissedHistory: () => void;
}

/**
 * How long to wait before opening the stream again after the bridge refused it (the bridge's own
 * `retry:` for dropped connections is the same).
 */
const REOPEN_AFTER_MS = 2000;

/**
 * Live updates. The browser reconnects by itself after a drop, but gives up for good on an answer
 * that is not an event stream (the bridge's 503 when too many are open, a proxy's 502 while the
 * bridge restarts): the stream is then opened again here.
 */
export function subscribe(handlers: Subscription): () => void {
  // EventSource sends no headers: the credential rides in the query (the bridge logs paths, never queries).
  const token = controlToken();
  const url = token === null ? '/bridge/api/events' : `/bridge/api/events?access_token=${encodeURIComponent(token)}`;
  let source: EventSource;
  let reopen: ReturnType<typeof setTimeout> | undefined;
  let dropped = false;
  const open = (): void => {
    source = new EventSource(url);
    source.addEventListener('state', (event) => handlers.onState(JSON.parse((event as MessageEvent<string>).data) as BridgeState));
    source.addEventListener('history', (event) => handlers.onHistory(JSON.parse((event as MessageEvent<string>).data) as HistoryRecord));
    source.addEventListener('history-gap', () => handlers.onMissedHistory());
    source.addEventListener('open', () => {
      handlers.onConnection(true);
      if (dropped) handlers.onMissedHistory();
      dropped = false;
    });
    source.addEventListener('error', () => {
      dropped = true;
      handlers.onConnection(false);
      if (source.readyState === EventSource.CLOSED) reopen = setTimeout(open, REOPEN_AFTER_MS);
    });
  };
  open();
  return () => {
    clearTimeout(reopen);
    source.close();
  };
}
