/** A delivered message whose body is no longer in the ring: `copy[copyStart, copyStart + copyLen)`. */
export interface OffRing {
  copy: Buffer | null;
  copyStart: number;
  copyLen: number;
  /** The read chunk `copy` points into, or null when `copy` is the body's own buffer. */
  held: Held | null;
}

/** A chunk read from disk, kept while messages delivered from it are unacked. */
export class Held {
  /** Messages pointing into it that are not yet released. */
  live = 0;
  /** Everything that pointed into it (released ones too: each is checked against `held`). */
  readonly users: OffRing[] = [];
  readonly buf: Buffer;

  constructor(buf: Buffer) {
    this.buf = buf;
  }
}

/**
 * Bodies delivered from disk point into the chunk they were read in, instead of each being
 * copied out (a copy and three objects per message). Chunks are kept while such messages are
 * unacked, up to `budget` bytes; past it, the oldest chunk's unacked bodies are copied out and
 * the chunk is let go, so a message that is never acked cannot keep a megabyte alive.
 */
export class HeldChunks {
  readonly budget: number;
  #list: (Held | undefined)[] = [];
  #head = 0;
  #bytes = 0;
  #current: Held | null = null;

  constructor(budget: number) {
    this.budget = budget;
  }

  /** Chunk bytes kept. */
  get bytes(): number { return this.#bytes; }

  /** Points `e` at `len` bytes at `start` of `buf`, the chunk being delivered. */
  hold(e: OffRing, buf: Buffer, start: number, len: number): void {
    let h = this.#current;
    if (h === null || h.buf !== buf) {
      h = this.#current = new Held(buf);
      this.#list.push(h);
      this.#bytes += buf.length;
      this.#trim();
    }
    e.copy = buf;
    e.copyStart = start;
    e.copyLen = len;
    e.held = h;
    h.live++;
    h.users.push(e);
  }

  /** `e` no longer needs its body (acked, dead-lettered, or the subscription is gone). */
  release(e: OffRing): void {
    const h = e.held;
    if (h === null) return;
    h.live--;
    e.held = null;
    if (h.live === 0 && this.#list[this.#head] === h) this.#trim();
  }

  /** No chunk is being delivered from any more: the last one goes too once its messages are acked. */
  retire(): void {
    this.#current = null;
    this.#trim();
  }

  /** Lets go of every chunk (their users were released or copied out). */
  clear(): void {
    this.#list = [];
    this.#head = 0;
    this.#bytes = 0;
    this.#current = null;
  }

  #trim(): void {
    const list = this.#list;
    while (this.#head < list.length) {
      const h = list[this.#head]!;
      if (h === this.#current) break;
      if (h.live > 0) {
        if (this.#bytes <= this.budget) break;
        for (const e of h.users) {
          if (e.held !== h) continue;
          e.copy = Buffer.from(h.buf.subarray(e.copyStart, e.copyStart + e.copyLen));
          e.copyStart = 0;
          e.held = null;
        }
      }
      this.#bytes -= h.buf.length;
      list[this.#head++] = undefined;
    }
    if (this.#head === list.length) {
      list.length = 0;
      this.#head = 0;
    } else if (this.#head >= 64 && this.#head * 2 >= list.length) {
      this.#list = list.slice(this.#head);
      this.#head = 0;
    }
  }
}
