/**
 * A min-heap of entries keyed by deadline: one structure per subscription instead of a
 * timer per message. Entries carry their own heap index, so removal and update are O(log n).
 */
export interface Timed {
  deadline: number;
  heapIdx: number;
}

export class DeadlineHeap<T extends Timed> {
  readonly #items: T[] = [];

  get size(): number { return this.#items.length; }

  peek(): T | undefined { return this.#items[0]; }

  push(e: T): void {
    e.heapIdx = this.#items.length;
    this.#items.push(e);
    this.#up(e.heapIdx);
  }

  pop(): T | undefined {
    const items = this.#items;
    const top = items[0];
    if (top === undefined) return undefined;
    this.remove(top);
    return top;
  }

  remove(e: T): void {
    const i = e.heapIdx;
    if (i < 0) return;
    const items = this.#items;
    const last = items.pop()!;
    e.heapIdx = -1;
    if (last === e) return;
    items[i] = last;
    last.heapIdx = i;
    this.#down(i);
    this.#up(last.heapIdx);
  }

  /** Re-places an entry whose deadline changed. */
  update(e: T): void {
    if (e.heapIdx < 0) { this.push(e); return; }
    this.#up(e.heapIdx);
    this.#down(e.heapIdx);
  }

  clear(): void {
    for (const e of this.#items) e.heapIdx = -1;
    this.#items.length = 0;
  }

  #up(i: number): void {
    const items = this.#items;
    const e = items[i]!;
    while (i > 0) {
      const p = (i - 1) >> 1;
      const pe = items[p]!;
      if (pe.deadline <= e.deadline) break;
      items[i] = pe;
      pe.heapIdx = i;
      i = p;
    }
    items[i] = e;
    e.heapIdx = i;
  }

  #down(i: number): void {
    const items = this.#items;
    const n = items.length;
    const e = items[i]!;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && items[c + 1]!.deadline < items[c]!.deadline) c++;
      const ce = items[c]!;
      if (ce.deadline >= e.deadline) break;
      items[i] = ce;
      ce.heapIdx = i;
      i = c;
    }
    items[i] = e;
    e.heapIdx = i;
  }
}
