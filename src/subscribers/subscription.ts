import type { Ring } from '../queue/ring';
import { KIND_CORRUPT, R_ATTRS_LEN, R_ATTRS_OFF, R_BODY_LEN, R_KIND, R_LEN, R_PUBLISHED_AT, R_SEQ, RECORD_HEADER_BYTES } from '../queue/layout';
import { decodeAttributes, seqOfId } from '../queue/message';
import { DeliveryBatch } from './batch';
import type { Consumer, EndReason } from './consumer';
import { DeadlineHeap } from './deadlines';
import { HeldChunks, type Held, type OffRing } from './held';
import type { SubscriptionConfig } from './config';

/** What a subscription needs from its queue. */
export interface SubscriptionHost {
  readonly ring: Ring;
  readonly runTag: string;
  /** The seq the next published message will get. */
  readonly nextSeq: number;
  /** Some subscription's ack floor moved: space may be reclaimed. */
  floorAdvanced(): void;
  /** Sends a stored body to the dead-letter queue; false when it could not. */
  deadLetter(sub: Subscription, src: Buffer, start: number, len: number, attempt: number): boolean;
  /** Every retained record below this seq is on disk; the ring holds the rest. */
  readonly spilledEndSeq: number;
  /** Ring position of the oldest record in memory. */
  readonly ringHeadPos: number;
  /** Reads records from disk at or after `seq` (continuing `hint` when it still applies). */
  readDisk(seq: number, hint: DiskChunk | null): Promise<DiskChunk | null>;
  /** Asks for a dispatch turn for `sub`. */
  wake(sub: Subscription): void;
  /** `sub` now has deadlines to watch. */
  watch(sub: Subscription): void;
  /** `sub` reached its maxEvents. */
  exhausted(sub: Subscription): void;
  /** Publish-to-first-delivery latencies, for the histogram. */
  observeFirstDelivery(publishedAt: number, now: number): void;
}

/** Records read ahead from disk, consumed in order; `extent`/`next` say where the next read starts. */
export interface DiskChunk {
  buf: Buffer;
  pos: number;
  /** Seq of the last record in `buf`. */
  lastSeq: number;
  extent: unknown;
  next: number;
}

const IN_FLIGHT = 1;
const DELAYED = 2;
const READY = 3;

/** A delivered, unacked message (or one waiting to be delivered again). Pooled. */
class Entry implements OffRing {
  seq = 0;
  pos = 0;
  attempt = 0;
  deadline = 0;
  heapIdx = -1;
  state = 0;
  consumer: Consumer | null = null;
  /** Where the body is once the record has left the ring (spilled); null while it is in the ring at `pos`. */
  copy: Buffer | null = null;
  copyStart = 0;
  copyLen = 0;
  held: Held | null = null;
}

interface Waiter {
  max: number;
  autoAck: boolean;
  render: (batch: DeliveryBatch) => unknown;
  resolve: (v: unknown) => void;
  timer: NodeJS.Timeout | undefined;
}

/** Read chunks kept for unacked messages delivered from them (about 1 MiB each), per subscription. */
const HELD_CHUNK_BYTES = 8 * 1024 * 1024;

/** How many messages one consumer gets per round, so competing consumers share fairly. */
const SLICE = 512;
/**
 * Body bytes of one push batch: a frame stays near 64 KiB, which consumers decode fast
 * (JavaScript engines turn text over 128 KiB into strings several times slower per byte).
 */
const PUSH_BYTES = 64 * 1024;

export interface SubscriptionStats {
  name: string;
  queue: string;
  backlog: number;
  inFlight: number;
  delivered: number;
  acked: number;
  redelivered: number;
  deadLettered: number;
  dropped: number;
  expiresAt?: string;
  remainingEvents?: number;
}

/**
 * One subscription: a cursor over the queue's records for first deliveries, a table of
 * in-flight entries, a deadline heap, and competing consumers. Messages waiting in the
 * ring cost nothing here but a counter: only delivered messages have entries.
 */
export class Subscription {
  readonly name: string;
  readonly queue: string;
  readonly config: SubscriptionConfig;
  readonly createdAt: number;
  readonly expiresAt: number | undefined;
  readonly #host: SubscriptionHost;
  readonly #filter: [string, string][] | undefined;

