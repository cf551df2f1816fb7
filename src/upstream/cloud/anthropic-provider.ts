import type { Dispatcher } from 'undici';
import { errorMessageOf } from '../errors.js';
import { countOf, type OllamaChunk, type OllamaMessage } from '../ollama-api.js';
import type { GenerationRequest } from '../source.js';
import { samplingOf, toolCallIds } from './openai-provider.js';
import { checkedLines, CloudProvider, eventObject, HeldToolCalls, objectOf, StopCutter, textOf } from './provider.js';

type Block = Record<string, unknown>;

/** How each image type the Messages API takes begins in base64 (its file signature). */
const IMAGE_SIGNATURES: ReadonlyArray<[string, string]> = [
  ['/9j/', 'image/jpeg'],
  ['R0lGOD', 'image/gif'],
  ['UklGR', 'image/webp'],
];

/**
 * The media type of a base64 image, read from its first bytes: Ollama's images carry none, and the
 * Messages API refuses an image whose bytes are not of the type it is named (400). PNG otherwise.
 */
function imageMediaType(base64: string): string {
  return IMAGE_SIGNATURES.find(([start]) => base64.startsWith(start))?.[1] ?? 'image/png';
}

/** A text and its images as content blocks; a text that is empty or only whitespace is left out, as the Messages API refuses it (400). */
function textAndImageBlocks(text: string, images: readonly string[] = []): Block[] {
  return [
    ...(text.trim() === '' ? [] : [{ type: 'text', text }]),
    ...images.map((image) => ({ type: 'image', source: { type: 'base64', media_type: imageMediaType(image), data: image } })),
  ];
}

/** Ollama's conversation in the Messages API's form: system apart, tool calls and results (with their images) as blocks. */
export function toAnthropicMessages(
  messages: readonly OllamaMessage[],
  provider: string,
): {
  system: string | undefined;
  messages: Array<{ role: 'user' | 'assistant'; content: Block[] }>;
} {
  const { callIds, resultIds } = toolCallIds(messages, provider);
  const system: string[] = [];
  const out: Array<{ role: 'user' | 'assistant'; content: Block[] }> = [];
  messages.forEach((message, i) => {
    if (message.role === 'system') {
      system.push(message.content);
      return;
    }
    if (message.role === 'tool') {
      const content = message.images === undefined || message.images.length === 0 ? message.content : textAndImageBlocks(message.content, message.images);
      out.push({ role: 'user', content: [{ type: 'tool_result', tool_use_id: resultIds[i], content }] });
      return;
    }
    const blocks = textAndImageBlocks(message.content, message.images);
    (message.tool_calls ?? []).forEach((call, j) =>
      blocks.push({ type: 'tool_use', id: callIds[i]?.[j], name: call.function.name, input: call.function.arguments ?? {} }),
    );
    // A turn with nothing in it is left out: the API joins the turns of one role that then meet.
    if (blocks.length > 0) out.push({ role: message.role === 'assistant' ? 'assistant' : 'user', content: blocks });
  });
  return { system: system.length > 0 ? system.join('\n\n') : undefined, messages: out };
}

/** A completion (or fill-in-the-middle) asked of a chat-only API. */
function completionAsMessage(prompt: string, suffix: string | undefined): string {
  if (suffix === undefined || suffix === '') return prompt;
  return `Write only the code that belongs at <CURSOR>, with no explanation and no code fences.\n\n${prompt}<CURSOR>${suffix}`;
}

/** The events that carry part of an answer; ping, and event types added later, do not. */
const ANSWER_EVENTS = new Set(['message_start', 'content_block_start', 'content_block_delta', 'content_block_stop', 'message_delta', 'message_stop']);

/** Ollama's done_reason for each of Anthropic's stop reasons; any other (pause_turn, refusal, ones added later) is a stop. */
const STOP_REASONS: Record<string, string> = {
  end_turn: 'stop',
  stop_sequence: 'stop',
  tool_use: 'stop',
  max_tokens: 'length',
  // Cut where the model's context window ran full: a client must see it cut short, as at max_tokens.
  model_context_window_exceeded: 'length',
};

