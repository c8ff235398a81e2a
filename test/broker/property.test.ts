import * as fc from 'fast-check';
import { prepareBatch, type Broker, type PublishMessage } from '../../src/broker';
import { isSpillwayError } from '../../src/errors';
import type { Message } from '../../src/queue/message';
import type { DeliveryBatch } from '../../src/subscribers/batch';
import type { Consumer, EndReason } from '../../src/subscribers/consumer';
import { closeAll, makeBroker, turn } from './helpers';

/*
 * Model-based test of one queue: random command sequences run against the broker and a
 * reference model side by side. After every command (and one turn of the loop, so push
 * consumers have been served) the broker must agree with the model:
 *
 * - invariant 1, no loss: every message accepted while a subscription was eligible is
 *   delivered to it at least once, unless acked, purged or the subscription removed. A first
 *   delivery must be exactly the model's next undelivered message (nothing skipped), and at the
 *   end everything left is drained and checked, and the ring must be empty again;
 * - invariant 2, order: first deliveries (deliveryAttempt 1) on a subscription follow seq order;
 * - invariant 3, bytes intact: each delivered message equals, field by field, what was published
 *   (unique, mixed-width UTF-8 payloads with JSON-escaped characters), however often the tiny ring
 *   has wrapped since;
 * - invariant 4 (its memory half): memoryUsedBytes never exceeds memoryBytes;
 * - invariant 6, refusal stores nothing: a QUEUE_FULL or an invalid batch leaves every figure of
 *   the queue, its subscriptions and its publishers as it was;
 * - and the counters: backlog, inFlight, delivered, acked, redelivered, messages, published,
 *   dropped; prefetch is never exceeded, and a push consumer with room is never left idle while
 *   its subscription has work.
 *
 * Deadlines are long (60 s): time never expires anything by itself during a run. The `expire`
 * command plays the clock forward instead, through the subscription's expire(now).
 */

const MEMORY = 65536;
const ACK_DEADLINE_MS = 60_000;
const NACK_DELAY_MS = 100_000; // < the expire command's jump, so expire releases delayed messages too
const FUTURE = (): number => Date.now() + 10 * ACK_DEADLINE_MS;
const SUB_NAMES = ['s1', 's2', 's3'];
const PUBLISHERS = ['p0', 'p1', 'p2'];
const ATTRS: Record<string, string>[] = [{}, { color: 'red' }, { color: 'blue' }, { color: 'red', size: 'L' }, { size: 'L' }];
const FILTERS: (Record<string, string> | undefined)[] = [undefined, { color: 'red' }, { size: 'L' }];
/** Payload characters: 1 to 4 UTF-8 bytes, and characters JSON must escape. */
const ALPHABET = ['a', 'b', 'Z', '0', ' ', 'é', '€', '😀', '"', '\\', '\n', '\u0001'];

type Cmd =
  | { k: 'publish'; pub: number; msgs: { chars: number; attrs: number; seed: number }[]; bad: { at: number; kind: number } | null }
  | { k: 'pull'; sub: number; max: number }
  | { k: 'ack'; sub: number; mask: boolean[] }
  | { k: 'ackAll'; sub: number }
  | { k: 'catchUp' }
  | { k: 'nack'; sub: number; mask: boolean[]; delayed: boolean }
  | { k: 'expire'; sub: number }
  | { k: 'attach'; sub: number; prefetch: number }
  | { k: 'detach'; which: number }
  | { k: 'createSub'; name: number; filter: number; earliest: boolean }
  | { k: 'deleteSub'; sub: number }
  | { k: 'purge' };

