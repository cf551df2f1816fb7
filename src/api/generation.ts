import { setTimeout as sleep } from 'node:timers/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { sendJson, whenClosed, type ApiRequest } from './call.js';
import { classifyLane, clientKey, type LaneRule } from '../routing/lanes.js';
import { printable } from '../routing/signals.js';
import { schedulerChoices, virtualModel, type RouteDecision, type RouteInput, type Router } from '../routing/router.js';
import { QueueDropped, type Completion, type Scheduler, type Slot } from '../routing/scheduler.js';
import { toUpstreamError, UntranslatableRequest, UpstreamError, UpstreamStatusError } from '../upstream/errors.js';
import { LineTooLongError } from '../upstream/lines.js';
import { withModel, type OllamaChunk, type OllamaToolCall } from '../upstream/ollama-api.js';
import type { Backend } from '../upstream/backend.js';
import type { GenerationSource } from '../upstream/source.js';
import type { IncomingHttpHeaders } from 'node:http';
import { modelAllowed, modelNotAllowed, type Identity } from '../auth/identity.js';
import { BridgeError, Cancel, type CancelSignal, type DropReason, type GenerationOutcome } from '../contract/index.js';
import type { EnergyUse } from '../history/accounting.js';
import { identityOf, requestOf } from './request.js';

/** Everything one choice of a generation produced, for answers that are not streamed. */
export interface GenerationResult {
  content: string;
  thinking: string;
  toolCalls: OllamaToolCall[];
  /** The last upstream line: done_reason, token counts and durations. */
  final: OllamaChunk;
}

/** How one surface writes a generation: its streaming form, its whole-answer form, its error form. */
export interface ResponseFormat {
  streamContentType: string;
  /** Text for one upstream line of choice `index` ('' to write nothing). */
  chunk(event: OllamaChunk, index: number): string;
  /** Text after every choice finished. */
  end(results: readonly GenerationResult[]): string;
  /** The last text of a stream that broke after it started. */
  error(message: string, code: string): string;
  /** The answer for a client that did not ask for a stream. */
  whole(results: readonly GenerationResult[]): unknown;
  /** Written when a stream has been silent for a while (a model thinking with its thoughts hidden, a slow tool call), so idle timeouts do not cut it. */
  heartbeat?: string;
}

export interface GenerationPlan {
  path: '/api/chat' | '/api/generate';
  /** One native Ollama request body per choice (n > 1 runs several); model and stream are set here. */
  bodies: ReadonlyArray<Record<string, unknown>>;
  stream: boolean;
  format: ResponseFormat;
}

/** A plan that depends on the route chosen (the model's capabilities, notes for the route reason). */
export type PlanForRoute = (route: RouteDecision) => Promise<GenerationPlan>;

/** What serving a generation needs besides the route: the retry budget, the cloud fallback, the queue. */
export interface GenerationPolicy {
  maxRetries: number;
  /** Silence after which a started stream gets the surface's heartbeat (when it has one). */
  heartbeatMs: number;
  /** The most text one answer gathers (routing.thresholds.max_line_mb). */
  maxAnswerChars: number;
  /** Cloud providers to try when no local backend could answer; empty when fallback is off. */
  fallback(): readonly GenerationSource[];
  /** Aborts when a stopping bridge's grace period ran out: answers still running end with an error. */
  deadline: CancelSignal;
  scheduler: Scheduler;
  laneRules: readonly LaneRule[];
  /** A native body as it goes to a local backend: keep_alive and num_ctx set so the model stays loaded. */
  prepare(body: Record<string, unknown>, backend: string, model: string): Record<string, unknown>;
  /** Why this request must stay on local GPUs (never-cloud policy), or null. */
  localOnly(headers: IncomingHttpHeaders, identity: Identity, model: string): string | null;
  /** Whether a model an Ollama backend lists is really run in a cloud (Ollama's own cloud models). */
  isCloudModel(model: string): boolean;
  /** Starts charging GPU time and energy to this request while `source` serves it; undefined for sources off any known GPU. */
  meter(source: GenerationSource): (() => EnergyUse) | undefined;
}

