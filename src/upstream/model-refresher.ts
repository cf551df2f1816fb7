import type { CatalogModel, ModelCatalog } from './catalog.js';

/**
 * Keeps the installed-model list fresh for readers that cannot wait (the state snapshot is
 * synchronous): asks the catalog now and on an interval, keeps the last answer and says when the
 * list changed, so the dashboard and the tray show a model as soon as it is known.
 */
export class ModelRefresher {
  readonly name = 'model list refresher';
  private timer: NodeJS.Timeout | undefined;
  private last: CatalogModel[] = [];

  constructor(
    private readonly catalog: ModelCatalog,
    private readonly intervalMs: number,
    private readonly onChange: () => void,
  ) {}

  /** The model list as of the last refresh that succeeded. */
  get models(): readonly CatalogModel[] {
    return this.last;
  }

  /** Asks again now (after an action changed what is installed); a failure keeps the last list. */
  refresh(): void {
    void this.catalog.models().then(
      (models) => {
        const names = (list: readonly CatalogModel[]): string => JSON.stringify(list.map((m) => [m.model, m.backends]));
        const changed = names(models) !== names(this.last);
        this.last = models;
        if (changed) this.onChange();
      },
      () => undefined,
    );
  }

  async start(): Promise<void> {
    this.refresh();
    this.timer = setInterval(() => this.refresh(), this.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
  }
}