/**
 * Anthropic's Messages API as a generation source. Its SSE events (message_start, content_block_*,
 * message_delta, message_stop, ping, error) become Ollama lines: text and thinking deltas as they
 * come, each tool_use block as one tool call once its JSON is complete, usage and stop reason last.
 */
export class AnthropicProvider extends CloudProvider {
  /** The most output tokens the model takes, as its 400 said ("max_tokens: 32000 > 8192, which is the maximum ..."). */
  private maxTokensCap: number | undefined;

  protected override adapted(payload: Record<string, unknown>): Record<string, unknown> {
    const cap = this.maxTokensCap;
    return cap !== undefined && typeof payload.max_tokens === 'number' && payload.max_tokens > cap ? { ...payload, max_tokens: cap } : payload;
  }

  /** Claude Code asks 32000 output tokens of any model; a smaller one refuses with its own limit, which is asked for from then on. */
  protected override learn(sent: Record<string, unknown>, refusal: string): boolean {
    const limit = /max_tokens: \d+ > (\d+)/.exec(errorMessageOf(400, refusal));
    const cap = Number(limit?.[1]);
    if (!(cap > 0) || typeof sent.max_tokens !== 'number' || sent.max_tokens <= cap) return false;
    this.maxTokensCap = cap;
    return true;
  }

  async generate(request: GenerationRequest): Promise<AsyncIterable<OllamaChunk>> {
    const { body } = request;
    const sampling = samplingOf(body);
    const chat = request.path === '/api/chat';
    const conversation = chat
      ? toAnthropicMessages((body.messages ?? []) as OllamaMessage[], this.name)
      : {
          system: body.system as string | undefined,
          messages: [
            { role: 'user' as const, content: [{ type: 'text', text: completionAsMessage(String(body.prompt ?? ''), body.suffix as string | undefined) }] },
          ],
        };
    const payload: Record<string, unknown> = {
      model: this.config.model,
      max_tokens: sampling.max_tokens ?? this.config.max_tokens,
      messages: conversation.messages,
      stream: true,
    };
    if (conversation.system !== undefined) payload.system = conversation.system;
    // The Messages API refuses a temperature above 1, where OpenAI's and Ollama's go to 2: the nearest it takes.
    // Current Claude models refuse temperature and top_p together (400): top_p goes only without a temperature.
    if (sampling.temperature !== undefined) payload.temperature = Math.min(Math.max(sampling.temperature, 0), 1);
    else if (sampling.top_p !== undefined) payload.top_p = sampling.top_p;
    const stops = (sampling.stop ?? []).filter((stop) => stop !== '');
    const sentStops = stops.filter((stop) => stop.trim() !== '');
    if (sentStops.length > 0) payload.stop_sequences = sentStops;
    if (chat && Array.isArray(body.tools) && body.tools.length > 0) {
      payload.tools = (body.tools as Array<{ function: { name: string; description?: string; parameters?: unknown } }>).map((tool) => ({
        name: tool.function.name,
        description: tool.function.description ?? '',
        input_schema: tool.function.parameters ?? { type: 'object', properties: {} },
      }));
    }
    const response = await this.post(
      '/messages',
      payload,
      { 'x-api-key': this.config.api_key ?? '', 'anthropic-version': '2023-06-01' },
      request.cancel.signal,
    );
    // The Messages API refuses stop sequences that are only whitespace ("\n" is what single-line ghost text sends): those are applied here.
    return checkedLines(this.translate(response, chat, StopCutter.of(stops.filter((stop) => stop.trim() === ''))));
  }

