import type { ServerResponse } from 'node:http';
import type { ApiRequest } from '../call.js';
import { z } from 'zod';
import type { RouteDecision, Router } from '../../routing/router.js';
import { clientSignals, completionSignals, isFimPrompt } from '../../routing/signals.js';
import type { ModelCatalog } from '../../upstream/catalog.js';
import type { OllamaChunk } from '../../upstream/ollama-api.js';
import { choiceBodies } from '../chat-plan.js';
import { routeAndServe, type GenerationPlan, type GenerationPolicy, type ResponseFormat } from '../generation.js';
import { finishReason, inRange, newId, ollamaOptions, samplingFields, SSE_DONE, sseError, sseEvent, tokenLimit, usageOf } from './chat.js';

/**
 * A prompt completion: OpenAI's /v1/completions, and Copilot's inline completions
 * (/v1/engines/{engine}/completions), which add fields the bridge tolerates (nwo, extra).
 */
export const completionRequestSchema = z.looseObject({
  model: z.string().min(1).optional(),
  // A failed union is reported with its own message only (zod's default: "Invalid input"), so that message says what is taken.
  prompt: z
    .union([z.string(), z.array(z.string()).length(1)], { error: 'a text, or a list of one text: one prompt per request, and no token ids, are supported' })
    .default(''),
  suffix: z.string().nullish(),
  max_tokens: tokenLimit,
  ...samplingFields,
  n: z.number().int().min(1).max(8).nullish(),
  stop: z.union([z.string(), z.array(z.string())]).nullish(),
  seed: z.number().int().nullish(),
  // Not returned (see topLogprobs); OpenAI's maximum here is 5.
  logprobs: inRange(z.number().int(), 0, 5),
  echo: z.boolean().nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.looseObject({ include_usage: z.boolean().nullish() }).nullish(),
});

export type CompletionRequest = z.output<typeof completionRequestSchema>;

/**
 * text_completion events as Copilot's parsers read them: `data: ` with the space, `\n\n` after
 * each event, one choice per event with its index, a final choice with finish_reason, then [DONE].
 * `echo` (the prompt, when the client asked for it back; else '') comes before each choice's text.
 */
export function completionFormat(requestedModel: string, includeUsage: boolean, echo: string): ResponseFormat {
  const id = newId('cmpl');
  const created = Math.floor(Date.now() / 1000);
  const event = (choices: unknown[], extra: Record<string, unknown> = {}): string =>
    sseEvent({ id, object: 'text_completion', created, model: requestedModel, choices, ...extra });
  // The event of nearly every token, a piece of text, from a template: the same bytes as event() writes.
  const textHead = `data: ${JSON.stringify({ id, object: 'text_completion', created, model: requestedModel }).slice(0, -1)},"choices":[{"text":`;
  const piece = (chunk: OllamaChunk, index: number): string => {
    const text = chunk.response ?? '';
    if (text !== '' && chunk.done !== true) return `${textHead}${JSON.stringify(text)},"index":${index},"finish_reason":null,"logprobs":null}]}\n\n`;
    let out = '';
    if (text !== '') out += event([{ text, index, finish_reason: null, logprobs: null }]);
    if (chunk.done === true) out += event([{ text: '', index, finish_reason: chunk.done_reason === 'length' ? 'length' : 'stop', logprobs: null }]);
    return out;
  };
  // Choices whose stream has its echoed prompt already: it goes once, in the first event of each.
  const echoed = new Set<number>();
  return {
    streamContentType: 'text/event-stream; charset=utf-8',
    chunk(chunk, index) {
      if (echo === '' || echoed.has(index)) return piece(chunk, index);
      echoed.add(index);
      return event([{ text: echo, index, finish_reason: null, logprobs: null }]) + piece(chunk, index);
    },
    end: (results) => (includeUsage ? event([], { usage: usageOf(results) }) : '') + SSE_DONE,
    error: sseError,
    whole: (results) => ({
      id,
      object: 'text_completion',
      created,
      model: requestedModel,
      choices: results.map((result, index) => ({ text: echo + result.content, index, finish_reason: finishReason(result), logprobs: null })),
      usage: usageOf(results),
    }),
  };
}

/**
 * Serves a completion: fill-in-the-middle through /api/generate with `suffix` when the chosen model
 * can insert, otherwise `raw` on the prefix alone (Ollama would refuse the suffix with 400).
 * Ghost text (Copilot's inline completions) is fill-in-the-middle even where its suffix is empty,
 * at the end of a file: routed as such, and sent `raw`, because Ollama's templates take a prompt
 * without a suffix for a chat turn and would wrap the code in it.
 */
export async function serveCompletion(
  deps: { router: Router; catalog: ModelCatalog; policy: GenerationPolicy },
  req: ApiRequest,
  res: ServerResponse,
  requestedModel: string,
  request: CompletionRequest,
  ghostText: boolean,
): Promise<void> {
  const prompt = Array.isArray(request.prompt) ? (request.prompt[0] ?? '') : request.prompt;
  const suffix = request.suffix ?? '';
  const completion = completionSignals(clientSignals(req.headers), prompt, suffix);
  // A FIM template the client filled in itself is ghost text too, and goes to Ollama raw, not wrapped in a chat template.
  const signals = ghostText || isFimPrompt(prompt) ? { ...completion, kind: 'fim' as const } : completion;
  const canInsert = async (route: RouteDecision): Promise<boolean> => {
    const backend = route.candidates[0];
    if (backend === undefined) return false;
    const show = await deps.catalog.show(route.model, backend).catch(() => undefined);
    return show?.capabilities?.includes('insert') ?? false;
  };
  const plan = async (route: RouteDecision): Promise<GenerationPlan> => {
    const body: Record<string, unknown> = { prompt, options: ollamaOptions(request) };
    if (signals.kind === 'fim') {
      if (suffix !== '' && (await canInsert(route))) body.suffix = suffix;
      else body.raw = true;
    }
    return {
      path: '/api/generate',
      bodies: choiceBodies(body, request.n ?? 1),
      // OpenAI's default; Copilot always asks for a stream.
      stream: request.stream ?? false,
      format: completionFormat(requestedModel, request.stream_options?.include_usage === true, request.echo === true ? prompt : ''),
    };
  };
  await routeAndServe(deps.router, deps.policy, req, res, { requestedModel, signals, needs: [] }, plan);
}
