import {
  ALIGN, H_CAPACITY, H_HEAD, H_MAX_CAPACITY, H_HEAD_SEQ_HI, H_HEAD_SEQ_LO, H_MAGIC, H_TAIL, H_TAIL_SEQ_HI, H_TAIL_SEQ_LO,
  HEADER_BYTES, HEADER_SLOTS, KIND_MESSAGE, KIND_PADDING, MAGIC, MAX_CAPACITY, MIN_CAPACITY,
  R_ATTRS_LEN, R_ATTRS_OFF, R_BODY_LEN, R_BYTES, R_FLAGS, R_KIND, R_LEN, R_PUBLISHED_AT, R_PUBLISHER,
  R_PUBLISHER_SEQ, R_SEQ, RECORD_HEADER_BYTES, align, storageBytes,
} from './layout';

const TWO_32 = 0x1_0000_0000;

/**
 * A single-writer ring of variable-length records in a SharedArrayBuffer.
 *
 * Positions are byte offsets into the data area. Records are written once and read in
 * place; a record never splits across the end (a padding record fills the rest and the
 * writer wraps). The writer claims space, writes records, then `publish()`es them all
 * with one ordered store of TAIL. Space is returned only from the head, by `release()`.
 * Any thread may attach to the same buffer; exactly one writes and one releases.
 *
 * A ring made with a larger `maxCapacity` starts small and grows its buffer in place
 * (a growable SharedArrayBuffer) when a record would not fit before the end and the
 * writer has not wrapped: positions never move, so readers and in-flight references stay valid.
 */
export class Ring {
  readonly sab: SharedArrayBuffer;
  readonly maxCapacity: number;
  /** The data area, as a Buffer so strings encode straight into it. Replaced when the ring grows. */
  data!: Buffer;
  #cap = 0;
  readonly #hdr: Int32Array;
  #dv!: DataView;
  /** Asked before growing by `extra` bytes; false keeps the ring at its size (e.g. a memory budget). */
  mayGrow: (extra: number) => boolean = () => true;
  /** The writer's tail: ahead of the published TAIL while a batch is being written. */
  #writeTail: number;

