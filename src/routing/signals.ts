import type { OllamaMessage } from '../upstream/ollama-api.js';
import type { RequestSignals } from './classify.js';
import type { Capability } from './router.js';

/** Request headers as Node gives them (lower-case names). */
export type HeaderBag = Readonly<Record<string, string | string[] | undefined>>;

/** Client names the bridge recognizes; anything else is 'other'. A bounded set, fit for metric labels. */
export const CLIENT_NAMES = [
  'copilot',
  'claude-code',
  'codex',
  'continue',
  'cline',
  'aider',
  'opencode',
  'zed',
  'llm',
  'ai-sdk',
  'ollama',
  'openai-sdk',
  'anthropic-sdk',
  'other',
] as const;
export type ClientName = (typeof CLIENT_NAMES)[number];

/** What the client says about itself and about why it sends this request (every surface fills it from the headers). */
export interface ClientSignals {
  /** Normalized client name, from originator or User-Agent. */
  name: ClientName;
  userAgent: string | null;
  /** Copilot's X-Interaction-Type: conversation-agent, conversation-subagent, conversation-background, ... */
  interaction: string | null;
  /** Copilot's OpenAI-Intent: conversation-panel, agent, inline, edits, summary, ... */
  intent: string | null;
  /** The client's own id for the request (X-Request-Id, or Codex's X-Client-Request-Id). */
  requestId: string | null;
  /** Codex's originator header (codex_cli_rs, codex_exec, codex_vscode, ...). */
  originator: string | null;
  /** anthropic-version, sent by every Anthropic client. */
  anthropicVersion: string | null;
  /** Whether the client marked the request as background work (subagents, summaries, title generation). */
  background: boolean;
}