const mask = fc.array(fc.boolean(), { minLength: 1, maxLength: 24 });
const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
  {
    weight: 10,
    arbitrary: fc.record({
      k: fc.constant('publish' as const),
      pub: fc.nat(2),
      msgs: fc.array(fc.record({ chars: fc.integer({ min: 0, max: 4000 }), attrs: fc.nat(ATTRS.length - 1), seed: fc.nat() }), { minLength: 1, maxLength: 8 }),
      bad: fc.oneof({ weight: 9, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.record({ at: fc.nat(5), kind: fc.nat(2) }) }),
    }),
  },
  { weight: 4, arbitrary: fc.record({ k: fc.constant('pull' as const), sub: fc.nat(3), max: fc.integer({ min: 1, max: 8 }) }) },
  { weight: 4, arbitrary: fc.record({ k: fc.constant('ack' as const), sub: fc.nat(3), mask }) },
  { weight: 4, arbitrary: fc.record({ k: fc.constant('ackAll' as const), sub: fc.nat(3) }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('catchUp' as const) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('nack' as const), sub: fc.nat(3), mask, delayed: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('expire' as const), sub: fc.nat(3) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('attach' as const), sub: fc.nat(3), prefetch: fc.integer({ min: 1, max: 8 }) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('detach' as const), which: fc.nat(7) }) },
  {
    weight: 2,
    arbitrary: fc.record({ k: fc.constant('createSub' as const), name: fc.nat(SUB_NAMES.length - 1), filter: fc.nat(FILTERS.length - 1), earliest: fc.boolean() }),
  },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('deleteSub' as const), sub: fc.nat(3) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('purge' as const) }) },
);

// --- the model ---------------------------------------------------------------------

interface MMsg { seq: number; id: string; data: string; attrs: Record<string, string>; publisher: string }

interface MSub {
  name: string;
  filter: Record<string, string> | undefined;
  /** Eligible, never delivered, in seq order. */
  undelivered: number[];
  inflight: Map<number, { attempt: number; owner: MConsumer | null }>;
  /** Due again: seq → the attempt it was last delivered with. */
  ready: Map<number, number>;
  delayed: Map<number, number>;
  /** Every seq this subscription must get at least once (not counting purged ones). */
  required: Set<number>;
  got: Set<number>;
  ackedIds: string[];
  delivered: number;
  acked: number;
  redelivered: number;
}

/** A push consumer that only records: the model is updated from the log after each turn. */
class MConsumer implements Consumer {
  unacked = 0;
  /** What the model says this consumer holds. */
  held = 0;
  endedWith: EndReason | undefined;
  detach: () => void = () => undefined;
  constructor(readonly prefetch: number, readonly sub: string, readonly log: { c: MConsumer; msgs: Message[] }[]) {}
  ready(): boolean { return true; }
  deliver(batch: DeliveryBatch): void { this.log.push({ c: this, msgs: batch.messages() }); }
  ended(reason: EndReason): void { this.endedWith = reason; }
}

const matches = (filter: Record<string, string> | undefined, attrs: Record<string, string>): boolean =>
  filter === undefined || Object.entries(filter).every(([k, v]) => attrs[k] === v);

function payload(tag: number, chars: number, seed: number): string {
  let s = `#${tag}|`;
  let x = seed | 1;
  for (let i = 0; i < chars; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5; // xorshift32
    s += ALPHABET[(x >>> 0) % ALPHABET.length];
  }
  return s;
}

/** Totals over every run, to show the runs exercise what they claim to. */
const totals = { wraps: 0, full: 0, invalid: 0, delivered: 0, redelivered: 0 };

class Run {
  readonly b: Broker;
  readonly msgs = new Map<number, MMsg>();
  /** Stored (not dropped), not purged. */
  stored: number[] = [];
  subs: MSub[] = [];
  consumers: MConsumer[] = [];
  readonly log: { c: MConsumer; msgs: Message[] }[] = [];
  nextSeq = 1;
  published = 0;
  dropped = 0;
  tag = 0;

  constructor() {
    this.b = makeBroker();
    this.b.createQueue('q', { memoryBytes: MEMORY, spill: false, defaultSubscription: false });
    this.createSub('default', undefined, false);
  }

  get maxMessageBytes(): number { return this.b.queue('q').config.maxMessageBytes; }

  pick(i: number): MSub | undefined { return this.subs.length === 0 ? undefined : this.subs[i % this.subs.length]; }

