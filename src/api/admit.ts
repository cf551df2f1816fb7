import type { Request, Response } from 'express';
import { classifyLane } from '../routing/lanes.js';
import { schedulerChoices } from '../routing/router.js';
import { clientSignals } from '../routing/signals.js';
import type { Backend } from '../upstream/backend.js';
import { whenClosed } from './call.js';
import type { ApiContext } from './context.js';
import { BridgeError } from '../contract/index.js';

/**
 * Waits in the scheduler for a request that is relayed as it is (embeddings), in the background
 * lane unless a rule says otherwise, and holds its slot until the answer is sent. Resolves to the
 * backend to send it to, or undefined when the client left while it waited; rejects with 503
 * no_backend_available when none can take traffic.
 */
export async function admitRelayed(context: ApiContext, req: Request, res: Response, model: string): Promise<Backend | undefined> {
  const { candidates, noRoom, why } = await context.router.rank(model, null);
  // None can take traffic (down, or its circuit open): refused as a generation is, not sent where it would fail or hang again.
  if (candidates.length === 0) throw new BridgeError(503, `no backend can serve this request (${why})`, { code: 'no_backend_available' });
  const abort = new AbortController();
  const stopWatching = whenClosed(res, () => abort.abort());
  const { lane } = classifyLane({ kind: 'embedding', path: req.path, headers: req.headers, client: clientSignals(req.headers) }, context.policy.laneRules);
  try {
    const slot = await context.policy.scheduler.admit({
      model,
      choices: schedulerChoices(context.router.settings.dualGpu, noRoom, candidates).map((b) => b.name),
      lane,
      client: null,
      promptTokens: 0,
      signal: abort.signal,
    });
    stopWatching();
    whenClosed(res, () => slot.release());
    return candidates.find((b) => b.name === slot.backend);
  } catch (error) {
    // The client hung up while queued: nothing was sent upstream, and nobody is left to answer.
    if (abort.signal.aborted) return undefined;
    throw new BridgeError(503, `no backend can serve this request: ${(error as Error).message}`, { code: 'no_backend_available' });
  }
}
