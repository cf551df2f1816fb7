/**
 * What code that waits on a request needs of its cancellation. An AbortSignal has this shape, and
 * so does Cancel, which the bridge makes for every generation instead: creating an AbortController
 * costs Node 20 some 3.5 µs and listening on its signal 1 µs more, a share of a proxied request
 * that shows in its CPU profile.
 */
export interface CancelSignal {
  readonly aborted: boolean;
  readonly reason: unknown;
  /** Called once, at the abort. */
  addEventListener(type: 'abort', listener: () => void): void;
  removeEventListener(type: 'abort', listener: () => void): void;
}

/** A cancellation with its listeners in a plain array, and an AbortSignal made only for an API that takes nothing else. */
export class Cancel implements CancelSignal {
  aborted = false;
  reason: unknown = undefined;
  private listeners: Array<() => void> = [];
  private controller: AbortController | undefined;

  /**
   * Aborts once, with the reason an AbortController would give by default. As with an AbortSignal,
   * a listener removed by an earlier one is not called, and one that throws keeps none of the
   * others from running: its error is thrown again outside, as an uncaught exception.
   */
  abort(reason: unknown = new DOMException('This operation was aborted', 'AbortError')): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    this.controller?.abort(reason);
    for (let listener = this.listeners.shift(); listener !== undefined; listener = this.listeners.shift()) {
      try {
        listener();
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }

  /** Like an AbortSignal's: a listener added after the abort is never called. */
  addEventListener(_type: 'abort', listener: () => void): void {
    if (!this.aborted) this.listeners.push(listener);
  }

  removeEventListener(_type: 'abort', listener: () => void): void {
    const index = this.listeners.indexOf(listener);
    if (index >= 0) this.listeners.splice(index, 1);
  }

  /** An AbortSignal that aborts with this one (fetch, timers, cloud requests). */
  get signal(): AbortSignal {
    if (this.controller === undefined) {
      this.controller = new AbortController();
      if (this.aborted) this.controller.abort(this.reason);
    }
    return this.controller.signal;
  }
}
