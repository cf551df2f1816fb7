import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import type { OllamaChunk, OllamaMessage, OllamaToolCall } from '../../upstream/ollama-api.js';
import { BridgeError, isJsonObject, jsonOf, nestedDeeperThan } from '../../contract/index.js';
import { errorBody } from '../errors.js';
import type { GenerationResult, ResponseFormat } from '../generation.js';

/** OpenAI chat request, as far as the bridge reads it; unknown fields (copilot_references, ...) are tolerated. */
const contentPart = z.looseObject({
  type: z.string(),
  text: z.string().optional(),
  refusal: z.string().optional(),
  image_url: z.union([z.string(), z.looseObject({ url: z.string() })]).optional(),
});

const toolCall = z.looseObject({
  id: z.string().optional(),
  type: z.string().optional(),
  function: z.looseObject({
    name: z.string(),
    arguments: z.union([z.string(), z.record(z.string(), z.unknown())]).optional(),
  }),
});

/** Roles OpenAI refuses without content: an assistant turn may carry only tool calls, and a function result may be null. */
const CONTENT_REQUIRED: ReadonlySet<string> = new Set(['system', 'developer', 'user', 'tool']);

const message = z
  .looseObject({
    role: z.enum(['system', 'developer', 'user', 'assistant', 'tool', 'function']),
    content: z.union([z.string(), z.array(contentPart), z.null()]).optional(),
    tool_calls: z.array(toolCall).nullish(),
    // The deprecated form of one tool call, in an earlier assistant turn; its result is a `function` message.
    function_call: toolCall.shape.function.nullish(),
    tool_call_id: z.string().optional(),
    name: z.string().optional(),
  })
  .superRefine((m, ctx) => {
    if (CONTENT_REQUIRED.has(m.role) && (m.content === undefined || m.content === null)) {
      ctx.addIssue({ code: 'custom', path: ['content'], message: `required in a ${m.role} message` });
    }
  });

/** A token limit: Ollama reads 0 and below as none at all, so they are refused as OpenAI refuses them. */
export const tokenLimit = z.number().int().min(1, 'must be at least 1').nullish();

/** `schema` limited to OpenAI's documented range for the field, bounds included: OpenAI answers 400 outside it. */
export function inRange(schema: z.ZodNumber, min: number, max: number): z.ZodOptional<z.ZodNullable<z.ZodNumber>> {
  const message = `must be between ${min} and ${max}`;
  return schema.min(min, message).max(max, message).nullish();
}

/** Sampling fields of chat, completions and Responses requests, in OpenAI's ranges. */
export const samplingFields = {
  temperature: inRange(z.number(), 0, 2),
  top_p: inRange(z.number(), 0, 1),
  frequency_penalty: inRange(z.number(), -2, 2),
  presence_penalty: inRange(z.number(), -2, 2),
};

/** Log probabilities are not returned (Ollama has none to give), but values OpenAI refuses are refused alike. */
export const topLogprobs = inRange(z.number().int(), 0, 20);

/**
 * The deprecated `functions`, which the bridge cannot honour: their answer is a message.function_call,
 * which it never writes, and left out the model would answer without them. None (null, []) is harmless;
 * `function_call` alone chooses among no functions and is ignored.
 */
const functionsField = z
  .unknown()
  .refine((value) => value === null || (Array.isArray(value) && value.length === 0), 'not supported: send tools instead')
  .optional();

export const chatRequestSchema = z.looseObject({
  model: z.string({ error: 'you must provide a model parameter' }).min(1, 'you must provide a model parameter'),
  messages: z.array(message).min(1, "'messages' must contain at least one message"),
  stream: z.boolean().nullish(),
  stream_options: z.looseObject({ include_usage: z.boolean().nullish() }).nullish(),
  tools: z
    .array(
      z.looseObject({ type: z.string(), function: z.looseObject({ name: z.string(), description: z.string().nullish(), parameters: z.unknown().optional() }) }),
    )
    .nullish(),
  // "none", "auto", "required", a function the model must call, or the tools it may use (allowed_tools); other forms pass as "auto".
  tool_choice: z
    .union([
      z.string(),
      z.looseObject({
        type: z.string(),
        function: z.looseObject({ name: z.string() }).nullish(),
        allowed_tools: z.looseObject({ tools: z.array(z.looseObject({ function: z.looseObject({ name: z.string() }).nullish() })) }).nullish(),
      }),
    ])
    .nullish(),
  parallel_tool_calls: z.boolean().nullish(),
  functions: functionsField,
  ...samplingFields,
  max_tokens: tokenLimit,
  max_completion_tokens: tokenLimit,
  stop: z.union([z.string(), z.array(z.string())]).nullish(),
  seed: z.number().int().nullish(),
  logprobs: z.boolean().nullish(),
  top_logprobs: topLogprobs,
  n: z.number().int().min(1).max(8).nullish(),
  reasoning_effort: z.string().nullish(),
  response_format: z.looseObject({ type: z.string(), json_schema: z.looseObject({ schema: z.unknown() }).nullish() }).nullish(),
});

