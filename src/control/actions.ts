import { z } from 'zod';
import { TIERS } from '../routing/classify.js';
import type { RoutingSettings } from '../routing/router.js';
import type { ModelCatalog } from '../upstream/catalog.js';

/**
 * The control actions: one table that both front doors use, the dashboard over HTTP and the tray
 * in-process. Each action has a typed payload, validated the same way for both.
 */
export const ACTION_PAYLOADS = {
  setDualGpu: z.strictObject({ enabled: z.boolean() }),
  setFallback: z.strictObject({ enabled: z.boolean() }),
  setTierModel: z.strictObject({ tier: z.enum(TIERS), model: z.string().min(1) }),
} as const;

export type ActionName = keyof typeof ACTION_PAYLOADS;
export type ActionPayload<N extends ActionName> = z.input<(typeof ACTION_PAYLOADS)[N]>;

export class ActionError extends Error {
  constructor(
    readonly status: 400 | 404 | 409,
    message: string,
  ) {
    super(message);
    this.name = 'ActionError';
  }
}

export interface ActionDeps {
  settings: RoutingSettings;
  catalog: ModelCatalog;
}

type Handlers = { [N in ActionName]: (payload: z.output<(typeof ACTION_PAYLOADS)[N]>) => Promise<void> };

function handlers({ settings, catalog }: ActionDeps): Handlers {
  return {
    async setDualGpu({ enabled }) {
      settings.dualGpu = enabled;
    },
    async setFallback({ enabled }) {
      settings.fallbackEnabled = enabled;
    },
    async setTierModel({ tier, model }) {
      if ((await catalog.holders(model)).length === 0) throw new ActionError(404, `model '${model}' is not installed on any backend`);
      settings.models[tier] = model;
    },
  };
}

export interface Actions {
  run<N extends ActionName>(name: N, payload: ActionPayload<N>): Promise<void>;
  /** For callers that hold untyped input (HTTP): validates the name and the payload first. */
  runUnknown(name: string, payload: unknown): Promise<void>;
}

export function createActions(deps: ActionDeps, onChange: (name: ActionName) => void): Actions {
  const table = handlers(deps);
  const run = async (name: ActionName, payload: unknown): Promise<void> => {
    const parsed = ACTION_PAYLOADS[name].safeParse(payload);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new ActionError(400, `${name}: ${issue?.path.join('.') || 'payload'}: ${issue?.message ?? 'invalid'}`);
    }
    await (table[name] as (p: unknown) => Promise<void>)(parsed.data);
    onChange(name);
  };
  return {
    run: (name, payload) => run(name, payload),
    runUnknown: (name, payload) => {
      if (!Object.hasOwn(ACTION_PAYLOADS, name)) throw new ActionError(404, `no such action: ${name}`);
      return run(name as ActionName, payload);
    },
  };
}
