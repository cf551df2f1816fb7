import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MAX_MEASURED, QueueDropped, Scheduler, type AdmitRequest, type Clock, type SchedulerOptions, type Slot } from '../../src/routing/scheduler.js';
import type { Lane } from '../../src/contract/index.js';
import { classifyLane, clientKey, type LaneInput, type LaneRule } from '../../src/routing/lanes.js';
import { schedulerChoices } from '../../src/routing/router.js';
import { clientSignals } from '../../src/routing/signals.js';

/** A clock that moves only when the test says so, firing due timers in order. */
class FakeClock implements Clock {
  private t = 0;
  private timers: Array<{ at: number; fn: () => void; live: boolean }> = [];
  now(): number {
    return this.t;
  }
  setTimer(fn: () => void, ms: number): { cancel(): void } {
    const timer = { at: this.t + ms, fn, live: true };
    this.timers.push(timer);
    return { cancel: () => (timer.live = false) };
  }
  advance(ms: number): void {
    const until = this.t + ms;
    for (;;) {
      const due = this.timers.filter((x) => x.live && x.at <= until).sort((a, b) => a.at - b.at)[0];
      if (due === undefined) break;
      this.t = due.at;
      due.live = false;
      due.fn();
    }
    this.t = until;
  }
}

/** Lets promise callbacks of granted or rejected requests run. */
const settled = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

interface Harness {
  clock: FakeClock;
  scheduler: Scheduler;
  resident: Set<string>;
  dispatched: Array<{ lane: Lane; waitMs: number }>;
}

function harness(overrides: Partial<SchedulerOptions> = {}, slots: Record<string, number> = {}): Harness {
  const clock = new FakeClock();
  const resident = new Set<string>();
  const dispatched: Harness['dispatched'] = [];
  const scheduler = new Scheduler({
    enabled: true,
    ageBoostMs: 10_000,
    fimMaxWaitMs: 1_500,
    fimReservedSlots: 0,
    slots: (backend) => slots[backend] ?? 1,
    resident: (backend, model) => resident.has(`${backend}/${model}`),
    seed: () => ({ serviceMs: 1_000, sizeBytes: 4 * 1024 ** 3 }),
    clock,
    onDispatch: (lane, waitMs) => dispatched.push({ lane, waitMs }),
    ...overrides,
  });
  return { clock, scheduler, resident, dispatched };
}

/** One request: its outcome is recorded as it happens, without awaiting it. */
function request(
  h: Harness,
  name: string,
  order: string[],
  over: Partial<AdmitRequest> = {},
): { abort: AbortController; slot: () => Slot | undefined; error: () => unknown } {
  const abort = new AbortController();
  let slot: Slot | undefined;
  let error: unknown;
  h.scheduler.admit({ model: 'm', choices: ['gpu0'], lane: 'interactive', client: null, promptTokens: 0, signal: abort.signal, ...over }).then(
    (granted) => {
      slot = granted;
      order.push(name);
    },
    (failure: unknown) => {
      error = failure;
    },
  );
  return { abort, slot: () => slot, error: () => error };
}

