import { Ledger, type Publisher } from '../flowcontrol/ledger';
import { Ring } from '../queue/ring';
import { F_HAS_PUBLISHER_SEQ, encodeBody, messageId } from '../queue/message';
import { Subscription, type SubscriptionHost } from '../subscribers/subscription';
import type { SubscriptionConfig } from '../subscribers/config';
import type { EndReason } from '../subscribers/consumer';
import type { QueueConfig } from './config';
import type { Prepared } from './prepare';

/** What a queue needs from the broker around it. */
export interface QueueHost {
  readonly runTag: string;
  readonly epoch: string;
  wake(sub: Subscription): void;
  watch(sub: Subscription): void;
  deadLetter(from: Queue, sub: Subscription, pos: number, attempt: number): boolean;
  subscriptionEnded(queue: Queue, sub: Subscription, reason: EndReason): void;
  observeFirstDelivery(publishedAt: number, now: number): void;
}

/** API.md's QueueStats. */
export interface QueueStats {
  name: string;
  messages: number;
  memoryBytes: number;
  memoryUsedBytes: number;
  spilledMessages: number;
  spilledBytes: number;
  published: number;
  dropped: number;
  subscriptions: string[];
  publishers: string[];
}

/** Where a publish's answers go: ids and seqs per message (null for a forgotten duplicate). */
export interface PublishResult {
  ids: (string | null)[];
  seqs: (number | null)[];
  duplicates: number;
}

/**
 * One queue: its ring, its subscriptions and its publisher ledger. Appends are two-phase
 * (`write` then `commit` or `abort`) so a transaction can span queues all or nothing.
 */
export class Queue implements SubscriptionHost {
  readonly name: string;
  readonly config: QueueConfig;
  readonly ring: Ring;
  readonly ledger: Ledger;
  readonly #host: QueueHost;
  nextSeq = 1;

  readonly #subs = new Map<string, Subscription>();
  #subList: Subscription[] = [];
  /** Eligible messages per subscription of the batch being written, aligned with #subList. */
  #pendSub: number[] = [];

  #headPos = 0;
  /** Records up to here have been acked by at least one subscription (publisher usage released). */
  #consumedPos = 0;
  /** Messages in the ring. */
  retained = 0;
  published = 0;
  dropped = 0;

  // The write in progress (between write() and commit()/abort()).
  #pend: Publisher | undefined;
  #pendFirstSeq = 0;
  #pendStored = 0;
  #pendStoredBytes = 0;
  #pendDropped = 0;
  #pendDroppedBytes = 0;
  #pendLastPubSeq = -1;
  #pendAccounted = false;
  readonly #pendPubSeqs: number[] = [];
  readonly #pendPubSeqAt: number[] = [];

  constructor(name: string, config: QueueConfig, host: QueueHost) {
    this.name = name;
    this.config = config;
    this.#host = host;
    this.ring = Ring.create(config.memoryBytes);
    this.ledger = new Ledger(
      { limitBytes: config.publisherLimitBytes, resumeBytes: config.publisherResumeBytes, spillLimitBytes: config.publisherSpillLimitBytes },
      host.epoch,
    );
  }

