import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Message } from '../../src/queue/message';
import { TestConsumer, caught, closeAll, drain, makeBroker, publish, sleep, turn } from './helpers';
import { prepareBatch } from '../../src/broker';

afterEach(closeAll);

const seqs = (msgs: readonly Message[]): number[] => msgs.map((m) => m.seq);
const datas = (msgs: readonly Message[]): string[] => msgs.map((m) => m.data);
const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('subscriptions', () => {
  test('subscriptions - a queue gets a subscription named default that receives every message', async () => {
    const b = makeBroker();
    const { created, queue } = b.createQueue('q');
    expect(created).toBe(true);
    expect(queue.subscriptions).toEqual(['default']);

    const before = Date.now();
    const out = publish(b, 'q', [{ data: 'hello', attributes: { a: '1' }, key: 'k' }, 'world']);
    expect(out.seqs).toEqual([1, 2]);
    expect(out.duplicates).toBe(0);

    const got = await b.pullMessages('q', 'default', { max: 10 });
    expect(got).toHaveLength(2);
    expect(got[0]).toEqual({
      id: out.ids[0], seq: 1, data: 'hello', encoding: 'utf8', attributes: { a: '1' }, key: 'k',
      publisherId: 'pub1', publishedAt: expect.any(String), deliveryAttempt: 1,
    });
    expect(Date.parse(got[0]!.publishedAt)).toBeGreaterThanOrEqual(before - 1);
    expect(got[1]).toMatchObject({ id: out.ids[1], seq: 2, data: 'world', attributes: {}, deliveryAttempt: 1 });
    expect(got[1]!.key).toBeUndefined();
  });

  test('subscriptions - defaultSubscription:false drops what is published and counts it', async () => {
    const b = makeBroker();
    b.createQueue('q', { defaultSubscription: false });
    expect(b.queueStats('q').subscriptions).toEqual([]);
    const out = publish(b, 'q', ['a', 'b', 'c']);
    expect(out.seqs).toEqual([1, 2, 3]);
    expect(b.queueStats('q')).toMatchObject({ published: 3, dropped: 3, messages: 0, memoryUsedBytes: 0 });

    // A subscription made afterwards, even from the earliest, finds nothing: the messages were never kept.
    b.createSubscription('q', 'late', { startAt: 'earliest' });
    expect(await b.pullMessages('q', 'late', { max: 10 })).toEqual([]);
    publish(b, 'q', ['d']);
    expect(datas(await b.pullMessages('q', 'late', { max: 10 }))).toEqual(['d']);
    expect(b.queueStats('q')).toMatchObject({ published: 4, dropped: 3 });
  });

  test('subscriptions - fan-out: each subscription gets every message', async () => {
    const b = makeBroker();
    b.createQueue('q');
    b.createSubscription('q', 'other');
    publish(b, 'q', ['1', '2', '3']);
    const a = await b.pullMessages('q', 'default', { max: 10 });
    const o = await b.pullMessages('q', 'other', { max: 10 });
    expect(datas(a)).toEqual(['1', '2', '3']);
    expect(datas(o)).toEqual(['1', '2', '3']);
    // Acking on one subscription does not consume the message for the other.
    b.ack('q', 'default', a.map((m) => m.id));
    expect(b.subscriptionInfo('q', 'other').inFlight).toBe(3);
    expect(b.queueStats('q').messages).toBe(3);
  });

  test('subscriptions - competing pull consumers of one subscription each get a message exactly once', async () => {
    const b = makeBroker();
    b.createQueue('q');
    publish(b, 'q', range(1, 50).map(String));
    const pulls = await Promise.all(range(1, 10).map(() => b.pullMessages('q', 'default', { max: 7 })));
    const all = pulls.flat();
    expect(all).toHaveLength(50);
    expect(new Set(seqs(all)).size).toBe(50);
    expect(all.every((m) => m.deliveryAttempt === 1)).toBe(true);
  });

  test('subscriptions - competing push consumers share the messages, each message to exactly one', async () => {
    const b = makeBroker();
    b.createQueue('q');
    // Each consumer acks on the next turn, so neither can take everything at once (prefetch 10).
    const ackLater = (msgs: Message[]): void => { setImmediate(() => b.ack('q', 'default', msgs.map((m) => m.id))); };
    const c1 = new TestConsumer(10, ackLater);
    const c2 = new TestConsumer(10, ackLater);
    b.consume('q', 'default', c1);
    b.consume('q', 'default', c2);
    publish(b, 'q', range(1, 200).map(String));
    await Promise.all([c1.received(1), c2.received(1)]);
    while (c1.got.length + c2.got.length < 200) await turn();
    const all = [...c1.got, ...c2.got];
    expect(all).toHaveLength(200);
    expect(new Set(seqs(all)).size).toBe(200);
    expect(c1.got.length).toBeGreaterThan(0);
    expect(c2.got.length).toBeGreaterThan(0);
    // Each consumer's own first deliveries are in seq order.
    for (const c of [c1, c2]) expect(seqs(c.got)).toEqual([...seqs(c.got)].sort((x, y) => x - y));
  });

  test('subscriptions - startAt earliest gets retained messages, latest only what comes after', async () => {
    const b = makeBroker();
    b.createQueue('q');
    publish(b, 'q', ['old1', 'old2']);
    b.createSubscription('q', 'early', { startAt: 'earliest' });
    b.createSubscription('q', 'late', { startAt: 'latest' });
    b.createSubscription('q', 'dflt');
    expect(b.subscriptionInfo('q', 'early').backlog).toBe(2);
    expect(b.subscriptionInfo('q', 'late').backlog).toBe(0);
    publish(b, 'q', ['new']);
    expect(datas(await b.pullMessages('q', 'early', { max: 10 }))).toEqual(['old1', 'old2', 'new']);
    expect(datas(await b.pullMessages('q', 'late', { max: 10 }))).toEqual(['new']);
    expect(datas(await b.pullMessages('q', 'dflt', { max: 10 }))).toEqual(['new']);
  });

  test('subscriptions - startAt earliest does not get what every subscription already acked', async () => {
    const b = makeBroker();
    b.createQueue('q');
    publish(b, 'q', ['1', '2', '3']);
    const got = await b.pullMessages('q', 'default', { max: 2 });
    b.ack('q', 'default', got.map((m) => m.id));
    b.createSubscription('q', 'early', { startAt: 'earliest' });
    expect(datas(await b.pullMessages('q', 'early', { max: 10 }))).toEqual(['3']);
  });
});

