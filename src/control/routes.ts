import express, { type Router as ExpressRouter } from 'express';
import { sameSecret } from '../http/guard.js';
import type { Logger } from '../log.js';
import { BridgeError, type GpuPoint, type HistoryRecord } from '../contract/index.js';
import { ActionError, type Actions } from './actions.js';
import type { StateFeed } from './feed.js';

/** Dashboards, tray and scripts together; each open window holds one. */
export const MAX_EVENT_SUBSCRIBERS = 32;
/** How long an event stream may stay unable to take more before it is closed. */
const STALLED_SUBSCRIBER_MS = 10_000;

export interface ControlDeps {
  token: string;
  log: Logger;
  actions: Actions;
  state: () => unknown;
  feed: StateFeed;
  history: (limit: number) => HistoryRecord[];
  gpuHistory: (sinceMs: number) => Record<number, GpuPoint[]>;
}

/**
 * The bridge's own API for the dashboard and the tray: the state, its live event stream, history,
 * GPU history and the actions. Reading is open to local clients (the Host and Origin guards
 * apply); actions need the control token in `x-bridge-token`.
 */
export function controlRoutes(deps: ControlDeps): ExpressRouter {
  const router = express.Router();

  router.get('/bridge/api/state', (_req, res) => {
    res.json(deps.state());
  });

  router.get('/bridge/api/history', (req, res) => {
    const limit = Math.min(100_000, Math.max(1, Number(req.query.limit) || 10_000));
    res.json({ records: deps.history(limit) });
  });

  router.get('/bridge/api/gpu/history', (req, res) => {
    const minutes = Math.min(24 * 60, Math.max(1, Number(req.query.minutes) || 10));
    res.json({ gpus: deps.gpuHistory(minutes * 60_000) });
  });

  // Server-Sent Events: the state now, then every change, and each new history record.
  let subscribers = 0;
  // One serialization per event, whatever the number of subscribers.
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
  router.get('/bridge/api/events', (_req, res) => {
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
    let stalled: NodeJS.Timeout | undefined;
    let stateDue = false;
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
        write(frame('state', deps.state()));
      }
    });
    const send = (event: string, data: unknown): void => {
      if (stalled === undefined) write(frame(event, data));
      else if (event === 'state') stateDue = true;
    };
    write('retry: 2000\n\n');
    send('state', deps.state());
    const unsubscribe = deps.feed.subscribe(send, () => res.end());
    const ping = setInterval(() => stalled === undefined && write(': ping\n\n'), 15_000);
    res.on('close', () => {
      subscribers -= 1;
      clearInterval(ping);
      clearTimeout(stalled);
      unsubscribe();
    });
  });

  router.post('/bridge/api/actions/:name', async (req, res) => {
    if (!sameSecret(String(req.headers['x-bridge-token'] ?? ''), deps.token)) {
      res.status(401).json({ error: 'the control token is missing or wrong (x-bridge-token)' });
      return;
    }
    try {
      const result = await deps.actions.runUnknown(req.params.name, req.body ?? {});
      res.json({ ok: true, result, state: deps.state() });
    } catch (error) {
      // The control API's own error shape: {error, fit?}.
      if (!(error instanceof BridgeError)) throw error;
      const fit = error instanceof ActionError ? error.fit : undefined;
      res.status(error.status).json({ error: error.message, ...(fit === undefined ? {} : { fit }) });
    }
  });

  return router;
}