  get runTag(): string { return this.#host.runTag; }
  get subscriptions(): readonly Subscription[] { return this.#subList; }
  subscription(name: string): Subscription | undefined { return this.#subs.get(name); }

  addSubscription(name: string, config: SubscriptionConfig, createdAt: number, expiresAt: number | undefined): Subscription {
    const sub = new Subscription(this.name, name, config, this, createdAt, expiresAt);
    if (config.startAt === 'earliest') {
      const tail = this.ring.tail;
      const head = this.#headPos === tail ? tail : this.ring.settle(this.#headPos);
      sub.startAtEarliest(head, head === tail ? this.nextSeq : this.ring.seqAt(head));
    }
    this.#subs.set(name, sub);
    this.#subList = [...this.#subs.values()];
    return sub;
  }

  removeSubscription(name: string, reason: EndReason): boolean {
    const sub = this.#subs.get(name);
    if (sub === undefined) return false;
    this.#subs.delete(name);
    this.#subList = [...this.#subs.values()];
    sub.end(reason);
    this.#reclaim();
    return true;
  }

  /**
   * Phase one of an append: checks duplicates, assigns seqs and ids, drops messages no
   * subscription wants, and writes the rest to the ring unpublished. Returns false, with
   * nothing changed, when the ring has no room. `accounted`: the publisher's usage already
   * counts these messages (they were staged in a transaction).
   */
  write(p: Publisher, msgs: readonly Prepared[], now: number, res: PublishResult, accounted: boolean): boolean {
    const ring = this.ring;
    const subs = this.#subList;
    const pend = this.#pendSub;
    pend.length = subs.length;
    pend.fill(0);
    this.#pend = p;
    this.#pendFirstSeq = this.nextSeq;
    this.#pendStored = this.#pendStoredBytes = this.#pendDropped = this.#pendDroppedBytes = 0;
    this.#pendAccounted = accounted;
    this.#pendPubSeqs.length = this.#pendPubSeqAt.length = 0;
    let lastPub = p.lastSeq;
    let seq = this.nextSeq;
    const iso = new Date(now).toISOString();
    const runTag = this.#host.runTag;

    for (let i = 0; i < msgs.length; i++) {
      const m = msgs[i]!;
      const ps = m.publisherSeq;
      if (ps !== undefined) {
        if (ps <= lastPub) {
          const orig = p.seqOf(ps);
          res.ids.push(orig > 0 ? messageId(runTag, orig) : null);
          res.seqs.push(orig > 0 ? orig : null);
          res.duplicates++;
          if (accounted) { this.#pendDropped++; this.#pendDroppedBytes += m.bytes; }
          continue;
        }
        lastPub = ps;
      }
      const id = messageId(runTag, seq);
      res.ids.push(id);
      res.seqs.push(seq);
      if (ps !== undefined) { this.#pendPubSeqs.push(ps); this.#pendPubSeqAt.push(seq); }
      let eligible = false;
      for (let j = 0; j < subs.length; j++) {
        if (subs[j]!.matches(m.attributes)) { pend[j]!++; eligible = true; }
      }
      if (!eligible) {
        this.#pendDropped++;
        this.#pendDroppedBytes += m.bytes;
        seq++;
        continue;
      }
      const body = encodeBody(id, seq, m.dataJson, m.encoding, m.attrsJson, m.keyJson, p.json, ps, iso);
      const pos = ring.claim(body.bodyLen);
      if (pos < 0) {
        this.abort();
        return false;
      }
      ring.data.write(body.text, ring.bodyStart(pos), body.bodyLen, 'utf8');
      ring.writeHeader(pos, body.bodyLen, seq, now, ps ?? NaN, p.slot, m.bytes, body.attrsOff, body.attrsLen, ps !== undefined ? F_HAS_PUBLISHER_SEQ : 0);
      this.#pendStored++;
      this.#pendStoredBytes += m.bytes;
      seq++;
    }
    this.nextSeq = seq;
    this.#pendLastPubSeq = lastPub;
    return true;
  }

  /** Phase two: makes the written messages visible at once and does the accounting. */
  commit(): void {
    const p = this.#pend!;
    this.#pend = undefined;
    this.ring.publish(this.nextSeq);
    const stored = this.#pendStored;
    const led = this.ledger;
    this.retained += stored;
    this.published += stored + this.#pendDropped;
    this.dropped += this.#pendDropped;
    for (let i = 0; i < this.#pendPubSeqs.length; i++) p.remember(this.#pendPubSeqs[i]!, this.#pendPubSeqAt[i]!);
    p.lastSeq = this.#pendLastPubSeq;
    if (this.#pendAccounted) {
      // Staged usage of what was not stored (dropped, duplicate) is given back.
      if (this.#pendDropped > 0) led.withdrawn(p, this.#pendDropped, this.#pendDroppedBytes);
    } else if (stored > 0) {
      led.accepted(p, stored, this.#pendStoredBytes);
    }
    if (p.retainedMessages === 0) p.safeSeq = p.lastSeq;
    const subs = this.#subList;
    const pend = this.#pendSub;
    for (let j = 0; j < subs.length; j++) if (pend[j]! > 0) subs[j]!.appended(pend[j]!);
  }

  /** Forgets the write in progress. */
  abort(): void {
    this.ring.rollback();
    this.nextSeq = this.#pendFirstSeq;
    this.#pend = undefined;
  }

  /** Removes every retained message; returns how many. */
  purge(): number {
    const n = this.retained;
    for (const sub of this.#subList) sub.purge();
    this.#reclaim();
    return n;
  }

  stats(): QueueStats {
    return {
      name: this.name,
      messages: this.retained,
      memoryBytes: this.config.memoryBytes,
      memoryUsedBytes: this.ring.usedBytes,
      spilledMessages: 0,
      spilledBytes: 0,
      published: this.published,
      dropped: this.dropped,
      subscriptions: this.#subList.map((s) => s.name),
      publishers: this.ledger.ids(),
    };
  }

  /** Ends every subscription (the queue is deleted). */
  close(reason: EndReason): void {
    for (const sub of this.#subList) sub.end(reason);
    this.#subs.clear();
    this.#subList = [];
  }

  // --- SubscriptionHost --------------------------------------------------------

  floorAdvanced(): void { this.#reclaim(); }
  wake(sub: Subscription): void { this.#host.wake(sub); }
  watch(sub: Subscription): void { this.#host.watch(sub); }
  deadLetter(sub: Subscription, pos: number, attempt: number): boolean { return this.#host.deadLetter(this, sub, pos, attempt); }
  exhausted(sub: Subscription): void {
    if (this.removeSubscription(sub.name, 'expired')) this.#host.subscriptionEnded(this, sub, 'expired');
  }
  observeFirstDelivery(publishedAt: number, now: number): void { this.#host.observeFirstDelivery(publishedAt, now); }

  /**
   * Walks the records the floors have passed: below the highest floor a publisher's usage
   * is released (some subscription acked); below the lowest, the space is reclaimed.
   */
  #reclaim(): void {
    const subs = this.#subList;
    let min = this.nextSeq;
    let max = subs.length === 0 ? this.nextSeq : 0;
    for (let i = 0; i < subs.length; i++) {
      const f = subs[i]!.floorSeq;
      if (f < min) min = f;
      if (f > max) max = f;
    }
    const ring = this.ring;
    const led = this.ledger;
    const tail = ring.tail;
    const now = Date.now();

    let pos = this.#consumedPos;
    while (pos !== tail) {
      pos = ring.settle(pos);
      if (pos === tail || ring.seqAt(pos) >= max) break;
      const p = led.bySlot(ring.publisherOf(pos));
      if (p !== undefined) led.consumed(p, 1, ring.bytesOf(pos), now);
      pos = ring.after(pos, tail);
    }
    this.#consumedPos = pos;

    pos = this.#headPos;
    const start = pos;
    while (pos !== tail) {
      pos = ring.settle(pos);
      if (pos === tail || ring.seqAt(pos) >= min) break;
      const p = led.bySlot(ring.publisherOf(pos));
      if (p !== undefined) led.released(p, ring.publisherSeqOf(pos));
      this.retained--;
      pos = ring.after(pos, tail);
    }
    if (pos !== start) {
      this.#headPos = pos;
      ring.release(pos, pos === tail ? this.nextSeq : ring.seqAt(pos));
    }
  }
}
