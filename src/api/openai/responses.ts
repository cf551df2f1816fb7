import { z } from 'zod';
import { isJsonObject } from '../../contract/index.js';
import type { OllamaChunk, OllamaMessage, OllamaToolCall } from '../../upstream/ollama-api.js';
import type { GenerationResult, ResponseFormat } from '../generation.js';
import { thinkFromEffort, type Think } from '../thinking.js';
import { argumentsJson, BASE64_DATA_URL, InvalidRequest, newId, samplingFields, topLogprobs } from './chat.js';

/**
 * OpenAI's Responses API as Codex and the openai SDK send it. The bridge keeps no responses:
 * every request carries its whole conversation (`store: false`, as Codex sends it).
 */
const part = z.looseObject({
  type: z.string(),
  text: z.string().optional(),
  refusal: z.string().optional(),
  image_url: z.string().nullish(),
});

const item = z.looseObject({
  type: z.string().optional(),
  role: z.string().optional(),
  content: z.union([z.string(), z.array(part)]).nullish(),
  call_id: z.string().optional(),
  name: z.string().optional(),
  arguments: z.string().optional(),
  // Read only for a function_call_output (functionOutput); hosted tool items carry null or objects here, and are passed over.
  output: z.unknown().optional(),
  summary: z.array(z.looseObject({ text: z.string().optional() })).optional(),
});

/** A function_call_output's output: text, or content parts. */
const functionOutput = z.union([z.string(), z.array(part)]).optional();

const tool = z.looseObject({
  type: z.string(),
  name: z.string().optional(),
  description: z.string().nullish(),
  parameters: z.unknown().optional(),
  strict: z.boolean().nullish(),
});

const textFormat = z.looseObject({ type: z.string(), name: z.string().optional(), schema: z.unknown().optional(), strict: z.boolean().nullish() });

export const responsesRequestSchema = z.looseObject({
  model: z.string({ error: 'you must provide a model parameter' }).min(1, 'you must provide a model parameter'),
  input: z.union([z.string(), z.array(item)], { error: 'input must be a string or an array of input items' }),
  instructions: z.string().nullish(),
  tools: z.array(tool).nullish(),
  tool_choice: z
    .union([
      z.string(),
      z.looseObject({ type: z.string(), name: z.string().optional(), tools: z.array(z.looseObject({ name: z.string().optional() })).optional() }),
    ])
    .nullish(),
  parallel_tool_calls: z.boolean().nullish(),
  reasoning: z.looseObject({ effort: z.string().nullish(), summary: z.string().nullish() }).nullish(),
  max_output_tokens: z.number().int().positive().nullish(),
  temperature: samplingFields.temperature,
  top_p: samplingFields.top_p,
  top_logprobs: topLogprobs,
  text: z.looseObject({ format: textFormat.nullish() }).nullish(),
  stream: z.boolean().nullish(),
  store: z.boolean().nullish(),
  previous_response_id: z.string().nullish(),
  metadata: z.record(z.string(), z.unknown()).nullish(),
});

export type ResponsesRequest = z.output<typeof responsesRequestSchema>;
type Part = z.output<typeof part>;

/** Why a request cannot be served when the bridge keeps no responses; undefined when it can. */
export function statelessProblem(request: ResponsesRequest): { message: string; param: string } | undefined {
  if (request.previous_response_id !== undefined && request.previous_response_id !== null) {
    return {
      message: 'previous_response_id is not supported: copilot-bridge keeps no responses; send the whole conversation in input (with store: false)',
      param: 'previous_response_id',
    };
  }
  if (request.store === true) {
    return {
      message: 'store: true is not supported: copilot-bridge keeps no responses; send store: false and the whole conversation in input',
      param: 'store',
    };
  }
  return undefined;
}

