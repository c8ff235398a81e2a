import { Checker, expectClean, summary } from './checker';
import { ChildSubscriber, Puller, RestPublisher } from './clients';
import { MiB, note, recordFigures, scale, sleep, waitFor } from './config';
import { RssSampler, call, startServer, stopAll } from './server';

/**
 * Load for a bounded time against a real `spillway serve` process: mixed subscriptions
 * (memory must stay flat while a stalled backlog spills, fast subscribers keep their latency),
 * and a greedy publisher beside modest ones (only the greedy one is held back).
 */

const children: ChildSubscriber[] = [];
const pullers: Puller[] = [];
afterEach(async () => {
  for (const p of pullers.splice(0)) await p.stop();
  for (const c of children.splice(0)) await c.stop();
});
afterAll(stopAll);

const percentile = (xs: number[], p: number): number => {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};

describe('reliability load', () => {
  test('load - sustained mixed load (4 publishers; fast, slow and stalled subscriptions): RSS stays flat while the backlog spills, fast latency holds', async () => {
    const s = await startServer({ memory: '64MiB' });
    const rss = new RssSampler(s.pid, 100);
    const QUEUE_MEMORY = 4 * MiB;
    expect((await call(s.url, 'PUT', '/v1/queues/load', { memoryBytes: QUEUE_MEMORY, defaultSubscription: false })).status).toBe(201);
    const subs = ['fast', 'slow', 'stalled'];
    for (const sub of subs) expect((await call(s.url, 'PUT', `/v1/queues/load/subscriptions/${sub}`)).status).toBe(201);
    const checker = new Checker();
    const fast = new ChildSubscriber({ url: s.url, queue: 'load', subscription: 'fast', prefetch: 1000, label: 'fast' }, checker);
    children.push(fast);
    await fast.waitSubscribed();
    const slow = new Puller({ url: s.url, queue: 'load', subscription: 'slow', checker, max: 100, rate: 300 });
    const stalled = new Puller({ url: s.url, queue: 'load', subscription: 'stalled', checker, max: 1000 });
    stalled.paused = true;
    for (const p of [slow, stalled]) { p.start(); pullers.push(p); }

    const SIZE = 1024;
    const RATE = scale(750, 1000); // per publisher, messages a second
    const DURATION = scale(8_000, 60_000);
    const pubs = [0, 1, 2, 3].map((i) => new RestPublisher({ url: s.url, queue: 'load', id: `load-${i}`, checker, subscriptions: subs, size: SIZE, batch: 50 }));
    const stats: { t: number; spilledBytes: number; memoryUsedBytes: number }[] = [];
    const t0 = Date.now();
    const watch = setInterval(() => {
      void call(s.url, 'GET', '/v1/queues/load').then((r) => stats.push({ t: Date.now() - t0, spilledBytes: r.body.spilledBytes, memoryUsedBytes: r.body.memoryUsedBytes }), () => {});
    }, 250);
    await Promise.all(pubs.map((p) => p.run(DURATION, RATE)));
    const publishedFor = Date.now() - t0;
    clearInterval(watch);
    const rssAtEnd = rss.samples[rss.samples.length - 1]!.rss;

    // Drain: the stalled subscription wakes, the slow one goes flat out.
    stalled.paused = false;
    slow.opts.rate = 0;
    await waitFor(() => checker.lostNow() === 0, 'every subscription to drain', scale(30_000, 120_000), () => summary(checker.report()));
    rss.stop();

    const r = checker.report();
    note(summary(r));
    expectClean(r);
    for (const p of pubs) expect(p.errors).toEqual([]);
    expect([slow.errors, stalled.errors, fast.errors]).toEqual([[], [], []]);
    const published = pubs.reduce((n, p) => n + p.accepted, 0);
    const backlogBytes = published * SIZE;
    // The server kept up with the offered load (within 10 %).
    expect(published).toBeGreaterThanOrEqual(0.9 * 4 * RATE * (DURATION / 1000));

    // The stalled backlog went to disk: far more than the queue's memory was spilled, memory stayed within it.
    const maxSpilled = Math.max(...stats.map((x) => x.spilledBytes));
    expect(maxSpilled).toBeGreaterThan(2 * QUEUE_MEMORY);
    expect(Math.max(...stats.map((x) => x.memoryUsedBytes))).toBeLessThanOrEqual(QUEUE_MEMORY);

    // RSS is flat: from the end of the first quarter to the end of publishing it grew by far
    // less than the backlog that built up meanwhile (which would be in the heap without spill).
    const quarter = publishedFor / 4;
    const rssWarm = rss.peakBetween(0, quarter);
    const rssLate = rss.peakBetween(quarter, publishedFor);
    const backlogAdded = backlogBytes * 0.75;
    const growth = rssLate - rssWarm;
    note(`RSS warm ${Math.round(rssWarm / MiB)} MiB, late peak ${Math.round(rssLate / MiB)} MiB, at end ${Math.round(rssAtEnd / MiB)} MiB; ` +
      `backlog ${Math.round(backlogBytes / MiB)} MiB, spilled up to ${Math.round(maxSpilled / MiB)} MiB`);
    expect(growth).toBeLessThan(Math.max(48 * MiB, backlogAdded / 4));

    // The fast subscriber's latency (publish to delivery) holds from the first half to the second.
    const half = publishedFor / 2;
    const lat = fast.latencies.filter((x) => x.at <= publishedFor);
    const early = lat.filter((x) => x.at < half).map((x) => x.ms);
    const late = lat.filter((x) => x.at >= half).map((x) => x.ms);
    const p99Early = percentile(early, 99);
    const p99Late = percentile(late, 99);
    note(`fast latency p50 ${percentile(early, 50)}/${percentile(late, 50)} ms, p99 ${p99Early}/${p99Late} ms (first/second half)`);
    expect(p99Late).toBeLessThan(Math.max(250, 3 * p99Early));

    recordFigures({
      scenario: `mixed load ${DURATION / 1000} s (4 pub; fast/slow/stalled)`, published: r.published, delivered: r.delivered, lost: r.lost,
      duplicated: r.duplicated, corrupt: r.corrupt, restricted: pubs.reduce((n, p) => n + p.restricted, 0), peakRssMiB: rss.peakMiB,
      seconds: Math.round(publishedFor / 1000),
      note: `RSS ${Math.round(rssWarm / MiB)}→${Math.round(rssLate / MiB)} MiB while publishing ${Math.round(backlogBytes / MiB)} MiB; spilled ≤ ${Math.round(maxSpilled / MiB)} MiB; fast p99 ${p99Late} ms`,
    });
  }, scale(60_000, 300_000));

  test('load - a greedy publisher at 3× capacity beside three modest ones: only the greedy one is restricted, the others keep ≥ 95 % of their rate', async () => {
    const s = await startServer({ memory: '64MiB' });
    const rss = new RssSampler(s.pid, 200);
    expect((await call(s.url, 'PUT', '/v1/queues/greedy', { publisherLimitBytes: 1 * MiB })).status).toBe(201);
    const checker = new Checker();
    // Capacity: the subscription consumes (acks) at most CAPACITY messages a second.
    const CAPACITY = 1000;
    const consumer = new ChildSubscriber({ url: s.url, queue: 'greedy', subscription: 'default', prefetch: 200, rate: CAPACITY, label: 'capacity' }, checker);
    children.push(consumer);
    await consumer.waitSubscribed();
    const SIZE = 1024;
    const DURATION = scale(8_000, 30_000);
    const MODEST = CAPACITY / 10;
    const greedy = new RestPublisher({ url: s.url, queue: 'greedy', id: 'greedy', checker, subscriptions: ['default'], size: SIZE, batch: 50 });
    const modest = [1, 2, 3].map((i) => new RestPublisher({ url: s.url, queue: 'greedy', id: `modest-${i}`, checker, subscriptions: ['default'], size: SIZE, batch: 10 }));
    let sawRestricted = false;
    const watch = setInterval(() => {
      void call(s.url, 'GET', '/v1/queues/greedy/publishers/greedy').then((r) => { if (r.body?.restricted === true) sawRestricted = true; }, () => {});
    }, 200);
    await Promise.all([greedy.run(DURATION, 3 * CAPACITY), ...modest.map((m) => m.run(DURATION, MODEST))]);
    clearInterval(watch);
    const windowTarget = MODEST * (DURATION / 1000);
    const figures = { greedy: greedy.accepted, greedyRestricted: greedy.restricted, modest: modest.map((m) => m.accepted), modestRestricted: modest.map((m) => m.restricted) };
    note(`greedy/modest: ${JSON.stringify(figures)} (modest target ${windowTarget} each)`);

    // Only the greedy one was restricted, and it was held to what the subscription drains.
    expect(sawRestricted).toBe(true);
    expect(greedy.restricted).toBeGreaterThan(0);
    expect(greedy.accepted).toBeLessThan(0.6 * 3 * CAPACITY * (DURATION / 1000));
    for (const m of modest) {
      expect(m.restricted).toBe(0);
      expect(m.accepted).toBeGreaterThanOrEqual(0.95 * windowTarget);
      const state = (await call(s.url, 'GET', `/v1/queues/greedy/publishers/${m.opts.id}`)).body;
      expect(state.restricted).toBe(false);
    }
    for (const p of [greedy, ...modest]) expect(p.errors).toEqual([]);

    await waitFor(() => checker.lostNow() === 0, 'the subscription to drain', 60_000, () => summary(checker.report()));
    rss.stop();
    const r = checker.report();
    note(summary(r));
    expectClean(r);
    const metrics = (await call(s.url, 'GET', '/metrics')).body as string;
    expect(metrics).toMatch(/spillway_publisher_restricted_total\{queue="greedy"\} [1-9]/);
    recordFigures({
      scenario: `greedy publisher at 3× capacity ${DURATION / 1000} s`, published: r.published, delivered: r.delivered, lost: r.lost,
      duplicated: r.duplicated, corrupt: r.corrupt, restricted: greedy.restricted, peakRssMiB: rss.peakMiB, seconds: DURATION / 1000,
      note: `modest kept ${modest.map((m) => Math.round((100 * m.accepted) / windowTarget)).join('/')} % of rate, 0 restricted`,
    });
    await sleep(0);
  }, scale(45_000, 120_000));
});