/** The name of who sent a request, for telling ghost-text clients apart; null for the anonymous local user. */
function clientIdentity(req: IncomingMessage): string | null {
  const identity = identityOf(req);
  return identity.via === 'anonymous' ? null : identity.name;
}

/** An outcome before anything was served: what was asked, where it was routed, nothing measured yet. */
function pendingOutcome(route: Pick<GenerationOutcome, 'requestedModel' | 'tier' | 'reason' | 'model'>, lane: GenerationOutcome['lane']): GenerationOutcome {
  // Every field written out: a spread into a literal this size measured ~25 µs per request in V8.
  return {
    requestedModel: route.requestedModel,
    tier: route.tier,
    reason: route.reason,
    model: route.model,
    source: null,
    retries: 0,
    fallback: null,
    firstTokenMs: null,
    tokensIn: null,
    promptTokens: null,
    tokensOut: null,
    evalSeconds: null,
    answer: null,
    error: null,
    lane,
    queueMs: 0,
    dropped: null,
    localOnly: null,
    gpuMs: null,
    energyJoules: null,
  };
}

/** The outcome of a request refused before it was served (a limit, a forbidden model; null: not yet), so that history keeps it. */
export function refusedOutcome(requestedModel: string, reason: string | null): GenerationOutcome {
  const outcome = pendingOutcome({ requestedModel, tier: null, reason: reason ?? '', model: requestedModel }, 'interactive');
  outcome.error = reason;
  return outcome;
}

/**
 * The refusal of `asked`, which runs (or can run) `model`, outside the identity's allow-list. A
 * virtual name is refused as itself: the model behind it is one the model lists and the dashboard
 * do not name to this identity.
 */
function refusalOf(identity: Identity, asked: string, model: string): BridgeError {
  return virtualModel(asked) === undefined
    ? modelNotAllowed(identity, model)
    : modelNotAllowed(identity, asked, 'it can be routed to a model outside the allow-list');
}

/** Throws 403 model_not_allowed, recorded, unless the identity may use `model`, the real model the request would run. */
export function requireModelAllowed(req: IncomingMessage, requestedModel: string, model: string): void {
  const identity = identityOf(req);
  if (modelAllowed(identity, model)) return;
  const refused = refusalOf(identity, requestedModel, model);
  requestOf(req).generation = refusedOutcome(requestedModel, refused.message);
  throw refused;
}

/** The first model a generation asked for `requested` could run that the identity may not use. */
function forbiddenModelBehind(router: Router, identity: Identity, requested: string): string | undefined {
  if (identity.models === undefined) return undefined;
  return router.modelsFor(requested).find((model) => !modelAllowed(identity, model));
}

/**
 * Whether the model lists offer `name` to the identity: only when every model a generation with it
 * could run is allowed, so that nothing a client picks from them ends in 403. For a virtual name
 * that is every model it can be routed to ("auto": every tier's); an embedding is checked on its own.
 */
export function modelOffered(router: Router, identity: Identity, name: string): boolean {
  return forbiddenModelBehind(router, identity, name) === undefined;
}

/**
 * Throws 403 model_not_allowed on a lookup of a model that is not offered to the identity, as its
 * generation would be refused; checked before the model is looked for, so the answer tells nothing
 * of which models outside the allow-list are installed.
 */
export function requireModelOffered(req: IncomingMessage, router: Router, name: string): void {
  const identity = identityOf(req);
  const forbidden = forbiddenModelBehind(router, identity, name);
  if (forbidden !== undefined) throw refusalOf(identity, name, forbidden);
}

const SHUT_DOWN_MESSAGE = 'copilot-bridge stopped before this answer was complete; send the request again';

