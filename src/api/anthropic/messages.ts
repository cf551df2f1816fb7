import { z } from 'zod';
import type { OllamaChunk, OllamaMessage, OllamaToolCall } from '../../upstream/ollama-api.js';
import { BridgeError, isJsonObject } from '../../contract/index.js';
import { errorBody } from '../errors.js';
import type { GenerationResult, ResponseFormat } from '../generation.js';
import { InvalidRequest, newId } from '../openai/chat.js';
import { thinkFromEffort, type Think } from '../thinking.js';

/**
 * Anthropic's Messages API as Claude Code and the Anthropic SDKs send it. Objects are loose:
 * fields the bridge does not use (cache_control, citations, context_management, metadata, ...)
 * are accepted and ignored, as are content blocks of types it does not know.
 */
/** An image's or a document's source; read where the block is used, as a search_result's `source` is a plain string (its URL). */
const sourceSchema = z.looseObject({
  type: z.string(),
  media_type: z.string().optional(),
  data: z.string().optional(),
  url: z.string().optional(),
  content: z.unknown().optional(),
});

const innerBlock = z.looseObject({
  type: z.string(),
  text: z.string().optional(),
  title: z.string().optional(),
  source: z.unknown().optional(),
  content: z.unknown().optional(),
});

const block = z.looseObject({
  type: z.string(),
  text: z.string().optional(),
  title: z.string().optional(),
  source: z.unknown().optional(),
  id: z.string().optional(),
  name: z.string().optional(),
  input: z.unknown().optional(),
  tool_use_id: z.string().optional(),
  // Read only for a tool_result and a search_result (blocksContent); server tool results carry objects here, and are passed over.
  content: z.unknown().optional(),
  is_error: z.boolean().optional(),
  thinking: z.string().optional(),
});

/** The content of a tool_result or of a content document: text, or blocks (text, image, document, search_result). */
const blocksContent = z.union([z.string(), z.array(innerBlock)]).optional();

const messageSchema = z.looseObject({
  role: z.enum(['user', 'assistant', 'system']),
  content: z.union([z.string(), z.array(block)]),
});

const jsonSchemaFormat = z.looseObject({ type: z.string(), schema: z.unknown().optional() });

const toolSchema = z.looseObject({
  name: z.string().min(1),
  type: z.string().optional(),
  description: z.string().optional(),
  input_schema: z.unknown().optional(),
  defer_loading: z.boolean().optional(),
});

/** Anthropic's floor for a thinking budget; it refuses a smaller one with 400. */
const MIN_THINKING_BUDGET = 1024;

const thinkingSchema = z
  .looseObject({
    type: z.string(),
    budget_tokens: z.number().int('must be a whole number').min(MIN_THINKING_BUDGET, `must be at least ${MIN_THINKING_BUDGET}`).optional(),
    display: z.string().optional(),
  })
  .refine((thinking) => thinking.type !== 'enabled' || thinking.budget_tokens !== undefined, {
    path: ['budget_tokens'],
    message: 'required when thinking is enabled',
  });

/** Messages name no field: the error names it in front ("model: Field required", as Anthropic words it). */
const countTokensFields = {
  model: z.string({ error: 'Field required' }).min(1, 'Field required'),
  messages: z.array(messageSchema).min(1, 'at least one message is required'),
  system: z.union([z.string(), z.array(innerBlock)]).optional(),
  tools: z.array(toolSchema).optional(),
};

export const countTokensSchema = z.looseObject(countTokensFields);

export const messagesRequestSchema = z.looseObject({
  ...countTokensFields,
  max_tokens: z.number().int().positive().optional(),
  stream: z.boolean().optional(),
  // Anthropic's ranges, bounds included; it answers 400 outside them (OpenAI's temperature runs to 2).
  temperature: z.number().min(0, 'must be between 0 and 1').max(1, 'must be between 0 and 1').optional(),
  top_p: z.number().min(0, 'must be between 0 and 1').max(1, 'must be between 0 and 1').optional(),
  top_k: z.number().int().optional(),
  stop_sequences: z.array(z.string()).optional(),
  tool_choice: z.looseObject({ type: z.string(), name: z.string().optional(), disable_parallel_tool_use: z.boolean().optional() }).optional(),
  thinking: thinkingSchema.optional(),
  output_config: z.looseObject({ effort: z.string().optional(), format: jsonSchemaFormat.optional() }).optional(),
  output_format: jsonSchemaFormat.optional(),
});

