import type { InstanceState } from './types.js';

/**
 * Which of Start, Stop and Restart do something for a managed Ollama in this state, for the tray
 * and the dashboard alike: one that runs (or is starting, or waits to restart after a crash) can be
 * stopped or restarted, one that does not can be started; one started outside the bridge neither.
 */
export function ollamaControls(state: InstanceState): { start: boolean; stop: boolean; restart: boolean } {
  const running = state === 'running' || state === 'starting' || state === 'crashed';
  return { start: !running && state !== 'adopted' && state !== 'stopping', stop: running, restart: running };
}
