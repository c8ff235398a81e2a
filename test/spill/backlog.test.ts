import { prepareBatch } from '../../src/broker';
import { AckingConsumer, OrderCheck, cleanup, makeBroker, payload, publishRange, pullAll, segFiles } from './helpers';

afterEach(cleanup);

const KiB = 1024;
const MEMORY = 256 * KiB;
const SIZE = 1000;

describe('spill', () => {
  test('spill - a backlog of 10x memory goes to disk and comes back to two subscriptions in order, bytes intact', async () => {
    const { b, spillDir } = makeBroker();
    b.createQueue('q', { memoryBytes: MEMORY });
    b.createSubscription('q', 'push', {});
    const N = 3500; // ~3.4 MiB of payload, 13x the queue's memory
    let maxSpilled = 0;
    await publishRange(b, 'q', 0, N, SIZE, {
      batch: 25,
      each: () => {
        const s = b.queueStats('q');
        expect(s.memoryUsedBytes).toBeLessThanOrEqual(MEMORY);
        maxSpilled = Math.max(maxSpilled, s.spilledMessages);
      },
    });
    const after = b.queueStats('q');
    expect(after.published).toBe(N);
    expect(after.messages).toBe(N);
    expect(after.spilledBytes).toBeGreaterThan(9 * MEMORY);
    expect(after.spilledMessages).toBeGreaterThan(0);
    expect(maxSpilled).toBeGreaterThan(0);
    expect(segFiles(spillDir).length).toBeGreaterThan(0);

    // One subscription pulls and acks, the other has a push consumer, at the same time.
    const pushCheck = new OrderCheck(SIZE);
    const consumer = new AckingConsumer(300, b, 'q', 'push', pushCheck);
    const detach = b.consume('q', 'push', consumer);
    const pullCheck = new OrderCheck(SIZE);
    let sawSpilledWhileDraining = false;
    await Promise.all([
      pullAll(b, 'q', 'default', N, pullCheck, {
        max: 300,
        each: () => { if (b.queueStats('q').spilledMessages > 0) sawSpilledWhileDraining = true; },
      }),
      consumer.receivedAll(N),
    ]);
    detach();
    expect(sawSpilledWhileDraining).toBe(true);
    expect(pullCheck.seen).toHaveLength(N);
    expect(pushCheck.seen).toHaveLength(N);

    const end = b.queueStats('q');
    expect(end).toMatchObject({ messages: 0, spilledMessages: 0, spilledBytes: 0, memoryUsedBytes: 0, published: N });
    expect(b.spillStats).toMatchObject({ usedBytes: 0, errors: 0, corruptRecords: 0 });
    for (const sub of ['default', 'push']) {
      expect(b.subscriptionInfo('q', sub)).toMatchObject({ backlog: 0, inFlight: 0, delivered: N, acked: N, redelivered: 0 });
    }
    // The worker unlinks files in request order: once it answers a later request, they are gone.
    await b.injectSpillFault({ failWrites: 0 });
    expect(segFiles(spillDir)).toEqual([]);
  });

  test('spill - a stalled subscription spills while a fast one gets everything, then the stalled one drains in order', async () => {
    const { b } = makeBroker();
    b.createQueue('q', { memoryBytes: MEMORY, defaultSubscription: false });
    b.createSubscription('q', 'stalled', {});
    b.createSubscription('q', 'fast', {});
    const N = 3000;
    const fastCheck = new OrderCheck(SIZE);
    const fast = new AckingConsumer(200, b, 'q', 'fast', fastCheck);
    b.consume('q', 'fast', fast);
    let maxUsed = 0;
    let maxSpilled = 0;
    const watch = (): void => {
      const s = b.queueStats('q');
      maxUsed = Math.max(maxUsed, s.memoryUsedBytes);
      maxSpilled = Math.max(maxSpilled, s.spilledMessages);
      expect(s.memoryUsedBytes).toBeLessThanOrEqual(MEMORY);
    };
    await Promise.all([publishRange(b, 'q', 0, N, SIZE, { batch: 20, each: watch }), fast.receivedAll(N)]);
    expect(fastCheck.seen).toHaveLength(N);
    expect(maxSpilled).toBeGreaterThan(0);
    expect(maxUsed).toBeGreaterThan(MEMORY / 2);

    // Everything the fast one acked is still held for the stalled one: mostly on disk.
    const held = b.queueStats('q');
    expect(held.messages).toBe(N);
    expect(held.spilledMessages).toBeGreaterThan(N / 2);
    expect(b.subscriptionInfo('q', 'stalled')).toMatchObject({ backlog: N, delivered: 0 });
    expect(b.subscriptionInfo('q', 'fast')).toMatchObject({ backlog: 0, inFlight: 0, acked: N });

    const stalledCheck = new OrderCheck(SIZE);
    await pullAll(b, 'q', 'stalled', N, stalledCheck, { max: 250, each: watch });
    expect(stalledCheck.seen).toHaveLength(N);
    expect(b.queueStats('q')).toMatchObject({ messages: 0, spilledMessages: 0, spilledBytes: 0, memoryUsedBytes: 0 });
  });

  test('spill - a subscription with startAt earliest made while the backlog is on disk gets every retained message in order', async () => {
    const { b } = makeBroker();
    b.createQueue('q', { memoryBytes: MEMORY });
    const N = 2000;
    await publishRange(b, 'q', 0, N, SIZE);
    // The default subscription takes and acks the first 100: no subscription needs them any
    // more, so [101, N] is what is retained.
    const first = new OrderCheck(SIZE);
    await pullAll(b, 'q', 'default', 100, first, { max: 100 });
    const before = b.queueStats('q');
    expect(before.spilledMessages).toBeGreaterThan(0);
    // Disk space is freed by whole extents: the count may include some of the acked 100.
    expect(before.messages).toBeGreaterThanOrEqual(N - 100);

    b.createSubscription('q', 'late', { startAt: 'earliest' });
    expect(b.subscriptionInfo('q', 'late')).toMatchObject({ backlog: N - 100 });
    // More arrives after it was made; it gets that too.
    await publishRange(b, 'q', N, N + 500, SIZE);

    const late = new OrderCheck(SIZE, 101);
    await pullAll(b, 'q', 'late', N + 400, late, { max: 333 });
    expect(late.seen[0]).toBe(101);
    expect(late.seen).toHaveLength(N + 400);
    const rest = new OrderCheck(SIZE, 101);
    await pullAll(b, 'q', 'default', N + 400, rest, { max: 500 });
    expect(b.queueStats('q')).toMatchObject({ messages: 0, spilledMessages: 0, spilledBytes: 0 });
  });

  test('spill - a pull waiting while its backlog is read back from disk gets messages, not an early empty answer', async () => {
    const { b } = makeBroker();
    b.createQueue('q', { memoryBytes: MEMORY });
    const N = 1500;
    await publishRange(b, 'q', 0, N, SIZE);
    expect(b.queueStats('q').spilledMessages).toBeGreaterThan(N / 2);
    const check = new OrderCheck(SIZE);
    let extra = 0;
    while (check.seen.length < N) {
      const started = Date.now();
      const pulled = b.pullMessages('q', 'default', { max: 1000, waitMs: 5_000 });
      // A publish wakes the subscription while its disk read is still under way.
      b.publish('q', 'pub1', prepareBatch([{ data: `extra${extra++}` }], SIZE * 2));
      const msgs = await pulled;
      expect(msgs.length).toBeGreaterThan(0);
      expect(Date.now() - started).toBeLessThan(2_000);
      const first = msgs.filter((m) => m.seq <= N);
      check.take(first);
      b.ack('q', 'default', msgs.map((m) => m.id));
    }
  });

  test('spill - records bigger than half a read-ahead chunk come back from disk in order, bytes intact', async () => {
    const { b } = makeBroker();
    const memory = 4 * 1024 * KiB;
    b.createQueue('q', { memoryBytes: memory, maxMessageBytes: 1024 * KiB });
    const big = 600 * KiB; // one record per 1 MiB read, and extents of several records
    const N = 30;
    await publishRange(b, 'q', 0, N, big, { batch: 1 });
    expect(b.queueStats('q').spilledMessages).toBeGreaterThan(N / 3);
    const check = new OrderCheck(big);
    await pullAll(b, 'q', 'default', N, check, { max: 7, deadlineMs: 5_000 });
    expect(check.seen).toHaveLength(N);
    expect(b.queueStats('q')).toMatchObject({ messages: 0, spilledBytes: 0 });
  });

  test('spill - bodies delivered from disk and not acked stay intact past the read chunks kept for them, and come again after a nack', async () => {
    const { b } = makeBroker();
    b.createQueue('q', { memoryBytes: MEMORY, defaultSubscription: false });
    b.createSubscription('q', 'slow', { ackDeadlineMs: 60_000 });
    // About 12 MiB on disk: more than the 8 MiB of read chunks a subscription keeps for unacked bodies.
    const N = 12_000;
    await publishRange(b, 'q', 0, N, SIZE);
    expect(b.queueStats('q').spilledMessages).toBeGreaterThan(N * 0.9);
    const first: { id: string; seq: number; data: string }[] = [];
    while (first.length < N) first.push(...await b.pullMessages('q', 'slow', { max: 1000, waitMs: 1000 }));
    expect(first.map((m) => m.seq)).toEqual(Array.from({ length: N }, (_, k) => k + 1));
    for (const m of first) expect(m.data).toBe(payload(m.seq - 1, SIZE));
    expect(b.nack('q', 'slow', first.map((m) => m.id))).toEqual({ nacked: N, unknown: [] });
    const again: { seq: number; data: string; deliveryAttempt: number }[] = [];
    while (again.length < N) {
      const msgs = await b.pullMessages('q', 'slow', { max: 1000, waitMs: 1000 });
      again.push(...msgs);
      b.ack('q', 'slow', msgs.map((m) => m.id));
    }
    expect(again.map((m) => m.seq).sort((x, y) => x - y)).toEqual(Array.from({ length: N }, (_, k) => k + 1));
    for (const m of again) expect([m.seq, m.deliveryAttempt, m.data === payload(m.seq - 1, SIZE)]).toEqual([m.seq, 2, true]);
    expect(b.queueStats('q')).toMatchObject({ messages: 0, spilledBytes: 0 });
  });

  test('spill - messages in flight when their records go to disk are redelivered intact after a nack or a passed deadline', async () => {
    const { b } = makeBroker();
    b.createQueue('q', { memoryBytes: MEMORY });
    // A long deadline, passed on purpose below: a loaded machine must not pass it early.
    b.createSubscription('q', 'slow', { ackDeadlineMs: 60_000 });
    await publishRange(b, 'q', 0, 100, SIZE);
    const nacked = await b.pullMessages('q', 'slow', { max: 50 });
    const expiring = await b.pullMessages('q', 'slow', { max: 50 });
    expect(nacked.map((m) => m.seq)).toEqual(Array.from({ length: 50 }, (_, k) => k + 1));
    expect(expiring.map((m) => m.seq)).toEqual(Array.from({ length: 50 }, (_, k) => k + 51));
    // Their ring space is taken over by what comes next: the records move to disk under them.
    const N = 1600;
    await publishRange(b, 'q', 100, N, SIZE);
    expect(b.queueStats('q').spilledMessages).toBeGreaterThan(N / 2);
    expect(b.subscriptionInfo('q', 'slow')).toMatchObject({ inFlight: 100, backlog: N - 100 });

    const intact = (msgs: readonly { seq: number; data: string; deliveryAttempt: number }[], from: number): void => {
      // Redeliveries need not follow seq order.
      expect(msgs.map((m) => m.seq).sort((x, y) => x - y)).toEqual(Array.from({ length: 50 }, (_, k) => k + from));
      for (const m of msgs) {
        expect(m.deliveryAttempt).toBe(2);
        expect(m.data).toBe(payload(m.seq - 1, SIZE));
      }
    };
    expect(b.nack('q', 'slow', nacked.map((m) => m.id))).toEqual({ nacked: 50, unknown: [] });
    const again = await b.pullMessages('q', 'slow', { max: 50 });
    intact(again, 1);
    b.ack('q', 'slow', again.map((m) => m.id));
    b.subscription('q', 'slow').expire(Date.now() + 120_000); // the deadline passes
    const late = await b.pullMessages('q', 'slow', { max: 50 });
    intact(late, 51);
    b.ack('q', 'slow', late.map((m) => m.id));

    await pullAll(b, 'q', 'slow', N - 100, new OrderCheck(SIZE, 101));
    await pullAll(b, 'q', 'default', N, new OrderCheck(SIZE));
    expect(b.subscriptionInfo('q', 'slow')).toMatchObject({ redelivered: 100, acked: N, inFlight: 0, backlog: 0 });
    expect(b.queueStats('q')).toMatchObject({ messages: 0, spilledBytes: 0 });
  });
});
