import { Broker, prepareBatch, type BrokerOptions, type PublishMessage, type PublishOutcome } from '../../src/broker';
import { SpillwayError, isSpillwayError } from '../../src/errors';
import type { Message } from '../../src/queue/message';
import type { DeliveryBatch } from '../../src/subscribers/batch';
import type { Consumer, EndReason } from '../../src/subscribers/consumer';

/**
 * Brokers made by a test; `closeAll()` runs in afterEach, registered before anything else so
 * a failing test still clears every timer.
 */
const open: Broker[] = [];

export function makeBroker(options: BrokerOptions = {}): Broker {
  const b = new Broker({ tickMs: 5, ...options });
  open.push(b);
  return b;
}

export function closeAll(): void {
  for (const b of open.splice(0)) b.close();
}

/** Publishes plain strings or messages of API.md through the same validation as the HTTP layer. */
export function publish(
  b: Broker, queue: string, msgs: readonly (string | PublishMessage)[], publisherId: string | undefined = 'pub1', txId?: string,
): PublishOutcome {
  const prepared = prepareBatch(msgs.map((m) => (typeof m === 'string' ? { data: m } : m)), b.queue(queue).config.maxMessageBytes);
  return b.publish(queue, publisherId, prepared, txId);
}

/** The SpillwayError `fn` throws (synchronously); fails the test when it throws nothing or something else. */
export function caught(fn: () => unknown): SpillwayError {
  try {
    fn();
  } catch (err) {
    if (isSpillwayError(err)) return err;
    throw err;
  }
  throw new Error('expected a SpillwayError, nothing was thrown');
}

/** Pulls and acks everything available now on a subscription; returns what it got. */
export async function drain(b: Broker, queue: string, sub: string): Promise<Message[]> {
  const all: Message[] = [];
  for (;;) {
    const got = await b.pullMessages(queue, sub, { max: 1000 });
    if (got.length === 0) return all;
    b.ack(queue, sub, got.map((m) => m.id));
    all.push(...got);
  }
}

/** One turn of the event loop: the broker's dispatch (setImmediate) has run after it. */
export const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Only for tests where time itself is the point (deadlines, TTLs, delays). */
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * An embedded push consumer that records what it gets. `received(n)` is a latch: it resolves
 * once `n` messages in all have arrived; `endedWith()` once the subscription ends it.
 */
export class TestConsumer implements Consumer {
  unacked = 0;
  readonly got: Message[] = [];
  /** The most messages this consumer ever held unacked (read at each delivery, batch included). */
  maxUnacked = 0;
  batches = 0;
  ended_: EndReason | undefined;
  #latches: { n: number; resolve: () => void }[] = [];
  #endLatches: ((r: EndReason) => void)[] = [];

  constructor(readonly prefetch: number, readonly onDeliver?: (msgs: Message[], self: TestConsumer) => void) {}

  ready(): boolean { return true; }

  deliver(batch: DeliveryBatch): void {
    const msgs = batch.messages();
    this.batches++;
    if (this.unacked > this.maxUnacked) this.maxUnacked = this.unacked;
    this.got.push(...msgs);
    this.onDeliver?.(msgs, this);
    this.#latches = this.#latches.filter((l) => {
      if (this.got.length < l.n) return true;
      l.resolve();
      return false;
    });
  }

  ended(reason: EndReason): void {
    this.ended_ = reason;
    for (const r of this.#endLatches.splice(0)) r(reason);
  }

  received(n: number): Promise<void> {
    if (this.got.length >= n) return Promise.resolve();
    return new Promise((resolve) => this.#latches.push({ n, resolve }));
  }

  endedWith(): Promise<EndReason> {
    if (this.ended_ !== undefined) return Promise.resolve(this.ended_);
    return new Promise((resolve) => this.#endLatches.push(resolve));
  }
}