describe('filter', () => {
  test('filter - ineligible messages are skipped and the backlog counts only eligible ones', async () => {
    const b = makeBroker();
    b.createQueue('q');
    b.createSubscription('q', 'red', { filter: { attributes: { color: 'red' } } });
    b.createSubscription('q', 'redL', { filter: { attributes: { color: 'red', size: 'L' } } });
    publish(b, 'q', [
      { data: 'r1', attributes: { color: 'red' } },
      { data: 'b1', attributes: { color: 'blue' } },
      { data: 'none' },
      { data: 'rL', attributes: { color: 'red', size: 'L', extra: 'x' } },
      { data: 'rS', attributes: { color: 'red', size: 'S' } },
    ]);
    expect(b.subscriptionInfo('q', 'red').backlog).toBe(3);
    expect(b.subscriptionInfo('q', 'redL').backlog).toBe(1);
    expect(b.subscriptionInfo('q', 'default').backlog).toBe(5);
    const red = await b.pullMessages('q', 'red', { max: 10 });
    expect(datas(red)).toEqual(['r1', 'rL', 'rS']);
    expect(seqs(red)).toEqual([1, 4, 5]);
    expect(datas(await b.pullMessages('q', 'redL', { max: 10 }))).toEqual(['rL']);
    expect(b.subscriptionInfo('q', 'red').backlog).toBe(0);
  });

  test('filter - a startAt earliest subscription with nothing eligible retained holds nothing back', async () => {
    const b = makeBroker();
    b.createQueue('q', { spill: false });
    publish(b, 'q', [{ data: 'blue', attributes: { color: 'blue' } }]);
    b.createSubscription('q', 'red', { filter: { attributes: { color: 'red' } }, startAt: 'earliest' });
    expect(b.subscriptionInfo('q', 'red').backlog).toBe(0);
    await drain(b, 'q', 'default');
    expect(b.queueStats('q')).toMatchObject({ messages: 0, memoryUsedBytes: 0 });
    publish(b, 'q', [{ data: 'red', attributes: { color: 'red' } }]);
    expect(datas(await b.pullMessages('q', 'red', { max: 10 }))).toEqual(['red']);
  });

  test('filter - a message no subscription is eligible for is dropped and counted', () => {
    const b = makeBroker();
    b.createQueue('q', { defaultSubscription: false });
    b.createSubscription('q', 'red', { filter: { attributes: { color: 'red' } } });
    publish(b, 'q', [{ data: 'b', attributes: { color: 'blue' } }, { data: 'r', attributes: { color: 'red' } }]);
    expect(b.queueStats('q')).toMatchObject({ published: 2, dropped: 1, messages: 1 });
  });

  test('filter - messages a filtered subscription will never get do not hold memory', async () => {
    // A filtered subscription that sees no eligible message must not keep the ring from being reclaimed.
    const b = makeBroker();
    b.createQueue('q', { memoryBytes: 65536, spill: false });
    b.createSubscription('q', 'red', { filter: { attributes: { color: 'red' } } });
    const blue = { data: 'x'.repeat(1000), attributes: { color: 'blue' } };
    for (let i = 0; i < 200; i++) {
      publish(b, 'q', [blue]); // 200 KB through a 64 KiB ring: QUEUE_FULL if 'red' pinned it
      await drain(b, 'q', 'default');
      expect(b.queueStats('q')).toMatchObject({ messages: 0, memoryUsedBytes: 0 });
    }
    // A batch of blue then red: the blue ones are freed once the red one is acked.
    publish(b, 'q', [blue, blue, { data: 'r', attributes: { color: 'red' } }]);
    await drain(b, 'q', 'default');
    expect(b.queueStats('q').messages).toBe(3);
    expect(datas(await drain(b, 'q', 'red'))).toEqual(['r']);
    expect(b.queueStats('q')).toMatchObject({ messages: 0, memoryUsedBytes: 0 });
  });
});

