import { createHash } from 'node:crypto';
import type { Request, RequestHandler, Response, Router as ExpressRouter } from 'express';
import { mountRoutes, sendJson, type ApiHandler, type ApiRoute } from '../call.js';
import { asBridgeError } from '../errors.js';
import { z } from 'zod';
import { virtualModel, VIRTUAL_MODELS } from '../../routing/router.js';
import { clientSignals, completionSignals, isFimPrompt, needsOf } from '../../routing/signals.js';
import { TIERS, type Tier } from '../../routing/classify.js';
import type { Backend } from '../../upstream/backend.js';
import { toUpstreamError, UpstreamStatusError } from '../../upstream/errors.js';
import { sameModel } from '../../contract/index.js';
import { modelNamed, valuesOllamaReads, type OllamaMessage, type OllamaShowResponse, type OllamaTagModel } from '../../upstream/ollama-api.js';
import { modelAllowed, modelNotAllowed } from '../../auth/identity.js';
import { admitRelayed } from '../admit.js';
import { primaryOf, type ApiContext } from '../context.js';
import { BridgeError } from '../../contract/index.js';
import { serveChat } from '../chat-plan.js';
import { modelOffered, requireModelAllowed, requireModelOffered, routeAndServe, type GenerationResult, type ResponseFormat } from '../generation.js';
import { passthrough } from '../passthrough.js';
import { identityOf } from '../request.js';
import { parseBody } from '../validate.js';

/**
 * The Ollama API level the bridge implements itself, whatever the backends run: it serves
 * /v1/responses and /v1/messages on its own, which is what Codex --oss (>= 0.13.4) gates on.
 */
export const BRIDGE_OLLAMA_API_LEVEL = '0.13.4';

const modelField = z.string({ error: 'model is required' }).min(1, 'model is required');

/** An optional field as Ollama decodes it: Go's encoding/json reads JSON null as the field left out. */
function optionalField<T extends z.ZodType>(schema: T) {
  return schema.nullish().transform((value) => value ?? undefined);
}

/**
 * A tool call in a message, as Ollama reads one (its arguments an object) and as the cloud
 * translations write one (a function with a name); the rest passes as it came.
 */
const toolCall = z.looseObject({
  function: z.looseObject({ name: z.string(), arguments: optionalField(z.record(z.string(), z.unknown())) }),
});

const chatRequest = z.looseObject({
  model: modelField,
  messages: optionalField(
    z.array(
      z.looseObject({
        role: z.string(),
        content: optionalField(z.string()),
        images: optionalField(z.array(z.string())),
        tool_calls: optionalField(z.array(toolCall)),
      }),
    ),
  ),
  tools: optionalField(z.array(z.looseObject({ function: z.looseObject({ name: z.string() }) }))),
  stream: optionalField(z.boolean()),
  think: optionalField(z.union([z.boolean(), z.enum(['low', 'medium', 'high'])])),
});

const generateRequest = z.looseObject({
  model: modelField,
  prompt: optionalField(z.string()),
  suffix: optionalField(z.string()),
  system: optionalField(z.string()),
  raw: optionalField(z.boolean()),
  images: optionalField(z.array(z.string())),
  stream: optionalField(z.boolean()),
});

/** The model is read by requiredModelName (`model` or `name`); Ollama decodes verbose as a bool. */
const showRequest = z.looseObject({ verbose: optionalField(z.boolean()) });

/** Ollama decodes an embedding request's model as a string; another type is refused here, naming the field, rather than relayed. */
const embedRequest = z.looseObject({ model: z.string({ error: 'must be a string' }).nullish() });

function requiredModelName(body: unknown): string {
  const name = modelNamed(body);
  if (name === undefined) throw new BridgeError(400, 'model is required', { code: 'invalid_request', param: 'model' });
  return name;
}

