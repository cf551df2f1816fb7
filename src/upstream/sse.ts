import type { Readable } from 'node:stream';
import { LineTooLongError, readLines } from './lines.js';

export interface SseEvent {
  event: string | undefined;
  data: string;
}

/** Parses a text/event-stream body into events as they arrive (data lines joined, comments skipped). */
export async function* readSse(body: Readable, maxLineBytes: number): AsyncGenerator<SseEvent, void, undefined> {
  let event: string | undefined;
  let data: string[] = [];
  let size = 0;
  const flush = function* (): Generator<SseEvent> {
    if (data.length > 0) yield { event, data: data.join('\n') };
    event = undefined;
    data = [];
    size = 0;
  };
  let first = true;
  for await (let line of readLines(body, maxLineBytes, { sseLineEnds: true })) {
    if (first) {
      // A byte order mark before the stream is no part of its first field (the SSE spec drops it):
      // kept, it hid a first "data:" line, and that event's text was lost.
      first = false;
      if (line.startsWith('\uFEFF')) line = line.slice(1);
    }
    if (line === '') yield* flush();
    else if (line.startsWith('data:')) {
      const value = line.slice(5).replace(/^ /, '');
      // An event of many data lines is held whole: it is bounded like one line.
      size += value.length;
      if (size > maxLineBytes) throw new LineTooLongError(maxLineBytes);
      data.push(value);
    } else if (line.startsWith('event:')) event = line.slice(6).trim();
  }
  yield* flush();
}
