import { randomUUID } from 'node:crypto';
import { SpillwayError, invalid } from '../errors';
import type { Publisher } from '../flowcontrol/ledger';
import type { Prepared } from './prepare';
import type { PublishResult, Queue } from './queue';

export const TX_DEFAULT_TIMEOUT_MS = 30_000;
export const TX_MAX_TIMEOUT_MS = 10 * 60_000;
export const TX_MAX_MESSAGES = 10_000;
export const TX_MAX_BYTES = 64 * 1024 * 1024;

interface Staged {
  queue: Queue;
  publisher: Publisher;
  msgs: Prepared[];
  bytes: number;
  /** Highest publisherSeq staged, for duplicates inside the transaction. */
  lastPubSeq: number;
}

interface Tx {
  id: string;
  expiresAt: number;
  timer: NodeJS.Timeout;
  staged: Map<Queue, Staged>;
  messages: number;
  bytes: number;
}

export interface TxHost {
  readonly runTag: string;
  /** False once a queue has been deleted (even if another of the same name was made since). */
  isLive(q: Queue): boolean;
}

/**
 * Transactions: messages staged outside the rings (counted in their publisher's usage),
 * made visible at once on commit, contiguous per queue. Rollback and timeout discard them.
 */
export class Transactions {
  readonly #txs = new Map<string, Tx>();
  readonly #host: TxHost;

  constructor(host: TxHost) {
    this.#host = host;
  }

  begin(timeoutMs: unknown = TX_DEFAULT_TIMEOUT_MS): { id: string; expiresAt: string } {
    if (typeof timeoutMs !== 'number' || !Number.isSafeInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > TX_MAX_TIMEOUT_MS) {
      throw invalid(`timeoutMs must be an integer from 1 to ${TX_MAX_TIMEOUT_MS}`, { field: 'timeoutMs' });
    }
    const id = randomUUID();
    const expiresAt = Date.now() + timeoutMs;
    const timer = setTimeout(() => this.rollback(id), timeoutMs);
    timer.unref();
    this.#txs.set(id, { id, expiresAt, timer, staged: new Map(), messages: 0, bytes: 0 });
    return { id, expiresAt: new Date(expiresAt).toISOString() };
  }

  stage(id: string, q: Queue, p: Publisher, msgs: readonly Prepared[]): PublishResult {
    const tx = this.#get(id);
    let st = tx.staged.get(q);
    if (st !== undefined && st.publisher !== p) {
      throw invalid(`transaction ${id} already stages messages of publisher ${st.publisher.id} on queue ${q.name}; one publisher per queue in a transaction`);
    }
    let bytes = 0;
    for (const m of msgs) bytes += m.bytes;
    if (tx.messages + msgs.length > TX_MAX_MESSAGES || tx.bytes + bytes > TX_MAX_BYTES) {
      throw invalid(`transaction ${id} would exceed its limit of ${TX_MAX_MESSAGES} messages or ${TX_MAX_BYTES} bytes`);
    }
    const res: PublishResult = { ids: [], seqs: [], duplicates: 0 };
    let last = Math.max(p.lastSeq, st?.lastPubSeq ?? -1);
    const accepted: Prepared[] = [];
    let acceptedBytes = 0;
    for (const m of msgs) {
      if (m.publisherSeq !== undefined) {
        if (m.publisherSeq <= last) {
          res.duplicates++;
          const orig = p.seqOf(m.publisherSeq);
          res.ids.push(orig > 0 ? this.#host.runTag + '-' + orig : null);
          res.seqs.push(orig > 0 ? orig : null);
          continue;
        }
        last = m.publisherSeq;
      }
      accepted.push(m);
      acceptedBytes += m.bytes;
      // Ids and seqs are given at commit, when the messages take their place in the queue.
      res.ids.push(null);
      res.seqs.push(null);
    }
    if (st === undefined) {
      st = { queue: q, publisher: p, msgs: [], bytes: 0, lastPubSeq: -1 };
      tx.staged.set(q, st);
    }
    for (const m of accepted) st.msgs.push(m);
    st.bytes += acceptedBytes;
    st.lastPubSeq = last;
    tx.messages += accepted.length;
    tx.bytes += acceptedBytes;
    q.ledger.accepted(p, accepted.length, acceptedBytes);
    return res;
  }

  /** Makes every staged message visible, all or nothing; a queue without room rolls the whole transaction back. */
  commit(id: string, full: (q: Queue) => SpillwayError): { committed: number } {
    const tx = this.#get(id);
    const written: Queue[] = [];
    const now = Date.now();
    let committed = 0;
    for (const st of tx.staged.values()) {
      if (!this.#host.isLive(st.queue)) {
        for (const q of written) q.abort();
        this.rollback(id);
        throw new SpillwayError('QUEUE_NOT_FOUND', `queue ${st.queue.name} was deleted; transaction ${id} rolled back`, { queue: st.queue.name });
      }
      const res: PublishResult = { ids: [], seqs: [], duplicates: 0 };
      if (!st.queue.write(st.publisher, st.msgs, now, res, true)) {
        for (const q of written) q.abort();
        const err = full(st.queue);
        this.rollback(id);
        throw err;
      }
      written.push(st.queue);
      committed += st.msgs.length - res.duplicates;
    }
    for (const q of written) q.commit();
    this.#end(tx);
    return { committed };
  }

  rollback(id: string): void {
    const tx = this.#get(id);
    for (const st of tx.staged.values()) st.queue.ledger.withdrawn(st.publisher, st.msgs.length, st.bytes);
    this.#end(tx);
  }

  close(): void {
    for (const tx of this.#txs.values()) clearTimeout(tx.timer);
    this.#txs.clear();
  }

  #get(id: string): Tx {
    const tx = this.#txs.get(id);
    if (tx === undefined) throw new SpillwayError('TRANSACTION_NOT_FOUND', `transaction ${JSON.stringify(id)} does not exist (committed, rolled back or expired)`, { transaction: id });
    return tx;
  }

  #end(tx: Tx): void {
    clearTimeout(tx.timer);
    this.#txs.delete(tx.id);
  }
}