  createSub(name: string, filter: Record<string, string> | undefined, earliest: boolean): void {
    const body: Record<string, unknown> = { ackDeadlineMs: ACK_DEADLINE_MS, maxDeliveries: 1000, startAt: earliest ? 'earliest' : 'latest' };
    if (filter !== undefined) body.filter = { attributes: filter };
    const existing = this.subs.find((s) => s.name === name);
    if (existing !== undefined) {
      // Same config again: no change. (The model only re-sends the config it made it with.)
      const cfg = this.b.subscriptionInfo('q', name);
      const same: Record<string, unknown> = { ackDeadlineMs: cfg.ackDeadlineMs, maxDeliveries: cfg.maxDeliveries, startAt: cfg.startAt };
      if (cfg.filter !== undefined) same.filter = cfg.filter;
      expect(this.b.createSubscription('q', name, same).created).toBe(false);
      return;
    }
    const headSeq = this.b.queue('q').ring.headSeq;
    expect(this.b.createSubscription('q', name, body).created).toBe(true);
    const undelivered = earliest ? this.stored.filter((s) => s >= headSeq && matches(filter, this.msgs.get(s)!.attrs)) : [];
    this.subs.push({
      name, filter, undelivered, inflight: new Map(), ready: new Map(), delayed: new Map(), required: new Set(undelivered),
      got: new Set(), ackedIds: [], delivered: 0, acked: 0, redelivered: 0,
    });
  }

  /** Applies a delivery to the model, checking it. `pullMax`: it was a pull, so its size is known exactly. */
  take(ms: MSub, msgs: readonly Message[], owner: MConsumer | null, pullMax?: number): void {
    if (pullMax !== undefined) expect(msgs.length).toBe(Math.min(pullMax, ms.ready.size + ms.undelivered.length));
    if (owner !== null) expect(owner.held + msgs.length).toBeLessThanOrEqual(owner.prefetch);
    let fresh = false;
    for (const m of msgs) {
      const mm = this.msgs.get(m.seq);
      expect(mm).toBeDefined();
      // Invariant 3: the bytes are what was published.
      expect({ id: m.id, data: m.data, attributes: m.attributes, publisherId: m.publisherId, encoding: m.encoding })
        .toEqual({ id: mm!.id, data: mm!.data, attributes: mm!.attrs, publisherId: mm!.publisher, encoding: 'utf8' });
      if (m.deliveryAttempt === 1) {
        // Invariants 1 and 2: the next eligible message, in seq order, none skipped.
        expect({ sub: ms.name, seq: m.seq }).toEqual({ sub: ms.name, seq: ms.undelivered[0] });
        ms.undelivered.shift();
        fresh = true;
      } else {
        expect(fresh).toBe(false); // redeliveries go first
        expect({ sub: ms.name, seq: m.seq, last: ms.ready.get(m.seq) }).toEqual({ sub: ms.name, seq: m.seq, last: m.deliveryAttempt - 1 });
        ms.ready.delete(m.seq);
        ms.redelivered++;
        totals.redelivered++;
      }
      ms.delivered++;
      totals.delivered++;
      ms.got.add(m.seq);
      ms.inflight.set(m.seq, { attempt: m.deliveryAttempt, owner });
      if (owner !== null) owner.held++;
    }
  }

  /** In-flight messages back to ready (deadline passed, consumer gone); `only`: those of one consumer. */
  requeue(ms: MSub, only?: MConsumer): void {
    for (const [seq, e] of ms.inflight) {
      if (only !== undefined && e.owner !== only) continue;
      ms.inflight.delete(seq);
      ms.ready.set(seq, e.attempt);
      if (e.owner !== null) e.owner.held--;
    }
  }

  idOf(seq: number): string { return this.msgs.get(seq)!.id; }

  /** Everything observable that a refused publish must leave as it was. */
  snapshot(): unknown {
    const q = this.b.queue('q');
    return {
      queue: this.b.queueStats('q'),
      subs: this.subs.map((s) => this.b.subscriptionInfo('q', s.name)),
      publishers: this.b.queueStats('q').publishers.map((id) => this.b.publisherState('q', id)),
      nextSeq: q.nextSeq,
      tail: q.ring.tail,
    };
  }

