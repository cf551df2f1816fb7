// The bridge's plumbing without any of its features: node:http's request event, the body parsed
// and serialized again, undici's dispatcher to the upstream (as the bridge sends generations),
// every answer line (NDJSON, or an SSE data line) parsed and serialized again, the upstream
// aborted when the client leaves. What routing, scheduling, translation, history and metrics cost
// is the bridge's figure minus this one. Usage: plumbing-proxy.ts <port> <upstream port>
import http from 'node:http';
import { Pool, type Dispatcher } from 'undici';

const [port, upstreamPort] = process.argv.slice(2).map(Number) as [number, number];
const host = `127.0.0.1:${upstreamPort}`;
const pool = new Pool(`http://${host}`, { keepAliveTimeout: 10_000 });

/** One answer line as a proxy that reads it writes it again. */
function again(line: string): string {
  if (line.startsWith('data: {')) return `data: ${JSON.stringify(JSON.parse(line.slice(6)))}`;
  return line.startsWith('{') ? JSON.stringify(JSON.parse(line)) : line;
}

http
  .createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = JSON.stringify(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      let controller: Dispatcher.DispatchController | undefined;
      let pending = '';
      res.on('close', () => {
        if (!res.writableFinished) controller?.abort(new Error('client left'));
      });
      pool.dispatch(
        { method: 'POST', path: req.url ?? '/', headers: { 'content-type': 'application/json', host }, body },
        {
          onRequestStart: (dispatch) => {
            controller = dispatch;
          },
          onResponseStart: (_dispatch, status, headers) => {
            res.statusCode = status;
            res.setHeader('content-type', String(headers['content-type']));
          },
          onResponseData: (_dispatch, chunk) => {
            const lines = (pending + chunk.toString('utf8')).split('\n');
            pending = lines.pop() ?? '';
            if (lines.length > 0) res.write(`${lines.map(again).join('\n')}\n`);
          },
          onResponseEnd: () => {
            res.end(pending === '' ? undefined : again(pending));
          },
          onResponseError: () => {
            res.destroy();
          },
        },
      );
    });
  })
  .listen(port, '127.0.0.1', () => process.send?.('ready'));
