import { SpillwayClientError, closedError, isSpillwayClientError, timeoutError } from './errors';
import { backgroundTimer, nextTurn, toBase64 } from './runtime';
import { seg } from './rest';
import type { CallOptions, MessageId, PublishInput, PublisherState } from './types';

/** Automatic batching of concurrent publishes: a batch goes out when full or after the linger. */
export interface BatchOptions {
  /** Messages a batch (1..1000; default 1000, the server's limit). */
  maxMessages?: number;
  /** JSON characters a batch (default 1 MiB). */
  maxBytes?: number;
  /** How long the first message of a batch waits for others (ms). 0 (default): the next turn of the loop. */
  lingerMs?: number;
}

export interface PublisherOptions {
  /** Default: the client's id for the client's own publisher, `<client id>.r<n>` for a repeatable one. */
  publisherId?: string;
  /**
   * Most messages held at once: queued and unanswered, and for a repeatable publisher also
   * accepted but not yet safe. `publish` waits for room beyond it (backpressure).
   */
  maxMessages?: number;
  /** The same bound in JSON characters. */
  maxBytes?: number;
  /** Repeatable: how often `safePublisherSeq` is read while messages are held (ms, default 100). */
  pollIntervalMs?: number;
}

export interface RestrictedEvent {
  queue: string;
  publisherId: string | undefined;
  reason: string;
  retryAfterMs: number;
  /** Messages waiting on this queue for the restriction to lift. */
  pendingMessages: number;
}

export interface ResumedEvent {
  queue: string;
  publisherId: string | undefined;
  /** How long publishes on this queue were held back. */
  waitedMs: number;
}

export type Frame = Record<string, unknown>;

/** A frame sent with a ref, waiting for its answer. */
export interface WsRequest {
  deadline: number;
  answer(f: Frame): void;
  fail(err: SpillwayClientError): void;
  /** The connection closed before the answer came. */
  lost(): void;
  /** The deadline passed without an answer. */
  expired(): void;
}

/** What publishing needs from the client. */
export interface PublishHost {
  readonly ready: boolean;
  readonly epoch: string | undefined;
  readonly timeoutMs: number;
  readonly batch: Required<BatchOptions>;
  readonly sequence: boolean;
  /** Connects if not yet connected; lanes are pumped again once ready. */
  start(): void;
  send(frame: string): void;
  /** Registers a request; returns its ref. */
  track(req: WsRequest): number;
  dropConnection(reason: string): void;
  rest<T>(method: string, path: string, body: unknown, timeoutMs?: number): Promise<T>;
  restricted(e: RestrictedEvent): void;
  resumed(e: ResumedEvent): void;
  reportError(err: unknown): void;
}

/** One `publish()` call: its messages, pre-encoded, and its promise. */
class Call {
  /** Each message's JSON without its closing brace (publisherSeq is appended when sent). */
  jsons: string[];
  count: number;
  bytes: number;
  /** publisherSeq of the first message; 0 until first sent, then fixed for every re-send. */
  firstSeq = 0;
  readonly single: boolean;
  resolve: ((v: MessageId | MessageId[]) => void) | undefined = undefined;
  reject: ((e: unknown) => void) | undefined = undefined;
  deadline = 0;
  /** The promise is settled (answered, timed out, refused); the messages may still be sent. */
  settled = false;
  /** Dropped before it was ever sent. */
  cancelled = false;
  /** The epoch it was accepted in (repeatable publishers keep it until safe). */
  epoch: string | undefined = undefined;

  constructor(jsons: string[], bytes: number, single: boolean) {
    this.jsons = jsons;
    this.count = jsons.length;
    this.bytes = bytes;
    this.single = single;
  }

  settle(err: unknown): void {
    if (this.settled) return;
    this.settled = true;
    const r = this.reject;
    this.resolve = this.reject = undefined;
    r?.(err);
  }
}

const MAX_BATCH = 1000;