export type ChatRequest = z.output<typeof chatRequestSchema>;

/** A request the client got wrong; `param` names the field, as OpenAI's errors do. */
export class InvalidRequest extends BridgeError {
  constructor(message: string, param: string | null) {
    super(400, message, { code: 'invalid_request', param });
    this.name = 'InvalidRequest';
  }
}

/** Sampling options shared by chat and completions, in Ollama's names. */
export function ollamaOptions(request: {
  temperature?: number | null;
  top_p?: number | null;
  max_tokens?: number | null;
  max_completion_tokens?: number | null;
  stop?: string | string[] | null;
  seed?: number | null;
  frequency_penalty?: number | null;
  presence_penalty?: number | null;
}): Record<string, unknown> {
  const options: Record<string, unknown> = {
    temperature: request.temperature,
    top_p: request.top_p,
    num_predict: request.max_completion_tokens ?? request.max_tokens,
    stop: typeof request.stop === 'string' ? [request.stop] : request.stop,
    seed: request.seed,
    frequency_penalty: request.frequency_penalty,
    presence_penalty: request.presence_penalty,
  };
  return Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined && value !== null));
}

/**
 * Deepest nesting of tool-call arguments sent as JSON text. The body's own nesting limit cannot see
 * into the text, and once parsed the arguments go upstream in the body, which a deep enough value
 * cannot be written as (JSON.stringify overflows the stack where JSON.parse does not).
 */
const MAX_ARGUMENTS_DEPTH = 64;

/** Tool-call arguments sent as JSON text, parsed; throws InvalidRequest naming `param` when they nest too deep. */
export function argumentsJson(text: string, param: string): unknown {
  if (nestedDeeperThan(text, MAX_ARGUMENTS_DEPTH)) throw new InvalidRequest(`${param}: nested deeper than ${MAX_ARGUMENTS_DEPTH} levels`, param);
  return jsonOf(text);
}

function parseArguments(text: string | Record<string, unknown> | undefined, param: string): Record<string, unknown> {
  if (text === undefined || text === '') return {};
  if (typeof text !== 'string') return text;
  const value = argumentsJson(text, param);
  if (isJsonObject(value)) return value;
  throw new InvalidRequest(`${param}: tool call arguments must be a JSON object`, param);
}

/** A data: URL in base64 and its data; the media type may have parameters (`image/png;name=a.png`), as RFC 2397 allows. */
export const BASE64_DATA_URL = /^data:[^,]*;base64,(.*)$/s;

/** OpenAI messages in Ollama's form: text and refusal parts joined, data: images as base64, tool calls with object arguments; audio and files refused. */
export function toOllamaMessages(messages: ChatRequest['messages']): OllamaMessage[] {
  const toolNames = new Map<string, string>();
  return messages.map((m, i) => {
    const role = m.role === 'developer' ? 'system' : m.role === 'function' ? 'tool' : m.role;
    const texts: string[] = [];
    const images: string[] = [];
    if (typeof m.content === 'string') texts.push(m.content);
    else if (Array.isArray(m.content)) {
      m.content.forEach((part, j) => {
        if (part.type === 'text' && part.text !== undefined) texts.push(part.text);
        else if (part.type === 'image_url' && part.image_url !== undefined) {
          const url = typeof part.image_url === 'string' ? part.image_url : part.image_url.url;
          const match = BASE64_DATA_URL.exec(url);
          if (match === null)
            throw new InvalidRequest(`messages.${i}.content.${j}.image_url: only data: URLs with base64 images are supported`, `messages.${i}.content`);
          images.push(match[1] as string);
        } else if (part.type === 'refusal' && part.refusal !== undefined) texts.push(part.refusal);
        // Left out, the model would answer as if the audio or file had never been sent.
        else if (part.type === 'input_audio' || part.type === 'file')
          throw new InvalidRequest(`messages.${i}.content.${j}: ${part.type} parts are not supported`, `messages.${i}.content`);
      });
    }
    const out: OllamaMessage = { role, content: texts.join('\n') };
    if (images.length > 0) out.images = images;
    const calls = m.tool_calls ?? (m.function_call === undefined || m.function_call === null ? [] : [{ function: m.function_call }]);
    if (calls.length > 0) {
      out.tool_calls = calls.map((call, j): OllamaToolCall => {
        if (call.id !== undefined) toolNames.set(call.id, call.function.name);
        return {
          ...(call.id === undefined ? {} : { id: call.id }),
          function: { name: call.function.name, arguments: parseArguments(call.function.arguments, `messages.${i}.tool_calls.${j}.function.arguments`) },
        };
      });
    }
    if (role === 'tool') {
      const name = m.name ?? (m.tool_call_id === undefined ? undefined : toolNames.get(m.tool_call_id));
      if (name !== undefined) out.tool_name = name;
      if (m.tool_call_id !== undefined) out.tool_call_id = m.tool_call_id;
    }
    return out;
  });
}

