import { chmodSync, statSync } from 'node:fs';
import path from 'node:path';
import { pino, type Logger, type LoggerOptions } from 'pino';
import type { Config } from './config/schema.js';
import { makeFolder } from './files.js';

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

/** A log the bridge opened itself, and how to close it: its last lines written, or given up on. */
export interface OwnedLog {
  logger: Logger;
  /**
   * Opens the log file anew at its path, after logrotate moved it away (its create mode); false
   * for standard output, or a log that can no longer be written.
   */
  reopen(): boolean;
  close(): Promise<void>;
}

type LogStream = ReturnType<typeof pino.destination>;

/** Lines from now on go nowhere, and the flush at exit has nothing left to write. */
function dropLines(stream: LogStream): void {
  stream.write = () => true;
  stream.flushSync = () => undefined;
  stream.end = () => undefined;
}

/**
 * JSON logs, one line per event. Request logs carry method, path, status, backend and timings,
 * never request or answer text (monitoring.logging.log_prompts opts in). A log that can no longer
 * be written (its reader gone: EPIPE; a full disk: ENOSPC) is let go, said once on stderr, and the
 * bridge keeps serving: pino's flush at exit would retry such a write every 100 ms for ever, and
 * an error it passes on would end the process (into that flush).
 */
export function openLog(config: Config): OwnedLog {
  const { level, destination } = config.monitoring.logging;
  let stream: LogStream;
  const toFile = destination !== 'stdout';
  if (!toFile) stream = pino.destination({ dest: 1, sync: false });
  else {
    makeFolder(destination);
    const file = path.join(destination, 'copilot-bridge.log');
    keepLogPrivate(file);
    stream = pino.destination({ dest: file, sync: false, mode: LOG_FILE_MODE });
  }
  let unwritable = false;
  stream.on('error', (error: NodeJS.ErrnoException) => {
    if (unwritable) return;
    unwritable = true;
    dropLines(stream);
    // stderr may be the same broken pipe: a failed write there must not end the process either.
    process.stderr.once('error', () => undefined);
    process.stderr.write(`copilot-bridge: the log cannot be written (${error.code ?? error.message}); log lines are dropped from now on\n`);
  });
  return {
    logger: pino(logOptions(level), stream),
    reopen: () => {
      if (!toFile || unwritable) return false;
      // Lines written meanwhile wait for the new file; it is created with LOG_FILE_MODE.
      stream.reopen();
      return true;
    },
    close: () =>
      new Promise<void>((resolve) => {
        if (unwritable) return resolve();
        stream.once('close', () => resolve());
        stream.once('error', () => resolve());
        stream.end();
        dropLines(stream);
      }),
  };
}
