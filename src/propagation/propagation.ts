import type { DeliveryBatch } from '../subscribers/batch';
import type { Consumer } from '../subscribers/consumer';
import type { Destination, RemoteMessage, RemotePublisher } from './destination';

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

/** Messages sent or waiting at once: the prefetch of the propagation's subscription. */
export const WINDOW = 10_000;
/** Messages a publish request carries. */
const BATCH = 500;
/**
 * Payload characters a publish request carries (at least one message): under the destination's
 * 16 MiB default body limit even if JSON escaping made every character six.
 */
const BATCH_BYTES = 1024 * 1024;
const MIN_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 5_000;
const MIN_POLL_MS = 20;
const MAX_POLL_MS = 1_000;
/**
 * After a pause this long between requests the destination may have restarted: its epoch is
 * checked before sending again. A restart noticed only in a publish answer costs duplicates
 * there, never losses (see `#offset`).
 */
const IDLE_CHECK_MS = 50;

interface Item {
  seq: number;
  /** `publisherSeq` is set when it is sent (the source seq plus the offset of that moment). */
  msg: RemoteMessage;
  /** Payload size estimate, for BATCH_BYTES. */
  size: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms).unref());

/**
 * A propagation: the consumer of the source queue's `propagation:{name}` subscription that
 * publishes what it gets to a queue on another server, with `publisherSeq` = the source seq
 * (plus an offset, see `#offset`), and acks here only once the destination's
 * `safePublisherSeq` has passed it (consumed there). A restarted destination (new epoch) gets
 * again everything not yet consumed.
 */
export class Propagation implements Consumer {
  readonly prefetch = WINDOW;
  unacked = 0;
  readonly publisherId: string;
  state: PropagationState = 'connecting';
  sentSeq = 0;
  ackedSeq = 0;
  lastError: string | undefined;

  readonly #dest: Destination;
  readonly #source: PropagationSource;
  /** Delivered here, not yet sent (seq order). */
  #pending: Item[] = [];
  /** Sent, not yet consumed at the destination (seq order). */
  #sent: Item[] = [];
  #epoch: string | undefined;
  /**
   * Added to the source seq to make the publisherSeq. 0 unless the destination already holds
   * higher publisherSeqs of ours: after a restart of this server (seqs start again at 1), or
   * when a batch reached a restarted destination before we knew it had restarted.
   */
  #offset = 0;
  /** Set on a new epoch: the destination's lastPublisherSeq for us, which the next send must pass. */
  #above: number | undefined;
  #lastContact = 0;
  #mustCheckEpoch = true;
  #wake: (() => void) | undefined;
  #stopped = false;
  readonly done: Promise<void>;

  constructor(publisherId: string, dest: Destination, source: PropagationSource) {
    this.publisherId = publisherId;
    this.#dest = dest;
    this.#source = source;
    this.done = this.#run();
  }