function checkString(v: unknown, what: string): string {
  if (typeof v !== 'string') throw new SpillwayClientError('INVALID_ARGUMENT', `${what} must be a string`);
  return v;
}

/** One message as JSON without the closing brace. Cost: one string per message. */
function encodeMessage(m: PublishInput, i: number): string {
  if (typeof m === 'string') return '{"data":' + JSON.stringify(m);
  if (ArrayBuffer.isView(m)) return '{"data":"' + toBase64(m as Uint8Array) + '","encoding":"base64"';
  if (typeof m !== 'object' || m === null) throw new SpillwayClientError('INVALID_ARGUMENT', `message ${i}: a string, bytes or {data, attributes?, key?}`, { details: { index: i } });
  let s: string;
  const d = m.data;
  if (typeof d === 'string') {
    if (m.encoding === 'base64') s = '{"data":' + JSON.stringify(d) + ',"encoding":"base64"';
    else if (m.encoding === undefined || m.encoding === 'utf8') s = '{"data":' + JSON.stringify(d);
    else throw new SpillwayClientError('INVALID_ARGUMENT', `message ${i}: encoding must be "utf8" or "base64"`, { details: { index: i, field: 'encoding' } });
  } else if (ArrayBuffer.isView(d)) {
    s = '{"data":"' + toBase64(d as Uint8Array) + '","encoding":"base64"';
  } else {
    throw new SpillwayClientError('INVALID_ARGUMENT', `message ${i}: data must be a string or bytes`, { details: { index: i, field: 'data' } });
  }
  if (m.attributes !== undefined) {
    const a = m.attributes;
    if (typeof a !== 'object' || a === null || Array.isArray(a)) throw new SpillwayClientError('INVALID_ARGUMENT', `message ${i}: attributes must be an object of strings`, { details: { index: i, field: 'attributes' } });
    for (const k in a) checkString(a[k], `message ${i}: attribute ${k}`);
    s += ',"attributes":' + JSON.stringify(a);
  }
  if (m.key !== undefined) s += ',"key":' + JSON.stringify(checkString(m.key, `message ${i}: key`));
  return s;
}

/** Messages as JSON texts (for REST bodies: transactions). */
export function encodeMessages(input: PublishInput | readonly PublishInput[]): string[] {
  return makeCall(input).jsons.map((j) => j + '}');
}

function makeCall(input: PublishInput | readonly PublishInput[]): Call {
  if (Array.isArray(input)) {
    if (input.length > MAX_BATCH) throw new SpillwayClientError('INVALID_ARGUMENT', `at most ${MAX_BATCH} messages a publish call (got ${input.length})`);
    const jsons = new Array<string>(input.length);
    let bytes = 0;
    for (let i = 0; i < input.length; i++) {
      const j = encodeMessage(input[i] as PublishInput, i);
      jsons[i] = j;
      bytes += j.length + 24;
    }
    return new Call(jsons, bytes, false);
  }
  const j = encodeMessage(input as PublishInput, 0);
  return new Call([j], j.length + 24, true);
}

/**
 * The publishes of one publisher to one queue. At most one batch is unanswered at a time:
 * publisherSeqs must reach the server in order, and a refused batch (429) must not be
 * overtaken by a later one that is accepted, or its re-send would count as a duplicate.
 * What comes in while a batch is out makes the next batch, so batches grow with the load.
 */
class Lane implements WsRequest {
  readonly queue: string;
  readonly #pub: Publisher;
  readonly #host: PublishHost;
  /** `,"queue":…,"publisherId":…,"messages":[`, made once. */
  readonly #tail: string;
  #pending: Call[] = [];
  #head = 0;
  #pendMsgs = 0;
  #pendBytes = 0;
  #inflight: Call[] | undefined = undefined;
  #inflightMsgs = 0;
  deadline = 0;
  #retained: Call[] = [];
  #rHead = 0;
  #nextSeq = 1;
  #seqKnown: boolean;
  #seqLoading = false;
  #scheduled = false;
  #retry: ReturnType<typeof setTimeout> | undefined = undefined;
  #restriction: { since: number; reason: string; retryAt: number } | undefined = undefined;

