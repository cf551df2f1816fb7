import { z } from 'zod';
import { keepAliveSchema } from '../config/schema.js';
import type { Placement } from '../gpu/placement.js';
import type { GpuStatus } from '../gpu/monitor.js';
import type { OllamaManager } from '../ollama/manager.js';
import { checkFit, preloadModel, unloadModel, type FitCheck } from '../ollama/models.js';
import { TIERS } from '../routing/classify.js';
import type { RoutingSettings } from '../routing/router.js';
import type { Backend } from '../upstream/backend.js';
import type { ModelCatalog } from '../upstream/catalog.js';
import { UpstreamError, UpstreamStatusError } from '../upstream/errors.js';
import { BridgeError, type ActionName, type ActionPayloads, type ActionResult, type Tier } from '../contract/index.js';
export type { ActionResult } from '../contract/index.js';

/**
 * The control actions: one table that both front doors use, the dashboard over HTTP and the tray
 * in-process. Each action has a typed payload, validated the same way for both.
 */
export const ACTION_PAYLOADS = {
  setDualGpu: z.strictObject({ enabled: z.boolean() }),
  setFallback: z.strictObject({ enabled: z.boolean() }),
  setTierModel: z.strictObject({ tier: z.enum(TIERS), model: z.string().min(1) }),
  preloadModel: z.strictObject({
    backend: z.string().min(1),
    model: z.string().min(1),
    keepAlive: keepAliveSchema.default('30m'),
    force: z.boolean().default(false),
  }),
  unloadModel: z.strictObject({ backend: z.string().min(1), model: z.string().min(1) }),
  startOllama: z.strictObject({ backend: z.string().min(1) }),
  stopOllama: z.strictObject({ backend: z.string().min(1) }),
  restartOllama: z.strictObject({ backend: z.string().min(1) }),
} as const satisfies { [N in ActionName]: z.ZodType<unknown, ActionPayloads[N]> };

export type { ActionName } from '../contract/index.js';
export type ActionPayload<N extends ActionName> = ActionPayloads[N];

export class ActionError extends BridgeError {
  constructor(
    status: 400 | 404 | 409 | 500 | 502,
    message: string,
    readonly fit?: FitCheck,
  ) {
    super(status, message);
    this.name = 'ActionError';
  }
}

export interface ActionDeps {
  settings: RoutingSettings;
  catalog: ModelCatalog;
  backends: readonly Backend[];
  manager: OllamaManager;
  placement: (backend: string) => Placement | undefined;
  gpu: () => GpuStatus;
  /** The configured cloud providers' names. */
  fallbackProviders: readonly string[];
}

type Handlers = { [N in ActionName]: (payload: z.output<(typeof ACTION_PAYLOADS)[N]>) => Promise<ActionResult> };

function handlers(deps: ActionDeps): Handlers {
  const { settings, catalog, manager } = deps;
  // Tier changes are numbered as they arrive: one whose lookup asked Ollama again (a model just
  // pulled) must not land over a change that came after it and was applied meanwhile.
  let tierChanges = 0;
  const tierAppliedAt = new Map<Tier, number>();
  const backendNamed = (name: string): Backend => {
    const backend = deps.backends.find((b) => b.name === name);
    if (backend === undefined) throw new ActionError(404, `no backend named '${name}'`);
    return backend;
  };
  const managed = async (run: () => Promise<{ state: string }>): Promise<ActionResult> => ({ message: `Ollama is ${(await run()).state}` });
  const upstream = async <T>(run: () => Promise<T>): Promise<T> => {
    try {
      return await run();
    } catch (error) {
      if (error instanceof UpstreamStatusError) throw new ActionError(error.status === 404 ? 404 : 502, error.message);
      if (error instanceof UpstreamError) throw new ActionError(502, error.message);
      throw error;
    }
  };
  return {
    async setDualGpu({ enabled }) {
      settings.dualGpu = enabled;
      return { message: `dual-GPU mode ${enabled ? 'on' : 'off'}` };
    },
    async setFallback({ enabled }) {
      // Switched on without a provider, it would show a fallback that cannot happen.
      if (enabled && deps.fallbackProviders.length === 0)
        throw new ActionError(409, 'no cloud provider is configured (fallback.providers): there is nothing to fall back to');
      settings.fallbackEnabled = enabled;
      return { message: `cloud fallback ${enabled ? 'on' : 'off'}` };
    },
    async setTierModel({ tier, model }) {
      const arrival = ++tierChanges;
      if ((await catalog.holders(model)).length === 0) throw new ActionError(404, `model '${model}' is not installed on any backend`);
      if ((tierAppliedAt.get(tier) ?? 0) > arrival) {
        const current = settings.models[tier];
        throw new ActionError(409, `the ${tier} tier was changed to ${current} after this change to ${model} was asked for: ${current} stays`);
      }
      tierAppliedAt.set(tier, arrival);
      settings.models[tier] = model;
      return { message: `${tier} tier now uses ${model}` };
    },
    async preloadModel({ backend: name, model, keepAlive, force }) {
      const backend = backendNamed(name);
      if (!(await catalog.holders(model)).some((b) => b.name === name)) throw new ActionError(404, `model '${model}' is not installed on ${name}`);
      const fit = checkFit(model, backend, catalog.sizeOf(model), deps.placement(name), deps.gpu());
      if (fit.fits === false && !force) throw new ActionError(409, fit.message, fit);
      await upstream(() => preloadModel(backend, model, keepAlive));
      return { message: `${model} loaded on ${name}`, fit };
    },
    async unloadModel({ backend: name, model }) {
      const gone = await upstream(() => unloadModel(backendNamed(name), model, catalog.digestOf(model, name)));
      if (gone) return { message: `${model} unloaded from ${name}` };
      return { message: `${model} is still in memory on ${name}: requests are using it, and Ollama unloads it once they end` };
    },
    startOllama: ({ backend }) => managed(() => manager.start(backend)),
    stopOllama: ({ backend }) => managed(() => manager.stop(backend)),
    restartOllama: ({ backend }) => managed(() => manager.restart(backend)),
  };
}

export interface Actions {
  run<N extends ActionName>(name: N, payload: ActionPayload<N>): Promise<ActionResult>;
  /** For callers that hold untyped input (HTTP): validates the name and the payload first. */
  runUnknown(name: string, payload: unknown): Promise<ActionResult>;
}

export function createActions(deps: ActionDeps, onChange: (name: ActionName) => void): Actions {
  const table = handlers(deps);
  const run = async (name: ActionName, payload: unknown): Promise<ActionResult> => {
    const parsed = ACTION_PAYLOADS[name].safeParse(payload);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new ActionError(400, `${name}: ${issue?.path.join('.') || 'payload'}: ${issue?.message ?? 'invalid'}`);
    }
    try {
      return await (table[name] as (p: unknown) => Promise<ActionResult>)(parsed.data);
    } finally {
      // A failed action may have changed what runs too (an Ollama left failed): the dashboard hears of it now.
      onChange(name);
    }
  };
  return {
    run: (name, payload) => run(name, payload),
    runUnknown: (name, payload) => {
      if (!Object.hasOwn(ACTION_PAYLOADS, name)) throw new ActionError(404, `no such action: ${name}`);
      return run(name as ActionName, payload);
    },
  };
}
