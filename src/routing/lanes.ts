import type { Config } from '../config/schema.js';
import { LANES, type Lane } from '../contract/index.js';
import type { ClientSignals, HeaderBag } from './signals.js';

export { LANES, type Lane } from '../contract/index.js';

export type LaneRule = Config['routing']['scheduler']['lane_rules'][number];

/** What any surface knows about a request that decides its lane. */
export interface LaneInput {
  /** The request kind from its signals; embeddings are not generations but queue all the same. */
  kind: 'fim' | 'completion' | 'chat' | 'embedding';
  /** The path the client asked for. */
  path: string;
  /** Request headers as Node gives them (lower-case names), for config rules. */
  headers: HeaderBag;
  /** What the client says about itself and the request (every surface reads it from the headers). */
  client: Pick<ClientSignals, 'name' | 'userAgent' | 'background' | 'interaction' | 'intent'>;
}

function header(input: LaneInput, name: string): string | undefined {
  const value = input.headers[name.toLowerCase()];
  return Array.isArray(value) ? value.join(',') : value;
}

/** The client as the bridge reads it (openai-sdk for "OpenAI/Python 1.82"), or text of its User-Agent, letter case aside. */
function clientIs(client: LaneInput['client'], wanted: string): boolean {
  return client.name === wanted || (client.userAgent ?? '').toLowerCase().includes(wanted);
}

export const laneRank = (lane: Lane): number => LANES.indexOf(lane);

/**
 * The lane of one request and why. Config rules first (first match wins); then ghost text
 * (Copilot's engine completions, a completion with a suffix) is `fim`; embeddings and work the
 * client marks as background (Copilot's X-Interaction-Type conversation-background / -subagent,
 * an OpenAI-Intent for a summary or a title: see the client signals) are `background`;
 * everything else is `interactive`.
 */
export function classifyLane(input: LaneInput, rules: readonly LaneRule[]): { lane: Lane; why: string } {
  for (const rule of rules) {
    const value = rule.header === undefined ? undefined : header(input, rule.header);
    const headerMatches =
      rule.header === undefined || (value !== undefined && (rule.contains === undefined || value.toLowerCase().includes(rule.contains.toLowerCase())));
    const clientMatches = rule.client === undefined || clientIs(input.client, rule.client.toLowerCase());
    if (headerMatches && clientMatches)
      return { lane: rule.lane, why: `lane rule ${rule.header ?? ''}${rule.client === undefined ? '' : ` client ${rule.client}`}`.trim() };
  }
  if (input.kind === 'fim' || input.path.startsWith('/v1/engines/')) return { lane: 'fim', why: 'ghost text' };
  if (input.kind === 'embedding') return { lane: 'background', why: 'embeddings' };
  if (input.client.background) return { lane: 'background', why: `marked background by the client (${input.client.interaction ?? input.client.intent})` };
  return { lane: 'interactive', why: 'interactive' };
}

/**
 * Who typed a ghost-text request, so a newer one from the same editor supersedes it: the
 * editor session when the client names one (VS Code sends vscode-sessionid), else its address
 * and User-Agent. Behind nginx or HAProxy every request comes from the balancer's address, so the
 * X-Forwarded-For chain counts too; it only tells clients apart (the balancer appends the real
 * address, and the socket's is in the key), never makes one client another. With keys, who the
 * client is (`identity`, null for the anonymous local user) is part of it: a session id is the
 * client's to send, and one user's must not drop another's ghost text.
 */
export function clientKey(input: LaneInput, remoteAddress: string | undefined, identity: string | null): string {
  const who = identity === null ? '' : `${identity}|`;
  const session = header(input, 'vscode-sessionid') ?? header(input, 'x-client-session-id');
  if (session !== undefined) return `${who}session:${session}`;
  const forwardedFor = header(input, 'x-forwarded-for');
  return `${who}${remoteAddress ?? '?'}${forwardedFor === undefined ? '' : ` for ${forwardedFor}`}|${input.client.userAgent ?? ''}`;
}
