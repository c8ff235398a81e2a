import type { DeliveryBatch } from '../subscribers/batch';
import type { Consumer } from '../subscribers/consumer';
import type { Destination, RemoteMessage, RemotePublisher } from './destination';

export type PropagationState = 'connecting' | 'running' | 'restricted' | 'failing';

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
const MIN_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 5_000;
const MIN_POLL_MS = 20;
const MAX_POLL_MS = 1_000;
/** After a pause this long between requests the destination may have restarted (no restart is quicker): its epoch is checked before sending again. */
const IDLE_CHECK_MS = 50;

interface Item {
  seq: number;
  msg: RemoteMessage;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms).unref());

/**
 * A propagation: the consumer of the source queue's `propagation:{name}` subscription that
 * publishes what it gets to a queue on another server, with `publisherSeq` = the source seq,
 * and acks here only once the destination's `safePublisherSeq` has passed it (consumed
 * there). A restarted destination (new epoch) gets again everything not yet consumed.
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
      this.#pending.push({ seq: m.seq, msg });
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
    while (!this.#stopped) {
      // After a failure or a quiet spell the destination may have restarted: learn its epoch
      // before sending, so nothing new lands there ahead of what it lost.
      if (this.#mustCheckEpoch || Date.now() - this.#lastContact > IDLE_CHECK_MS) {
        if (this.#pending.length === 0 && this.#sent.length === 0) {
          await new Promise<void>((r) => { this.#wake = r; });
          continue;
        }
        let epoch: string;
        try {
          epoch = await this.#dest.epoch();
        } catch (err) {
          await fail((err as Error).message);
          continue;
        }
        this.#learnEpoch(epoch);
        this.#mustCheckEpoch = false;
        this.#lastContact = Date.now();
      }
      if (this.#pending.length > 0) {
        const items = this.#pending.slice(0, BATCH);
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
        this.#lastContact = Date.now();
        backoff = MIN_BACKOFF_MS;
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
        if (!r.ok) {
          await fail(r.error);
          continue;
        }
        this.#lastContact = Date.now();
        const before = this.ackedSeq;
        if (r.publisher === undefined) this.#mustCheckEpoch = true; // it does not know us: a restart
        else this.#progress(r.publisher);
        poll = this.ackedSeq === before ? Math.min(MAX_POLL_MS, poll * 2) : MIN_POLL_MS;
        continue;
      }
      await new Promise<void>((r) => { this.#wake = r; });
    }
  }

  /** A new epoch: what was sent and not yet consumed is gone there; it goes again, first. */
  #learnEpoch(epoch: string): void {
    if (this.#epoch !== undefined && epoch !== this.#epoch && this.#sent.length > 0) {
      const again = this.#sent;
      this.#sent = [];
      const merged = again.concat(this.#pending);
      merged.sort((a, b) => a.seq - b.seq);
      this.#pending = merged;
    }
    this.#epoch = epoch;
  }

  /** The destination's word on our publisher: ack here what it has consumed. */
  #progress(p: RemotePublisher | undefined): void {
    if (p === undefined) return;
    if (this.#epoch !== undefined && p.epoch !== this.#epoch) {
      // Restarted between our epoch check and this answer: resend all that was not consumed.
      this.#learnEpoch(p.epoch);
      return;
    }
    this.#epoch = p.epoch;
    const safe = p.safePublisherSeq ?? -1;
    let n = 0;
    while (n < this.#sent.length && this.#sent[n]!.seq <= safe) n++;
    if (n === 0) return;
    const done = this.#sent.splice(0, n).map((i) => i.seq);
    this.#source.ackSeqs(done);
    const last = done[done.length - 1]!;
    if (last > this.ackedSeq) this.ackedSeq = last;
  }
}
