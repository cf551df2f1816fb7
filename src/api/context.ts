import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import type { Router } from '../routing/router.js';
import type { Backend } from '../upstream/backend.js';
import type { ModelCatalog } from '../upstream/catalog.js';
import type { GenerationPolicy } from './generation.js';

/** What every client surface needs from the running bridge. */
export interface ApiContext {
  config: Config;
  log: Logger;
  router: Router;
  catalog: ModelCatalog;
  backends: readonly Backend[];
  policy: GenerationPolicy;
  startedAt: Date;
}

/** Management calls (pull, create, copy, blobs) go to the first backend; with a shared OLLAMA_MODELS every instance sees them. */
export function primaryOf(context: ApiContext): Backend {
  return context.backends[0] as Backend;
}
