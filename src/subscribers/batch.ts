import { decodeBody, type Message } from '../queue/message';

const ATTEMPT = Buffer.from(',"deliveryAttempt":');
const COMMA = 0x2c;
const CLOSE = 0x7d;
const ZERO = 0x30;
/** Bodies further apart than this are copied one by one (a filtered subscription skips records). */
const MAX_GAP = 1024;

/**
 * The messages of one delivery, as references to stored bodies (no copy until encoded).
 * A batch is filled and consumed in the same turn: the bodies may move after it.
 */
export class DeliveryBatch {
  count = 0;
  /** encode()'s runs: the index after each run's last message. */
  readonly #runEnds: number[] = [];
  /** Body bytes in the batch. */
  bytes = 0;
  readonly srcs: Buffer[] = [];
  readonly starts: number[] = [];
  readonly lens: number[] = [];
  readonly attempts: number[] = [];
  readonly seqs: number[] = [];

  reset(): void {
    this.count = 0;
    this.bytes = 0;
  }

  add(src: Buffer, start: number, len: number, attempt: number, seq: number): void {
    const i = this.count++;
    this.bytes += len;
    this.srcs[i] = src;
    this.starts[i] = start;
    this.lens[i] = len;
    this.attempts[i] = attempt;
    this.seqs[i] = seq;
  }

  /**
   * One buffer: `prefix`, the messages as a JSON array's elements, `suffix`. One allocation.
   * Bodies that sit one after the other in one buffer (records in the ring, a chunk read from
   * disk) are copied as one span and then moved into place inside the frame: a move within one
   * buffer costs a third of a copy from another, and the record header between two bodies is
   * wider than what a message adds, so every move goes left, over bytes already used.
   */
  encode(prefix: Buffer, suffix: Buffer): Buffer {
    const n = this.count;
    const srcs = this.srcs;
    const starts = this.starts;
    const lens = this.lens;
    const attempts = this.attempts;
    const runEnds = this.#runEnds;
    runEnds.length = 0;
    // Pass 1: the frame's size, its runs, and how far a run's span reaches past the frame.
    let o = prefix.length;
    let reach = 0;
    for (let i = 0; i < n;) {
      if (i > 0) o++;
      const src = srcs[i]!;
      const first = starts[i]!;
      let end = first + lens[i]!;
      let size = lens[i]! + tailBytes(attempts[i]!);
      let j = i;
      while (j + 1 < n && srcs[j + 1] === src) {
        const gap = starts[j + 1]! - end;
        if (gap < tailBytes(attempts[j]!) + 1 || gap > MAX_GAP) break;
        j++;
        end = starts[j]! + lens[j]!;
        size += 1 + lens[j]! + tailBytes(attempts[j]!);
      }
      if (j > i && o + (end - first) > reach) reach = o + (end - first);
      runEnds.push(j + 1);
      o += size;
      i = j + 1;
    }
    const total = o + suffix.length;
    const out = Buffer.allocUnsafe(Math.max(total, reach));
    // Pass 2.
    o = prefix.copy(out, 0);
    let i = 0;
    for (let r = 0; r < runEnds.length; r++) {
      const stop = runEnds[r]!;
      if (i > 0) out[o++] = COMMA;
      const src = srcs[i]!;
      const first = starts[i]!;
      if (stop === i + 1) {
        o += src.copy(out, o, first, first + lens[i]!);
        o = writeTail(out, o, attempts[i]!);
        i++;
        continue;
      }
      const base = o;
      src.copy(out, base, first, starts[stop - 1]! + lens[stop - 1]!);
      for (; i < stop; i++) {
        const at = base + (starts[i]! - first);
        const len = lens[i]!;
        if (at !== o) out.copyWithin(o, at, at + len);
        o = writeTail(out, o + len, attempts[i]!);
        if (i + 1 < stop) out[o++] = COMMA;
      }
    }
    suffix.copy(out, o);
    return total === out.length ? out : out.subarray(0, total);
  }

  /** The messages as objects, for embedded consumers. */
  messages(): Message[] {
    const out: Message[] = new Array(this.count);
    for (let i = 0; i < this.count; i++) out[i] = decodeBody(this.srcs[i]!, this.starts[i]!, this.lens[i]!, this.attempts[i]!);
    return out;
  }

  /** A copy that outlives this turn (bodies copied). */
  detach(): DeliveryBatch {
    const b = new DeliveryBatch();
    for (let i = 0; i < this.count; i++) {
      const s = this.starts[i]!;
      b.add(Buffer.from(this.srcs[i]!.subarray(s, s + this.lens[i]!)), 0, this.lens[i]!, this.attempts[i]!, this.seqs[i]!);
    }
    return b;
  }
}

/** Decimal digits of a non-negative integer (no string made below 10^6). */
export function digits(n: number): number {
  return n < 10 ? 1 : n < 100 ? 2 : n < 1000 ? 3 : n < 10000 ? 4 : n < 100000 ? 5 : n < 1000000 ? 6 : String(n).length;
}

/** Bytes `,"deliveryAttempt":N}` takes. */
function tailBytes(attempt: number): number {
  return ATTEMPT.length + digits(attempt) + 1;
}

/** Writes `,"deliveryAttempt":N}` at `o`; returns the end. Byte by byte: shorter than a copy call. */
function writeTail(out: Buffer, o: number, attempt: number): number {
  for (let k = 0; k < ATTEMPT.length; k++) out[o + k] = ATTEMPT[k]!;
  o += ATTEMPT.length;
  if (attempt < 10) out[o++] = ZERO + attempt;
  else o += out.write(String(attempt), o, 'latin1');
  out[o++] = CLOSE;
  return o;
}