  async step(cmd: Cmd): Promise<void> {
    const b = this.b;
    switch (cmd.k) {
      case 'publish': {
        const publisher = PUBLISHERS[cmd.pub]!;
        const msgs: PublishMessage[] = cmd.msgs.map((m) => {
          const attrs = ATTRS[m.attrs]!;
          const out: PublishMessage = { data: payload(++this.tag, m.chars, m.seed) };
          if (Object.keys(attrs).length > 0) out.attributes = attrs;
          return out;
        });
        const before = this.snapshot();
        if (cmd.bad !== null) {
          // One invalid message anywhere in the batch: nothing of the batch is stored.
          const at = cmd.bad.at % msgs.length;
          const bad = [{ data: 42 }, { data: 'x', attributes: { color: 7 } }, { data: 'x'.repeat(this.maxMessageBytes + 1) }][cmd.bad.kind];
          const batch: unknown[] = [...msgs];
          batch[at] = bad;
          let err: unknown;
          try {
            b.publish('q', publisher, prepareBatch(batch, this.maxMessageBytes));
          } catch (e) {
            err = e;
          }
          expect(isSpillwayError(err) && (err.code === 'INVALID_ARGUMENT' || err.code === 'MESSAGE_TOO_LARGE')).toBe(true);
          expect(this.snapshot()).toEqual(before);
          totals.invalid++;
          return;
        }
        const tail = b.queue('q').ring.tail;
        let out;
        try {
          out = b.publish('q', publisher, prepareBatch(msgs, this.maxMessageBytes));
        } catch (e) {
          expect(isSpillwayError(e) ? [e.code, e.status] : e).toEqual(['QUEUE_FULL', 507]);
          expect(this.snapshot()).toEqual(before); // invariant 6
          totals.full++;
          return;
        }
        if (b.queue('q').ring.tail < tail) totals.wraps++;
        expect(out.seqs).toEqual(msgs.map((_, i) => this.nextSeq + i));
        expect(out.duplicates).toBe(0);
        msgs.forEach((m, i) => {
          const seq = this.nextSeq + i;
          const attrs = m.attributes ?? {};
          this.msgs.set(seq, { seq, id: out.ids[i]!, data: m.data, attrs, publisher });
          const eligible = this.subs.filter((s) => matches(s.filter, attrs));
          if (eligible.length === 0) this.dropped++;
          else this.stored.push(seq);
          for (const s of eligible) { s.undelivered.push(seq); s.required.add(seq); }
        });
        this.nextSeq += msgs.length;
        this.published += msgs.length;
        return;
      }
      case 'pull': {
        const ms = this.pick(cmd.sub);
        if (ms === undefined) return;
        this.take(ms, await b.pullMessages('q', ms.name, { max: cmd.max }), null, cmd.max);
        return;
      }
      case 'ack':
      case 'ackAll': {
        const ms = this.pick(cmd.sub);
        if (ms === undefined) return;
        if (cmd.k === 'ackAll') this.take(ms, await b.pullMessages('q', ms.name, { max: 1000 }), null, 1000);
        // In flight, and also due again or delayed: a late ack still counts.
        const all = [...ms.inflight.keys(), ...ms.ready.keys(), ...ms.delayed.keys()].sort((x, y) => x - y);
        const chosen = cmd.k === 'ackAll' ? all : all.filter((_, i) => cmd.mask[i % cmd.mask.length]);
        const bogus: string[] = ['nope'];
        if (ms.ackedIds.length > 0) bogus.push(ms.ackedIds[ms.ackedIds.length - 1]!);
        const res = b.ack('q', ms.name, [...chosen.map((s) => this.idOf(s)), ...bogus]);
        expect(res).toEqual({ acked: chosen.length, unknown: bogus });
        for (const seq of chosen) {
          const e = ms.inflight.get(seq);
          if (e?.owner) e.owner.held--;
          ms.inflight.delete(seq);
          ms.ready.delete(seq);
          ms.delayed.delete(seq);
          ms.ackedIds.push(this.idOf(seq));
        }
        ms.acked += chosen.length;
        return;
      }
      case 'catchUp':
        // Every subscription takes and acks all it can: the ring empties and the next publishes wrap it.
        for (let i = 0; i < this.subs.length; i++) await this.step({ k: 'ackAll', sub: i });
        return;
      case 'nack': {
        const ms = this.pick(cmd.sub);
        if (ms === undefined) return;
        const chosen = [...ms.inflight.keys()].sort((x, y) => x - y).filter((_, i) => cmd.mask[i % cmd.mask.length]);
        // Only what is in flight can be nacked: a message already due again is unknown.
        const bogus = [...ms.ready.keys()].slice(0, 1).map((s) => this.idOf(s));
        const res = b.nack('q', ms.name, [...chosen.map((s) => this.idOf(s)), ...bogus], cmd.delayed ? NACK_DELAY_MS : 0);
        expect(res).toEqual({ nacked: chosen.length, unknown: bogus });
        for (const seq of chosen) {
          const e = ms.inflight.get(seq)!;
          if (e.owner !== null) e.owner.held--;
          ms.inflight.delete(seq);
          (cmd.delayed ? ms.delayed : ms.ready).set(seq, e.attempt);
        }
        return;
      }
      case 'expire': {
        const ms = this.pick(cmd.sub);
        if (ms === undefined) return;
        b.subscription('q', ms.name).expire(FUTURE());
        this.requeue(ms);
        for (const [seq, attempt] of ms.delayed) ms.ready.set(seq, attempt);
        ms.delayed.clear();
        return;
      }
      case 'attach': {
        const ms = this.pick(cmd.sub);
        if (ms === undefined) return;
        const c = new MConsumer(cmd.prefetch, ms.name, this.log);
        c.detach = b.consume('q', ms.name, c);
        this.consumers.push(c);
        return;
      }
      case 'detach': {
        if (this.consumers.length === 0) return;
        const c = this.consumers.splice(cmd.which % this.consumers.length, 1)[0]!;
        c.detach();
        expect(c.unacked).toBe(0);
        this.requeue(this.subs.find((s) => s.name === c.sub)!, c);
        expect(c.held).toBe(0);
        return;
      }
      case 'createSub':
        this.createSub(SUB_NAMES[cmd.name]!, FILTERS[cmd.filter], cmd.earliest);
        return;
      case 'deleteSub': {
        const ms = this.pick(cmd.sub);
        if (ms === undefined) return;
        b.deleteSubscription('q', ms.name);
        this.subs = this.subs.filter((s) => s !== ms);
        for (const c of this.consumers.filter((x) => x.sub === ms.name)) expect(c.endedWith).toBe('deleted');
        this.consumers = this.consumers.filter((x) => x.sub !== ms.name);
        return;
      }
      case 'purge': {
        const retained = this.expectedRetained();
        expect(b.purge('q')).toBe(retained);
        for (const ms of this.subs) {
          for (const seq of ms.undelivered) ms.required.delete(seq);
          ms.undelivered = [];
          ms.inflight.clear();
          ms.ready.clear();
          ms.delayed.clear();
        }
        for (const c of this.consumers) c.held = 0;
        this.stored = [];
        return;
      }
    }
  }

