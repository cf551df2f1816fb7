import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** What a stand-in Ollama lists: installed models (/api/tags) and those in memory (/api/ps). */
export interface ListedModels {
  tags: string[];
  ps: string[];
  /** Capabilities /api/show reports for every model. */
  capabilities?: string[];
  /** Names that are one model file (e.g. a copy under a second tag): they share this digest. */
  sameFile?: string[];
  /** A model's digest in place of the one made up from its name (a model pulled again). */
  digests?: Record<string, string>;
}

let instances = 0;

/**
 * The read-only part of Ollama's API (tags, ps, show) from lists the test can change, so routing
 * and the model catalog can be tested against their real HTTP clients without a model server.
 */
export async function listingOllama(initial: ListedModels): Promise<{
  url: string;
  models: ListedModels;
  shows: () => number;
  /** Holds the next /api/tags answer, with the list as it was when the request came, until release(). */
  holdNextTags(): { arrived: Promise<void>; release(): void };
  close(): Promise<void>;
}> {
  const models = { ...initial };
  // Like a model created on each Ollama (not pulled): the same file has another digest on each instance.
  const instance = ++instances;
  let shows = 0;
  let hold: { arrived: () => void; released: Promise<void> } | undefined;
  const entry = (name: string) => ({
    name,
    model: name,
    modified_at: '2025-01-01T00:00:00Z',
    size: 1000,
    digest: models.digests?.[name] ?? (models.sameFile?.includes(name) === true ? `sha-shared-${instance}` : `sha-${name}`),
    details: { family: 'llama' },
  });
  const server: Server = createServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    if (req.url === '/api/tags') {
      const answer = JSON.stringify({ models: models.tags.map(entry) });
      const held = hold;
      hold = undefined;
      if (held === undefined) res.end(answer);
      else {
        held.arrived();
        void held.released.then(() => res.end(answer));
      }
    } else if (req.url === '/api/ps')
      res.end(JSON.stringify({ models: models.ps.map((name) => ({ ...entry(name), size_vram: 1000, expires_at: '2099-01-01T00:00:00Z' })) }));
    else if (req.url === '/api/show') {
      shows += 1;
      res.end(JSON.stringify({ capabilities: models.capabilities ?? ['completion'], model_info: { 'general.architecture': 'llama' } }));
    } else {
      res.statusCode = 404;
      res.end('{"error":"not here"}');
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    models,
    shows: () => shows,
    holdNextTags: () => {
      let release = (): void => undefined;
      const released = new Promise<void>((resolve) => (release = resolve));
      const arrived = new Promise<void>((resolve) => (hold = { arrived: resolve, released }));
      return { arrived, release };
    },
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
