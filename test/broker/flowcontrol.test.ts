import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Broker, PublishMessage } from '../../src/broker';
import type { Message } from '../../src/queue/message';
import { caught, closeAll, drain, makeBroker, publish, sleep } from './helpers';

afterEach(closeAll);

const KB = (tag: string | number): string => `${tag}:`.padEnd(1000, '.'); // exactly 1000 bytes
const datas = (msgs: readonly Message[]): string[] => msgs.map((m) => m.data);
const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** Acks, on `sub`, the first `n` messages it has in flight (in seq order). */
function ackFirst(b: Broker, inflight: Message[], n: number, sub = 'default'): void {
  b.ack('q', sub, inflight.splice(0, n).map((m) => m.id));
}

describe('restriction', () => {
  test('restriction - a publisher is restricted at publisherLimitBytes (unconsumed); other publishers go on', async () => {
    const b = makeBroker();
    b.createQueue('q', { publisherLimitBytes: 10_000 });
    const first = publish(b, 'q', range(1, 9).map(KB), 'p1');
    expect(first.publisher).toMatchObject({ id: 'p1', unconsumedBytes: 9000, unconsumedMessages: 9, restricted: false });
    const tenth = publish(b, 'q', [KB(10)], 'p1');
    expect(tenth.publisher).toEqual({
      id: 'p1', epoch: b.epoch, unconsumedBytes: 10_000, unconsumedMessages: 10, spilledBytes: 0,
      limitBytes: 10_000, resumeBytes: 5000, spillLimitBytes: 1024 ** 3, restricted: true, reason: 'unconsumed',
    });
    expect(b.publisherState('q', 'p1')).toEqual(tenth.publisher);

    const stats = b.queueStats('q');
    const err = caught(() => publish(b, 'q', [KB(11)], 'p1'));
    expect(err.code).toBe('PUBLISHER_RESTRICTED');
    expect(err.status).toBe(429);
    expect(err.details).toMatchObject({ reason: 'unconsumed' });
    const retry = err.details!.retryAfterMs as number;
    expect(Number.isInteger(retry)).toBe(true);
    expect(retry).toBeGreaterThan(0);
    expect(retry).toBeLessThanOrEqual(30_000);
    expect(b.queueStats('q')).toEqual(stats); // stores nothing
    expect(b.publisherState('q', 'p1').unconsumedBytes).toBe(10_000);

    // Isolation: another publisher on the same queue is not slowed.
    const other = publish(b, 'q', range(1, 5).map(KB), 'p2');
    expect(other.publisher).toMatchObject({ restricted: false, unconsumedBytes: 5000 });
    expect(b.publisherState('q', 'p1').restricted).toBe(true);
  });

  test('restriction - lifts only at publisherResumeBytes: acking a little below the limit does not (no flapping)', async () => {
    const b = makeBroker();
    b.createQueue('q', { publisherLimitBytes: 10_000, publisherResumeBytes: 4000 });
    publish(b, 'q', range(1, 10).map(KB), 'p1');
    expect(b.publisherState('q', 'p1').restricted).toBe(true);
    const inflight = await b.pullMessages('q', 'default', { max: 100 });

    ackFirst(b, inflight, 1); // 9000: below the limit, far above the resume mark
    expect(b.publisherState('q', 'p1')).toMatchObject({ restricted: true, reason: 'unconsumed', unconsumedBytes: 9000 });
    expect(caught(() => publish(b, 'q', ['x'], 'p1')).code).toBe('PUBLISHER_RESTRICTED');
    ackFirst(b, inflight, 4); // 5000
    expect(b.publisherState('q', 'p1')).toMatchObject({ restricted: true, unconsumedBytes: 5000 });
    expect(caught(() => publish(b, 'q', ['x'], 'p1')).code).toBe('PUBLISHER_RESTRICTED');
    ackFirst(b, inflight, 1); // 4000: at the resume mark
    const lifted = b.publisherState('q', 'p1');
    expect(lifted).toMatchObject({ restricted: false, unconsumedBytes: 4000, unconsumedMessages: 4 });
    expect(lifted.reason).toBeUndefined();

    // From the resume mark it takes the whole gap again to be restricted.
    expect(publish(b, 'q', range(11, 15).map(KB), 'p1').publisher).toMatchObject({ restricted: false, unconsumedBytes: 9000 });
    expect(publish(b, 'q', [KB(16)], 'p1').publisher).toMatchObject({ restricted: true, unconsumedBytes: 10_000 });
  });

  test('restriction - acked by one subscription counts as consumed; a slow subscription alone does not restrict', async () => {
    const b = makeBroker();
    b.createQueue('q', { publisherLimitBytes: 10_000 });
    b.createSubscription('q', 'slow');
    for (let i = 0; i < 5; i++) {
      publish(b, 'q', range(1, 5).map(KB), 'p1');
      await drain(b, 'q', 'default');
    }
    expect(b.publisherState('q', 'p1')).toMatchObject({ restricted: false, unconsumedBytes: 0 });
    expect(b.subscriptionInfo('q', 'slow').backlog).toBe(25);
    expect(b.queueStats('q').messages).toBe(25);
  });
});

