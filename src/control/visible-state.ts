import { seesEveryone } from '../auth/access.js';
import { matchesPattern, modelAllowed, type Identity } from '../auth/identity.js';
import { TIERS, type BridgeState, type Tier } from '../contract/index.js';

type CloudPolicy = BridgeState['cloudPolicy'];

/**
 * Of the keys and teams that never reach a cloud, a user sees only itself and its own team, as it
 * reads only its own history; `policy` itself when that leaves nothing out.
 */
function cloudPolicyFor(identity: Identity, policy: CloudPolicy): CloudPolicy {
  if (seesEveryone(identity)) return policy;
  const localOnlyKeys = policy.localOnlyKeys.filter((key) => key === identity.name);
  const localOnlyTeams = policy.localOnlyTeams.filter((team) => team === identity.team);
  const unchanged = localOnlyKeys.length === policy.localOnlyKeys.length && localOnlyTeams.length === policy.localOnlyTeams.length;
  return unchanged ? policy : { ...policy, localOnlyKeys, localOnlyTeams };
}

/**
 * The dashboard state as `identity` may read it. An identity with a model allow-list (its own or
 * its team's) finds no model outside it, as the model lists show it none: not installed, placed,
 * loaded, queued or failing; a tier set to such a model shows null; a `never_models` entry only when
 * it matches a model it sees. nvidia-smi's GPU processes are left out too: Ollama runs one process
 * per loaded model, so their sizes would tell the others apart. Figures that name no model (GPU
 * memory, counters, the total queued) stay.
 * Returns `state` itself when nothing is left out, so that one serialization serves all who see it.
 */
export function stateVisibleTo(identity: Identity, state: BridgeState): BridgeState {
  const cloudPolicy = cloudPolicyFor(identity, state.cloudPolicy);
  if (identity.models === undefined) return cloudPolicy === state.cloudPolicy ? state : { ...state, cloudPolicy };
  const allowed = (model: string): boolean => modelAllowed(identity, model);
  const models = state.models.filter((m) => allowed(m.name));
  const tierModels = Object.fromEntries(
    TIERS.map((tier) => {
      const model = state.settings.models[tier];
      return [tier, model !== null && allowed(model) ? model : null];
    }),
  ) as Record<Tier, string | null>;
  const seen = [...models.map((m) => m.name), ...Object.values(tierModels).filter((model) => model !== null)];
  return {
    ...state,
    settings: { ...state.settings, models: tierModels },
    backends: state.backends.map((b) => ({
      ...b,
      loaded: b.loaded.filter(allowed),
      health: { ...b.health, models: b.health.models.filter((c) => allowed(c.model)) },
    })),
    gpu: { ...state.gpu, processes: [] },
    placements: state.placements.map((p) => ({ ...p, models: p.models.filter((m) => allowed(m.name)) })),
    models,
    cloudPolicy: { ...cloudPolicy, neverModels: cloudPolicy.neverModels.filter((pattern) => seen.some((model) => matchesPattern(pattern, model))) },
    scheduler: { ...state.scheduler, pools: state.scheduler.pools.filter((p) => allowed(p.model)) },
  };
}