  /** Stored messages the ring must still hold: everything from its head on. */
  expectedRetained(): number {
    const headSeq = this.b.queue('q').ring.headSeq;
    return this.stored.filter((s) => s >= headSeq).length;
  }

  /** Consumer deliveries of the last turn, in the order they happened. */
  applyLog(): void {
    for (const { c, msgs } of this.log.splice(0)) {
      const ms = this.subs.find((s) => s.name === c.sub);
      expect(ms).toBeDefined();
      this.take(ms!, msgs, c);
    }
  }

  check(): void {
    const b = this.b;
    const qs = b.queueStats('q');
    const ring = b.queue('q').ring;
    expect(qs.memoryUsedBytes).toBeLessThanOrEqual(MEMORY); // invariant 4
    expect({ published: qs.published, dropped: qs.dropped, messages: qs.messages, subscriptions: qs.subscriptions })
      .toEqual({ published: this.published, dropped: this.dropped, messages: this.expectedRetained(), subscriptions: this.subs.map((s) => s.name) });
    for (const ms of this.subs) {
      // Nothing a subscription still needs has been reclaimed.
      const needed = [...ms.undelivered, ...ms.inflight.keys(), ...ms.ready.keys(), ...ms.delayed.keys()];
      for (const seq of needed) expect(seq).toBeGreaterThanOrEqual(ring.headSeq);
      const st = b.subscriptionInfo('q', ms.name);
      expect({ name: ms.name, backlog: st.backlog, inFlight: st.inFlight, delivered: st.delivered, acked: st.acked, redelivered: st.redelivered }).toEqual({
        name: ms.name, backlog: ms.undelivered.length + ms.ready.size + ms.delayed.size, inFlight: ms.inflight.size,
        delivered: ms.delivered, acked: ms.acked, redelivered: ms.redelivered,
      });
    }
    for (const c of this.consumers) {
      expect(c.unacked).toBe(c.held);
      expect(c.unacked).toBeLessThanOrEqual(c.prefetch);
      // A consumer with room is never left idle while its subscription has something to give.
      const ms = this.subs.find((s) => s.name === c.sub)!;
      if (c.unacked < c.prefetch) expect({ sub: ms.name, work: ms.ready.size + ms.undelivered.length }).toEqual({ sub: ms.name, work: 0 });
    }
  }

