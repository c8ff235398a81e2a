import { Ring } from '../../src/queue/ring';
import * as layout from '../../src/queue/layout';
import {
  H_CAPACITY, H_HEAD, H_MAGIC, H_MAX_CAPACITY, H_TAIL, HEADER_BYTES, HEADER_SLOTS, KIND_MESSAGE, KIND_PADDING, MAGIC,
  R_KIND, RECORD_HEADER_BYTES, storageBytes,
} from '../../src/queue/layout';

/** The first header slot the ring does not use (every `H_*` slot constant is below it). */
const FIRST_FREE_SLOT = 1 + Math.max(...Object.entries(layout)
  .filter(([k, v]) => k.startsWith('H_') && typeof v === 'number').map(([, v]) => v as number));

/** Seeded PRNG (mulberry32): same seed, same sequence; floats in [0, 1). */
function mulberry32(seed: number): () => number {
  let a = seed | 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randInt(rnd: () => number, lo: number, hi: number): number {
  return lo + Math.floor(rnd() * (hi - lo + 1));
}

/** A per-record base for the body pattern of the record with `seq`, in a run seeded with `seed`. */
function patternBase(seed: number, seq: number): number {
  return Math.imul((seq % 0x1_0000_0000) ^ seed, 0x9e3779b1) ^ Math.floor(seq / 0x1_0000_0000);
}

/** Byte `i` of a body with pattern base `base` (xorshift, no Math.imul: that is slow under Jest's vm). */
function patternByte(base: number, i: number): number {
  let x = (base + i * 0x3c6ef35) | 0;
  x ^= x << 13;
  x ^= x >>> 17;
  x ^= x << 5;
  return (x >>> 8) & 0xff;
}

/** Written into the unused tail of each record (between body end and the aligned length). */
const SLACK_CANARY = 0xa5;

/** The header fields a record with `seq` and `bodyLen` is written with, so reads can be checked. */
function fieldsOf(seq: number, bodyLen: number) {
  return {
    publishedAt: 1_700_000_000_000 + seq,
    publisherSeq: seq % 3 === 0 ? Number.NaN : seq * 7,
    publisher: seq % 0x7fff,
    bytes: bodyLen * 2 + 1,
    attrsOff: bodyLen >> 1,
    attrsLen: bodyLen - (bodyLen >> 1),
    flags: seq & 0xff,
  };
}

/** Fills a claimed record's body and slack, then writes its header. */
function fill(ring: Ring, pos: number, bodyLen: number, seq: number, seed = 0): void {
  const start = ring.bodyStart(pos);
  const base = patternBase(seed, seq);
  for (let i = 0; i < bodyLen; i++) ring.data[start + i] = patternByte(base, i);
  const end = pos + Ring.recordBytes(bodyLen);
  for (let i = start + bodyLen; i < end; i++) ring.data[i] = SLACK_CANARY;
  const f = fieldsOf(seq, bodyLen);
  ring.writeHeader(pos, bodyLen, seq, f.publishedAt, f.publisherSeq, f.publisher, f.bytes, f.attrsOff, f.attrsLen, f.flags);
}

/** Claims and writes one record; returns its position or -1. */
function put(ring: Ring, bodyLen: number, seq: number, seed = 0): number {
  const pos = ring.claim(bodyLen);
  if (pos >= 0) fill(ring, pos, bodyLen, seq, seed);
  return pos;
}

interface Seen { pos: number; seq: number; bodyLen: number }

/** Walks the published records the way a reader does: settle, then after() until the tail. */
function readAll(ring: Ring): Seen[] {
  const tail = ring.tail;
  let pos = ring.head;
  const out: Seen[] = [];
  if (pos === tail) return out;
  pos = ring.settle(pos);
  while (pos !== tail) {
    if (out.length > ring.capacity / 8) throw new Error('walk from head never reaches the tail');
    out.push({ pos, seq: ring.seqAt(pos), bodyLen: ring.bodyLenOf(pos) });
    pos = ring.after(pos, tail);
  }
  return out;
}

/** Throws (with a precise message) unless the record at `pos` is intact. */
function verifyRecord(ring: Ring, pos: number, seq: number, bodyLen: number, seed = 0): void {
  const fail = (what: string) => { throw new Error(`record seq ${seq} at ${pos}: ${what}`); };
  const len = Ring.recordBytes(bodyLen);
  if (pos < 0 || pos % 8 !== 0 || pos + len > ring.capacity) fail(`out of bounds (len ${len}, capacity ${ring.capacity})`);
  if (ring.data[pos + R_KIND] !== KIND_MESSAGE) fail(`kind ${ring.data[pos + R_KIND]}`);
  if (ring.lengthOf(pos) !== len) fail(`length ${ring.lengthOf(pos)} != ${len}`);
  if (ring.seqAt(pos) !== seq) fail(`seq ${ring.seqAt(pos)}`);
  if (ring.bodyLenOf(pos) !== bodyLen) fail(`bodyLen ${ring.bodyLenOf(pos)} != ${bodyLen}`);
  const f = fieldsOf(seq, bodyLen);
  if (ring.publishedAtOf(pos) !== f.publishedAt) fail('publishedAt');
  if (!Object.is(ring.publisherSeqOf(pos), f.publisherSeq)) fail('publisherSeq');
  if (ring.publisherOf(pos) !== f.publisher) fail('publisher');
  if (ring.bytesOf(pos) !== f.bytes) fail('bytes');
  if (ring.attrsOffOf(pos) !== f.attrsOff || ring.attrsLenOf(pos) !== f.attrsLen) fail('attrs');
  if (ring.flagsOf(pos) !== f.flags) fail('flags');
  const start = ring.bodyStart(pos);
  if (start !== pos + RECORD_HEADER_BYTES) fail('bodyStart');
  const base = patternBase(seed, seq);
  for (let i = 0; i < bodyLen; i++) {
    if (ring.data[start + i] !== patternByte(base, i)) fail(`body byte ${i} is ${ring.data[start + i]}`);
  }
  for (let i = start + bodyLen; i < pos + len; i++) {
    if (ring.data[i] !== SLACK_CANARY) fail(`slack byte at ${i} overwritten`);
  }
}

/** First and last index where two equal-length buffers differ, or null. */
function diffRange(a: Uint8Array, b: Uint8Array): [number, number] | null {
  let first = -1;
  let last = -1;
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) {
      if (first < 0) first = i;
      last = i;
    }
  }
  return first < 0 ? null : [first, last];
}

