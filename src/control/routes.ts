import express, { type Request, type Response, type Router as ExpressRouter } from 'express';
import { identityOf } from '../api/request.js';
import { seesEveryone } from '../auth/access.js';
import { modelAllowed, modelNotAllowed, type Identity } from '../auth/identity.js';
import type { UsageQuery } from '../history/usage.js';
import type { Logger } from '../log.js';
import { BridgeError, type BridgeState, type GpuPoint, type HistoryRecord, type UsageReport, type WhoAmI } from '../contract/index.js';
import { ActionError, type Actions } from './actions.js';
import type { StateFeed } from './feed.js';
import { stateVisibleTo } from './visible-state.js';

/** Dashboards, tray and scripts together; each open window holds one. */
export const MAX_EVENT_SUBSCRIBERS = 32;
/** How long an event stream may stay unable to take more before it is closed. */
const STALLED_SUBSCRIBER_MS = 10_000;

export interface ControlDeps {
  log: Logger;
  actions: Actions;
  state: () => BridgeState;
  feed: StateFeed;
  history: (limit: number) => HistoryRecord[];
  gpuHistory: (sinceMs: number) => Record<number, GpuPoint[]>;
  /** Both may read the history files: a range can reach back further than the records in memory. */
  usage: (query: UsageQuery) => Promise<UsageReport>;
  usageCsv: (query: UsageQuery) => Promise<string>;
  authRequired: boolean;
}

const DAY_MS = 86_400_000;
/** An ISO 8601 date, or date and time with an optional offset ("2025-06-01", "2025-06-01T09:00", "2025-06-01 09:00:00+02:00"). */
const ISO_TIME = /^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}(?::\d{2}(?:\.\d{1,3})?)?)(Z|[+-]\d{2}:?\d{2})?)?$/i;

/**
 * The instant an ISO date or time names; a date is the start of that day, and a date or time
 * without an offset is read at `utcOffsetMinutes` (JavaScript's Date would read a time in the
 * zone the bridge runs in, and accept "1" as the year 2001).
 */
function instantOf(text: string, utcOffsetMinutes: number): Date | undefined {
  const match = ISO_TIME.exec(text);
  if (match === null) return undefined;
  const [, date = '', time = '00:00', offset] = match;
  // Date.parse rolls a day the month lacks (2025-02-30) over into the next month instead of refusing it.
  if (Number.isNaN(Date.parse(`${date}T00:00Z`)) || new Date(`${date}T00:00Z`).toISOString().slice(0, 10) !== date) return undefined;
  const ms = offset === undefined ? Date.parse(`${date}T${time}Z`) - utcOffsetMinutes * 60_000 : Date.parse(`${date}T${time}${offset.toUpperCase()}`);
  return Number.isNaN(ms) ? undefined : new Date(ms);
}

/**
 * ?from=&to= (dates or times; default: the last 30 days) and ?tz= (minutes east of UTC); a user is
 * held to their own records. A date is the start of that day in the tz, so `to` is the day after the last.
 */
function usageQuery(req: Request, identity: Identity): UsageQuery | string {
  const tz = Number(req.query.tz ?? 0);
  if (!Number.isFinite(tz) || Math.abs(tz) > 14 * 60) return 'tz must be minutes east of UTC (-840 to 840)';
  const utcOffsetMinutes = Math.round(tz);
  // Only a missing or empty value takes the default: one given twice (an array) is no date.
  const parse = (value: unknown, fallback: Date): Date | undefined =>
    value === undefined || value === '' ? fallback : typeof value === 'string' ? instantOf(value, utcOffsetMinutes) : undefined;
  const to = parse(req.query.to, new Date());
  const from = parse(req.query.from, new Date(Date.now() - 30 * DAY_MS));
  if (to === undefined || from === undefined) return 'from and to must be dates (2025-06-01) or times (2025-06-01T12:00:00Z)';
  if (from.getTime() > to.getTime()) return 'from must not be after to';
  return { from, to, utcOffsetMinutes, ...(seesEveryone(identity) ? {} : { user: identity.name }) };
}

