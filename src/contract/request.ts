import type { Lane, Tier } from './types.js';

/** Why the scheduler answered a request without sending it upstream. */
export type DropReason = 'superseded' | 'deadline' | 'stopping';

const DROP_MESSAGES: Record<DropReason, string> = {
  superseded: 'superseded by a newer ghost-text request',
  deadline: 'waited longer than fim_max_wait_ms',
  stopping: 'the bridge is stopping',
};

/** What a dropped request's history record and error say. */
export const dropMessage = (reason: DropReason): string => DROP_MESSAGES[reason];

/** The client API a request speaks, decided once from its path; it also decides the error shape. */
export type Surface = 'ollama' | 'openai' | 'anthropic';

/** What a request's headers say about the client that sent it. */
export interface RequestClient {
  /** Normalized name: copilot, claude-code, codex, continue, ...; other when unknown. */
  name: string;
  userAgent: string | null;
  /** Copilot's X-Interaction-Type (conversation-agent, conversation-subagent, conversation-background, ...). */
  interaction: string | null;
  /** Copilot's OpenAI-Intent (conversation-panel, agent, inline, edits, summary, ...). */
  intent: string | null;
  /** The client's own id for the request (X-Request-Id, or Codex's X-Client-Request-Id). */
  requestId: string | null;
}

export type Role = 'admin' | 'user' | 'viewer';

/** Limits of one identity or team; a missing figure means no limit. */
export interface RateLimits {
  rpm?: number;
  tpm?: number;
  concurrency?: number;
}

/** Who sent a request (a key's name, a JWT's subject, the control token, the local user). Never holds the key or token itself. */
export interface RequestIdentity {
  readonly name: string;
  readonly team: string | null;
  readonly role: Role;
  /** How the identity was established. */
  readonly via: 'key' | 'api_key' | 'jwt' | 'control' | 'anonymous';
  /** Model patterns this identity may use; undefined: any model. */
  readonly models: readonly string[] | undefined;
  readonly cloud: 'allow' | 'never';
  readonly limits: RateLimits | undefined;
  /** When the credential stops being accepted (a JWT's exp), in ms since the epoch; absent when it does not expire. */
  readonly expiresAt?: number;
}

/** How a generation was routed and served, filled in by the generation pipeline as it goes. */
export interface GenerationOutcome {
  requestedModel: string;
  tier: Tier | null;
  /** Why it went where it went, fallback included; also sent as a response header. */
  reason: string;
  /** The model the request was routed to. */
  model: string;
  /** The backend or provider that answered; null when none did. */
  source: string | null;
  retries: number;
  fallback: string | null;
  /** Milliseconds until the first answer line. */
  firstTokenMs: number | null;
  /** Prompt tokens of every choice's run (n choices run the prompt n times). */
  tokensIn: number | null;
  /** The prompt counted once, as a cloud bills n choices: the largest count of a choice's run. */
  promptTokens: number | null;
  tokensOut: number | null;
  /** Seconds the source spent generating, as it measured them (Ollama's eval_duration). */
  evalSeconds: number | null;
  /** The answer's text per choice (with its tool calls); only the log reads it, with log_prompts on. */
  answer: Array<{ content: string; toolCalls?: unknown[] }> | null;
  error: string | null;
  /** Why cloud providers were not asked, when a never-cloud policy applied. */
  localOnly: string | null;
  /** Time on a GPU and the energy charged to this request (its share while others ran too). */
  gpuMs: number | null;
  energyJoules: number | null;
  /** The scheduling lane. */
  lane: Lane;
  /** Milliseconds spent in the bridge's queue, over all tries. */
  queueMs: number;
  /** Ghost text the scheduler answered empty instead of sending it upstream. */
  dropped: DropReason | null;
}

/** What came back of a request passed through to a backend as it is. */
export interface RelayOutcome {
  /** Milliseconds from the start of the relay to the first body chunk, if any came. */
  firstChunkMs: number | null;
  bytes: number;
  /** Set when the upstream broke off after the response had started. */
  error: string | null;
  /** The client went away before the end. */
  clientAborted: boolean;
}

/** How the exchange ended, set when the connection closes. */
export interface RequestEnd {
  status: number;
  totalMs: number;
  /** The whole answer was handed to the client (false: it left, or the stream was cut). */
  completed: boolean;
}

/**
 * One client request, created when it arrives and filled in by whoever serves it: the one typed
 * hand-off between the HTTP server, the API surfaces, the history and the metrics.
 */
export interface RequestRecord {
  readonly id: string;
  readonly startedAt: Date;
  readonly method: string;
  /** The path the client asked for (mounted routers rewrite req.path on the way). */
  readonly path: string;
  readonly surface: Surface;
  readonly client: RequestClient;
  identity: RequestIdentity | null;
  /** The backend the request went to (pass-through, embeddings, generation). */
  backend: string | null;
  generation: GenerationOutcome | null;
  relay: RelayOutcome | null;
  /** Why the upstream could not be asked, as an error code. */
  upstreamError: string | null;
  end: RequestEnd | null;
}
