import { timingSafeEqual } from 'node:crypto';
import express, { type Router as ExpressRouter } from 'express';
import { ActionError, type Actions } from './actions.js';

/**
 * The bridge's own API for the dashboard and the tray: a state snapshot and the actions.
 * Reading state is open to local clients; actions need the control token in `x-bridge-token`.
 */
export function controlRoutes(deps: { token: string; actions: Actions; state: () => unknown }): ExpressRouter {
  const router = express.Router();
  const expected = Buffer.from(deps.token);

  router.get('/bridge/api/state', (_req, res) => {
    res.json(deps.state());
  });

  router.post('/bridge/api/actions/:name', async (req, res) => {
    const given = Buffer.from(String(req.headers['x-bridge-token'] ?? ''));
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      res.status(401).json({ error: 'the control token is missing or wrong (x-bridge-token)' });
      return;
    }
    try {
      const result = await deps.actions.runUnknown(req.params.name, req.body ?? {});
      res.json({ ok: true, result, state: deps.state() });
    } catch (error) {
      if (!(error instanceof ActionError)) throw error;
      res.status(error.status).json({ error: error.message, ...(error.fit === undefined ? {} : { fit: error.fit }) });
    }
  });

  return router;
}