/** Token counts and the generation time of a finished answer, summed over its choices; a count no choice gave is unknown (null). */
function noteResults(outcome: GenerationOutcome, results: readonly GenerationResult[]): void {
  const sum = (pick: (r: GenerationResult) => number | undefined): number | null =>
    results.some((r) => pick(r) !== undefined) ? results.reduce((total, r) => total + (pick(r) ?? 0), 0) : null;
  outcome.tokensIn = sum((r) => r.final.prompt_eval_count);
  const prompts = results.flatMap((r) => r.final.prompt_eval_count ?? []);
  outcome.promptTokens = prompts.length === 0 ? null : Math.max(...prompts);
  outcome.tokensOut = sum((r) => r.final.eval_count);
  const evalNs = results[0]?.final.eval_duration;
  outcome.evalSeconds = evalNs === undefined ? null : evalNs / 1e9;
  outcome.answer = results.map((r) => (r.toolCalls.length > 0 ? { content: r.content, toolCalls: r.toolCalls } : { content: r.content }));
}

/** Response headers that say how the request was routed and who answered. */
export function setRouteHeaders(res: ServerResponse, route: RouteDecision, source: string, model: string): void {
  res.setHeader('x-bridge-model', printable(model));
  res.setHeader('x-bridge-backend', printable(source));
  res.setHeader('x-bridge-tier', route.tier ?? 'none');
  res.setHeader('x-bridge-route-reason', printable(route.reason));
}

/** Yields [index, value] from several async iterators as each produces, until all are done. */
async function* mergeStreams<T>(iterators: Array<AsyncIterator<T>>): AsyncGenerator<[number, T], void, undefined> {
  const pending = new Map<number, Promise<[number, IteratorResult<T>]>>();
  const pull = (index: number): void => {
    pending.set(
      index,
      (iterators[index] as AsyncIterator<T>).next().then((result) => [index, result]),
    );
  };
  iterators.forEach((_, index) => pull(index));
  try {
    while (pending.size > 0) {
      const [index, result] = await Promise.race(pending.values());
      if (result.done === true) {
        pending.delete(index);
        continue;
      }
      pull(index);
      yield [index, result.value];
    }
  } finally {
    // The consumer stopped early (client gone, upstream error): reads still pending will reject on abort.
    for (const read of pending.values()) read.catch(() => undefined);
  }
}

/** The lines of a single choice as [0, line]: nothing to merge, no race per line. */
function indexed<T>(iterable: AsyncIterable<T>): AsyncIterableIterator<[number, T]> {
  const source = iterable[Symbol.asyncIterator]();
  const iterator: AsyncIterableIterator<[number, T]> = {
    next: () =>
      source
        .next()
        .then((result): IteratorResult<[number, T]> => (result.done === true ? { done: true, value: undefined } : { done: false, value: [0, result.value] })),
    return: async () => {
      await source.return?.();
      return { done: true, value: undefined };
    },
    [Symbol.asyncIterator]: () => iterator,
  };
  return iterator;
}

function emptyResult(): GenerationResult {
  return { content: '', thinking: '', toolCalls: [], final: {} };
}

/** Tool calls one answer may gather; a model that calls tools for ever is stopped there. */
const MAX_TOOL_CALLS = 1024;

/**
 * Adds one line to its choice's answer. What is gathered is held to `maxChars` of text (the line
 * limit, routing.thresholds.max_line_mb) and MAX_TOOL_CALLS: an upstream that never ends its
 * answer must not fill memory. A whole answer past that fails; a stream, which the client takes as
 * it comes, goes on, and only what is kept of it (for the log's answer text) stops growing.
 */
function accumulate(result: GenerationResult, event: OllamaChunk, maxChars: number, whole: boolean): void {
  const content = event.message?.content ?? event.response ?? '';
  const thinking = event.message?.thinking ?? event.thinking ?? '';
  const calls = event.message?.tool_calls;
  result.final = event;
  if (
    result.content.length + result.thinking.length + content.length + thinking.length > maxChars ||
    result.toolCalls.length + (calls?.length ?? 0) > MAX_TOOL_CALLS
  ) {
    if (whole) throw new LineTooLongError(maxChars, 'an answer');
    return;
  }
  result.content += content;
  result.thinking += thinking;
  if (calls) result.toolCalls.push(...calls);
}