function partsText(parts: string | readonly Part[] | null | undefined, param: string): { text: string; images: string[] } {
  if (parts === undefined || parts === null) return { text: '', images: [] };
  if (typeof parts === 'string') return { text: parts, images: [] };
  const texts: string[] = [];
  const images: string[] = [];
  parts.forEach((p, i) => {
    if (p.type === 'input_text' || p.type === 'output_text' || p.type === 'text' || p.type === 'summary_text') texts.push(p.text ?? '');
    else if (p.type === 'refusal') texts.push(p.refusal ?? '');
    else if (p.type === 'input_image') {
      const match = BASE64_DATA_URL.exec(p.image_url ?? '');
      if (match === null) throw new InvalidRequest(`${param}.${i}.image_url: only data: URLs with base64 images are supported`, param);
      images.push(match[1] as string);
    } else if (p.type === 'input_file') throw new InvalidRequest(`${param}.${i}: input_file is not supported`, param);
  });
  return { text: texts.join('\n'), images };
}

function parseArguments(text: string | undefined, param: string): Record<string, unknown> {
  if (text === undefined || text.trim() === '') return {};
  const value = argumentsJson(text, param);
  if (isJsonObject(value)) return value;
  throw new InvalidRequest(`${param}: function call arguments must be a JSON object`, param);
}

/** Instructions and input items as Ollama messages; reasoning passed back becomes the next assistant turn's thinking. */
export function toOllamaMessages(request: Pick<ResponsesRequest, 'instructions' | 'input'>): OllamaMessage[] {
  const out: OllamaMessage[] = [];
  if (request.instructions) out.push({ role: 'system', content: request.instructions });
  if (typeof request.input === 'string') {
    out.push({ role: 'user', content: request.input });
    return out;
  }
  const toolNames = new Map<string, string>();
  let thinking: string[] = [];
  /** The assistant turn that function calls and reasoning attach to: the last message, when it is one. */
  const assistant = (): OllamaMessage => {
    const last = out.at(-1);
    if (last?.role === 'assistant') return last;
    const created: OllamaMessage = { role: 'assistant', content: '' };
    out.push(created);
    return created;
  };
  const takeThinking = (message: OllamaMessage): void => {
    if (thinking.length === 0) return;
    message.thinking = [message.thinking, ...thinking].filter(Boolean).join('\n');
    thinking = [];
  };
  request.input.forEach((entry, i) => {
    const param = `input.${i}`;
    const type = entry.type ?? (entry.role !== undefined ? 'message' : undefined);
    switch (type) {
      case 'message': {
        const role = entry.role === 'developer' || entry.role === 'system' ? 'system' : entry.role === 'assistant' ? 'assistant' : 'user';
        const { text, images } = partsText(entry.content, `${param}.content`);
        const message: OllamaMessage = { role, content: text };
        if (images.length > 0) message.images = images;
        if (role === 'assistant') takeThinking(message);
        out.push(message);
        break;
      }
      case 'function_call': {
        if (entry.name === undefined) throw new InvalidRequest(`${param}.name: required for a function_call`, `${param}.name`);
        const call: OllamaToolCall = {
          ...(entry.call_id === undefined ? {} : { id: entry.call_id }),
          function: { name: entry.name, arguments: parseArguments(entry.arguments, `${param}.arguments`) },
        };
        if (entry.call_id !== undefined) toolNames.set(entry.call_id, entry.name);
        const turn = assistant();
        takeThinking(turn);
        turn.tool_calls = [...(turn.tool_calls ?? []), call];
        break;
      }
      case 'function_call_output': {
        const output = functionOutput.safeParse(entry.output);
        if (!output.success) throw new InvalidRequest(`${param}.output: must be a string or an array of content parts`, `${param}.output`);
        const { text, images } = partsText(output.data, `${param}.output`);
        const message: OllamaMessage = { role: 'tool', content: text };
        const name = entry.call_id === undefined ? undefined : toolNames.get(entry.call_id);
        if (name !== undefined) message.tool_name = name;
        if (entry.call_id !== undefined) message.tool_call_id = entry.call_id;
        if (images.length > 0) message.images = images;
        out.push(message);
        break;
      }
      case 'reasoning': {
        const text = [...(entry.summary ?? []).map((s) => s.text ?? ''), partsText(entry.content, `${param}.content`).text].filter(Boolean).join('\n');
        if (text !== '') thinking.push(text);
        break;
      }
      default:
        // item_reference, hosted tool calls and their outputs: nothing a local model can read.
        break;
    }
  });
  return out;
}

