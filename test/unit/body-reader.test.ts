import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { PassThrough, type Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { brotliCompressSync, constants, deflateSync, gzipSync } from 'node:zlib';
import { BodyError, readJsonBody } from '../../src/http/body.js';

/** A chunked request body labelled with `encoding`, and the streams the reader pipes it into (its decoder). */
function encodedRequest(encoding: string): { req: IncomingMessage; body: PassThrough; decoders: Writable[] } {
  const body = new PassThrough();
  const decoders: Writable[] = [];
  const pipe = body.pipe.bind(body);
  const req = Object.assign(body, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'content-encoding': encoding, 'transfer-encoding': 'chunked' },
    complete: false,
    pipe: <T extends NodeJS.WritableStream>(destination: T, options?: { end?: boolean }): T => {
      decoders.push(destination as unknown as Writable);
      return pipe(destination, options);
    },
  });
  return { req: req as unknown as IncomingMessage, body, decoders };
}

const noAnswer = {} as ServerResponse;

describe('the body reader', () => {
  // 64 MiB of zeros: a few kilobytes compressed (brotli: a few hundred bytes for gigabytes).
  const zeros = Buffer.alloc(64 * 1024 * 1024);
  const bombs: Array<[string, Buffer]> = [
    ['gzip', gzipSync(zeros)],
    ['deflate', deflateSync(zeros)],
    ['br', brotliCompressSync(zeros, { params: { [constants.BROTLI_PARAM_QUALITY]: 5 } })],
  ];

  for (const [encoding, bomb] of bombs) {
    it(`stops decoding a ${encoding} body once it is refused as too large: a small one may inflate to gigabytes`, async () => {
      const { req, body, decoders } = encodedRequest(encoding);
      body.write(bomb);
      await assert.rejects(
        readJsonBody(req, noAnswer, 1024 * 1024, 5_000),
        (error: unknown) => error instanceof BodyError && error.type === 'entity.too.large',
      );
      assert.equal(decoders.length, 1);
      assert.ok(decoders[0]?.destroyed, 'the decoder still works through the rest after the refusal');
    });
  }

  it('stops decoding a compressed body that did not arrive in time', async () => {
    const { req, body, decoders } = encodedRequest('gzip');
    body.write(gzipSync('{"model":"m"}').subarray(0, 12));
    await assert.rejects(readJsonBody(req, noAnswer, 1024 * 1024, 50), (error: unknown) => error instanceof BodyError && error.type === 'request.timeout');
    assert.ok(decoders[0]?.destroyed);
  });
});