/**
 * The tools Ollama gets. Ollama has no tool_choice: "none" sends none, allowed_tools only those, and
 * a function the model must call is the only one it sees (a name the request does not offer is refused, as OpenAI does).
 */
function chatTools(request: Pick<ChatRequest, 'tools' | 'tool_choice'>): NonNullable<ChatRequest['tools']> {
  const tools = request.tools ?? [];
  const choice = request.tool_choice;
  if (choice === 'none') return [];
  if (typeof choice !== 'object' || choice === null) return tools;
  if (choice.type === 'allowed_tools' && choice.allowed_tools !== undefined && choice.allowed_tools !== null) {
    const allowed = new Set(choice.allowed_tools.tools.map((tool) => tool.function?.name));
    return tools.filter((tool) => allowed.has(tool.function.name));
  }
  if (choice.type !== 'function' || choice.function === undefined || choice.function === null) return tools;
  const { name } = choice.function;
  const only = tools.filter((tool) => tool.function.name === name);
  if (only.length === 0) throw new InvalidRequest(`tool_choice.function.name: no tool named '${name}' in tools`, 'tool_choice');
  return only;
}

/** The native /api/chat body for an OpenAI chat request. */
export function toOllamaChat(request: ChatRequest): Record<string, unknown> & { messages: OllamaMessage[] } {
  const body: Record<string, unknown> & { messages: OllamaMessage[] } = {
    messages: toOllamaMessages(request.messages),
    options: ollamaOptions(request),
  };
  const tools = chatTools(request);
  if (tools.length > 0) body.tools = tools;
  const format = request.response_format;
  if (format?.type === 'json_object') body.format = 'json';
  else if (format?.type === 'json_schema' && format.json_schema?.schema !== undefined) body.format = format.json_schema.schema;
  return body;
}

/** `prefix`, `separator`, 24 hex digits; from randomUUID, whose random bytes come from a cached batch rather than a call to the system per id. */
export function newId(prefix: string, separator: '-' | '_' = '-'): string {
  return `${prefix}${separator}${randomUUID().replaceAll('-', '').slice(0, 24)}`;
}

export function finishReason(result: { toolCalls: readonly unknown[]; final: OllamaChunk }): 'tool_calls' | 'length' | 'stop' {
  if (result.toolCalls.length > 0) return 'tool_calls';
  return result.final.done_reason === 'length' ? 'length' : 'stop';
}

/**
 * OpenAI's usage for `results`, one per choice: the prompt counted once, as OpenAI counts it with
 * n > 1, and the completions of every choice. Each choice ran the prompt as a request of its own;
 * the largest count is the whole prompt, as a later choice may have found part of it in Ollama's cache.
 */