/**
 * Function tools for Ollama; other tool types (web_search, namespace, hosted tools) are left out with a note.
 * Throws InvalidRequest for a tool_choice naming a function the request does not offer, which OpenAI refuses.
 */
export function responsesTools(request: Pick<ResponsesRequest, 'tools' | 'tool_choice'>): { tools: Array<Record<string, unknown>>; notes: string[] } {
  const all = request.tools ?? [];
  const choice = request.tool_choice;
  if (choice === 'none') return { tools: [], notes: all.length > 0 ? ['tool_choice none: no tools sent'] : [] };
  const only = typeof choice === 'object' && choice !== null && choice.type === 'function' ? choice.name : undefined;
  if (only !== undefined && !all.some((t) => t.type === 'function' && t.name === only)) {
    throw new InvalidRequest(`tool_choice.name: no tool named '${only}' in tools`, 'tool_choice.name');
  }
  // allowed_tools: the model may use only these of the tools listed.
  const allowed =
    typeof choice === 'object' && choice !== null && choice.type === 'allowed_tools' && choice.tools !== undefined
      ? new Set(choice.tools.map((t) => t.name))
      : undefined;
  const dropped: string[] = [];
  const tools: Array<Record<string, unknown>> = [];
  for (const t of all) {
    if (t.type !== 'function' || t.name === undefined) dropped.push(t.name === undefined ? t.type : `${t.type} ${t.name}`);
    else if ((only === undefined || only === t.name) && (allowed === undefined || allowed.has(t.name))) {
      tools.push({
        type: 'function',
        function: { name: t.name, description: t.description ?? '', parameters: t.parameters ?? { type: 'object', properties: {} } },
      });
    }
  }
  return { tools, notes: dropped.length > 0 ? [`dropped tools: ${dropped.join(', ')}`] : [] };
}

export function responsesThink(request: Pick<ResponsesRequest, 'reasoning'>): Think | undefined {
  return thinkFromEffort(request.reasoning?.effort);
}

/** A Responses request as the native /api/chat body (without think, which depends on the routed model), and notes for the route reason. */
export function toOllamaChat(request: ResponsesRequest): { body: Record<string, unknown> & { messages: OllamaMessage[] }; notes: string[] } {
  const { tools, notes } = responsesTools(request);
  const options: Record<string, unknown> = { num_predict: request.max_output_tokens, temperature: request.temperature, top_p: request.top_p };
  const messages = toOllamaMessages(request);
  // Items passed over (reasoning alone, item references, types the bridge does not know) can leave nothing to answer.
  if (!messages.some((message) => message.role !== 'system')) throw new InvalidRequest('input: there is no message to answer in it', 'input');
  const body: Record<string, unknown> & { messages: OllamaMessage[] } = {
    messages,
    options: Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined && value !== null)),
  };
  if (tools.length > 0) body.tools = tools;
  const format = request.text?.format;
  if (format?.type === 'json_schema' && format.schema !== undefined) body.format = format.schema;
  else if (format?.type === 'json_object') body.format = 'json';
  return { body, notes };
}

type OutputItem = Record<string, unknown> & { id: string; type: 'reasoning' | 'message' | 'function_call' };

function usageOf(result: GenerationResult | undefined): Record<string, unknown> {
  const input = result?.final.prompt_eval_count ?? 0;
  const output = result?.final.eval_count ?? 0;
  return {
    input_tokens: input,
    input_tokens_details: { cached_tokens: 0 },
    output_tokens: output,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: input + output,
  };
}

