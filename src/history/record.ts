import { randomUUID } from 'node:crypto';
import type { Request, Response } from 'express';
import { surfaceOf } from '../api/errors.js';
import type { GenerationOutcome } from '../api/generation.js';
import type { Identity } from '../auth/identity.js';
import type { Config } from '../config/schema.js';
import type { Backend } from '../upstream/backend.js';
import { costOf } from './accounting.js';
import type { HistoryRecord } from './store.js';

/** The history record of a finished (or abandoned) generation request. */
export function historyRecord(req: Request, res: Response, outcome: GenerationOutcome, startedAt: Date, totalMs: number, backends: readonly Backend[], config: Config): HistoryRecord {
  const results = outcome.results ?? [];
  const sum = (pick: (r: (typeof results)[number]) => number | undefined): number | null =>
    results.length === 0 ? null : results.reduce((total, r) => total + (pick(r) ?? 0), 0);
  const tokensOut = sum((r) => r.final.eval_count);
  // Ollama reports the generation time itself; cloud answers are timed from the first line on.
  const evalSeconds = (results[0]?.final.eval_duration ?? 0) / 1e9 || (outcome.firstTokenMs === null ? 0 : (totalMs - outcome.firstTokenMs) / 1000);
  const finished = res.writableFinished;
  const backend = backends.find((b) => b.name === outcome.source);
  const identity = res.locals.identity as Identity | undefined;
  const known = identity !== undefined && identity.via !== 'anonymous';
  const record: HistoryRecord = {
    id: String(res.getHeader('x-request-id') ?? randomUUID()),
    time: startedAt.toISOString(),
    client: outcome.client.name,
    userAgent: outcome.client.userAgent,
    interaction: outcome.client.interaction,
    intent: outcome.client.intent,
    clientRequestId: outcome.client.requestId,
    surface: surfaceOf(req.path),
    path: req.path,
    requestedModel: outcome.route.requestedModel,
    tier: outcome.route.tier,
    reason: outcome.route.reason,
    backend: outcome.source,
    gpu: backend?.gpu ?? null,
    model: outcome.route.model,
    retries: outcome.retries,
    fallback: outcome.fallback,
    status: res.statusCode,
    outcome: !finished ? 'cancelled' : outcome.error !== null || res.statusCode >= 400 ? 'error' : 'ok',
    error: outcome.error,
    ttftMs: outcome.firstTokenMs === null ? null : Math.round(outcome.firstTokenMs * 10) / 10,
    totalMs: Math.round(totalMs * 10) / 10,
    tokensIn: sum((r) => r.final.prompt_eval_count),
    tokensOut,
    tokensPerSecond: tokensOut !== null && evalSeconds > 0 ? Math.round((tokensOut / evalSeconds) * 10) / 10 : null,
    user: known ? identity.name : null,
    team: known ? identity.team : null,
    localOnly: outcome.localOnly,
    gpuMs: outcome.gpuMs === null ? null : Math.round(outcome.gpuMs * 10) / 10,
    energyJoules: outcome.energyJoules,
    cloudCostDollars: null,
    energyCostDollars: null,
    savedDollars: null,
  };
  return { ...record, ...costOf(config, record) };
}