/**
 * The bridge's own API for the dashboard and the tray: the state, its live event stream, history,
 * GPU history, usage and the actions. Who may call what is decided before (src/auth/access.ts):
 * actions need an admin (or the control token); a user reads only their own history and usage;
 * the state leaves out what the caller may not see (./visible-state.ts).
 */
export function controlRoutes(deps: ControlDeps): ExpressRouter {
  const router = express.Router();

  router.get('/bridge/api/state', (req, res) => {
    res.json(stateVisibleTo(identityOf(req), deps.state()));
  });

  router.get('/bridge/api/history', (req, res) => {
    const limit = Math.min(100_000, Math.max(1, Number(req.query.limit) || 10_000));
    const identity = identityOf(req);
    const records = seesEveryone(identity)
      ? deps.history(limit)
      : deps
          .history(100_000)
          .filter((r) => r.user === identity.name)
          .slice(-limit);
    res.json({ records });
  });

  router.get('/bridge/api/whoami', (req, res) => {
    const identity = identityOf(req);
    const whoami: WhoAmI = {
      name: identity.name,
      team: identity.team,
      role: identity.role,
      authRequired: deps.authRequired,
      cloud: identity.cloud,
      can: { actions: identity.role === 'admin' && identity.via !== 'anonymous', generate: identity.role !== 'viewer', everyonesUsage: seesEveryone(identity) },
    };
    res.json(whoami);
  });

  /** The answer of `compute`, or 500 in the control API's shape when the history could not be read (the log says why). */
  const readingHistory = async <T>(compute: () => Promise<T>, res: Response): Promise<T | undefined> => {
    try {
      return await compute();
    } catch (error) {
      deps.log.error({ err: error }, 'could not read the history for a usage report');
      res.status(500).json({ error: 'could not read the usage history; the bridge log says why' });
      return undefined;
    }
  };

  router.get('/bridge/api/usage', async (req, res) => {
    const query = usageQuery(req, identityOf(req));
    if (typeof query === 'string') {
      res.status(400).json({ error: query });
      return;
    }
    const report = await readingHistory(() => deps.usage(query), res);
    if (report !== undefined) res.json(report);
  });

  router.get('/bridge/api/usage.csv', async (req, res) => {
    const query = usageQuery(req, identityOf(req));
    if (typeof query === 'string') {
      res.status(400).json({ error: query });
      return;
    }
    const csv = await readingHistory(() => deps.usageCsv(query), res);
    if (csv === undefined) return;
    // The days the user picked, in their time zone: `to` is the start of the day after the last.
    const day = (ms: number): string => new Date(ms + query.utcOffsetMinutes * 60_000).toISOString().slice(0, 10);
    const name = `copilot-bridge-usage-${day(query.from.getTime())}-${day(Math.max(query.from.getTime(), query.to.getTime() - 1))}.csv`;
    res.setHeader('content-type', 'text/csv; charset=utf-8');
    res.setHeader('content-disposition', `attachment; filename="${name}"`);
    res.send(csv);
  });

  router.get('/bridge/api/gpu/history', (req, res) => {
    const minutes = Math.min(24 * 60, Math.max(1, Number(req.query.minutes) || 10));
    res.json({ gpus: deps.gpuHistory(minutes * 60_000) });
  });

  // Server-Sent Events: the state now, then every change, and each new history record.
  let subscribers = 0;
  // One serialization per event object, however many subscribers it goes to: each history record,
  // and a state that stateVisibleTo hands on as it is (to all who may see all of it).
  const serialized = new WeakMap<object, string>();
  const frame = (event: string, data: unknown): string => {
    const key = typeof data === 'object' && data !== null ? data : undefined;
    let text = key === undefined ? undefined : serialized.get(key);
    if (text === undefined) {
      text = `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
      if (key !== undefined) serialized.set(key, text);
    }
    return text;
  };
  router.get('/bridge/api/events', (req, res) => {
    // A client that hung up while its credential was checked (a JWT's key set fetched) has had its
    // 'close' already: a stream opened for it would hold its place and its feed listener for good.
    if (res.destroyed) return;
    if (subscribers >= MAX_EVENT_SUBSCRIBERS) {
      res.setHeader('retry-after', '10');
      res.status(503).json({ error: `${MAX_EVENT_SUBSCRIBERS} event streams are open already; close a dashboard window or tab` });
      return;
    }
    subscribers += 1;
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' });
    // A subscriber that does not read must not make the bridge buffer for it: while its socket is
    // full, history records are dropped (they stay in /bridge/api/history) and only the newest
    // state is sent once it drains; one that stays full for STALLED_SUBSCRIBER_MS is disconnected.
    const identity = identityOf(req);
    const everyone = seesEveryone(identity);
    const stateFrame = (state: BridgeState): string => frame('state', stateVisibleTo(identity, state));
    let stalled: NodeJS.Timeout | undefined;
    let stateDue = false;
    // Told once the stream reads again, so the page reads the records it missed from /bridge/api/history.
    let historyMissed = false;
    const write = (text: string): void => {
      if (res.write(text) || stalled !== undefined) return;
      stalled = setTimeout(() => {
        deps.log.warn({ stalledSeconds: STALLED_SUBSCRIBER_MS / 1000 }, 'closed an event stream that stopped reading');
        res.destroy();
      }, STALLED_SUBSCRIBER_MS);
      stalled.unref();
    };
    res.on('drain', () => {
      clearTimeout(stalled);
      stalled = undefined;
      if (stateDue) {
        stateDue = false;
        write(stateFrame(deps.state()));
      }
      if (historyMissed && stalled === undefined) {
        historyMissed = false;
        write('event: history-gap\ndata: {}\n\n');
      }
    });
    const send = (event: string, data: unknown): void => {
      // A user's live history is their own requests, as in /bridge/api/history.
      if (event === 'history' && !everyone && (data as HistoryRecord).user !== identity.name) return;
      if (stalled === undefined) write(event === 'state' ? stateFrame(data as BridgeState) : frame(event, data));
      else if (event === 'state') stateDue = true;
      else historyMissed = true;
    };
    write('retry: 2000\n\n');
    send('state', deps.state());
    const unsubscribe = deps.feed.subscribe(send, () => res.end());
    const ping = setInterval(() => stalled === undefined && write(': ping\n\n'), 15_000);
    // A token that expires (a JWT) reads no more once it does: the page has to sign in again. (A
    // timer holds 24.8 days at most; a stream ended then is opened again with the token still good.)
    const expiry =
      identity.expiresAt === undefined ? undefined : setTimeout(() => res.end(), Math.min(2 ** 31 - 1, Math.max(0, identity.expiresAt - Date.now())));
    expiry?.unref();
    res.on('close', () => {
      subscribers -= 1;
      clearInterval(ping);
      clearTimeout(expiry);
      clearTimeout(stalled);
      unsubscribe();
    });
  });

  router.post('/bridge/api/actions/:name', async (req, res) => {
    try {
      // An admin with a model allow-list acts on the models on it only, as it pulls and deletes only those.
      const identity = identityOf(req);
      const model = (req.body as { model?: unknown } | undefined)?.model;
      if (typeof model === 'string' && !modelAllowed(identity, model)) throw modelNotAllowed(identity, model);
      const result = await deps.actions.runUnknown(req.params.name, req.body ?? {});
      res.json({ ok: true, result, state: stateVisibleTo(identity, deps.state()) });
    } catch (error) {
      // The control API's own error shape: {error, fit?}.
      if (!(error instanceof BridgeError)) throw error;
      const fit = error instanceof ActionError ? error.fit : undefined;
      res.status(error.status).json({ error: error.message, ...(fit === undefined ? {} : { fit }) });
    }
  });

  return router;
}