function itemId(prefix: string): string {
  return newId(prefix, '_');
}

/**
 * Ollama's chat lines as Responses events: response.created and .in_progress, then output items
 * (a reasoning item with a summary for thinking, a message with one output_text part, a
 * function_call per tool call) each added, filled and done, then response.completed (or
 * response.incomplete when the token limit cut it). A broken stream ends with response.failed.
 */
export function responsesFormat(request: ResponsesRequest): ResponseFormat {
  const id = itemId('resp');
  const createdAt = Math.floor(Date.now() / 1000);
  const parallel = request.parallel_tool_calls !== false;
  const base = {
    id,
    object: 'response',
    created_at: createdAt,
    error: null,
    incomplete_details: null,
    instructions: request.instructions ?? null,
    max_output_tokens: request.max_output_tokens ?? null,
    model: request.model,
    parallel_tool_calls: parallel,
    previous_response_id: null,
    reasoning: { effort: request.reasoning?.effort ?? null, summary: request.reasoning?.summary ?? null },
    store: false,
    temperature: request.temperature ?? null,
    text: { format: request.text?.format ?? { type: 'text' } },
    tool_choice: request.tool_choice ?? 'auto',
    tools: request.tools ?? [],
    top_p: request.top_p ?? null,
    truncation: 'disabled',
    metadata: request.metadata ?? {},
  };
  const items: OutputItem[] = [];
  let open: { item: OutputItem; text: string } | null = null;
  let sequence = 0;
  let started = false;

  const event = (type: string, data: Record<string, unknown>): string =>
    `event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: sequence++, ...data })}\n\n`;
  const snapshot = (status: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
    ...base,
    status,
    output: items,
    usage: null,
    ...extra,
  });
  const start = (): string => {
    if (started) return '';
    started = true;
    return event('response.created', { response: snapshot('in_progress') }) + event('response.in_progress', { response: snapshot('in_progress') });
  };
  const close = (): string => {
    if (open === null) return '';
    const { item, text } = open;
    const outputIndex = items.indexOf(item);
    open = null;
    if (item.type === 'reasoning') {
      const summaryPart = { type: 'summary_text', text };
      item.summary = [summaryPart];
      return (
        event('response.reasoning_summary_text.done', { item_id: item.id, output_index: outputIndex, summary_index: 0, text }) +
        event('response.reasoning_summary_part.done', { item_id: item.id, output_index: outputIndex, summary_index: 0, part: summaryPart }) +
        event('response.output_item.done', { output_index: outputIndex, item })
      );
    }
    const textPart = { type: 'output_text', text, annotations: [], logprobs: [] };
    item.content = [textPart];
    item.status = 'completed';
    return (
      event('response.output_text.done', { item_id: item.id, output_index: outputIndex, content_index: 0, text, logprobs: [] }) +
      event('response.content_part.done', { item_id: item.id, output_index: outputIndex, content_index: 0, part: textPart }) +
      event('response.output_item.done', { output_index: outputIndex, item })
    );
  };
  /** Adds text to the open item of `type` (closing another and opening this one first), as that item's delta event. */
  const append = (type: 'reasoning' | 'message', delta: string): string => {
    let out = '';
    if (open?.item.type !== type) {
      out += close();
      const item: OutputItem =
        type === 'reasoning' ? { id: itemId('rs'), type, summary: [] } : { id: itemId('msg'), type, status: 'in_progress', role: 'assistant', content: [] };
      const outputIndex = items.push(item) - 1;
      open = { item, text: '' };
      out += event('response.output_item.added', { output_index: outputIndex, item: { ...item } });
      out +=
        type === 'reasoning'
          ? event('response.reasoning_summary_part.added', {
              item_id: item.id,
              output_index: outputIndex,
              summary_index: 0,
              part: { type: 'summary_text', text: '' },
            })
          : event('response.content_part.added', {
              item_id: item.id,
              output_index: outputIndex,
              content_index: 0,
              part: { type: 'output_text', text: '', annotations: [], logprobs: [] },
            });
    }
    const current: { item: OutputItem; text: string } = open;
    current.text += delta;
    const where = { item_id: current.item.id, output_index: items.indexOf(current.item) };
    return (
      out +
      (type === 'reasoning'
        ? event('response.reasoning_summary_text.delta', { ...where, summary_index: 0, delta })
        : event('response.output_text.delta', { ...where, content_index: 0, delta, logprobs: [] }))
    );
  };
  const calls = (): number => items.filter((i) => i.type === 'function_call').length;
  const functionCall = (call: OllamaToolCall): OutputItem => ({
    id: itemId('fc'),
    type: 'function_call',
    status: 'completed',
    call_id: itemId('call'),
    name: call.function.name,
    arguments: JSON.stringify(call.function.arguments ?? {}),
  });
  const finalStatus = (result: GenerationResult | undefined): { status: string; incomplete_details: { reason: string } | null } =>
    result?.final.done_reason === 'length' && result.toolCalls.length === 0
      ? { status: 'incomplete', incomplete_details: { reason: 'max_output_tokens' } }
      : { status: 'completed', incomplete_details: null };

  return {
    streamContentType: 'text/event-stream; charset=utf-8',
    heartbeat: ': keep-alive\n\n',
    chunk(line: OllamaChunk) {
      let out = start();
      const thinking = line.message?.thinking ?? line.thinking ?? '';
      if (thinking !== '') out += append('reasoning', thinking);
      const text = line.message?.content ?? line.response ?? '';
      if (text !== '') out += append('message', text);
      for (const call of line.message?.tool_calls ?? []) {
        if (!parallel && calls() > 0) break;
        out += close();
        const done = functionCall(call);
        const outputIndex = items.push(done) - 1;
        out += event('response.output_item.added', { output_index: outputIndex, item: { ...done, status: 'in_progress', arguments: '' } });
        out += event('response.function_call_arguments.delta', { item_id: done.id, output_index: outputIndex, delta: done.arguments });
        out += event('response.function_call_arguments.done', { item_id: done.id, output_index: outputIndex, name: done.name, arguments: done.arguments });
        out += event('response.output_item.done', { output_index: outputIndex, item: done });
      }
      return out;
    },
    end(results) {
      const [result] = results as [GenerationResult];
      const out = start() + close();
      const { status, incomplete_details } = finalStatus(result);
      const response = snapshot(status, { incomplete_details, usage: usageOf(result) });
      return out + event(status === 'completed' ? 'response.completed' : 'response.incomplete', { response });
    },
    // Whatever breaks a started answer (an upstream that broke off or went silent, a stopping bridge)
    // is the server's fault: server_error is the code of OpenAI's ResponseError enum that says so;
    // the others name a client over its rate limit, a bad prompt or image, or a vector store.
    error: (message) => event('response.failed', { response: snapshot('failed', { error: { code: 'server_error', message } }) }),
    whole(results) {
      const [result] = results as [GenerationResult];
      const output: OutputItem[] = [];
      if (result.thinking !== '') output.push({ id: itemId('rs'), type: 'reasoning', summary: [{ type: 'summary_text', text: result.thinking }] });
      if (result.content !== '' || result.toolCalls.length === 0) {
        output.push({
          id: itemId('msg'),
          type: 'message',
          status: 'completed',
          role: 'assistant',
          content: [{ type: 'output_text', text: result.content, annotations: [], logprobs: [] }],
        });
      }
      for (const call of parallel ? result.toolCalls : result.toolCalls.slice(0, 1)) output.push(functionCall(call));
      const { status, incomplete_details } = finalStatus(result);
      return { ...base, status, incomplete_details, output, usage: usageOf(result) };
    },
  };
}
