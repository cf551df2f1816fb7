/** What a crashed Ollama shows until it is started again on its own: whole seconds, never below 0. */
export function restartCountdown(restartAt: string, nowMs: number): string {
  const seconds = Math.max(0, Math.ceil((Date.parse(restartAt) - nowMs) / 1000));
  return seconds === 0 ? 'restarting now' : `restarting in ${seconds} s`;
}
