/**
 * The publisher ledger of one queue: usage per publisher, restriction with hysteresis,
 * last and safe publisherSeq. Every update is O(1); the broker calls it as messages are
 * accepted, consumed (acked by some subscription), released (acked by all) and spilled.
 */

export type RestrictReason = 'unconsumed' | 'overspilled';

export interface LedgerLimits {
  limitBytes: number;
  resumeBytes: number;
  spillLimitBytes: number;
}

/** API.md's PublisherState. */
export interface PublisherState {
  id: string;
  epoch: string;
  unconsumedBytes: number;
  unconsumedMessages: number;
  spilledBytes: number;
  limitBytes: number;
  resumeBytes: number;
  spillLimitBytes: number;
  restricted: boolean;
  reason?: RestrictReason;
  lastPublisherSeq?: number;
  safePublisherSeq?: number;
}

/** How many recent (publisherSeq → seq) pairs a publisher keeps to answer duplicates with their ids. */
const RECENT = 1024;
/** Drain rate is sampled over at least this many ms. */
const RATE_WINDOW_MS = 50;
/** A publisher whose usage has not drained for this long is treated as not draining. */
const STALE_RATE_MS = 2000;
const MIN_RETRY_MS = 10;
const MAX_RETRY_MS = 30_000;
const FALLBACK_RETRY_MS = 1000;

export class Publisher {
  readonly id: string;
  readonly slot: number;
  /** The id as a JSON string literal, ready for record bodies. */
  readonly json: string;
  readonly jsonBytes: number;
  unconsumedBytes = 0;
  unconsumedMessages = 0;
  /** Messages not yet released by every subscription (in memory, on disk or staged). */
  retainedMessages = 0;
  spilledBytes = 0;
  lastSeq = -1;
  safeSeq = -1;
  restricted = false;
  reason: RestrictReason | undefined = undefined;
  lastActive = 0;
  // Drain-rate estimate (bytes per ms), for retryAfterMs.
  rate = 0;
  #drainAcc = 0;
  #drainAt = 0;
  // Recent publisherSeq → seq, oldest first, for answering duplicates with their original ids.
  readonly #recentPub = new Float64Array(RECENT);
  readonly #recentSeq = new Float64Array(RECENT);
  #recentStart = 0;
  #recentCount = 0;

  constructor(id: string, slot: number, now: number) {
    this.id = id;
    this.slot = slot;
    this.json = JSON.stringify(id);
    this.jsonBytes = Buffer.byteLength(this.json);
    this.lastActive = now;
    this.#drainAt = now;
  }

