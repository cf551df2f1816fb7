import type { Backend } from './backend.js';
import { UpstreamError } from './errors.js';
import { canonicalModelName } from '../contract/index.js';
import { checkedShow, listedModels, type OllamaPsModel, type OllamaShowResponse, type OllamaTagModel } from './ollama-api.js';

export interface BackendListing {
  backend: Backend;
  /** null when the backend could not be asked. */
  models: OllamaTagModel[] | null;
  error?: string;
}

export interface CatalogModel extends OllamaTagModel {
  /** Names of the backends that have this model installed. */
  backends: string[];
}

export interface LoadedModel extends OllamaPsModel {
  backend: string;
  gpu: number | string | null;
}

const MAX_REMEMBERED_MISSES = 256;

/**
 * One round of model lists, and the same entries by canonical name for lookups on every request:
 * "<backend>\0<name>" for one backend's entry, "\0<name>" for the first backend that lists it.
 */
interface Lists {
  listings: BackendListing[];
  index: Map<string, OllamaTagModel>;
}

function listsOf(listings: BackendListing[]): Lists {
  const index = new Map<string, OllamaTagModel>();
  for (const listing of listings) {
    for (const model of listing.models ?? []) {
      const name = canonicalModelName(model.model);
      index.set(`${listing.backend.name}\u0000${name}`, model);
      if (!index.has(`\u0000${name}`)) index.set(`\u0000${name}`, model);
    }
  }
  return { listings, index };
}

/**
 * What models each backend has, from their /api/tags. Lists are cached for a short time and
 * refreshed in the background, so routing a request never waits on a model list it already has.
 */
export class ModelCatalog {
  private snapshot: Lists | undefined;
  private fetchedAt = 0;
  private refreshing: Promise<Lists> | undefined;
  /** /api/show per backend and model, with the digest the lists gave when it was asked. */
  private readonly shows = new Map<string, { digest: string | undefined; show: Promise<OllamaShowResponse> }>();
  /** When a name was last looked up in fresh lists and found nowhere. */
  private readonly misses = new Map<string, number>();

  constructor(
    private readonly backends: readonly Backend[],
    private readonly maxAgeMs = 5000,
  ) {}

  private refresh(): Promise<Lists> {
    if (this.refreshing !== undefined) return this.refreshing;
    const refreshing = Promise.all(
      this.backends.map(async (backend): Promise<BackendListing> => {
        try {
          const { models } = await backend.callJson<{ models?: unknown }>('GET', '/api/tags');
          return { backend, models: listedModels<OllamaTagModel>(models) };
        } catch (error) {
          return { backend, models: null, error: (error as Error).message };
        }
      }),
    ).then((listings) => {
      const lists = listsOf(listings);
      // Lists asked for before an invalidate() may predate the change it was for: they answer only their own callers.
      if (this.refreshing === refreshing) {
        this.snapshot = lists;
        this.fetchedAt = Date.now();
        this.refreshing = undefined;
      }
      return lists;
    });
    this.refreshing = refreshing;
    return refreshing;
  }

  /** The model lists; waits only when there are none yet or `fresh` is asked for. */
  private async current(fresh: boolean): Promise<Lists> {
    if (this.snapshot === undefined || fresh) return this.refresh();
    if (Date.now() - this.fetchedAt > this.maxAgeMs) void this.refresh();
    return this.snapshot;
  }

  /** Per-backend model lists; waits only when there is no list yet or `fresh` is asked for. */
  async perBackend(fresh = false): Promise<BackendListing[]> {
    return (await this.current(fresh)).listings;
  }

  /** Forget cached lists and details, after a pull, create, copy or delete. */
  invalidate(): void {
    this.fetchedAt = 0;
    this.misses.clear();
    this.snapshot = undefined;
    this.refreshing = undefined;
    this.shows.clear();
  }

  /** Every model once, in backend order, with the backends that hold it. Rejects when no backend answers. */
  async models(fresh = false): Promise<CatalogModel[]> {
    const merged = new Map<string, CatalogModel>();
    const listings = await this.perBackend(fresh);
    if (listings.every((l) => l.models === null)) {
      throw new UpstreamError('unreachable', 'all', `no backend is reachable: ${listings.map((l) => l.error).join('; ')}`);
    }
    for (const listing of listings) {
      for (const model of listing.models ?? []) {
        const key = canonicalModelName(model.model);
        const known = merged.get(key);
        if (known === undefined) merged.set(key, { ...model, backends: [listing.backend.name] });
        else known.backends.push(listing.backend.name);
      }
    }
    return [...merged.values()];
  }