  constructor(pub: Publisher, host: PublishHost, queue: string, seqKnown: boolean) {
    this.#pub = pub;
    this.#host = host;
    this.queue = queue;
    this.#seqKnown = seqKnown;
    const pid = pub.publisherId;
    this.#tail = ',"queue":' + JSON.stringify(queue) + (pid === undefined ? '' : ',"publisherId":' + JSON.stringify(pid)) + ',"messages":[';
  }

  get idle(): boolean { return this.#inflight === undefined && this.#pendMsgs === 0; }
  get retainedCount(): number { return this.#retained.length - this.#rHead; }

  status(): LaneStatus {
    const r = this.#restriction;
    return {
      queue: this.queue,
      state: r !== undefined && this.#retry !== undefined ? 'restricted'
        : this.#inflight !== undefined ? 'sending'
          : this.#pendMsgs > 0 ? (this.#host.ready ? 'queued' : 'disconnected') : 'idle',
      pendingMessages: this.#pendMsgs,
      inFlightMessages: this.#inflightMsgs,
      retainedMessages: this.#retained.slice(this.#rHead).reduce((n, c) => n + c.count, 0),
      ...(r !== undefined ? { restrictedReason: r.reason, retryAt: r.retryAt } : {}),
    };
  }

  enqueue(c: Call): void {
    this.#pending.push(c);
    this.#pendMsgs += c.count;
    this.#pendBytes += c.bytes;
    this.kick();
  }

  /** Sends now if a batch is full, else after the linger. */
  kick(): void {
    if (this.#inflight !== undefined || this.#retry !== undefined || this.#scheduled || this.#pendMsgs === 0) return;
    const host = this.#host;
    if (!host.ready) {
      host.start();
      return;
    }
    const b = host.batch;
    if (this.#pendMsgs >= b.maxMessages || this.#pendBytes >= b.maxBytes) {
      this.pump();
      return;
    }
    this.#scheduled = true;
    if (b.lingerMs > 0) backgroundTimer(this.#onLinger, b.lingerMs);
    else nextTurn(this.#onLinger);
  }

  readonly #onLinger = (): void => {
    this.#scheduled = false;
    this.pump();
  };

  /** Sends the next batch if nothing is unanswered. */
  pump(): void {
    const host = this.#host;
    if (this.#inflight !== undefined || this.#retry !== undefined || !host.ready || this.#pendMsgs === 0) return;
    const seq = host.sequence && this.#pub.publisherId !== undefined;
    if (seq && !this.#seqKnown) {
      this.#loadSeq();
      return;
    }
    const b = host.batch;
    const pending = this.#pending;
    const calls: Call[] = [];
    const parts: string[] = [];
    let msgs = 0;
    let bytes = 0;
    while (this.#head < pending.length) {
      const c = pending[this.#head]!;
      if (c.cancelled) {
        pending[this.#head++] = undefined as unknown as Call;
        continue;
      }
      if (calls.length > 0 && (msgs + c.count > b.maxMessages || bytes + c.bytes > b.maxBytes)) break;
      pending[this.#head++] = undefined as unknown as Call;
      calls.push(c);
      msgs += c.count;
      bytes += c.bytes;
      const js = c.jsons;
      if (seq) {
        if (c.firstSeq === 0) {
          c.firstSeq = this.#nextSeq;
          this.#nextSeq += c.count;
        }
        for (let i = 0; i < js.length; i++) parts.push(js[i] + ',"publisherSeq":' + (c.firstSeq + i) + '}');
      } else {
        for (let i = 0; i < js.length; i++) parts.push(js[i] + '}');
      }
    }
    if (this.#head === pending.length) {
      pending.length = 0;
      this.#head = 0;
    }
    if (calls.length === 0) return;
    this.#pendMsgs -= msgs;
    this.#pendBytes -= bytes;
    this.#inflight = calls;
    this.#inflightMsgs = msgs;
    this.deadline = Date.now() + host.timeoutMs;
    const ref = host.track(this);
    host.send('{"op":"publish","ref":' + ref + this.#tail + parts.join(',') + ']}');
  }

  // --- answers (WsRequest) ---------------------------------------------------------

  answer(f: Frame): void {
    const calls = this.#inflight;
    if (calls === undefined) return;
    this.#inflight = undefined;
    this.#inflightMsgs = 0;
    const ids = f.ids as MessageId[];
    let off = 0;
    for (const c of calls) {
      if (!c.settled) {
        c.settled = true;
        c.resolve!(c.single ? ids[off] ?? null : ids.slice(off, off + c.count));
      }
      c.resolve = c.reject = undefined;
      off += c.count;
    }
    const r = this.#restriction;
    if (r !== undefined) {
      this.#restriction = undefined;
      this.#host.resumed({ queue: this.queue, publisherId: this.#pub.publisherId, waitedMs: Date.now() - r.since });
    }
    if (this.#pub.repeatable) {
      const epoch = this.#host.epoch;
      for (const c of calls) {
        c.epoch = epoch;
        this.#retained.push(c);
      }
      this.#pub.retainedAdded();
    } else {
      let n = 0;
      let b = 0;
      for (const c of calls) { n += c.count; b += c.bytes; }
      this.#pub.release(n, b);
    }
    this.pump();
    if (this.idle) this.#pub.laneIdle();
  }

  fail(err: SpillwayClientError): void {
    const calls = this.#inflight;
    if (calls === undefined) return;
    this.#inflight = undefined;
    this.#inflightMsgs = 0;
    if (err.code === 'PUBLISHER_RESTRICTED' || err.code === 'SHUTTING_DOWN') {
      // Nothing was stored: the same batch goes again (with the same publisherSeqs) after the wait.
      this.#requeue(calls);
      const ms = Math.max(1, err.retryAfterMs ?? 1000);
      const now = Date.now();
      const reason = typeof err.details.reason === 'string' ? err.details.reason : err.code === 'SHUTTING_DOWN' ? 'shutting down' : 'restricted';
      if (this.#restriction === undefined) this.#restriction = { since: now, reason, retryAt: now + ms };
      else {
        this.#restriction.reason = reason;
        this.#restriction.retryAt = now + ms;
      }
      this.#retry = backgroundTimer(this.#onRetry, ms);
      this.#host.restricted({ queue: this.queue, publisherId: this.#pub.publisherId, reason, retryAfterMs: ms, pendingMessages: this.#pendMsgs });
      return;
    }
    // A batch is all or nothing: when the error names one message, only its call is refused.
    const idx = err.details.index;
    let refused = calls;
    if (typeof idx === 'number' && calls.length > 1) {
      let off = 0;
      for (const c of calls) {
        if (idx < off + c.count) {
          refused = [c];
          err.details.index = idx - off;
          break;
        }
        off += c.count;
      }
      if (refused !== calls) this.#requeue(calls.filter((c) => c !== refused[0]));
    }
    this.#refuse(refused, err);
    this.pump();
    if (this.idle) this.#pub.laneIdle();
  }

  lost(): void {
    const calls = this.#inflight;
    if (calls === undefined) return;
    this.#inflight = undefined;
    this.#inflightMsgs = 0;
    // The outcome is unknown: send them again with the same publisherSeqs (duplicates are dropped).
    this.#requeue(calls);
  }

  expired(): void {
    // The server answers frames in order: no answer means the connection is stuck.
    this.#host.dropConnection('no answer to a publish within the timeout');
  }

  readonly #onRetry = (): void => {
    this.#retry = undefined;
    this.pump();
    if (this.#inflight === undefined) this.kick();
  };

  #requeue(calls: Call[]): void {
    for (const c of calls) {
      this.#pendMsgs += c.count;
      this.#pendBytes += c.bytes;
    }
    if (this.#head >= calls.length) {
      this.#head -= calls.length;
      for (let i = 0; i < calls.length; i++) this.#pending[this.#head + i] = calls[i]!;
    } else {
      this.#pending = calls.concat(this.#pending.slice(this.#head));
      this.#head = 0;
    }
  }

  #refuse(calls: Call[], err: SpillwayClientError): void {
    let n = 0;
    let b = 0;
    for (const c of calls) {
      n += c.count;
      b += c.bytes;
      // Re-sends of a repeatable publisher have no caller left: the error goes to the client's event.
      if (c.settled) this.#host.reportError(err);
      else c.settle(err);
    }
    this.#pub.release(n, b);
  }

  /** A publisher id chosen by the user may have numbered messages before: continue after its last. */
  #loadSeq(): void {
    if (this.#seqLoading) return;
    this.#seqLoading = true;
    const pid = this.#pub.publisherId!;
    this.#host.rest<PublisherState>('GET', `/v1/queues/${seg(this.queue)}/publishers/${seg(pid)}`, undefined).then(
      (s) => s.lastPublisherSeq ?? 0,
      (err: unknown) => {
        if (isSpillwayClientError(err) && err.code === 'NOT_FOUND') return 0;
        if (isSpillwayClientError(err) && err.code !== 'NETWORK' && err.code !== 'TIMEOUT') {
          // QUEUE_NOT_FOUND, FORBIDDEN, …: the publishes waiting would get the same answer.
          this.#refuse(this.#takePending(), err);
          this.#pub.laneIdle();
        }
        return -1;
      },
    ).then((last) => {
      this.#seqLoading = false;
      if (last >= 0) {
        this.#nextSeq = Math.max(this.#nextSeq, last + 1);
        this.#seqKnown = true;
        this.pump();
      } else if (this.#pendMsgs > 0) {
        backgroundTimer(() => this.pump(), 200);
      }
    });
  }

  #takePending(): Call[] {
    const out = this.#pending.slice(this.#head).filter((c) => !c.cancelled);
    this.#pending = [];
    this.#head = 0;
    this.#pendMsgs = this.#pendBytes = 0;
    return out;
  }

  // --- deadlines, safety, restarts ---------------------------------------------------

  /** Times out the calls whose deadline passed (called by the client's single sweep timer). */
  sweep(now: number): void {
    const pending = this.#pending;
    for (let i = this.#head; i < pending.length; i++) {
      const c = pending[i]!;
      if (c.settled || c.deadline > now) continue;
      if (c.firstSeq === 0) {
        // Never sent: withdraw it.
        c.cancelled = true;
        this.#pendMsgs -= c.count;
        this.#pendBytes -= c.bytes;
        this.#pub.release(c.count, c.bytes);
      }
      c.settle(timeoutError(`publish to ${this.queue}`, this.#host.timeoutMs));
    }
    const inflight = this.#inflight;
    if (inflight !== undefined) {
      // Sent and unanswered: the caller is told, the batch stays (its outcome is still to come).
      for (const c of inflight) if (!c.settled && c.deadline <= now) c.settle(timeoutError(`publish to ${this.queue}`, this.#host.timeoutMs));
    }
    if (this.idle) this.#pub.laneIdle();
  }

  /** Forgets what the server reports safe (acked by every subscription) in `epoch`. */
  trim(epoch: string, safeSeq: number): void {
    const r = this.#retained;
    let n = 0;
    let b = 0;
    while (this.#rHead < r.length) {
      const c = r[this.#rHead]!;
      if (c.epoch !== epoch || c.firstSeq > safeSeq) break;
      const last = c.firstSeq + c.count - 1;
      if (last <= safeSeq) {
        r[this.#rHead++] = undefined as unknown as Call;
        n += c.count;
        b += c.bytes;
        continue;
      }
      const k = safeSeq - c.firstSeq + 1;
      const part = Math.round((c.bytes * k) / c.count);
      c.jsons = c.jsons.slice(k);
      c.firstSeq += k;
      c.count -= k;
      c.bytes -= part;
      n += k;
      b += part;
      break;
    }
    if (this.#rHead === r.length) {
      r.length = 0;
      this.#rHead = 0;
    }
    if (n > 0) this.#pub.release(n, b);
  }

  /** Everything retained from `epoch` is safe (the server no longer knows the publisher: it held nothing). */
  trimAll(epoch: string): void { this.trim(epoch, Number.MAX_SAFE_INTEGER); }

  /** The queue is gone: what was retained for it can never be delivered. */
  dropRetained(err: SpillwayClientError): void {
    const r = this.#retained.slice(this.#rHead);
    this.#retained = [];
    this.#rHead = 0;
    if (r.length === 0) return;
    let n = 0;
    let b = 0;
    for (const c of r) { n += c.count; b += c.bytes; }
    this.#host.reportError(err);
    this.#pub.release(n, b);
  }

  /**
   * Connected (again). After a server restart (`epochChanged`) the messages accepted by the
   * old run and not known to be safe go first, with their publisherSeqs, before anything newer.
   */
  ready(epochChanged: boolean): void {
    if (epochChanged && this.#rHead < this.#retained.length) {
      const back = this.#retained.slice(this.#rHead);
      this.#retained = [];
      this.#rHead = 0;
      this.#requeue(back);
    }
    this.pump();
    if (this.#inflight === undefined) this.kick();
  }

  /** Rejects everything not yet answered (client closed). */
  abort(err: SpillwayClientError): void {
    if (this.#retry !== undefined) {
      clearTimeout(this.#retry);
      this.#retry = undefined;
    }
    const calls = [...(this.#inflight ?? []), ...this.#takePending()];
    this.#inflight = undefined;
    this.#inflightMsgs = 0;
    let n = 0;
    let b = 0;
    for (const c of calls) {
      n += c.count;
      b += c.bytes;
      c.settle(err);
    }
    this.#pub.release(n, b);
  }
}

export interface LaneStatus {
  queue: string;
  /** `restricted`: held back by PUBLISHER_RESTRICTED until `retryAt`. */
  state: 'idle' | 'queued' | 'sending' | 'restricted' | 'disconnected';
  pendingMessages: number;
  inFlightMessages: number;
  retainedMessages: number;
  restrictedReason?: string;
  /** Epoch ms of the next attempt. */
  retryAt?: number;
}

export interface PublisherStats {
  /** Messages held: queued, unanswered, and (repeatable) accepted but not yet safe. */
  messages: number;
  bytes: number;
  /** publish() calls waiting for room. */
  waiting: number;
  queues: LaneStatus[];
}

/**
 * A publisher: lanes per queue, a bound on what it holds (publish waits beyond it), and for a
 * repeatable publisher the messages accepted but not yet safe, re-sent after a server restart.
 */
export class Publisher {
  readonly publisherId: string | undefined;
  readonly repeatable: boolean;
  readonly #host: PublishHost;
  readonly #lanes = new Map<string, Lane>();
  readonly #maxMessages: number;
  readonly #maxBytes: number;
  readonly #pollMs: number;
  readonly #seqKnown: boolean;
  #messages = 0;
  #bytes = 0;
  #waiters: { lane: Lane; call: Call }[] = [];
  #idleWaiters: (() => void)[] = [];
  #emptyWaiters: (() => void)[] = [];
  #poll: ReturnType<typeof setTimeout> | undefined = undefined;
  #polling = false;
  #closed = false;

  /** @param seqKnown false when the id was chosen by the user: numbering continues after the server's lastPublisherSeq. */
  constructor(host: PublishHost, publisherId: string | undefined, repeatable: boolean, seqKnown: boolean, opts: PublisherOptions) {
    this.#host = host;
    this.publisherId = publisherId;
    this.repeatable = repeatable;
    this.#seqKnown = seqKnown;
    this.#maxMessages = opts.maxMessages ?? (repeatable ? 10_000 : 100_000);
    this.#maxBytes = opts.maxBytes ?? (repeatable ? 16 * 1024 * 1024 : 64 * 1024 * 1024);
    this.#pollMs = opts.pollIntervalMs ?? 100;
  }

  /**
   * Publishes one message (resolves with its id) or an array of up to 1000 (resolves with
   * their ids; all or nothing). Resolves once the server accepted it; waits first while the
   * publisher holds its maximum; rides out reconnects and 429s.
   */
  publish(queue: string, message: PublishInput, opts?: CallOptions): Promise<MessageId>;
  publish(queue: string, messages: readonly PublishInput[], opts?: CallOptions): Promise<MessageId[]>;
  publish(queue: string, input: PublishInput | readonly PublishInput[], opts?: CallOptions): Promise<MessageId | MessageId[]>;
  publish(queue: string, input: PublishInput | readonly PublishInput[], opts?: CallOptions): Promise<MessageId | MessageId[]> {
    if (this.#closed) return Promise.reject(closedError('the publisher is closed'));
    let call: Call;
    try {
      if (typeof queue !== 'string' || queue.length === 0) throw new SpillwayClientError('INVALID_ARGUMENT', 'queue must be a non-empty string');
      call = makeCall(input);
    } catch (err) {
      return Promise.reject(err);
    }
    if (call.count === 0) return Promise.resolve([]);
    call.deadline = Date.now() + (opts?.timeoutMs ?? this.#host.timeoutMs);
    const lane = this.#lane(queue);
    return new Promise<MessageId | MessageId[]>((resolve, reject) => {
      call.resolve = resolve;
      call.reject = reject;
      if (this.#waiters.length === 0 && this.#fits(call)) this.#admit(lane, call);
      else this.#waiters.push({ lane, call });
    });
  }

  /** Resolves when nothing is queued or unanswered (and, repeatable, everything is safe). */
  flush(opts: CallOptions = {}): Promise<void> {
    return this.#waitFor(this.#emptyWaiters, () => this.#messages === 0, opts.timeoutMs ?? this.#host.timeoutMs, 'flush');
  }

  stats(): PublisherStats {
    return { messages: this.#messages, bytes: this.#bytes, waiting: this.#waiters.length, queues: [...this.#lanes.values()].map((l) => l.status()) };
  }

  /** Where publishes to `queue` stand: `restricted` while a 429 is being waited out. */
  status(queue: string): LaneStatus | undefined { return this.#lanes.get(queue)?.status(); }

  /** Stops: what is not yet answered is rejected with CLOSED; retained messages are forgotten. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const err = closedError('the publisher is closed');
    for (const w of this.#waiters.splice(0)) w.call.settle(err);
    for (const l of this.#lanes.values()) l.abort(err);
    if (this.#poll !== undefined) clearTimeout(this.#poll);
    this.#poll = undefined;
    for (const w of [...this.#idleWaiters.splice(0), ...this.#emptyWaiters.splice(0)]) w();
  }

  get closed(): boolean { return this.#closed; }

  // --- used by the client and the lanes ------------------------------------------

  /** Resolves when no lane has anything queued or unanswered (close() drains with it). */
  idle(timeoutMs: number): Promise<void> {
    return this.#waitFor(this.#idleWaiters, () => this.#allIdle(), timeoutMs, 'drain');
  }

  ready(epochChanged: boolean): void {
    for (const l of this.#lanes.values()) l.ready(epochChanged);
    if (epochChanged && this.repeatable) this.#schedulePoll();
  }

  sweep(now: number): void {
    if (this.#waiters.length > 0) {
      const keep: { lane: Lane; call: Call }[] = [];
      for (const w of this.#waiters) {
        if (w.call.deadline <= now) w.call.settle(timeoutError(`publish to ${w.lane.queue} (waiting for room)`, this.#host.timeoutMs));
        else keep.push(w);
      }
      this.#waiters = keep;
    }
    for (const l of this.#lanes.values()) l.sweep(now);
  }

  release(messages: number, bytes: number): void {
    this.#messages -= messages;
    this.#bytes -= bytes;
    while (this.#waiters.length > 0 && this.#fits(this.#waiters[0]!.call)) {
      const w = this.#waiters.shift()!;
      this.#admit(w.lane, w.call);
    }
    if (this.#messages === 0 && this.#emptyWaiters.length > 0) for (const w of this.#emptyWaiters.splice(0)) w();
  }

  laneIdle(): void {
    if (this.#idleWaiters.length > 0 && this.#allIdle()) for (const w of this.#idleWaiters.splice(0)) w();
  }

  retainedAdded(): void {
    if (this.#poll === undefined && !this.#polling) this.#schedulePoll();
  }

  // --- private -----------------------------------------------------------------------

  #lane(queue: string): Lane {
    let l = this.#lanes.get(queue);
    if (l === undefined) {
      l = new Lane(this, this.#host, queue, this.#seqKnown);
      this.#lanes.set(queue, l);
    }
    return l;
  }

  #fits(c: Call): boolean {
    // An empty publisher takes any call, so one bigger than the bound still goes.
    return this.#messages === 0 || (this.#messages + c.count <= this.#maxMessages && this.#bytes + c.bytes <= this.#maxBytes);
  }

  #admit(lane: Lane, c: Call): void {
    if (c.settled) return;
    this.#messages += c.count;
    this.#bytes += c.bytes;
    lane.enqueue(c);
  }

  #allIdle(): boolean {
    if (this.#waiters.length > 0) return false;
    for (const l of this.#lanes.values()) if (!l.idle) return false;
    return true;
  }

  #waitFor(list: (() => void)[], done: () => boolean, timeoutMs: number, what: string): Promise<void> {
    if (done() || this.#closed) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        const i = list.indexOf(w);
        if (i >= 0) list.splice(i, 1);
        reject(timeoutError(`${what} of publisher ${this.publisherId ?? ''}`, timeoutMs));
      }, timeoutMs);
      const w = () => {
        clearTimeout(t);
        resolve();
      };
      list.push(w);
    });
  }

  #schedulePoll(): void {
    if (this.#closed || this.#poll !== undefined) return;
    this.#poll = backgroundTimer(() => {
      this.#poll = undefined;
      void this.#pollOnce();
    }, this.#pollMs);
  }

  /** Reads safePublisherSeq for every queue with retained messages, and forgets what is safe. */
  async #pollOnce(): Promise<void> {
    if (this.#polling || this.#closed) return;
    this.#polling = true;
    const host = this.#host;
    try {
      const lanes = [...this.#lanes.values()].filter((l) => l.retainedCount > 0);
      if (!host.ready) return;
      await Promise.all(lanes.map(async (l) => {
        try {
          const s = await host.rest<PublisherState>('GET', `/v1/queues/${seg(l.queue)}/publishers/${seg(this.publisherId!)}`, undefined);
          if (s.safePublisherSeq !== undefined) l.trim(s.epoch, s.safePublisherSeq);
        } catch (err) {
          if (!isSpillwayClientError(err)) throw err;
          if (err.code === 'NOT_FOUND') {
            // Unknown publisher: in the same run that means it held nothing (every message was released).
            const h = await host.rest<{ epoch: string }>('GET', '/healthz', undefined);
            l.trimAll(h.epoch);
          } else if (err.code === 'QUEUE_NOT_FOUND') {
            l.dropRetained(err);
          }
          // Network errors: the next poll tries again; a restart is seen by the reconnect.
        }
      }));
    } catch (err) {
      host.reportError(err);
    } finally {
      this.#polling = false;
      if ([...this.#lanes.values()].some((l) => l.retainedCount > 0)) this.#schedulePoll();
    }
  }
}
