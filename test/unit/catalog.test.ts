import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { loadConfig } from '../../src/config/load.js';
import { Backend, limitsFrom } from '../../src/upstream/backend.js';
import { ModelCatalog } from '../../src/upstream/catalog.js';
import { UpstreamError } from '../../src/upstream/errors.js';
import { BackendHealth } from '../../src/upstream/health.js';
import { listingOllama, type ListedModels } from '../support/fake-ollama-api.js';

const closers: Array<() => Promise<void>> = [];
after(async () => {
  for (const close of closers) await close();
});

async function catalogOver(gpu0: ListedModels, gpu1: ListedModels | 'unreachable') {
  const a = await listingOllama(gpu0);
  const b = gpu1 === 'unreachable' ? undefined : await listingOllama(gpu1);
  closers.push(a.close, ...(b === undefined ? [] : [b.close]));
  // Port 9 (discard) on loopback refuses at once: a backend that is down.
  const config = loadConfig({ env: { GPU0_URL: a.url, GPU1_URL: b?.url ?? 'http://127.0.0.1:9', ENABLE_DUAL_GPU: 'true' } });
  const backends = config.backends.map((backend) => new Backend(backend, limitsFrom(config), new BackendHealth({ failureThreshold: 3, cooldownMs: 60_000 })));
  closers.push(async () => void (await Promise.all(backends.map((backend) => backend.close()))));
  return { catalog: new ModelCatalog(backends), backends: backends as [Backend, Backend], a, b };
}

describe('model catalog', () => {
  it('lists every model once, "name" and "name:latest" as one, with the backends that have it', async () => {
    const { catalog } = await catalogOver({ tags: ['llama3', 'qwen:7b'], ps: [] }, { tags: ['llama3:latest', 'phi3:mini'], ps: [] });
    const models = await catalog.models();
    assert.deepEqual(
      models.map((m) => [m.model, m.backends]),
      [
        ['llama3', ['gpu0', 'gpu1']],
        ['qwen:7b', ['gpu0']],
        ['phi3:mini', ['gpu1']],
      ],
    );
    assert.equal(catalog.sizeOf('llama3:latest'), 1000);
    assert.equal(catalog.sizeOf('nothing'), undefined);
  });

  it('finds the holders of a model, and looks again once before saying none (a model pulled meanwhile)', async () => {
    const { catalog, a } = await catalogOver({ tags: ['llama3'], ps: [] }, { tags: [], ps: [] });
    assert.deepEqual(
      (await catalog.holders('llama3:latest')).map((b) => b.name),
      ['gpu0'],
    );
    a.models.tags = ['llama3', 'new-model'];
    assert.deepEqual(
      (await catalog.holders('new-model')).map((b) => b.name),
      ['gpu0'],
    );
    assert.deepEqual(await catalog.holders('never-installed'), []);
  });

  it('finds a model whatever the letter case a client writes it in, as Ollama does, and lists one model for names that differ only in case', async () => {
    const { catalog, backends } = await catalogOver(
      { tags: ['llama3.2', 'qwen2.5-coder:7b'], ps: ['qwen2.5-coder:7b'] },
      { tags: ['Llama3.2:latest'], ps: [] },
    );
    assert.deepEqual(
      (await catalog.holders('LLAMA3.2:Latest')).map((b) => b.name),
      ['gpu0', 'gpu1'],
    );
    assert.deepEqual(
      (await catalog.holders('QWEN2.5-coder:7b')).map((b) => b.name),
      ['gpu0'],
    );
    assert.deepEqual(
      (await catalog.models()).map((m) => [m.model, m.backends]),
      [
        ['llama3.2', ['gpu0', 'gpu1']],
        ['qwen2.5-coder:7b', ['gpu0']],
      ],
    );
    assert.equal(catalog.lists('Qwen2.5-Coder:7B'), true);
    assert.equal(catalog.sizeOf('Qwen2.5-Coder:7B'), 1000);
    assert.equal(catalog.digestOf('Qwen2.5-Coder:7B', 'gpu0'), 'sha-qwen2.5-coder:7b');
    await backends[0].check(1000);
    assert.equal(backends[0].hasLoaded('Qwen2.5-Coder:7B'), true);
  });

  it('keeps going when one backend is down, and rejects as unreachable only when none answers', async () => {
    const { catalog } = await catalogOver({ tags: ['llama3'], ps: ['llama3'] }, 'unreachable');
    assert.deepEqual(
      (await catalog.models()).map((m) => m.backends),
      [['gpu0']],
    );
    assert.deepEqual(
      (await catalog.loaded()).map((m) => [m.name, m.backend]),
      [['llama3', 'gpu0']],
    );

    const nobody = await catalogOver({ tags: [], ps: [] }, 'unreachable');
    await nobody.a.close();
    await assert.rejects(
      nobody.catalog.models(true),
      (error: unknown) => error instanceof UpstreamError && error.status === 502 && /no backend is reachable/.test(error.message),
    );
    // Not an empty list: `ollama ps` would say nothing is loaded where nobody could be asked.
    await assert.rejects(
      nobody.catalog.loaded(),
      (error: unknown) => error instanceof UpstreamError && error.status === 502 && /no backend is reachable/.test(error.message),
    );
  });

  it('does not keep lists that were on the way when it was invalidated (a pull that ended meanwhile)', async () => {
    const { catalog, a } = await catalogOver({ tags: ['llama3'], ps: [] }, { tags: [], ps: [] });
    await catalog.models();
    const held = a.holdNextTags();
    const beforePull = catalog.models(true);
    await held.arrived;
    a.models.tags = ['llama3', 'pulled'];
    catalog.invalidate();
    const afterPull = catalog.models(true);
    held.release();
    assert.deepEqual(
      (await beforePull).map((m) => m.model),
      ['llama3'],
    );
    assert.deepEqual(
      (await afterPull).map((m) => m.model),
      ['llama3', 'pulled'],
    );
    assert.ok(catalog.lists('pulled'), 'the lists kept are the ones asked for after the invalidation');
  });

  it('asks /api/show once per backend and model until invalidated', async () => {
    const { catalog, backends, a } = await catalogOver({ tags: ['llama3'], ps: [], capabilities: ['completion', 'tools'] }, { tags: [], ps: [] });
    const [gpu0] = backends;
    assert.deepEqual((await catalog.show('llama3', gpu0)).capabilities, ['completion', 'tools']);
    await catalog.show('llama3:latest', gpu0);
    assert.equal(a.shows(), 1);
    catalog.invalidate();
    await catalog.show('llama3', gpu0);
    assert.equal(a.shows(), 2);
  });

  it('asks /api/show again when the model lists show another file under the name (pulled again with ollama itself)', async () => {
    const { catalog, backends, a } = await catalogOver({ tags: ['llama3'], ps: [], capabilities: ['completion'] }, { tags: [], ps: [] });
    const [gpu0] = backends;
    await catalog.models();
    assert.deepEqual((await catalog.show('llama3', gpu0)).capabilities, ['completion']);
    a.models.capabilities = ['completion', 'tools'];
    a.models.digests = { llama3: 'sha-updated' };
    await catalog.models(true);
    assert.deepEqual((await catalog.show('llama3', gpu0)).capabilities, ['completion', 'tools']);
    assert.equal(a.shows(), 2);
    await catalog.show('llama3', gpu0);
    assert.equal(a.shows(), 2, 'the new details are remembered in turn');
  });
});
