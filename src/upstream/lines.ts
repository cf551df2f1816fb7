import type { Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';

/** An upstream sent a line (or a whole JSON answer, or a generation's gathered text) longer than the bridge takes. */
export class LineTooLongError extends Error {
  constructor(
    readonly limitBytes: number,
    what: 'a line' | 'an answer' = 'a line',
  ) {
    super(`sent ${what} longer than ${formatSize(limitBytes)} (routing.thresholds.max_line_mb)`);
    this.name = 'LineTooLongError';
  }
}

/** An answer line that is valid JSON but not an object (`[1,2]`, `"text"`, `null`). */
export class LineNotObjectError extends Error {
  constructor() {
    super('sent a line that is not a JSON object');
    this.name = 'LineNotObjectError';
  }
}

function formatSize(bytes: number): string {
  return bytes >= 1024 * 1024 ? `${Math.round((bytes / 1048576) * 10) / 10} MiB` : `${bytes} bytes`;
}

/**
 * Splits a body into lines as it arrives, without the line end: LF, or with `sseLineEnds` CRLF, LF
 * or a lone CR, as the SSE spec has them (a CR never ends an NDJSON line: JSON may hold one as
 * whitespace). A line may not grow past `maxLineBytes` (counted in characters, at most as many as
 * its bytes): an upstream that never ends a line must not fill the bridge's memory. Each chunk is
 * searched once, however long the line. A last piece without its line end is no line: the body
 * was cut off in it, and it is left out.
 */
export async function* readLines(body: Readable, maxLineBytes: number, { sseLineEnds = false } = {}): AsyncGenerator<string, void, undefined> {
  const decoder = new StringDecoder('utf8');
  const parts: string[] = [];
  let pendingLength = 0;
  /** The last chunk ended in a CR: a LF that starts the next one is the rest of its CRLF, no line end of its own. */
  let afterCr = false;
  const take = (tail: string): string => {
    const line = parts.length === 0 ? tail : parts.join('') + tail;
    parts.length = 0;
    pendingLength = 0;
    return line;
  };
  for await (const chunk of body as AsyncIterable<Buffer>) {
    const text = decoder.write(chunk);
    if (text === '') continue;
    let start: number = afterCr && text.startsWith('\n') ? 1 : 0;
    afterCr = false;
    let lf = text.indexOf('\n', start);
    let cr = sseLineEnds ? text.indexOf('\r', start) : -1;
    while (lf >= 0 || cr >= 0) {
      const end = cr >= 0 && (lf < 0 || cr < lf) ? cr : lf;
      if (pendingLength + end - start > maxLineBytes) throw new LineTooLongError(maxLineBytes);
      yield take(text.slice(start, end));
      start = end + 1;
      if (end === cr) {
        if (text[start] === '\n') start++;
        else afterCr = start === text.length;
        cr = text.indexOf('\r', start);
      }
      if (lf >= 0 && lf < start) lf = text.indexOf('\n', start);
    }
    if (start < text.length) {
      parts.push(text.slice(start));
      pendingLength += text.length - start;
      if (pendingLength > maxLineBytes) throw new LineTooLongError(maxLineBytes);
    }
  }
}

/** A whole body as text, of at most `maxBytes`: a JSON answer is one line too. */
export async function readText(body: Readable, maxBytes: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxBytes) {
      body.destroy();
      throw new LineTooLongError(maxBytes);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}