export type MessagesRequest = z.output<typeof messagesRequestSchema>;
type CountTokensRequest = z.output<typeof countTokensSchema>;
type Block = z.output<typeof block>;
type InnerBlock = z.output<typeof innerBlock>;

function imageData(source: unknown, param: string): string {
  const parsed = sourceSchema.safeParse(source);
  if (parsed.success && parsed.data.type === 'base64' && parsed.data.data !== undefined) return parsed.data.data;
  throw new InvalidRequest(`${param}: only base64 image sources are supported`, param);
}

interface TextAndImages {
  text: string;
  images: string[];
}

/** A document's text (a text source) or text and images (a content source); undefined for a PDF, a URL or a file, which a local model cannot read. */
function documentContent(source: unknown, param: string): TextAndImages | undefined {
  const parsed = sourceSchema.safeParse(source);
  if (!parsed.success) return undefined;
  if (parsed.data.type === 'text' && parsed.data.data !== undefined) return { text: parsed.data.data, images: [] };
  if (parsed.data.type !== 'content') return undefined;
  const content = blocksContent.safeParse(parsed.data.content);
  return content.success ? textAndImages(content.data, `${param}.source.content`) : undefined;
}

/**
 * What the model reads in place of a document in a tool's result that it cannot read (a tool that
 * read a PDF): refusing it would refuse every later turn of the agent's conversation, which repeats it.
 */
function unreadableDocument(source: unknown): string {
  const parsed = sourceSchema.safeParse(source);
  const kind = parsed.success ? (parsed.data.media_type ?? parsed.data.type) : 'unknown';
  return `[a document (${kind}) was left out: this model cannot read it]`;
}

/** A search result as the model reads it: its title, its source (a URL) and its text. */
function searchResultText(part: InnerBlock, param: string): string {
  const content = blocksContent.safeParse(part.content);
  if (!content.success) throw new InvalidRequest(`${param}.content: must be an array of text blocks`, `${param}.content`);
  const source = typeof part.source === 'string' ? part.source : undefined;
  return [part.title, source, textAndImages(content.data, `${param}.content`).text].filter((line) => line !== undefined && line !== '').join('\n');
}

/** Text and images of a system prompt, a tool result or a content document: their text, image, document and search_result blocks. */
function textAndImages(content: string | readonly InnerBlock[] | undefined, param: string): TextAndImages {
  if (content === undefined) return { text: '', images: [] };
  if (typeof content === 'string') return { text: content, images: [] };
  const texts: string[] = [];
  const images: string[] = [];
  content.forEach((part, i) => {
    const at = `${param}.${i}`;
    if (part.type === 'text' && part.text !== undefined) texts.push(part.text);
    else if (part.type === 'image') images.push(imageData(part.source, `${at}.source`));
    else if (part.type === 'search_result') texts.push(searchResultText(part, at));
    else if (part.type === 'document') {
      const document = documentContent(part.source, at) ?? { text: unreadableDocument(part.source), images: [] };
      texts.push(document.text);
      images.push(...document.images);
    }
  });
  return { text: texts.join('\n'), images };
}

/** Whether anthropic-beta asks for interleaved thinking, whose budget covers every thinking block of the turn and so may exceed max_tokens. */
function interleavedThinking(betas: string | string[] | undefined): boolean {
  return [betas ?? []].flat().some((header) => header.split(',').some((beta) => beta.trim().startsWith('interleaved-thinking-')));
}

/**
 * The rules across fields that Anthropic answers with 400: a thinking budget below max_tokens, and a
 * tool_choice of type tool that names a tool of the request. Throws InvalidRequest.
 */
export function checkAcrossFields(request: MessagesRequest, betas: string | string[] | undefined): void {
  const budget = request.thinking?.type === 'enabled' ? request.thinking.budget_tokens : undefined;
  if (budget !== undefined && request.max_tokens !== undefined && budget >= request.max_tokens && !interleavedThinking(betas)) {
    throw new InvalidRequest(`thinking.budget_tokens: must be less than max_tokens (${request.max_tokens})`, 'thinking.budget_tokens');
  }
  const choice = request.tool_choice;
  if (choice?.type !== 'tool') return;
  if (choice.name === undefined) throw new InvalidRequest('tool_choice.name: required when tool_choice.type is tool', 'tool_choice.name');
  if (!(request.tools ?? []).some((tool) => tool.name === choice.name)) {
    throw new InvalidRequest(`tool_choice.name: no tool named '${choice.name}' in tools`, 'tool_choice.name');
  }
}

