import { SpillwayClientError } from './errors';
import { encodeMessages } from './publisher';
import { seg, type Rest } from './rest';
import type { CallOptions, PublishInput } from './types';

/**
 * A transaction (REST: the WebSocket has no staging). Staged messages are invisible until
 * `commit()`, then appear at once on every queue; `rollback()` or expiry discards them.
 * Staged messages carry no publisherSeq: the commit is the unit, not the message.
 */
export class Transaction {
  readonly id: string;
  readonly expiresAt: string;
  readonly #rest: Rest;
  readonly #publisherId: string | undefined;
  readonly #timeoutMs: number;
  #done = false;

  constructor(rest: Rest, id: string, expiresAt: string, publisherId: string | undefined, timeoutMs: number) {
    this.#rest = rest;
    this.id = id;
    this.expiresAt = expiresAt;
    this.#publisherId = publisherId;
    this.#timeoutMs = timeoutMs;
  }

  /** Stages one message or up to 1000; resolves with how many were staged. */
  async publish(queue: string, input: PublishInput | readonly PublishInput[], opts: CallOptions = {}): Promise<number> {
    this.#check();
    const jsons = encodeMessages(input);
    const body = '{' + (this.#publisherId === undefined ? '' : '"publisherId":' + JSON.stringify(this.#publisherId) + ',') + '"messages":[' + jsons.join(',') + ']}';
    const res = await this.#rest.request<{ ids: unknown[] }>('POST', `/v1/queues/${seg(queue)}/messages?tx=${encodeURIComponent(this.id)}`, undefined, opts.timeoutMs ?? this.#timeoutMs, body);
    return res.body.ids.length;
  }

  /** Makes every staged message visible; resolves with how many. */
  async commit(opts: CallOptions = {}): Promise<number> {
    this.#check();
    this.#done = true;
    const r = await this.#rest.call<{ committed: number }>('POST', `/v1/transactions/${seg(this.id)}/commit`, {}, opts.timeoutMs ?? this.#timeoutMs);
    return r.committed;
  }

  async rollback(opts: CallOptions = {}): Promise<void> {
    this.#check();
    this.#done = true;
    await this.#rest.call('POST', `/v1/transactions/${seg(this.id)}/rollback`, {}, opts.timeoutMs ?? this.#timeoutMs);
  }

  #check(): void {
    if (this.#done) throw new SpillwayClientError('INVALID_ARGUMENT', `transaction ${this.id} is already committed or rolled back`);
  }
}
