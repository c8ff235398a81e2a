import { crc32 } from 'node:zlib';

/**
 * The accounting checker of the reliability suite. Every message a test publishes carries
 * (publisher, publisherSeq, checksum): its payload starts `publisher|publisherSeq|` and the
 * checksum is the CRC-32 of the whole payload. The checker reads the publish log (what was
 * accepted, and which subscriptions were eligible for it) and every subscription's delivery
 * log, and classifies each (subscription, message) pair:
 *
 * - delivered: at least once, with the bytes that were published;
 * - lost: accepted while the subscription existed, never delivered;
 * - duplicated: delivered more than once (allowed by at-least-once; counted);
 * - corrupt: delivered with bytes other than the published ones (or unparseable);
 * - unexpected: delivered but never published, or to a subscription it was not eligible for.
 *
 * It also checks that first deliveries (deliveryAttempt 1) of each publisher reach each
 * consumer in publisherSeq order, per server run (ids name the run).
 *
 * Records are folded in as they come, in any order (a delivery may be logged before its
 * publish answer), into typed arrays indexed by publisherSeq, so a run of millions of
 * messages costs a few bytes per message and subscription.
 */

export interface PublishRecord {
  publisher: string;
  publisherSeq: number;
  /** CRC-32 of the payload bytes. */
  checksum: number;
  /** Subscriptions that existed and were eligible when the publish was accepted. */
  subscriptions: readonly string[];
}

export interface DeliveryRecord {
  subscription: string;
  publisher: string;
  /** -1 when the payload could not be parsed (always corrupt). */
  publisherSeq: number;
  checksum: number;
  /** deliveryAttempt as the server sent it. */
  attempt: number;
  /** Who received it (a connection, a process): order is checked per consumer. */
  consumer?: string;
  /** The server run (the id's prefix): order is checked per run. */
  run?: string;
}

export interface Report {
  /** Distinct messages accepted. */
  published: number;
  /** (subscription, message) pairs that must be delivered. */
  expected: number;
  /** Pairs delivered at least once. */
  delivered: number;
  lost: number;
  /** Pairs delivered more than once, and the extra deliveries. */
  duplicated: number;
  duplicateDeliveries: number;
  /** Deliveries with deliveryAttempt > 1. */
  redeliveries: number;
  corrupt: number;
  unexpected: number;
  /** First deliveries that came after a higher publisherSeq of the same publisher. */
  reordered: number;
  /** Delivery records read. */
  deliveries: number;
  /** A few of each kind, for failure messages. */
  examples: Record<'lost' | 'duplicated' | 'corrupt' | 'unexpected' | 'reordered', string[]>;
}

const MAX_EXAMPLES = 10;
const MAX_SUBSCRIPTIONS = 32;
const MAX_PUBLISHER_SEQ = 1 << 28;

/** Per subscription and publisher: delivery counts and the first checksum seen, by publisherSeq. */
class Received {
  count = new Uint16Array(64);
  checksum = new Uint32Array(64);
  /** 1: a later delivery had other bytes than the first. */
  mismatch = new Uint8Array(64);

  ensure(seq: number): void {
    if (seq < this.count.length) return;
    let n = this.count.length;
    while (n <= seq) n *= 2;
    this.count = grow(this.count, n);
    this.checksum = grow(this.checksum, n);
    this.mismatch = grow(this.mismatch, n);
  }
}

class PublisherLog {
  /** Bit per subscription index: eligible; 0 = not published. */
  eligible = new Uint32Array(64);
  checksum = new Uint32Array(64);
  maxSeq = -1;
  readonly received = new Map<number, Received>();

  ensure(seq: number): void {
    if (seq < this.eligible.length) return;
    let n = this.eligible.length;
    while (n <= seq) n *= 2;
    this.eligible = grow(this.eligible, n);
    this.checksum = grow(this.checksum, n);
  }
}

function grow<T extends Uint8Array | Uint16Array | Uint32Array>(a: T, n: number): T {
  const b = new (a.constructor as new (n: number) => T)(n);
  b.set(a);
  return b;
}

export class Checker {
  readonly #subs: string[] = [];
  readonly #subIndex = new Map<string, number>();
  readonly #pubs = new Map<string, PublisherLog>();
  /** Last first-delivery publisherSeq per (subscription, consumer, run, publisher). */
  readonly #lastFirst = new Map<string, number>();
  #published = 0;
  #deliveries = 0;
  #redeliveries = 0;
  #reordered = 0;
  #corruptUnparsed = 0;
  #unexpectedUnknown = 0;
  readonly #examples: Report['examples'] = { lost: [], duplicated: [], corrupt: [], unexpected: [], reordered: [] };