/** The tools Ollama gets, and a note for each one left out. */
export function anthropicTools(request: Pick<MessagesRequest, 'tools' | 'tool_choice'>): { tools: Array<Record<string, unknown>>; notes: string[] } {
  const notes: string[] = [];
  if (request.tool_choice?.type === 'none') return { tools: [], notes: (request.tools?.length ?? 0) > 0 ? ['tool_choice none: no tools sent'] : [] };
  const deferred: string[] = [];
  const server: string[] = [];
  const tools: Array<Record<string, unknown>> = [];
  for (const tool of request.tools ?? []) {
    // Server tools (web_search_20250305, bash_20250124, ...) run at Anthropic; a local model cannot use them.
    if (tool.input_schema === undefined || (tool.type !== undefined && tool.type !== 'custom')) server.push(tool.name);
    // Deferred tools are loaded into context only after a tool search, which no local model performs.
    else if (tool.defer_loading === true) deferred.push(tool.name);
    else if (request.tool_choice?.type !== 'tool' || request.tool_choice.name === tool.name) {
      tools.push({ type: 'function', function: { name: tool.name, description: tool.description ?? '', parameters: tool.input_schema } });
    }
  }
  if (deferred.length > 0) notes.push(`dropped deferred tools: ${deferred.join(', ')}`);
  if (server.length > 0) notes.push(`dropped server tools: ${server.join(', ')}`);
  return { tools, notes };
}

/** The system prompt and the conversation in Ollama's message form. */
export function toOllamaMessages(request: Pick<CountTokensRequest, 'system' | 'messages'>): OllamaMessage[] {
  const out: OllamaMessage[] = [];
  if (request.system !== undefined) {
    const system = textAndImages(request.system, 'system');
    if (system.text !== '') out.push({ role: 'system', content: system.text });
  }
  const toolNames = new Map<string, string>();
  request.messages.forEach((message, i) => {
    if (typeof message.content === 'string') {
      out.push({ role: message.role, content: message.content });
      return;
    }
    const texts: string[] = [];
    const images: string[] = [];
    const thinking: string[] = [];
    const toolCalls: OllamaToolCall[] = [];
    message.content.forEach((part: Block, j) => {
      const param = `messages.${i}.content.${j}`;
      switch (part.type) {
        case 'text':
          texts.push(part.text ?? '');
          break;
        case 'image':
          images.push(imageData(part.source, `${param}.source`));
          break;
        case 'document': {
          const document = documentContent(part.source, param);
          if (document === undefined) throw new InvalidRequest(`${param}: only plain-text and content documents are supported`, param);
          texts.push(document.text);
          images.push(...document.images);
          break;
        }
        case 'search_result':
          texts.push(searchResultText(part, param));
          break;
        case 'thinking':
          if (part.thinking !== undefined && part.thinking !== '') thinking.push(part.thinking);
          break;
        case 'tool_use': {
          const input = part.input ?? {};
          if (!isJsonObject(input)) throw new InvalidRequest(`${param}.input: must be an object`, param);
          if (part.id !== undefined && part.name !== undefined) toolNames.set(part.id, part.name);
          toolCalls.push({ ...(part.id === undefined ? {} : { id: part.id }), function: { name: part.name ?? '', arguments: input } });
          break;
        }
        case 'tool_result': {
          const content = blocksContent.safeParse(part.content);
          if (!content.success) throw new InvalidRequest(`${param}.content: must be a string or an array of content blocks`, `${param}.content`);
          const result = textAndImages(content.data, `${param}.content`);
          const tool: OllamaMessage = { role: 'tool', content: part.is_error === true ? `Error: ${result.text}` : result.text };
          const name = part.tool_use_id === undefined ? undefined : toolNames.get(part.tool_use_id);
          if (name !== undefined) tool.tool_name = name;
          if (part.tool_use_id !== undefined) tool.tool_call_id = part.tool_use_id;
          if (result.images.length > 0) tool.images = result.images;
          out.push(tool);
          break;
        }
        default:
          // redacted_thinking, server tool blocks, search results: nothing a local model can read.
          break;
      }
    });
    if (texts.length === 0 && images.length === 0 && toolCalls.length === 0 && thinking.length === 0) return;
    const converted: OllamaMessage = { role: message.role, content: texts.join('\n') };
    if (images.length > 0) converted.images = images;
    if (toolCalls.length > 0) converted.tool_calls = toolCalls;
    if (thinking.length > 0 && message.role === 'assistant') converted.thinking = thinking.join('\n');
    out.push(converted);
  });
  return out;
}

