import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { loadConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { Router, settingsFrom, virtualModel } from '../../src/routing/router.js';
import { Backend, limitsFrom } from '../../src/upstream/backend.js';
import { ModelCatalog } from '../../src/upstream/catalog.js';
import { BackendHealth } from '../../src/upstream/health.js';
import { listingOllama, type ListedModels } from '../support/fake-ollama-api.js';
import { tempDir } from '../support/temp.js';

const SMALL = 'qwen2.5-coder:1.5b';
const BIG = 'qwen2.5-coder:7b-instruct-q8_0';
const closers: Array<() => Promise<void>> = [];
after(async () => {
  for (const close of closers) await close();
});

/** Two backends (gpu0, gpu1) over stand-ins listing the given models, checked once, and a router over them. */
async function routerOver(
  gpu0: ListedModels,
  gpu1: ListedModels,
  options: {
    dualGpu?: boolean;
    yaml?: string;
    coldLoadFits?: (b: Backend, m: string) => boolean | null;
    /** The backends' `gpu` in place of 0 and 1, and what the GPU monitor says each is. */
    gpus?: { ids: [number | string, number | string]; indexOf: (gpu: number | string) => number | undefined };
  } = {},
) {
  const [a, b] = await Promise.all([listingOllama(gpu0), listingOllama(gpu1)]);
  closers.push(a.close, b.close);
  let file: string | undefined;
  if (options.yaml !== undefined) {
    file = path.join(tempDir('router-'), 'config.yaml');
    writeFileSync(file, options.yaml);
  }
  const config: Config = loadConfig({ file, env: { GPU0_URL: a.url, GPU1_URL: b.url, ENABLE_DUAL_GPU: String(options.dualGpu ?? true) } });
  options.gpus?.ids.forEach((gpu, i) => Object.assign(config.backends[i] ?? {}, { name: `card-${i}`, gpu }));
  const backends = config.backends.map((backend) => new Backend(backend, limitsFrom(config), new BackendHealth({ failureThreshold: 3, cooldownMs: 60_000 })));
  closers.push(async () => void (await Promise.all(backends.map((backend) => backend.close()))));
  await Promise.all(backends.map((backend) => backend.check(1000)));
  const catalog = new ModelCatalog(backends);
  const router = new Router(config, backends, catalog, settingsFrom(config), options.coldLoadFits, options.gpus?.indexOf);
  const [gpu0Backend, gpu1Backend] = backends as [Backend, Backend];
  return { router, catalog, standIns: [a, b], gpu0: gpu0Backend, gpu1: gpu1Backend };
}

const names = (ranked: { candidates: Backend[] }): string[] => ranked.candidates.map((b) => b.name);

describe('router ranking', () => {
  it('puts the backend that holds the model in memory first, and says so', async () => {
    const { router } = await routerOver({ tags: [SMALL], ps: [] }, { tags: [SMALL], ps: [SMALL] });
    const ranked = await router.rank(SMALL, null);
    assert.deepEqual(names(ranked), ['gpu1', 'gpu0']);
    assert.match(ranked.why, /gpu1 holds the model/);
  });

  it('counts a model as held where another name of the same file is loaded: Ollama runs one runner for both', async () => {
    const { router } = await routerOver({ tags: [SMALL, BIG], ps: [], sameFile: [SMALL, BIG] }, { tags: [SMALL, BIG], ps: [SMALL], sameFile: [SMALL, BIG] });
    const ranked = await router.rank(BIG, null);
    assert.deepEqual(names(ranked), ['gpu1', 'gpu0']);
    assert.match(ranked.why, /gpu1 holds the model/);
  });

  it('prefers a backend that has the model installed over one that does not', async () => {
    const { router } = await routerOver({ tags: [BIG], ps: [] }, { tags: [SMALL], ps: [] });
    assert.deepEqual(names(await router.rank(SMALL, null)), ['gpu1']);
    assert.deepEqual(names(await router.rank(BIG, null)), ['gpu0']);
  });

  it("breaks a tie with the tier's preferred GPU", async () => {
    const yaml = `models:\n  simple: { name: "${SMALL}", gpu_preference: 1 }\n  complex: { name: "${BIG}", gpu_preference: 0 }\n`;
    const { router } = await routerOver({ tags: [SMALL, BIG], ps: [] }, { tags: [SMALL, BIG], ps: [] }, { yaml });
    const simple = await router.rank(SMALL, 'simple');
    assert.deepEqual(names(simple), ['gpu1', 'gpu0']);
    assert.match(simple.why, /gpu1 is the preferred GPU/);
    assert.deepEqual(names(await router.rank(BIG, 'complex')), ['gpu0', 'gpu1']);
    // Without a tier (a concrete model asked for) nothing is preferred: the configured order stands.
    assert.deepEqual(names(await router.rank(SMALL, null)), ['gpu0', 'gpu1']);
  });

  it("finds the tier's preferred GPU behind a backend named by its GPU's UUID, and a preference given as a UUID", async () => {
    const uuids = ['GPU-6f1d2b0e-0000-4000-8000-000000000000', 'GPU-6f1d2b0e-1111-4000-8000-111111111111'];
    const gpus = { ids: [uuids[0], uuids[1]] as [string, string], indexOf: (gpu: number | string) => (typeof gpu === 'number' ? gpu : uuids.indexOf(gpu)) };
    for (const preference of ['1', `"${uuids[1]}"`]) {
      const yaml = `models:\n  simple: { name: "${SMALL}", gpu_preference: ${preference} }\n`;
      const { router } = await routerOver({ tags: [SMALL], ps: [] }, { tags: [SMALL], ps: [] }, { yaml, gpus });
      const simple = await router.rank(SMALL, 'simple');
      assert.deepEqual(names(simple), ['card-1', 'card-0'], `gpu_preference: ${preference}`);
      assert.match(simple.why, /card-1 is the preferred GPU/);
    }
  });

  it('puts a backend where a cold load does not fit behind one where it does', async () => {
    const { router } = await routerOver({ tags: [BIG], ps: [] }, { tags: [BIG], ps: [] }, { coldLoadFits: (backend) => backend.name !== 'gpu0' });
    const ranked = await router.rank(BIG, null);
    assert.deepEqual(names(ranked), ['gpu1', 'gpu0']);
    assert.match(ranked.why, /gpu0 lacks VRAM for a cold load/);
  });

  it('ranks a failing backend after a healthy one, and leaves out one whose circuit is open', async () => {
    const { router, gpu0 } = await routerOver({ tags: [SMALL], ps: [SMALL] }, { tags: [SMALL], ps: [] });
    gpu0.noteFailure('boom');
    assert.deepEqual(names(await router.rank(SMALL, null)), ['gpu1', 'gpu0'], 'failing, even holding the model, comes second');
    gpu0.noteFailure('boom');
    gpu0.noteFailure('boom');
    assert.deepEqual(names(await router.rank(SMALL, null)), ['gpu1'], 'an open circuit takes no traffic');
  });

  it('says why no backend can take a model whose circuit is open on each: not "healthy", but the circuit, its last error and how long it stays open', async () => {
    const { router, gpu0, gpu1 } = await routerOver({ tags: [SMALL], ps: [] }, { tags: [SMALL], ps: [] });
    for (const backend of [gpu0, gpu1]) for (let i = 0; i < 3; i++) backend.noteFailure('model runner crashed', SMALL);
    const ranked = await router.rank(SMALL, null);
    assert.deepEqual(names(ranked), []);
    const circuit = `circuit open after 3 failures in a row \\(last: model runner crashed\\), for 60 s more for ${SMALL.replace('.', '\\.')}`;
    assert.match(ranked.why, new RegExp(`^no backend can take traffic: gpu0 ${circuit}; gpu1 ${circuit}$`));
    assert.deepEqual(names(await router.rank(BIG, null)), ['gpu0', 'gpu1'], 'another model is not affected');
  });

  it('asks for the model lists only when a backend can take traffic: a lookup while all are down would remember the model as missing', async () => {
    const { router, catalog, standIns, gpu0, gpu1 } = await routerOver({ tags: [SMALL], ps: [] }, { tags: [SMALL], ps: [] });
    let lookups = 0;
    const holders = catalog.holders.bind(catalog);
    catalog.holders = (model) => {
      lookups += 1;
      return holders(model);
    };
    for (const standIn of standIns) await standIn.close();
    await Promise.all([gpu0.check(1000), gpu1.check(1000)]);
    const ranked = await router.rank(SMALL, null);
    assert.deepEqual(names(ranked), []);
    assert.match(ranked.why, /no backend can take traffic/);
    assert.equal(lookups, 0);
  });

  it('with dual-GPU off sends everything to the primary, the others only as failover', async () => {
    const { router, gpu0 } = await routerOver({ tags: [SMALL], ps: [] }, { tags: [SMALL], ps: [SMALL] }, { dualGpu: false });
    const ranked = await router.rank(SMALL, null);
    assert.deepEqual(names(ranked), ['gpu0', 'gpu1']);
    assert.match(ranked.why, /gpu0 is the primary \(dual-GPU off\)/);
    for (let i = 0; i < 3; i++) gpu0.noteFailure('refused');
    const failover = await router.rank(SMALL, null);
    assert.deepEqual(names(failover), ['gpu1']);
    assert.match(failover.why, /failing over to gpu1/);
  });
});

describe('virtual model names', () => {
  it('knows them in any case and with stray spaces, as a user may type them in a client’s settings', () => {
    assert.equal(virtualModel('Auto')?.name, 'auto');
    assert.equal(virtualModel(' auto:latest ')?.name, 'auto');
    assert.equal(virtualModel('Bridge/Complex:Latest')?.tier, 'complex');
    assert.equal(virtualModel('autox'), undefined);
    assert.equal(virtualModel('bridge/huge'), undefined);
  });
});