describe('scheduler queues', () => {
  it('sends no more requests upstream than the backend has slots, and the next one when a slot frees', async () => {
    const h = harness({}, { gpu0: 2 });
    const order: string[] = [];
    const reqs = ['a', 'b', 'c'].map((name) => request(h, name, order));
    await settled();
    assert.deepEqual(order, ['a', 'b']);
    assert.equal(h.scheduler.snapshot().pools[0]?.queued.interactive, 1);
    reqs[0]?.slot()?.release({ ok: true });
    await settled();
    assert.deepEqual(order, ['a', 'b', 'c']);
  });

  it('gives a free slot to the highest lane first and keeps first-come order within a lane', async () => {
    const h = harness();
    const order: string[] = [];
    const handles = new Map<string, ReturnType<typeof request>>();
    const add = (name: string, over: Partial<AdmitRequest> = {}): void => void handles.set(name, request(h, name, order, over));
    add('running');
    await settled();
    add('bg1', { lane: 'background' });
    add('chat1');
    add('chat2');
    add('fim1', { lane: 'fim', client: 'editor' });
    await settled();
    for (let i = 0; i < 4; i++) {
      handles
        .get(order.at(-1) as string)
        ?.slot()
        ?.release({ ok: true });
      await settled();
    }
    assert.deepEqual(order, ['running', 'fim1', 'chat1', 'chat2', 'bg1']);
  });

  it('lifts a waiting request one lane per age_boost_ms, so background work is not starved by a stream of chats', async () => {
    const h = harness({ ageBoostMs: 10_000 });
    const order: string[] = [];
    const handles = new Map<string, ReturnType<typeof request>>();
    const add = (name: string, over: Partial<AdmitRequest> = {}): void => void handles.set(name, request(h, name, order, over));
    add('running');
    await settled();
    add('bg', { lane: 'background' });
    h.clock.advance(10_000);
    // Now bg competes as interactive and is older than any chat that arrives from here on.
    add('chat1');
    h.clock.advance(1);
    add('chat2');
    handles.get('running')?.slot()?.release({ ok: true });
    await settled();
    assert.equal(order.at(-1), 'bg');
    assert.equal(h.dispatched.at(-1)?.lane, 'background');
    assert.equal(h.dispatched.at(-1)?.waitMs, 10_001);
  });

  it('a background request that waited less than age_boost_ms still goes after chats', async () => {
    const h = harness({ ageBoostMs: 10_000 });
    const order: string[] = [];
    const running = request(h, 'running', order);
    await settled();
    request(h, 'bg', order, { lane: 'background' });
    h.clock.advance(9_999);
    request(h, 'chat', order);
    running.slot()?.release({ ok: true });
    await settled();
    assert.equal(order.at(-1), 'chat');
  });

  it('a client that hangs up while queued leaves the queue at once and is never dispatched', async () => {
    const h = harness();
    const order: string[] = [];
    const running = request(h, 'running', order);
    await settled();
    const gone = request(h, 'gone', order);
    const next = request(h, 'next', order);
    gone.abort.abort();
    await settled();
    assert.equal(gone.error() instanceof Error && (gone.error() as Error).name, 'AbortError');
    assert.equal(h.scheduler.snapshot().pools[0]?.queued.interactive, 1);
    running.slot()?.release({ ok: true });
    await settled();
    assert.deepEqual(order, ['running', 'next']);
    assert.equal(h.dispatched.length, 2);
    assert.equal(h.scheduler.snapshot().dropped.cancelled, 1);
    void next;
  });

  it('drops queued ghost text from the same client when a newer one arrives, and not other clients’', async () => {
    const h = harness({ fimMaxWaitMs: 60_000 });
    const order: string[] = [];
    const running = request(h, 'running', order);
    await settled();
    const first = request(h, 'fim1', order, { lane: 'fim', client: 'alice' });
    const other = request(h, 'bob', order, { lane: 'fim', client: 'bob' });
    const second = request(h, 'fim2', order, { lane: 'fim', client: 'alice' });
    await settled();
    assert.ok(first.error() instanceof QueueDropped);
    assert.equal((first.error() as QueueDropped).reason, 'superseded');
    assert.equal(other.error(), undefined);
    running.slot()?.release({ ok: true });
    await settled();
    other.slot()?.release({ ok: true });
    await settled();
    assert.deepEqual(order, ['running', 'bob', 'fim2']);
    assert.equal(second.error(), undefined);
    assert.equal(h.scheduler.snapshot().dropped.superseded, 1);
  });

  it('answers ghost text that waited past fim_max_wait_ms as dropped instead of sending it late', async () => {
    const h = harness({ fimMaxWaitMs: 1_500 });
    const order: string[] = [];
    const running = request(h, 'running', order);
    await settled();
    const late = request(h, 'late', order, { lane: 'fim', client: 'alice' });
    h.clock.advance(1_499);
    await settled();
    assert.equal(late.error(), undefined);
    h.clock.advance(1);
    await settled();
    assert.equal((late.error() as QueueDropped).reason, 'deadline');
    running.slot()?.release({ ok: true });
    await settled();
    assert.deepEqual(order, ['running']);
    assert.equal(h.scheduler.snapshot().dropped.deadline, 1);
  });

  it('ghost text granted before its deadline is not dropped afterwards', async () => {
    const h = harness({ fimMaxWaitMs: 1_500 });
    const order: string[] = [];
    const fim = request(h, 'fim', order, { lane: 'fim', client: 'alice' });
    await settled();
    h.clock.advance(5_000);
    await settled();
    assert.equal(fim.error(), undefined);
    assert.ok(fim.slot() !== undefined);
  });

  it('queues two names of one model file together: Ollama runs them in one runner with one set of slots', async () => {
    const h = harness({ identity: (_backend, model) => (model === 'alias' ? 'm' : model) });
    const order: string[] = [];
    request(h, 'm', order);
    request(h, 'alias', order, { model: 'alias' });
    request(h, 'other', order, { model: 'other' });
    await settled();
    assert.deepEqual(order, ['m', 'other']);
    assert.deepEqual(
      h.scheduler.snapshot().pools.map((p) => [p.model, p.running, p.queued.interactive]),
      [
        ['m', 1, 1],
        ['other', 1, 0],
      ],
    );
  });

  it('keeps reserved slots for ghost text: chats wait while one is free, ghost text takes it at once', async () => {
    const h = harness({ fimReservedSlots: 1 }, { gpu0: 2 });
    const order: string[] = [];
    const first = request(h, 'chat1', order);
    request(h, 'chat2', order);
    await settled();
    assert.deepEqual(order, ['chat1']);
    request(h, 'fim', order, { lane: 'fim', client: 'alice' });
    await settled();
    assert.deepEqual(order, ['chat1', 'fim']);
    first.slot()?.release({ ok: true });
    await settled();
    assert.deepEqual(order, ['chat1', 'fim', 'chat2']);
  });

  it('a request taking several slots (n > 1) is not overtaken forever by single ones arriving after it', async () => {
    const h = harness({}, { gpu0: 2 });
    const order: string[] = [];
    let running = request(h, 'a', order);
    await settled();
    request(h, 'heavy', order, { weight: 2 });
    // A steady stream of single chats, each arriving while the one before still runs.
    for (const name of ['b', 'c', 'd']) {
      const next = request(h, name, order);
      running.slot()?.release({ ok: true });
      await settled();
      running = next;
    }
    assert.equal(order[1], 'heavy');
  });

  it('a request taking more slots than the backend has starts once the backend is idle, and holds back later ones until then', async () => {
    const h = harness({}, { gpu0: 2 });
    const order: string[] = [];
    const first = request(h, 'a', order);
    await settled();
    const heavy = request(h, 'heavy', order, { weight: 3 });
    request(h, 'b', order);
    await settled();
    assert.deepEqual(order, ['a']);
    first.slot()?.release({ ok: true });
    await settled();
    assert.deepEqual(order, ['a', 'heavy']);
    heavy.slot()?.release({ ok: true });
    await settled();
    assert.deepEqual(order, ['a', 'heavy', 'b']);
  });

  it('a request holding back others leaves the queue when its client hangs up, and the next one starts', async () => {
    const h = harness({}, { gpu0: 2 });
    const order: string[] = [];
    request(h, 'a', order);
    await settled();
    const heavy = request(h, 'heavy', order, { weight: 2 });
    request(h, 'b', order);
    await settled();
    assert.deepEqual(order, ['a']);
    heavy.abort.abort();
    await settled();
    assert.deepEqual(order, ['a', 'b']);
  });

  it('ghost text still takes a reserved slot while an older chat waits for a shared one', async () => {
    const h = harness({ fimReservedSlots: 1, ageBoostMs: 1_000 }, { gpu0: 2 });
    const order: string[] = [];
    request(h, 'chat1', order);
    await settled();
    request(h, 'chat2', order);
    // Aged into the fim lane, chat2 ranks ahead of new ghost text, yet cannot use the reserved slot.
    h.clock.advance(5_000);
    request(h, 'fim', order, { lane: 'fim', client: 'alice' });
    await settled();
    assert.deepEqual(order, ['chat1', 'fim']);
  });

  it('with one slot, a reservation still lets chats run', async () => {
    const h = harness({ fimReservedSlots: 1 }, { gpu0: 1 });
    const order: string[] = [];
    request(h, 'chat', order);
    await settled();
    assert.deepEqual(order, ['chat']);
  });

  it('answers queued requests with "stopping" when stopped', async () => {
    const h = harness();
    const order: string[] = [];
    request(h, 'running', order);
    await settled();
    const queued = request(h, 'queued', order);
    await h.scheduler.stop();
    await settled();
    assert.equal((queued.error() as QueueDropped).reason, 'stopping');
  });

  it('with the scheduler off, sends everything at once to the router’s first choice', async () => {
    const h = harness({ enabled: false });
    const order: string[] = [];
    for (const name of ['a', 'b', 'c']) request(h, name, order, { choices: ['gpu1', 'gpu0'] });
    await settled();
    assert.deepEqual(order, ['a', 'b', 'c']);
    const pools = h.scheduler.snapshot().pools;
    assert.deepEqual(
      pools.map((p) => [p.backend, p.running]),
      [['gpu1', 3]],
    );
  });
});