  private constructor(sab: SharedArrayBuffer) {
    this.sab = sab;
    this.#hdr = new Int32Array(sab, 0, HEADER_SLOTS);
    if (Atomics.load(this.#hdr, H_MAGIC) !== MAGIC) throw new Error('not a Spillway ring');
    this.maxCapacity = this.#hdr[H_MAX_CAPACITY]!;
    this.#resize(Atomics.load(this.#hdr, H_CAPACITY));
    this.#writeTail = Atomics.load(this.#hdr, H_TAIL);
  }

  /** A new, empty ring with `capacity` data bytes (rounded up to 8), growable up to `maxCapacity`. */
  static create(capacity: number, firstSeq = 1, maxCapacity = capacity): Ring {
    const cap = clampCapacity(capacity);
    const max = Math.max(cap, clampCapacity(maxCapacity));
    const sab = max > cap
      ? new SharedArrayBuffer(storageBytes(cap), { maxByteLength: storageBytes(max) })
      : new SharedArrayBuffer(storageBytes(cap));
    const hdr = new Int32Array(sab, 0, HEADER_SLOTS);
    hdr[H_CAPACITY] = cap;
    hdr[H_MAX_CAPACITY] = max;
    setSeq(hdr, H_TAIL_SEQ_LO, H_TAIL_SEQ_HI, firstSeq);
    setSeq(hdr, H_HEAD_SEQ_LO, H_HEAD_SEQ_HI, firstSeq);
    Atomics.store(hdr, H_MAGIC, MAGIC);
    return new Ring(sab);
  }

  /** A view of a ring made elsewhere (another thread passed the buffer). */
  static attach(sab: SharedArrayBuffer): Ring {
    return new Ring(sab);
  }

  /** Data bytes now (it may grow). */
  get capacity(): number { return this.#cap; }

  /** The largest body one record can hold in this ring at its largest. */
  get maxBodyBytes(): number {
    return this.maxCapacity - 2 * ALIGN - RECORD_HEADER_BYTES;
  }

  get head(): number { return Atomics.load(this.#hdr, H_HEAD); }

  /** The published tail. Loading it also picks up growth made by a writer on another thread. */
  get tail(): number {
    const t = Atomics.load(this.#hdr, H_TAIL);
    const cap = this.#hdr[H_CAPACITY]!;
    if (cap !== this.#cap) this.#resize(cap);
    return t;
  }

  get headSeq(): number { return getSeq(this.#hdr, H_HEAD_SEQ_LO, H_HEAD_SEQ_HI); }
  get tailSeq(): number { return getSeq(this.#hdr, H_TAIL_SEQ_LO, H_TAIL_SEQ_HI); }

  /** Bytes between head and the published tail, padding included. */
  get usedBytes(): number {
    const h = this.head;
    const t = this.tail;
    return t >= h ? t - h : this.#cap - h + t;
  }

  /** Bytes a record with `bodyLen` body bytes occupies. */
  static recordBytes(bodyLen: number): number {
    return align(RECORD_HEADER_BYTES + bodyLen);
  }

  /**
   * Claims room for a record with `bodyLen` body bytes after everything claimed so far.
   * Returns the record's position, or -1 when the ring has no room (nothing is changed).
   * The body goes at `pos + RECORD_HEADER_BYTES`; `writeHeader()` completes the record.
   */
  claim(bodyLen: number): number {
    // align() works in 32-bit integers: a length of 2^31 or more, a negative one or NaN would
    // come out as a small or negative `need` and be "placed". Nothing longer than the data area fits.
    if (!(bodyLen >= 0 && bodyLen <= this.maxCapacity)) return -1;
    const need = align(RECORD_HEADER_BYTES + bodyLen);
    const cap = this.#cap;
    const head = Atomics.load(this.#hdr, H_HEAD);
    const t = this.#writeTail;
    if (t >= head) {
      const end = t + need;
      // Ending exactly at the end wraps the tail to 0, which must not meet a head at 0.
      if (end < cap || (end === cap && head > 0)) return t;
      // Wrap while the ring is mostly empty; grow (if it may) once it is a quarter full, so a
      // busy queue gets room before a burst and an idle one stays small.
      const roomAtFront = need < head;
      if ((!roomAtFront || (t - head) * 4 > cap) && this.#grow(end + ALIGN)) return t;
      if (!roomAtFront) return -1;
      this.#dv.setInt32(t + R_LEN, cap - t, true);
      this.#dv.setUint8(t + R_KIND, KIND_PADDING);
      this.#writeTail = 0;
      return 0;
    }
    return need < head - t ? t : -1;
  }

  /** Writes a claimed record's header and moves the writer's tail past it. Not yet visible. */
  writeHeader(
    pos: number, bodyLen: number, seq: number, publishedAt: number, publisherSeq: number,
    publisher: number, bytes: number, attrsOff: number, attrsLen: number, flags: number,
  ): void {
    const dv = this.#dv;
    const len = align(RECORD_HEADER_BYTES + bodyLen);
    dv.setInt32(pos + R_LEN, len, true);
    dv.setUint8(pos + R_KIND, KIND_MESSAGE);
    dv.setUint8(pos + R_FLAGS, flags);
    dv.setFloat64(pos + R_SEQ, seq, true);
    dv.setFloat64(pos + R_PUBLISHED_AT, publishedAt, true);
    dv.setFloat64(pos + R_PUBLISHER_SEQ, publisherSeq, true);
    dv.setInt32(pos + R_PUBLISHER, publisher, true);
    dv.setInt32(pos + R_BYTES, bytes, true);
    dv.setInt32(pos + R_BODY_LEN, bodyLen, true);
    dv.setInt32(pos + R_ATTRS_OFF, attrsOff, true);
    dv.setInt32(pos + R_ATTRS_LEN, attrsLen, true);
    const next = pos + len;
    this.#writeTail = next === this.#cap ? 0 : next;
  }

  /** Makes every record written since the last publish visible to readers, at once. */
  publish(nextSeq: number): void {
    setSeq(this.#hdr, H_TAIL_SEQ_LO, H_TAIL_SEQ_HI, nextSeq);
    Atomics.store(this.#hdr, H_TAIL, this.#writeTail);
  }

  /** Forgets records written since the last publish (a refused batch leaves no trace). */
  rollback(): void {
    this.#writeTail = Atomics.load(this.#hdr, H_TAIL);
  }

  /** Returns the space before `pos` (a record position or the tail) to the writer. */
  release(pos: number, seq: number): void {
    setSeq(this.#hdr, H_HEAD_SEQ_LO, H_HEAD_SEQ_HI, seq);
    Atomics.store(this.#hdr, H_HEAD, pos);
  }

  /**
   * Starts an empty ring again at position 0, so a batch never has to wrap around an empty
   * ring. Only for the owner (writer and releaser) when no reader holds a position but the tail.
   */
  rewind(): boolean {
    const t = Atomics.load(this.#hdr, H_TAIL);
    if (t === 0 || Atomics.load(this.#hdr, H_HEAD) !== t || this.#writeTail !== t) return false;
    Atomics.store(this.#hdr, H_TAIL, 0);
    Atomics.store(this.#hdr, H_HEAD, 0);
    this.#writeTail = 0;
    return true;
  }

  /** The message record at or after `pos`, skipping padding; `pos` must not be the tail. */
  settle(pos: number): number {
    return this.#dv.getUint8(pos + R_KIND) === KIND_PADDING ? 0 : pos;
  }

  /** Position after the record at `pos`, given the tail the caller loaded. */
  after(pos: number, tail: number): number {
    let next = pos + this.#dv.getInt32(pos + R_LEN, true);
    if (next === this.#cap) next = 0;
    return next === tail ? next : this.settle(next);
  }

  seqAt(pos: number): number { return this.#dv.getFloat64(pos + R_SEQ, true); }
  publishedAtOf(pos: number): number { return this.#dv.getFloat64(pos + R_PUBLISHED_AT, true); }
  publisherSeqOf(pos: number): number { return this.#dv.getFloat64(pos + R_PUBLISHER_SEQ, true); }
  publisherOf(pos: number): number { return this.#dv.getInt32(pos + R_PUBLISHER, true); }
  bytesOf(pos: number): number { return this.#dv.getInt32(pos + R_BYTES, true); }
  flagsOf(pos: number): number { return this.#dv.getUint8(pos + R_FLAGS); }
  lengthOf(pos: number): number { return this.#dv.getInt32(pos + R_LEN, true); }
  bodyLenOf(pos: number): number { return this.#dv.getInt32(pos + R_BODY_LEN, true); }
  attrsOffOf(pos: number): number { return this.#dv.getInt32(pos + R_ATTRS_OFF, true); }
  attrsLenOf(pos: number): number { return this.#dv.getInt32(pos + R_ATTRS_LEN, true); }
  /** Offset in `data` where the body of the record at `pos` starts. */
  bodyStart(pos: number): number { return pos + RECORD_HEADER_BYTES; }

  /** Encodes `text` (`len` UTF-8 bytes) as the body of the claimed record at `pos`. */
  writeBody(pos: number, text: string, len: number): void {
    // Buffer#utf8Write skips the argument juggling of the public write(): this is per message.
    (this.data as Utf8Writable).utf8Write(text, pos + RECORD_HEADER_BYTES, len);
  }

  /** Grows (doubling, up to the maximum) so that `minCap` bytes fit; false when it may not. */
  #grow(minCap: number): boolean {
    if (minCap > this.maxCapacity) return false;
    let cap = this.#cap;
    while (cap < minCap) cap *= 2;
    cap = Math.min(align(cap), this.maxCapacity);
    if (!this.mayGrow(cap - this.#cap)) return false;
    this.sab.grow(storageBytes(cap));
    // Readers see the new size no later than the tail that uses it (TAIL is stored after this).
    this.#hdr[H_CAPACITY] = cap;
    this.#resize(cap);
    return true;
  }

  #resize(cap: number): void {
    this.#cap = cap;
    this.data = Buffer.from(this.sab, HEADER_BYTES, cap);
    this.#dv = new DataView(this.sab, HEADER_BYTES, cap);
  }
}

type Utf8Writable = Buffer & { utf8Write(text: string, offset: number, length: number): number };

function clampCapacity(n: number): number {
  return align(Math.max(MIN_CAPACITY, Math.min(n, MAX_CAPACITY)));
}

function setSeq(hdr: Int32Array, lo: number, hi: number, seq: number): void {
  hdr[lo] = seq % TWO_32 | 0;
  hdr[hi] = Math.floor(seq / TWO_32);
}

function getSeq(hdr: Int32Array, lo: number, hi: number): number {
  return (hdr[hi]! * TWO_32) + (hdr[lo]! >>> 0);
}
