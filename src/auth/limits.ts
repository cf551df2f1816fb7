import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Config, LimitsConfig } from '../config/schema.js';
import type { Logger } from '../log.js';
import type { Identity } from './identity.js';

/**
 * How token buckets are used together: take `cost` from each if every one has that much, else
 * from none; only check; or charge each even into debt (tokens counted after the answer).
 */
type BucketMode = 'take' | 'check' | 'charge';

/** A token bucket: up to `capacity`, refilled at `perMs` per millisecond. */
interface Bucket {
  key: string;
  capacity: number;
  perMs: number;
}

/** The first bucket (index in the list) that lacked the cost, and how long until it has it. */
interface BucketShort {
  index: number;
  waitMs: number;
}

/** Where the counters live: this process, or Redis shared by every instance. */
interface CounterStore {
  /** One step, all or nothing: a request that one budget refuses spends none of the others. */
  buckets(buckets: readonly Bucket[], cost: number, mode: BucketMode): Promise<BucketShort | null>;
  /** Takes one of `max` slots for `lease`; false when all are taken. */
  acquire(key: string, max: number, lease: string): Promise<boolean>;
  release(key: string, lease: string): Promise<void>;
  close(): Promise<void>;
}

/** A slot held longer than this (a process that died mid-request) no longer counts. */
const LEASE_MS = 15 * 60_000;

/**
 * After the counter store failed, requests are let through without asking it for this long: a
 * Redis that is down or hung would otherwise hold every request for its command timeout.
 */
export const STORE_RETRY_MS = 5_000;

/** The token bucket: refills evenly up to `capacity`; debt (negative tokens) is paid back by waiting. */
export function refill(tokens: number, elapsedMs: number, capacity: number, perMs: number): number {
  return Math.min(capacity, tokens + Math.max(0, elapsedMs) * perMs);
}

class MemoryStore implements CounterStore {
  private readonly state = new Map<string, { tokens: number; at: number }>();
  private readonly slots = new Map<string, Set<string>>();

  constructor(private readonly now: () => number) {}

  async buckets(buckets: readonly Bucket[], cost: number, mode: BucketMode): Promise<BucketShort | null> {
    const now = this.now();
    const tokens = buckets.map(({ key, capacity, perMs }) => {
      const state = this.state.get(key);
      return state === undefined ? capacity : refill(state.tokens, now - state.at, capacity, perMs);
    });
    if (mode !== 'charge') {
      const index = tokens.findIndex((held) => held < cost);
      const short = buckets[index];
      if (short !== undefined) return { index, waitMs: Math.ceil((cost - (tokens[index] as number)) / short.perMs) };
    }
    buckets.forEach(({ key }, i) => this.state.set(key, { tokens: (tokens[i] as number) - (mode === 'check' ? 0 : cost), at: now }));
    return null;
  }

  async acquire(key: string, max: number, lease: string): Promise<boolean> {
    const held = this.slots.get(key) ?? new Set<string>();
    if (held.size >= max) return false;
    held.add(lease);
    this.slots.set(key, held);
    return true;
  }

  async release(key: string, lease: string): Promise<void> {
    const held = this.slots.get(key);
    held?.delete(lease);
    if (held?.size === 0) this.slots.delete(key);
  }

  async close(): Promise<void> {}
}

// Redis' own clock (TIME) so that instances with drifting clocks agree. KEYS: the buckets; ARGV:
// cost, mode, then capacity and refill per ms of each bucket. Returns 0, or {index (from 1), wait}.
const BUCKETS_SCRIPT = `
local cost = tonumber(ARGV[1])
local mode = ARGV[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tokens = {}
for i, key in ipairs(KEYS) do
  local capacity = tonumber(ARGV[1 + 2 * i])
  local per_ms = tonumber(ARGV[2 + 2 * i])
  local state = redis.call('HMGET', key, 'tokens', 'at')
  local held = tonumber(state[1]) or capacity
  local at = tonumber(state[2]) or now
  held = math.min(capacity, held + math.max(0, now - at) * per_ms)
  if mode ~= 'charge' and held < cost then return {i, math.ceil((cost - held) / per_ms)} end
  tokens[i] = held
end
for i, key in ipairs(KEYS) do
  local capacity = tonumber(ARGV[1 + 2 * i])
  local per_ms = tonumber(ARGV[2 + 2 * i])
  local left = tokens[i]
  if mode ~= 'check' then left = left - cost end
  redis.call('HSET', key, 'tokens', tostring(left), 'at', tostring(now))
  redis.call('PEXPIRE', key, math.ceil((capacity - left) / per_ms) + 1000)
end
return 0
`;

