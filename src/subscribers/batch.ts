import { decodeBody, type Message } from '../queue/message';

const ATTEMPT = Buffer.from(',"deliveryAttempt":');
const COMMA = 0x2c;
const CLOSE = 0x7d;

/**
 * The messages of one delivery, as references to stored bodies (no copy until encoded).
 * A batch is filled and consumed in the same turn: the bodies may move after it.
 */
export class DeliveryBatch {
  count = 0;
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

  /** One buffer: `prefix`, the messages as a JSON array's elements, `suffix`. One allocation. */
  encode(prefix: Buffer, suffix: Buffer): Buffer {
    const n = this.count;
    let total = prefix.length + suffix.length + (n > 0 ? n - 1 : 0);
    for (let i = 0; i < n; i++) total += this.lens[i]! + ATTEMPT.length + digits(this.attempts[i]!) + 1;
    const out = Buffer.allocUnsafe(total);
    let o = prefix.copy(out, 0);
    for (let i = 0; i < n; i++) {
      if (i > 0) out[o++] = COMMA;
      const s = this.starts[i]!;
      o += this.srcs[i]!.copy(out, o, s, s + this.lens[i]!);
      o += ATTEMPT.copy(out, o);
      o += out.write(String(this.attempts[i]!), o, 'latin1');
      out[o++] = CLOSE;
    }
    suffix.copy(out, o);
    return out;
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

function digits(n: number): number {
  return n < 10 ? 1 : n < 100 ? 2 : n < 1000 ? 3 : String(n).length;
}