/** Resolves when the client socket drained (or closed): until then no more is pulled from the upstream (back-pressure). */
function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

/** Any failure while talking to a source, as the typed error the retry logic understands. */
function asFailure(error: unknown, source: GenerationSource): UpstreamError | UpstreamStatusError {
  return error instanceof UpstreamStatusError ? error : toUpstreamError(error, source.name);
}

/**
 * An answer whose connection closed cleanly before its last line (done: true) came: the upstream
 * cut it off (a runner that died, a proxy that gave up), so it is a failure, not a short answer.
 */
function cutOff(source: GenerationSource): UpstreamError {
  return new UpstreamError('incomplete', source.name, `${source.name} ended its answer without a final line`);
}

/** Whether every choice got its last line. */
function finished(results: readonly GenerationResult[]): boolean {
  return results.every((result) => result.final.done === true);
}

/** An answer that has started: its merged lines and the first one, already read. */
interface Opened {
  source: GenerationSource;
  lines: AsyncIterableIterator<[number, OllamaChunk]>;
  first: [number, OllamaChunk];
  /** Stops the answer upstream after a failure (the client leaving stops it through its signal). */
  stop(): void;
}

/**
 * Asks one source for every choice and waits for the first line, so that a source failing before
 * it said anything can still be replaced by another. Rejects with UpstreamError/UpstreamStatusError.
 */
async function open(
  source: GenerationSource,
  plan: GenerationPlan,
  model: string,
  req: ApiRequest,
  client: Cancel,
  prepare: GenerationPolicy['prepare'],
): Promise<Opened> {
  // `client` aborts when the client leaves or the stop deadline passed: either way the upstream
  // stops. One choice (nearly every request) is sent with that signal as it is, and a failure
  // stops it through its lines; several share a signal of their own, so that one failing stops
  // the others even before they answered.
  const abort = plan.bodies.length === 1 ? undefined : new Cancel();
  const onClient = (): void => abort?.abort();
  if (abort !== undefined) client.addEventListener('abort', onClient);
  let lines: AsyncIterableIterator<[number, OllamaChunk]> | undefined;
  const stop = (): void => {
    if (abort !== undefined) abort.abort();
    else lines?.return?.().catch(() => undefined);
  };
  try {
    const streams = await Promise.all(
      plan.bodies.map((body) =>
        source.generate({
          path: plan.path,
          body: source.kind === 'local' ? prepare(withModel(body, model), source.name, model) : withModel(body, model),
          userAgent: req.headers['user-agent'] ?? 'copilot-bridge',
          cancel: abort ?? client,
        }),
      ),
    );
    lines = streams.length === 1 ? indexed(streams[0] as AsyncIterable<OllamaChunk>) : mergeStreams(streams.map((stream) => stream[Symbol.asyncIterator]()));
    const first = await lines.next().catch((error: unknown) => {
      // A break before the first line (the connection lost right after the head): the backend
      // counts no status below 400 by itself, so the failure is counted here, unless the client left.
      if (!client.aborted) source.noteFailure?.(asFailure(error, source).message);
      throw error;
    });
    if (first.done === true) {
      // Not a single line (a 200 with an empty body): nothing was sent yet, so another source may answer.
      const failure = cutOff(source);
      source.noteFailure?.(failure.message);
      throw failure;
    }
    if (typeof first.value[1].error === 'string') {
      source.noteFailure?.(first.value[1].error, model);
      throw new UpstreamStatusError(500, source.name, first.value[1].error);
    }
    return { source, lines, first: first.value, stop };
  } catch (error) {
    // On success the link stays: the client hanging up later must still stop this answer.
    if (abort !== undefined) client.removeEventListener('abort', onClient);
    stop();
    throw asFailure(error, source);
  }
}

/** Whether another source may be asked after this failure (never for the client's own mistakes). */
function retriable(error: UpstreamError | UpstreamStatusError): boolean {
  return error instanceof UpstreamError || error.status >= 500;
}

