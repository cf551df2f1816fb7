import { describeQueued, queuedPerLane, type SchedulerPool, type SchedulerSnapshot } from '../../../src/contract/index.js';
import { ms } from '../format.js';

/** One backend's line in the Backends view: running and waiting requests over all its models. */
export interface BackendQueue {
  running: number;
  queued: number;
  /** "1 ghost text, 3 chat", or "none". */
  text: string;
}

export function backendQueue(scheduler: SchedulerSnapshot, backend: string): BackendQueue {
  const pools = scheduler.pools.filter((p) => p.backend === backend);
  const perLane = queuedPerLane(scheduler, backend);
  const queued = perLane.fim + perLane.interactive + perLane.background;
  return { running: pools.reduce((sum, p) => sum + p.running, 0), queued, text: queued === 0 ? 'none' : describeQueued(perLane) };
}

/** The estimate cells of one (backend, model) queue; "seed" marks a figure not measured yet. */
export function estimateCells(pool: SchedulerPool): { service: string; load: string; prompt: string } {
  return {
    service: pool.samples === 0 ? `${ms(pool.serviceMs)} (seed)` : ms(pool.serviceMs),
    load: pool.loadMs === null ? 'not measured' : ms(pool.loadMs),
    prompt: pool.promptTokensPerSecond === null ? 'not measured' : `${pool.promptTokensPerSecond} tok/s`,
  };
}

/** "dropped: 3 superseded, 1 late, 2 cancelled while queued", or '' when nothing was. */
export function droppedSummary(scheduler: SchedulerSnapshot): string {
  const { superseded, deadline, cancelled } = scheduler.dropped;
  const parts = [
    superseded > 0 ? `${superseded} superseded` : '',
    deadline > 0 ? `${deadline} too late` : '',
    cancelled > 0 ? `${cancelled} cancelled while queued` : '',
  ].filter(Boolean);
  return parts.length === 0 ? '' : `Never sent to Ollama: ${parts.join(', ')}.`;
}
