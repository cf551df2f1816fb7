import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { startStandIn, type StandIn } from '../support/bridge.js';
import { startServingCli, type ServingCli } from '../support/cli.js';
import { tempDir } from '../support/temp.js';

// Hostile clients and upstreams against the real `copilot-bridge serve` process: each case ends by
// checking that the process is still alive and answering, and that its memory stayed bounded.

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** Resident memory of a process, from /proc (Linux). */
function rssBytes(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('VmRSS:'));
  return Number(/(\d+)/.exec(line ?? '')?.[1] ?? 0) * 1024;
}

/** Sockets a process has open (client and upstream connections, listeners), from /proc (Linux). */
function openSockets(pid: number): number {
  let count = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:')) count += 1;
    } catch {
      // closed while listing
    }
  }
  return count;
}

async function serve(upstream: StandIn, yaml = '', env: Record<string, string> = {}): Promise<ServingCli> {
  const dir = tempDir('bridge-hostile-');
  const file = path.join(dir, 'config.yaml');
  writeFileSync(file, `gpu_monitor:\n  enabled: false\n${yaml}`);
  const cli = await startServingCli(['--port', '0', '--config', file], { OLLAMA_HOST: upstream.url, BRIDGE_DATA_DIR: dir, LOG_LEVEL: 'info', ...env });
  cleanups.push(async () => {
    if (cli.child.exitCode !== null || cli.child.signalCode !== null) return;
    const closed = once(cli.child, 'close');
    cli.child.kill('SIGTERM');
    await closed;
  });
  return cli;
}

/** The process did not exit and still answers its health check. */
async function assertAlive(cli: ServingCli): Promise<void> {
  assert.equal(cli.child.exitCode, null, 'the bridge process exited');
  assert.equal(cli.child.signalCode, null, 'the bridge process was killed');
  const health = await fetch(`${cli.url}/health`);
  assert.equal(health.status, 200);
  assert.equal(((await health.json()) as { status: string }).status, 'ok');
}

/** Resolves once the bridge has logged `message` `count` times. */
function logged(cli: ServingCli, message: string, count: number): Promise<void> {
  return new Promise((resolve) => {
    const check = (): void => {
      if (cli.logs.filter((entry) => entry.msg === message).length < count) return;
      cli.child.stdout.off('data', check);
      resolve();
    };
    // Runs after the helper's own listener has added the new lines to cli.logs.
    cli.child.stdout.on('data', check);
    check();
  });
}

const CREATED = '2025-01-01T00:00:00Z';

function ndjson(res: ServerResponse, lines: unknown[]): void {
  res.writeHead(200, { 'content-type': 'application/x-ndjson' });
  res.end(lines.map((line) => `${JSON.stringify(line)}\n`).join(''));
}