  published(r: PublishRecord): void {
    checkSeq(r.publisherSeq);
    const log = this.#pub(r.publisher);
    log.ensure(r.publisherSeq);
    let mask = 0;
    for (const s of r.subscriptions) mask |= 1 << this.#sub(s);
    // Bit 31 marks "published" so a message no subscription was eligible for still counts.
    mask |= 1 << 31;
    const before = log.eligible[r.publisherSeq]!;
    if (before !== 0) {
      // Published again (a repeatable publisher re-sending after a restart): the same bytes.
      if (log.checksum[r.publisherSeq] !== r.checksum >>> 0) {
        throw new Error(`publish log: ${r.publisher}#${r.publisherSeq} logged twice with different checksums`);
      }
    } else {
      this.#published++;
      log.checksum[r.publisherSeq] = r.checksum >>> 0;
    }
    log.eligible[r.publisherSeq] = before | mask;
    if (r.publisherSeq > log.maxSeq) log.maxSeq = r.publisherSeq;
  }

  delivered(d: DeliveryRecord): void {
    this.#deliveries++;
    if (d.attempt > 1) this.#redeliveries++;
    if (d.publisherSeq < 0 || d.publisherSeq > MAX_PUBLISHER_SEQ || !Number.isSafeInteger(d.publisherSeq)) {
      // Bytes that do not even name a message: corrupt, and counted as unexpected too.
      this.#corruptUnparsed++;
      this.#unexpectedUnknown++;
      this.#example('corrupt', `${d.subscription}: unparseable payload (checksum ${d.checksum})`);
      return;
    }
    const sub = this.#sub(d.subscription);
    const log = this.#pub(d.publisher);
    let rec = log.received.get(sub);
    if (rec === undefined) {
      rec = new Received();
      log.received.set(sub, rec);
    }
    const seq = d.publisherSeq;
    rec.ensure(seq);
    const c = rec.count[seq]!;
    if (c === 0) rec.checksum[seq] = d.checksum >>> 0;
    else if (rec.checksum[seq] !== d.checksum >>> 0) rec.mismatch[seq] = 1;
    if (c < 0xffff) rec.count[seq] = c + 1;

    if (d.attempt === 1) {
      const key = `${d.subscription}\u0000${d.consumer ?? ''}\u0000${d.run ?? ''}\u0000${d.publisher}`;
      const last = this.#lastFirst.get(key);
      if (last !== undefined && seq < last) {
        this.#reordered++;
        this.#example('reordered', `${d.subscription}: ${d.publisher}#${seq} first delivered after #${last}${d.consumer ? ` (consumer ${d.consumer})` : ''}`);
      }
      if (last === undefined || seq > last) this.#lastFirst.set(key, seq);
    }
  }