describe('pull', () => {
  test('pull - a waiting pull that is aborted ends empty and takes nothing', async () => {
    const b = makeBroker();
    b.createQueue('q');
    const stop = new AbortController();
    const t0 = Date.now();
    const waiting = b.pull('q', 'default', 10, 20_000, false, (batch) => batch.messages(), stop.signal);
    stop.abort();
    expect(await waiting).toEqual([]);
    expect(Date.now() - t0).toBeLessThan(5_000);
    publish(b, 'q', ['a']);
    await turn();
    // The aborted pull did not take 'a': the next pull gets it, first attempt.
    expect((await b.pullMessages('q', 'default')).map((m) => [m.data, m.deliveryAttempt])).toEqual([['a', 1]]);
    expect(b.subscriptionInfo('q', 'default')).toMatchObject({ inFlight: 1, delivered: 1 });
  });

  test('pull - closing the broker answers waiting pulls at once', async () => {
    const b = makeBroker();
    b.createQueue('q');
    const t0 = Date.now();
    const waiting = b.pullMessages('q', 'default', { waitMs: 20_000 });
    await b.close();
    expect(await waiting).toEqual([]);
    expect(Date.now() - t0).toBeLessThan(5_000);
  });

  test('pull - a waiting pull is not answered early with nothing by a message acked while due again', async () => {
    const b = makeBroker();
    b.createQueue('q');
    b.createSubscription('q', 's', { ackDeadlineMs: 60_000 });
    publish(b, 'q', ['a']);
    const [m] = await b.pullMessages('q', 's');
    const waiting = b.pullMessages('q', 's', { waitMs: 20_000 });
    // In one turn: the deadline passes ('a' is due again), then the late ack of 'a' arrives.
    b.subscription('q', 's').expire(Date.now() + 120_000);
    expect(b.ack('q', 's', [m!.id]).acked).toBe(1);
    await turn();
    publish(b, 'q', ['b']);
    expect((await waiting).map((x) => [x.data, x.deliveryAttempt])).toEqual([['b', 1]]);
  });

  test('pull - waitMs resolves as soon as a message arrives', async () => {
    const b = makeBroker();
    b.createQueue('q');
    const t0 = Date.now();
    const pending = b.pullMessages('q', 'default', { max: 5, waitMs: 20_000 });
    publish(b, 'q', ['a', 'b']);
    const got = await pending;
    expect(datas(got)).toEqual(['a', 'b']);
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  test('pull - two waiting pulls each take what arrives, the other keeps waiting', async () => {
    const b = makeBroker();
    b.createQueue('q');
    const p1 = b.pullMessages('q', 'default', { max: 1, waitMs: 20_000 });
    const p2 = b.pullMessages('q', 'default', { max: 1, waitMs: 20_000 });
    publish(b, 'q', ['a']);
    expect(datas(await p1)).toEqual(['a']);
    publish(b, 'q', ['b']);
    expect(datas(await p2)).toEqual(['b']);
  });

  test('pull - waitMs with nothing to deliver returns no messages after the wait', async () => {
    const b = makeBroker();
    b.createQueue('q');
    const t0 = Date.now();
    expect(await b.pullMessages('q', 'default', { waitMs: 40 })).toEqual([]);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(35);
  });

  test('pull - autoAck acks what it returns', async () => {
    const b = makeBroker();
    b.createQueue('q');
    publish(b, 'q', ['a', 'b']);
    expect(datas(await b.pullMessages('q', 'default', { max: 10, autoAck: true }))).toEqual(['a', 'b']);
    expect(b.subscriptionInfo('q', 'default')).toMatchObject({ inFlight: 0, acked: 2, backlog: 0 });
    expect(b.queueStats('q')).toMatchObject({ messages: 0, memoryUsedBytes: 0 });
  });

  test('pull - unknown queue and subscription are QUEUE_NOT_FOUND and SUBSCRIPTION_NOT_FOUND', () => {
    const b = makeBroker();
    b.createQueue('q');
    expect(caught(() => b.pullMessages('nope', 'default')).code).toBe('QUEUE_NOT_FOUND');
    const err = caught(() => b.pullMessages('q', 'nope'));
    expect(err.code).toBe('SUBSCRIPTION_NOT_FOUND');
    expect(err.status).toBe(404);
  });
});

describe('ack, nack, deadlines', () => {
  test('ack - ids not in flight go to unknown', async () => {
    const b = makeBroker();
    b.createQueue('q');
    const out = publish(b, 'q', ['a', 'b', 'c']);
    const got = await b.pullMessages('q', 'default', { max: 2 });
    const res = b.ack('q', 'default', [got[0]!.id, 'garbage', out.ids[2], 42, got[1]!.id]);
    // 'c' was published but never delivered: not in flight.
    expect(res).toEqual({ acked: 2, unknown: ['garbage', out.ids[2], 42] });
    expect(b.ack('q', 'default', [got[0]!.id])).toEqual({ acked: 0, unknown: [got[0]!.id] });
    // An id of another broker run is never mistaken for one of this run.
    const other = makeBroker();
    other.createQueue('q');
    publish(other, 'q', ['x', 'y', 'z']);
    const foreign = await other.pullMessages('q', 'default', { max: 3 });
    expect(b.ack('q', 'default', [foreign[2]!.id]).unknown).toEqual([foreign[2]!.id]);
  });

  test('nack - with a delay the message comes back after it with deliveryAttempt 2', async () => {
    const b = makeBroker();
    b.createQueue('q');
    publish(b, 'q', ['a']);
    const [m] = await b.pullMessages('q', 'default');
    const t0 = Date.now();
    expect(b.nack('q', 'default', [m!.id, 'nope'], 60)).toEqual({ nacked: 1, unknown: ['nope'] });
    expect(await b.pullMessages('q', 'default')).toEqual([]);
    expect(b.subscriptionInfo('q', 'default')).toMatchObject({ inFlight: 0, backlog: 1 });
    const again = await b.pullMessages('q', 'default', { waitMs: 5000 });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(55);
    expect(again).toHaveLength(1);
    expect(again[0]).toMatchObject({ id: m!.id, seq: m!.seq, data: 'a', deliveryAttempt: 2 });
    expect(b.subscriptionInfo('q', 'default')).toMatchObject({ delivered: 2, redelivered: 1, inFlight: 1 });
  });

  test('nack - without a delay the message is delivered again at once, before newer ones', async () => {
    const b = makeBroker();
    b.createQueue('q');
    publish(b, 'q', ['a', 'b']);
    const [m] = await b.pullMessages('q', 'default');
    b.nack('q', 'default', [m!.id]);
    const got = await b.pullMessages('q', 'default', { max: 10 });
    expect(got.map((x) => [x.data, x.deliveryAttempt])).toEqual([['a', 2], ['b', 1]]);
  });

  test('ack deadline - a message not acked in time is delivered again', async () => {
    const b = makeBroker();
    b.createQueue('q');
    b.createSubscription('q', 's', { ackDeadlineMs: 30 });
    publish(b, 'q', ['a']);
    const [m] = await b.pullMessages('q', 's');
    expect(m!.deliveryAttempt).toBe(1);
    const again = await b.pullMessages('q', 's', { waitMs: 5000 });
    expect(again.map((x) => [x.id, x.deliveryAttempt])).toEqual([[m!.id, 2]]);
    expect(b.subscriptionInfo('q', 's')).toMatchObject({ redelivered: 1, inFlight: 1 });
    // The late ack of the first attempt is still an ack of the message.
    expect(b.ack('q', 's', [m!.id])).toEqual({ acked: 1, unknown: [] });
  });

  test('extend - moves the ack deadline so the message is not delivered again', async () => {
    const b = makeBroker();
    b.createQueue('q');
    b.createSubscription('q', 's', { ackDeadlineMs: 40 });
    publish(b, 'q', ['a']);
    const [m] = await b.pullMessages('q', 's');
    expect(b.extend('q', 's', [m!.id, 'nope'], 10_000)).toEqual({ extended: 1, unknown: ['nope'] });
    await sleep(150); // well past the original 40 ms deadline
    expect(await b.pullMessages('q', 's')).toEqual([]);
    expect(b.subscriptionInfo('q', 's')).toMatchObject({ inFlight: 1, redelivered: 0 });
    expect(b.ack('q', 's', [m!.id]).acked).toBe(1);
  });

  test('dead letter - after maxDeliveries the message goes to the deadLetterQueue', async () => {
    const b = makeBroker();
    b.createQueue('q');
    b.createQueue('dlq');
    b.createSubscription('q', 's', { maxDeliveries: 2, deadLetterQueue: 'dlq' });
    publish(b, 'q', [{ data: 'poison', attributes: { kind: 'bad' }, key: 'k1' }, 'fine']);
    let [m] = await b.pullMessages('q', 's');
    b.nack('q', 's', [m!.id]);
    [m] = await b.pullMessages('q', 's');
    expect(m!.deliveryAttempt).toBe(2);
    b.nack('q', 's', [m!.id]);

    const dead = await b.pullMessages('dlq', 'default', { max: 10 });
    expect(dead).toHaveLength(1);
    expect(dead[0]).toMatchObject({ data: 'poison', attributes: { kind: 'bad' }, key: 'k1', publisherId: 'pub1', deliveryAttempt: 1 });
    expect(b.subscriptionInfo('q', 's')).toMatchObject({ deadLettered: 1, dropped: 0, inFlight: 0 });
    // The next message is unaffected, and the source no longer holds the dead one for 's'.
    expect(datas(await drain(b, 'q', 's'))).toEqual(['fine']);
    await drain(b, 'q', 'default');
    expect(b.queueStats('q')).toMatchObject({ messages: 0, memoryUsedBytes: 0 });
  });

  test('dead letter - by ack deadline expiry too', async () => {
    const b = makeBroker();
    b.createQueue('q', { defaultSubscription: false });
    b.createQueue('dlq');
    b.createSubscription('q', 's', { maxDeliveries: 1, deadLetterQueue: 'dlq', ackDeadlineMs: 20 });
    publish(b, 'q', ['late']);
    await b.pullMessages('q', 's');
    const dead = await b.pullMessages('dlq', 'default', { waitMs: 5000 });
    expect(datas(dead)).toEqual(['late']);
    expect(b.subscriptionInfo('q', 's').deadLettered).toBe(1);
    expect(b.queueStats('q')).toMatchObject({ messages: 0, memoryUsedBytes: 0 });
  });

  test('dead letter - without a deadLetterQueue the message is dropped and counted', async () => {
    const b = makeBroker();
    b.createQueue('q', { defaultSubscription: false });
    b.createSubscription('q', 's', { maxDeliveries: 1 });
    publish(b, 'q', ['a', 'b']);
    const [m] = await b.pullMessages('q', 's');
    b.nack('q', 's', [m!.id]);
    expect(b.subscriptionInfo('q', 's')).toMatchObject({ dropped: 1, deadLettered: 0, inFlight: 0, backlog: 1 });
    expect(datas(await drain(b, 'q', 's'))).toEqual(['b']);
    expect(b.queueStats('q')).toMatchObject({ messages: 0, memoryUsedBytes: 0 });
  });
});

describe('consumers', () => {
  test('consumers - on detach the unacked messages go at once to another consumer with deliveryAttempt 2', async () => {
    const b = makeBroker();
    b.createQueue('q');
    const c1 = new TestConsumer(3);
    const detach1 = b.consume('q', 'default', c1);
    publish(b, 'q', ['a', 'b', 'c', 'd']);
    await c1.received(3);
    b.ack('q', 'default', [c1.got[1]!.id]); // 'b' is done
    await turn();
    expect(datas(c1.got)).toEqual(['a', 'b', 'c', 'd']);
    const c2 = new TestConsumer(10);
    b.consume('q', 'default', c2);
    await turn();
    expect(c2.got).toEqual([]); // c1 holds everything
    detach1();
    await c2.received(3);
    expect(c2.got.map((m) => [m.data, m.deliveryAttempt])).toEqual([['a', 2], ['c', 2], ['d', 2]]);
    expect(c1.unacked).toBe(0);
    expect(c2.unacked).toBe(3);
    expect(b.subscriptionInfo('q', 'default')).toMatchObject({ inFlight: 3, redelivered: 3 });
    // Detach with nothing to hand over is harmless, and twice too.
    detach1();
  });

  test('consumers - on detach unacked messages go to a waiting pull', async () => {
    const b = makeBroker();
    b.createQueue('q');
    const c1 = new TestConsumer(10);
    const detach = b.consume('q', 'default', c1);
    publish(b, 'q', ['a']);
    await c1.received(1);
    const pending = b.pullMessages('q', 'default', { waitMs: 20_000 });
    detach();
    expect((await pending).map((m) => [m.data, m.deliveryAttempt])).toEqual([['a', 2]]);
  });

  test('consumers - prefetch is never exceeded', async () => {
    const b = makeBroker();
    b.createQueue('q');
    let acks = 0;
    // Acks a few at a time, a turn later, so the consumer keeps running into its prefetch.
    const c = new TestConsumer(5, (msgs) => {
      setImmediate(() => { acks += b.ack('q', 'default', msgs.slice(0, 2).map((m) => m.id)).acked; });
      setTimeout(() => { acks += b.ack('q', 'default', msgs.slice(2).map((m) => m.id)).acked; }, 1);
    });
    b.consume('q', 'default', c);
    publish(b, 'q', range(1, 60).map(String));
    await c.received(60);
    expect(c.maxUnacked).toBeLessThanOrEqual(5);
    expect(c.maxUnacked).toBe(5);
    expect(seqs(c.got)).toEqual(range(1, 60));
    while (acks < 60) await turn();
    expect(c.unacked).toBe(0);
  });

  test('consumers - a consumer may detach itself while taking a batch', async () => {
    const b = makeBroker();
    b.createQueue('q');
    let detach1: () => void = () => undefined;
    const c1 = new TestConsumer(2, () => detach1());
    const c2 = new TestConsumer(100);
    detach1 = b.consume('q', 'default', c1);
    b.consume('q', 'default', c2);
    publish(b, 'q', range(1, 10).map(String));
    await c2.received(10);
    // c1 took 2 and left at once: they came back to c2.
    expect(c1.got).toHaveLength(2);
    expect(c2.got.filter((m) => m.deliveryAttempt === 2).map((m) => m.seq).sort()).toEqual(seqs(c1.got).sort());
    expect(new Set(seqs(c2.got)).size).toBe(10);
  });
});

describe('expiry and removal', () => {
  test('expiry - ttlMs removes the subscription: consumers get expired, later calls SUBSCRIPTION_NOT_FOUND', async () => {
    const b = makeBroker();
    b.createQueue('q');
    const { subscription } = b.createSubscription('q', 'tmp', { ttlMs: 50 });
    expect(Date.parse(subscription.expiresAt!)).toBeGreaterThan(Date.now());
    const c = new TestConsumer(10);
    b.consume('q', 'tmp', c);
    publish(b, 'q', ['a']);
    await c.received(1);
    expect(await c.endedWith()).toBe('expired');
    expect(caught(() => b.pullMessages('q', 'tmp')).code).toBe('SUBSCRIPTION_NOT_FOUND');
    expect(caught(() => b.ack('q', 'tmp', [c.got[0]!.id])).code).toBe('SUBSCRIPTION_NOT_FOUND');
    expect(caught(() => b.subscriptionInfo('q', 'tmp')).code).toBe('SUBSCRIPTION_NOT_FOUND');
    expect(b.queueStats('q').subscriptions).toEqual(['default']);
    // What only the expired subscription held is reclaimed.
    await drain(b, 'q', 'default');
    expect(b.queueStats('q')).toMatchObject({ messages: 0, memoryUsedBytes: 0 });
  });

  test('expiry - maxEvents removes the subscription after that many acks', async () => {
    const b = makeBroker();
    b.createQueue('q');
    b.createSubscription('q', 'three', { maxEvents: 3 });
    const c = new TestConsumer(10);
    b.consume('q', 'three', c);
    publish(b, 'q', ['1', '2', '3', '4', '5']);
    await c.received(5);
    expect(b.subscriptionInfo('q', 'three').remainingEvents).toBe(3);
    b.ack('q', 'three', [c.got[0]!.id, c.got[1]!.id]);
    expect(b.subscriptionInfo('q', 'three').remainingEvents).toBe(1);
    expect(c.ended_).toBeUndefined();
    b.ack('q', 'three', [c.got[2]!.id]);
    expect(c.ended_).toBe('expired');
    expect(caught(() => b.ack('q', 'three', [c.got[3]!.id])).code).toBe('SUBSCRIPTION_NOT_FOUND');
    expect(caught(() => b.consume('q', 'three', new TestConsumer(1))).code).toBe('SUBSCRIPTION_NOT_FOUND');
  });

  test('expiry - maxEvents counts autoAck pulls and never hands out more than remain', async () => {
    const b = makeBroker();
    b.createQueue('q');
    b.createSubscription('q', 'two', { maxEvents: 2 });
    publish(b, 'q', ['1', '2', '3']);
    expect(datas(await b.pullMessages('q', 'two', { max: 10, autoAck: true }))).toEqual(['1', '2']);
    expect(caught(() => b.pullMessages('q', 'two')).code).toBe('SUBSCRIPTION_NOT_FOUND');
  });

  test('subscriptions - delete ends consumers with deleted and waiting pulls with nothing', async () => {
    const b = makeBroker();
    b.createQueue('q');
    b.createSubscription('q', 's');
    const c = new TestConsumer(10);
    b.consume('q', 's', c);
    const pending = b.pullMessages('q', 's', { waitMs: 20_000 });
    b.deleteSubscription('q', 's');
    expect(c.ended_).toBe('deleted');
    expect(await pending).toEqual([]);
    expect(caught(() => b.deleteSubscription('q', 's')).code).toBe('SUBSCRIPTION_NOT_FOUND');
    expect(b.queueStats('q').subscriptions).toEqual(['default']);
  });

  test('subscriptions - deleting the only subscription that holds messages frees them', async () => {
    const b = makeBroker();
    b.createQueue('q');
    b.createSubscription('q', 'slow');
    publish(b, 'q', ['a', 'b']);
    await drain(b, 'q', 'default');
    expect(b.queueStats('q').messages).toBe(2);
    b.deleteSubscription('q', 'slow');
    expect(b.queueStats('q')).toMatchObject({ messages: 0, memoryUsedBytes: 0 });
  });

  test('purge - removes every retained message; nothing of it is delivered again', async () => {
    const b = makeBroker();
    b.createQueue('q');
    b.createSubscription('q', 'other');
    publish(b, 'q', ['1', '2', '3', '4', '5']);
    const inflight = await b.pullMessages('q', 'default', { max: 2 });
    const c = new TestConsumer(10);
    b.consume('q', 'other', c);
    await c.received(5);
    expect(b.purge('q')).toBe(5);
    expect(b.queueStats('q')).toMatchObject({ messages: 0, memoryUsedBytes: 0, published: 5 });
    for (const s of ['default', 'other']) expect(b.subscriptionInfo('q', s)).toMatchObject({ backlog: 0, inFlight: 0 });
    expect(c.unacked).toBe(0);
    expect(b.ack('q', 'default', inflight.map((m) => m.id)).unknown).toHaveLength(2);
    // Deadlines of purged messages are gone too.
    b.subscription('q', 'default').expire(Date.now() + 10 * 30_000);
    expect(await b.pullMessages('q', 'default', { max: 10 })).toEqual([]);
    await turn();
    expect(c.got).toHaveLength(5);
    // The queue goes on after a purge.
    expect(publish(b, 'q', ['6']).seqs).toEqual([6]);
    expect(datas(await b.pullMessages('q', 'default', { max: 10 }))).toEqual(['6']);
  });
});

describe('memory', () => {
  test('memory - a batch larger than the space left before the end fits once the ring is empty again', async () => {
    const b = makeBroker({ spill: false });
    b.createQueue('q', { memoryBytes: 8 * 1024 * 1024, maxMessageBytes: 1024 * 1024 });
    const big = Buffer.alloc(400 * 1024, 7).toString('base64');
    // Each round leaves the empty ring's head further along; without starting again at 0, the
    // first record of a batch wraps and the rest finds no room before the head.
    for (let round = 0; round < 12; round++) {
      b.publish('q', 'p', prepareBatch([1, 2, 3].map(() => ({ data: big, encoding: 'base64' })), 1024 * 1024));
      const msgs = await b.pullMessages('q', 'default', { max: 3 });
      expect(msgs.map((m) => m.data === big)).toEqual([true, true, true]);
      expect(b.ack('q', 'default', msgs.map((m) => m.id)).acked).toBe(3);
    }
    expect(b.queueStats('q')).toMatchObject({ messages: 0, memoryUsedBytes: 0 });
  });

  test('memory - a message is reclaimed once every subscription acked it, and not before', async () => {
    const b = makeBroker();
    b.createQueue('q');
    b.createSubscription('q', 'other');
    publish(b, 'q', ['1', '2', '3']);
    const used = b.queueStats('q').memoryUsedBytes;
    expect(used).toBeGreaterThan(0);
    await drain(b, 'q', 'default');
    expect(b.queueStats('q')).toMatchObject({ messages: 3, memoryUsedBytes: used });
    const o = await b.pullMessages('q', 'other', { max: 3 });
    b.ack('q', 'other', [o[1]!.id, o[2]!.id]);
    // The oldest is still unacked on 'other': nothing can go yet (reclaim is from the head).
    expect(b.queueStats('q')).toMatchObject({ messages: 3, memoryUsedBytes: used });
    b.ack('q', 'other', [o[0]!.id]);
    expect(b.queueStats('q')).toMatchObject({ messages: 0, memoryUsedBytes: 0 });
  });

  test('memory - QUEUE_FULL when a small queue fills with nobody consuming; the refused batch stores nothing', async () => {
    const b = makeBroker();
    b.createQueue('small', { memoryBytes: 65536, spill: false });
    const batch = (n: number): string[] => range(n, n + 4).map((i) => `#${i}:` + 'y'.repeat(1000));
    let next = 1;
    let err;
    let before;
    for (;;) {
      before = {
        queue: b.queueStats('small'),
        sub: b.subscriptionInfo('small', 'default'),
        publisher: next > 1 ? b.publisherState('small', 'pub1') : undefined,
        tail: b.queue('small').ring.tail,
      };
      try {
        expect(publish(b, 'small', batch(next)).seqs).toEqual(range(next, next + 4));
        next += 5;
      } catch (e) {
        err = e;
        break;
      }
    }
    expect(next).toBeGreaterThan(40);
    expect(err).toMatchObject({ code: 'QUEUE_FULL', status: 507 });
    expect({
      queue: b.queueStats('small'),
      sub: b.subscriptionInfo('small', 'default'),
      publisher: b.publisherState('small', 'pub1'),
      tail: b.queue('small').ring.tail,
    }).toEqual(before);
    expect(b.queueStats('small').memoryUsedBytes).toBeLessThanOrEqual(65536);
    // Not even a publisher first seen in a refused publish is left behind.
    expect(caught(() => publish(b, 'small', batch(next), 'newcomer')).code).toBe('QUEUE_FULL');
    expect(b.queueStats('small')).toEqual(before.queue);
    expect(caught(() => b.publisherState('small', 'newcomer')).code).toBe('NOT_FOUND');

    // Everything accepted is intact and in order; the refused batch took no seqs.
    const got = await drain(b, 'small', 'default');
    expect(datas(got)).toEqual(range(1, next - 1).flatMap((i) => (i % 5 === 1 ? batch(i) : [])));
    expect(publish(b, 'small', ['after']).seqs).toEqual([next]);
  });

  test('memory - a subscription caught up at the tail when the ring wraps still gets every message in order', async () => {
    // 'b' is caught up, its cursor at the tail, when the writer pads the end and wraps. 'a' then
    // frees the ring up to the wrapped record and the writer refills the end: 'b' must not be
    // misled by a new record where the padding was.
    const b = makeBroker();
    b.createQueue('q', { memoryBytes: 65536, defaultSubscription: false, spill: false });
    b.createSubscription('q', 'a');
    b.createSubscription('q', 'b');
    const ring = b.queue('q').ring;
    const body = (i: number): string => `#${i}:` + 'z'.repeat(900);
    let i = 0;
    let wrapAt = 0;
    // 'a' keeps its newest message unacked, so the ring is never empty (an empty ring starts
    // again at 0 and would never wrap).
    let held: string | undefined;
    for (;;) {
      const tail = ring.tail;
      publish(b, 'q', [body(++i)]);
      if (ring.tail < tail) { wrapAt = tail; break; }
      const ids = (await b.pullMessages('q', 'a', { max: 1000 })).map((m) => m.id);
      if (held !== undefined) ids.unshift(held);
      held = ids.pop();
      b.ack('q', 'a', ids);
      await drain(b, 'q', 'b');
    }
    const firstAfterWrap = i;
    b.ack('q', 'a', [held!]);
    await drain(b, 'q', 'a');
    while (ring.tail <= wrapAt) {
      publish(b, 'q', [body(++i)]);
      await drain(b, 'q', 'a');
    }
    const got = await drain(b, 'q', 'b');
    expect(datas(got)).toEqual(range(firstAfterWrap, i).map(body));
    expect(got.every((m) => m.deliveryAttempt === 1)).toBe(true);
    expect(b.queueStats('q')).toMatchObject({ messages: 0, memoryUsedBytes: 0 });
  });
});

describe('stats', () => {
  test('stats - QueueStats and subscription stats have the fields of API.md', async () => {
    const b = makeBroker();
    b.createQueue('q', { memoryBytes: 65536 });
    b.createQueue('dlq');
    b.createSubscription('q', 's', {
      filter: { attributes: { color: 'red' } }, ackDeadlineMs: 5000, maxDeliveries: 1, deadLetterQueue: 'dlq', maxEvents: 100,
    });
    publish(b, 'q', [{ data: 'r1', attributes: { color: 'red' } }, 'x'], 'pub1');
    publish(b, 'q', [{ data: 'r2', attributes: { color: 'red' } }], 'pub2');
    const [m] = await b.pullMessages('q', 's');
    b.nack('q', 's', [m!.id]); // maxDeliveries 1: dead-lettered
    const [m2] = await b.pullMessages('q', 's');
    b.ack('q', 's', [m2!.id]);
    await b.pullMessages('q', 'default', { max: 1 });

    const qs = b.queueStats('q');
    expect(qs).toEqual({
      name: 'q', messages: 3, memoryBytes: 65536, memoryUsedBytes: expect.any(Number), spilledMessages: 0, spilledBytes: 0,
      published: 3, dropped: 0, subscriptions: ['default', 's'], publishers: ['pub1', 'pub2'],
    });
    expect(qs.memoryUsedBytes).toBeGreaterThan(0);
    expect(b.listQueues().map((q) => q.name)).toEqual(['q', 'dlq']);
    expect(b.subscriptionInfo('q', 's')).toEqual({
      name: 's', queue: 'q', backlog: 0, inFlight: 0, delivered: 2, acked: 1, redelivered: 0, deadLettered: 1, dropped: 0,
      remainingEvents: 99,
      filter: { attributes: { color: 'red' } }, ackDeadlineMs: 5000, maxDeliveries: 1, deadLetterQueue: 'dlq', startAt: 'latest', maxEvents: 100,
    });
    expect(b.subscriptionInfo('q', 'default')).toEqual({
      name: 'default', queue: 'q', backlog: 2, inFlight: 1, delivered: 1, acked: 0, redelivered: 0, deadLettered: 0, dropped: 0,
      ackDeadlineMs: 30_000, maxDeliveries: 10, startAt: 'latest',
    });
  });
});

describe('definitions', () => {
  test('definitions - queues, subscriptions and configs come back from dataDir in a new broker; messages do not', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spillway-broker-'));
    try {
      const a = makeBroker({ dataDir: dir });
      const qBody = { memoryBytes: 65536, publisherLimitBytes: 100_000, publisherResumeBytes: 10_000 };
      const subBody = { filter: { attributes: { color: 'red' } }, ackDeadlineMs: 5000, maxDeliveries: 3, deadLetterQueue: 'raw', startAt: 'earliest', maxEvents: 10 };
      a.createQueue('q', qBody);
      a.createQueue('raw', { defaultSubscription: false, spill: false });
      a.createSubscription('q', 'red', subBody);
      a.createSubscription('q', 'ttl', { ttlMs: 3_600_000 });
      a.createSubscription('q', 'gone');
      a.deleteSubscription('q', 'gone');
      a.createQueue('deleted');
      a.deleteQueue('deleted');
      publish(a, 'q', [{ data: 'lost', attributes: { color: 'red' } }]);
      const before = a.listQueues();
      const infos = ['default', 'red', 'ttl'].map((s) => a.subscriptionInfo('q', s));
      a.close();

      const b = makeBroker({ dataDir: dir });
      expect(b.epoch).not.toBe(a.epoch);
      expect(b.listQueues()).toEqual(before.map((q) => ({
        ...q, messages: 0, memoryUsedBytes: 0, published: 0, dropped: 0, publishers: [],
      })));
      expect(b.queue('q').config).toEqual(a.queue('q').config);
      expect(b.queue('raw').config).toEqual(a.queue('raw').config);
      for (const info of infos) {
        expect(b.subscriptionInfo('q', info.name)).toEqual({ ...info, backlog: 0, inFlight: 0, delivered: 0, acked: 0 });
      }
      expect(b.hasQueue('deleted')).toBe(false);
      expect(caught(() => b.subscriptionInfo('q', 'gone')).code).toBe('SUBSCRIPTION_NOT_FOUND');
      expect(await b.pullMessages('q', 'red', { max: 10 })).toEqual([]);
      // The same definitions again are no change; a different one is refused.
      expect(b.createQueue('q', qBody).created).toBe(false);
      expect(b.createSubscription('q', 'red', subBody).created).toBe(false);
      expect(caught(() => b.createSubscription('q', 'red', { ...subBody, maxDeliveries: 4 })).code).toBe('ALREADY_EXISTS');
      publish(b, 'q', [{ data: 'new', attributes: { color: 'red' } }]);
      expect(datas(await b.pullMessages('q', 'red', { max: 10 }))).toEqual(['new']);
    } finally {
      closeAll();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('queues', () => {
  test('queues - create is idempotent with the same config and ALREADY_EXISTS with another', () => {
    const b = makeBroker();
    expect(b.createQueue('q', { memoryBytes: 65536 }).created).toBe(true);
    expect(b.createQueue('q', { memoryBytes: 65536 }).created).toBe(false);
    const err = caught(() => b.createQueue('q', { memoryBytes: 131072 }));
    expect(err.code).toBe('ALREADY_EXISTS');
    expect(err.status).toBe(409);
    expect(caught(() => b.createQueue('q')).code).toBe('ALREADY_EXISTS');
    // Defaults spelled out are the same config as defaults left out.
    b.createQueue('d');
    expect(b.createQueue('d', { defaultSubscription: true, spill: true }).created).toBe(false);

    expect(b.createSubscription('q', 's', { ackDeadlineMs: 1000 }).created).toBe(true);
    expect(b.createSubscription('q', 's', { ackDeadlineMs: 1000 }).created).toBe(false);
    expect(caught(() => b.createSubscription('q', 's', { ackDeadlineMs: 2000 })).code).toBe('ALREADY_EXISTS');
    expect(caught(() => b.createSubscription('q', 's')).code).toBe('ALREADY_EXISTS');
    expect(b.createSubscription('q', 'default', {}).created).toBe(false);
  });

  test('queues - bad names and bodies are INVALID_ARGUMENT; unknown queues QUEUE_NOT_FOUND', () => {
    const b = makeBroker();
    expect(caught(() => b.createQueue('-bad')).code).toBe('INVALID_ARGUMENT');
    expect(caught(() => b.createQueue('q', { memoryBytes: 10 })).code).toBe('INVALID_ARGUMENT');
    expect(caught(() => b.createQueue('q', { nope: 1 })).code).toBe('INVALID_ARGUMENT');
    b.createQueue('q');
    expect(caught(() => b.createSubscription('q', 'bad name')).code).toBe('INVALID_ARGUMENT');
    expect(caught(() => b.createSubscription('q', 's', { startAt: 'middle' })).code).toBe('INVALID_ARGUMENT');
    expect(caught(() => publish(b, 'nope', ['x'])).code).toBe('QUEUE_NOT_FOUND');
    expect(caught(() => b.createSubscription('nope', 's')).code).toBe('QUEUE_NOT_FOUND');
    expect(b.queueStats('q').published).toBe(0);
  });

  test('queues - delete ends its subscriptions and the name is free again', () => {
    const b = makeBroker();
    b.createQueue('q');
    const c = new TestConsumer(1);
    b.consume('q', 'default', c);
    publish(b, 'q', ['a']);
    b.deleteQueue('q');
    expect(c.ended_).toBe('deleted');
    expect(caught(() => b.queueStats('q')).code).toBe('QUEUE_NOT_FOUND');
    expect(b.createQueue('q').created).toBe(true);
    expect(b.queueStats('q').published).toBe(0);
  });
});