describe('hostile upstreams and clients against copilot-bridge serve', () => {
  it('survives token counts and durations that are text, negative or not finite, and keeps them out of answers and metrics', async () => {
    const bad = { eval_count: '12', prompt_eval_count: -5, eval_duration: 'NaN', total_duration: -1 };
    const upstream = await startStandIn(
      (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        // 1e400 parses to Infinity.
        res.end(
          `${JSON.stringify({ model: 'm', created_at: CREATED, message: { role: 'assistant', content: 'hi' }, done: false })}\n` +
            `{"model":"m","created_at":"${CREATED}","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","load_duration":1e400,${JSON.stringify(bad).slice(1)}\n`,
        );
      },
      ['m:latest'],
    );
    cleanups.push(() => upstream.close());
    const cli = await serve(upstream);
    const chat = (stream: boolean): Promise<Response> =>
      fetch(`${cli.url}/api/chat`, { method: 'POST', body: JSON.stringify({ model: 'm', stream, messages: [{ role: 'user', content: 'x' }] }) });
    const events = await fetch(`${cli.url}/bridge/api/events`);
    const reader = events.body?.getReader();
    const historyEvents = async (count: number): Promise<void> => {
      let seen = 0;
      let text = '';
      while (seen < count) {
        const { value, done } = (await reader?.read()) ?? { done: true, value: undefined };
        assert.equal(done, false, 'the event stream ended');
        text += Buffer.from(value as Uint8Array).toString();
        seen = text.split('event: history\n').length - 1;
      }
    };

    const whole = await chat(false);
    assert.equal(whole.status, 200);
    const answer = (await whole.json()) as Record<string, unknown>;
    assert.equal((answer.message as { content: string }).content, 'hi');
    for (const field of ['eval_count', 'prompt_eval_count', 'eval_duration', 'total_duration', 'load_duration']) assert.equal(answer[field], undefined, field);
    const streamed = await chat(true);
    const last = JSON.parse((await streamed.text()).trim().split('\n').at(-1) ?? '{}') as Record<string, unknown>;
    assert.equal(last.done, true);
    assert.equal(last.prompt_eval_count, undefined);
    const openai = await fetch(`${cli.url}/v1/chat/completions`, {
      method: 'POST',
      body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'x' }] }),
    });
    assert.deepEqual(((await openai.json()) as { usage: unknown }).usage, { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 });
    // Each request was recorded after its answer: the process went through that path three times.
    await historyEvents(3);
    await reader?.cancel();

    await assertAlive(cli);
    const metrics = await (await fetch(`${cli.url}/metrics`)).text();
    assert.match(metrics, /copilot_bridge_requests_total\{[^}]*model="m"[^}]*\} 3/);
    assert.doesNotMatch(metrics, /copilot_bridge_tokens_total\{[^}]*\} -/);
    const history = (await (await fetch(`${cli.url}/bridge/api/history`)).json()) as { records: Array<{ tokensIn: number | null; tokensOut: number | null }> };
    assert.equal(history.records.length, 3);
    for (const record of history.records) assert.ok((record.tokensIn ?? 0) >= 0 && (record.tokensOut ?? 0) >= 0);
  });

  it('does not buffer for event subscribers that never read: they are cut off, memory stays bounded', async () => {
    // A big state (8000 models with long names) sent about 4 times a second: the health round every
    // 0.1 s changes it. Several MB a second per subscriber fill even the kernel's socket buffers soon.
    const models = Array.from({ length: 8000 }, (_, i) => `${'a-rather-long-model-family-name-'.repeat(3)}${i}:latest`);
    const upstream = await startStandIn((_req, res) => res.end(), models);
    cleanups.push(() => upstream.close());
    const cli = await serve(upstream, 'routing:\n  health:\n    interval_seconds: 0.1\n');
    // The state lists the models once the first model list came in: wait for a big state event.
    const watcher = await fetch(`${cli.url}/bridge/api/events`);
    let received = 0;
    for await (const chunk of watcher.body as AsyncIterable<Uint8Array>) {
      received += chunk.length;
      if (received > 1_500_000) break;
    }
    const state = await (await fetch(`${cli.url}/bridge/api/state`)).text();
    assert.ok(state.length > 1_000_000, `the state is only ${state.length} bytes`);
    const pid = cli.child.pid as number;
    const before = rssBytes(pid);

    const port = Number(new URL(cli.url).port);
    const subscribers = Array.from({ length: 20 }, () => {
      const socket = connect(port, '127.0.0.1');
      socket.on('error', () => undefined);
      socket.write('GET /bridge/api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
      // Never reads: the bridge's writes back up into its own buffers.
      socket.pause();
      return socket;
    });
    cleanups.push(async () => {
      for (const socket of subscribers) socket.destroy();
    });
    const limit = 200 * 1024 * 1024;
    let peak = before;
    let sampler: NodeJS.Timeout | undefined;
    // Fails as soon as the bridge grows past the bound, rather than letting it take the machine's memory.
    const overgrown = new Promise<never>((_resolve, reject) => {
      sampler = setInterval(() => {
        peak = Math.max(peak, rssBytes(pid));
        if (peak - before > limit) reject(new Error(`the bridge grew by ${Math.round((peak - before) / 1048576)} MiB for 20 stalled subscribers`));
      }, 100);
    });
    try {
      // Each is disconnected by the bridge once it stayed full for a while (10 s), and the bridge
      // says so (a paused socket would not see it); the test's own timeout bounds the wait.
      await Promise.race([logged(cli, 'closed an event stream that stopped reading', subscribers.length), overgrown]);
    } finally {
      clearInterval(sampler);
    }

    await assertAlive(cli);
    const again = await fetch(`${cli.url}/bridge/api/events`);
    assert.equal(again.status, 200);
    await again.body?.cancel();
  });

  it('keeps answering while thousands of clients trickle request bodies, holding no more connections than its cap', async () => {
    const upstream = await startStandIn(
      (_req, res) => ndjson(res, [{ model: 'm', created_at: CREATED, message: { role: 'assistant', content: 'ok' }, done: true, done_reason: 'stop' }]),
      ['m:latest'],
    );
    cleanups.push(() => upstream.close());
    const cap = 50;
    const cli = await serve(upstream, `server:\n  max_connections: ${cap}\n`);
    const pid = cli.child.pid as number;
    const before = rssBytes(pid);
    const port = Number(new URL(cli.url).port);
    const attackers: Socket[] = [];
    cleanups.push(async () => {
      for (const socket of attackers) socket.destroy();
    });
    // 2000 clients that send a request head and one byte of a 1 MB body, then nothing.
    for (let batch = 0; batch < 20; batch++) {
      const opened = Array.from({ length: 100 }, () => {
        const socket = connect(port, '127.0.0.1');
        socket.on('error', () => undefined);
        socket.write('POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{');
        attackers.push(socket);
        return once(socket, 'connect').catch(() => undefined);
      });
      await Promise.all(opened);
    }
    const held = openSockets(pid);
    assert.ok(held <= cap + 10, `the bridge holds ${held} sockets with max_connections ${cap}`);
    await assertAlive(cli);
    const chat = await fetch(`${cli.url}/api/chat`, {
      method: 'POST',
      body: JSON.stringify({ model: 'm', stream: false, messages: [{ role: 'user', content: 'x' }] }),
    });
    assert.equal(chat.status, 200);
    assert.equal(((await chat.json()) as { message: { content: string } }).message.content, 'ok');
    assert.ok(rssBytes(pid) - before < 100 * 1024 * 1024, 'the bridge grew by more than 100 MiB');
  });

  it('cuts off an upstream line that never ends, fails that request cleanly and stays responsive', async () => {
    let endlessAnswers = 0;
    let closedByBridge = 0;
    const upstream = await startStandIn(
      (_req, res) => {
        endlessAnswers += 1;
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        res.write(`${JSON.stringify({ model: 'm', created_at: CREATED, message: { role: 'assistant', content: 'a' }, done: false })}\n`);
        // Then one line without end: up to 300 MiB of it, as fast as the bridge takes it.
        const piece = Buffer.alloc(64 * 1024, 'x');
        let sent = 0;
        const pump = (): void => {
          while (sent < 300 * 1024 * 1024 && !res.destroyed) {
            sent += piece.length;
            if (!res.write(piece)) {
              res.once('drain', pump);
              return;
            }
          }
          res.end();
        };
        res.once('close', () => {
          if (!res.writableFinished) closedByBridge += 1;
        });
        pump();
      },
      ['m:latest'],
    );
    cleanups.push(() => upstream.close());
    const cli = await serve(upstream, 'routing:\n  thresholds:\n    max_line_mb: 1\n');
    const pid = cli.child.pid as number;
    const before = rssBytes(pid);
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, rssBytes(pid))), 50);
    const chat = (stream: boolean): Promise<Response> =>
      fetch(`${cli.url}/api/chat`, { method: 'POST', body: JSON.stringify({ model: 'm', stream, messages: [{ role: 'user', content: 'x' }] }) });
    try {
      const streamed = await chat(true);
      assert.equal(streamed.status, 200);
      const lines = (await streamed.text())
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as { error?: string });
      assert.equal(lines.length, 2);
      assert.match(lines[1]?.error ?? '', /^local sent a line longer than 1 MiB \(routing\.thresholds\.max_line_mb\)/);

      const whole = await chat(false);
      assert.equal(whole.status, 502);
      assert.match(((await whole.json()) as { error: string }).error, /line longer than 1 MiB/);
      await assertAlive(cli);
    } finally {
      clearInterval(sampler);
    }
    assert.equal(endlessAnswers, 2);
    // The bridge hung up on both: the upstream did not get to send its 300 MiB.
    assert.equal(closedByBridge, 2);
    assert.ok(peak - before < 100 * 1024 * 1024, `the bridge grew by ${Math.round((peak - before) / 1048576)} MiB`);
  });
});
