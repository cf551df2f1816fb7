import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import YAML from 'yaml';
import { generateKey, hashKey } from '../../src/auth/keys.js';
import type { BridgeHandle } from '../../src/bridge.js';
import { memoryLogger, startTestBridge, type StandIn } from '../support/bridge.js';
import { startChatUpstream } from '../support/chat-upstream.js';
import { redisSkipReason, startRedis, type RedisServer } from '../support/redis.js';
import { tempDir } from '../support/temp.js';

const skip = redisSkipReason();

describe('limits shared by two instances through Redis', { skip }, () => {
  let redis: RedisServer;
  let upstream: StandIn;
  let release: (() => void) | undefined;
  const bridges: BridgeHandle[] = [];
  const key = generateKey();
  const log = memoryLogger();

  before(async () => {
    redis = await startRedis();
    upstream = await startChatUpstream({ hold: (body) => (body.prompt === 'hold' ? new Promise<void>((resolve) => (release = resolve)) : Promise.resolve()) });
    const file = path.join(tempDir('redis-limits-'), 'config.yaml');
    // The same config on both instances, as behind a load balancer.
    writeFileSync(
      file,
      YAML.stringify({
        backends: [{ name: 'gpu0', url: upstream.url }],
        auth: { keys: [{ name: 'ann', team: 'web', role: 'user', hash: hashKey(key), limits: { rpm: 3, concurrency: 1 } }] },
        limits: { redis_url: redis.url },
      }),
    );
    bridges.push(await startTestBridge({ file }), await startTestBridge({ file, logger: log.logger }));
  });

  after(async () => {
    release?.();
    for (const bridge of bridges) await bridge.stop(100);
    await upstream.close();
    await redis.stop();
  });

  const generate = (bridge: BridgeHandle, prompt = 'hi'): Promise<Response> =>
    fetch(`${bridge.url}/api/generate`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'm-small', prompt, stream: true }),
    });

  it('one concurrency slot: a request held on one instance makes the other answer 429', async () => {
    const [a, b] = bridges as [BridgeHandle, BridgeHandle];
    const running = await generate(a, 'hold');
    assert.equal(running.status, 200);
    const refused = await generate(b);
    assert.equal(refused.status, 429);
    assert.match(((await refused.json()) as { error: string }).error, /concurrency of ann/);
    assert.ok(Number(refused.headers.get('retry-after')) >= 1);
    release?.();
    await running.text();
  });

  it('one rpm budget: the requests of both instances count against it', async () => {
    const [a, b] = bridges as [BridgeHandle, BridgeHandle];
    // One of the three was taken above (the request refused for concurrency took none); two more fit, one on each.
    for (const bridge of [b, a]) {
      const response = await generate(bridge);
      assert.equal(response.status, 200);
      await response.text();
    }
    const over = await generate(b);
    assert.equal(over.status, 429);
    assert.match(((await over.json()) as { error: string }).error, /rpm of ann/);
    const retryAfter = Number(over.headers.get('retry-after'));
    assert.ok(retryAfter >= 1 && retryAfter <= 20, `Retry-After ${retryAfter}: a token comes back every 20 s`);
  });

  it('when Redis is gone, requests are let through and the failure is logged', async () => {
    await redis.stop();
    const response = await generate(bridges[1] as BridgeHandle);
    assert.equal(response.status, 200);
    await response.text();
    assert.ok(log.lines().some((line) => String(line.msg).startsWith('limits: the counter store failed')));
  });
});