  // First deliveries: the next record to look at, and every seq below cursorSeq was looked at.
  // On disk, the position is meaningless and records come from read-ahead chunks.
  #cursorPos: number;
  #cursorSeq: number;
  #onDisk = false;
  #chunk: DiskChunk | null = null;
  /** The chunk after #chunk, read while #chunk is being delivered (double buffering). */
  #nextChunk: DiskChunk | null = null;
  #reading = false;
  /** Chunks that bodies delivered from disk point into, while they are unacked. */
  readonly #held = new HeldChunks(HELD_CHUNK_BYTES);
  /** Bumped whenever read-ahead state is dropped, so a late read is ignored. */
  #diskGen = 0;
  /** Eligible messages at or after the cursor (not yet delivered once). */
  #fresh = 0;
  /** Lowest seq not yet acked or dropped here; records below every floor may be reclaimed. */
  floorSeq: number;

  readonly #inflight = new Map<number, Entry>();
  readonly #heap = new DeadlineHeap<Entry>();
  readonly #ready: Entry[] = [];
  #readyHead = 0;
  #inFlightCount = 0;
  #pendingCount = 0;
  readonly #pool: Entry[] = [];

  readonly #consumers: Consumer[] = [];
  #rr = 0;
  readonly #waiters: Waiter[] = [];
  readonly #batch = new DeliveryBatch();
  #ended: EndReason | undefined;
  #ttlTimer: NodeJS.Timeout | undefined;
  #needsFloorWalk = false;

  // Stats.
  delivered = 0;
  acked = 0;
  redelivered = 0;
  deadLettered = 0;
  dropped = 0;
  /** Acks counted toward maxEvents (kept across restarts of the definition). */
  ackedEvents = 0;

  constructor(
    queue: string, name: string, config: SubscriptionConfig, host: SubscriptionHost,
    createdAt: number, expiresAt: number | undefined,
  ) {
    this.queue = queue;
    this.name = name;
    this.config = config;
    this.#host = host;
    this.createdAt = createdAt;
    this.expiresAt = expiresAt;
    this.#filter = config.filter ? Object.entries(config.filter.attributes) : undefined;
    const ring = host.ring;
    this.#cursorPos = ring.tail;
    this.#cursorSeq = host.nextSeq;
    this.floorSeq = host.nextSeq;
  }