  get lag(): number { return this.#source.pending; }

  ready(): boolean { return !this.#stopped; }

  deliver(batch: DeliveryBatch): void {
    for (const m of batch.messages()) {
      const msg: RemoteMessage = { data: m.data, encoding: m.encoding, attributes: m.attributes, publisherSeq: m.seq };
      if (m.key !== undefined) msg.key = m.key;
      let size = m.data.length + (m.key?.length ?? 0) + 32;
      for (const k in m.attributes) size += k.length + m.attributes[k]!.length + 6;
      this.#pending.push({ seq: m.seq, msg, size });
    }
    this.#kick();
  }

  ended(): void { this.stop(); }

  stop(): void {
    this.#stopped = true;
    this.#kick();
  }

  #kick(): void {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  async #run(): Promise<void> {
    let backoff = MIN_BACKOFF_MS;
    let poll = MIN_POLL_MS;
    const fail = async (error: string): Promise<void> => {
      this.state = 'failing';
      this.lastError = error;
      this.#mustCheckEpoch = true;
      await sleep(backoff);
      backoff = Math.min(MAX_BACKOFF_MS, backoff * 2);
    };
    /** The destination answered: it is reachable again (a restriction is lifted only by a publish). */
    const reached = (): void => {
      this.#lastContact = Date.now();
      backoff = MIN_BACKOFF_MS;
      if (this.state !== 'restricted') {
        this.state = 'running';
        this.lastError = undefined;
      }
    };
    while (!this.#stopped) {
      // After a failure or a quiet spell the destination may have restarted: learn its epoch
      // before sending, so nothing new lands there ahead of what it lost.
      if (this.#mustCheckEpoch || Date.now() - this.#lastContact > IDLE_CHECK_MS) {
        if (this.#pending.length === 0 && this.#sent.length === 0) {
          await new Promise<void>((r) => { this.#wake = r; });
          continue;
        }
        // Our publisher there tells its epoch and the last publisherSeq it holds of ours; a
        // destination that does not know us (new, or restarted) is asked for its epoch alone.
        let known: RemotePublisher | undefined;
        let epoch: string;
        try {
          const r = await this.#dest.state(this.publisherId);
          if (!r.ok) {
            await fail(r.error);
            continue;
          }
          known = r.publisher;
          epoch = known?.epoch ?? await this.#dest.epoch();
        } catch (err) {
          await fail((err as Error).message);
          continue;
        }
        if (this.#stopped) break;
        reached();
        this.#learnEpoch(epoch, known?.lastPublisherSeq);
        if (known !== undefined) this.#progress(known);
        this.#mustCheckEpoch = false;
      }
      if (this.#pending.length > 0) {
        const items = this.#take();
        const r = await this.#dest.publish(this.publisherId, items.map((i) => i.msg));
        if (this.#stopped) break;
        if (!r.ok) {
          if (r.restricted) {
            this.state = 'restricted';
            this.lastError = r.error;
            await sleep(r.retryAfterMs);
          } else await fail(r.error);
          continue;
        }
        reached();
        poll = MIN_POLL_MS;
        this.state = 'running';
        this.lastError = undefined;
        this.#pending.splice(0, items.length);
        for (const i of items) {
          this.#sent.push(i);
          if (i.seq > this.sentSeq) this.sentSeq = i.seq;
        }
        this.#progress(r.publisher);
        continue;
      }
      if (this.#sent.length > 0) {
        // Everything is sent: wait for the destination to consume it.
        await Promise.race([sleep(poll), new Promise<void>((r) => { this.#wake = r; })]);
        this.#wake = undefined;
        if (this.#stopped || this.#pending.length > 0) continue;
        const r = await this.#dest.state(this.publisherId);
        if (this.#stopped) break;
        if (!r.ok) {
          await fail(r.error);
          continue;
        }
        reached();
        const before = this.ackedSeq;
        if (r.publisher === undefined) this.#mustCheckEpoch = true; // it does not know us: a restart
        else this.#progress(r.publisher);
        poll = this.ackedSeq === before ? Math.min(MAX_POLL_MS, poll * 2) : MIN_POLL_MS;
        continue;
      }
      await new Promise<void>((r) => { this.#wake = r; });
    }
  }

  /**
   * The next request's messages: up to BATCH of them and BATCH_BYTES (at least one), numbered.
   * After a new epoch they are numbered above what the destination holds of ours.
   */
  #take(): Item[] {
    const pending = this.#pending;
    let k = 0;
    let bytes = 0;
    while (k < pending.length && k < BATCH && (k === 0 || bytes + pending[k]!.size <= BATCH_BYTES)) bytes += pending[k++]!.size;
    const items = pending.slice(0, k);
    if (this.#above !== undefined) {
      let low = Infinity;
      for (const i of pending) if (i.seq < low) low = i.seq;
      if (low + this.#offset <= this.#above) this.#offset = this.#above - low + 1;
      this.#above = undefined;
    }
    for (const i of items) i.msg.publisherSeq = i.seq + this.#offset;
    return items;
  }

  /**
   * A new epoch (or the first one we learn): what was sent and not yet consumed is gone there, so
   * it goes again, first. `last` is the destination's lastPublisherSeq for us, if it knows us.
   */
  #learnEpoch(epoch: string, last: number | undefined): void {
    if (epoch === this.#epoch) return;
    if (this.#sent.length > 0) {
      const again = this.#sent;
      this.#sent = [];
      const merged = again.concat(this.#pending);
      merged.sort((a, b) => a.seq - b.seq);
      this.#pending = merged;
    }
    this.#epoch = epoch;
    // Up to `last` it would drop ours as duplicates: the next send numbers above it.
    this.#above = last;
  }

  /** The destination's word on our publisher: ack here what it has consumed. */
  #progress(p: RemotePublisher | undefined): void {
    if (p === undefined) return;
    if (p.epoch !== this.#epoch) {
      // Restarted before this answer and after our last look (this very batch may be the first it
      // got from us): resend all that was not consumed, numbered above what it has now.
      this.#learnEpoch(p.epoch, p.lastPublisherSeq);
      return;
    }
    const safe = p.safePublisherSeq ?? -1;
    let n = 0;
    while (n < this.#sent.length && this.#sent[n]!.msg.publisherSeq <= safe) n++;
    if (n === 0) return;
    const done = this.#sent.splice(0, n).map((i) => i.seq);
    this.#source.ackSeqs(done);
    for (const seq of done) if (seq > this.ackedSeq) this.ackedSeq = seq;
  }
}
