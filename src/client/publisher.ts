import { SpillwayClientError, closedError, isSpillwayClientError, timeoutError } from './errors';
import { backgroundTimer, nextTurn, toBase64 } from './runtime';
import { seg } from './rest';
import type { CallOptions, MessageId, PublishInput, PublisherState } from './types';

/** Automatic batching of concurrent publishes: a batch goes out when full or after the linger. */
export interface BatchOptions {
  /** Messages a batch (1..1000; default 1000, the server's limit). */
  maxMessages?: number;
  /** JSON characters a batch (default 64 KiB: frames stay clear of V8's 128 KiB large-object strings). */
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
  /**
   * A clock read at each sweep (never behind Date.now() by more than a sweep period). Deadlines
   * of publish calls are computed from it with one period added: a call may time out up to one
   * period late, never early, and no call reads the system clock.
   */
  readonly clock: number;
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
/** One `publish()` call: how many messages, and its promise. The messages themselves sit in the lane. */
/** How a call's queued items are turned into message JSON when a batch is built. */
const PREFIX = 0; // '{"data":…' without the closing brace: publisherSeq and '}' are appended
const PLAIN = 1; // the caller's text itself, which JSON carries as it is (the hot path: no string made per call)
const FINAL = 2; // complete message JSON, publisherSeq included (re-sends of retained messages)

class Call {
  readonly count: number;
  readonly kind: number;
  /** For the publisher's bound (JSON characters, estimated at encoding). */
  readonly bytes: number;
  readonly single: boolean;
  /** publisherSeq of the first message (0: not numbered yet); the others follow it. */
  firstSeq = 0;
  /** Re-sends of retained messages: their publisherSeqs, which need not be consecutive. */
  seqs: number[] | undefined = undefined;
  resolve: ((v: MessageId | MessageId[]) => void) | undefined = undefined;
  reject: ((e: unknown) => void) | undefined = undefined;
  deadline = 0;
  /** The promise is settled (answered, timed out, refused); the messages may still be in flight. */
  settled = false;
  /** Was in a batch at least once (so it may have been stored). */
  sent = false;
  /** Withdrawn before it was ever sent. */
  cancelled = false;

  constructor(count: number, bytes: number, single: boolean, kind: number) {
    this.count = count;
    this.bytes = bytes;
    this.single = single;
    this.kind = kind;
  }

