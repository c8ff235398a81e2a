import { digits, type DeliveryBatch } from '../subscribers/batch';

/**
 * The bytes a propagation forwards, cut from the stored record bodies: no message is parsed or
 * re-encoded on the way. A body is `{"id":…,"seq":N,"data":…,"encoding":…,"attributes":{…}
 * [,"key":…],"publisherId":…[,"publisherSeq":N],"publishedAt":…` (see src/queue/message.ts);
 * the destination gets `{"data":…` up to the key, then its own `,"publisherSeq":N}`.
 */

const DATA = Buffer.from(',"data":');
/** Searched backwards: an unescaped quote cannot occur inside the publisher id's JSON string. */
const PUBLISHER = Buffer.from(',"publisherId":');
const SEQ = Buffer.from(',"publisherSeq":');
const OPEN_BRACE = 0x7b;
const COMMA = 0x2c;
const CLOSE_BRACE = 0x7d;
const CLOSE = Buffer.from(']}');

/** Messages a publish frame may carry (the server's limit). */
export const MAX_FRAME_MESSAGES = 1000;

/** Messages of one delivery, forwarded as they were stored: one buffer, one allocation. */
export class Chunk {
  /** `{"data":…` of each message, back to back. */
  readonly buf: Buffer;
  /** End of each message's bytes in `buf`. */
  readonly ends: number[];
  /** Source seqs, ascending. */
  readonly seqs: number[];
  /** Messages at the front already consumed at the destination (and acked here). */
  head = 0;
  /** publisherSeq = seq + offset, fixed when the chunk is sent. */
  offset = 0;

  constructor(buf: Buffer, ends: number[], seqs: number[]) {
    this.buf = buf;
    this.ends = ends;
    this.seqs = seqs;
  }

  get count(): number { return this.seqs.length; }
  /** Where the messages not yet consumed start in `buf`. */
  get startByte(): number { return this.head === 0 ? 0 : this.ends[this.head - 1]!; }
  get lastPublisherSeq(): number { return this.seqs[this.seqs.length - 1]! + this.offset; }
}

/**
 * The messages of `batch` from `from` on with seq above `above`, at most MAX_FRAME_MESSAGES, as
 * a chunk; and the index where it stopped. Bodies are copied now: they may move after this turn.
 */
export function takeChunk(batch: DeliveryBatch, from: number, above: number): { chunk: Chunk | undefined; next: number } {
  const n = batch.count;
  let i = from;
  const idx: number[] = [];
  const starts: number[] = [];
  const lens: number[] = [];
  const seqs: number[] = [];
  let total = 0;
  for (; i < n && seqs.length < MAX_FRAME_MESSAGES; i++) {
    const seq = batch.seqs[i]!;
    if (seq <= above) continue; // a redelivery of what this propagation already holds
    const src = batch.srcs[i]!;
    const s = batch.starts[i]!;
    const end = s + batch.lens[i]!;
    const d = src.indexOf(DATA, s);
    const p = src.lastIndexOf(PUBLISHER, end - PUBLISHER.length);
    if (d < 0 || d >= end || p < d) throw new Error(`record ${seq} is not a message body`);
    idx.push(i);
    starts.push(d);
    lens.push(p - d);
    seqs.push(seq);
    total += p - d;
  }
  if (seqs.length === 0) return { chunk: undefined, next: i };
  const buf = Buffer.allocUnsafe(total);
  const ends = new Array<number>(seqs.length);
  let o = 0;
  for (let k = 0; k < seqs.length; k++) {
    o += batch.srcs[idx[k]!]!.copy(buf, o, starts[k]!, starts[k]! + lens[k]!);
    buf[o - lens[k]!] = OPEN_BRACE; // the comma before "data" opens the message
    ends[k] = o;
  }
  return { chunk: new Chunk(buf, ends, seqs), next: i };
}

/**
 * A chained publish frame (`afterPublisherSeq`) of chunks (from their heads), numbered with their offsets.
 * `head` is `{"op":"publish","queue":…,"publisherId":…`. One allocation.
 */
export function encodeFrame(head: Buffer, ref: number, after: number, chunks: readonly Chunk[], from: number, to: number): Buffer {
  const afterPart = ',"ref":' + ref + ',"afterPublisherSeq":' + after + ',"messages":[';
  let total = head.length + afterPart.length + CLOSE.length;
  let n = 0;
  for (let c = from; c < to; c++) {
    const ch = chunks[c]!;
    total += ch.buf.length - ch.startByte;
    for (let k = ch.head; k < ch.seqs.length; k++) total += SEQ.length + digits(ch.seqs[k]! + ch.offset) + 1;
    n += ch.seqs.length - ch.head;
  }
  total += n > 0 ? n - 1 : 0;
  const out = Buffer.allocUnsafe(total);
  let o = head.copy(out, 0);
  o += out.write(afterPart, o, 'latin1');
  let first = true;
  for (let c = from; c < to; c++) {
    const ch = chunks[c]!;
    let start = ch.startByte;
    for (let k = ch.head; k < ch.seqs.length; k++) {
      if (!first) out[o++] = COMMA;
      first = false;
      const end = ch.ends[k]!;
      o += ch.buf.copy(out, o, start, end);
      start = end;
      o += SEQ.copy(out, o);
      o += out.write(String(ch.seqs[k]! + ch.offset), o, 'latin1');
      out[o++] = CLOSE_BRACE;
    }
  }
  CLOSE.copy(out, o);
  return out;
}