  report(): Report {
    const examples: Report['examples'] = {
      lost: [], duplicated: [], corrupt: [...this.#examples.corrupt], unexpected: [], reordered: [...this.#examples.reordered],
    };
    const add = (kind: keyof Report['examples'], text: string): void => {
      if (examples[kind].length < MAX_EXAMPLES) examples[kind].push(text);
    };
    let expected = 0;
    let delivered = 0;
    let lost = 0;
    let duplicated = 0;
    let duplicateDeliveries = 0;
    let corrupt = this.#corruptUnparsed;
    let unexpected = this.#unexpectedUnknown;
    for (const [pub, log] of this.#pubs) {
      // Expected pairs: every eligible bit of every published message.
      for (let seq = 0; seq <= log.maxSeq; seq++) {
        const mask = log.eligible[seq]!;
        if (mask === 0) continue;
        for (let s = 0; s < this.#subs.length; s++) {
          if ((mask & (1 << s)) === 0) continue;
          expected++;
          const rec = log.received.get(s);
          const n = rec !== undefined && seq < rec.count.length ? rec.count[seq]! : 0;
          if (n === 0) {
            lost++;
            add('lost', `${this.#subs[s]}: ${pub}#${seq}`);
          }
        }
      }
      // Deliveries: duplicated, corrupt, unexpected.
      for (const [s, rec] of log.received) {
        const subName = this.#subs[s]!;
        for (let seq = 0; seq < rec.count.length; seq++) {
          const n = rec.count[seq]!;
          if (n === 0) continue;
          const mask = seq < log.eligible.length ? log.eligible[seq]! : 0;
          if (mask === 0 || (mask & (1 << s)) === 0) {
            unexpected += n;
            add('unexpected', mask === 0 ? `${subName}: ${pub}#${seq} was never published` : `${subName}: ${pub}#${seq} was not eligible here`);
            continue;
          }
          delivered++;
          if (n > 1) {
            duplicated++;
            duplicateDeliveries += n - 1;
            add('duplicated', `${subName}: ${pub}#${seq} ×${n}`);
          }
          if (rec.checksum[seq] !== log.checksum[seq] || rec.mismatch[seq] === 1) {
            corrupt++;
            add('corrupt', `${subName}: ${pub}#${seq} delivered with other bytes than published`);
          }
        }
      }
    }
    return {
      published: this.#published, expected, delivered, lost, duplicated, duplicateDeliveries,
      redeliveries: this.#redeliveries, corrupt, unexpected, reordered: this.#reordered, deliveries: this.#deliveries, examples,
    };
  }

  /** Whether every expected pair has been delivered (cheap enough to poll while draining). */
  lostNow(): number {
    let lost = 0;
    for (const log of this.#pubs.values()) {
      for (let seq = 0; seq <= log.maxSeq; seq++) {
        const mask = log.eligible[seq]!;
        if (mask === 0) continue;
        for (let s = 0; s < this.#subs.length; s++) {
          if ((mask & (1 << s)) === 0) continue;
          const rec = log.received.get(s);
          if (rec === undefined || seq >= rec.count.length || rec.count[seq] === 0) lost++;
        }
      }
    }
    return lost;
  }

  get deliveries(): number { return this.#deliveries; }
  get publishedCount(): number { return this.#published; }

  #sub(name: string): number {
    let i = this.#subIndex.get(name);
    if (i === undefined) {
      i = this.#subs.length;
      if (i >= MAX_SUBSCRIPTIONS - 1) throw new Error(`checker: more than ${MAX_SUBSCRIPTIONS - 1} subscriptions`);
      this.#subs.push(name);
      this.#subIndex.set(name, i);
    }
    return i;
  }

  #pub(name: string): PublisherLog {
    let p = this.#pubs.get(name);
    if (p === undefined) {
      p = new PublisherLog();
      this.#pubs.set(name, p);
    }
    return p;
  }

  #example(kind: keyof Report['examples'], text: string): void {
    if (this.#examples[kind].length < MAX_EXAMPLES) this.#examples[kind].push(text);
  }
}

function checkSeq(seq: number): void {
  if (!Number.isSafeInteger(seq) || seq < 0 || seq > MAX_PUBLISHER_SEQ) throw new Error(`checker: publisherSeq ${seq} out of range`);
}

/** Checks whole logs at once: the publish log and the delivery logs (one per subscription, or merged). */
export function check(publishLog: readonly PublishRecord[], deliveryLogs: readonly (readonly DeliveryRecord[])[]): Report {
  const c = new Checker();
  for (const p of publishLog) c.published(p);
  for (const log of deliveryLogs) for (const d of log) c.delivered(d);
  return c.report();
}

/** One line for failure messages and logs. */
export function summary(r: Report): string {
  const ex = Object.entries(r.examples).filter(([, v]) => v.length > 0).map(([k, v]) => `${k}: ${v.slice(0, 5).join('; ')}`).join(' | ');
  return `published ${r.published}, expected ${r.expected}, delivered ${r.delivered}, lost ${r.lost}, duplicated ${r.duplicated} (+${r.duplicateDeliveries}), ` +
    `redeliveries ${r.redeliveries}, corrupt ${r.corrupt}, unexpected ${r.unexpected}, reordered ${r.reordered}${ex ? ` — ${ex}` : ''}`;
}

/** The promises every fault scenario ends on: nothing lost, nothing corrupt, nothing invented, first deliveries in order. */
export function expectClean(r: Report, opts: { ordered?: boolean } = {}): void {
  const bad = r.lost !== 0 || r.corrupt !== 0 || r.unexpected !== 0 || ((opts.ordered ?? true) && r.reordered !== 0) || r.expected === 0;
  if (bad) throw new Error(`checker: ${summary(r)}`);
}

// --- payloads ------------------------------------------------------------------------

const FILLER = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_'.repeat(64);

/** A payload of `size` bytes (at least its header) naming (publisher, publisherSeq); its filler shifts with the seq. */
export function makePayload(publisher: string, publisherSeq: number, size: number): string {
  const head = `${publisher}|${publisherSeq}|`;
  let n = Math.max(0, size - Buffer.byteLength(head));
  const off = (publisherSeq * 7 + publisher.length) % 64;
  let out = head;
  while (n > 0) {
    const take = Math.min(n, FILLER.length - off);
    out += FILLER.slice(off, off + take);
    n -= take;
  }
  return out;
}

export function checksumOf(bytes: Buffer | string): number {
  return crc32(typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : bytes) >>> 0;
}

/** What a delivered Message (as API.md shows it) says about itself: the key in its payload and its checksum. */
export function deliveryOf(subscription: string, m: { id: string; data: string; encoding?: string; deliveryAttempt: number }, consumer?: string): DeliveryRecord {
  const bytes = m.encoding === 'base64' ? Buffer.from(m.data, 'base64') : Buffer.from(m.data, 'utf8');
  const { publisher, publisherSeq } = parseHeader(bytes);
  const dash = m.id.indexOf('-');
  return {
    subscription, publisher, publisherSeq, checksum: checksumOf(bytes), attempt: m.deliveryAttempt,
    consumer, run: dash > 0 ? m.id.slice(0, dash) : undefined,
  };
}

/** `publisher|seq|…` → its parts; publisherSeq -1 when the header is not there. */
export function parseHeader(bytes: Buffer): { publisher: string; publisherSeq: number } {
  const a = bytes.indexOf(0x7c);
  const b = a < 0 ? -1 : bytes.indexOf(0x7c, a + 1);
  if (a <= 0 || b < 0 || b - a > 12) return { publisher: '?', publisherSeq: -1 };
  const seqText = bytes.toString('latin1', a + 1, b);
  const seq = /^\d+$/.test(seqText) ? Number(seqText) : -1;
  return { publisher: bytes.toString('utf8', 0, a), publisherSeq: seq };
}