  /**
   * The backends that have `model` installed. Before saying none it looks again once (a model
   * pulled meanwhile), then remembers the miss for `maxAgeMs`: a name nobody has (a client's
   * made-up engine) must not cost every request a round of /api/tags on every backend.
   */
  async holders(model: string): Promise<Backend[]> {
    const key = canonicalModelName(model);
    const find = ({ listings, index }: Lists): Backend[] => listings.filter((l) => index.has(`${l.backend.name}\u0000${key}`)).map((l) => l.backend);
    const cached = find(await this.current(false));
    const missedAt = this.misses.get(key);
    if (cached.length > 0 || (missedAt !== undefined && Date.now() - missedAt < this.maxAgeMs)) return cached;
    const found = find(await this.current(true));
    this.misses.delete(key);
    if (found.length === 0) {
      // Names come from clients: only so many are remembered, the oldest go first.
      if (this.misses.size >= MAX_REMEMBERED_MISSES) this.misses.delete(this.misses.keys().next().value as string);
      this.misses.set(key, Date.now());
    }
    return found;
  }

  /** Whether the last model lists (as they are, without asking again) have `model` on any backend. */
  lists(model: string): boolean {
    return this.entry(model) !== undefined;
  }

  /** A model as the last model lists (of the backend named, else the first that lists it) gave it, without asking again. */
  private entry(model: string, backend?: string): OllamaTagModel | undefined {
    return this.snapshot?.index.get(`${backend ?? ''}\u0000${canonicalModelName(model)}`);
  }

  /** Whether an installed model is one of Ollama's cloud models (it has a remote_host), as the last lists said. */
  isRemote(model: string): boolean {
    const remote = this.entry(model)?.remote_host;
    return remote !== undefined && remote !== '';
  }

  /** The size of a model's files as the last model lists gave it. */
  sizeOf(model: string): number | undefined {
    return this.entry(model)?.size;
  }

  /**
   * The digest of a model: names with one digest are one model to Ollama. With `backend`, as that
   * backend lists it: a model created on each instance (rather than pulled) has a digest per instance.
   */
  digestOf(model: string, backend?: string): string | undefined {
    return this.entry(model, backend)?.digest;
  }

  /**
   * /api/show of a model, asked of one backend that has it and remembered until invalidated, or
   * until the model lists show another file under the name (pulled again with ollama itself).
   * A verbose answer (whole token lists: megabytes, asked by `ollama show --verbose`) is not remembered.
   */
  async show(model: string, backend: Backend, verbose = false): Promise<OllamaShowResponse> {
    if (verbose) return checkedShow(await backend.callJson<Record<string, unknown>>('POST', '/api/show', { model, verbose }));
    const key = `${backend.name}\u0000${canonicalModelName(model)}`;
    const digest = this.digestOf(model, backend.name);
    const known = this.shows.get(key);
    if (known !== undefined && known.digest === digest) return known.show;
    const show = backend.callJson<Record<string, unknown>>('POST', '/api/show', { model }).then(checkedShow);
    const asked = { digest, show };
    this.shows.set(key, asked);
    show.catch(() => {
      if (this.shows.get(key) === asked) this.shows.delete(key);
    });
    return show;
  }

  /** The models loaded in memory on every reachable backend right now (/api/ps). Rejects when no backend answers. */
  async loaded(): Promise<LoadedModel[]> {
    const lists = await Promise.allSettled(
      this.backends.map(async (backend) => {
        const { models } = await backend.callJson<{ models?: unknown }>('GET', '/api/ps');
        return listedModels<OllamaPsModel>(models).map((m) => ({ ...m, backend: backend.name, gpu: backend.gpu }));
      }),
    );
    const failures = lists.filter((list): list is PromiseRejectedResult => list.status === 'rejected');
    if (failures.length > 0 && failures.length === lists.length) {
      throw new UpstreamError('unreachable', 'all', `no backend is reachable: ${failures.map((f) => (f.reason as Error).message).join('; ')}`);
    }
    return lists.flatMap((list) => (list.status === 'fulfilled' ? list.value : []));
  }
}