/** Releases the first `n` published records, as a reader that has consumed them does. */
function releaseFirst(ring: Ring, n: number): void {
  const recs = readAll(ring);
  if (n > recs.length) throw new Error(`only ${recs.length} records to release`);
  if (n === recs.length) ring.release(ring.tail, ring.tailSeq);
  else ring.release(recs[n]!.pos, recs[n]!.seq);
}

describe('ring', () => {
  test('ring - a new ring is empty, with its header set and the unused header slots zero', () => {
    const ring = Ring.create(256, 42);
    const hdr = new Int32Array(ring.sab, 0, HEADER_SLOTS);
    expect(ring.sab.byteLength).toBe(HEADER_BYTES + 256);
    expect(ring.capacity).toBe(256);
    expect(ring.data.length).toBe(256);
    expect(hdr[H_MAGIC]).toBe(MAGIC);
    expect(hdr[H_CAPACITY]).toBe(256);
    expect([ring.head, ring.tail, ring.usedBytes]).toEqual([0, 0, 0]);
    expect([ring.headSeq, ring.tailSeq]).toEqual([42, 42]);
    expect(readAll(ring)).toEqual([]);
    expect(hdr[H_MAX_CAPACITY]).toBe(256);
    expect(FIRST_FREE_SLOT).toBeLessThan(HEADER_SLOTS);
    expect(Array.from(hdr.subarray(FIRST_FREE_SLOT))).toEqual(new Array(HEADER_SLOTS - FIRST_FREE_SLOT).fill(0));
  });

  test('ring - capacity is clamped to the minimum and rounded up to 8', () => {
    expect(Ring.create(1).capacity).toBe(256);
    expect(Ring.create(1001).capacity).toBe(1008);
    expect(Ring.create(1001).sab.byteLength).toBe(storageBytes(1008));
    expect(Ring.create(4096).maxBodyBytes).toBe(4096 - 16 - RECORD_HEADER_BYTES);
  });

  test('ring - attach sees what the creator published and refuses a buffer that is not a ring', () => {
    const ring = Ring.create(256);
    expect(put(ring, 10, 1)).toBe(0);
    ring.publish(2);
    const other = Ring.attach(ring.sab);
    expect(other.capacity).toBe(256);
    expect(readAll(other)).toEqual([{ pos: 0, seq: 1, bodyLen: 10 }]);
    verifyRecord(other, 0, 1, 10);
    expect(() => Ring.attach(new SharedArrayBuffer(storageBytes(256)))).toThrow('not a Spillway ring');
  });

  test('ring - written records stay invisible until publish, then all appear at once', () => {
    const ring = Ring.create(512);
    expect(put(ring, 0, 1)).toBe(0);
    expect(put(ring, 9, 2)).toBe(56);
    expect(put(ring, 40, 3)).toBe(56 + 72);
    expect([ring.tail, ring.tailSeq, readAll(ring)]).toEqual([0, 1, []]);
    ring.publish(4);
    expect([ring.tail, ring.tailSeq]).toEqual([56 + 72 + 96, 4]);
    expect(readAll(ring)).toEqual([
      { pos: 0, seq: 1, bodyLen: 0 },
      { pos: 56, seq: 2, bodyLen: 9 },
      { pos: 128, seq: 3, bodyLen: 40 },
    ]);
    expect(ring.usedBytes).toBe(224);
  });

  test('ring - full when the next record would make tail meet head; a full ring never looks empty', () => {
    const ring = Ring.create(256);
    // 64-byte records: three fit; a fourth would end at 256 and wrap the tail onto head 0.
    expect([put(ring, 8, 1), put(ring, 8, 2), put(ring, 8, 3)]).toEqual([0, 64, 128]);
    expect(ring.claim(8)).toBe(-1);
    expect(ring.claim(1)).toBe(-1); // rounds up to 64 bytes too
    expect(ring.claim(0)).toBe(192); // 56 bytes still fit, leaving a gap before the end
    ring.publish(4);
    expect(ring.claim(8)).toBe(-1);
    expect([ring.head, ring.tail, ring.usedBytes]).toEqual([0, 192, 192]);

    // Free one: now a record may end exactly at the end (tail wraps to 0, head is 64).
    releaseFirst(ring, 1);
    expect(put(ring, 8, 4)).toBe(192);
    ring.publish(5);
    expect([ring.head, ring.tail, ring.usedBytes]).toEqual([64, 0, 192]);
    // Tail 0, head 64: one more 64-byte record would make tail == head.
    expect(ring.claim(8)).toBe(-1);
    expect(ring.head).not.toBe(ring.tail);
    expect(readAll(ring).map((r) => r.seq)).toEqual([2, 3, 4]);
  });

  test('ring - a record that exactly reaches the end wraps the tail to 0 without padding', () => {
    const ring = Ring.create(256);
    expect(put(ring, 64, 1)).toBe(0); // 120 bytes
    ring.publish(2);
    releaseFirst(ring, 1); // head = tail = 120
    expect(put(ring, 256 - 120 - RECORD_HEADER_BYTES, 2)).toBe(120); // 136 bytes: ends at 256
    ring.publish(3);
    expect([ring.head, ring.tail, ring.usedBytes]).toEqual([120, 0, 136]);
    expect(readAll(ring)).toEqual([{ pos: 120, seq: 2, bodyLen: 80 }]);
    verifyRecord(ring, 120, 2, 80);
    // The next record starts at 0; the walk goes from 120 through the end to 0.
    expect(put(ring, 0, 3)).toBe(0);
    ring.publish(4);
    expect(readAll(ring)).toEqual([{ pos: 120, seq: 2, bodyLen: 80 }, { pos: 0, seq: 3, bodyLen: 0 }]);
    expect(ring.usedBytes).toBe(136 + 56);
  });

  test('ring - a record that does not fit before the end goes to 0 behind a padding record', () => {
    const ring = Ring.create(256);
    expect(put(ring, 100, 1)).toBe(0); // 160 bytes
    expect(put(ring, 8, 2)).toBe(160); // 64 bytes, ends at 224
    ring.publish(3);
    releaseFirst(ring, 1); // head 160
    const before = Buffer.from(ring.data);
    // 56 bytes do not fit in 224..256 (32 bytes): padding at 224, record at 0.
    expect(ring.claim(0)).toBe(0);
    // The claim wrote only the padding header.
    const changed = diffRange(before, ring.data);
    expect(changed).not.toBeNull();
    expect(changed![0]).toBeGreaterThanOrEqual(224);
    expect(changed![1]).toBeLessThan(224 + 8);
    expect(ring.data[224 + R_KIND]).toBe(KIND_PADDING);
    expect(ring.lengthOf(224)).toBe(32);
    fill(ring, 0, 0, 3);
    ring.publish(4);
    expect([ring.head, ring.tail]).toEqual([160, 56]);
    expect(ring.usedBytes).toBe(64 + 32 + 56); // the record at 160, the padding, the record at 0
    expect(readAll(ring)).toEqual([{ pos: 160, seq: 2, bodyLen: 8 }, { pos: 0, seq: 3, bodyLen: 0 }]);
    // A reader caught up at the old tail (224) settles over the padding to 0.
    expect(ring.settle(224)).toBe(0);
    expect(ring.after(160, ring.tail)).toBe(0);
  });

  test('ring - a wrap that would reach head is refused and changes nothing', () => {
    const ring = Ring.create(256);
    expect(put(ring, 8, 1)).toBe(0); // 64
    expect(put(ring, 100, 2)).toBe(64); // 160, ends at 224
    ring.publish(3);
    releaseFirst(ring, 1); // head 64
    const before = Buffer.from(ring.data);
    expect(ring.claim(8)).toBe(-1); // 64 bytes at 0 would reach head 64
    expect(ring.data.equals(before)).toBe(true);
    expect(ring.claim(0)).toBe(0); // 56 bytes at 0 leave a gap before head
  });

  test('ring - rollback leaves nothing: no record, no tail move, and the space is claimed again', () => {
    const ring = Ring.create(256);
    expect(put(ring, 20, 1)).toBe(0); // 80
    ring.publish(2);
    expect(put(ring, 20, 2)).toBe(80);
    expect(put(ring, 20, 3)).toBe(160);
    ring.rollback();
    expect([ring.tail, ring.tailSeq, ring.usedBytes]).toEqual([80, 2, 80]);
    ring.publish(2); // publishing after a rollback shows nothing new
    expect(readAll(ring)).toEqual([{ pos: 0, seq: 1, bodyLen: 20 }]);
    expect(ring.claim(20)).toBe(80);

    // A rolled-back wrap: the writer's tail returns to the published tail, not to 0.
    const ring2 = Ring.create(256);
    expect(put(ring2, 80, 1)).toBe(0); // 136 bytes
    expect(put(ring2, 8, 2)).toBe(136); // 64 bytes, ends at 200
    ring2.publish(3);
    releaseFirst(ring2, 1); // head 136
    expect(ring2.claim(8)).toBe(0); // 64 bytes do not fit in 200..256: padding at 200, record at 0
    fill(ring2, 0, 8, 3);
    expect(put(ring2, 0, 4)).toBe(64); // and a second record after it
    ring2.rollback();
    expect([ring2.tail, ring2.tailSeq]).toEqual([200, 3]);
    ring2.publish(3);
    expect(readAll(ring2)).toEqual([{ pos: 136, seq: 2, bodyLen: 8 }]);
    expect(ring2.usedBytes).toBe(64);
    expect(ring2.claim(0)).toBe(200); // 56 bytes fit exactly at the old tail again
  });

  test('ring - release frees space from the head and records its seq', () => {
    const ring = Ring.create(256);
    expect([put(ring, 8, 10), put(ring, 8, 11), put(ring, 8, 12)]).toEqual([0, 64, 128]);
    ring.publish(13);
    expect(ring.claim(8)).toBe(-1);
    ring.release(64, 11);
    expect([ring.head, ring.headSeq, ring.usedBytes]).toEqual([64, 11, 128]);
    expect(readAll(ring).map((r) => r.seq)).toEqual([11, 12]);
    expect(put(ring, 8, 13)).toBe(192);
    ring.publish(14);
    ring.release(ring.tail, ring.tailSeq);
    expect([ring.head, ring.tail, ring.headSeq, ring.usedBytes]).toEqual([0, 0, 14, 0]);
    expect(readAll(ring)).toEqual([]);
    // Empty again: three records fit once more.
    expect([put(ring, 8, 14), put(ring, 8, 15), put(ring, 8, 16)]).toEqual([0, 64, 128]);
  });

  test('ring - a record bigger than the ring is refused and changes nothing', () => {
    const ring = Ring.create(256);
    const hdr = new Int32Array(ring.sab, 0, HEADER_SLOTS);
    const before = Buffer.from(ring.sab);
    for (const len of [257, 256, 256 - RECORD_HEADER_BYTES, 256 - RECORD_HEADER_BYTES - 7, 1 << 20,
      2 ** 31 - RECORD_HEADER_BYTES, 2 ** 31, 2 ** 32 - RECORD_HEADER_BYTES, 2 ** 32, -1, -RECORD_HEADER_BYTES,
      Number.NaN, Number.POSITIVE_INFINITY]) {
      expect([len, ring.claim(len)]).toEqual([len, -1]);
    }
    expect(Buffer.from(ring.sab).equals(before)).toBe(true);
    expect([hdr[H_HEAD], hdr[H_TAIL]]).toEqual([0, 0]);
    // The largest advertised body fits an empty ring at 0, and one record of it is visible.
    expect(put(ring, ring.maxBodyBytes, 1)).toBe(0);
    ring.publish(2);
    expect(readAll(ring)).toEqual([{ pos: 0, seq: 1, bodyLen: ring.maxBodyBytes }]);
    verifyRecord(ring, 0, 1, ring.maxBodyBytes);
  });

  test('ring - a record of up to half the capacity fits an empty ring wherever head is', () => {
    const cap = 256;
    const half = cap / 2 - RECORD_HEADER_BYTES; // body of a cap/2-byte record
    // Head/tail positions an empty ring can be at: 0, and any aligned offset >= one minimal record.
    for (let at = RECORD_HEADER_BYTES; at < cap; at += 8) {
      const ring = Ring.create(cap);
      expect(put(ring, at - RECORD_HEADER_BYTES, 1)).toBe(0);
      ring.publish(2);
      releaseFirst(ring, 1);
      expect([ring.head, ring.tail, ring.usedBytes]).toEqual([at, at, 0]);
      const pos = put(ring, half, 2);
      expect([at, pos >= 0]).toEqual([at, true]);
      ring.publish(3);
      expect(readAll(ring)).toEqual([{ pos, seq: 2, bodyLen: half }]);
      verifyRecord(ring, pos, 2, half);
    }
  });

  test('ring - seqs beyond 2^32 round-trip through headSeq, tailSeq and records', () => {
    const seqs = [2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, 2 ** 32 + 2 ** 31, 2 ** 33 - 1, 3 * 2 ** 32 + 12345,
      2 ** 40 + 7, 2 ** 52 + 3, Number.MAX_SAFE_INTEGER];
    for (const first of seqs) {
      const ring = Ring.create(256, first);
      expect([ring.headSeq, ring.tailSeq]).toEqual([first, first]);
      expect(put(ring, 3, first)).toBe(0);
      ring.publish(first + 1 <= Number.MAX_SAFE_INTEGER ? first + 1 : first);
      expect(ring.seqAt(0)).toBe(first);
      for (const s of seqs) {
        ring.publish(s);
        ring.release(0, s);
        expect([ring.tailSeq, ring.headSeq]).toEqual([s, s]);
      }
    }
  });

  test.each([
    [256, 0x5eed0001, 1],
    [264, 0x5eed0002, 2 ** 32 - 300],
    [392, 0x5eed0003, 1],
    [512, 0x5eed0004, 2 ** 32 - 1000],
    [1000, 0x5eed0005, 1],
    [1024, 0x5eed0006, 7 * 2 ** 32 - 5],
    [1024, 0x5eed0007, 1],
  ])('ring - random claims, publishes, rollbacks and releases keep every live record intact (capacity %i, seed %i)',
    (capacity, seed, firstSeq) => {
      const rnd = mulberry32(seed);
      const ring = Ring.create(capacity, firstSeq);
      const cap = ring.capacity;
      const hdr = new Int32Array(ring.sab, 0, HEADER_SLOTS);
      // Canaries in the header slots the ring does not use; the used ones must keep their values too.
      for (let i = FIRST_FREE_SLOT; i < HEADER_SLOTS; i++) hdr[i] = (0x6a09e667 ^ Math.imul(i, 0x9e3779b1)) | 0;
      const headerCanaries = Array.from(hdr.subarray(FIRST_FREE_SLOT));

      type Item = { pad: boolean; pos: number; len: number; seq: number; bodyLen: number };
      let published: Item[] = [];
      let pending: Item[] = [];
      let head = 0; // model HEAD
      let tail = 0; // model published TAIL
      let wt = 0; // model writer's tail
      let nextSeq = firstSeq; // seq of the next record to write
      let pubSeq = firstSeq; // seq published with TAIL
      const stats = { claims: 0, refused: 0, wraps: 0, exactEnds: 0, rollbacks: 0, releases: 0, maxUsed: 0 };

      const drawBodyLen = (): number => {
        const r = rnd();
        if (r < 0.55) return randInt(rnd, 0, 48);
        if (r < 0.9) return randInt(rnd, 0, cap >> 1);
        if (r < 0.99) return randInt(rnd, 0, cap);
        return rnd() < 0.5 ? 2 ** 31 + randInt(rnd, 0, 100) : -randInt(rnd, 1, 100);
      };

      const check = (step: number): void => {
        try {
          if (ring.head !== head || ring.tail !== tail) throw new Error(`head/tail ${ring.head}/${ring.tail}, model ${head}/${tail}`);
          if (ring.tailSeq !== pubSeq) throw new Error(`tailSeq ${ring.tailSeq} != ${pubSeq}`);
          if (hdr[H_MAGIC] !== MAGIC || hdr[H_CAPACITY] !== cap || hdr[H_MAX_CAPACITY] !== cap) throw new Error('magic/capacity slot changed');
          if (ring.capacity !== cap) throw new Error(`capacity changed to ${ring.capacity}`);
          for (let i = FIRST_FREE_SLOT; i < HEADER_SLOTS; i++) {
            if (hdr[i] !== headerCanaries[i - FIRST_FREE_SLOT]) throw new Error(`header canary slot ${i} changed`);
          }
          // Published items are contiguous from head to tail and inside the data area.
          let at = head;
          let used = 0;
          for (const it of published) {
            if (it.pos !== at) throw new Error(`item at ${it.pos}, expected at ${at}`);
            if (it.pos + it.len > cap) throw new Error(`item at ${it.pos} len ${it.len} passes capacity`);
            at = (it.pos + it.len) % cap;
            used += it.len;
            if (it.pad && (ring.data[it.pos + R_KIND] !== KIND_PADDING || ring.lengthOf(it.pos) !== it.len)) {
              throw new Error(`padding at ${it.pos} damaged`);
            }
          }
          if (at !== tail) throw new Error(`items end at ${at}, tail is ${tail}`);
          if (ring.usedBytes !== used) throw new Error(`usedBytes ${ring.usedBytes} != live records + padding ${used}`);
          stats.maxUsed = Math.max(stats.maxUsed, used);
          // A reader's walk yields exactly the published records, each intact.
          const recs = published.filter((it) => !it.pad);
          const seen = readAll(ring);
          if (seen.length !== recs.length) throw new Error(`reader sees ${seen.length} records, model has ${recs.length}`);
          recs.forEach((r, i) => {
            if (seen[i]!.pos !== r.pos) throw new Error(`reader at ${seen[i]!.pos}, record seq ${r.seq} is at ${r.pos}`);
            verifyRecord(ring, r.pos, r.seq, r.bodyLen, seed);
          });
        } catch (e) {
          throw new Error(`step ${step}: ${(e as Error).message}`);
        }
      };

      const STEPS = 4000;
      for (let step = 0; step < STEPS; step++) {
        const op = rnd();
        if (op < 0.5) {
          // claim + write one record
          const bodyLen = drawBodyLen();
          const need = bodyLen >= 0 && bodyLen <= cap ? Ring.recordBytes(bodyLen) : Number.POSITIVE_INFINITY;
          // Independent oracle: bytes from the writer's tail forward to head (the whole ring when empty);
          // the new tail must stay strictly short of head.
          const toHead = wt === head && published.length === 0 && pending.length === 0
            ? cap : (head - wt + cap) % cap;
          const expected = wt + need <= cap && need < toHead ? wt
            : wt > 0 && cap - wt + need < toHead ? 0 : -1;
          const before = Buffer.from(ring.data);
          const pos = ring.claim(bodyLen);
          stats.claims++;
          if (pos !== expected) throw new Error(`step ${step}: claim(${bodyLen}) = ${pos}, expected ${expected} (head ${head}, wt ${wt})`);
          const changed = diffRange(before, ring.data);
          if (pos < 0) {
            stats.refused++;
            if (changed) throw new Error(`step ${step}: refused claim wrote bytes ${changed}`);
          } else {
            if (pos === 0 && wt !== 0) {
              stats.wraps++;
              // Only the padding header may change (it may already hold the same bytes from an earlier lap).
              if (changed && (changed[0] < wt || changed[1] >= wt + 8)) throw new Error(`step ${step}: wrap wrote ${changed}, padding is at ${wt}`);
              if (ring.data[wt + R_KIND] !== KIND_PADDING || ring.lengthOf(wt) !== cap - wt) throw new Error(`step ${step}: no padding at ${wt}`);
              pending.push({ pad: true, pos: wt, len: cap - wt, seq: 0, bodyLen: 0 });
            } else if (changed) {
              throw new Error(`step ${step}: claim without wrap wrote bytes ${changed}`);
            }
            const start = ring.bodyStart(pos);
            const len = Ring.recordBytes(bodyLen);
            const base = patternBase(seed, nextSeq);
            for (let i = 0; i < bodyLen; i++) ring.data[start + i] = patternByte(base, i);
            for (let i = start + bodyLen; i < pos + len; i++) ring.data[i] = SLACK_CANARY;
            const f = fieldsOf(nextSeq, bodyLen);
            const beforeHeader = Buffer.from(ring.data);
            ring.writeHeader(pos, bodyLen, nextSeq, f.publishedAt, f.publisherSeq, f.publisher, f.bytes, f.attrsOff, f.attrsLen, f.flags);
            const hw = diffRange(beforeHeader, ring.data);
            if (hw && (hw[0] < pos || hw[1] >= pos + RECORD_HEADER_BYTES)) throw new Error(`step ${step}: writeHeader wrote ${hw}`);
            if (pos + len === cap) stats.exactEnds++;
            pending.push({ pad: false, pos, len, seq: nextSeq, bodyLen });
            nextSeq++;
            wt = (pos + len) % cap;
          }
        } else if (op < 0.68) {
          ring.publish(nextSeq);
          published = published.concat(pending);
          pending = [];
          tail = wt;
          pubSeq = nextSeq;
        } else if (op < 0.72) {
          ring.rollback();
          stats.rollbacks++;
          nextSeq -= pending.filter((it) => !it.pad).length;
          pending = [];
          wt = tail;
        } else {
          // release some of the oldest records, at a position a reader reaches (a record or the tail)
          const recs = published.filter((it) => !it.pad);
          const n = recs.length === 0 ? 0 : randInt(rnd, 1, recs.length);
          const to = n < recs.length ? recs[n]! : undefined;
          const pos = to ? to.pos : tail;
          const seq = to ? to.seq : pubSeq;
          ring.release(pos, seq);
          stats.releases++;
          if (ring.headSeq !== seq) throw new Error(`step ${step}: headSeq ${ring.headSeq} != ${seq}`);
          published = to ? published.slice(published.indexOf(to)) : [];
          head = pos;
        }
        check(step);
      }
      // The run exercised what it claims to.
      expect(stats.wraps).toBeGreaterThan(20);
      expect(stats.exactEnds).toBeGreaterThan(0);
      expect(stats.refused).toBeGreaterThan(20);
      expect(stats.rollbacks).toBeGreaterThan(20);
      expect(stats.claims - stats.refused).toBeGreaterThan(500);
      expect(nextSeq - firstSeq).toBeGreaterThan(500);
    });
});
