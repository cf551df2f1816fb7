/** A long-lived part of the bridge: started once, stopped once; stop must also undo a start that failed halfway. */
export interface Service {
  readonly name: string;
  start(): Promise<void>;
  /** `graceMs`: how long running work may take to finish (servers); the others ignore it. */
  stop(graceMs: number): Promise<void>;
}

/**
 * Starts services in order and stops them in reverse. When a start fails, everything started so
 * far (the failing one included, so it can clean up half a start) is stopped before the error
 * goes on, so a failed start leaves no timer, port or child process behind.
 */
export class Lifecycle {
  private readonly started: Service[] = [];
  private stopping: Promise<void> | undefined;

  constructor(private readonly onStopError: (service: string, error: Error) => void) {}

  async start(services: readonly Service[]): Promise<void> {
    for (const service of services) {
      this.started.push(service);
      try {
        await service.start();
      } catch (error) {
        await this.stop(0);
        throw error;
      }
    }
  }

  /** Stops what was started, newest first; one failing stop does not keep the others running. */
  stop(graceMs: number): Promise<void> {
    this.stopping ??= (async () => {
      for (const service of this.started.reverse()) {
        try {
          await service.stop(graceMs);
        } catch (error) {
          this.onStopError(service.name, error as Error);
        }
      }
    })();
    return this.stopping;
  }
}
