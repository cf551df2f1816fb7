// Express with its JSON body parser and an undici pool piping the answer back, nothing else: how
// much of the bridge's overhead is the framework it is built on. Usage: express-proxy.ts <port> <upstream port>
import express from 'express';
import { Pool } from 'undici';

const [port, upstreamPort] = process.argv.slice(2).map(Number) as [number, number];
const pool = new Pool(`http://127.0.0.1:${upstreamPort}`);
const app = express();
app.use(express.json({ type: () => true }));
app.post(['/api/*rest', '/v1/*rest'], async (req, res) => {
  const answer = await pool.request({ method: 'POST', path: req.originalUrl, headers: { 'content-type': 'application/json' }, body: JSON.stringify(req.body) });
  res.status(answer.statusCode);
  res.setHeader('content-type', String(answer.headers['content-type']));
  answer.body.pipe(res);
});
app.listen(port, '127.0.0.1', () => process.send?.('ready'));