/** NDJSON lines and whole answers as Ollama writes them; a virtual model's name is kept in the answer. */
export function nativeFormat(kind: 'chat' | 'generate', requestedModel: string): ResponseFormat {
  const relabel = <T extends object>(event: T): T => ({ ...event, model: requestedModel });
  return {
    streamContentType: 'application/x-ndjson',
    // A line that already names the requested model goes out as it came, without a copy.
    chunk: (event) => `${JSON.stringify(event.model === requestedModel ? event : relabel(event))}\n`,
    end: () => '',
    error: (message) => `${JSON.stringify({ error: message })}\n`,
    whole: (results: readonly GenerationResult[]) => {
      const [result] = results as [GenerationResult];
      const thinking = result.thinking === '' ? {} : { thinking: result.thinking };
      if (kind === 'generate') return { ...relabel(result.final), response: result.content, ...thinking };
      const toolCalls = result.toolCalls.length === 0 ? {} : { tool_calls: result.toolCalls };
      return { ...relabel(result.final), message: { role: 'assistant', content: result.content, ...thinking, ...toolCalls } };
    },
  };
}

function digestOf(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

const EMPTY_DETAILS = { parent_model: '', format: 'gguf', family: '', families: [] as string[], parameter_size: '', quantization_level: '' };

/** Tag entries always carry every field clients read, even when a backend left some out. */
function completeTag(model: OllamaTagModel): OllamaTagModel {
  return {
    ...model,
    modified_at: model.modified_at ?? new Date(0).toISOString(),
    size: model.size ?? 0,
    digest: model.digest ?? digestOf(model.name),
    details: { ...EMPTY_DETAILS, ...model.details, families: model.details?.families ?? [] },
  };
}

function compareVersions(a: string, b: string): number {
  const parts = (v: string): number[] =>
    v
      .split(/[.-]/)
      .slice(0, 3)
      .map((p) => Number.parseInt(p, 10) || 0);
  const [x, y] = [parts(a), parts(b)];
  for (let i = 0; i < 3; i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0);
  return 0;
}

/** The tiers a virtual model stands for. */
function tiersBehind(tier: Tier | null): readonly Tier[] {
  return tier === null ? TIERS : [tier];
}

/** The routes every editor calls all the time: generations, the model list and model details. */
export function ollamaHotRoutes(context: ApiContext): ApiRoute[] {
  const { catalog } = context;

  /** /api/show of a real model from a backend that has it, with the fields clients rely on always present. */
  const showReal = async (model: string, verbose = false): Promise<OllamaShowResponse | undefined> => {
    const holder = (await catalog.holders(model))[0];
    if (holder === undefined) return undefined;
    const show = await catalog.show(model, holder, verbose);
    const info = { ...show.model_info };
    if (typeof info['general.basename'] !== 'string') info['general.basename'] = model.split(':')[0];
    return { ...show, capabilities: show.capabilities ?? [], model_info: info };
  };

  /** A virtual model described from the real models behind it: their capabilities, the smallest context. */
  const showVirtual = async (name: string, tier: Tier | null): Promise<OllamaShowResponse> => {
    const behind = await Promise.all(
      tiersBehind(tier).map(async (t) => ({ tier: t, show: await showReal(context.router.settings.models[t]).catch(() => undefined) })),
    );
    const shows = behind.flatMap((b) => (b.show === undefined ? [] : [b.show]));
    const first = shows[0];
    const architecture = String(first?.model_info?.['general.architecture'] ?? 'llama');
    const contexts = shows
      .map((s) => Number(s.model_info?.[`${String(s.model_info?.['general.architecture'])}.context_length`]))
      .filter((n) => Number.isFinite(n) && n > 0);
    // Fill-in-the-middle goes to the simple tier, so its template tells clients whether FIM works.
    const fimSource = behind.find((b) => b.tier === 'simple')?.show ?? first;
    return {
      license: '',
      modelfile: `# copilot-bridge virtual model: ${VIRTUAL_MODELS.find((v) => v.name === name)?.description ?? name}\n`,
      parameters: first?.parameters ?? '',
      template: fimSource?.template ?? '{{ .Prompt }}',
      details: { ...EMPTY_DETAILS, ...first?.details, parent_model: '' },
      model_info: {
        'general.architecture': architecture,
        'general.basename': `copilot-bridge-${name.replace('/', '-')}`,
        [`${architecture}.context_length`]: contexts.length > 0 ? Math.min(...contexts) : 4096,
      },
      capabilities: [...new Set(shows.flatMap((s) => s.capabilities ?? []))].sort(),
      modified_at: context.startedAt.toISOString(),
    };
  };

  const tags: ApiHandler = async (req, res) => {
    const listed = await catalog.models(true).catch((error: unknown) => {
      throw toUpstreamError(error, 'all');
    });
    const models = listed.map(({ backends: _backends, ...model }) => completeTag(model));
    const complexModel = models.find((m) => sameModel(m.model, context.router.settings.models.complex));
    const virtual = VIRTUAL_MODELS.map((v) => {
      const behind = v.tier === null ? complexModel : models.find((m) => sameModel(m.model, context.router.settings.models[v.tier as Tier]));
      return {
        name: v.name,
        model: v.name,
        modified_at: context.startedAt.toISOString(),
        size: behind?.size ?? 0,
        digest: digestOf(`copilot-bridge/${v.name}`),
        details: { ...EMPTY_DETAILS, ...behind?.details, parent_model: '' },
      };
    });
    const identity = identityOf(req);
    sendJson(res, 200, { models: [...virtual, ...models].filter((m) => modelOffered(context.router, identity, m.model)) });
  };

  const showModel: ApiHandler = async (req, res) => {
    const { verbose } = parseBody(showRequest, req);
    const name = requiredModelName(req.body);
    requireModelOffered(req, context.router, name);
    const virtual = virtualModel(name);
    const show = await (virtual === undefined ? showReal(name, verbose) : showVirtual(virtual.name, virtual.tier)).catch((error: unknown) => {
      throw error instanceof UpstreamStatusError ? error : toUpstreamError(error, 'catalog');
    });
    if (show === undefined) throw new BridgeError(404, `model '${name}' not found`, { code: 'model_not_found' });
    sendJson(res, 200, show);
  };

  const chat: ApiHandler = async (req, res) => {
    const body = parseBody(chatRequest, req);
    const { think, ...rest } = body;
    await serveChat(context, req, res, () => ({
      requestedModel: body.model,
      body: { ...rest, messages: (body.messages ?? []) as OllamaMessage[] },
      notes: [],
      think,
      stream: body.stream !== false,
      format: nativeFormat('chat', body.model),
    }));
  };

  const generate: ApiHandler = async (req, res) => {
    const body = parseBody(generateRequest, req);
    const prompt = body.prompt ?? '';
    const completion = completionSignals(clientSignals(req.headers), prompt, body.suffix, body.system);
    // Ghost text even where the suffix is empty (Continue at the end of a file) or the client filled in a FIM template itself.
    const fillInTheMiddle = body.suffix !== undefined || (body.raw === true && isFimPrompt(prompt));
    const signals = { ...completion, kind: fillInTheMiddle ? ('fim' as const) : completion.kind, images: (body.images?.length ?? 0) > 0 };
    const needs = needsOf(signals);
    // As Ollama checks it: a suffix with text needs a model that can insert.
    if (body.suffix !== undefined && body.suffix !== '') needs.push('insert');
    await routeAndServe(
      context.router,
      context.policy,
      req,
      res,
      { requestedModel: body.model, signals, needs },
      {
        path: '/api/generate',
        bodies: [body],
        stream: body.stream !== false,
        format: nativeFormat('generate', body.model),
      },
    );
  };

  return [
    { method: 'GET', path: '/api/tags', handler: tags },
    { method: 'POST', path: '/api/show', handler: showModel },
    { method: 'POST', path: '/api/chat', handler: chat },
    { method: 'POST', path: '/api/generate', handler: generate },
  ];
}

/**
 * The fields of each model-management request that name a model (Ollama 0.11's request types).
 * A key limited to some models may manage only those: a copy or a create from another model
 * would give it that model under a name it may use, and a push would hand it out.
 */
const MANAGED_MODEL_FIELDS = {
  '/api/pull': ['model', 'name'],
  '/api/push': ['model', 'name'],
  '/api/create': ['model', 'name', 'from'],
  '/api/copy': ['source', 'destination'],
  '/api/delete': ['model', 'name'],
} as const satisfies Record<string, readonly string[]>;

/** 403 model_not_allowed unless the identity may use every model these fields of the body name. */
function requireManagedModelsAllowed(fields: readonly string[]): RequestHandler {
  return (req, _res, next) => {
    const identity = identityOf(req);
    for (const model of fields.flatMap((field) => valuesOllamaReads(req.body, field))) {
      if (!modelAllowed(identity, model)) throw modelNotAllowed(identity, model);
    }
    next();
  };
}

/** Every route of this surface, mounted on `router`. */
export function ollamaRoutes(context: ApiContext, router: ExpressRouter): ExpressRouter {
  const { catalog } = context;
  const primary = primaryOf(context);
  const invalidate = (): void => catalog.invalidate();
  mountRoutes(router, ollamaHotRoutes(context));

  router.get('/', (_req, res) => {
    res.type('text/plain').send('Ollama is running');
  });

  router.get('/api/version', async (_req, res) => {
    const configured = context.config.server.ollama_version;
    if (configured !== undefined) {
      res.json({ version: configured });
      return;
    }
    const versions = await Promise.all(
      context.backends.map((b) =>
        b.callJson<{ version?: string }>('GET', '/api/version').then(
          (v) => v.version,
          () => undefined,
        ),
      ),
    );
    const known = versions.filter((v): v is string => typeof v === 'string');
    const lowest = known.sort(compareVersions)[0];
    res.json({ version: lowest === undefined || compareVersions(lowest, BRIDGE_OLLAMA_API_LEVEL) < 0 ? BRIDGE_OLLAMA_API_LEVEL : lowest });
  });

  router.get('/api/ps', async (req, res) => {
    const identity = identityOf(req);
    const loaded = await catalog.loaded();
    res.json({ models: loaded.filter((m) => modelOffered(context.router, identity, m.model)) });
  });

  const byModel = async (req: Request, res: Response): Promise<Backend | undefined> => {
    const model = modelNamed(req.body);
    return model === undefined ? primary : admitRelayed(context, req, res, model);
  };
  router.post(
    ['/api/embed', '/api/embeddings'],
    (req, _res, next) => {
      parseBody(embedRequest, req);
      // A virtual model (both model lists show it) embeds with a real one; the body goes upstream with that name.
      const requested = modelNamed(req.body);
      if (requested !== undefined) (req.body as Record<string, unknown>).model = context.router.embeddingModel(requested);
      for (const model of valuesOllamaReads(req.body, 'model')) requireModelAllowed(req, requested ?? model, model);
      next();
    },
    passthrough(byModel),
  );

  for (const path of ['/api/pull', '/api/create', '/api/copy', '/api/push'] as const) {
    router.post(
      path,
      requireManagedModelsAllowed(MANAGED_MODEL_FIELDS[path]),
      passthrough(() => primary, { afterEach: invalidate, answersWhenDone: true }),
    );
  }

  router.delete('/api/delete', requireManagedModelsAllowed(MANAGED_MODEL_FIELDS['/api/delete']), async (req, res) => {
    const name = requiredModelName(req.body);
    const holders = await catalog.holders(name);
    const outcomes = await Promise.allSettled(holders.map((backend) => backend.callJson('DELETE', '/api/delete', { model: name })));
    invalidate();
    // A backend that answered 404 holds nothing more (with a shared model store the others then
    // find it gone); one that failed otherwise still has the model: its reason is the one that counts.
    const deleted = holders.filter((_backend, i) => outcomes[i]?.status === 'fulfilled').map((backend) => backend.name);
    const failures = holders.flatMap((backend, i) => {
      const outcome = outcomes[i];
      return outcome?.status === 'rejected' ? [{ backend: backend.name, reason: outcome.reason as unknown }] : [];
    });
    const stillThere = failures.filter(({ reason }) => !(reason instanceof BridgeError && reason.status === 404));
    const [failed] = stillThere;
    if (deleted.length > 0) {
      if (failed === undefined) {
        res.status(200).end();
        return;
      }
      // Gone from some backends only: not a success, and the answer says where it is left.
      const why = asBridgeError(failed.reason);
      const where = stillThere.map(({ backend }) => backend).join(', ');
      throw new BridgeError(why.status, `model '${name}' was deleted on ${deleted.join(', ')} but not on ${where}: ${why.message}`, {
        code: why.code,
        cause: failed.reason,
      });
    }
    // Deleted nowhere: Ollama's reason, not a guess.
    throw failed?.reason ?? failures[0]?.reason ?? new BridgeError(404, `model '${name}' not found`, { code: 'model_not_found' });
  });

  return router;
}
