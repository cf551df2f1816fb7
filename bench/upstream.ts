// A fast upstream stand-in that speaks just enough of Ollama for the benchmark: model lists,
// /api/ps, one-chunk answers, and slow streams whose chunk times it records.
// Usage: upstream.ts <port>. Reports stream events to the parent over IPC.
import http from 'node:http';

const [port] = process.argv.slice(2).map(Number);
const CREATED = '2025-01-01T00:00:00Z';
const final = `${JSON.stringify({ model: 'bench:1b', created_at: CREATED, message: { role: 'assistant', content: 'ok' }, response: 'ok', done: true, done_reason: 'stop', prompt_eval_count: 3, eval_count: 1, eval_duration: 1000 })}\n`;
const tags = JSON.stringify({ models: [{ name: 'bench:1b', model: 'bench:1b', modified_at: CREATED, size: 1, digest: 'd', details: {} }] });

http
  .createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.url === '/api/tags' || req.url === '/api/ps') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(req.url === '/api/tags' ? tags : '{"models":[]}');
        return;
      }
      // The benchmark asks for a slow stream in the body, which every proxy forwards as it is.
      const slow = (JSON.parse(Buffer.concat(chunks).toString() || '{}') as { bench_stream?: [number, number] }).bench_stream;
      if (slow === undefined) {
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        res.end(final);
        return;
      }
      // A stream of `count` lines, `gap` ms apart; each line carries the time it was written.
      const [count, gap] = slow;
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      let sent = 0;
      const timer = setInterval(() => {
        const line = { model: 'bench:1b', created_at: CREATED, message: { role: 'assistant', content: 'x' }, response: 'x', done: false, t: performance.timeOrigin + performance.now() };
        res.write(`${JSON.stringify(line)}\n`);
        if (++sent === count) {
          clearInterval(timer);
          res.end(final);
        }
      }, gap);
      res.on('close', () => {
        clearInterval(timer);
        if (!res.writableFinished) process.send?.({ aborted: performance.timeOrigin + performance.now() });
      });
    });
  })
  .listen(port, '127.0.0.1', () => process.send?.('ready'));
