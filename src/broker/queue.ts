import { Ledger, type Publisher } from '../flowcontrol/ledger';
import { Ring } from '../queue/ring';
import { INITIAL_CAPACITY, R_LEN, R_SEQ } from '../queue/layout';
import { F_HAS_PUBLISHER_SEQ, encodeBody, messageId } from '../queue/message';
import { Subscription, type DiskChunk, type SubscriptionHost } from '../subscribers/subscription';
import { Extent, type PublisherSummary, type QueueSpill } from '../spill/store';
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
  deadLetter(from: Queue, sub: Subscription, src: Buffer, start: number, len: number, attempt: number): boolean;
  /** The spill of a new queue, or undefined when the server has none. */
  spillFor(queue: Queue): QueueSpill | undefined;
  /** A spill write or read failed. */
  spillError(queue: Queue, err: string): void;
  subscriptionEnded(queue: Queue, sub: Subscription, reason: EndReason): void;
  observeFirstDelivery(publishedAt: number, now: number): void;
  /** Takes `bytes` of the server's ring memory budget; false when it is spent. */
  reserveMemory(bytes: number): boolean;
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
  /** Seqs below this have been acked by at least one subscription (publisher usage released)... */
  #consumedSeq = 0;
  /** ...and, in the ring, records from here on have not. */
  #consumedPos = 0;
  readonly #spill: QueueSpill | undefined;
  #closed = false;
  /** The last write failed because one record could never fit in this queue's memory. */
  #tooLarge = false;
  /** publishedAt text of the last millisecond that published (one Date per millisecond, not per publish). */
  #iso = '';
  #isoAt = -1;
  /** Every retained record below this seq is on disk. */
  spilledEndSeq = 0;
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
    this.ring = Ring.create(Math.min(INITIAL_CAPACITY, config.memoryBytes), 1, config.memoryBytes);
    this.ring.mayGrow = (extra) => host.reserveMemory(extra);
    this.#spill = config.spill ? host.spillFor(this) : undefined;
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
      // Below every floor, messages were acked (or skipped) by all: not retained, even where
      // their space is not freed yet (an extent goes whole; the ring head waits for a spill write).
      let from = this.nextSeq;
      for (const s of this.#subList) if (s.floorSeq < from) from = s.floorSeq;
      const ring = this.ring;
      const tail = ring.tail;
      let head = this.#headPos;
      while (head !== tail) {
        head = ring.settle(head);
        if (head === tail || ring.seqAt(head) >= from) break;
        head = ring.after(head, tail);
      }
      let diskFirstSeq = 0;
      let diskMessages = 0;
      const sp = this.#spill;
      if (sp !== undefined) {
        for (let i = sp.findIndex(from); i < sp.extents.length; i++) {
          const e = sp.extents[i]!;
          if (diskFirstSeq === 0) diskFirstSeq = Math.max(e.firstSeq, from);
          // Never an undercount (seqs skip only dropped messages); the excess is corrected at the tail.
          diskMessages += e.firstSeq >= from ? e.count : Math.min(e.count, e.endSeq - from);
        }
      }
      sub.startAtEarliest(head, head === tail ? this.nextSeq : ring.seqAt(head), diskFirstSeq, diskMessages);
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
    // An empty ring starts again at 0: a batch then fits (or grows the ring) instead of
    // wrapping around an empty ring and finding no room.
    if (ring.head !== 0 && ring.usedBytes === 0 && this.#spill?.busy !== true && ring.rewind()) {
      this.#headPos = 0;
      this.#consumedPos = 0;
      for (const sub of this.#subList) sub.rewound();
    }
    const subs = this.#subList;
    const pend = this.#pendSub;
    pend.length = subs.length;
    pend.fill(0);
    this.#pend = p;
    this.#tooLarge = false;
    this.#pendFirstSeq = this.nextSeq;
    this.#pendStored = this.#pendStoredBytes = this.#pendDropped = this.#pendDroppedBytes = 0;
    this.#pendAccounted = accounted;
    this.#pendPubSeqs.length = this.#pendPubSeqAt.length = 0;
    let lastPub = p.lastSeq;
    let seq = this.nextSeq;
    if (now !== this.#isoAt) {
      this.#iso = new Date(now).toISOString();
      this.#isoAt = now;
    }
    const iso = this.#iso;
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
      const body = encodeBody(id, seq, m, p.json, p.jsonBytes, iso);
      if (body.bodyLen > ring.maxBodyBytes) {
        this.abort();
        this.#tooLarge = true;
        return false;
      }
      const pos = ring.claim(body.bodyLen);
      if (pos < 0) {
        this.abort();
        this.#maybeSpill(true);
        return false;
      }
      ring.writeBody(pos, body.text, body.bodyLen);
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
    // Every subscription, even with nothing eligible here: see Subscription.appended.
    for (let j = 0; j < subs.length; j++) subs[j]!.appended(pend[j]!);
    if (this.#spill !== undefined && this.ring.usedBytes * 2 > this.ring.maxCapacity) this.#maybeSpill(false);
  }

  /**
   * Why a write found no room: memory full with spill off, the disk budget spent or the disk
   * failing, or a spill under way that will make room shortly.
   */
  fullReason(): 'QUEUE_FULL' | 'INSUFFICIENT_STORAGE' | 'SPILLING' | 'MESSAGE_TOO_LARGE' {
    if (this.#tooLarge) return 'MESSAGE_TOO_LARGE';
    const sp = this.#spill;
    if (sp === undefined) return 'QUEUE_FULL';
    if (sp.busy) return 'SPILLING';
    return 'INSUFFICIENT_STORAGE';
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
      spilledMessages: this.#spill?.messages ?? 0,
      spilledBytes: this.#spill?.bytes ?? 0,
      published: this.published,
      dropped: this.dropped,
      subscriptions: this.#subList.map((s) => s.name),
      publishers: this.ledger.ids(),
    };
  }

  /** Stops spilling and removes this queue's spill files (server shutdown: messages do not survive it). */
  closeSpill(): void {
    this.#closed = true;
    this.#spill?.detach();
  }

  /** Ends every subscription (the queue is deleted). */
  close(reason: EndReason): void {
    this.#closed = true;
    this.#spill?.detach();
    for (const sub of this.#subList) sub.end(reason);
    this.#subs.clear();
    this.#subList = [];
  }

  // --- SubscriptionHost --------------------------------------------------------

  floorAdvanced(): void { this.#reclaim(); }
  wake(sub: Subscription): void { this.#host.wake(sub); }
  watch(sub: Subscription): void { this.#host.watch(sub); }
  deadLetter(sub: Subscription, src: Buffer, start: number, len: number, attempt: number): boolean {
    return this.#host.deadLetter(this, sub, src, start, len, attempt);
  }
  get ringHeadPos(): number { return this.#headPos; }

  async readDisk(seq: number, hint: DiskChunk | null): Promise<DiskChunk | null> {
    const sp = this.#spill;
    if (sp === undefined) return null;
    let e: Extent | undefined;
    let off = 0;
    if (hint !== null && hint.extent instanceof Extent && hint.extent.endSeq > seq && hint.next < hint.extent.length) {
      e = hint.extent;
      off = hint.next;
    } else {
      e = sp.find(seq);
    }
    if (e === undefined) return null;
    try {
      const buf = await sp.read(e, off);
      let last = 0;
      for (let p = 0; p < buf.length; p += buf.readInt32LE(p + R_LEN)) last = p;
      return { buf, pos: 0, lastSeq: buf.readDoubleLE(last + R_SEQ), extent: e, next: off + buf.length };
    } catch (err) {
      this.#host.spillError(this, (err as Error).message);
      throw err;
    }
  }
  exhausted(sub: Subscription): void {
    if (this.removeSubscription(sub.name, 'expired')) this.#host.subscriptionEnded(this, sub, 'expired');
  }
  observeFirstDelivery(publishedAt: number, now: number): void { this.#host.observeFirstDelivery(publishedAt, now); }

  /**
   * Walks what the floors have passed, disk extents first, then ring records: below the
   * highest floor a publisher's usage is released (some subscription acked); below the
   * lowest, the message is gone (disk files deleted, ring space reclaimed).
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
    const sp = this.#spill;
    const tail = ring.tail;
    const now = Date.now();

    let cs = this.#consumedSeq;
    if (sp !== undefined && cs < this.spilledEndSeq) {
      for (let i = sp.findIndex(cs); i < sp.extents.length; i++) {
        const e = sp.extents[i]!;
        if (e.endSeq > max) break;
        for (const [slot, sum] of e.publishers) {
          const p = led.bySlot(slot);
          if (p !== undefined && sum.unconsumedCount > 0) led.consumed(p, sum.unconsumedCount, sum.unconsumedBytes, now);
        }
        cs = e.endSeq;
      }
    }
    if (cs >= this.spilledEndSeq) {
      let pos = this.#consumedPos;
      while (pos !== tail) {
        pos = ring.settle(pos);
        if (pos === tail || ring.seqAt(pos) >= max) break;
        const p = led.bySlot(ring.publisherOf(pos));
        if (p !== undefined) led.consumed(p, 1, ring.bytesOf(pos), now);
        pos = ring.after(pos, tail);
      }
      this.#consumedPos = pos;
      cs = pos === tail ? this.nextSeq : ring.seqAt(pos);
    }
    this.#consumedSeq = cs;

    if (sp !== undefined) {
      while (sp.extents.length > 0 && sp.extents[0]!.endSeq <= min) {
        const e = sp.shift();
        for (const [slot, sum] of e.publishers) {
          const p = led.bySlot(slot);
          if (p === undefined) continue;
          led.released(p, sum.maxPublisherSeq, sum.count);
          led.unspilled(p, sum.bytes);
        }
        this.retained -= e.count;
      }
      // The spill worker is reading the head of the ring: it stays put until the write is done.
      if (sp.busy) return;
    }

    let pos = this.#headPos;
    const start = pos;
    while (pos !== tail) {
      pos = ring.settle(pos);
      if (pos === tail || ring.seqAt(pos) >= min) break;
      const p = led.bySlot(ring.publisherOf(pos));
      if (p !== undefined) led.released(p, ring.publisherSeqOf(pos), 1);
      this.retained--;
      pos = ring.after(pos, tail);
    }
    if (pos !== start) this.#moveHead(pos);
  }

  #moveHead(pos: number): void {
    const ring = this.ring;
    this.#headPos = pos;
    ring.release(pos, pos === ring.tail ? this.nextSeq : ring.seqAt(ring.settle(pos)));
  }

  /**
   * Moves the oldest records in memory to disk (in the worker) when memory is over half
   * full, or at once when a publish found it full. Oldest first: what a stalled subscription
   * still needs goes to disk, and fast subscriptions keep reading the ring.
   */
  #maybeSpill(force: boolean): void {
    const sp = this.#spill;
    if (sp === undefined || sp.busy || this.#closed) return;
    const ring = this.ring;
    const used = ring.usedBytes;
    if (used === 0 || (!force && used * 2 <= ring.maxCapacity)) return;
    if (Date.now() < sp.retryAt) return;
    const goal = Math.min(SPILL_CHUNK_BYTES, Math.max(used - ring.maxCapacity / 4, force ? used / 2 : 0));
    const tail = ring.tail;
    const from = ring.settle(this.#headPos);
    let pos = from;
    let count = 0;
    let bytes = 0;
    while (pos !== tail && (count === 0 || bytes < goal)) {
      bytes += ring.lengthOf(pos);
      count++;
      pos = ring.after(pos, tail);
    }
    if (count === 0) return;
    if (!sp.hasRoom(bytes)) return;
    sp.busy = true;
    const seg = sp.target();
    const offset = seg.size;
    const firstSeq = ring.seqAt(from);
    void sp.write(seg, from, count).then((r) => {
      sp.busy = false;
      if (this.#closed) return;
      if (!r.ok) {
        sp.retryAt = Date.now() + SPILL_RETRY_MS;
        sp.lastError = `${r.code}: ${r.error}`;
        this.#host.spillError(this, sp.lastError);
      } else {
        sp.lastError = undefined;
        this.#spilled(from, count, pos, firstSeq, seg, offset, r.bytes);
      }
      this.#reclaim();
      if (this.ring.usedBytes * 2 > this.ring.maxCapacity) this.#maybeSpill(false);
    });
  }

  /** A spill write is on disk: the records become an extent and their ring space is freed. */
  #spilled(from: number, count: number, cutPos: number, firstSeq: number, seg: Parameters<QueueSpill['write']>[0], offset: number, length: number): void {
    const ring = this.ring;
    const tail = ring.tail;
    const led = this.ledger;
    const sums = new Map<number, PublisherSummary>();
    let pos = from;
    let lastSeq = firstSeq;
    for (let i = 0; i < count; i++) {
      const slot = ring.publisherOf(pos);
      let sum = sums.get(slot);
      if (sum === undefined) {
        sum = { count: 0, bytes: 0, unconsumedCount: 0, unconsumedBytes: 0, maxPublisherSeq: NaN };
        sums.set(slot, sum);
      }
      const b = ring.bytesOf(pos);
      lastSeq = ring.seqAt(pos);
      sum.count++;
      sum.bytes += b;
      if (lastSeq >= this.#consumedSeq) { sum.unconsumedCount++; sum.unconsumedBytes += b; }
      const ps = ring.publisherSeqOf(pos);
      if (!Number.isNaN(ps)) sum.maxPublisherSeq = ps;
      pos = ring.after(pos, tail);
    }
    for (const [slot, sum] of sums) {
      const p = led.bySlot(slot);
      if (p !== undefined) led.spilled(p, sum.bytes);
    }
    const endSeq = lastSeq + 1;
    this.#spill!.added(new Extent(firstSeq, endSeq, seg, offset, length, count, sums));
    for (const sub of this.#subList) sub.spilled(endSeq);
    this.spilledEndSeq = endSeq;
    if (this.#consumedSeq < endSeq) this.#consumedPos = cutPos;
    this.#moveHead(cutPos);
  }
}

/** Most bytes moved to disk in one write. */
const SPILL_CHUNK_BYTES = 4 * 1024 * 1024;
/** After a failed write, wait this long before trying again. */
const SPILL_RETRY_MS = 1000;