/** 50 ms, 100 ms, 200 ms ... up to 1 s, each between half and one and a half times that. */
function backoffMs(retry: number): number {
  return Math.min(1000, 50 * 2 ** (retry - 1)) * (0.5 + Math.random());
}

/** Reads a whole answer without writing anything; a break or an error line rejects, so another source can be tried. */
async function collect(opened: Opened, count: number, maxChars: number): Promise<GenerationResult[]> {
  const results = Array.from({ length: count }, emptyResult);
  const take = ([index, event]: [number, OllamaChunk]): void => {
    if (typeof event.error === 'string') throw new UpstreamStatusError(500, opened.source.name, event.error);
    accumulate(results[index] as GenerationResult, event, maxChars, true);
  };
  try {
    take(opened.first);
    for await (const entry of opened.lines) take(entry);
  } catch (error) {
    opened.stop();
    throw asFailure(error, opened.source);
  }
  if (!finished(results)) throw cutOff(opened.source);
  return results;
}

/** What the scheduler learns from a finished try: Ollama's own load and prompt figures. */
function completionOf(results: readonly GenerationResult[] | null): Completion {
  const final = results?.[0]?.final;
  if (final === undefined) return { ok: false };
  return { ok: true, loadDurationNs: final.load_duration, promptEvalCount: final.prompt_eval_count, promptEvalDurationNs: final.prompt_eval_duration };
}

/**
 * The answer for ghost text the scheduler dropped (superseded by a newer keystroke, or too late to
 * be useful): a normal, empty completion in the surface's own format, so the editor shows nothing
 * instead of an error.
 */
function answerEmpty(res: ServerResponse, route: RouteDecision, plan: GenerationPlan, reason: DropReason): void {
  const final: OllamaChunk = {
    model: route.model,
    created_at: new Date().toISOString(),
    done: true,
    done_reason: 'stop',
    ...(plan.path === '/api/chat' ? { message: { role: 'assistant', content: '' } } : { response: '' }),
  };
  const results = plan.bodies.map((): GenerationResult => ({ content: '', thinking: '', toolCalls: [], final }));
  res.setHeader('x-bridge-dropped', reason);
  setRouteHeaders(res, route, 'none', route.model);
  if (!plan.stream) {
    sendJson(res, 200, plan.format.whole(results));
    return;
  }
  res.statusCode = 200;
  res.setHeader('content-type', plan.format.streamContentType);
  res.setHeader('cache-control', 'no-cache');
  res.end(plan.bodies.map((_, index) => plan.format.chunk(final, index)).join('') + plan.format.end(results));
}

/**
 * Runs a generation and writes it in the surface's format. Each try on a local backend first
 * waits for a slot in the scheduler (which, with dual-GPU on, also picks the backend); a client
 * that hangs up while waiting is never sent upstream. The upstream is always asked to stream; the
 * answer is forwarded line by line, or gathered for `stream: false`. As long as nothing was sent
 * to the client (a stream: until its first line; a whole answer: until it is complete), a failing
 * backend is replaced by another candidate (up to maxRetries, with a jittered back-off), then by
 * the cloud fallback. After that, a break ends the stream in the surface's own error form.
 */