/** Thinking asked for: `thinking` enabled or adaptive (the effort, when given, sets the level); disabled is off. */
export function anthropicThink(request: Pick<MessagesRequest, 'thinking' | 'output_config'>): Think | undefined {
  const type = request.thinking?.type;
  if (type === 'disabled') return false;
  if (type !== 'enabled' && type !== 'adaptive') return undefined;
  return thinkFromEffort(request.output_config?.effort) ?? true;
}

/** A Messages request as the native /api/chat body (without think, which depends on the routed model), and notes for the route reason. */
export function toOllamaChat(request: MessagesRequest): { body: Record<string, unknown> & { messages: OllamaMessage[] }; notes: string[] } {
  const { tools, notes } = anthropicTools(request);
  const options: Record<string, unknown> = {
    num_predict: request.max_tokens,
    temperature: request.temperature,
    top_p: request.top_p,
    top_k: request.top_k,
    stop: request.stop_sequences,
  };
  const messages = toOllamaMessages(request);
  // Messages that are empty, or only of blocks passed over, are left out: with none left, Ollama would read the chat as a model load.
  if (!messages.some((message) => message.role !== 'system')) {
    throw new InvalidRequest('messages: there is no message to answer in them (each is empty, or only of blocks a local model cannot read)', 'messages');
  }
  const body: Record<string, unknown> & { messages: OllamaMessage[] } = {
    messages,
    options: Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined)),
  };
  if (tools.length > 0) body.tools = tools;
  const format = request.output_config?.format ?? request.output_format;
  if (format?.type === 'json_schema' && format.schema !== undefined) body.format = format.schema;
  return { body, notes };
}

/** A rough count of input tokens (characters / 4): Ollama has no tokenizer endpoint for a model it has not loaded. */
export function estimateInputTokens(request: CountTokensRequest): number {
  const messages = toOllamaMessages(request);
  const chars = messages.reduce(
    (sum, m) => sum + m.content.length + (m.thinking?.length ?? 0) + (m.tool_calls === undefined ? 0 : JSON.stringify(m.tool_calls).length),
    0,
  );
  const { tools: sent } = anthropicTools(request);
  const tools = sent.length === 0 ? 0 : JSON.stringify(sent).length;
  return Math.max(1, Math.ceil((chars + tools) / 4));
}

type StopReason = 'end_turn' | 'max_tokens' | 'tool_use';

function stopReason(result: GenerationResult): StopReason {
  if (result.toolCalls.length > 0) return 'tool_use';
  return result.final.done_reason === 'length' ? 'max_tokens' : 'end_turn';
}

function usage(result: GenerationResult | undefined): {
  input_tokens: number;
  output_tokens: number;
  cache_creation_input_tokens: 0;
  cache_read_input_tokens: 0;
} {
  return {
    input_tokens: result?.final.prompt_eval_count ?? 0,
    output_tokens: result?.final.eval_count ?? 0,
    cache_creation_input_tokens: 0,
    cache_read_input_tokens: 0,
  };
}

/**
 * The status a stream's failure would have had before the answer started, so its error event has
 * the same type: an upstream going away or the bridge stopping is a 503, overloaded_error (worth a
 * retry; the SDK's error of a stream carries only the type, no status), a timeout a 504, the rest 502.
 */
function streamFailureStatus(code: string): 502 | 503 | 504 {
  if (code === 'upstream_timeout') return 504;
  return code === 'upstream_unavailable' || code === 'shutting_down' ? 503 : 502;
}

function sse(type: string, data: Record<string, unknown>): string {
  return `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`;
}

export interface AnthropicFormatOptions {
  /** Whether thinking text is shown (thinking.display "omitted" hides it). */
  showThinking: boolean;
  /** false when tool_choice.disable_parallel_tool_use: only the first tool call is kept. */
  parallelToolCalls: boolean;
}