const ACQUIRE_SCRIPT = `
local max = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
if redis.call('ZCARD', KEYS[1]) >= max then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
`;

type ScriptedRedis = Redis & {
  limitBuckets(keyCount: number, ...args: Array<string | number>): Promise<0 | [number, number]>;
  limitAcquire(key: string, max: number, lease: string, leaseMs: number): Promise<number>;
};

/**
 * Releases that failed and are sent again when Redis is reachable again, at most this many: more
 * (a long outage under heavy traffic) drop the oldest, whose slots then last out their lease.
 */
const MAX_UNRELEASED = 1000;

/** ioredis is loaded only when Redis is configured: most bridges never need it. */
class RedisStore implements CounterStore {
  private readonly redis: Promise<ScriptedRedis>;
  /** Slots (key and lease) whose release failed: Redis would hold them for LEASE_MS. */
  private readonly unreleased = new Map<string, { key: string; lease: string }>();

  constructor(url: string) {
    this.redis = import('ioredis').then(({ Redis }) => {
      const redis = new Redis(url, { lazyConnect: false, maxRetriesPerRequest: 1, commandTimeout: 1000, enableOfflineQueue: true });
      // Without a fixed number of keys: the count comes first in each call.
      redis.defineCommand('limitBuckets', { lua: BUCKETS_SCRIPT });
      redis.defineCommand('limitAcquire', { numberOfKeys: 1, lua: ACQUIRE_SCRIPT });
      // Errors surface on each command; this only keeps an unreachable Redis from being an unhandled event.
      redis.on('error', () => undefined);
      // Connected again (after a cut, or a Redis restart): the slots it could not be told of are given back.
      redis.on('ready', () => this.releaseUnreleased(redis));
      return redis as ScriptedRedis;
    });
  }

  private releaseUnreleased(redis: Redis): void {
    for (const [id, { key, lease }] of this.unreleased) {
      redis.zrem(key, lease).then(
        () => this.unreleased.delete(id),
        // Still kept: the next reconnection sends it again.
        () => undefined,
      );
    }
  }

  async buckets(buckets: readonly Bucket[], cost: number, mode: BucketMode): Promise<BucketShort | null> {
    const args = [...buckets.map((b) => b.key), cost, mode, ...buckets.flatMap((b) => [b.capacity, b.perMs])];
    const short = await (await this.redis).limitBuckets(buckets.length, ...args);
    return short === 0 ? null : { index: short[0] - 1, waitMs: short[1] };
  }

  async acquire(key: string, max: number, lease: string): Promise<boolean> {
    return (await (await this.redis).limitAcquire(key, max, lease, LEASE_MS)) === 1;
  }

  async release(key: string, lease: string): Promise<void> {
    try {
      await (await this.redis).zrem(key, lease);
    } catch (error) {
      const id = `${key}\u0000${lease}`;
      this.unreleased.set(id, { key, lease });
      if (this.unreleased.size > MAX_UNRELEASED) this.unreleased.delete(this.unreleased.keys().next().value as string);
      throw error;
    }
  }

  async close(): Promise<void> {
    this.unreleased.clear();
    (await this.redis).disconnect();
  }
}

/** What the limiter tells the metrics as it happens. */
export interface LimiterEvents {
  /** A call to the counter store failed: while it fails, limits are let go, which nothing else shows. */
  storeFailed?(): void;
  /** A request of `identity` was refused by one of its limits (a cloud provider's 429 passed on is none). */
  refused?(identity: Identity): void;
}

/** A request over a limit: which one, and how long to wait. */
export interface LimitRefusal {
  /** e.g. "rpm of alice", "concurrency of team web" */
  limit: string;
  retryAfterSeconds: number;
}

/** Admitted: call release() when the request ends. */
export interface Admission {
  release(): void;
}

interface Subject {
  key: string;
  label: string;
  limits: LimitsConfig;
}

/**
 * Requests per minute, tokens per minute and concurrent requests, per identity and per team.
 * A token bucket for both per-minute limits: a burst up to the limit, refilled evenly. Tokens are
 * only known after the answer, so a request is admitted while the bucket is not in debt and its
 * tokens are charged when it ends. With `limits.redis_url` the counters are shared by every
 * instance; when Redis cannot be reached, requests are let through and the failure is logged
 * (limits protect capacity, they are not the access control), and it is asked again only after
 * STORE_RETRY_MS.
 */