export async function serveGeneration(
  policy: GenerationPolicy,
  req: ApiRequest,
  res: ServerResponse,
  route: RouteDecision,
  plan: GenerationPlan,
  input: RouteInput,
  localOnly: string | null = null,
): Promise<void> {
  const client = new Cancel();
  const { deadline } = policy;
  const onDeadline = (): void => client.abort();
  deadline.addEventListener('abort', onDeadline);
  whenClosed(res, () => {
    deadline.removeEventListener('abort', onDeadline);
    if (!res.writableFinished) client.abort();
  });
  if (deadline.aborted) client.abort();
  const request = requestOf(req);
  const laneInput = { kind: input.signals.kind, path: req.path, headers: req.headers, client: input.signals.client };
  const lane = classifyLane(laneInput, policy.laneRules).lane;
  const outcome = pendingOutcome(route, lane);
  outcome.localOnly = localOnly;
  request.generation = outcome;
  const started = performance.now();

  const failures: string[] = [];
  let lastError: UpstreamError | UpstreamStatusError | undefined;
  // Health already counted the failure where it happened (the backend's request, a bad or missing first line).
  const failed = (source: GenerationSource, error: unknown): void => {
    const failure = asFailure(error, source);
    lastError = failure;
    failures.push(`${source.name}: ${failure.message}`);
  };

  /** The answer of the last try, when it ended well: what the scheduler learns from. */
  let answered: GenerationResult[] | null = null;
  /** One try with one source, its GPU time and energy charged to the request. */
  const serveFrom = async (source: GenerationSource): Promise<boolean> => {
    const stopMeter = policy.meter(source);
    try {
      return await tryServe(source);
    } finally {
      const use = stopMeter?.();
      if (use !== undefined) {
        outcome.gpuMs = (outcome.gpuMs ?? 0) + use.gpuMs;
        outcome.energyJoules = (outcome.energyJoules ?? 0) + use.joules;
      }
    }
  };

  /** One try with one source; true when the client got its answer (or left). */
  const tryServe = async (source: GenerationSource): Promise<boolean> => {
    answered = null;
    let opened: Opened;
    try {
      opened = await open(source, plan, route.model, req, client, policy.prepare);
    } catch (error) {
      // Stopped by the deadline: not the source's fault, and the client still gets an answer below.
      if (client.aborted) return !deadline.aborted;
      failed(source, error);
      return false;
    }
    outcome.source = source.name;
    outcome.firstTokenMs = performance.now() - started;
    if (plan.stream) {
      request.backend = source.name;
      answered = await stream(opened, res, route, plan, outcome, policy, deadline);
      return true;
    }
    try {
      const results = await collect(opened, plan.bodies.length, policy.maxAnswerChars);
      noteResults(outcome, results);
      answered = results;
      request.backend = source.name;
      setRouteHeaders(res, route, source.name, modelOf(opened, route));
      sendJson(res, 200, plan.format.whole(results));
      return true;
    } catch (error) {
      if (client.aborted) return !deadline.aborted;
      const failure = asFailure(error, source);
      source.noteFailure?.(failure.message, failure instanceof UpstreamStatusError ? route.model : undefined);
      failed(source, error);
      outcome.source = null;
      return false;
    }
  };

  // Each candidate at most once: the same backend asked again for the same request answers the
  // same error, and each answer would count against its circuit.
  const untried = [...route.candidates];
  for (let retry = 0; retry <= policy.maxRetries; retry++) {
    // Candidates that can still take traffic (a refused connection marks one down at once).
    const usable = untried.filter((b) => b.canTake(route.model));
    if (usable.length === 0) break;
    if (retry > 0) {
      outcome.retries = retry;
      await sleep(backoffMs(retry), undefined, { signal: client.signal }).catch(() => undefined);
      if (client.aborted) break;
    }
    const choices = schedulerChoices(route.spread, route.noRoom, usable).map((b) => b.name);
    let slot: Slot;
    try {
      slot = await policy.scheduler.admit({
        model: route.model,
        choices,
        lane,
        client: lane === 'fim' ? clientKey(laneInput, req.socket.remoteAddress, clientIdentity(req)) : null,
        promptTokens: input.signals.approxTokens,
        weight: plan.bodies.length,
        signal: client,
      });
    } catch (error) {
      // The stop deadline: the answer below says so.
      if (deadline.aborted) break;
      if (client.aborted || res.destroyed) return;
      if (error instanceof QueueDropped && error.reason !== 'stopping') {
        outcome.dropped = error.reason;
        answerEmpty(res, route, plan, error.reason);
        return;
      }
      outcome.error = (error as Error).message;
      throw new BridgeError(503, `no backend can serve this request: ${(error as Error).message}`, { code: 'no_backend_available' });
    }
    outcome.queueMs += slot.queuedMs;
    if (retry === 0 && slot.why !== '') {
      const noRoom = route.noRoom.filter((name) => !choices.includes(name)).map((name) => `; ${name} lacks VRAM for a cold load`);
      route.reason = route.spread
        ? `${route.modelReason}; ${slot.why}${noRoom.join('')}${slot.tie ? `; tie: ${route.rankReason}` : ''}`
        : `${route.reason}; ${slot.why}`;
      outcome.reason = route.reason;
    }
    const source = usable.find((b) => b.name === slot.backend) as Backend;
    untried.splice(untried.indexOf(source), 1);
    // Its circuit may have opened (or it went down) while this request waited for its turn there:
    // sent anyway, it would fail the same way, or wait out the same timeout.
    const refusal = source.refusal(route.model);
    if (refusal !== null) {
      slot.release();
      route.reason += `; ${source.name} ${refusal} when its turn came`;
      outcome.reason = route.reason;
      continue;
    }
    let served = false;
    try {
      served = await serveFrom(source);
    } finally {
      slot.release(completionOf(answered));
    }
    if (served) return;
    if (client.aborted || (lastError !== undefined && !retriable(lastError))) break;
  }

  const providers = policy.fallback();
  if (localOnly !== null && providers.length > 0) {
    route.reason += `; cloud fallback skipped: ${localOnly}`;
    outcome.reason = route.reason;
  } else if (!client.aborted && (lastError === undefined || retriable(lastError))) {
    for (const provider of providers) {
      outcome.fallback = provider.name;
      const why = failures.length > 0 ? failures.join('; ') : 'no local backend can take traffic';
      route.reason += `; fallback to ${provider.name}: ${why}`;
      outcome.reason = route.reason;
      if (await serveFrom(provider)) return;
      outcome.fallback = null;
      // A provider's own refusal (a 400 naming its limits, a 429, a 5xx) may not be the next one's;
      // a request the bridge found no provider takes is refused by each alike.
      if (client.aborted || lastError instanceof UntranslatableRequest) break;
    }
  }

  if (deadline.aborted && !res.destroyed) {
    outcome.error = SHUT_DOWN_MESSAGE;
    throw new BridgeError(503, SHUT_DOWN_MESSAGE, { code: 'shutting_down' });
  }
  if (client.aborted || res.destroyed) return;
  if (lastError === undefined) {
    outcome.error = route.reason;
    throw new BridgeError(503, `no backend can serve this request (${route.reason})`, { code: 'no_backend_available' });
  }
  outcome.error = lastError.message;
  const message = failures.length > 1 ? `${lastError.message} (tried ${failures.join('; ')})` : lastError.message;
  throw new BridgeError(lastError.status, message, { code: lastError.code, retryAfterSeconds: lastError.retryAfterSeconds, cause: lastError });
}

