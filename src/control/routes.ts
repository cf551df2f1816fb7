import express, { type Router as ExpressRouter } from 'express';
import { sameSecret } from '../http/guard.js';
import { BridgeError, type GpuPoint, type HistoryRecord } from '../contract/index.js';
import { ActionError, type Actions } from './actions.js';
import type { StateFeed } from './feed.js';

export interface ControlDeps {
  token: string;
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
  router.get('/bridge/api/events', (req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' });
    const send = (event: string, data: unknown): void => {
      res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    };
    res.write('retry: 2000\n\n');
    send('state', deps.state());
    const unsubscribe = deps.feed.subscribe(send, () => res.end());
    const ping = setInterval(() => res.write(': ping\n\n'), 15_000);
    req.on('close', () => {
      clearInterval(ping);
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