export class Limiter {
  private readonly store: CounterStore;
  /** Until when the store is not asked, after it failed (0: it answers). */
  private storeFailedUntil = 0;

  constructor(
    private readonly config: Config,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
    private readonly events: LimiterEvents = {},
  ) {
    this.store = config.limits.redis_url === undefined ? new MemoryStore(now) : new RedisStore(config.limits.redis_url);
  }

  /** Whether the store failed lately: then limits are let go rather than every request waiting for it to time out again. */
  private storeResting(): boolean {
    return this.now() < this.storeFailedUntil;
  }

  private subjects(identity: Identity): Subject[] {
    const subjects: Subject[] = [];
    if (identity.limits !== undefined) subjects.push({ key: `user:${identity.name}`, label: identity.name, limits: identity.limits });
    const teamLimits = identity.team === null ? undefined : this.config.auth.teams[identity.team]?.limits;
    if (teamLimits !== undefined) subjects.push({ key: `team:${identity.team}`, label: `team ${identity.team}`, limits: teamLimits });
    return subjects;
  }

  /** Admits the request or says which limit refused it. */
  async admit(identity: Identity): Promise<Admission | LimitRefusal> {
    const subjects = this.subjects(identity);
    if (subjects.length === 0 || this.storeResting()) return { release: () => undefined };
    const lease = randomUUID();
    const held: string[] = [];
    const release = (): void => {
      for (const key of held) void this.store.release(key, lease).catch((error: Error) => this.failed(error));
    };
    try {
      const tpm = await this.perMinute('tpm', subjects, 1, 'check');
      if (tpm !== null) return this.refuse(identity, release, tpm.limit, tpm.waitMs);
      for (const { key, label, limits } of subjects) {
        if (limits.concurrency === undefined) continue;
        const slots = `copilot-bridge:concurrency:${key}`;
        // Counted as held before the answer: a call to Redis that times out may still take the slot
        // there, and the release (sent after it on the same connection) must give it back.
        held.push(slots);
        if (!(await this.store.acquire(slots, limits.concurrency, lease))) return this.refuse(identity, release, `concurrency of ${label}`, 1000);
      }
      // All or nothing: a request the team's budget refuses must not spend the person's own.
      const rpm = await this.perMinute('rpm', subjects, 1, 'take');
      if (rpm !== null) return this.refuse(identity, release, rpm.limit, rpm.waitMs);
    } catch (error) {
      this.failed(error as Error);
      release();
      return { release: () => undefined };
    }
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        release();
      },
    };
  }

  /** Charges the tokens of a finished answer to the identity's and the team's per-minute budget. */
  async charge(identity: Identity, tokens: number): Promise<void> {
    if (tokens <= 0 || this.storeResting()) return;
    try {
      await this.perMinute('tpm', this.subjects(identity), tokens, 'charge');
    } catch (error) {
      this.failed(error as Error);
    }
  }

  /** The buckets of one per-minute limit, of every subject that has it, asked together: the one short, if any. */
  private async perMinute(
    limit: 'rpm' | 'tpm',
    subjects: readonly Subject[],
    cost: number,
    mode: BucketMode,
  ): Promise<{ limit: string; waitMs: number } | null> {
    const buckets = subjects.flatMap(({ key, label, limits }) => {
      const perMinute = limits[limit];
      return perMinute === undefined ? [] : [{ key: `copilot-bridge:${limit}:${key}`, label, capacity: perMinute, perMs: perMinute / 60_000 }];
    });
    if (buckets.length === 0) return null;
    const short = await this.store.buckets(buckets, cost, mode);
    return short === null ? null : { limit: `${limit} of ${buckets[short.index]?.label}`, waitMs: short.waitMs };
  }

  private refuse(identity: Identity, release: () => void, limit: string, waitMs: number): LimitRefusal {
    release();
    this.events.refused?.(identity);
    return { limit, retryAfterSeconds: Math.max(1, Math.ceil(waitMs / 1000)) };
  }

  private failed(error: Error): void {
    this.events.storeFailed?.();
    // Requests failing together (or while it rests) are one failure of the store: one log line.
    const first = !this.storeResting();
    this.storeFailedUntil = this.now() + STORE_RETRY_MS;
    if (first)
      this.log.warn(
        { error: error.message, retryInSeconds: STORE_RETRY_MS / 1000 },
        'limits: the counter store failed; requests are let through without limits until it is asked again',
      );
  }

  close(): Promise<void> {
    return this.store.close();
  }
}

export function isRefusal(result: Admission | LimitRefusal): result is LimitRefusal {
  return 'limit' in result;
}
