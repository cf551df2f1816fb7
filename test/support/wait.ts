import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';

/**
 * Waits for a condition that something outside the test process (a timer, a child, a socket)
 * makes true: resolves with the first value `read` gives that is not undefined, and fails the test
 * after `timeoutMs`. The short pause between looks only spares the CPU; the condition decides.
 */
export async function until<T>(read: () => T | undefined, what: string, timeoutMs = 5000): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = read();
    if (value !== undefined) return value;
    if (performance.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await delay(10);
  }
}