/**
 * Ollama's chat lines as Anthropic's stream: message_start, then content blocks (thinking, text,
 * tool_use) each opened, filled with deltas and stopped, then message_delta with the stop reason
 * and usage, and message_stop. A broken stream ends with an error event.
 */
export function anthropicFormat(requestedModel: string, options: AnthropicFormatOptions): ResponseFormat {
  const id = newId('msg', '_');
  let started = false;
  let open: { kind: 'text' | 'thinking'; index: number } | null = null;
  let nextIndex = 0;
  let toolCalls = 0;
  const toolIds: string[] = [];

  const start = (): string => {
    if (started) return '';
    started = true;
    const message = {
      id,
      type: 'message',
      role: 'assistant',
      model: requestedModel,
      content: [],
      stop_reason: null,
      stop_sequence: null,
      usage: usage(undefined),
    };
    return sse('message_start', { message });
  };
  const close = (): string => {
    if (open === null) return '';
    const text = sse('content_block_stop', { index: open.index });
    open = null;
    return text;
  };
  const ensure = (kind: 'text' | 'thinking'): string => {
    if (open?.kind === kind) return '';
    let out = close();
    open = { kind, index: nextIndex++ };
    const contentBlock = kind === 'text' ? { type: 'text', text: '' } : { type: 'thinking', thinking: '', signature: '' };
    out += sse('content_block_start', { index: open.index, content_block: contentBlock });
    return out;
  };
  const keep = (calls: readonly OllamaToolCall[], already: number): OllamaToolCall[] =>
    options.parallelToolCalls ? [...calls] : calls.slice(0, Math.max(0, 1 - already));
  const toolId = (n: number): string => {
    while (toolIds.length <= n) toolIds.push(newId('toolu', '_'));
    return toolIds[n] as string;
  };

  return {
    streamContentType: 'text/event-stream; charset=utf-8',
    heartbeat: sse('ping', {}),
    chunk(event: OllamaChunk) {
      let out = start();
      const thinking = event.message?.thinking ?? event.thinking ?? '';
      if (thinking !== '' && options.showThinking) {
        out += ensure('thinking');
        out += sse('content_block_delta', { index: open?.index, delta: { type: 'thinking_delta', thinking } });
      }
      const text = event.message?.content ?? event.response ?? '';
      if (text !== '') {
        out += ensure('text');
        out += sse('content_block_delta', { index: open?.index, delta: { type: 'text_delta', text } });
      }
      for (const call of keep(event.message?.tool_calls ?? [], toolCalls)) {
        out += close();
        const index = nextIndex++;
        out += sse('content_block_start', { index, content_block: { type: 'tool_use', id: toolId(toolCalls++), name: call.function.name, input: {} } });
        out += sse('content_block_delta', { index, delta: { type: 'input_json_delta', partial_json: JSON.stringify(call.function.arguments ?? {}) } });
        out += sse('content_block_stop', { index });
      }
      return out;
    },
    end(results) {
      const [result] = results as [GenerationResult];
      const out = start() + close();
      const { input_tokens: inputTokens, output_tokens: outputTokens } = usage(result);
      return (
        out +
        sse('message_delta', {
          delta: { stop_reason: stopReason(result), stop_sequence: null },
          usage: { input_tokens: inputTokens, output_tokens: outputTokens },
        }) +
        sse('message_stop', {})
      );
    },
    error: (message, code) =>
      `event: error\ndata: ${JSON.stringify(errorBody('anthropic', new BridgeError(streamFailureStatus(code), message, { code })))}\n\n`,
    whole(results) {
      const [result] = results as [GenerationResult];
      const content: Array<Record<string, unknown>> = [];
      if (result.thinking !== '' && options.showThinking) content.push({ type: 'thinking', thinking: result.thinking, signature: '' });
      if (result.content !== '') content.push({ type: 'text', text: result.content });
      keep(result.toolCalls, 0).forEach((call, n) =>
        content.push({ type: 'tool_use', id: toolId(n), name: call.function.name, input: call.function.arguments ?? {} }),
      );
      return {
        id,
        type: 'message',
        role: 'assistant',
        model: requestedModel,
        content,
        stop_reason: stopReason(result),
        stop_sequence: null,
        usage: usage(result),
      };
    },
  };
}