  /** Starts from the oldest retained record (startAt: earliest). */
  startAtEarliest(headPos: number, headSeq: number, diskFirstSeq: number, diskMessages: number): void {
    const ring = this.#host.ring;
    this.#cursorPos = headPos;
    this.#cursorSeq = diskMessages > 0 ? diskFirstSeq : headSeq;
    this.floorSeq = this.#cursorSeq;
    this.#onDisk = diskMessages > 0;
    const tail = ring.tail;
    // Disk records are counted without reading them; a filter's overcount is corrected at the tail.
    let n = diskMessages;
    for (let pos = headPos; pos !== tail; pos = ring.after(pos, tail)) {
      pos = ring.settle(pos);
      if (pos === tail) break;
      if (this.#eligibleAt(ring, pos)) n++;
    }
    this.#fresh = n;
    if (n === 0) {
      // Nothing retained is eligible here: start at the tail, holding nothing back.
      this.#onDisk = false;
      this.#cursorPos = tail;
      this.#cursorSeq = this.floorSeq = this.#host.nextSeq;
    }
  }

  get ended(): EndReason | undefined { return this.#ended; }
  get hasDeadlines(): boolean { return this.#heap.size > 0; }

  /** Whether a message with these attributes is eligible here. */
  matches(attrs: Record<string, string> | undefined): boolean {
    const f = this.#filter;
    if (f === undefined) return true;
    if (attrs === undefined) return false;
    for (let i = 0; i < f.length; i++) if (attrs[f[i]![0]] !== f[i]![1]) return false;
    return true;
  }

  /**
   * A batch was committed with `n` messages eligible here (none, too: the queue calls every
   * subscription). A cursor left at the old tail may now sit on a padding record the writer put
   * there before wrapping: settle it while the padding is still there, since once the head passes
   * it the writer may put a record at that very position. With nothing eligible left, the cursor
   * and the floor skip to the tail, so messages this subscription will never get do not hold memory.
   */
  appended(n: number): void {
    this.#fresh += n;
    const ring = this.#host.ring;
    const tail = ring.tail;
    if (this.#fresh === 0) {
      this.#onDisk = false;
      this.#dropChunks();
      this.#cursorPos = tail;
      this.#cursorSeq = this.#host.nextSeq;
      this.#needsFloorWalk = true;
      this.#afterTake();
      return;
    }
    if (!this.#onDisk && this.#cursorPos !== tail) this.#cursorPos = ring.settle(this.#cursorPos);
    if (n > 0) this.#host.wake(this);
  }

  /** The empty ring started again at 0: a cursor in the ring is at its tail, now 0. */
  rewound(): void {
    if (!this.#onDisk) this.#cursorPos = 0;
  }

  addConsumer(c: Consumer): void {
    this.#consumers.push(c);
    this.#host.wake(this);
  }

  /** Detaches a consumer; what it had unacked is delivered again at once to others. */
  removeConsumer(c: Consumer): void {
    const i = this.#consumers.indexOf(c);
    if (i < 0) return;
    this.#consumers.splice(i, 1);
    if (c.unacked > 0) {
      for (const e of this.#inflight.values()) {
        if (e.consumer === c && e.state === IN_FLIGHT) {
          this.#heap.remove(e);
          this.#inFlightCount--;
          this.#toReady(e);
        }
      }
      c.unacked = 0;
      this.#host.wake(this);
    }
  }

  /** Pull: up to `max` messages, waiting up to `waitMs` for the first. `render` runs in the delivering turn. */
  pull<T>(max: number, waitMs: number, autoAck: boolean, render: (batch: DeliveryBatch) => T, signal?: AbortSignal): Promise<T> {
    const batch = new DeliveryBatch();
    this.#fill(batch, max, null, autoAck, Date.now());
    if (batch.count > 0 || waitMs <= 0 || this.#ended) {
      this.#afterTake();
      return Promise.resolve(render(batch));
    }
    return new Promise<T>((resolve) => {
      const w: Waiter = { max, autoAck, render, resolve: resolve as (v: unknown) => void, timer: undefined };
      // Gone before anything came (timeout, or the caller stopped waiting): an empty answer, nothing taken.
      const giveUp = (): void => {
        const i = this.#waiters.indexOf(w);
        if (i < 0) return;
        this.#waiters.splice(i, 1);
        clearTimeout(w.timer);
        signal?.removeEventListener('abort', giveUp);
        resolve(render(new DeliveryBatch()));
      };
      w.timer = setTimeout(giveUp, waitMs);
      signal?.addEventListener('abort', giveUp, { once: true });
      this.#waiters.push(w);
    });
  }

  /** Answers every waiting pull with nothing (the server is closing). */
  releaseWaiters(): void {
    for (const w of this.#waiters.splice(0)) {
      clearTimeout(w.timer);
      w.resolve(w.render(new DeliveryBatch()));
    }
  }

  /** Delivers what is ready to waiting pulls and consumers with room. Called once per wake. */
  dispatch(): void {
    if (this.#ended) return;
    const now = Date.now();
    while (this.#waiters.length > 0 && this.#hasWork()) {
      const w = this.#waiters[0]!;
      const batch = new DeliveryBatch();
      this.#fill(batch, w.max, null, w.autoAck, now);
      // Nothing ready yet (a disk read under way): the pull keeps waiting for its waitMs.
      if (batch.count === 0) break;
      this.#waiters.shift();
      clearTimeout(w.timer);
      w.resolve(w.render(batch));
    }
    const consumers = this.#consumers;
    let progressed = consumers.length > 0;
    while (progressed && this.#hasWork()) {
      progressed = false;
      // A consumer may detach, or end the subscription, while it takes a batch: re-read the list.
      const n = consumers.length;
      for (let k = 0; k < n && consumers.length > 0; k++) {
        const c = consumers[(this.#rr + k) % consumers.length]!;
        const room = c.prefetch - c.unacked;
        if (room <= 0 || !c.ready()) continue;
        const batch = this.#batch;
        batch.reset();
        this.#fill(batch, room < SLICE ? room : SLICE, c, false, now);
        if (batch.count === 0) break;
        c.deliver(batch);
        batch.reset();
        progressed = true;
      }
      this.#rr = consumers.length > 0 ? (this.#rr + 1) % consumers.length : 0;
    }
    this.#afterTake();
  }

  /** Acks by id. Returns how many were acked; ids not in flight here go to `unknown`. */
  ack(ids: readonly unknown[], unknown: unknown[] | null): number {
    const runTag = this.#host.runTag;
    let n = 0;
    for (let i = 0; i < ids.length; i++) {
      const seq = seqOfId(runTag, ids[i]);
      const e = seq > 0 ? this.#inflight.get(seq) : undefined;
      if (e === undefined) {
        if (unknown !== null) unknown.push(ids[i]);
        continue;
      }
      this.#settle(e);
      n++;
    }
    if (n > 0) this.#acked(n);
    return n;
  }

  /** Acks by seq (embedded consumers); returns how many were in flight. */
  ackSeqs(seqs: readonly number[]): number {
    let n = 0;
    for (let i = 0; i < seqs.length; i++) {
      const e = this.#inflight.get(seqs[i]!);
      if (e === undefined) continue;
      this.#settle(e);
      n++;
    }
    if (n > 0) this.#acked(n);
    return n;
  }

  /** Nacks by id: delivered again after `delayMs` (or dead-lettered when out of attempts). */
  nack(ids: readonly unknown[], delayMs: number, unknown: unknown[] | null): number {
    const runTag = this.#host.runTag;
    const now = Date.now();
    let n = 0;
    for (let i = 0; i < ids.length; i++) {
      const seq = seqOfId(runTag, ids[i]);
      const e = seq > 0 ? this.#inflight.get(seq) : undefined;
      if (e === undefined || e.state !== IN_FLIGHT) {
        if (unknown !== null) unknown.push(ids[i]);
        continue;
      }
      this.#heap.remove(e);
      this.#inFlightCount--;
      if (e.consumer !== null) e.consumer.unacked--;
      e.consumer = null;
      if (e.attempt >= this.config.maxDeliveries) this.#deadLetter(e);
      else if (delayMs > 0) {
        e.state = DELAYED;
        e.deadline = now + delayMs;
        this.#pendingCount++;
        this.#heap.push(e);
        this.#host.watch(this);
      } else this.#toReady(e);
      n++;
    }
    this.#afterTake();
    this.#host.wake(this);
    return n;
  }

  /** Moves the ack deadline of in-flight messages to now + `ackDeadlineMs`. */
  extend(ids: readonly unknown[], ackDeadlineMs: number, unknown: unknown[] | null): number {
    const runTag = this.#host.runTag;
    const deadline = Date.now() + ackDeadlineMs;
    let n = 0;
    for (let i = 0; i < ids.length; i++) {
      const seq = seqOfId(runTag, ids[i]);
      const e = seq > 0 ? this.#inflight.get(seq) : undefined;
      if (e === undefined || e.state !== IN_FLIGHT) {
        if (unknown !== null) unknown.push(ids[i]);
        continue;
      }
      e.deadline = deadline;
      this.#heap.update(e);
      n++;
    }
    return n;
  }

  /** Handles passed deadlines: in-flight messages are redelivered, delayed ones become ready. */
  expire(now: number): void {
    const heap = this.#heap;
    let changed = false;
    for (let e = heap.peek(); e !== undefined && e.deadline <= now; e = heap.peek()) {
      heap.pop();
      changed = true;
      if (e.state === DELAYED) {
        this.#pendingCount--;
        this.#toReady(e);
        continue;
      }
      this.#inFlightCount--;
      if (e.consumer !== null) e.consumer.unacked--;
      e.consumer = null;
      if (e.attempt >= this.config.maxDeliveries) this.#deadLetter(e);
      else this.#toReady(e);
    }
    if (changed) {
      this.#afterTake();
      this.#host.wake(this);
    }
  }

  /** Drops everything retained: nothing is delivered again (purge). */
  purge(): void {
    for (const e of this.#inflight.values()) this.#release(e);
    this.#inflight.clear();
    this.#heap.clear();
    this.#ready.length = 0;
    this.#readyHead = 0;
    this.#inFlightCount = 0;
    this.#pendingCount = 0;
    for (const c of this.#consumers) c.unacked = 0;
    this.#fresh = 0;
    this.#onDisk = false;
    this.#dropChunks();
    this.#cursorPos = this.#host.ring.tail;
    this.#cursorSeq = this.#host.nextSeq;
    this.floorSeq = this.#cursorSeq;
  }

  /** Removes the subscription: consumers are told why, waiting pulls get nothing. */
  end(reason: EndReason): void {
    if (this.#ended) return;
    this.#ended = reason;
    clearTimeout(this.#ttlTimer);
    for (const w of this.#waiters.splice(0)) {
      clearTimeout(w.timer);
      w.resolve(w.render(new DeliveryBatch()));
    }
    for (const c of this.#consumers.splice(0)) c.ended(reason);
    this.#heap.clear();
    this.#inflight.clear();
    this.#ready.length = 0;
    this.#dropChunks();
    this.#held.clear();
  }

  setTtlTimer(ms: number, onExpire: () => void): void {
    this.#ttlTimer = setTimeout(onExpire, Math.max(0, Math.min(ms, 2 ** 31 - 1)));
    this.#ttlTimer.unref();
  }

  stats(): SubscriptionStats {
    const s: SubscriptionStats = {
      name: this.name,
      queue: this.queue,
      backlog: this.backlog,
      inFlight: this.#inFlightCount,
      delivered: this.delivered,
      acked: this.acked,
      redelivered: this.redelivered,
      deadLettered: this.deadLettered,
      dropped: this.dropped,
    };
    if (this.expiresAt !== undefined) s.expiresAt = new Date(this.expiresAt).toISOString();
    if (this.config.maxEvents !== undefined) s.remainingEvents = Math.max(0, this.config.maxEvents - this.ackedEvents);
    return s;
  }

  /** Messages waiting to be delivered: never delivered, or due again. */
  get backlog(): number { return this.#fresh + this.#pendingCount; }
  get inFlight(): number { return this.#inFlightCount; }

  // --- internals -------------------------------------------------------------

  #hasWork(): boolean {
    if (this.#ended) return false;
    return this.#readyHead < this.#ready.length || this.#fresh > 0;
  }

  /** Takes up to `max` messages into `batch`: redeliveries first, then first deliveries in seq order. */
  #fill(batch: DeliveryBatch, max: number, consumer: Consumer | null, autoAck: boolean, now: number): void {
    // Push batches are bounded by bytes too (at least one message); a pull takes what it asked for.
    const maxBytes = consumer === null ? Infinity : PUSH_BYTES;
    const maxEvents = this.config.maxEvents;
    if (autoAck && maxEvents !== undefined) max = Math.min(max, maxEvents - this.ackedEvents);
    const ring = this.#host.ring;
    const data = ring.data;
    const deadline = now + this.config.ackDeadlineMs;
    const ready = this.#ready;
    while (batch.count < max && batch.bytes < maxBytes && this.#readyHead < ready.length) {
      const e = ready[this.#readyHead++]!;
      if (e.state !== READY) continue;
      this.#pendingCount--;
      e.attempt++;
      this.redelivered++;
      this.delivered++;
      if (e.copy !== null) batch.add(e.copy, e.copyStart, e.copyLen, e.attempt, e.seq);
      else batch.add(data, ring.bodyStart(e.pos), ring.bodyLenOf(e.pos), e.attempt, e.seq);
      if (autoAck) {
        this.#settle(e);
        this.#acked(1);
      } else this.#toInFlight(e, consumer, deadline);
    }
    if (this.#readyHead === ready.length) {
      ready.length = 0;
      this.#readyHead = 0;
    }
    if (batch.count >= max || batch.bytes >= maxBytes || this.#fresh === 0) return;
    if (this.#onDisk && !this.#fillFromDisk(batch, max, maxBytes, consumer, autoAck, now, deadline)) return;

    const tail = ring.tail;
    let pos = this.#cursorPos;
    let seq = this.#cursorSeq;
    let autoAcked = 0;
    while (batch.count < max && batch.bytes < maxBytes && this.#fresh > 0 && pos !== tail) {
      pos = ring.settle(pos);
      if (pos === tail) break;
      seq = ring.seqAt(pos);
      if (this.#filter === undefined || this.#eligibleAt(ring, pos)) {
        this.#fresh--;
        this.delivered++;
        this.#host.observeFirstDelivery(ring.publishedAtOf(pos), now);
        batch.add(data, ring.bodyStart(pos), ring.bodyLenOf(pos), 1, seq);
        if (autoAck) autoAcked++;
        else {
          const e = this.#entry();
          e.seq = seq;
          e.pos = pos;
          e.attempt = 1;
          this.#inflight.set(seq, e);
          this.#toInFlight(e, consumer, deadline);
        }
      }
      pos = ring.after(pos, tail);
      seq++;
    }
    // At the tail, or nothing eligible is left (the rest is skipped without being read).
    if (pos === tail || this.#fresh === 0) {
      this.#fresh = 0;
      pos = tail;
      seq = this.#host.nextSeq;
    }
    this.#cursorPos = pos;
    this.#cursorSeq = seq;
    this.#needsFloorWalk = true;
    if (autoAcked > 0) this.#acked(autoAcked);
  }

  /**
   * First deliveries from read-ahead chunks while the cursor is in the spilled range.
   * Returns true when the cursor has reached the ring (the caller goes on from there).
   */
  #fillFromDisk(batch: DeliveryBatch, max: number, maxBytes: number, consumer: Consumer | null, autoAck: boolean, now: number, deadline: number): boolean {
    let autoAcked = 0;
    while (batch.count < max && batch.bytes < maxBytes && this.#fresh > 0) {
      if (this.#cursorSeq >= this.#host.spilledEndSeq) {
        this.#onDisk = false;
        this.#dropChunks();
        this.#cursorPos = this.#host.ringHeadPos;
        break;
      }
      let c = this.#chunk;
      if (c === null || c.pos >= c.buf.length) {
        if (this.#nextChunk === null) {
          // The spent chunk stays as the hint: the read goes on where it ended.
          this.#readAhead();
          break;
        }
        c = this.#chunk = this.#nextChunk;
        this.#nextChunk = null;
      }
      // Keep one read in flight ahead of delivery, so the disk works while the ring of chunks is delivered.
      if (!this.#reading && this.#nextChunk === null) this.#readAhead();
      const buf = c.buf;
      const p = c.pos;
      c.pos += buf.readInt32LE(p + R_LEN);
      const seq = buf.readDoubleLE(p + R_SEQ);
      if (seq < this.#cursorSeq) continue;
      this.#cursorSeq = seq + 1;
      if (buf[p + R_KIND] === KIND_CORRUPT) {
        if (this.#filter === undefined) this.#fresh--;
        this.dropped++;
        continue;
      }
      const body = p + RECORD_HEADER_BYTES;
      if (this.#filter !== undefined) {
        const alen = buf.readInt32LE(p + R_ATTRS_LEN);
        if (alen <= 2 || !this.matches(decodeAttributes(buf, body + buf.readInt32LE(p + R_ATTRS_OFF), alen))) continue;
      }
      const len = buf.readInt32LE(p + R_BODY_LEN);
      this.#fresh--;
      this.delivered++;
      this.#host.observeFirstDelivery(buf.readDoubleLE(p + R_PUBLISHED_AT), now);
      batch.add(buf, body, len, 1, seq);
      if (autoAck) autoAcked++;
      else {
        const e = this.#entry();
        e.seq = seq;
        e.pos = -1;
        this.#held.hold(e, buf, body, len);
        e.attempt = 1;
        this.#inflight.set(seq, e);
        this.#toInFlight(e, consumer, deadline);
      }
    }
    this.#needsFloorWalk = true;
    if (autoAcked > 0) this.#acked(autoAcked);
    return !this.#onDisk;
  }

  /** Reads the chunk after the current one (or at the cursor when there is none). */
  #readAhead(): void {
    if (this.#reading || this.#ended) return;
    this.#reading = true;
    const cur = this.#chunk !== null && this.#chunk.pos < this.#chunk.buf.length ? this.#chunk : null;
    const from = cur !== null ? cur.lastSeq + 1 : this.#cursorSeq;
    const gen = this.#diskGen;
    this.#host.readDisk(from, this.#chunk).then(
      (chunk) => {
        this.#reading = false;
        if (gen !== this.#diskGen) return; // the cursor moved (purge, or back to disk from the ring)
        if (cur !== null) {
          this.#nextChunk = chunk;
          this.#host.wake(this);
          return;
        }
        // Nothing at or after the cursor on disk: the rest is in the ring.
        if (chunk === null) this.#cursorSeq = Math.max(this.#cursorSeq, this.#host.spilledEndSeq);
        this.#chunk = chunk;
        this.#host.wake(this);
      },
      () => {
        // A disk error: try again shortly; the records stay where they are.
        setTimeout(() => {
          this.#reading = false;
          this.#host.wake(this);
        }, 100).unref();
      },
    );
  }

  /**
   * Records below `cutSeq` are leaving the ring for disk: the cursor follows them there and
   * delivered bodies are copied out, so nothing refers to ring bytes that will be reused.
   */
  spilled(cutSeq: number): void {
    if (!this.#onDisk && this.#cursorSeq < cutSeq) {
      this.#onDisk = true;
      this.#dropChunks();
    }
    if (this.#inflight.size === 0) return;
    const ring = this.#host.ring;
    for (const e of this.#inflight.values()) {
      if (e.copy === null && e.seq < cutSeq) {
        const start = ring.bodyStart(e.pos);
        e.copy = Buffer.from(ring.data.subarray(start, start + ring.bodyLenOf(e.pos)));
        e.copyStart = 0;
        e.copyLen = e.copy.length;
        e.pos = -1;
      }
    }
  }

  #dropChunks(): void {
    this.#chunk = null;
    this.#nextChunk = null;
    this.#diskGen++;
    this.#held.retire();
  }

  #toInFlight(e: Entry, consumer: Consumer | null, deadline: number): void {
    e.state = IN_FLIGHT;
    e.consumer = consumer;
    e.deadline = deadline;
    if (consumer !== null) consumer.unacked++;
    this.#inFlightCount++;
    this.#heap.push(e);
    this.#host.watch(this);
  }

  #toReady(e: Entry): void {
    e.state = READY;
    e.consumer = null;
    this.#pendingCount++;
    this.#ready.push(e);
  }

  /** An entry is done here (acked or dead-lettered): forget it. */
  #settle(e: Entry): void {
    if (e.state === IN_FLIGHT) {
      this.#heap.remove(e);
      this.#inFlightCount--;
      if (e.consumer !== null) e.consumer.unacked--;
    } else if (e.state === DELAYED) {
      this.#heap.remove(e);
      this.#pendingCount--;
    } else if (e.state === READY) this.#pendingCount--;
    this.#inflight.delete(e.seq);
    if (e.seq === this.floorSeq) this.#needsFloorWalk = true;
    this.#release(e);
  }

  #deadLetter(e: Entry): void {
    const ring = this.#host.ring;
    const ok = e.copy !== null
      ? this.#host.deadLetter(this, e.copy, e.copyStart, e.copyLen, e.attempt)
      : this.#host.deadLetter(this, ring.data, ring.bodyStart(e.pos), ring.bodyLenOf(e.pos), e.attempt);
    if (ok) this.deadLettered++;
    else this.dropped++;
    this.#inflight.delete(e.seq);
    if (e.seq === this.floorSeq) this.#needsFloorWalk = true;
    this.#release(e);
  }

  #acked(n: number): void {
    this.acked += n;
    if (this.config.maxEvents !== undefined) {
      this.ackedEvents += n;
      if (this.ackedEvents >= this.config.maxEvents) {
        this.#afterTake();
        this.#host.exhausted(this);
        return;
      }
    }
    this.#afterTake();
    if (this.#consumers.length > 0 || this.#waiters.length > 0) this.#host.wake(this);
  }

  /** Moves the ack floor up past everything acked, and tells the queue when it moved. */
  #afterTake(): void {
    if (!this.#needsFloorWalk) return;
    this.#needsFloorWalk = false;
    const before = this.floorSeq;
    let f = before;
    const cursor = this.#cursorSeq;
    if (this.#inflight.size === 0) f = cursor;
    else while (f < cursor && !this.#inflight.has(f)) f++;
    if (f !== before) {
      this.floorSeq = f;
      this.#host.floorAdvanced();
    }
  }

  #eligibleAt(ring: Ring, pos: number): boolean {
    const f = this.#filter;
    if (f === undefined) return true;
    const len = ring.attrsLenOf(pos);
    if (len <= 2) return false;
    return this.matches(decodeAttributes(ring.data, ring.bodyStart(pos) + ring.attrsOffOf(pos), len));
  }

  #entry(): Entry {
    return this.#pool.pop() ?? new Entry();
  }

  #release(e: Entry): void {
    e.consumer = null;
    this.#held.release(e);
    e.copy = null;
    e.state = 0;
    e.heapIdx = -1;
    if (this.#pool.length < 4096) this.#pool.push(e);
  }
}
