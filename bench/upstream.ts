// A fast upstream stand-in that speaks just enough of Ollama (and of OpenAI's chat completions, for
// the floor and the direct call on the OpenAI path) for the benchmark: model lists, /api/ps,
// /api/show, one-line answers, and timed streams.
// A request whose body contains "bench-stream <count> <gap>" gets a stream of <count> content
// pieces, the first at once, then one every <gap> ms; each piece's text is the time it was written
// (performance.timeOrigin-based ms), so a client can time every chunk through any translation.
// Usage: upstream.ts <port>. Reports aborted streams to the parent over IPC.
import http from 'node:http';

const [port] = process.argv.slice(2).map(Number);
const CREATED = '2025-01-01T00:00:00Z';
const MODEL = 'bench:1b';
const nativeLine = (content: string, done: boolean): string =>
  `${JSON.stringify({
    model: MODEL,
    created_at: CREATED,
    message: { role: 'assistant', content },
    response: content,
    done,
    ...(done ? { done_reason: 'stop', prompt_eval_count: 3, eval_count: 1, eval_duration: 1000 } : {}),
  })}\n`;
const nativeFinal = nativeLine('ok', true);
const openAiWhole = JSON.stringify({
  id: 'chatcmpl-bench',
  object: 'chat.completion',
  created: 1735689600,
  model: MODEL,
  choices: [{ index: 0, message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop' }],
  usage: { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 },
});
const openAiEvent = (content: string | null): string =>
  `data: ${JSON.stringify({
    id: 'chatcmpl-bench',
    object: 'chat.completion.chunk',
    created: 1735689600,
    model: MODEL,
    choices: [{ index: 0, delta: content === null ? {} : { content }, finish_reason: content === null ? 'stop' : null }],
  })}\n\n`;
const tags = JSON.stringify({ models: [{ name: MODEL, model: MODEL, modified_at: CREATED, size: 1, digest: 'd', details: { family: 'llama' } }] });
// The model is loaded, as it is on a warm instance: the bridge then has no cold load to check on.
const ps = JSON.stringify({
  models: [{ name: MODEL, model: MODEL, size: 1, size_vram: 1, digest: 'd', details: { family: 'llama' }, expires_at: '2099-01-01T00:00:00Z' }],
});
const show = JSON.stringify({
  template: '{{ .Prompt }}',
  details: { family: 'llama' },
  model_info: { 'general.architecture': 'llama', 'llama.context_length': 8192 },
  capabilities: ['completion', 'tools'],
});
const now = (): number => performance.timeOrigin + performance.now();

http
  .createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.url === '/api/tags' || req.url === '/api/ps' || req.url === '/api/show' || req.url === '/api/version') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(req.url === '/api/tags' ? tags : req.url === '/api/show' ? show : req.url === '/api/version' ? '{"version":"0.11.4"}' : ps);
        return;
      }
      const text = Buffer.concat(chunks).toString();
      const openAi = req.url === '/v1/chat/completions';
      const slow = /bench-stream (\d+) (\d+)/.exec(text);
      if (slow === null) {
        res.writeHead(200, { 'content-type': openAi ? 'application/json' : 'application/x-ndjson' });
        res.end(openAi ? openAiWhole : nativeFinal);
        return;
      }
      const count = Number(slow[1]);
      const gap = Number(slow[2]);
      res.writeHead(200, { 'content-type': openAi ? 'text/event-stream' : 'application/x-ndjson' });
      let sent = 0;
      const piece = (): void => {
        res.write(openAi ? openAiEvent(String(now())) : nativeLine(String(now()), false));
        if (++sent === count) {
          clearInterval(timer);
          res.end(openAi ? `${openAiEvent(null)}data: [DONE]\n\n` : nativeLine('', true));
        }
      };
      const timer = setInterval(piece, gap);
      piece();
      res.on('close', () => {
        clearInterval(timer);
        if (!res.writableFinished) process.send?.({ aborted: now() });
      });
    });
  })
  .listen(port, '127.0.0.1', () => process.send?.('ready'));
