import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { pino, type Logger } from 'pino';
import type { Config } from './config/schema.js';

export type { Logger } from 'pino';

/**
 * JSON logs, one line per event. Request logs carry method, path, status, backend and timings,
 * never request or answer text (monitoring.logging.log_prompts opts in).
 */
export function createLogger(config: Config): Logger {
  const { level, destination } = config.monitoring.logging;
  const options = {
    name: 'copilot-bridge',
    level,
    // A key leaking into a log line is worse than a missing field.
    redact: { paths: ['headers.authorization', 'headers["x-api-key"]', '*.api_key', '*.cloud_api_key'], censor: '[redacted]' },
  };
  if (destination === 'stdout') return pino(options);
  mkdirSync(destination, { recursive: true });
  return pino(options, pino.destination({ dest: path.join(destination, 'copilot-bridge.log'), mkdir: true, sync: false }));
}
