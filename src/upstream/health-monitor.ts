import type { Backend } from './backend.js';

/**
 * Asks every backend for /api/ps on an interval. Chained timers: the next round is scheduled only
 * after the previous one finished, so slow checks never pile up.
 */
export class HealthMonitor {
  readonly name = 'health monitor';
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private round: Promise<void> | undefined;

  constructor(
    private readonly backends: readonly Backend[],
    private readonly intervalMs: number,
    private readonly timeoutMs: number,
    private readonly onRound: () => void = () => undefined,
  ) {}

  /** Runs one round now and keeps going; resolves after the first round, so state is known at start. */
  async start(): Promise<void> {
    await this.runRound();
  }

  private async runRound(): Promise<void> {
    this.round = Promise.all(this.backends.map((b) => b.check(this.timeoutMs))).then(() => undefined);
    await this.round;
    this.onRound();
    if (!this.stopped) {
      this.timer = setTimeout(() => void this.runRound(), this.intervalMs);
      this.timer.unref();
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.round;
  }
}
