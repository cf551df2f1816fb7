import type { Dispatcher } from 'undici';
import { isJsonObject, jsonOf } from '../../contract/index.js';
import { UntranslatableRequest } from '../errors.js';
import { countOf, type OllamaChunk, type OllamaMessage } from '../ollama-api.js';
import type { GenerationRequest } from '../source.js';
import { checkedLines, CloudProvider, eventObject, HeldToolCalls, objectOf, objectsOf, StopCutter, textOf } from './provider.js';

/**
 * Native Ollama options in the names OpenAI-style APIs use. An option of the wrong type is left
 * out (a native client's body is not checked before it gets here); a lone stop text is one stop.
 */
export function samplingOf(body: Record<string, unknown>): { temperature?: number; top_p?: number; max_tokens?: number; stop?: string[]; seed?: number } {
  const options = objectOf(body.options);
  const numberAt = (key: string): number | undefined => (typeof options[key] === 'number' ? options[key] : undefined);
  const maxTokens = numberAt('num_predict');
  const stop = typeof options.stop === 'string' ? [options.stop] : Array.isArray(options.stop) ? options.stop.filter((s) => typeof s === 'string') : undefined;
  return {
    temperature: numberAt('temperature'),
    top_p: numberAt('top_p'),
    max_tokens: maxTokens !== undefined && maxTokens > 0 ? maxTokens : undefined,
    stop,
    seed: numberAt('seed'),
  };
}

/** What the bridge adds to a request on its own and may leave out where a model refuses it (never what the client's request means). */
const LEAVABLE_PARAMS = new Set(['temperature', 'top_p', 'stop', 'seed', 'max_tokens', 'max_completion_tokens', 'stream_options']);

/** Ollama's `format` (`"json"`, or a JSON schema) as a chat request's response_format; undefined for free text. */
function responseFormatOf(format: unknown): Record<string, unknown> | undefined {
  if (format === 'json') return { type: 'json_object' };
  if (typeof format === 'object' && format !== null) return { type: 'json_schema', json_schema: { name: 'response', schema: format } };
  return undefined;
}

/**
 * Gives every tool call of a conversation an id, and each tool result the id of the call it
 * answers: the call its client's id names, else the first one open of its tool (Ollama's own
 * pairing, by order). A result that answers no earlier call (a client that trimmed its history)
 * cannot go to a cloud provider: OpenAI and Anthropic take a tool result only after the call it
 * answers (400).
 */
export function toolCallIds(messages: readonly OllamaMessage[], provider: string): { callIds: string[][]; resultIds: Array<string | undefined> } {
  const pending: Array<{ id: string; name: string; clientId: string | undefined }> = [];
  let counter = 0;
  const callIds: string[][] = [];
  const resultIds: Array<string | undefined> = [];
  for (const message of messages) {
    const ids = (message.tool_calls ?? []).map((call) => {
      const id = `call_${counter++}`;
      pending.push({ id, name: call.function.name, clientId: call.id });
      return id;
    });
    callIds.push(ids);
    if (message.role === 'tool') {
      const named = message.tool_call_id === undefined ? -1 : pending.findIndex((p) => p.clientId === message.tool_call_id);
      const at = named >= 0 ? named : pending.findIndex((p) => message.tool_name === undefined || p.name === message.tool_name);
      if (at < 0) {
        const tool = message.tool_name === undefined ? '' : ` (of ${message.tool_name})`;
        throw new UntranslatableRequest(
          provider,
          `a tool result${tool} answers no earlier tool call; a cloud provider takes one only after the call it answers`,
        );
      }
      resultIds.push(pending.splice(at, 1)[0]?.id);
    } else resultIds.push(undefined);
  }
  return { callIds, resultIds };
}

/** A base64 image as OpenAI's data: URL part. */
const imagePart = (image: string): Record<string, unknown> => ({ type: 'image_url', image_url: { url: `data:image/png;base64,${image}` } });

