import { chmodSync, mkdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { pino, type Logger, type LoggerOptions } from 'pino';
import type { Config } from './config/schema.js';

export type { Logger } from 'pino';

/** Logs name models, clients and errors (and prompts with log_prompts): this user's only. */
export const LOG_FILE_MODE = 0o600;

/**
 * Tightens a log an older version created readable by everyone. One that is a device (a log
 * pointed at /dev/null) is left alone: its mode is the system's, and a bridge run as root would
 * change it for every user.
 */
export function keepLogPrivate(file: string): void {
  const stat = statSync(file, { throwIfNoEntry: false });
  if (stat?.isFile() === true && (stat.mode & 0o777) !== LOG_FILE_MODE) chmodSync(file, LOG_FILE_MODE);
}

/**
 * An error as pino writes it, with its `name` as its type: pino takes the constructor's name,
 * which the minified bundle the command runs has renamed; the bridge's errors name themselves.
 */
function serializedError(error: unknown): unknown {
  const serialized = pino.stdSerializers.err(error as Error);
  return error instanceof Error ? { ...serialized, type: error.name } : serialized;
}

/** What every logger of the bridge writes: its name, level, redactions and error form. */
export function logOptions(level: string): LoggerOptions {
  return {
    name: 'copilot-bridge',
    level,
    // A key leaking into a log line is worse than a missing field.
    redact: { paths: ['headers.authorization', 'headers["x-api-key"]', '*.api_key', '*.cloud_api_key'], censor: '[redacted]' },
    serializers: { err: serializedError },
  };
}

/**
 * JSON logs, one line per event. Request logs carry method, path, status, backend and timings,
 * never request or answer text (monitoring.logging.log_prompts opts in).
 */
export function createLogger(config: Config): Logger {
  const { level, destination } = config.monitoring.logging;
  const options = logOptions(level);
  if (destination === 'stdout') return pino(options);
  mkdirSync(destination, { recursive: true });
  const file = path.join(destination, 'copilot-bridge.log');
  keepLogPrivate(file);
  return pino(options, pino.destination({ dest: file, mkdir: true, sync: false, mode: LOG_FILE_MODE }));
}
