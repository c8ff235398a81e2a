'use strict';
// The baseline for the broker benchmarks: a plain JavaScript queue doing the same
// publish → deliver → ack work as a subscription (an array of messages holding Buffers,
// a cursor, an in-flight map keyed by seq, an ack that deletes and advances a floor, and
// delivery as the wire JSON of API.md), with no ring.

class JsQueue {
  constructor(subscriptions = 1) {
    this.messages = [];
    this.head = 0; // seq of messages[0]
    this.nextSeq = 0;
    this.subs = [];
    for (let i = 0; i < subscriptions; i++) this.subs.push({ cursor: 0, floor: 0, inflight: new Map() });
  }

  publish(publisherId, payloads) {
    const publishedAt = Date.now();
    for (const p of payloads) {
      const seq = this.nextSeq++;
      this.messages.push({ id: 'q-' + seq, seq, publishedAt, publisherId, attributes: {}, data: Buffer.from(p) });
    }
  }

  /** The delivery frame of a batch, as the wire shows it. */
  static encode(ms) {
    return Buffer.from(JSON.stringify({
      op: 'messages',
      messages: ms.map((m) => ({
        id: m.id, seq: m.seq, data: m.data.toString('utf8'), encoding: 'utf8', attributes: m.attributes,
        publisherId: m.publisherId, publishedAt: new Date(m.publishedAt).toISOString(), deliveryAttempt: 1,
      })),
    }));
  }

  /** Hands up to `max` messages to `deliver` for subscription `s`. */
  deliver(s, max, deliver) {
    const sub = this.subs[s];
    const out = [];
    while (out.length < max && sub.cursor < this.nextSeq) {
      const m = this.messages[sub.cursor - this.head];
      sub.inflight.set(m.seq, { deadline: Date.now() + 30000, attempt: 1 });
      out.push(m);
      sub.cursor++;
    }
    if (out.length > 0) deliver(out);
    return out.length;
  }

  ack(s, seqs) {
    const sub = this.subs[s];
    for (const seq of seqs) sub.inflight.delete(seq);
    while (sub.floor < sub.cursor && !sub.inflight.has(sub.floor)) sub.floor++;
    let min = Infinity;
    for (const x of this.subs) min = Math.min(min, x.floor);
    const drop = min - this.head;
    if (drop > 4096) {
      this.messages.splice(0, drop);
      this.head = min;
    }
  }
}

module.exports = { JsQueue };
