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
  /** The parsed wire object, not copied: a delivery costs one small object per message. */
  readonly #m: WireMessage;
  readonly #sink: AckSink;
  #settled = false;

  constructor(sink: AckSink, m: WireMessage) {
    this.#sink = sink;
    this.#m = m;
  }

  get id(): string { return this.#m.id; }
  get seq(): number { return this.#m.seq; }
  /** As on the wire: the text for utf8, base64 otherwise (see `bytes()` and `text()`). */
  get data(): string { return this.#m.data; }
  get encoding(): Encoding { return this.#m.encoding; }
  get attributes(): Record<string, string> { return this.#m.attributes; }
  get key(): string | undefined { return this.#m.key; }
  get publisherId(): string { return this.#m.publisherId; }
  get publisherSeq(): number | undefined { return this.#m.publisherSeq; }
  /** ISO time. */
  get publishedAt(): string { return this.#m.publishedAt; }
  /** 1 on first delivery, +1 on each redelivery. */
  get deliveryAttempt(): number { return this.#m.deliveryAttempt; }
  get queue(): string { return this.#sink.queue; }
  get subscription(): string { return this.#sink.subscription; }
  /** Whether ack or nack was called. */
  get settled(): boolean { return this.#settled; }

  ack(): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#sink.ack(this.#m.id);
  }

  /** Gives the message back: it is delivered again after `delayMs`. */
  nack(delayMs = 0): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#sink.nack(this.#m.id, delayMs);
  }

  /** Moves the ack deadline to `ackDeadlineMs` from now (REST: the WebSocket has no extend). */
  async extend(ackDeadlineMs: number, opts?: CallOptions): Promise<boolean> {
    const r = await this.#sink.extend([this.#m.id], ackDeadlineMs, opts);
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

  /** The message as delivered (API.md's Message). */
  toJSON(): WireMessage { return this.#m; }
}
