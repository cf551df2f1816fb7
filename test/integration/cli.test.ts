import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startServingCli } from '../support/cli.js';
import { readLines } from '../support/streams.js';
import { tempDir } from '../support/temp.js';
import { RIG_MODELS, rigSkipReason, startRig, type OllamaRig } from '../support/ollama-rig.js';

const skip = rigSkipReason();

describe('copilot-bridge serve in front of a real Ollama', { skip }, () => {
  let rig: OllamaRig;
  before(async () => {
    rig = await startRig(1);
  });
  after(async () => {
    await rig?.stop();
  });

  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    it(`answers through to the upstream, streams /api/chat and exits cleanly on ${signal}`, async () => {
      const upstream = rig.instances[0]?.url ?? '';
      const dataDir = tempDir('bridge-cli-data-');
      const cli = await startServingCli(['--port', '0'], { OLLAMA_HOST: upstream, LOG_LEVEL: 'info', BRIDGE_DATA_DIR: dataDir });
      try {
        const version = await fetch(`${cli.url}/api/version`);
        // The rig runs 0.11.4; the bridge reports at least the API level it implements itself.
        assert.deepEqual(await version.json(), { version: '0.13.4' });

        const chat = await fetch(`${cli.url}/api/chat`, {
          method: 'POST',
          body: JSON.stringify({ model: RIG_MODELS.complex, messages: [{ role: 'user', content: 'hi' }], options: { num_predict: 300 } }),
        });
        assert.equal(chat.headers.get('content-type'), 'application/x-ndjson');
        const arrivals: Array<{ at: number; done: boolean; evalNs?: number }> = [];
        for await (const line of readLines(chat)) {
          const parsed = JSON.parse(line) as { done: boolean; eval_duration?: number };
          arrivals.push({ at: performance.now(), done: parsed.done, evalNs: parsed.eval_duration });
        }
        const last = arrivals.at(-1);
        assert.equal(last?.done, true);
        const spreadMs = (last?.at ?? 0) - (arrivals[0]?.at ?? 0);
        assert.ok(spreadMs > ((last?.evalNs ?? 0) / 1e6) * 0.5, `the first line reached the client only ${spreadMs.toFixed(0)} ms before the end`);
      } finally {
        const exited = once(cli.child, 'close');
        cli.child.kill(signal);
        const [code] = (await exited) as [number | null];
        assert.equal(code, 0);
      }
      assert.ok(cli.logs.some((entry) => entry.msg === 'bridge stopped'));
      // The log names the control token's file, never the token.
      const token = readFileSync(path.join(dataDir, 'control-token'), 'utf8');
      assert.equal(cli.logs.find((entry) => entry.msg === 'bridge listening')?.controlTokenFile, path.join(dataDir, 'control-token'));
      assert.ok(!JSON.stringify(cli.logs).includes(token));
    });
  }
});
