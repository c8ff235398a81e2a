import { prepareBatch, type Prepared } from '../../src/broker';
import type { SpillwayError } from '../../src/errors';
import type { Message } from '../../src/queue/message';
import { OrderCheck, cleanup, makeBroker, payload, publishRange, pullAll, refusal, segFiles, until } from './helpers';

afterEach(cleanup);

const KiB = 1024;
const MEMORY = 256 * KiB;
const SIZE = 1000;

describe('spill', () => {
  test('spill - with the disk budget spent and memory full a publish is INSUFFICIENT_STORAGE and stores nothing; draining makes room again', async () => {
    const { b } = makeBroker({ maxDiskBytes: 512 * KiB });
    b.createQueue('q', { memoryBytes: MEMORY });
    const maxBytes = b.queue('q').config.maxMessageBytes;
    // Publish until refused for lack of storage (retrying while a spill write is under way).
    let i = 0;
    let refused: SpillwayError;
    let batch: Prepared[];
    for (;;) {
      if (i > 5_000) throw new Error('the disk budget was never spent');
      batch = prepareBatch(Array.from({ length: 10 }, (_, k) => ({ data: payload(i + k, SIZE) })), maxBytes);
      const err = refusal(() => b.publish('q', 'pub1', batch));
      if (err === undefined) {
        i += 10;
        await new Promise((r) => setImmediate(r));
        continue;
      }
      if (err.code === 'PUBLISHER_RESTRICTED') {
        // A spill write is under way: room comes within milliseconds.
        expect(err.details).toMatchObject({ reason: 'overspilled', retryAfterMs: expect.any(Number) });
        expect(b.publisherState('q', 'pub1').restricted).toBe(false);
        await new Promise((r) => setTimeout(r, Number(err.details?.retryAfterMs)));
        continue;
      }
      refused = err;
      break;
    }
    expect(refused.code).toBe('INSUFFICIENT_STORAGE');
    expect(refused.status).toBe(507);
    expect(refused.toJSON().error).toMatchObject({ code: 'INSUFFICIENT_STORAGE', queue: 'q' });
    const full = b.queueStats('q');
    expect(full.published).toBe(i);
    expect(full.spilledBytes).toBeGreaterThan(0);
    // Spent: what is on disk leaves no room for another spill write.
    expect(b.spillStats.usedBytes).toBeLessThanOrEqual(512 * KiB);
    expect(b.spillStats.usedBytes).toBeGreaterThan(256 * KiB);
    expect(full.memoryUsedBytes).toBeGreaterThan(MEMORY / 2);
    expect(i).toBeGreaterThan(300);

    // Refused again, however often: nothing stored, no seq used, no publisher usage counted.
    const usage = b.publisherState('q', 'pub1');
    for (let k = 0; k < 3; k++) {
      const again = refusal(() => b.publish('q', 'pub1', batch));
      expect(again?.code).toBe('INSUFFICIENT_STORAGE');
    }
    expect(b.queueStats('q')).toEqual(full);
    expect(b.publisherState('q', 'pub1')).toEqual(usage);
    expect(b.subscriptionInfo('q', 'default')).toMatchObject({ backlog: i });

    // Everything accepted is delivered; then the queue takes publishes again, seqs going on.
    const check = new OrderCheck(SIZE);
    await pullAll(b, 'q', 'default', i, check);
    expect(b.queueStats('q')).toMatchObject({ messages: 0, spilledBytes: 0, memoryUsedBytes: 0 });
    expect(b.spillStats.usedBytes).toBe(0);
    await publishRange(b, 'q', i, i + 500, SIZE);
    await pullAll(b, 'q', 'default', 500, check);
    expect(check.seen).toHaveLength(i + 500);
  });

  test('spill - a queue with spill off is QUEUE_FULL when its memory is full and stores nothing', async () => {
    const { b, spillDir } = makeBroker();
    b.createQueue('q', { memoryBytes: 64 * KiB, spill: false });
    const maxBytes = b.queue('q').config.maxMessageBytes;
    let i = 0;
    let err;
    while ((err = refusal(() => b.publish('q', 'pub1', prepareBatch([{ data: payload(i, SIZE) }], maxBytes)))) === undefined) i++;
    expect(err.code).toBe('QUEUE_FULL');
    expect(err.status).toBe(507);
    const full = b.queueStats('q');
    expect(full).toMatchObject({ published: i, messages: i, spilledMessages: 0, spilledBytes: 0 });
    expect(full.memoryUsedBytes).toBeLessThanOrEqual(64 * KiB);
    expect(i).toBeGreaterThan(40);
    // Nothing is stored by the refusal, and no spill write ever happens.
    const usage = b.publisherState('q', 'pub1');
    expect(refusal(() => b.publish('q', 'pub1', prepareBatch([{ data: payload(i, SIZE) }], maxBytes)))?.code).toBe('QUEUE_FULL');
    expect(b.queueStats('q')).toEqual(full);
    expect(b.publisherState('q', 'pub1')).toEqual(usage);
    await new Promise((r) => setTimeout(r, 20));
    expect(b.spillStats.usedBytes).toBe(0);
    expect(segFiles(spillDir)).toEqual([]);
    const check = new OrderCheck(SIZE);
    await pullAll(b, 'q', 'default', i, check);
    expect(b.queueStats('q')).toMatchObject({ messages: 0, memoryUsedBytes: 0 });
  });

  test('spill - a broker with spill off refuses a full queue with QUEUE_FULL', () => {
    const { b } = makeBroker({ spill: false });
    b.createQueue('q', { memoryBytes: 64 * KiB });
    const maxBytes = b.queue('q').config.maxMessageBytes;
    let i = 0;
    let err;
    while ((err = refusal(() => b.publish('q', 'pub1', prepareBatch([{ data: payload(i, SIZE) }], maxBytes)))) === undefined) i++;
    expect(err.code).toBe('QUEUE_FULL');
    expect(b.queueStats('q')).toMatchObject({ published: i, messages: i, spilledMessages: 0 });
    expect(b.spillStats).toMatchObject({ usedBytes: 0, maxBytes: 0 });
  });

  test('spill - a publisher state shows its spilled bytes, and past publisherSpillLimitBytes it is restricted as overspilled until they fall to half', async () => {
    const { b } = makeBroker();
    const LIMIT = 400 * KiB;
    b.createQueue('q', { memoryBytes: MEMORY, publisherSpillLimitBytes: LIMIT });
    const maxBytes = b.queue('q').config.maxMessageBytes;
    expect(b.queueStats('q').spilledBytes).toBe(0);

    // Publish until this publisher itself is restricted (not merely told to wait for a spill write).
    let i = 0;
    let restricted;
    for (;;) {
      if (i > 5_000) throw new Error('the publisher was never restricted');
      const batch = Array.from({ length: 10 }, (_, k) => ({ data: payload(i + k, SIZE) }));
      const err = refusal(() => b.publish('q', 'pub1', prepareBatch(batch, maxBytes)));
      if (err === undefined) { i += 10; await new Promise((r) => setImmediate(r)); continue; }
      expect(err.code).toBe('PUBLISHER_RESTRICTED');
      expect(err.details?.reason).toBe('overspilled');
      if (b.publisherState('q', 'pub1').restricted) { restricted = err; break; }
      await new Promise((r) => setTimeout(r, Number(err.details?.retryAfterMs)));
    }
    expect(restricted.status).toBe(429);
    expect(Number(restricted.details?.retryAfterMs)).toBeGreaterThan(0);
    // Spill writes go on until memory is at most half full; then the figures stand still.
    await until(() => b.queueStats('q').memoryUsedBytes * 2 <= MEMORY, 'spill to settle');
    const st = b.publisherState('q', 'pub1');
    expect(st).toMatchObject({ restricted: true, reason: 'overspilled', spillLimitBytes: LIMIT });
    expect(st.spilledBytes).toBeGreaterThanOrEqual(LIMIT);
    // Other publishers go on (when memory has room).
    await until(() => refusal(() => b.publish('q', 'other', prepareBatch([{ data: payload(i, SIZE) }], maxBytes))) === undefined, 'other publisher accepted');
    i++;
    expect(b.publisherState('q', 'other').restricted).toBe(false);
    // Still refused as long as its spilled bytes are above half the limit.
    const again = refusal(() => b.publish('q', 'pub1', prepareBatch([{ data: 'x' }], maxBytes)));
    expect(again?.code).toBe('PUBLISHER_RESTRICTED');
    expect(again?.details?.reason).toBe('overspilled');

    // Drain little by little: restricted while spilled bytes are above half the limit, lifted at or below it.
    const check = new OrderCheck(SIZE);
    let sawHysteresis = false;
    let liftedAt = -1;
    const pub1Only = { take: (msgs: readonly Message[]): void => check.take(msgs.filter((m) => m.publisherId === 'pub1')) };
    await pullAll(b, 'q', 'default', i, pub1Only, {
      max: 20,
      each: () => {
        const s = b.publisherState('q', 'pub1');
        if (s.spilledBytes > LIMIT / 2) {
          expect(s).toMatchObject({ restricted: true, reason: 'overspilled' });
          if (s.spilledBytes < LIMIT) sawHysteresis = true;
        } else {
          expect(s.restricted).toBe(false);
          expect(s.reason).toBeUndefined();
          if (liftedAt < 0) liftedAt = s.spilledBytes;
        }
      },
    });
    expect(sawHysteresis).toBe(true);
    expect(liftedAt).toBeGreaterThanOrEqual(0);
    expect(check.seen).toHaveLength(i - 1);
    const end = b.publisherState('q', 'pub1');
    expect(end).toMatchObject({ spilledBytes: 0, restricted: false, unconsumedBytes: 0 });
    expect(b.publisherState('q', 'other').spilledBytes).toBe(0);
    expect(b.queueStats('q')).toMatchObject({ messages: 0, spilledBytes: 0 });
    // The publisher is accepted again.
    expect(b.publish('q', 'pub1', prepareBatch([{ data: payload(i, SIZE) }], maxBytes)).seqs).toEqual([i + 1]);
  });
});