  private async *translate(response: Dispatcher.ResponseData, chat: boolean, cutter: StopCutter | undefined): AsyncGenerator<OllamaChunk, void, undefined> {
    const model = this.config.model;
    const now = (): string => new Date().toISOString();
    const text = (content: string, thinking?: string): OllamaChunk =>
      chat
        ? { model, created_at: now(), message: { role: 'assistant', content, ...(thinking ? { thinking } : {}) }, done: false }
        : { model, created_at: now(), response: content, ...(thinking ? { thinking } : {}), done: false };
    const toolBlocks = new HeldToolCalls(this.maxLineBytes);
    /** The input a tool_use block started with, where it was not empty: used when no input_json_delta follows, as the Anthropic SDK does (gateways that send it whole). */
    const startInputs = new Map<number, Record<string, unknown>>();
    let inputTokens: number | undefined;
    let outputTokens: number | undefined;
    let stopReason = 'end_turn';
    let stopped = false;
    const progress = this.progressTimeout(response);
    // Fields of the wrong type read as absent (objectOf, textOf): a provider's mistake in one field
    // costs that field, not the answer.
    for await (const sse of progress.over(this.eventsOf(response))) {
      const event = eventObject(sse.data);
      // The message is over, as [DONE] says for OpenAI: a provider that keeps the stream open
      // after it (a proxy's keep-alives) must not hold the answer until its timeout.
      if (event.type === 'message_stop') {
        stopped = true;
        break;
      }
      const type = textOf(event.type);
      if (ANSWER_EVENTS.has(type)) progress.progressed();
      const delta = objectOf(event.delta);
      const block = objectOf(event.content_block);
      const index = typeof event.index === 'number' ? event.index : 0;
      const newText = type === 'content_block_start' ? textOf(block.text) : delta.type === 'text_delta' ? textOf(delta.text) : '';
      if (newText) {
        const sendable = cutter === undefined ? newText : cutter.push(newText);
        if (sendable !== '') yield text(sendable);
        if (cutter?.stopped === true) {
          // Ends the answer as a stop of Anthropic's own would; the rest of the stream is left unread.
          stopped = true;
          break;
        }
        continue;
      }
      switch (type) {
        case 'message_start':
          // Its output_tokens is a placeholder: the count comes with message_delta, and stays
          // unknown when the bridge ends the answer at a stop of its own before that.
          inputTokens = countOf(objectOf(objectOf(event.message).usage).input_tokens);
          break;
        case 'content_block_start':
          if (block.type === 'tool_use') {
            toolBlocks.add(index, textOf(block.name), '');
            const input = objectOf(block.input);
            if (Object.keys(input).length > 0) startInputs.set(index, input);
          }
          break;
        case 'content_block_delta': {
          const thinking = delta.type === 'thinking_delta' ? textOf(delta.thinking) : '';
          if (thinking) yield text('', thinking);
          else if (delta.type === 'input_json_delta' && toolBlocks.has(index)) toolBlocks.add(index, '', textOf(delta.partial_json));
          break;
        }
        case 'content_block_stop': {
          const held = cutter?.rest();
          if (held) yield text(held);
          const call = toolBlocks.take(index);
          const startInput = startInputs.get(index);
          if (startInput !== undefined) {
            startInputs.delete(index);
            if (call !== undefined && Object.keys(call.function.arguments).length === 0) call.function.arguments = startInput;
          }
          if (call !== undefined && chat) yield { model, created_at: now(), message: { role: 'assistant', content: '', tool_calls: [call] }, done: false };
          break;
        }
        case 'message_delta': {
          const stop = textOf(delta.stop_reason);
          if (stop) {
            stopReason = stop;
            stopped = true;
          }
          outputTokens = countOf(objectOf(event.usage).output_tokens) ?? outputTokens;
          break;
        }
        case 'error': {
          const error = objectOf(event.error);
          yield { error: `${this.name}: ${this.redact(textOf(error.message) || textOf(error.type) || 'error')}` };
          return;
        }
        default:
          // ping and event types added later carry nothing to forward.
          break;
      }
      // The message is complete at message_delta's stop reason, with its final usage: only message_stop
      // may follow, and a gateway that then sends only pings must not hold the answer until its timeout.
      if (stopped) break;
    }
    // Cut off before the message stopped: no final line, so the answer counts as the failure it is.
    if (!stopped) return;
    const held = cutter?.rest();
    if (held) yield text(held);
    const final: OllamaChunk = {
      model,
      created_at: now(),
      done: true,
      done_reason: STOP_REASONS[stopReason] ?? 'stop',
      prompt_eval_count: inputTokens,
      eval_count: outputTokens,
    };
    yield chat ? { ...final, message: { role: 'assistant', content: '' } } : { ...final, response: '' };
  }
}
