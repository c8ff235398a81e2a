import { ERROR_STATUS } from '../errors';
import type { DeliveryBatch } from '../subscribers/batch';
import type { Consumer } from '../subscribers/consumer';
import type { Answer, Destination, Link, RemotePublisher } from './destination';
import { Chunk, MAX_FRAME_MESSAGES, encodeFrame, takeChunk } from './frames';

export type PropagationState = 'connecting' | 'running' | 'restricted' | 'failing';
/** Every state, in API.md's order (metrics show one series per state). */
export const PROPAGATION_STATES: readonly PropagationState[] = ['connecting', 'running', 'restricted', 'failing'];

/** What a propagation needs from the source subscription it consumes. */
export interface PropagationSource {
  /** Acks messages by seq (they were consumed at the destination). */
  ackSeqs(seqs: readonly number[]): number;
  /** Messages of the subscription not yet acked (waiting, in flight here, or sent and not consumed there). */
  readonly pending: number;
}

/** Messages held at once (sent or about to be, not yet consumed there): the subscription's prefetch. */
export const WINDOW = 20_000;
/** The same bound in bytes: beyond it the source keeps them (in memory or spilled). */
const MAX_HELD_BYTES = 32 * 1024 * 1024;
/** Publish frames sent and not yet answered. */
const MAX_IN_FLIGHT = 8;
/** Bytes a frame carries (at least one delivery): well under the destination's default 16 MiB limit. */
const FRAME_BYTES = 1024 * 1024;
/** No frame is sent while the socket holds this much unwritten. */
const LINK_HIGH_WATER = 4 * 1024 * 1024;
const ANSWER_TIMEOUT_MS = 10_000;
const MIN_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 5_000;
const MIN_POLL_MS = 20;
const MAX_POLL_MS = 500;

interface InFlight {
  ref: number;
  /** Chunks the frame carries. */
  chunks: number;
  /** Its `afterPublisherSeq`. */
  after: number;
  /** Its highest source seq. */
  seq: number;
}

/** The first refusal of a pipeline: the frames behind it are refused too (they chain on it). */
interface Failure {
  answer: Answer;
  after: number;
}

/**
 * A propagation: the consumer of the source queue's `propagation:{name}` subscription that
 * forwards what it gets to a queue on another server, and acks here only once the
 * destination's `safePublisherSeq` has passed it (consumed there).
 *
 * Frames are pipelined over one WebSocket (up to MAX_IN_FLIGHT unanswered) and chained: each
 * names the last publisherSeq of the one before (`afterPublisherSeq`), and the destination
 * stores it only right after that one. So what the destination holds of ours is always a prefix
 * of what was sent: a refused frame (429) is never overtaken by a later one, and after a lost
 * connection the destination's lastPublisherSeq says exactly which frames arrived.
 *
 * publisherSeq = source seq + offset: 0 unless the destination already holds higher
 * publisherSeqs of ours (this server restarted and its seqs start again at 1).
 */
export class Propagation implements Consumer {
  readonly prefetch = WINDOW;
  unacked = 0;
  readonly publisherId: string;
  state: PropagationState = 'connecting';
  /** Highest source seq the destination has accepted. */
  sentSeq = 0;
  /** Highest source seq consumed there (and acked here). */
  ackedSeq = 0;
  lastError: string | undefined;

  readonly #dest: Destination;
  readonly #source: PropagationSource;
  /** `{"op":"publish","queue":…,"publisherId":…`, made once. */
  readonly #head: Buffer;
  /**
   * Held chunks in seq order, from #first: [#first, #storedEnd) accepted there and not yet
   * consumed, [#storedEnd, #sentEnd) sent (answer pending or lost), [#sentEnd, …) not sent.
   */
  #chunks: (Chunk | undefined)[] = [];
  #first = 0;
  #storedEnd = 0;
  #sentEnd = 0;
  #heldBytes = 0;
  /** Highest source seq taken: anything at or below it that comes again is a redelivery. */
  #highestSeq = 0;
  #inFlight: InFlight[] = [];
  #failure: Failure | undefined;
  #ref = 0;
  /** Answers received (a poll that saw none come in between may trust an unknown publisher). */
  #answers = 0;
  #lastAnswerAt = 0;
  #epoch: string | undefined;
  #offset = 0;
  /** publisherSeq the destination holds last of ours: the next frame's `afterPublisherSeq`. */
  #last = 0;
  #link: Link | undefined;
  /** The link's position is known (publisher state read since it opened). */
  #synced = false;
  #holdUntil = 0;
  #backoff = MIN_BACKOFF_MS;
  #pollMs = MIN_POLL_MS;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #pollTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #watchdog: ReturnType<typeof setInterval>;
  #stopped = false;

