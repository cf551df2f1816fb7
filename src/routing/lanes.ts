import type { Config } from '../config/schema.js';
import { LANES, type Lane } from '../control/api-types.js';

export { LANES, type Lane } from '../control/api-types.js';

export type LaneRule = Config['routing']['scheduler']['lane_rules'][number];

/** What any surface knows about a request that decides its lane. */
export interface LaneInput {
  /** The request kind from its signals; embeddings are not generations but queue all the same. */
  kind: 'fim' | 'completion' | 'chat' | 'embedding';
  /** The path the client asked for. */
  path: string;
  /** Request headers as Node gives them (lower-case names). */
  headers: Readonly<Record<string, string | string[] | undefined>>;
}

function header(input: LaneInput, name: string): string | undefined {
  const value = input.headers[name.toLowerCase()];
  return Array.isArray(value) ? value.join(',') : value;
}

/** Copilot's X-Interaction-Type values for work no one is waiting on. */
const BACKGROUND_INTERACTIONS = ['conversation-background', 'conversation-subagent'];

export const laneRank = (lane: Lane): number => LANES.indexOf(lane);

/**
 * The lane of one request and why. Config rules first (first match wins); then ghost text
 * (Copilot's engine completions, a completion with a suffix) is `fim`; embeddings and work the
 * client marks as background (X-Interaction-Type conversation-background / -subagent, an
 * OpenAI-Intent that names a summary) are `background`; everything else is `interactive`.
 */
export function classifyLane(input: LaneInput, rules: readonly LaneRule[]): { lane: Lane; why: string } {
  for (const rule of rules) {
    const value = rule.header === undefined ? undefined : header(input, rule.header);
    const headerMatches = rule.header === undefined || (value !== undefined && (rule.contains === undefined || value.toLowerCase().includes(rule.contains.toLowerCase())));
    const agent = header(input, 'user-agent') ?? '';
    const clientMatches = rule.client === undefined || agent.toLowerCase().includes(rule.client.toLowerCase());
    if (headerMatches && clientMatches) return { lane: rule.lane, why: `lane rule ${rule.header ?? ''}${rule.client === undefined ? '' : ` client ${rule.client}`}`.trim() };
  }
  if (input.kind === 'fim' || input.path.startsWith('/v1/engines/')) return { lane: 'fim', why: 'ghost text' };
  if (input.kind === 'embedding') return { lane: 'background', why: 'embeddings' };
  const interaction = header(input, 'x-interaction-type')?.toLowerCase();
  if (interaction !== undefined && BACKGROUND_INTERACTIONS.includes(interaction)) return { lane: 'background', why: `X-Interaction-Type ${interaction}` };
  const intent = header(input, 'openai-intent')?.toLowerCase();
  if (intent !== undefined && intent.includes('summar')) return { lane: 'background', why: `OpenAI-Intent ${intent}` };
  return { lane: 'interactive', why: 'interactive' };
}

/**
 * Who typed a ghost-text request, so a newer one from the same editor supersedes it: the
 * editor session when the client names one (VS Code sends vscode-sessionid), else its address
 * and User-Agent.
 */
export function clientKey(input: LaneInput, remoteAddress: string | undefined): string {
  const session = header(input, 'vscode-sessionid') ?? header(input, 'x-client-session-id');
  if (session !== undefined) return `session:${session}`;
  return `${remoteAddress ?? '?'}|${header(input, 'user-agent') ?? ''}`;
}