/** User-Agent patterns, most specific first; the first match names the client. */
const CLIENT_PATTERNS: ReadonlyArray<[RegExp, ClientName]> = [
  [/claude-cli|claude-code/i, 'claude-code'],
  [/^codex|codex_(?:cli|exec|vscode)/i, 'codex'],
  [/copilot/i, 'copilot'],
  [/continue/i, 'continue'],
  [/cline|roo-?code/i, 'cline'],
  [/aider/i, 'aider'],
  [/opencode/i, 'opencode'],
  [/^zed\b/i, 'zed'],
  [/^llm\//i, 'llm'],
  [/ai-sdk|vercel/i, 'ai-sdk'],
  [/^ollama/i, 'ollama'],
  [/^anthropic\//i, 'anthropic-sdk'],
  [/^openai\//i, 'openai-sdk'],
];

const BACKGROUND_INTERACTIONS = new Set(['conversation-background', 'conversation-subagent']);
const BACKGROUND_INTENTS = new Set(['summary', 'conversation-summary', 'title', 'conversation-title', 'progress-messages']);

const NOT_PRINTABLE = /[^\x20-\x7e]/;
const NOT_PRINTABLE_ALL = /[^\x20-\x7e]/g;

/**
 * The longest header value the bridge writes. It echoes names a client chose (a model of any
 * length), and clients refuse a response head over 16 KB (node's and undici's limit).
 */
export const HEADER_VALUE_MAX = 1024;

/** Text fit for a header value: each character outside printable ASCII as '?', at most HEADER_VALUE_MAX characters (a longer text cut, ending in "..."). */
export function printable(text: string): string {
  const fitting = text.length > HEADER_VALUE_MAX ? `${text.slice(0, HEADER_VALUE_MAX - 3)}...` : text;
  return NOT_PRINTABLE.test(fitting) ? fitting.replace(NOT_PRINTABLE_ALL, '?') : fitting;
}

/** At most 200 printable characters of one header, or null. */
function header(headers: HeaderBag, name: string): string | null {
  const raw = headers[name];
  const value = Array.isArray(raw) ? raw[0] : raw;
  if (value === undefined || value === '') return null;
  return printable(value.length > 200 ? value.slice(0, 200) : value);
}

/** The client's name from Codex's originator or the User-Agent. */
export function clientName(userAgent: string | null, originator: string | null): ClientName {
  if (originator !== null && /^codex/i.test(originator)) return 'codex';
  if (userAgent === null) return 'other';
  return CLIENT_PATTERNS.find(([pattern]) => pattern.test(userAgent))?.[1] ?? 'other';
}

/** Signals already read, by the headers object of their request (several layers ask for them). */
const readSignals = new WeakMap<HeaderBag, ClientSignals>();

/** The client signals of one request, read from its headers once; the same object each time, not to be changed. */
export function clientSignals(headers: HeaderBag): ClientSignals {
  let signals = readSignals.get(headers);
  if (signals === undefined) {
    signals = readClientSignals(headers);
    readSignals.set(headers, signals);
  }
  return signals;
}

function readClientSignals(headers: HeaderBag): ClientSignals {
  const userAgent = header(headers, 'user-agent');
  const originator = header(headers, 'originator');
  const interaction = header(headers, 'x-interaction-type');
  const intent = header(headers, 'openai-intent');
  return {
    name: clientName(userAgent, originator),
    userAgent,
    interaction,
    intent,
    requestId: header(headers, 'x-request-id') ?? header(headers, 'x-client-request-id'),
    originator,
    anthropicVersion: header(headers, 'anthropic-version'),
    background: (interaction !== null && BACKGROUND_INTERACTIONS.has(interaction)) || (intent !== null && BACKGROUND_INTENTS.has(intent)),
  };
}

/** Signals of a chat conversation in Ollama's message form (other surfaces translate to it first). */
export function chatSignals(messages: readonly OllamaMessage[], tools: boolean, client: ClientSignals): RequestSignals {
  let chars = 0;
  let turns = 0;
  let userText = '';
  const system: string[] = [];
  let images = false;
  for (const message of messages) {
    const content = message.content ?? '';
    chars += content.length;
    if (message.images !== undefined && message.images.length > 0) images = true;
    if (message.role === 'user') {
      turns += 1;
      userText = content;
    } else if (message.role === 'system') {
      system.push(content);
    }
  }
  return { kind: 'chat', userText, systemText: system.join('\n'), turns, approxTokens: Math.round(chars / 4), tools, images, client };
}

/** Signals of a prompt completion; with a suffix it is fill-in-the-middle. */
export function completionSignals(client: ClientSignals, prompt: string, suffix: string | undefined, system = ''): RequestSignals {
  return {
    kind: suffix !== undefined && suffix !== '' ? 'fim' : 'completion',
    userText: prompt,
    systemText: system,
    turns: 1,
    approxTokens: Math.round((prompt.length + (suffix?.length ?? 0) + system.length) / 4),
    tools: false,
    images: false,
    client,
  };
}

/**
 * The prefix and suffix markers of the fill-in-the-middle prompts clients build themselves and
 * send raw (Continue's autocomplete templates, used where a model's Ollama template has no .Suffix).
 */
const FIM_MARKERS: ReadonlyArray<readonly [string, string]> = [
  ['<|fim_prefix|>', '<|fim_suffix|>'], // Qwen2.5-Coder, CodeGemma
  ['<fim_prefix>', '<fim_suffix>'], // StarCoder, Stable Code
  ['<｜fim▁begin｜>', '<｜fim▁hole｜>'], // DeepSeek Coder
  ['<PRE>', '<SUF>'], // Code Llama
  ['[PREFIX]', '[SUFFIX]'], // Codestral
  ['<|code_prefix|>', '<|code_suffix|>'], // CodeGeeX
];

/** Whether a prompt is a fill-in-the-middle template already filled in: it holds both markers of one model family. */
export function isFimPrompt(prompt: string): boolean {
  return FIM_MARKERS.some(([prefix, suffix]) => prompt.includes(prefix) && prompt.includes(suffix));
}

/**
 * The model capabilities a request uses: a virtual model escalates to a tier whose model has them.
 * Fill-in-the-middle needs `insert` only with a suffix that has text (as Ollama checks it), so the
 * surfaces that take a suffix add that need themselves.
 */
export function needsOf(signals: RequestSignals): Capability[] {
  const needs: Capability[] = [];
  if (signals.tools) needs.push('tools');
  if (signals.images) needs.push('vision');
  return needs;
}
