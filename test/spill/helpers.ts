import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Broker, prepareBatch, type BrokerOptions, type PublishOutcome } from '../../src/broker';
import { isSpillwayError, type SpillwayError } from '../../src/errors';
import type { Message } from '../../src/queue/message';
import type { DeliveryBatch } from '../../src/subscribers/batch';
import type { Consumer, EndReason } from '../../src/subscribers/consumer';

/**
 * Spill tests share these helpers (test/broker's are someone else's to change). Every broker
 * gets its own temporary data dir; `cleanup()` runs in afterEach, registered before anything
 * else, so a failing test still closes its broker and removes its files.
 */
const open: { b: Broker; dir: string }[] = [];

export function makeBroker(options: Omit<BrokerOptions, 'dataDir'> = {}): { b: Broker; dir: string; spillDir: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spillway-spilltest-'));
  const b = new Broker({ tickMs: 5, ...options, dataDir: dir });
  open.push({ b, dir });
  return { b, dir, spillDir: path.join(dir, 'spill') };
}

export async function cleanup(): Promise<void> {
  for (const { b, dir } of open.splice(0)) {
    try {
      await b.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
}

/** The .seg files of a spill directory. */
export function segFiles(spillDir: string): string[] {
  if (!fs.existsSync(spillDir)) return [];
  return fs.readdirSync(spillDir).filter((f) => f.endsWith('.seg')).map((f) => path.join(spillDir, f));
}

const FILLER = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'.repeat(64);

/** A payload unique to message `i` in its prefix and in its filler (which shifts with `i`). */
export function payload(i: number, size: number): string {
  const head = `m${i}|`;
  const off = (i * 7) % 62;
  const n = Math.max(0, size - head.length);
  let filler = FILLER.slice(off, off + Math.min(n, FILLER.length - off));
  while (filler.length < n) filler += FILLER.slice(0, n - filler.length);
  return head + filler;
}

export const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** The SpillwayError `fn` throws synchronously, or undefined when it throws nothing. */
export function refusal(fn: () => unknown): SpillwayError | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    if (isSpillwayError(err)) return err;
    throw err;
  }
}

export interface PublishStats {
  restricted: number;
  insufficient: number;
}

/**
 * Publishes messages `from` .. `to - 1` (payload(i, size)) in batches, all accepted in the end:
 * PUBLISHER_RESTRICTED is retried after its retryAfterMs, and with `retryInsufficient`
 * INSUFFICIENT_STORAGE after a short wait too (a failing disk that recovers). Any other error
 * fails. `each` runs after every accepted batch (checks made while the backlog builds up).
 */
export async function publishRange(
  b: Broker, queue: string, from: number, to: number, size: number,
  opts: {
    batch?: number; publisherId?: string; retryInsufficient?: boolean; deadlineMs?: number;
    each?: (out: PublishOutcome) => void; onRefusal?: (err: SpillwayError) => void;
  } = {},
): Promise<PublishStats> {
  const batch = opts.batch ?? 20;
  const stats: PublishStats = { restricted: 0, insufficient: 0 };
  const maxBytes = b.queue(queue).config.maxMessageBytes;
  const deadline = Date.now() + (opts.deadlineMs ?? 15_000);
  let i = from;
  while (i < to) {
    const n = Math.min(batch, to - i);
    const msgs = [];
    for (let k = 0; k < n; k++) msgs.push({ data: payload(i + k, size) });
    const prepared = prepareBatch(msgs, maxBytes);
    let out: PublishOutcome | undefined;
    for (;;) {
      if (Date.now() > deadline) throw new Error(`publishing ${queue} stuck at message ${i}`);
      try {
        out = b.publish(queue, opts.publisherId ?? 'pub1', prepared);
        break;
      } catch (err) {
        if (!isSpillwayError(err)) throw err;
        opts.onRefusal?.(err);
        if (err.code === 'PUBLISHER_RESTRICTED') {
          stats.restricted++;
          await sleep(Number(err.details?.retryAfterMs ?? 20));
        } else if (err.code === 'INSUFFICIENT_STORAGE' && opts.retryInsufficient === true) {
          stats.insufficient++;
          await sleep(50);
        } else throw err;
      }
    }
    expect(out.seqs).toEqual(Array.from({ length: n }, (_, k) => i + k + 1));
    i += n;
    opts.each?.(out);
    // Let spill replies and deliveries in.
    await turn();
  }
  return stats;
}