/** A cloud provider answers with its own model name; a local backend with the routed one. */
function modelOf(opened: Opened, route: RouteDecision): string {
  return opened.source.kind === 'cloud' ? (opened.first[1].model ?? route.model) : route.model;
}

/**
 * Writes a started answer as a stream; from here on a failure can only end the stream in the
 * surface's error form. Resolves to the results when it ended well, else null.
 */
async function stream(
  opened: Opened,
  res: ServerResponse,
  route: RouteDecision,
  plan: GenerationPlan,
  outcome: GenerationOutcome,
  { heartbeatMs, maxAnswerChars }: Pick<GenerationPolicy, 'heartbeatMs' | 'maxAnswerChars'>,
  deadline: CancelSignal,
): Promise<GenerationResult[] | null> {
  const { source, lines, first, stop } = opened;
  setRouteHeaders(res, route, source.name, modelOf(opened, route));
  res.statusCode = 200;
  res.setHeader('content-type', plan.format.streamContentType);
  res.setHeader('cache-control', 'no-cache');

  const results = plan.bodies.map(emptyResult);
  let wrote = performance.now();
  const { heartbeat } = plan.format;
  const beat =
    heartbeat === undefined
      ? undefined
      : setInterval(() => {
          if (performance.now() - wrote < heartbeatMs || res.destroyed || res.writableNeedDrain) return;
          wrote = performance.now();
          res.write(heartbeat);
        }, heartbeatMs / 2);
  const fail = (message: string, code: string): void => {
    outcome.error = message;
    if (!res.destroyed) res.end(plan.format.error(message, code));
  };
  /** Writes one line in the surface's format, in the same turn it arrived; false when the stream is over (an error line, the client gone). */
  const handle = (index: number, event: OllamaChunk): boolean => {
    if (typeof event.error === 'string') {
      stop();
      source.noteFailure?.(event.error, route.model);
      fail(event.error, 'upstream_error');
      return false;
    }
    accumulate(results[index] as GenerationResult, event, maxAnswerChars, false);
    const text = plan.format.chunk(event, index);
    if (text !== '') {
      wrote = performance.now();
      res.write(text);
    }
    return !res.destroyed;
  };

  try {
    if (!handle(...first)) return null;
    // The head leaves with the first line's text, in one write; a first line without text must not hold it back.
    if (!res.headersSent) res.flushHeaders();
    if (res.writableNeedDrain) await drained(res);
    for await (const [index, event] of lines) {
      if (!handle(index, event)) return null;
      if (res.writableNeedDrain) await drained(res);
    }
    // Ends like a stream that broke: the client must not take a cut-off answer for a whole one.
    if (!finished(results)) throw cutOff(source);
  } catch (error) {
    stop();
    if (res.destroyed) return null;
    if (deadline.aborted) {
      fail(SHUT_DOWN_MESSAGE, 'shutting_down');
      return null;
    }
    const failure = asFailure(error, source);
    source.noteFailure?.(failure.message);
    fail(failure.message, failure instanceof UpstreamError ? failure.code : 'upstream_error');
    return null;
  } finally {
    clearInterval(beat);
  }
  noteResults(outcome, results);
  res.end(plan.format.end(results));
  return results;
}