  /** Detaches everyone, plays every deadline out, and pulls and acks until nothing is left. */
  async drainAll(): Promise<void> {
    for (const c of this.consumers.splice(0)) {
      c.detach();
      this.requeue(this.subs.find((s) => s.name === c.sub)!, c);
    }
    for (const ms of this.subs) {
      this.b.subscription('q', ms.name).expire(FUTURE());
      this.requeue(ms);
      for (const [seq, attempt] of ms.delayed) ms.ready.set(seq, attempt);
      ms.delayed.clear();
      for (;;) {
        const got = await this.b.pullMessages('q', ms.name, { max: 1000 });
        this.take(ms, got, null, 1000);
        if (got.length === 0) break;
        expect(this.b.ack('q', ms.name, got.map((m) => m.id)).acked).toBe(got.length);
        for (const m of got) ms.inflight.delete(m.seq);
        ms.acked += got.length;
      }
      expect({ sub: ms.name, undelivered: ms.undelivered, inflight: ms.inflight.size, ready: ms.ready.size })
        .toEqual({ sub: ms.name, undelivered: [], inflight: 0, ready: 0 });
      // Invariant 1, spelled out: every message it had to get, it got.
      expect([...ms.required].filter((s) => !ms.got.has(s))).toEqual([]);
    }
    await turn();
    this.check();
    if (this.subs.length > 0) expect(this.b.queueStats('q')).toMatchObject({ messages: 0, memoryUsedBytes: 0 });
  }
}

afterEach(closeAll);

test('property - the broker agrees with a reference model over random commands on a tiny ring', async () => {
  const seed = process.env.SPILLWAY_FC_SEED === undefined ? undefined : Number(process.env.SPILLWAY_FC_SEED);
  await fc.assert(
    fc.asyncProperty(fc.array(cmdArb, { minLength: 1, maxLength: 60, size: 'max' }), async (cmds) => {
      const run = new Run();
      try {
        for (const cmd of cmds) {
          await run.step(cmd);
          await turn();
          run.applyLog();
          run.check();
        }
        await run.drainAll();
      } finally {
        closeAll();
      }
    }),
    // A failing run is shrunk for at most the rest of the time limit, then reported as it stands.
    { numRuns: 100, seed, interruptAfterTimeLimit: 40_000, markInterruptAsFailure: true },
  );
  // The runs did what they are meant to: wrap the ring, fill it, refuse bad batches, redeliver.
  expect(totals.wraps).toBeGreaterThan(40);
  expect(totals.full).toBeGreaterThan(20);
  expect(totals.invalid).toBeGreaterThan(20);
  expect(totals.redelivered).toBeGreaterThan(100);
}, 60_000);