export function usageOf(results: readonly GenerationResult[]): { prompt_tokens: number; completion_tokens: number; total_tokens: number } {
  const prompt = Math.max(0, ...results.map((r) => r.final.prompt_eval_count ?? 0));
  const completion = results.reduce((sum, r) => sum + (r.final.eval_count ?? 0), 0);
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

export function sseEvent(data: unknown): string {
  return `data: ${JSON.stringify(data)}\n\n`;
}

export const SSE_DONE = 'data: [DONE]\n\n';

/** The error event that ends an OpenAI-style stream that broke after it started. */
export function sseError(message: string, code: string): string {
  return sseEvent(errorBody('openai', new BridgeError(502, message, { code })));
}

function openAiToolCalls(calls: readonly OllamaToolCall[], firstIndex: number): Array<Record<string, unknown>> {
  return calls.map((call, i) => ({
    index: firstIndex + i,
    // OpenAI's tool-call ids read call_…, where its completion ids read chatcmpl-….
    id: newId('call', '_'),
    type: 'function',
    function: { name: call.function.name, arguments: JSON.stringify(call.function.arguments ?? {}) },
  }));
}

/**
 * Ollama's chat lines as OpenAI chat.completion.chunk events: the role in the first delta,
 * content and reasoning deltas, each tool call once with its whole arguments, a finish chunk per
 * choice, the usage chunk when asked for, then [DONE].
 */
export function openAiChatFormat(requestedModel: string, includeUsage: boolean, parallelToolCalls = true): ResponseFormat {
  const id = newId('chatcmpl');
  const created = Math.floor(Date.now() / 1000);
  const roleSent = new Set<number>();
  const toolCount = new Map<number, number>();
  const chunk = (choices: unknown[], extra: Record<string, unknown> = {}): string =>
    sseEvent({ id, object: 'chat.completion.chunk', created, model: requestedModel, system_fingerprint: 'fp_copilot_bridge', choices, ...extra });
  // The event of nearly every token, a piece of content and nothing else, from a template: the
  // same bytes as chunk() writes, without building its objects for each token.
  const contentHead = `data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created, model: requestedModel, system_fingerprint: 'fp_copilot_bridge' }).slice(0, -1)},"choices":[{"index":`;

  return {
    streamContentType: 'text/event-stream; charset=utf-8',
    chunk(event, index) {
      const message = event.message;
      if (event.done !== true && message !== undefined && message.content !== '' && !message.thinking && !message.tool_calls?.length && roleSent.has(index)) {
        return `${contentHead}${index},"delta":{"content":${JSON.stringify(message.content)}},"logprobs":null,"finish_reason":null}]}\n\n`;
      }
      let out = '';
      const delta: Record<string, unknown> = {};
      if (!roleSent.has(index)) {
        delta.role = 'assistant';
        roleSent.add(index);
      }
      const content = event.message?.content ?? '';
      const sent = toolCount.get(index) ?? 0;
      // parallel_tool_calls: false allows one call a turn; a local model may emit more, which are left out.
      const calls = parallelToolCalls ? (event.message?.tool_calls ?? []) : (event.message?.tool_calls ?? []).slice(0, Math.max(0, 1 - sent));
      // OpenAI opens a text answer with content "", one that starts with tool calls with null.
      if (content !== '') delta.content = content;
      else if (delta.role !== undefined) delta.content = calls.length > 0 ? null : '';
      if (event.message?.thinking) {
        // Clients read one or the other: DeepSeek's name, and the one Ollama's own OpenAI API uses.
        delta.reasoning_content = event.message.thinking;
        delta.reasoning = event.message.thinking;
      }
      if (calls.length > 0) {
        delta.tool_calls = openAiToolCalls(calls, sent);
        toolCount.set(index, sent + calls.length);
      }
      if (Object.keys(delta).length > 0) out += chunk([{ index, delta, logprobs: null, finish_reason: null }]);
      if (event.done === true) {
        const reason = (toolCount.get(index) ?? 0) > 0 ? 'tool_calls' : event.done_reason === 'length' ? 'length' : 'stop';
        out += chunk([{ index, delta: {}, logprobs: null, finish_reason: reason }]);
      }
      return out;
    },
    end: (results) => (includeUsage ? chunk([], { usage: usageOf(results) }) : '') + SSE_DONE,
    error: sseError,
    whole: (results) => ({
      id,
      object: 'chat.completion',
      created,
      model: requestedModel,
      system_fingerprint: 'fp_copilot_bridge',
      choices: results.map((result, index) => ({
        index,
        message: {
          role: 'assistant',
          // OpenAI's content of an answer that is only tool calls.
          content: result.content === '' && result.toolCalls.length > 0 ? null : result.content,
          // Required in OpenAI's message; a local model never refuses in a field of its own.
          refusal: null,
          ...(result.thinking === '' ? {} : { reasoning_content: result.thinking, reasoning: result.thinking }),
          ...(result.toolCalls.length === 0
            ? {}
            : { tool_calls: openAiToolCalls(parallelToolCalls ? result.toolCalls : result.toolCalls.slice(0, 1), 0).map(({ index: _i, ...call }) => call) }),
        },
        logprobs: null,
        finish_reason: finishReason(result),
      })),
      usage: usageOf(results),
    }),
  };
}