/**
 * Routes a generation and serves it. The plan may depend on the route (for example whether the
 * chosen model can fill in the middle). A routing refusal (RouteError) goes to the error boundary.
 */
export async function routeAndServe(
  router: Router,
  policy: GenerationPolicy,
  req: ApiRequest,
  res: ServerResponse,
  input: RouteInput,
  plan: GenerationPlan | PlanForRoute,
): Promise<void> {
  // Held from the start, so that history keeps a request refused while it is routed (a model no
  // backend has), or left by its client meanwhile (ghost text at the next keystroke); serving it
  // puts the whole outcome in its place.
  const request = requestOf(req);
  const unserved = refusedOutcome(input.requestedModel, null);
  request.generation = unserved;
  try {
    const route = await router.route(input);
    requireModelAllowed(req, input.requestedModel, route.model);
    const localOnly = policy.localOnly(req.headers, identityOf(req), route.model);
    if (localOnly !== null && policy.isCloudModel(route.model)) {
      const reason = `'${route.model}' runs in a cloud, and this request must stay local (${localOnly})`;
      throw new BridgeError(403, reason, { code: 'cloud_not_allowed' });
    }
    const resolved = typeof plan === 'function' ? await plan(route) : plan;
    await serveGeneration(policy, req, res, route, resolved, input, localOnly ?? loadOnly(resolved));
  } catch (error) {
    if (request.generation === unserved) unserved.error = unserved.reason = (error as Error).message;
    throw error;
  }
}

/**
 * A native request with nothing to generate loads the model (with keep_alive 0: unloads it), as
 * Ollama reads it: only a local backend can do that, a cloud provider would answer or refuse it.
 */
function loadOnly(plan: GenerationPlan): string | null {
  const body = plan.bodies[0] ?? {};
  const empty = (field: string): boolean => body[field] === undefined || body[field] === '';
  const nothing =
    plan.path === '/api/chat' ? Array.isArray(body.messages) && body.messages.length === 0 : ['prompt', 'suffix', 'system', 'template'].every(empty);
  return nothing ? 'a model load or unload is for a local backend' : null;
}