/**
 * Checks first deliveries of a subscription: seqs `expectFrom`, `expectFrom + 1`, … in order
 * with payload(seq - 1, size) intact. Seq s carries message s - 1 (one publisher, nothing dropped).
 */
export class OrderCheck {
  next: number;
  readonly seen: number[] = [];
  constructor(readonly size: number, first = 1, readonly skip: ReadonlySet<number> = new Set()) {
    this.next = first;
  }

  take(msgs: readonly Message[]): void {
    for (const m of msgs) {
      expect(m.deliveryAttempt).toBe(1);
      while (this.skip.has(this.next)) this.next++;
      if (m.seq !== this.next) throw new Error(`expected seq ${this.next}, got ${m.seq}`);
      if (m.data !== payload(m.seq - 1, this.size)) throw new Error(`message ${m.seq} has wrong content: ${m.data.slice(0, 40)}…`);
      this.seen.push(m.seq);
      this.next++;
    }
  }
}

/**
 * Pulls and acks until `count` messages arrived (an empty pull just pulls again, until the
 * deadline). `each` runs after every acked batch.
 */
export async function pullAll(
  b: Broker, queue: string, sub: string, count: number, check: { take(msgs: readonly Message[]): void },
  opts: { max?: number; deadlineMs?: number; each?: () => void } = {},
): Promise<void> {
  const deadline = Date.now() + (opts.deadlineMs ?? 15_000);
  let got = 0;
  while (got < count) {
    if (Date.now() > deadline) throw new Error(`${sub} stuck after ${got} of ${count} messages: ${JSON.stringify(b.subscriptionInfo(queue, sub))}`);
    const msgs = await b.pullMessages(queue, sub, { max: Math.min(opts.max ?? 500, count - got), waitMs: 200 });
    if (msgs.length === 0) continue;
    check.take(msgs);
    expect(b.ack(queue, sub, msgs.map((m) => m.id))).toEqual({ acked: msgs.length, unknown: [] });
    got += msgs.length;
    opts.each?.();
  }
}

/** An embedded push consumer that checks order and acks each batch on the next turn. */
export class AckingConsumer implements Consumer {
  unacked = 0;
  received = 0;
  ended_: EndReason | undefined;
  #latch: { n: number; resolve: () => void; reject: (e: unknown) => void } | undefined;
  error: unknown;

  constructor(readonly prefetch: number, readonly b: Broker, readonly queue: string, readonly sub: string, readonly check: OrderCheck) {}

  ready(): boolean { return true; }

  deliver(batch: DeliveryBatch): void {
    const msgs = batch.messages();
    try {
      this.check.take(msgs);
    } catch (err) {
      this.error ??= err;
      this.#latch?.reject(err);
      return;
    }
    this.received += msgs.length;
    setImmediate(() => {
      if (this.ended_ === undefined) this.b.ack(this.queue, this.sub, msgs.map((m) => m.id));
      this.#settle();
    });
  }

  ended(reason: EndReason): void { this.ended_ = reason; }

  /** Resolves once `n` messages arrived (and were acked); rejects on an order or content error. */
  receivedAll(n: number, timeoutMs = 15_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`consumer got ${this.received} of ${n}`)), timeoutMs);
      this.#latch = {
        n,
        resolve: () => { clearTimeout(timer); resolve(); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      };
      if (this.error !== undefined) this.#latch.reject(this.error);
      else this.#settle();
    });
  }

  #settle(): void {
    if (this.#latch !== undefined && this.received >= this.#latch.n && this.unacked === 0) this.#latch.resolve();
  }
}

/** Waits (polling each turn, 5 ms apart) until `cond` holds; fails after `timeoutMs`. */
export async function until(cond: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}