/**
 * Ollama's messages in OpenAI's form: images as data: URL parts, tool arguments as JSON text. OpenAI
 * takes images only from a user (a tool message's are a 400), so a tool result's images follow the
 * results of its turn in a user message.
 */
export function toOpenAiMessages(messages: readonly OllamaMessage[], provider: string): Array<Record<string, unknown>> {
  const { callIds, resultIds } = toolCallIds(messages, provider);
  const converted: Array<Record<string, unknown>> = [];
  let toolImages: string[] = [];
  const sendToolImages = (): void => {
    if (toolImages.length > 0) converted.push({ role: 'user', content: toolImages.map(imagePart) });
    toolImages = [];
  };
  messages.forEach((message, i) => {
    const out: Record<string, unknown> = { role: message.role };
    const images = message.images ?? [];
    if (message.role === 'tool') toolImages.push(...images);
    else sendToolImages();
    out.content = message.role === 'tool' || images.length === 0 ? message.content : [{ type: 'text', text: message.content }, ...images.map(imagePart)];
    if (message.tool_calls !== undefined && message.tool_calls.length > 0) {
      out.tool_calls = message.tool_calls.map((call, j) => ({
        id: callIds[i]?.[j],
        type: 'function',
        function: { name: call.function.name, arguments: JSON.stringify(call.function.arguments ?? {}) },
      }));
    }
    if (message.role === 'tool') out.tool_call_id = resultIds[i];
    converted.push(out);
  });
  sendToolImages();
  return converted;
}

/** What a chunk's `error` holds when there is none. */
const NO_ERROR = new Set<unknown>([undefined, null, '', false]);

/** The stop sequences OpenAI and Azure take (more is a 400); the others are applied by the bridge. */
const MAX_STOPS = 4;

/**
 * An OpenAI-compatible provider (OpenAI, Azure OpenAI, or any compatible server) as a generation
 * source: native chat goes to /chat/completions and native generate to /completions, and the SSE
 * answer comes back as Ollama lines. Tool-call fragments are joined and sent as one call, as Ollama does.
 */
export class OpenAiProvider extends CloudProvider {
  /** Sampling parameters the provider's model refused: left out from then on. */
  private readonly refused = new Set<string>();
  /** Whether the model takes the output limit as max_completion_tokens (OpenAI's reasoning models). */
  private completionTokens = false;

  private headers(): Record<string, string> {
    const key = this.config.api_key ?? '';
    // Azure reads api-key, everyone else the bearer token.
    return { authorization: `Bearer ${key}`, 'api-key': key };
  }

  async generate(request: GenerationRequest): Promise<AsyncIterable<OllamaChunk>> {
    const { body } = request;
    const { stop: asked, ...options } = samplingOf(body);
    // An empty stop stops nothing (applied here, it would cut the whole answer).
    const stop = asked?.filter((text) => text !== '');
    const sampling = stop === undefined ? options : { ...options, stop: stop.slice(0, MAX_STOPS) };
    if (request.path === '/api/chat') {
      const payload: Record<string, unknown> = {
        model: this.config.model,
        messages: toOpenAiMessages((body.messages ?? []) as OllamaMessage[], this.name),
        stream: true,
        stream_options: { include_usage: true },
        ...sampling,
      };
      if (Array.isArray(body.tools) && body.tools.length > 0) payload.tools = body.tools;
      const responseFormat = responseFormatOf(body.format);
      if (responseFormat !== undefined) payload.response_format = responseFormat;
      const response = await this.post('/chat/completions', payload, this.headers(), request.cancel.signal);
      return checkedLines(this.translate(response, 'chat', this.usageAsked(), this.cutterFor(stop)));
    }
    const payload = {
      model: this.config.model,
      prompt: body.prompt ?? '',
      suffix: body.suffix,
      stream: true,
      stream_options: { include_usage: true },
      ...sampling,
    };
    const response = await this.post('/completions', payload, this.headers(), request.cancel.signal);
    return checkedLines(this.translate(response, 'generate', this.usageAsked(), this.cutterFor(stop)));
  }

