import type { OllamaMessage } from '../upstream/ollama-api.js';
import type { RequestSignals } from './classify.js';
import type { Capability } from './router.js';

/** Signals of a chat conversation in Ollama's message form (other surfaces translate to it first). */
export function chatSignals(messages: readonly OllamaMessage[], tools: boolean): RequestSignals {
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
  return { kind: 'chat', userText, systemText: system.join('\n'), turns, approxTokens: Math.round(chars / 4), tools, images };
}

/** Signals of a prompt completion; with a suffix it is fill-in-the-middle. */
export function completionSignals(prompt: string, suffix: string | undefined, system = ''): RequestSignals {
  return {
    kind: suffix !== undefined && suffix !== '' ? 'fim' : 'completion',
    userText: prompt,
    systemText: system,
    turns: 1,
    approxTokens: Math.round((prompt.length + (suffix?.length ?? 0) + system.length) / 4),
    tools: false,
    images: false,
  };
}

/** The model capabilities a request uses: a virtual model escalates to a tier whose model has them. */
export function needsOf(signals: RequestSignals): Capability[] {
  const needs: Capability[] = [];
  if (signals.tools) needs.push('tools');
  if (signals.images) needs.push('vision');
  if (signals.kind === 'fim') needs.push('insert');
  return needs;
}
