import type { Config } from '../config/schema.js';
import { TIERS, type Tier } from '../contract/index.js';

export { TIERS, type Tier } from '../contract/index.js';
import type { ClientSignals } from './signals.js';

/** What a surface tells the router about a request; no text leaves this object except keywords matched. */
export interface RequestSignals {
  /** fill-in-the-middle / inline completion, a plain completion, or a chat turn */
  kind: 'fim' | 'completion' | 'chat';
  /** The latest user turn (or the prompt of a completion). */
  userText: string;
  systemText: string;
  /** Number of user turns in the conversation. */
  turns: number;
  /** Characters of all messages / 4: a cheap token estimate. */
  approxTokens: number;
  tools: boolean;
  images: boolean;
  /** Who sent it and why (headers): lanes and routing rules read these. */
  client: ClientSignals;
}

export interface Classification {
  tier: Tier;
  /** Short and human: "complex: keyword 'architect'; tools present". */
  reason: string;
}

function keywordPattern(words: readonly string[]): RegExp | undefined {
  const escaped = words.map((w) => w.trim().replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).filter(Boolean);
  // Blank words trim away; an empty alternation would match every request.
  if (escaped.length === 0) return undefined;
  // Word boundaries that also work for keywords such as "c++" or "ci/cd".
  return new RegExp(`(?<![\\p{L}\\p{N}_])(?:${escaped.join('|')})(?![\\p{L}\\p{N}_])`, 'iu');
}

const rank = (tier: Tier): number => TIERS.indexOf(tier);
const higher = (a: Tier, b: Tier): Tier => (rank(a) >= rank(b) ? a : b);

/** Puts each request in a tier from the config's keyword lists and the request's own signals. */
export class Classifier {
  private readonly patterns: Array<{ tier: Tier; pattern: RegExp }>;
  private readonly defaultTier: Tier;
  private readonly longContextTokens: number;
  private readonly manyTurns: number;

  constructor(classification: Config['routing']['classification']) {
    // Highest tier first: a request that names both "format" and "architect" is complex.
    this.patterns = (
      [
        ['complex', keywordPattern(classification.complex_keywords)],
        ['moderate', keywordPattern(classification.moderate_keywords)],
        ['simple', keywordPattern(classification.simple_keywords)],
      ] as const
    ).flatMap(([tier, pattern]) => (pattern === undefined ? [] : [{ tier, pattern }]));
    this.defaultTier = classification.default_tier;
    this.longContextTokens = classification.long_context_tokens;
    this.manyTurns = classification.many_turns;
  }

  classify(signals: RequestSignals): Classification {
    if (signals.kind === 'fim') return { tier: 'simple', reason: 'simple: fill-in-the-middle completion' };
    const reasons: string[] = [];
    let tier: Tier | undefined;
    // The user's own turn first: a client sends one system prompt with every request, and its words
    // (Copilot's mention "implement") would otherwise put every question in one tier.
    for (const text of [signals.userText, signals.systemText]) {
      const found = this.match(text);
      if (found !== undefined) {
        tier = found.tier;
        reasons.push(`keyword '${found.keyword}'`);
        break;
      }
    }
    if (tier === undefined) {
      tier = signals.kind === 'completion' ? 'simple' : this.defaultTier;
      reasons.push(signals.kind === 'completion' ? 'plain completion' : 'no keyword');
    }
    if (signals.tools && tier !== 'complex') {
      tier = 'complex';
      reasons.push('tools present');
    }
    // long_context_tokens is where long starts (as many_turns is where many starts), so >=.
    if (signals.approxTokens >= this.longContextTokens && tier !== 'complex') {
      tier = 'complex';
      reasons.push(`long context (~${signals.approxTokens} tokens)`);
    }
    if (signals.turns >= this.manyTurns && rank(tier) < rank('moderate')) {
      tier = higher(tier, 'moderate');
      reasons.push(`${signals.turns} turns`);
    }
    return { tier, reason: `${tier}: ${reasons.join('; ')}` };
  }

  /** The highest tier with a keyword in `text`, and the keyword. */
  private match(text: string): { tier: Tier; keyword: string } | undefined {
    for (const { tier, pattern } of this.patterns) {
      const match = pattern.exec(text);
      if (match !== null) return { tier, keyword: match[0].toLowerCase() };
    }
    return undefined;
  }
}