  /** Whether the request just sent asked for usage (stream_options.include_usage), which a model that refused it is no longer asked. */
  private usageAsked(): boolean {
    return !this.refused.has('stream_options');
  }

  /** The stops the provider was not sent, applied here: those past OpenAI's 4, or all where its model takes none (known once the request was taken). */
  private cutterFor(stop: string[] | undefined): StopCutter | undefined {
    return StopCutter.of(this.refused.has('stop') ? stop : stop?.slice(MAX_STOPS));
  }

  protected override adapted(payload: Record<string, unknown>): Record<string, unknown> {
    if (this.refused.size === 0 && !this.completionTokens) return payload;
    const adapted = { ...payload };
    for (const param of this.refused) delete adapted[param];
    if (this.completionTokens && adapted.max_tokens !== undefined) {
      adapted.max_completion_tokens = adapted.max_tokens;
      delete adapted.max_tokens;
    }
    return adapted;
  }

  /**
   * OpenAI's reasoning models (o-series, gpt-5) refuse max_tokens (they take max_completion_tokens)
   * and any temperature but their own, with a 400 naming the parameter; other servers refuse what
   * they lack so too. Such a sampling parameter is left out (or renamed) from then on.
   */
  protected override learn(sent: Record<string, unknown>, refusal: string): boolean {
    const error = objectOf(objectOf(jsonOf(refusal)).error);
    const param = error.param;
    if (typeof param !== 'string' || !LEAVABLE_PARAMS.has(param) || !(param in sent)) return false;
    if (error.code !== 'unsupported_parameter' && error.code !== 'unsupported_value') return false;
    if (param === 'max_tokens' && textOf(error.message).includes('max_completion_tokens')) this.completionTokens = true;
    else this.refused.add(param);
    return true;
  }