  settle(err: unknown): void {
    if (this.settled) return;
    this.settled = true;
    const r = this.reject;
    this.resolve = this.reject = undefined;
    r?.(err);
  }
}

/** Messages of one accepted batch that a repeatable publisher keeps until they are safe. */
interface Retained {
  msgs: string[];
  seqs: number[];
  head: number;
  /** Bytes of the messages from `head` on (released in proportion, the remainder last). */
  bytes: number;
  epoch: string | undefined;
}

/** A batch on the wire. */
interface Batch {
  calls: Call[];
  msgs: string[];
}

const MAX_BATCH = 1000;

/** The resolve and reject of the promise made last (see Publisher.publish). */
const captured: { resolve: ((v: MessageId | MessageId[]) => void) | undefined; reject: ((e: unknown) => void) | undefined } = { resolve: undefined, reject: undefined };
const capture = (resolve: (v: MessageId | MessageId[]) => void, reject: (e: unknown) => void): void => {
  captured.resolve = resolve;
  captured.reject = reject;
};
/** Per-message allowance for the envelope and the publisherSeq in the byte estimate. */
const MESSAGE_OVERHEAD = 24;
/** The same for a plain text message, whose `{"data":"…"` is not in its length. */
const PLAIN_OVERHEAD = MESSAGE_OVERHEAD + 10;

function checkString(v: unknown, what: string): string {
  if (typeof v !== 'string') throw new SpillwayClientError('INVALID_ARGUMENT', `${what} must be a string`);
  return v;
}

/** Text that JSON carries as it is (no quote, backslash, control character or surrogate). */
const PLAIN_TEXT = /^[^"\\\u0000-\u001f\u2028\u2029\ud800-\udfff]*$/;

const isPlain = (s: string): boolean => s.length <= 4096 && PLAIN_TEXT.test(s);
/** A JSON string literal; plain text is only quoted, not copied by JSON.stringify. */
const quote = (s: string): string => (isPlain(s) ? '"' + s + '"' : JSON.stringify(s));

/** The byte estimate of an array of texts that JSON carries as they are, or -1 when one is not. */
function plainTexts(input: readonly unknown[]): number {
  let bytes = 0;
  for (let i = 0; i < input.length; i++) {
    const m = input[i];
    if (typeof m !== 'string' || !isPlain(m)) return -1;
    bytes += m.length + PLAIN_OVERHEAD;
  }
  return bytes;
}

/** One message as JSON without its closing brace (the lane adds publisherSeq). Cost: one string per message. */
function encodeMessage(m: PublishInput, i: number): string {
  if (typeof m === 'string') return '{"data":' + quote(m);
  if (ArrayBuffer.isView(m)) return '{"data":"' + toBase64(m as Uint8Array) + '","encoding":"base64"';
  if (typeof m !== 'object' || m === null) throw new SpillwayClientError('INVALID_ARGUMENT', `message ${i}: a string, bytes or {data, attributes?, key?}`, { details: { index: i } });
  let s: string;
  const d = m.data;
  if (typeof d === 'string') {
    if (m.encoding === 'base64') s = '{"data":' + JSON.stringify(d) + ',"encoding":"base64"';
    else if (m.encoding === undefined || m.encoding === 'utf8') s = '{"data":' + quote(d);
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

/** A publish call's messages, encoded (without closing braces): a string for one, an array for several. */
function encode(input: PublishInput | readonly PublishInput[]): string | string[] {
  if (Array.isArray(input)) {
    if (input.length > MAX_BATCH) throw new SpillwayClientError('INVALID_ARGUMENT', `at most ${MAX_BATCH} messages a publish call (got ${input.length})`);
    const raw = new Array<string>(input.length);
    for (let i = 0; i < input.length; i++) raw[i] = encodeMessage(input[i] as PublishInput, i);
    return raw;
  }
  return encodeMessage(input as PublishInput, 0);
}

/** Messages as JSON texts (for REST bodies: transactions). */
export function encodeMessages(input: PublishInput | readonly PublishInput[]): string[] {
  const e = encode(input);
  return typeof e === 'string' ? [e + '}'] : e.map((j) => j + '}');
}

/**
 * The publishes of one publisher to one queue. At most one batch is unanswered at a time:
 * publisherSeqs must reach the server in order, and a refused batch (429) must not be
 * overtaken by a later one that is accepted, or its re-send would count as a duplicate.
 * What comes in while a batch is out makes the next batch, so batches grow with the load.
 *
 * Queued items (see Call.kind) sit in one array, in order, next to the calls that own them.
 * A batch is a run of them, numbered when first sent and written into one frame by one string
 * builder; the same items and numbers serve every re-send.
 */
class Lane implements WsRequest {
  readonly queue: string;
  readonly #pub: Publisher;
  readonly #host: PublishHost;
  /** `,"queue":…,"publisherId":…,"messages":[`, made once. */
  readonly #tail: string;
  readonly #seqMode: boolean;
  #msgs: string[] = [];
  #mHead = 0;
  #calls: Call[] = [];
  #cHead = 0;
  /** Queued, not cancelled. */
  #pendMsgs = 0;
  #pendBytes = 0;
  /** Cancelled calls still in #calls (their messages are skipped when batching). */
  #cancelled = 0;
  #inflight: Batch | undefined = undefined;
  deadline = 0;
  #retained: Retained[] = [];
  #rHead = 0;
  #retainedMsgs = 0;
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
    this.#seqMode = host.sequence && pid !== undefined;
    this.#tail = ',"queue":' + JSON.stringify(queue) + (pid === undefined ? '' : ',"publisherId":' + JSON.stringify(pid)) + ',"messages":[';
  }

  get idle(): boolean { return this.#inflight === undefined && this.#pendMsgs === 0; }
  get retainedCount(): number { return this.#retainedMsgs; }

  status(): LaneStatus {
    const r = this.#restriction;
    return {
      queue: this.queue,
      state: r !== undefined && this.#retry !== undefined ? 'restricted'
        : this.#inflight !== undefined ? 'sending'
          : this.#pendMsgs > 0 ? (this.#host.ready ? 'queued' : 'disconnected') : 'idle',
      pendingMessages: this.#pendMsgs,
      inFlightMessages: this.#inflight?.msgs.length ?? 0,
      retainedMessages: this.#retainedMsgs,
      ...(r !== undefined ? { restrictedReason: r.reason, retryAt: r.retryAt } : {}),
    };
  }

  /** Queues a call's items (see Call.kind); they are numbered when first sent. */
  enqueue(c: Call, raw: string | string[]): void {
    if (typeof raw === 'string') this.#msgs.push(raw);
    else for (let i = 0; i < raw.length; i++) this.#msgs.push(raw[i]!);
    this.#calls.push(c);
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
    const seq = this.#seqMode;
    if (seq && !this.#seqKnown) {
      this.#loadSeq();
      return;
    }
    const b = host.batch;
    const calls = this.#calls;
    const msgs = this.#msgs;
    const batchCalls: Call[] = [];
    const start = this.#mHead;
    let ci = this.#cHead;
    let mi = start;
    let n = 0;
    let bytes = 0;
    // Copied message by message only when cancelled calls sit in the range; else one slice.
    let out: string[] | undefined;
    while (ci < calls.length) {
      const c = calls[ci]!;
      if (c.cancelled) {
        out ??= msgs.slice(start, mi);
        this.#cancelled--;
        calls[ci++] = undefined as unknown as Call;
        mi += c.count;
        continue;
      }
      if (batchCalls.length > 0 && (n + c.count > b.maxMessages || bytes + c.bytes > b.maxBytes)) break;
      batchCalls.push(c);
      c.sent = true;
      if (c.firstSeq === 0 && seq) {
        c.firstSeq = this.#nextSeq;
        this.#nextSeq += c.count;
      }
      n += c.count;
      bytes += c.bytes;
      if (out !== undefined) for (let k = 0; k < c.count; k++) out.push(msgs[mi + k]!);
      calls[ci++] = undefined as unknown as Call;
      mi += c.count;
    }
    const batchMsgs = out ?? msgs.slice(start, mi);
    this.#cHead = ci;
    this.#mHead = mi;
    this.#compact();
    if (batchCalls.length === 0) return;
    this.#pendMsgs -= n;
    this.#pendBytes -= bytes;
    this.#inflight = { calls: batchCalls, msgs: batchMsgs };
    this.deadline = Date.now() + host.timeoutMs;
    const ref = host.track(this);
    host.send(this.#frame(ref, batchCalls, batchMsgs, seq));
  }

  /** The publish frame of a batch, built in one string builder (one flat copy when it is sent). */
  #frame(ref: number, calls: Call[], msgs: string[], seq: boolean): string {
    let s = '{"op":"publish","ref":' + ref + this.#tail;
    let mi = 0;
    for (let ci = 0; ci < calls.length; ci++) {
      const c = calls[ci]!;
      const kind = c.kind;
      const seqs = c.seqs;
      for (let k = 0; k < c.count; k++) {
        const m = msgs[mi]!;
        if (mi++ > 0) s += ',';
        if (kind === FINAL) {
          s += m;
          continue;
        }
        s += kind === PLAIN ? '{"data":"' + m + '"' : m;
        s += seq ? ',"publisherSeq":' + (seqs === undefined ? c.firstSeq + k : seqs[k]!) + '}' : '}';
      }
    }
    return s + ']}';
  }

  /** Complete message JSON of a batch's items (kept by repeatable publishers for re-sends). */
  #finals(calls: Call[], msgs: string[], seq: boolean): string[] {
    const out = new Array<string>(msgs.length);
    let mi = 0;
    for (const c of calls) {
      for (let k = 0; k < c.count; k++, mi++) {
        const m = msgs[mi]!;
        if (c.kind === FINAL) out[mi] = m;
        else {
          const head = c.kind === PLAIN ? '{"data":"' + m + '"' : m;
          out[mi] = head + (seq ? ',"publisherSeq":' + (c.seqs === undefined ? c.firstSeq + k : c.seqs[k]!) + '}' : '}');
        }
      }
    }
    return out;
  }

  #compact(): void {
    if (this.#cHead === this.#calls.length) {
      this.#calls.length = 0;
      this.#msgs.length = 0;
      this.#cHead = this.#mHead = 0;
    } else if (this.#cHead >= 1024 && this.#cHead * 2 >= this.#calls.length) {
      this.#calls = this.#calls.slice(this.#cHead);
      this.#msgs = this.#msgs.slice(this.#mHead);
      this.#cHead = this.#mHead = 0;
    }
  }

  // --- answers (WsRequest) ---------------------------------------------------------

  answer(f: Frame): void {
    const batch = this.#inflight;
    if (batch === undefined) return;
    this.#inflight = undefined;
    const ids = f.ids as MessageId[];
    let off = 0;
    let bytes = 0;
    for (const c of batch.calls) {
      if (!c.settled) {
        c.settled = true;
        c.resolve!(c.single ? ids[off] ?? null : ids.slice(off, off + c.count));
      }
      c.resolve = c.reject = undefined;
      off += c.count;
      bytes += c.bytes;
    }
    const r = this.#restriction;
    if (r !== undefined) {
      this.#restriction = undefined;
      this.#host.resumed({ queue: this.queue, publisherId: this.#pub.publisherId, waitedMs: Date.now() - r.since });
    }
    if (this.#pub.repeatable) {
      const seqs = new Array<number>(off);
      let i = 0;
      for (const c of batch.calls) {
        if (c.seqs !== undefined) for (const s of c.seqs) seqs[i++] = s;
        else for (let k = 0; k < c.count; k++) seqs[i++] = c.firstSeq + k;
      }
      this.#retained.push({ msgs: this.#finals(batch.calls, batch.msgs, this.#seqMode), seqs, head: 0, bytes, epoch: this.#host.epoch });
      this.#retainedMsgs += off;
      this.#pub.retainedAdded();
    } else {
      this.#pub.release(off, bytes);
    }
    this.pump();
    if (this.idle) this.#pub.laneIdle();
  }

  fail(err: SpillwayClientError): void {
    const batch = this.#inflight;
    if (batch === undefined) return;
    this.#inflight = undefined;
    if (err.code === 'PUBLISHER_RESTRICTED' || err.code === 'SHUTTING_DOWN') {
      // Nothing was stored: the same messages go again (same publisherSeqs) after the wait.
      this.#requeue(batch.calls, batch.msgs);
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
    if (typeof idx === 'number' && batch.calls.length > 1) {
      let off = 0;
      for (const c of batch.calls) {
        if (idx < off + c.count) {
          err.details.index = idx - off;
          const rest = batch.calls.filter((x) => x !== c);
          this.#requeue(rest, batch.msgs.slice(0, off).concat(batch.msgs.slice(off + c.count)));
          this.#refuse([c], err);
          break;
        }
        off += c.count;
      }
    } else {
      this.#refuse(batch.calls, err);
    }
    this.pump();
    if (this.idle) this.#pub.laneIdle();
  }

  lost(): void {
    const batch = this.#inflight;
    if (batch === undefined) return;
    this.#inflight = undefined;
    // The outcome is unknown: send them again with the same publisherSeqs (duplicates are dropped).
    this.#requeue(batch.calls, batch.msgs);
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

  /** Puts calls and their messages back at the head of the queue, in order. */
  #requeue(calls: Call[], msgs: string[]): void {
    for (const c of calls) {
      this.#pendMsgs += c.count;
      this.#pendBytes += c.bytes;
    }
    if (this.#cHead >= calls.length && this.#mHead >= msgs.length) {
      this.#cHead -= calls.length;
      this.#mHead -= msgs.length;
      for (let i = 0; i < calls.length; i++) this.#calls[this.#cHead + i] = calls[i]!;
      for (let i = 0; i < msgs.length; i++) this.#msgs[this.#mHead + i] = msgs[i]!;
    } else {
      this.#calls = calls.concat(this.#calls.slice(this.#cHead));
      this.#msgs = msgs.concat(this.#msgs.slice(this.#mHead));
      this.#cHead = this.#mHead = 0;
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

  /** Removes every queued (not cancelled) call. */
  #takePending(): Call[] {
    const out = this.#calls.slice(this.#cHead).filter((c) => !c.cancelled);
    this.#calls = [];
    this.#msgs = [];
    this.#cHead = this.#mHead = 0;
    this.#pendMsgs = this.#pendBytes = 0;
    this.#cancelled = 0;
    return out;
  }

  // --- deadlines, safety, restarts ---------------------------------------------------

  /** Times out the calls whose deadline passed (called by the client's single sweep timer). */
  sweep(now: number): void {
    const calls = this.#calls;
    for (let i = this.#cHead; i < calls.length; i++) {
      const c = calls[i]!;
      if (c.settled || c.deadline > now) continue;
      if (!c.sent) {
        // Never sent: withdraw it.
        c.cancelled = true;
        this.#cancelled++;
        this.#pendMsgs -= c.count;
        this.#pendBytes -= c.bytes;
        this.#pub.release(c.count, c.bytes);
      }
      c.settle(timeoutError(`publish to ${this.queue}`, this.#host.timeoutMs));
    }
    const batch = this.#inflight;
    if (batch !== undefined) {
      // Sent and unanswered: the caller is told, the batch stays (its outcome is still to come).
      for (const c of batch.calls) if (!c.settled && c.deadline <= now) c.settle(timeoutError(`publish to ${this.queue}`, this.#host.timeoutMs));
    }
    if (this.idle) {
      if (this.#cancelled > 0) this.#takePending();
      this.#pub.laneIdle();
    }
  }

  /** Forgets what the server reports safe (acked by every subscription) in `epoch`. */
  trim(epoch: string, safeSeq: number): void {
    const list = this.#retained;
    let n = 0;
    let b = 0;
    while (this.#rHead < list.length) {
      const r = list[this.#rHead]!;
      if (r.epoch !== epoch) break;
      const left = r.seqs.length - r.head;
      let k = 0;
      while (r.head + k < r.seqs.length && r.seqs[r.head + k]! <= safeSeq) k++;
      if (k === 0) break;
      if (k === left) {
        n += k;
        b += r.bytes;
        list[this.#rHead++] = undefined as unknown as Retained;
        continue;
      }
      const part = Math.floor((r.bytes * k) / left);
      r.head += k;
      r.bytes -= part;
      n += k;
      b += part;
      break;
    }
    if (this.#rHead === list.length) {
      list.length = 0;
      this.#rHead = 0;
    }
    if (n > 0) {
      this.#retainedMsgs -= n;
      this.#pub.release(n, b);
    }
  }

  /** Everything retained from `epoch` is safe (the server no longer knows the publisher: it held nothing). */
  trimAll(epoch: string): void { this.trim(epoch, Number.MAX_SAFE_INTEGER); }

  /** The queue is gone: what was retained for it can never be delivered. */
  dropRetained(err: SpillwayClientError): void {
    const list = this.#retained.slice(this.#rHead);
    this.#retained = [];
    this.#rHead = 0;
    if (list.length === 0) return;
    let b = 0;
    for (const r of list) b += r.bytes;
    const n = this.#retainedMsgs;
    this.#retainedMsgs = 0;
    this.#host.reportError(err);
    this.#pub.release(n, b);
  }

  /**
   * Connected (again). After a server restart (`epochChanged`) the messages accepted by the
   * old run and not known to be safe go first, with their publisherSeqs, before anything newer.
   */
  ready(epochChanged: boolean): void {
    if (epochChanged && this.#rHead < this.#retained.length) {
      const list = this.#retained.slice(this.#rHead);
      this.#retained = [];
      this.#rHead = 0;
      this.#retainedMsgs = 0;
      const calls: Call[] = [];
      let msgs: string[] = [];
      for (const r of list) {
        const c = new Call(r.seqs.length - r.head, r.bytes, false, FINAL);
        c.seqs = r.seqs.slice(r.head);
        c.firstSeq = c.seqs[0]!;
        c.settled = c.sent = true;
        calls.push(c);
        msgs = msgs.concat(r.head === 0 ? r.msgs : r.msgs.slice(r.head));
      }
      this.#requeue(calls, msgs);
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
    const calls = [...(this.#inflight?.calls ?? []), ...this.#takePending()];
    this.#inflight = undefined;
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
  #waiters: { lane: Lane; call: Call; raw: string | string[] }[] = [];
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
    let raw: string | string[];
    let call: Call;
    try {
      if (typeof queue !== 'string' || queue.length === 0) throw new SpillwayClientError('INVALID_ARGUMENT', 'queue must be a non-empty string');
      let plainBytes: number;
      if (typeof input === 'string' && isPlain(input)) {
        // The hot path: the text is queued as it is; its JSON is written once, into the batch's frame.
        raw = input;
        call = new Call(1, input.length + PLAIN_OVERHEAD, true, PLAIN);
      } else if (Array.isArray(input) && input.length > 0 && input.length <= MAX_BATCH && (plainBytes = plainTexts(input)) >= 0) {
        // The same for an array of plain texts.
        raw = input.slice() as string[];
        call = new Call(raw.length, plainBytes, false, PLAIN);
      } else {
        raw = encode(input);
        if (typeof raw === 'string') {
          call = new Call(1, raw.length + MESSAGE_OVERHEAD, true, PREFIX);
        } else {
          if (raw.length === 0) return Promise.resolve([]);
          let bytes = 0;
          for (let i = 0; i < raw.length; i++) bytes += raw[i]!.length + MESSAGE_OVERHEAD;
          call = new Call(raw.length, bytes, false, PREFIX);
        }
      }
    } catch (err) {
      return Promise.reject(err);
    }
    call.deadline = this.#host.clock + (opts?.timeoutMs ?? this.#host.timeoutMs);
    const lane = this.#lane(queue);
    // One shared executor: no closure allocated per call.
    const p = new Promise<MessageId | MessageId[]>(capture);
    call.resolve = captured.resolve;
    call.reject = captured.reject;
    if (this.#waiters.length === 0 && this.#fits(call)) this.#admit(lane, call, raw);
    else this.#waiters.push({ lane, call, raw });
    return p;
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
      const keep: { lane: Lane; call: Call; raw: string | string[] }[] = [];
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
      this.#admit(w.lane, w.call, w.raw);
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

  #admit(lane: Lane, c: Call, raw: string | string[]): void {
    if (c.settled) return;
    this.#messages += c.count;
    this.#bytes += c.bytes;
    lane.enqueue(c, raw);
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