describe('scheduler backend choice', () => {
  const choose = async (h: Harness, over: Partial<AdmitRequest> = {}): Promise<Slot> =>
    h.scheduler.admit({
      model: 'm',
      choices: ['gpu0', 'gpu1'],
      lane: 'interactive',
      client: null,
      promptTokens: 0,
      signal: new AbortController().signal,
      ...over,
    });

  it('keeps the resident backend while its queue is short', async () => {
    const h = harness();
    h.resident.add('gpu1/m');
    const first = await choose(h);
    assert.deepEqual([first.backend, first.tie], ['gpu1', false]);
    assert.match(first.why, /^gpu1: ~0\.0 s, resident, idle; gpu0: ~2\.5 s, cold load, idle$/);
  });

  it('spills over to a cold backend when waiting costs more than a cold load there', async () => {
    const h = harness();
    h.resident.add('gpu1/m');
    // Measured: 4 s per request on gpu1, a 2.5 s cold load guessed for gpu0 (4 GiB at 2 GiB/s + 0.5 s).
    const warm = await choose(h);
    h.clock.advance(4_000);
    warm.release({ ok: true });
    const running = await choose(h);
    assert.equal(running.backend, 'gpu1');
    // One running on gpu1: ~4 s wait there against ~2.5 s cold load on gpu0.
    const spilled = await choose(h);
    assert.equal(spilled.backend, 'gpu0');
    assert.match(spilled.why, /^gpu0: ~2\.5 s, cold load, idle; gpu1: ~4\.0 s, resident, 1 running$/);
  });

  it('does not spill over while the wait is shorter than the cold load', async () => {
    const h = harness({ seed: () => ({ serviceMs: 1_000, sizeBytes: 8 * 1024 ** 3 }) });
    h.resident.add('gpu1/m');
    const a = await choose(h);
    assert.equal(a.backend, 'gpu1');
    // ~1 s behind the running one beats a ~4.5 s cold load: it waits for gpu1.
    request(h, 'b', [], { choices: ['gpu0', 'gpu1'] });
    await settled();
    assert.deepEqual(
      h.scheduler.snapshot().pools.map((p) => [p.backend, p.running, p.queued.interactive]),
      [['gpu1', 1, 1]],
    );
  });

  it('spreads a burst over both backends once waiting would cost more than a cold load', async () => {
    const h = harness();
    // 1 s per request (seed) against a 2.5 s cold load: gpu0 takes three, the fourth goes to gpu1.
    for (let i = 0; i < 4; i++) request(h, `r${i}`, [], { choices: ['gpu0', 'gpu1'] });
    await settled();
    assert.deepEqual(
      h.scheduler.snapshot().pools.map((p) => [p.backend, p.running, p.queued.interactive]),
      [
        ['gpu0', 1, 2],
        ['gpu1', 1, 0],
      ],
    );
  });

  it('does not count ghost text in a reserved slot as a wait for chats', async () => {
    // 5 s per request: counted as a wait, the ghost text would send the chat to a 2.5 s cold load on gpu1.
    const h = harness({ fimReservedSlots: 1, seed: () => ({ serviceMs: 5_000, sizeBytes: 4 * 1024 ** 3 }) }, { gpu0: 2 });
    h.resident.add('gpu0/m');
    await choose(h, { choices: ['gpu0'], lane: 'fim', client: 'alice' });
    assert.equal(h.scheduler.estimate('gpu0', 'm', 'interactive', 0).waitMs, 0);
    const chat = await choose(h);
    assert.equal(chat.backend, 'gpu0');
    // Now the chat's one slot is taken: the next chat would wait.
    assert.equal(h.scheduler.estimate('gpu0', 'm', 'interactive', 0).waitMs, 5_000);
  });

  it('counts the slots a request takes, its own and those of the ones ahead, in the wait', async () => {
    const h = harness({ seed: () => ({ serviceMs: 10_000, sizeBytes: 4 * 1024 ** 3 }) }, { gpu0: 2, gpu1: 2 });
    h.resident.add('gpu0/m');
    await choose(h, { choices: ['gpu0'] });
    // One slot of two is free: enough for one choice, not for two.
    assert.equal(h.scheduler.estimate('gpu0', 'm', 'interactive', 0).waitMs, 0);
    assert.equal(h.scheduler.estimate('gpu0', 'm', 'interactive', 0, 2).waitMs, 5_000);
    const wide = await choose(h, { weight: 2 });
    assert.equal(wide.backend, 'gpu1');
    request(h, 'queued', [], { choices: ['gpu0'], weight: 2 });
    await settled();
    // Behind a request waiting for two slots, one more waits for three.
    assert.equal(h.scheduler.estimate('gpu0', 'm', 'interactive', 0).waitMs, 10_000);
  });

  it('moves a queued request to another backend it may use when a slot frees there first, with the model in memory', async () => {
    const h = harness();
    const order: string[] = [];
    // 1 s per request (seed) against a 2.5 s cold load: gpu0 takes a, b and c, d goes to gpu1.
    const either = (name: string): ReturnType<typeof request> => request(h, name, order, { choices: ['gpu0', 'gpu1'] });
    const [a, b, c, d] = [either('a'), either('b'), either('c'), either('d')];
    const onlyGpu0 = request(h, 'only-gpu0', order, { choices: ['gpu0'] });
    await settled();
    assert.deepEqual(order, ['a', 'd']);
    // gpu1 answered d, so it holds the model now, while a still runs on gpu0: b, which waited
    // longest, starts there rather than waiting behind a; then c.
    d.slot()?.release({ ok: true });
    await settled();
    assert.deepEqual(order, ['a', 'd', 'b']);
    assert.equal(b.slot()?.backend, 'gpu1');
    assert.match(b.slot()?.why ?? '', /; moved to gpu1: a slot freed there first$/);
    b.slot()?.release({ ok: true });
    await settled();
    assert.deepEqual(order, ['a', 'd', 'b', 'c']);
    // A request that may only use gpu0 stays there.
    c.slot()?.release({ ok: true });
    await settled();
    assert.deepEqual(order, ['a', 'd', 'b', 'c']);
    a.slot()?.release({ ok: true });
    await settled();
    assert.deepEqual(order, ['a', 'd', 'b', 'c', 'only-gpu0']);
    assert.equal(onlyGpu0.slot()?.backend, 'gpu0');
  });

  it('moves queued requests to a backend that reports their model in memory with a slot free (a preload), when told the reports changed', async () => {
    const h = harness();
    h.resident.add('gpu0/m');
    const order: string[] = [];
    // Resident on gpu0: a, b and c queue there rather than wait for a 2.5 s cold load on gpu1.
    for (const name of ['a', 'b', 'c']) request(h, name, order, { choices: ['gpu0', 'gpu1'] });
    await settled();
    assert.deepEqual(order, ['a']);
    h.scheduler.rebalance();
    await settled();
    assert.deepEqual(order, ['a'], 'gpu1 does not hold the model: nothing moves');
    h.resident.add('gpu1/m');
    h.scheduler.rebalance();
    await settled();
    assert.deepEqual(order, ['a', 'b']);
    assert.deepEqual(
      h.scheduler.snapshot().pools.map((p) => [p.backend, p.running, p.queued.interactive]),
      [
        ['gpu0', 1, 1],
        ['gpu1', 1, 0],
      ],
    );
  });

  it('moves no queued request to a backend whose request failed, unless the backend reports the model in memory', async () => {
    for (const resident of [false, true]) {
      const h = harness();
      const order: string[] = [];
      const requests = ['a', 'b', 'c', 'd'].map((name) => request(h, name, order, { choices: ['gpu0', 'gpu1'] }));
      await settled();
      if (resident) h.resident.add('gpu1/m');
      // A failed answer says nothing of the model being in memory there.
      requests[3]?.slot()?.release({ ok: false });
      await settled();
      assert.deepEqual(order, resident ? ['a', 'd', 'b'] : ['a', 'd']);
    }
  });

  it('breaks a tie by the router’s order', async () => {
    const h = harness();
    const slot = await choose(h, { choices: ['gpu1', 'gpu0'] });
    assert.deepEqual([slot.backend, slot.tie], ['gpu1', true]);
  });

  it('learns the cold-load time from Ollama’s load_duration and the prompt rate, and shows them', async () => {
    const coldLoads: string[] = [];
    const h = harness({ onColdLoad: (backend) => coldLoads.push(backend) });
    const slot = await choose(h, { choices: ['gpu0'] });
    // 2 s of loading, 3 s of answering.
    h.clock.advance(5_000);
    slot.release({ ok: true, loadDurationNs: 2_000_000_000, promptEvalCount: 500, promptEvalDurationNs: 250_000_000 });
    // The backend is asked again what it holds, so the next choice sees the model there.
    assert.deepEqual(coldLoads, ['gpu0']);
    const pool = h.scheduler.snapshot().pools.find((p) => p.backend === 'gpu0');
    assert.deepEqual([pool?.serviceMs, pool?.loadMs, pool?.promptTokensPerSecond, pool?.samples], [3_000, 2_000, 2_000, 1]);
    // gpu1 has not loaded it yet: the load measured on gpu0 is the best guess for it too.
    const estimate = h.scheduler.estimate('gpu1', 'm', 'interactive', 1000);
    assert.equal(estimate.loadMs, 2_000);
    assert.equal(Math.round(estimate.prefillMs), 1000);
  });

  it('knows a model file by its digest on each backend (created there, not pulled, it differs): one queue per backend, a load measured on one guides another', async () => {
    const h = harness({ identity: (backend, model) => (model === 'alias' || model === 'm' ? `${backend}-digest` : model) });
    const order: string[] = [];
    request(h, 'm', order, { choices: ['gpu1'] });
    request(h, 'alias', order, { model: 'alias', choices: ['gpu1'] });
    await settled();
    assert.deepEqual(order, ['m']);
    const slot = await choose(h, { choices: ['gpu0'] });
    h.clock.advance(3_000);
    slot.release({ ok: true, loadDurationNs: 2_000_000_000 });
    assert.equal(h.scheduler.estimate('gpu2', 'alias', 'interactive', 0).loadMs, 2_000);
  });

  it('keeps the figures of at most MAX_MEASURED models, forgetting the one measured longest ago: clients can name any number of models', async () => {
    const h = harness();
    const measure = async (model: string): Promise<void> => (await choose(h, { model, choices: ['gpu0'] })).release({ ok: true });
    await measure('kept');
    for (let i = 0; i < MAX_MEASURED - 1; i++) await measure(`m${i}`);
    await measure('kept');
    await measure('one-more');
    const models = h.scheduler.snapshot().pools.map((p) => p.model);
    assert.equal(models.length, MAX_MEASURED);
    assert.ok(models.includes('kept') && models.includes('one-more'));
    assert.ok(!models.includes('m0'), 'the model measured longest ago is forgotten');
  });

  it('does not count a cold load in the time per request: it is estimated on its own, once', async () => {
    const h = harness();
    const cold = await choose(h, { choices: ['gpu0'] });
    h.clock.advance(23_000);
    cold.release({ ok: true, loadDurationNs: 20_000_000_000 });
    const pool = h.scheduler.snapshot().pools.find((p) => p.backend === 'gpu0');
    assert.deepEqual([pool?.serviceMs, pool?.loadMs], [3_000, 20_000]);
  });

  it('takes no figure from an upstream that cannot be true: a load longer than the whole request, a prompt rate beyond any number', async () => {
    const h = harness();
    const slot = await choose(h, { choices: ['gpu0'] });
    h.clock.advance(3_000);
    slot.release({ ok: true, loadDurationNs: 1e18, promptEvalCount: 1e300, promptEvalDurationNs: 1 });
    const pool = h.scheduler.snapshot().pools.find((p) => p.backend === 'gpu0');
    assert.deepEqual([pool?.loadMs, pool?.promptTokensPerSecond], [3_000, null]);
    assert.equal(h.scheduler.estimate('gpu1', 'm', 'interactive', 0).loadMs, 3_000);
  });

  it('takes no prompt rate no GPU reaches, nor one from a prompt evaluation longer than the request: either would skew every later estimate', async () => {
    for (const [count, durationNs] of [
      [1e6, 1],
      [1e4, 1e12],
    ] as const) {
      const h = harness();
      const slot = await choose(h, { choices: ['gpu0'] });
      h.clock.advance(3_000);
      slot.release({ ok: true, promptEvalCount: count, promptEvalDurationNs: durationNs });
      const pool = h.scheduler.snapshot().pools.find((p) => p.backend === 'gpu0');
      assert.equal(pool?.promptTokensPerSecond, null, `${count} tokens in ${durationNs} ns`);
    }
  });

  it('a failed request teaches nothing', async () => {
    const h = harness();
    const slot = await choose(h, { choices: ['gpu0'] });
    h.clock.advance(60_000);
    slot.release({ ok: false });
    assert.deepEqual(h.scheduler.snapshot().pools, []);
  });
});