  constructor(publisherId: string, dest: Destination, source: PropagationSource, destinationQueue: string) {
    this.publisherId = publisherId;
    this.#dest = dest;
    this.#source = source;
    this.#head = Buffer.from('{"op":"publish","queue":' + JSON.stringify(destinationQueue) + ',"publisherId":' + JSON.stringify(publisherId));
    this.#watchdog = setInterval(this.#checkAnswers, 1000).unref();
    this.#connect();
  }

  get lag(): number { return this.#source.pending; }

  ready(): boolean { return !this.#stopped && this.#heldBytes < MAX_HELD_BYTES; }

  deliver(batch: DeliveryBatch): void {
    for (let i = 0; i < batch.count;) {
      const { chunk, next } = takeChunk(batch, i, this.#highestSeq);
      i = next;
      if (chunk === undefined) continue;
      this.#highestSeq = chunk.seqs[chunk.count - 1]!;
      this.#chunks.push(chunk);
      this.#heldBytes += chunk.buf.length;
    }
    this.#pump();
  }

  ended(): void { this.stop(); }

  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    clearInterval(this.#watchdog);
    clearTimeout(this.#timer);
    clearTimeout(this.#pollTimer);
    this.#link?.close();
    this.#link = undefined;
  }

  // --- the link --------------------------------------------------------------------

  #connect(): void {
    if (this.#stopped) return;
    const link: Link = this.#dest.connect({
      opened: () => { if (link === this.#link) void this.#sync(link); },
      answer: (a) => { if (link === this.#link) this.#answer(a); },
      // Frames in flight may or may not have arrived: the next sync tells.
      closed: (reason) => { if (link === this.#link) this.#fail(reason); },
    });
    this.#link = link;
  }

  /** Closes the link (if any) and connects again after the backoff. */
  #fail(error: string): void {
    this.state = 'failing';
    this.lastError = error;
    this.#synced = false;
    this.#link?.close();
    this.#link = undefined;
    this.#inFlight.length = 0;
    this.#failure = undefined;
    this.#after(this.#backoff, () => this.#connect());
    this.#backoff = Math.min(MAX_BACKOFF_MS, this.#backoff * 2);
  }

  #after(ms: number, fn: () => void): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (!this.#stopped) fn();
    }, ms).unref();
  }

  readonly #checkAnswers = (): void => {
    if (this.#inFlight.length > 0 && Date.now() - this.#lastAnswerAt > ANSWER_TIMEOUT_MS) this.#fail(`no answer from the destination within ${ANSWER_TIMEOUT_MS} ms`);
  };

  /** Reads where the destination stands for our publisher, then sends. */
  async #sync(link: Link): Promise<void> {
    this.#synced = false;
    const r = await this.#dest.state(this.publisherId);
    if (link !== this.#link) return;
    if (!r.ok) {
      this.#fail(r.error);
      return;
    }
    let epoch: string;
    try {
      epoch = r.publisher?.epoch ?? await this.#dest.epoch();
    } catch (err) {
      if (link === this.#link) this.#fail((err as Error).message);
      return;
    }
    if (link !== this.#link) return;
    this.#position(epoch, r.publisher);
    this.#synced = true;
    // With something to send, only an accepted frame shows the link works (a token that may not
    // publish passes this far): the backoff is reset then.
    if (this.#sentEnd === this.#chunks.length) this.#backoff = MIN_BACKOFF_MS;
    if (Date.now() >= this.#holdUntil) {
      this.state = 'running';
      this.lastError = undefined;
    }
    this.#pump();
  }

  /**
   * Takes the destination's word on our publisher (nothing in flight): what of ours it holds,
   * what it has consumed, and whether it is the run we were talking to.
   */
  #position(epoch: string, p: RemotePublisher | undefined): void {
    const last = p?.lastPublisherSeq ?? 0;
    if (epoch !== this.#epoch) {
      // First contact, or it restarted: nothing we sent is there any more. All of it goes
      // again, first (numbered above what it holds of ours, see #pump).
      this.#epoch = epoch;
      this.#storedEnd = this.#sentEnd = this.#first;
    } else if (p === undefined) {
      // Same run, our publisher forgotten: it held nothing of ours, so all it had is consumed.
      this.#sentEnd = this.#storedEnd;
      this.#consumed(Number.MAX_SAFE_INTEGER);
    } else {
      // Same run: it holds exactly the frames up to its lastPublisherSeq (chained frames are
      // stored in order or not at all); the rest go again.
      while (this.#storedEnd < this.#sentEnd && this.#chunks[this.#storedEnd]!.lastPublisherSeq <= last) this.#storedEnd++;
      this.#sentEnd = this.#storedEnd;
      this.#consumed(p.safePublisherSeq ?? 0);
    }
    this.#last = last;
  }

  // --- sending and answers --------------------------------------------------------

  /** Sends frames while the pipeline and the socket have room. */
  #pump(): void {
    const link = this.#link;
    if (link === undefined || !this.#synced || this.#failure !== undefined || this.#timer !== undefined) return;
    const chunks = this.#chunks;
    while (this.#sentEnd < chunks.length && this.#inFlight.length < MAX_IN_FLIGHT && link.buffered < LINK_HIGH_WATER) {
      const from = this.#sentEnd;
      // Numbered above what the destination holds of ours: after a restart of this server its
      // seqs start again at 1 while the destination still remembers the old run's.
      const first = chunks[from]!;
      if (first.seqs[first.head]! + this.#offset <= this.#last) this.#offset = this.#last - first.seqs[first.head]! + 1;
      let end = from;
      let n = 0;
      let bytes = 0;
      while (end < chunks.length) {
        const c = chunks[end]!;
        if (end > from && (n + c.count > MAX_FRAME_MESSAGES || bytes + c.buf.length > FRAME_BYTES)) break;
        n += c.count;
        bytes += c.buf.length;
        c.offset = this.#offset;
        end++;
      }
      const ref = ++this.#ref;
      const frame = encodeFrame(this.#head, ref, this.#last, chunks as Chunk[], from, end);
      if (this.#inFlight.length === 0) this.#lastAnswerAt = Date.now();
      const tail = chunks[end - 1]!;
      this.#inFlight.push({ ref, chunks: end - from, after: this.#last, seq: tail.seqs[tail.count - 1]! });
      this.#last = tail.lastPublisherSeq;
      this.#sentEnd = end;
      link.send(frame);
    }
    this.#maybePoll();
  }

  #answer(a: Answer): void {
    const f = this.#inFlight.shift();
    if (f === undefined || a.ref !== f.ref) {
      this.#fail(`the destination answered ${a.op} to a frame not sent (ref ${String(a.ref)})`);
      return;
    }
    this.#answers++;
    this.#lastAnswerAt = Date.now();
    if (this.#failure === undefined) {
      if (a.op === 'published' && a.epoch === this.#epoch) {
        this.#storedEnd += f.chunks;
        this.#backoff = MIN_BACKOFF_MS;
        if (f.seq > this.sentSeq) this.sentSeq = f.seq;
        if (this.state !== 'running') {
          this.state = 'running';
          this.lastError = undefined;
        }
        this.#consumed(a.safePublisherSeq ?? 0);
      } else {
        this.#failure = { answer: a, after: f.after };
      }
    }
    if (this.#inFlight.length > 0) {
      if (this.#failure === undefined) this.#pump();
      return;
    }
    if (this.#failure !== undefined) this.#recover(this.#failure);
    else this.#pump();
  }

  /** Every frame of a refused pipeline is answered: decide how to go on. */
  #recover({ answer: a, after }: Failure): void {
    this.#failure = undefined;
    const error = a.op === 'published' ? 'the destination restarted' : describe(a);
    if (a.code === 'PUBLISHER_RESTRICTED') {
      // Nothing from the refused frame on was stored: it goes again after the wait.
      this.#sentEnd = this.#storedEnd;
      this.#last = after;
      this.state = 'restricted';
      this.lastError = error;
      const ms = typeof a.retryAfterMs === 'number' && a.retryAfterMs > 0 ? a.retryAfterMs : 1000;
      this.#holdUntil = Date.now() + ms;
      this.#after(ms, () => this.#pump());
      return;
    }
    if (a.code === 'INVALID_ARGUMENT' && a.field === 'afterPublisherSeq' && a.epoch === this.#epoch) {
      // The chain broke in this run (a frame arrived that we thought lost): learn where it stands.
      this.#synced = false;
      const link = this.#link;
      if (link !== undefined) void this.#sync(link);
      return;
    }
    // A restart, a missing queue, a refused token, a message it will not take: start over.
    this.#fail(error);
  }

  // --- consumption there, acks here -------------------------------------------------

  /** Acks here what the destination reports consumed (publisherSeq ≤ `safe`). */
  #consumed(safe: number): void {
    const chunks = this.#chunks;
    let acked: number[] | undefined;
    while (this.#first < this.#storedEnd) {
      const c = chunks[this.#first]!;
      while (c.head < c.count && c.seqs[c.head]! + c.offset <= safe) (acked ??= []).push(c.seqs[c.head++]!);
      if (c.head < c.count) break;
      this.#heldBytes -= c.buf.length;
      chunks[this.#first++] = undefined;
    }
    if (acked === undefined) return;
    this.#pollMs = MIN_POLL_MS;
    const top = acked[acked.length - 1]!;
    if (top > this.ackedSeq) this.ackedSeq = top;
    this.#compact();
    this.#source.ackSeqs(acked);
  }

  #compact(): void {
    const k = this.#first;
    if (k < 1024 || k * 2 < this.#chunks.length) return;
    this.#chunks = this.#chunks.slice(k);
    this.#first = 0;
    this.#storedEnd -= k;
    this.#sentEnd -= k;
  }

  /** With messages stored there and no frame out to bring news, reads what has been consumed. */
  #maybePoll(): void {
    if (this.#pollTimer !== undefined || this.#stopped || !this.#synced || this.#inFlight.length > 0 || this.#first === this.#storedEnd) return;
    this.#pollTimer = setTimeout(this.#poll, this.#pollMs).unref();
  }

  readonly #poll = async (): Promise<void> => {
    this.#pollTimer = undefined;
    const link = this.#link;
    if (link === undefined || !this.#synced || this.#inFlight.length > 0 || this.#first === this.#storedEnd) return;
    const answers = this.#answers;
    const before = this.ackedSeq;
    const r = await this.#dest.state(this.publisherId);
    if (link !== this.#link || this.#stopped) return;
    if (r.ok) {
      const p = r.publisher;
      if (p === undefined || p.epoch !== this.#epoch) {
        // Restarted, or it forgot us: a fresh sync sorts out which.
        if (answers === this.#answers && this.#inFlight.length === 0) void this.#sync(link);
        return;
      }
      this.#consumed(p.safePublisherSeq ?? 0);
    }
    if (this.ackedSeq === before) this.#pollMs = Math.min(MAX_POLL_MS, this.#pollMs * 2);
    this.#maybePoll();
  };
}

/** An error answer as `429 PUBLISHER_RESTRICTED: …` (the status of API.md's catalogue). */
function describe(a: Answer): string {
  const status = (ERROR_STATUS as Record<string, number | undefined>)[a.code ?? ''];
  return `${status ?? ''} ${a.code ?? 'error'}: ${a.message ?? ''}`.trim();
}
