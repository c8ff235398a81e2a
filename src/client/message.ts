import { fromBase64, utf8Bytes } from './runtime';
import type { CallOptions, Encoding, ExtendResult, WireMessage } from './types';

/** Where a message's ack, nack and extend go: one per (queue, subscription), owned by the client. */
export interface AckSink {
  readonly queue: string;
  readonly subscription: string;
  ack(id: string): void;
  nack(id: string, delayMs: number): void;
  extend(ids: string[], ackDeadlineMs: number, opts?: CallOptions): Promise<ExtendResult>;
}

const decoder = new TextDecoder();

/**
 * A delivered message. `ack()` and `nack()` return at once: acks of one turn go out together in
 * one frame per subscription. A message is settled once; later calls are ignored.
 */
export class Message {
  readonly id: string;
  readonly seq: number;
  /** As on the wire: the text for utf8, base64 otherwise (see `bytes()` and `text()`). */
  readonly data: string;
  readonly encoding: Encoding;
  readonly attributes: Record<string, string>;
  readonly key: string | undefined;
  readonly publisherId: string;
  readonly publisherSeq: number | undefined;
  /** ISO time. */
  readonly publishedAt: string;
  /** 1 on first delivery, +1 on each redelivery. */
  readonly deliveryAttempt: number;
  readonly #sink: AckSink;
  #settled = false;

  constructor(sink: AckSink, m: WireMessage) {
    this.#sink = sink;
    this.id = m.id;
    this.seq = m.seq;
    this.data = m.data;
    this.encoding = m.encoding;
    this.attributes = m.attributes;
    this.key = m.key;
    this.publisherId = m.publisherId;
    this.publisherSeq = m.publisherSeq;
    this.publishedAt = m.publishedAt;
    this.deliveryAttempt = m.deliveryAttempt;
  }

  get queue(): string { return this.#sink.queue; }
  get subscription(): string { return this.#sink.subscription; }
  /** Whether ack or nack was called. */
  get settled(): boolean { return this.#settled; }

  ack(): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#sink.ack(this.id);
  }

  /** Gives the message back: it is delivered again after `delayMs`. */
  nack(delayMs = 0): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#sink.nack(this.id, delayMs);
  }

  /** Moves the ack deadline to `ackDeadlineMs` from now (REST: the WebSocket has no extend). */
  async extend(ackDeadlineMs: number, opts?: CallOptions): Promise<boolean> {
    const r = await this.#sink.extend([this.id], ackDeadlineMs, opts);
    return r.extended === 1;
  }

  /** The payload bytes. */
  bytes(): Uint8Array {
    return this.encoding === 'base64' ? fromBase64(this.data) : utf8Bytes(this.data);
  }

  /** The payload as text (base64 payloads are decoded as UTF-8). */
  text(): string {
    return this.encoding === 'base64' ? decoder.decode(fromBase64(this.data)) : this.data;
  }

  toJSON(): WireMessage {
    const o: WireMessage = {
      id: this.id, seq: this.seq, data: this.data, encoding: this.encoding, attributes: this.attributes,
      publisherId: this.publisherId, publishedAt: this.publishedAt, deliveryAttempt: this.deliveryAttempt,
    };
    if (this.key !== undefined) o.key = this.key;
    if (this.publisherSeq !== undefined) o.publisherSeq = this.publisherSeq;
    return o;
  }
}