  remember(publisherSeq: number, seq: number): void {
    const i = (this.#recentStart + this.#recentCount) % RECENT;
    this.#recentPub[i] = publisherSeq;
    this.#recentSeq[i] = seq;
    if (this.#recentCount < RECENT) this.#recentCount++;
    else this.#recentStart = (this.#recentStart + 1) % RECENT;
  }

  /** The queue seq a recent publisherSeq was stored under, or -1 when it is no longer known. */
  seqOf(publisherSeq: number): number {
    let lo = 0;
    let hi = this.#recentCount - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const i = (this.#recentStart + mid) % RECENT;
      const v = this.#recentPub[i]!;
      if (v === publisherSeq) return this.#recentSeq[i]!;
      if (v < publisherSeq) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }

  noteDrained(bytes: number, now: number): void {
    this.#drainAcc += bytes;
    const dt = now - this.#drainAt;
    if (dt < RATE_WINDOW_MS) return;
    const inst = this.#drainAcc / dt;
    this.rate = this.rate === 0 ? inst : 0.7 * this.rate + 0.3 * inst;
    this.#drainAcc = 0;
    this.#drainAt = now;
  }

  /** Milliseconds until usage is likely to have drained to the resume mark. */
  retryAfterMs(excessBytes: number, now: number): number {
    const rate = now - this.#drainAt > STALE_RATE_MS ? 0 : this.rate;
    if (rate <= 0) return FALLBACK_RETRY_MS;
    return Math.min(MAX_RETRY_MS, Math.max(MIN_RETRY_MS, Math.ceil(excessBytes / rate)));
  }
}

export class Ledger {
  readonly #byId = new Map<string, Publisher>();
  readonly #bySlot: (Publisher | undefined)[] = [];
  readonly #freeSlots: number[] = [];
  #limits: LedgerLimits;
  readonly #epoch: string;
  /** Counts restrictions, for the `spillway_publisher_restricted_total` metric. */
  restrictions = 0;
  enabled = true;

  constructor(limits: LedgerLimits, epoch: string) {
    this.#limits = limits;
    this.#epoch = epoch;
  }

  get limits(): LedgerLimits { return this.#limits; }

  /** The publisher with this id, made on first use. */
  get(id: string, now: number): Publisher {
    let p = this.#byId.get(id);
    if (p === undefined) {
      const slot = this.#freeSlots.length > 0 ? this.#freeSlots.pop()! : this.#bySlot.length;
      p = new Publisher(id, slot, now);
      this.#byId.set(id, p);
      this.#bySlot[slot] = p;
    }
    p.lastActive = now;
    return p;
  }

  find(id: string): Publisher | undefined { return this.#byId.get(id); }
  bySlot(slot: number): Publisher | undefined { return this.#bySlot[slot]; }
  ids(): string[] { return [...this.#byId.keys()]; }

  /** Refusal check before a publish; `undefined` when the publisher may go on. */
  refusal(p: Publisher, now: number): { reason: RestrictReason; retryAfterMs: number } | undefined {
    if (!this.enabled || !p.restricted) return undefined;
    const l = this.#limits;
    const excess = p.reason === 'overspilled' ? p.spilledBytes - l.spillLimitBytes / 2 : p.unconsumedBytes - l.resumeBytes;
    return { reason: p.reason!, retryAfterMs: p.retryAfterMs(excess, now) };
  }

  /** Messages accepted (stored or staged): they count as unconsumed until some subscription acks them. */
  accepted(p: Publisher, messages: number, bytes: number): void {
    p.unconsumedBytes += bytes;
    p.unconsumedMessages += messages;
    p.retainedMessages += messages;
    if (this.enabled && !p.restricted && p.unconsumedBytes >= this.#limits.limitBytes) this.#restrict(p, 'unconsumed');
  }

  /** Staged messages withdrawn (rollback): they were never stored. */
  withdrawn(p: Publisher, messages: number, bytes: number): void {
    p.retainedMessages -= messages;
    this.consumed(p, messages, bytes, Date.now());
  }

  /** Messages acked by at least one subscription (or dropped): they no longer count as unconsumed. */
  consumed(p: Publisher, messages: number, bytes: number, now: number): void {
    p.unconsumedBytes -= bytes;
    p.unconsumedMessages -= messages;
    p.noteDrained(bytes, now);
    if (p.restricted && p.reason === 'unconsumed' && p.unconsumedBytes <= this.#limits.resumeBytes) this.#lift(p);
  }

  /** Messages released by every subscription; `publisherSeq` is the highest among them (NaN: none). */
  released(p: Publisher, publisherSeq: number, count: number): void {
    p.retainedMessages -= count;
    if (!Number.isNaN(publisherSeq) && publisherSeq > p.safeSeq) p.safeSeq = publisherSeq;
    if (p.retainedMessages === 0) p.safeSeq = p.lastSeq;
  }

  spilled(p: Publisher, bytes: number): void {
    p.spilledBytes += bytes;
    if (this.enabled && !p.restricted && p.spilledBytes >= this.#limits.spillLimitBytes) this.#restrict(p, 'overspilled');
  }

  unspilled(p: Publisher, bytes: number): void {
    p.spilledBytes -= bytes;
    if (p.restricted && p.reason === 'overspilled' && p.spilledBytes <= this.#limits.spillLimitBytes / 2) this.#lift(p);
  }

  state(p: Publisher): PublisherState {
    const l = this.#limits;
    const s: PublisherState = {
      id: p.id,
      epoch: this.#epoch,
      unconsumedBytes: p.unconsumedBytes,
      unconsumedMessages: p.unconsumedMessages,
      spilledBytes: p.spilledBytes,
      limitBytes: l.limitBytes,
      resumeBytes: l.resumeBytes,
      spillLimitBytes: l.spillLimitBytes,
      restricted: p.restricted,
    };
    if (p.reason !== undefined) s.reason = p.reason;
    if (p.lastSeq >= 0) s.lastPublisherSeq = p.lastSeq;
    if (p.safeSeq >= 0) s.safePublisherSeq = p.safeSeq;
    return s;
  }

  /** Forgets publishers idle since `before` that hold nothing, so invented ids cannot grow memory. */
  sweep(before: number): number {
    let n = 0;
    for (const p of this.#byId.values()) {
      if (p.lastActive < before && p.retainedMessages === 0 && p.unconsumedMessages === 0 && p.spilledBytes === 0) {
        this.#byId.delete(p.id);
        this.#bySlot[p.slot] = undefined;
        this.#freeSlots.push(p.slot);
        n++;
      }
    }
    return n;
  }

  /** Forgets a publisher first seen in a publish that was refused, so the refusal leaves no trace. */
  forgetNew(p: Publisher): void {
    if (this.#byId.get(p.id) !== p || p.lastSeq >= 0 || p.retainedMessages !== 0 || p.unconsumedMessages !== 0 || p.spilledBytes !== 0) return;
    this.#byId.delete(p.id);
    this.#bySlot[p.slot] = undefined;
    this.#freeSlots.push(p.slot);
  }

  #restrict(p: Publisher, reason: RestrictReason): void {
    p.restricted = true;
    p.reason = reason;
    this.restrictions++;
  }

  #lift(p: Publisher): void {
    p.restricted = false;
    p.reason = undefined;
    // Overspilled may still hold after unconsumed lifts.
    if (this.enabled && p.spilledBytes >= this.#limits.spillLimitBytes) this.#restrict(p, 'overspilled');
  }
}
