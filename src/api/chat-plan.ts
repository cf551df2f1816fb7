import type { RouteDecision, RouteInput } from '../routing/router.js';
import { chatSignals, clientSignals, needsOf, type HeaderBag } from '../routing/signals.js';
import type { OllamaMessage } from '../upstream/ollama-api.js';
import type { ModelCatalog } from '../upstream/catalog.js';
import type { ServerResponse } from 'node:http';
import type { ApiRequest } from './call.js';
import type { ApiContext } from './context.js';
import { routeAndServe, type GenerationPlan, type PlanForRoute, type ResponseFormat } from './generation.js';
import { thinkFor, type Think } from './thinking.js';

/** A chat request of any surface, translated to Ollama's /api/chat. */
export interface TranslatedChat {
  requestedModel: string;
  /** The native body without model, stream and think. */
  body: Record<string, unknown> & { messages: OllamaMessage[] };
  /** What was left out (tools a local model cannot use, ...), for the route reason. */
  notes: readonly string[];
  /** The thinking the client asked for; sent only when the routed model can think. */
  think: Think | undefined;
  stream: boolean;
  /** One native body per choice (OpenAI's n); 1 elsewhere. */
  choices?: number;
  format: ResponseFormat;
}

/**
 * One native body per choice. Under a seed each choice gets one of its own (seed, seed + 1, ...):
 * with one seed for all, Ollama would sample every choice the same way and answer n equal texts.
 */
export function choiceBodies<T extends Record<string, unknown>>(body: T, choices: number): T[] {
  const options = body.options as Record<string, unknown> | undefined;
  const seed = options?.seed;
  if (choices === 1 || typeof seed !== 'number') return Array.from({ length: choices }, () => body);
  return Array.from({ length: choices }, (_, i) => ({ ...body, options: { ...options, seed: seed + i } }));
}

/** The routing input and the route-dependent plan of a chat request, whatever surface it came in on. */
export function prepareChat(catalog: ModelCatalog, chat: TranslatedChat, headers: HeaderBag): { input: RouteInput; plan: PlanForRoute } {
  const tools = chat.body.tools;
  const signals = chatSignals(chat.body.messages, Array.isArray(tools) && tools.length > 0, clientSignals(headers));
  const plan = async (route: RouteDecision): Promise<GenerationPlan> => {
    if (chat.notes.length > 0) route.reason += `; ${chat.notes.join('; ')}`;
    const think = await thinkFor(chat.think, route, catalog);
    const body = think === undefined ? chat.body : { ...chat.body, think };
    return { path: '/api/chat', bodies: choiceBodies(body, chat.choices ?? 1), stream: chat.stream, format: chat.format };
  };
  return { input: { requestedModel: chat.requestedModel, signals, needs: needsOf(signals) }, plan };
}

/** Translates a chat request (a plain function of the parsed body; an InvalidRequest it throws is a 400), routes and serves it. */
export async function serveChat(context: ApiContext, req: ApiRequest, res: ServerResponse, translate: () => TranslatedChat): Promise<void> {
  const prepared = prepareChat(context.catalog, translate(), req.headers);
  await routeAndServe(context.router, context.policy, req, res, prepared.input, prepared.plan);
}
