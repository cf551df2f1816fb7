import type { Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';

export interface SseEvent {
  event: string | undefined;
  data: string;
}

/** Parses a text/event-stream body into events as they arrive (data lines joined, comments skipped). */
export async function* readSse(body: Readable): AsyncGenerator<SseEvent, void, undefined> {
  const decoder = new StringDecoder('utf8');
  let pending = '';
  let event: string | undefined;
  let data: string[] = [];
  const flush = function* (): Generator<SseEvent> {
    if (data.length > 0) yield { event, data: data.join('\n') };
    event = undefined;
    data = [];
  };
  for await (const chunk of body as AsyncIterable<Buffer>) {
    pending += decoder.write(chunk);
    let newline = pending.indexOf('\n');
    while (newline >= 0) {
      const line = pending.slice(0, newline).replace(/\r$/, '');
      pending = pending.slice(newline + 1);
      if (line === '') yield* flush();
      else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      else if (line.startsWith('event:')) event = line.slice(6).trim();
      newline = pending.indexOf('\n');
    }
  }
  yield* flush();
}