  private async *translate(
    response: Dispatcher.ResponseData,
    kind: 'chat' | 'generate',
    usageAsked: boolean,
    cutter?: StopCutter,
  ): AsyncGenerator<OllamaChunk, void, undefined> {
    const model = this.config.model;
    const now = (): string => new Date().toISOString();
    /** The calls by their index, or by their id for a provider that sends no index. */
    const calls = new HeldToolCalls(this.maxLineBytes);
    /** By index: the id of the call it holds now, and that call's key (an index that held another call keys by id). */
    const idAt = new Map<number, string>();
    const keyAt = new Map<number, string>();
    let lastCall: number | string | undefined;
    let finish = '';
    let ended = false;
    let usage: Record<string, unknown> = {};
    const progress = this.progressTimeout(response);
    // Fields of the wrong type read as absent (objectOf, textOf): a provider's mistake in one field
    // costs that field, not the answer.
    for await (const event of progress.over(this.eventsOf(response))) {
      if (event.data === '[DONE]') {
        ended = true;
        break;
      }
      const chunk = eventObject(event.data);
      // "error": null, "" or false is no error: some servers send it on every chunk.
      if (!NO_ERROR.has(chunk.error)) {
        const message = typeof chunk.error === 'string' ? chunk.error : textOf(objectOf(chunk.error).message);
        yield { error: `${this.name}: ${this.redact(message || 'error')}` };
        return;
      }
      if (isJsonObject(chunk.usage)) {
        usage = chunk.usage;
        progress.progressed();
      }
      const choices = objectsOf(chunk.choices);
      /** Whether this chunk says a finish and adds nothing else, as OpenAI's (and Ollama's) last choice chunk does. */
      let bareFinish = false;
      for (const choice of choices) {
        const delta = objectOf(choice.delta);
        const finishReason = textOf(choice.finish_reason);
        const text = textOf(choice.text);
        // What the chunk adds to the answer: the role alone adds nothing.
        const adds = text !== '' || Object.entries(delta).some(([key, value]) => key !== 'role' && Boolean(value));
        // A chunk that adds nothing (a keep-alive of some servers) is no progress, unless it finishes.
        if (finishReason || adds) progress.progressed();
        if (finishReason && !adds) bareFinish = true;
        // OpenRouter's word for a generation that failed on the way, with no error object to say more.
        if (finishReason === 'error') {
          yield { error: `${this.name}: the provider ended the answer with an error (finish_reason "error")` };
          return;
        }
        if (finishReason) finish = finishReason;
        if (kind === 'generate') {
          const piece = cutter === undefined || !text ? text : cutter.push(text);
          if (piece) yield { model, created_at: now(), response: piece, done: false };
          if (cutter?.stopped === true) break;
          continue;
        }
        for (const call of objectsOf(delta.tool_calls)) {
          const id = textOf(call.id) || undefined;
          let key: number | string;
          if (typeof call.index === 'number') {
            const held = idAt.get(call.index);
            // Ollama's OpenAI API, vLLM and Grok give every parallel call index 0: another id there is another call.
            if (id !== undefined && held !== undefined && id !== held) keyAt.set(call.index, id);
            if (id !== undefined) idAt.set(call.index, id);
            key = keyAt.get(call.index) ?? call.index;
          }
          // Gemini's OpenAI-compatible API sends no index: a fragment with a new id starts a call, one with neither continues the last.
          else key = id ?? lastCall ?? 0;
          lastCall = key;
          const fragment = objectOf(call.function);
          calls.add(key, textOf(fragment.name), textOf(fragment.arguments));
        }
        const said = textOf(delta.content);
        const content = cutter === undefined || !said ? said : cutter.push(said);
        // Reasoning as OpenRouter and Ollama name it, and as DeepSeek, vLLM and llama.cpp do.
        const thinking = textOf(delta.reasoning) || textOf(delta.reasoning_content);
        if (content || thinking) {
          yield { model, created_at: now(), message: { role: 'assistant', content, ...(thinking ? { thinking } : {}) }, done: false };
        }
        if (cutter?.stopped === true) break;
      }
      // One of the stops applied here came: the answer ends there, as at a stop of the provider's own.
      if (cutter?.stopped === true) {
        ended = true;
        finish = 'stop';
        break;
      }
      // OpenAI ends an answer with a chunk that says the finish and adds nothing else, then, where
      // usage was asked, a chunk with the usage and no choices. Gateways that put a finish_reason (and
      // a usage) on every chunk are not done there. A provider that keeps the stream open after the
      // end without a [DONE] must not hold the answer until its timeout; leaving the loop lets its
      // connection go.
      if (finish !== '' && (usageAsked ? isJsonObject(chunk.usage) && choices.length === 0 : bareFinish)) {
        ended = true;
        break;
      }
    }
    // Cut off before the provider said it finished ([DONE], or a finish_reason from servers that
    // send no [DONE]): no final line, so the answer counts as the failure it is.
    if (!ended && finish === '') return;
    const held = cutter?.rest();
    if (held)
      yield kind === 'chat'
        ? { model, created_at: now(), message: { role: 'assistant', content: held }, done: false }
        : { model, created_at: now(), response: held, done: false };
    const toolCalls = calls.takeAll();
    if (toolCalls.length > 0) {
      yield { model, created_at: now(), message: { role: 'assistant', content: '', tool_calls: toolCalls }, done: false };
    }
    // Counts the provider did not send (a server that ignores include_usage) stay unknown, not 0.
    const final: OllamaChunk = {
      model,
      created_at: now(),
      done: true,
      done_reason: finish === 'length' ? 'length' : 'stop',
      prompt_eval_count: countOf(usage.prompt_tokens),
      eval_count: countOf(usage.completion_tokens),
    };
    yield kind === 'chat' ? { ...final, message: { role: 'assistant', content: '' } } : { ...final, response: '' };
  }
}
