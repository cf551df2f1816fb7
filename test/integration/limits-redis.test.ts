import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import YAML from 'yaml';
import type { Identity } from '../../src/auth/identity.js';
import { generateKey, hashKey } from '../../src/auth/keys.js';
import { isRefusal, Limiter, STORE_RETRY_MS } from '../../src/auth/limits.js';
import type { BridgeHandle } from '../../src/bridge.js';
import { loadConfig } from '../../src/config/load.js';
import { memoryLogger, startTestBridge, type StandIn } from '../support/bridge.js';
import { startChatUpstream } from '../support/chat-upstream.js';
import { redisSkipReason, startRedis, startRedisLink, type RedisLink, type RedisServer } from '../support/redis.js';
import { tempDir } from '../support/temp.js';
import { eventually } from '../support/cluster.js';

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

  it('when Redis is gone, requests are let through, and the failure is logged and counted in /metrics', async () => {
    const bridge = bridges[1] as BridgeHandle;
    const failures = async (): Promise<number | undefined> => {
      const line = /^copilot_bridge_limit_store_failures_total (\S+)$/m.exec(
        await (await fetch(`${bridge.url}/metrics`, { headers: { authorization: `Bearer ${key}` } })).text(),
      );
      return line === null ? undefined : Number(line[1]);
    };
    assert.equal(await failures(), 0, 'exported at 0 while Redis answers, so an alert on it has a series');
    await redis.stop();
    const response = await generate(bridge);
    assert.equal(response.status, 200);
    await response.text();
    assert.ok(log.lines().some((line) => String(line.msg).startsWith('limits: the counter store failed')));
    const counted = (await failures()) ?? 0;
    assert.ok(counted >= 1, `${counted} failures counted`);
  });
});

describe('a Redis too slow to answer in time', { skip }, () => {
  let redis: RedisServer;
  const log = memoryLogger();
  let limiter: Limiter;
  let now = 0;

  before(async () => {
    redis = await startRedis();
    const config = loadConfig({ env: {} });
    limiter = new Limiter({ ...config, limits: { ...config.limits, redis_url: redis.url } }, log.logger, () => now);
  });

  after(async () => {
    await limiter.close();
    await redis.stop();
  });

  const ann: Identity = { name: 'ann', team: null, role: 'user', via: 'key', models: undefined, cloud: 'allow', limits: { concurrency: 1 } };

  it('leaves no concurrency slot taken by a request it let through when the answer came too late', async () => {
    const warmUp = await limiter.admit(ann);
    assert.ok(!isRefusal(warmUp));
    warmUp.release();
    const pauser = new Redis(redis.url);
    try {
      // Redis holds every command for 2 s: longer than the bridge waits (1 s), so the request is let through,
      // while the slot it asked for is still taken in Redis once the pause ends.
      await pauser.call('CLIENT', 'PAUSE', '2000', 'ALL');
      const letThrough = await limiter.admit(ann);
      assert.ok(!isRefusal(letThrough));
      assert.ok(log.lines().some((line) => String(line.msg).startsWith('limits: the counter store failed')));
      letThrough.release();
      await pauser.ping();
    } finally {
      pauser.disconnect();
    }
    // Once the store has rested after its failure, it is asked again.
    now += STORE_RETRY_MS;
    const next = await limiter.admit(ann);
    assert.ok(!isRefusal(next), `refused for ${isRefusal(next) ? next.limit : ''}: nothing is running`);
    assert.deepEqual(await limiter.admit(ann), { limit: 'concurrency of ann', retryAfterSeconds: 1 }, 'the store answers again and counts');
    next.release();
  });
});

describe('a concurrency slot released while the network to Redis is cut', { skip }, () => {
  let redis: RedisServer;
  let link: RedisLink;
  let reader: Redis;
  let limiter: Limiter;
  let now = 0;
  let failures = 0;

  before(async () => {
    redis = await startRedis();
    link = await startRedisLink(redis);
    reader = new Redis(redis.url);
    const config = loadConfig({ env: {} });
    limiter = new Limiter({ ...config, limits: { ...config.limits, redis_url: link.url } }, memoryLogger().logger, () => now, {
      storeFailed: () => (failures += 1),
    });
  });

  after(async () => {
    await limiter.close();
    reader.disconnect();
    await link.close();
    await redis.stop();
  });

  const ann: Identity = { name: 'ann', team: null, role: 'user', via: 'key', models: undefined, cloud: 'allow', limits: { concurrency: 1 } };
  const slots = 'copilot-bridge:concurrency:user:ann';

  it('is given back once Redis can be reached again, not held for its 15-minute lease', async () => {
    const running = await limiter.admit(ann);
    assert.ok(!isRefusal(running));
    assert.equal(await reader.zcard(slots), 1);
    await link.cut();
    running.release();
    await eventually('the release failing', async () => (failures > 0 ? true : undefined));
    assert.equal(await reader.zcard(slots), 1, 'Redis still holds the slot');

    await link.restore();
    await eventually('the slot given back', async () => ((await reader.zcard(slots)) === 0 ? true : undefined), 10_000);
    now += STORE_RETRY_MS;
    const next = await limiter.admit(ann);
    assert.ok(!isRefusal(next), `refused for ${isRefusal(next) ? next.limit : ''}: nothing is running`);
    next.release();
  });
});

describe("a person's and the team's budgets in Redis", { skip }, () => {
  let redis: RedisServer;
  let limiter: Limiter;

  before(async () => {
    redis = await startRedis();
    const config = loadConfig({ env: {} });
    limiter = new Limiter(
      { ...config, auth: { ...config.auth, teams: { web: { cloud: 'allow', limits: { rpm: 1 } } } }, limits: { ...config.limits, redis_url: redis.url } },
      memoryLogger().logger,
    );
  });

  after(async () => {
    await limiter.close();
    await redis.stop();
  });

  it("are taken from together or not at all: a request the team's budget refuses spends none of the person's", async () => {
    const ann: Identity = { name: 'ann', team: 'web', role: 'user', via: 'key', models: undefined, cloud: 'allow', limits: { rpm: 5 } };
    // Two at once: each is checked against both budgets before either is taken from.
    const results = await Promise.all([limiter.admit(ann), limiter.admit(ann)]);
    assert.deepEqual(
      results.filter(isRefusal).map((refusal) => refusal.limit),
      ['rpm of team web'],
    );
    const reader = new Redis(redis.url);
    try {
      // One request admitted: four of ann's five are left (and a few ms of refill), not three.
      const left = Number(await reader.hget('copilot-bridge:rpm:user:ann', 'tokens'));
      assert.ok(left >= 4 && left < 4.1, `ann's bucket holds ${left}`);
    } finally {
      reader.disconnect();
    }
  });
});