describe('publisherSeq', () => {
  test('publisherSeq - duplicates are not stored, are counted, and get their original ids', async () => {
    const b = makeBroker();
    b.createQueue('q');
    const m = (data: string, publisherSeq: number): PublishMessage => ({ data, publisherSeq });
    const first = publish(b, 'q', [m('a', 1), m('b', 2), m('c', 3)]);
    expect(first.publisher.lastPublisherSeq).toBe(3);
    const again = publish(b, 'q', [m('b', 2), m('c', 3), m('d', 4)]);
    expect(again.duplicates).toBe(2);
    expect(again.ids.slice(0, 2)).toEqual(first.ids.slice(1));
    expect(again.seqs).toEqual([2, 3, 4]);
    // A lower seq after a higher one in the same batch is a duplicate too.
    const mixed = publish(b, 'q', [m('f', 6), m('e', 5)]);
    expect(mixed.duplicates).toBe(1);
    expect(mixed.seqs).toEqual([5, null]); // 5 was never stored: no original to name
    expect(mixed.publisher.lastPublisherSeq).toBe(6);
    // Other publishers have their own sequence.
    expect(publish(b, 'q', [m('other', 1)], 'pub2').duplicates).toBe(0);

    expect(b.queueStats('q')).toMatchObject({ published: 6, messages: 6 });
    const got = await drain(b, 'q', 'default');
    expect(datas(got)).toEqual(['a', 'b', 'c', 'd', 'f', 'other']);
    expect(got.map((x) => x.publisherSeq)).toEqual([1, 2, 3, 4, 6, 1]);
  });

  test('safePublisherSeq - advances only when every subscription has acked, in order', async () => {
    const b = makeBroker();
    b.createQueue('q');
    b.createSubscription('q', 'other');
    publish(b, 'q', range(1, 4).map((i) => ({ data: String(i), publisherSeq: i * 10 })));
    const st = b.publisherState('q', 'pub1');
    expect(st.lastPublisherSeq).toBe(40);
    expect(st.safePublisherSeq).toBeUndefined();

    await drain(b, 'q', 'default');
    expect(b.publisherState('q', 'pub1').safePublisherSeq).toBeUndefined();
    const o = await b.pullMessages('q', 'other', { max: 10 });
    b.ack('q', 'other', [o[2]!.id]); // out of order: the earlier ones still hold it back
    expect(b.publisherState('q', 'pub1').safePublisherSeq).toBeUndefined();
    b.ack('q', 'other', [o[0]!.id]);
    expect(b.publisherState('q', 'pub1').safePublisherSeq).toBe(10);
    b.ack('q', 'other', [o[1]!.id]);
    expect(b.publisherState('q', 'pub1').safePublisherSeq).toBe(30);
    b.ack('q', 'other', [o[3]!.id]);
    expect(b.publisherState('q', 'pub1')).toMatchObject({ safePublisherSeq: 40, lastPublisherSeq: 40 });
  });

  test('safePublisherSeq - a message no subscription wanted is safe at once', () => {
    const b = makeBroker();
    b.createQueue('q', { defaultSubscription: false });
    expect(publish(b, 'q', [{ data: 'x', publisherSeq: 7 }]).publisher).toMatchObject({ lastPublisherSeq: 7, safePublisherSeq: 7 });
  });

  test('restart - a repeatable publisher re-sends above safePublisherSeq after the epoch changes; nothing is lost', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spillway-flow-'));
    try {
      /** The publisher's side: what it has not yet been told is safe, and the epoch it saw. */
      const unsafe = new Map<number, string>();
      let seen = { epoch: '', safe: 0 };
      const send = (b: Broker, seqs: number[]): void => {
        const out = publish(b, 'q', seqs.map((s) => ({ data: unsafe.get(s)!, publisherSeq: s })), 'rp');
        seen = { epoch: out.publisher.epoch, safe: out.publisher.safePublisherSeq ?? seen.safe };
      };
      const delivered = new Set<string>();
      const take = async (b: Broker, max: number, ack: boolean): Promise<void> => {
        const got = await b.pullMessages('q', 'default', { max });
        for (const m of got) delivered.add(m.data);
        if (ack) b.ack('q', 'default', got.map((m) => m.id));
      };

      const a = makeBroker({ dataDir: dir });
      a.createQueue('q');
      for (let s = 1; s <= 30; s++) unsafe.set(s, `msg-${s}`);
      send(a, range(1, 10));
      send(a, range(11, 20));
      await take(a, 8, true); // 1..8 consumed
      await take(a, 4, false); // 9..12 in flight when the broker goes
      send(a, range(21, 30)); // the answer carries the safe mark so far
      expect(seen).toEqual({ epoch: a.epoch, safe: 8 });
      expect(a.publisherState('q', 'rp')).toMatchObject({ safePublisherSeq: 8, lastPublisherSeq: 30 });
      for (const s of [...unsafe.keys()]) if (s <= seen.safe) unsafe.delete(s);
      a.close();

      const b = makeBroker({ dataDir: dir });
      expect(b.hasQueue('q')).toBe(true);
      expect(b.queueStats('q')).toMatchObject({ messages: 0, published: 0 });
      expect(b.epoch).not.toBe(seen.epoch);
      // The epoch changed: re-send everything not known to be safe, then go on.
      send(b, [...unsafe.keys()].sort((x, y) => x - y));
      expect(seen.epoch).toBe(b.epoch);
      for (let s = 31; s <= 35; s++) unsafe.set(s, `msg-${s}`);
      send(b, range(31, 35));
      const rest = await drain(b, 'q', 'default');
      for (const m of rest) delivered.add(m.data);
      expect(rest.map((m) => m.publisherSeq)).toEqual(range(9, 35));

      expect([...delivered].sort()).toEqual(range(1, 35).map((s) => `msg-${s}`).sort());
      expect(b.publisherState('q', 'rp')).toMatchObject({ epoch: b.epoch, safePublisherSeq: 35, lastPublisherSeq: 35 });
    } finally {
      closeAll();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('transactions', () => {
  test('transactions - staged messages are invisible until commit', async () => {
    const b = makeBroker();
    b.createQueue('q');
    const tx = b.beginTransaction();
    expect(Date.parse(tx.expiresAt)).toBeGreaterThan(Date.now());
    const staged = publish(b, 'q', ['a', 'b'], 'pub1', tx.id);
    expect(staged).toMatchObject({ staged: true, ids: [null, null], seqs: [null, null], duplicates: 0 });
    expect(b.queueStats('q')).toMatchObject({ published: 0, messages: 0 });
    expect(b.subscriptionInfo('q', 'default').backlog).toBe(0);
    expect(await b.pullMessages('q', 'default', { max: 10 })).toEqual([]);

    const waiting = b.pullMessages('q', 'default', { max: 10, waitMs: 20_000 });
    expect(b.commitTransaction(tx.id)).toEqual({ committed: 2 });
    expect(datas(await waiting)).toEqual(['a', 'b']);
    expect(b.queueStats('q')).toMatchObject({ published: 2, messages: 2 });
  });

  test('transactions - a commit is contiguous per queue and spans queues at once', async () => {
    const b = makeBroker();
    b.createQueue('q1');
    b.createQueue('q2');
    const tx = b.beginTransaction();
    publish(b, 'q1', ['t1', 't2'], 'txp', tx.id);
    publish(b, 'q1', ['x1'], 'other');
    publish(b, 'q2', ['u1', 'u2'], 'txp', tx.id);
    publish(b, 'q1', ['t3'], 'txp', tx.id);
    publish(b, 'q1', ['x2'], 'other');
    expect(b.commitTransaction(tx.id)).toEqual({ committed: 5 });
    publish(b, 'q1', ['x3'], 'other');

    const q1 = await b.pullMessages('q1', 'default', { max: 10 });
    expect(q1.map((m) => [m.data, m.seq])).toEqual([['x1', 1], ['x2', 2], ['t1', 3], ['t2', 4], ['t3', 5], ['x3', 6]]);
    expect(q1.slice(2, 5).every((m) => m.publishedAt === q1[2]!.publishedAt && m.publisherId === 'txp')).toBe(true);
    expect(datas(await b.pullMessages('q2', 'default', { max: 10 }))).toEqual(['u1', 'u2']);
  });

  test('transactions - rollback leaves nothing; the transaction is gone', () => {
    const b = makeBroker();
    b.createQueue('q', { publisherLimitBytes: 10_000 });
    publish(b, 'q', ['seed'], 'p1');
    const stats = b.queueStats('q');
    const pub = b.publisherState('q', 'p1');
    const tx = b.beginTransaction();
    publish(b, 'q', range(1, 10).map(KB), 'p1', tx.id);
    expect(b.publisherState('q', 'p1')).toMatchObject({ restricted: true, unconsumedBytes: 10_004 });
    b.rollbackTransaction(tx.id);
    expect(b.queueStats('q')).toEqual(stats);
    expect(b.publisherState('q', 'p1')).toEqual(pub);
    expect(caught(() => b.commitTransaction(tx.id)).code).toBe('TRANSACTION_NOT_FOUND');
    expect(caught(() => b.rollbackTransaction(tx.id)).code).toBe('TRANSACTION_NOT_FOUND');
  });

  test('transactions - an expired transaction rolls back by itself', async () => {
    const b = makeBroker();
    b.createQueue('q');
    const stats = b.queueStats('q');
    const tx = b.beginTransaction(30);
    publish(b, 'q', ['a', 'b'], 'p1', tx.id);
    expect(b.publisherState('q', 'p1').unconsumedMessages).toBe(2);
    await sleep(100); // the timeout is the point
    const err = caught(() => b.commitTransaction(tx.id));
    expect(err.code).toBe('TRANSACTION_NOT_FOUND');
    expect(err.status).toBe(404);
    expect(b.queueStats('q')).toEqual({ ...stats, publishers: ['p1'] });
    expect(b.publisherState('q', 'p1')).toMatchObject({ unconsumedBytes: 0, unconsumedMessages: 0, restricted: false });
    expect(await b.pullMessages('q', 'default')).toEqual([]);
  });

  test('transactions - TRANSACTION_NOT_FOUND after commit, for commit, rollback and staging', () => {
    const b = makeBroker();
    b.createQueue('q');
    const tx = b.beginTransaction();
    publish(b, 'q', ['a'], 'p1', tx.id);
    b.commitTransaction(tx.id);
    expect(caught(() => b.commitTransaction(tx.id)).code).toBe('TRANSACTION_NOT_FOUND');
    expect(caught(() => b.rollbackTransaction(tx.id)).code).toBe('TRANSACTION_NOT_FOUND');
    expect(caught(() => publish(b, 'q', ['b'], 'p1', tx.id)).code).toBe('TRANSACTION_NOT_FOUND');
    expect(caught(() => b.commitTransaction('no-such-tx')).code).toBe('TRANSACTION_NOT_FOUND');
    expect(b.queueStats('q')).toMatchObject({ published: 1, messages: 1 });
  });

  test("transactions - staged bytes count toward the publisher's unconsumed usage", () => {
    const b = makeBroker();
    b.createQueue('q', { publisherLimitBytes: 10_000 });
    const tx = b.beginTransaction();
    publish(b, 'q', range(1, 6).map(KB), 'p1', tx.id);
    expect(b.publisherState('q', 'p1')).toMatchObject({ unconsumedBytes: 6000, unconsumedMessages: 6, restricted: false });
    // Outside the transaction the same publisher is measured with what it staged.
    publish(b, 'q', range(7, 10).map(KB), 'p1');
    expect(b.publisherState('q', 'p1')).toMatchObject({ unconsumedBytes: 10_000, restricted: true, reason: 'unconsumed' });
    expect(caught(() => publish(b, 'q', ['more'], 'p1', tx.id)).code).toBe('PUBLISHER_RESTRICTED');
    // Committing moves the staged messages into the queue without counting them twice.
    expect(b.commitTransaction(tx.id)).toEqual({ committed: 6 });
    expect(b.publisherState('q', 'p1')).toMatchObject({ unconsumedBytes: 10_000, unconsumedMessages: 10 });
    expect(b.queueStats('q').messages).toBe(10);
  });

  test('transactions - a commit that does not fit stores nothing on any queue', async () => {
    const b = makeBroker();
    b.createQueue('big');
    b.createQueue('small', { memoryBytes: 65536, spill: false });
    // Fill the small queue with nobody consuming.
    for (let i = 0; ; i++) {
      try { publish(b, 'small', [KB(i)], 'filler'); } catch (err) { expect(err).toMatchObject({ code: 'QUEUE_FULL' }); break; }
    }
    const before = { big: b.queueStats('big'), small: b.queueStats('small') };
    const tx = b.beginTransaction();
    publish(b, 'big', ['b1', 'b2'], 'txp', tx.id);
    publish(b, 'small', [KB('s1')], 'txp', tx.id);
    const err = caught(() => b.commitTransaction(tx.id));
    expect(err.code).toBe('QUEUE_FULL');
    expect({ big: b.queueStats('big'), small: b.queueStats('small') }).toEqual({
      big: { ...before.big, publishers: ['txp'] }, small: { ...before.small, publishers: ['filler', 'txp'] },
    });
    for (const q of ['big', 'small']) expect(b.publisherState(q, 'txp')).toMatchObject({ unconsumedBytes: 0, unconsumedMessages: 0 });
    expect(caught(() => b.commitTransaction(tx.id)).code).toBe('TRANSACTION_NOT_FOUND');
    expect(await b.pullMessages('big', 'default', { max: 10 })).toEqual([]);
  });
});
