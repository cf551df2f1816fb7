import type { BridgeEvents } from '../contract/index.js';

type Listener = <E extends keyof BridgeEvents>(event: E, data: BridgeEvents[E]) => void;

/**
 * What the dashboard's event stream carries: the state, sent again (at most every `throttleMs`)
 * whenever something in it changed, and each new history record as it is written.
 */
export class StateFeed {
  private readonly listeners = new Map<Listener, () => void>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly state: () => BridgeEvents['state'],
    private readonly throttleMs = 250,
  ) {}

  /** Something in the state changed: listeners get the new state soon, once for a burst of changes. */
  changed(): void {
    if (this.timer !== undefined || this.listeners.size === 0) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const state = this.state();
      for (const listener of this.listeners.keys()) listener('state', state);
    }, this.throttleMs);
  }

  record(record: BridgeEvents['history']): void {
    for (const listener of this.listeners.keys()) listener('history', record);
    this.changed();
  }

  /** `end` is called when the bridge stops, so open streams close at once instead of holding it up. */
  subscribe(listener: Listener, end: () => void = () => undefined): () => void {
    this.listeners.set(listener, end);
    return () => this.listeners.delete(listener);
  }

  close(): void {
    clearTimeout(this.timer);
    for (const end of this.listeners.values()) end();
    this.listeners.clear();
  }
}