describe('lanes', () => {
  const lane = (kind: LaneInput['kind'], headers: LaneInput['headers'] = {}, path = '/api/chat', rules: LaneRule[] = []): string =>
    classifyLane({ kind, path, headers, client: clientSignals(headers) }, rules).lane;

  it('puts ghost text in fim: a completion with a suffix, and anything on Copilot’s engine path', () => {
    assert.equal(lane('fim', {}, '/api/generate'), 'fim');
    assert.equal(lane('completion', {}, '/v1/engines/copilot-codex/completions'), 'fim');
    assert.equal(lane('completion', {}, '/v1/completions'), 'interactive');
  });

  it('puts embeddings and work the client marks as background in background', () => {
    assert.equal(lane('embedding'), 'background');
    assert.equal(lane('chat', { 'x-interaction-type': 'conversation-background' }), 'background');
    assert.equal(lane('chat', { 'x-interaction-type': 'conversation-subagent' }), 'background');
    assert.equal(lane('chat', { 'openai-intent': 'conversation-summary' }), 'background');
    assert.equal(lane('chat', { 'x-interaction-type': 'conversation-agent', 'openai-intent': 'conversation-panel' }), 'interactive');
  });

  it('applies config rules first, by header value or by client', () => {
    const rules: LaneRule[] = [
      { lane: 'background', header: 'X-Job', contains: 'nightly' },
      { lane: 'fim', client: 'zed' },
    ];
    assert.equal(lane('chat', { 'x-job': 'Nightly-index' }, '/api/chat', rules), 'background');
    assert.equal(lane('chat', { 'x-job': 'daily' }, '/api/chat', rules), 'interactive');
    assert.equal(lane('chat', { 'user-agent': 'Zed/0.190' }, '/api/chat', rules), 'fim');
  });

  it("matches a rule's client by the name the bridge reads the client as, as well as by User-Agent text", () => {
    const rules: LaneRule[] = [{ lane: 'background', client: 'openai-sdk' }];
    // The OpenAI Python SDK (and aider on it) says "OpenAI/Python": read as openai-sdk, a text its User-Agent lacks.
    assert.equal(lane('chat', { 'user-agent': 'OpenAI/Python 1.82.0' }, '/v1/chat/completions', rules), 'background');
    assert.equal(lane('chat', { 'user-agent': 'Zed/0.190' }, '/api/chat', rules), 'interactive');
  });

  it('knows a ghost-text client by its editor session, else by address and User-Agent', () => {
    const input = (headers: LaneInput['headers']): LaneInput => ({ kind: 'fim', path: '/', headers, client: clientSignals(headers) });
    assert.equal(clientKey(input({ 'vscode-sessionid': 's1', 'user-agent': 'x' }), '127.0.0.1', null), 'session:s1');
    assert.equal(clientKey(input({ 'user-agent': 'GithubCopilot/1.0' }), '127.0.0.1', null), '127.0.0.1|GithubCopilot/1.0');
    assert.equal(clientKey(input({ 'vscode-sessionid': 's1' }), '127.0.0.1', 'alice'), 'alice|session:s1');
  });
});

describe('what the scheduler may choose from', () => {
  const b = (name: string): { name: string } => ({ name });
  it('leaves out GPUs without room for a cold load while another can take the request, and keeps them as the last resort', () => {
    assert.deepEqual(
      schedulerChoices(true, ['gpu1'], [b('gpu0'), b('gpu1')]).map((x) => x.name),
      ['gpu0'],
    );
    assert.deepEqual(
      schedulerChoices(true, ['gpu0', 'gpu1'], [b('gpu0'), b('gpu1')]).map((x) => x.name),
      ['gpu0', 'gpu1'],
    );
  });
  it('offers only the first candidate with dual-GPU off', () => {
    assert.deepEqual(
      schedulerChoices(false, [], [b('gpu0'), b('gpu1')]).map((x) => x.name),
      ['gpu0'],
    );
  });
});
