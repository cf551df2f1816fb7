import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { pino, type Logger } from 'pino';
import type { Config } from './config/schema.js';

export type { Logger } from 'pino';

const LOG_FILE_MODE = 0o600;

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
  const file = path.join(destination, 'copilot-bridge.log');
  // The log names models, clients and errors (and prompts with log_prompts): this user's only.
  // An older version created it readable by everyone.
  if (existsSync(file)) chmodSync(file, LOG_FILE_MODE);
  return pino(options, pino.destination({ dest: file, mkdir: true, sync: false, mode: LOG_FILE_MODE }));
}
