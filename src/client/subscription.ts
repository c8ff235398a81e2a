import { SpillwayClientError } from './errors';
import { Message, type AckSink } from './message';
import type { CallOptions, WireMessage } from './types';

export interface SubscribeOptions extends CallOptions {
  /** Most messages unacked on this connection for this subscription (server default 100). */
  prefetch?: number;
  /**
   * Callback API: each message is handed to this function instead of the async iterator.
   * It may return a promise; several run at once (up to `prefetch`).
   */
  onMessage?: (message: Message) => void | Promise<void>;
  /** With `onMessage`: ack when it returns (or its promise resolves), nack when it throws. */
  autoAck?: boolean;
  /** With `onMessage`: errors thrown by it (default: the client's `error` event). */
  onError?: (err: unknown, message: Message) => void;
}

export type EndReason = 'closed' | 'expired' | 'deleted' | 'error';

export interface SubscriptionEnd {
  reason: EndReason;
  error?: SpillwayClientError;
}

/** What a subscription needs from the client. */
export interface SubscriptionHost {
  /** Sends `{"op":"unsubscribe"}` if connected and forgets the subscription. */
  unsubscribe(sub: Subscription, timeoutMs: number | undefined): Promise<void>;
  reportError(err: unknown): void;
}

// Internal entry points, reachable only through these symbols (not exported by the package).
export const kDeliver = Symbol('deliver');
export const kLost = Symbol('lost');
export const kEnd = Symbol('end');

/**
 * A consumer of one subscription over the client's WebSocket: an async iterator of messages,
 * or a callback (`onMessage`). It survives reconnects: the client subscribes again, and the
 * messages buffered from the lost connection are dropped (the server delivers them again).
 */
export class Subscription implements AsyncIterableIterator<Message> {
  readonly queue: string;
  readonly name: string;
  readonly prefetch: number | undefined;
  /** Resolves when the subscription ends (close, expiry, deletion, or an error on re-subscribe). */
  readonly closed: Promise<SubscriptionEnd>;
  readonly #host: SubscriptionHost;
  readonly #sink: AckSink;
  readonly #handler: ((m: Message) => void | Promise<void>) | undefined;
  readonly #autoAck: boolean;
  readonly #onError: ((err: unknown, m: Message) => void) | undefined;
  #buf: Message[] = [];
  #head = 0;
  readonly #waiters: { resolve: (r: IteratorResult<Message>) => void; reject: (e: unknown) => void }[] = [];
  #end: SubscriptionEnd | undefined;
  #errorThrown = false;
  #resolveClosed!: (e: SubscriptionEnd) => void;
  #delivered = 0;

  constructor(host: SubscriptionHost, sink: AckSink, opts: SubscribeOptions) {
    this.#host = host;
    this.#sink = sink;
    this.queue = sink.queue;
    this.name = sink.subscription;
    this.prefetch = opts.prefetch;
    this.#handler = opts.onMessage;
    this.#autoAck = opts.autoAck === true;
    this.#onError = opts.onError;
    this.closed = new Promise((r) => { this.#resolveClosed = r; });
  }

  /** Messages received so far (first deliveries and redeliveries). */
  get delivered(): number { return this.#delivered; }
  /** Messages received and not yet taken from the iterator. */
  get buffered(): number { return this.#buf.length - this.#head; }
  get ended(): SubscriptionEnd | undefined { return this.#end; }

  next(): Promise<IteratorResult<Message>> {
    if (this.#head < this.#buf.length) return Promise.resolve({ value: this.#take(), done: false });
    if (this.#end !== undefined) {
      if (this.#end.error !== undefined && !this.#errorThrown) {
        this.#errorThrown = true;
        return Promise.reject(this.#end.error);
      }
      return Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  /** Leaving a `for await` loop unsubscribes. */
  async return(): Promise<IteratorResult<Message>> {
    await this.close();
    return { value: undefined, done: true };
  }

  [Symbol.asyncIterator](): this { return this; }

  /**
   * Unsubscribes. Acks already made are sent first. Messages not acked by then (buffered, or
   * taken and still being worked on) go back to the server, which delivers them again.
   */
  async close(opts: CallOptions = {}): Promise<void> {
    if (this.#end !== undefined) return;
    this[kEnd]({ reason: 'closed' });
    await this.#host.unsubscribe(this, opts.timeoutMs);
  }

  /** A `messages` frame for this subscription. */
  [kDeliver](msgs: WireMessage[]): void {
    const sink = this.#sink;
    const n = msgs.length;
    this.#delivered += n;
    const handler = this.#handler;
    if (handler !== undefined) {
      for (let i = 0; i < n; i++) this.#dispatch(handler, new Message(sink, msgs[i]!));
      return;
    }
    let i = 0;
    // Waiting next() calls first, the rest into the buffer.
    while (i < n && this.#waiters.length > 0) this.#waiters.shift()!.resolve({ value: new Message(sink, msgs[i++]!), done: false });
    for (; i < n; i++) this.#buf.push(new Message(sink, msgs[i]!));
  }

  /** The connection was lost: what was buffered from it will be delivered again. */
  [kLost](): void {
    this.#buf = [];
    this.#head = 0;
  }

  [kEnd](end: SubscriptionEnd): void {
    if (this.#end !== undefined) return;
    this.#end = end;
    this.#buf = [];
    this.#head = 0;
    for (const w of this.#waiters.splice(0)) {
      if (end.error !== undefined && !this.#errorThrown) {
        this.#errorThrown = true;
        w.reject(end.error);
      } else {
        w.resolve({ value: undefined, done: true });
      }
    }
    this.#resolveClosed(end);
  }

  #take(): Message {
    const m = this.#buf[this.#head]!;
    this.#buf[this.#head++] = undefined as unknown as Message;
    if (this.#head === this.#buf.length) {
      this.#buf.length = 0;
      this.#head = 0;
    } else if (this.#head >= 1024 && this.#head * 2 >= this.#buf.length) {
      this.#buf = this.#buf.slice(this.#head);
      this.#head = 0;
    }
    return m;
  }

  #dispatch(handler: (m: Message) => void | Promise<void>, m: Message): void {
    let r: void | Promise<void>;
    try {
      r = handler(m);
    } catch (err) {
      this.#failed(err, m);
      return;
    }
    if (r !== undefined && typeof (r as Promise<void>).then === 'function') {
      (r as Promise<void>).then(
        () => { if (this.#autoAck) m.ack(); },
        (err: unknown) => this.#failed(err, m),
      );
    } else if (this.#autoAck) {
      m.ack();
    }
  }

  #failed(err: unknown, m: Message): void {
    if (this.#autoAck) m.nack();
    if (this.#onError !== undefined) this.#onError(err, m);
    else this.#host.reportError(err);
  }
}
