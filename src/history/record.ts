import type { Config } from '../config/schema.js';
import { dropMessage, type GenerationOutcome, type HistoryRecord, type RequestEnd, type RequestRecord } from '../contract/index.js';
import { costOf } from './accounting.js';

const tenths = (value: number): number => Math.round(value * 10) / 10;

/** The history record of a finished (or abandoned) generation request; `gpuOf` names the GPU of a backend. */
export function historyRecord(
  request: RequestRecord & { generation: GenerationOutcome; end: RequestEnd },
  gpuOf: (backend: string) => number | string | null,
  config: Config,
): HistoryRecord {
  const { generation, end } = request;
  // Ollama reports the generation time itself; cloud answers are timed from the first line on.
  const evalSeconds = generation.evalSeconds || (generation.firstTokenMs === null ? 0 : (end.totalMs - generation.firstTokenMs) / 1000);
  // The local user of a bridge without keys is nobody in particular.
  const identity = request.identity !== null && request.identity.via !== 'anonymous' ? request.identity : null;
  const record: HistoryRecord = {
    id: request.id,
    time: request.startedAt.toISOString(),
    client: request.client.name,
    userAgent: request.client.userAgent,
    interaction: request.client.interaction,
    intent: request.client.intent,
    clientRequestId: request.client.requestId,
    surface: request.surface,
    path: request.path,
    requestedModel: generation.requestedModel,
    tier: generation.tier,
    reason: generation.reason,
    backend: generation.source,
    gpu: generation.source === null ? null : gpuOf(generation.source),
    model: generation.model,
    retries: generation.retries,
    fallback: generation.fallback,
    status: end.status,
    outcome: !end.completed ? 'cancelled' : generation.dropped !== null ? 'dropped' : generation.error !== null || end.status >= 400 ? 'error' : 'ok',
    error: generation.dropped !== null ? dropMessage(generation.dropped) : generation.error,
    lane: generation.lane,
    queueMs: tenths(generation.queueMs),
    ttftMs: generation.firstTokenMs === null ? null : tenths(generation.firstTokenMs),
    totalMs: tenths(end.totalMs),
    tokensIn: generation.tokensIn,
    tokensOut: generation.tokensOut,
    tokensPerSecond: generation.tokensOut !== null && evalSeconds > 0 ? tenths(generation.tokensOut / evalSeconds) : null,
    user: identity?.name ?? null,
    team: identity?.team ?? null,
    localOnly: generation.localOnly,
    gpuMs: generation.gpuMs === null ? null : tenths(generation.gpuMs),
    energyJoules: generation.energyJoules,
    cloudCostDollars: null,
    energyCostDollars: null,
    savedDollars: null,
  };
  return { ...record, ...costOf(config, record, generation.promptTokens) };
}
