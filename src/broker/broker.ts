import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SpillStore, type QueueSpill } from '../spill/store';
import { RemoteQueue, Propagation, parsePropagationConfig, type Destination, type PropagationConfig, type PropagationState } from '../propagation';
import { SpillwayError, invalid } from '../errors';
import { checkName } from '../names';
import type { PublisherState } from '../flowcontrol/ledger';
import { decodeBody, type Message } from '../queue/message';
import type { DeliveryBatch } from '../subscribers/batch';
import { parseSubscriptionConfig, sameConfig, type SubscriptionConfig } from '../subscribers/config';
import type { Consumer, EndReason } from '../subscribers/consumer';
import type { Subscription, SubscriptionStats } from '../subscribers/subscription';
import { parseQueueConfig, type QueueConfig } from './config';
import { loadDefinitions, saveDefinitions, type Definitions } from './definitions';
import { LatencyHistogram } from './latency';
import { INITIAL_CAPACITY } from '../queue/layout';
import { preparedFrom, type Prepared } from './prepare';
import { Queue, type PublishResult, type QueueHost, type QueueStats } from './queue';
import { Transactions } from './transactions';

export interface BrokerOptions {
  /** Total ring memory for all queues (bytes). */
  memoryBytes?: number;
  /** Where definitions (and spill files) live; without it nothing is kept across restarts. */
  dataDir?: string;
  /** How often deadlines are checked (ms). */
  tickMs?: number;
  /** Publishers idle this long and holding nothing are forgotten (ms). */
  publisherIdleMs?: number;
  /** Disk budget for spilled messages (bytes); default 10 GiB. */
  maxDiskBytes?: number;
  /** False: no spill at all (full queues refuse publishes). */
  spill?: boolean;
}

export const DEFAULT_MAX_DISK_BYTES = 10 * 1024 * 1024 * 1024;

/** API.md's propagation view. */
export interface PropagationInfo {
  name: string;
  url: string;
  queue: string;
  state: PropagationState;
  sentSeq: number;
  ackedSeq: number;
  lag: number;
  lastError?: string;
}

interface PropagationEntry {
  config: PropagationConfig;
  prop: Propagation;
  detach: () => void;
}

/** The subscription a propagation consumes. */
export const propagationSubscription = (name: string): string => 'propagation:' + name;

export const DEFAULT_MEMORY_BYTES = 256 * 1024 * 1024;
export const ANONYMOUS_PUBLISHER = 'anonymous';

export interface PublishOutcome extends PublishResult {
  publisher: PublisherState;
  staged?: boolean;
}

/**
 * The broker: queues, subscriptions, transactions, and the embedded API that the HTTP
 * layer (and any in-process user) calls. Every method is synchronous except pull.
 */
export class Broker implements QueueHost {
  /** An id of this run: changes at every start (repeatable publishers re-send when it does). */
  readonly epoch: string;
  /** Short form of the epoch inside message ids. */
  readonly runTag: string;
  readonly memoryBytes: number;
  readonly latency = new LatencyHistogram();
  readonly #dataDir: string | undefined;
  readonly #queues = new Map<string, Queue>();
  #allocated = 0;
  readonly #tx: Transactions;

  readonly #dirty = new Set<Subscription>();
  #flushScheduled = false;
  readonly #timed = new Set<Subscription>();
  #ticker: NodeJS.Timeout | undefined;
  readonly #tickMs: number;
  readonly #sweeper: NodeJS.Timeout;
  #closed = false;
  readonly #spill: SpillStore | undefined;
  readonly #spillTmp: string | undefined;
  #spillErrors = 0;
  /** Stays the same across restarts when there is a data dir. */
  serverId: string = randomUUID();
  /** Propagations by queue, then name. */
  readonly #props = new Map<string, Map<string, PropagationEntry>>();
  /** Makes the far end of a propagation (tests may replace it). */
  destinationFor: (config: PropagationConfig) => Destination = (c) => new RemoteQueue(c.url, c.queue, c.token);

  constructor(options: BrokerOptions = {}) {
    this.epoch = randomUUID();
    this.runTag = randomBytes(4).toString('hex');
    this.memoryBytes = options.memoryBytes ?? DEFAULT_MEMORY_BYTES;
    this.#dataDir = options.dataDir;
    this.#tickMs = options.tickMs ?? 20;
    this.#tx = new Transactions(this);
    const idle = options.publisherIdleMs ?? 10 * 60_000;
    this.#sweeper = setInterval(() => {
      const before = Date.now() - idle;
      for (const q of this.#queues.values()) q.ledger.sweep(before);
    }, Math.min(idle, 60_000));
    this.#sweeper.unref();
    if (options.spill !== false) {
      // Without a data dir, spill goes to a private temporary folder removed at close.
      this.#spillTmp = this.#dataDir === undefined ? mkdtempSync(join(tmpdir(), 'spillway-')) : undefined;
      this.#spill = new SpillStore(join(this.#dataDir ?? this.#spillTmp!, 'spill'), options.maxDiskBytes ?? DEFAULT_MAX_DISK_BYTES);
    }
    if (this.#dataDir !== undefined) this.#restore(this.#dataDir);
  }

  // --- queues ------------------------------------------------------------------

  /** Creates a queue; `created` false when the same config already exists (409 when it differs). */
  createQueue(name: string, body?: unknown): { created: boolean; queue: QueueStats } {
    checkName(name, 'queue');
    const config = parseQueueConfig(body);
    const existing = this.#queues.get(name);
    if (existing !== undefined) {
      if (!sameConfig(existing.config, config)) throw new SpillwayError('ALREADY_EXISTS', `queue ${name} exists with a different config`, { queue: name });
      return { created: false, queue: existing.stats() };
    }
    const q = this.#addQueue(name, config);
    if (config.defaultSubscription) this.#addSubscription(q, 'default', parseSubscriptionConfig({}), Date.now(), undefined, 0);
    this.#save();
    return { created: true, queue: q.stats() };
  }

  deleteQueue(name: string): void {
    const q = this.queue(name);
    for (const e of this.#props.get(name)?.values() ?? []) e.prop.stop();
    this.#props.delete(name);
    this.#queues.delete(name);
    this.#allocated -= q.ring.capacity;
    for (const sub of q.subscriptions) this.#forget(sub);
    q.close('deleted');
    this.#save();
  }

  /** The queue, or QUEUE_NOT_FOUND. */
  queue(name: string): Queue {
    const q = this.#queues.get(name);
    if (q === undefined) throw new SpillwayError('QUEUE_NOT_FOUND', `queue ${JSON.stringify(name)} does not exist`, { queue: name });
    return q;
  }

  hasQueue(name: string): boolean { return this.#queues.has(name); }
  isLive(q: Queue): boolean { return this.#queues.get(q.name) === q; }
  queues(): Queue[] { return [...this.#queues.values()]; }
  queueStats(name: string): QueueStats { return this.queue(name).stats(); }
  listQueues(): QueueStats[] { return this.queues().map((q) => q.stats()); }
  purge(name: string): number { return this.queue(name).purge(); }

  // --- subscriptions -------------------------------------------------------------

  createSubscription(queueName: string, name: string, body?: unknown): { created: boolean; subscription: SubscriptionStats & SubscriptionConfig } {
    const q = this.queue(queueName);
    checkName(name, 'subscription');
    const config = parseSubscriptionConfig(body);
    const existing = q.subscription(name);
    if (existing !== undefined) {
      if (!sameConfig(existing.config, config)) {
        throw new SpillwayError('ALREADY_EXISTS', `subscription ${name} exists on ${queueName} with a different config`, { queue: queueName, subscription: name });
      }
      return { created: false, subscription: this.subscriptionInfo(queueName, name) };
    }
    const now = Date.now();
    this.#addSubscription(q, name, config, now, config.ttlMs !== undefined ? now + config.ttlMs : undefined, 0);
    this.#save();
    return { created: true, subscription: this.subscriptionInfo(queueName, name) };
  }

  deleteSubscription(queueName: string, name: string): void {
    const q = this.queue(queueName);
    const sub = this.subscription(queueName, name);
    this.#forget(sub);
    q.removeSubscription(name, 'deleted');
    this.#save();
  }

  /** The subscription, or SUBSCRIPTION_NOT_FOUND (QUEUE_NOT_FOUND when the queue is missing). */
  subscription(queueName: string, name: string): Subscription {
    const sub = this.queue(queueName).subscription(name);
    if (sub === undefined) {
      throw new SpillwayError('SUBSCRIPTION_NOT_FOUND', `subscription ${JSON.stringify(name)} does not exist on queue ${queueName}`, { queue: queueName, subscription: name });
    }
    return sub;
  }

  /** Stats and config together, as `GET .../subscriptions/{sub}` shows them. */
  subscriptionInfo(queueName: string, name: string): SubscriptionStats & SubscriptionConfig {
    const sub = this.subscription(queueName, name);
    return { ...sub.stats(), ...sub.config };
  }

  // --- publishing ----------------------------------------------------------------

  /**
   * Publishes validated messages, all or nothing. With `txId` they are staged in the
   * transaction instead. Throws PUBLISHER_RESTRICTED, QUEUE_FULL, and the like.
   */
  publish(queueName: string, publisherId: string | undefined, msgs: readonly Prepared[], txId?: string, afterPublisherSeq?: number): PublishOutcome {
    if (this.#closed) throw new SpillwayError('SHUTTING_DOWN', 'the server is shutting down');
    const q = this.queue(queueName);
    const now = Date.now();
    const id = publisherId ?? ANONYMOUS_PUBLISHER;
    if (afterPublisherSeq !== undefined) checkChain(q, id, afterPublisherSeq, this.epoch);
    const isNew = q.ledger.find(id) === undefined;
    const p = q.ledger.get(id, now);
    const refusal = q.ledger.refusal(p, now);
    if (refusal !== undefined) {
      throw new SpillwayError('PUBLISHER_RESTRICTED', `publisher ${p.id} is restricted on queue ${q.name} (${refusal.reason}); retry after ${refusal.retryAfterMs} ms`, {
        reason: refusal.reason, retryAfterMs: refusal.retryAfterMs,
      });
    }
    try {
      if (txId !== undefined) {
        const res = this.#tx.stage(txId, q, p, msgs);
        return { ids: res.ids, seqs: res.seqs, duplicates: res.duplicates, publisher: q.ledger.state(p), staged: true };
      }
      const res: PublishResult = { ids: [], seqs: [], duplicates: 0 };
      if (!q.write(p, msgs, now, res, false)) throw this.#full(q, p.id);
      q.commit();
      // Written out, not spread: on Node 20 the spread made a new hidden class almost every call.
      return { ids: res.ids, seqs: res.seqs, duplicates: res.duplicates, publisher: q.ledger.state(p) };
    } catch (err) {
      // A refused publish stores nothing: not even a publisher first seen in it.
      if (isNew) q.ledger.forgetNew(p);
      throw err;
    }
  }

  /** The error for a publish that found no room. */
  #full(q: Queue, publisherId?: string): SpillwayError {
    switch (q.fullReason()) {
      case 'SPILLING':
        // Memory is full and a spill is under way: room comes within milliseconds.
        return new SpillwayError('PUBLISHER_RESTRICTED', `queue ${q.name} is moving messages to disk; retry shortly`, {
          reason: 'overspilled', retryAfterMs: 5, queue: q.name, ...(publisherId === undefined ? {} : { publisherId }),
        });
      case 'MESSAGE_TOO_LARGE':
        return new SpillwayError('MESSAGE_TOO_LARGE', `a message does not fit in queue ${q.name}'s memory (${q.config.memoryBytes} bytes); raise memoryBytes or send smaller messages`, { queue: q.name });
      case 'INSUFFICIENT_STORAGE':
        return new SpillwayError('INSUFFICIENT_STORAGE', `queue ${q.name} is full in memory and its spill cannot take more (disk budget spent or disk failing)`, { queue: q.name });
      default:
        return new SpillwayError('QUEUE_FULL', `queue ${q.name} is full (${q.ring.usedBytes} bytes in memory, spill off)`, { queue: q.name });
    }
  }

  publisherState(queueName: string, publisherId: string): PublisherState {
    const q = this.queue(queueName);
    const p = q.ledger.find(publisherId);
    if (p === undefined) throw new SpillwayError('NOT_FOUND', `publisher ${JSON.stringify(publisherId)} is not known on queue ${queueName}`, { queue: queueName, publisherId });
    return q.ledger.state(p);
  }

  // --- transactions --------------------------------------------------------------

  beginTransaction(timeoutMs?: number): { id: string; expiresAt: string } {
    if (this.#closed) throw new SpillwayError('SHUTTING_DOWN', 'the server is shutting down');
    return this.#tx.begin(timeoutMs);
  }

  commitTransaction(id: string): { committed: number } {
    return this.#tx.commit(id, (q) => this.#full(q));
  }

  rollbackTransaction(id: string): void {
    this.#tx.rollback(id);
  }

  // --- propagation ---------------------------------------------------------------

  /** Creates a propagation of `queueName` to a queue on another server (200 same config, 409 differs). */
  createPropagation(queueName: string, name: string, body: unknown): { created: boolean; propagation: PropagationInfo } {
    const q = this.queue(queueName);
    checkName(name, 'propagation');
    const config = parsePropagationConfig(body);
    const existing = this.#props.get(queueName)?.get(name);
    if (existing !== undefined) {
      if (!sameConfig(existing.config, config)) {
        throw new SpillwayError('ALREADY_EXISTS', `propagation ${name} exists on ${queueName} with a different config`, { queue: queueName, propagation: name });
      }
      return { created: false, propagation: this.propagationInfo(queueName, name) };
    }
    this.#startPropagation(q, name, config);
    this.#save();
    return { created: true, propagation: this.propagationInfo(queueName, name) };
  }

  propagationInfo(queueName: string, name: string): PropagationInfo {
    const e = this.#propagation(queueName, name);
    const info: PropagationInfo = {
      name, url: e.config.url, queue: e.config.queue, state: e.prop.state,
      sentSeq: e.prop.sentSeq, ackedSeq: e.prop.ackedSeq, lag: e.prop.lag,
    };
    if (e.prop.lastError !== undefined) info.lastError = e.prop.lastError;
    return info;
  }

  listPropagations(queueName: string): PropagationInfo[] {
    this.queue(queueName);
    return [...(this.#props.get(queueName)?.keys() ?? [])].map((n) => this.propagationInfo(queueName, n));
  }

  deletePropagation(queueName: string, name: string): void {
    const e = this.#propagation(queueName, name);
    e.prop.stop();
    e.detach();
    this.#props.get(queueName)!.delete(name);
    const q = this.queue(queueName);
    const sub = q.subscription(propagationSubscription(name));
    if (sub !== undefined) {
      this.#forget(sub);
      q.removeSubscription(sub.name, 'deleted');
    }
    this.#save();
  }

  #propagation(queueName: string, name: string): PropagationEntry {
    this.queue(queueName);
    const e = this.#props.get(queueName)?.get(name);
    if (e === undefined) throw new SpillwayError('NOT_FOUND', `propagation ${JSON.stringify(name)} does not exist on queue ${queueName}`, { queue: queueName, propagation: name });
    return e;
  }

  #startPropagation(q: Queue, name: string, config: PropagationConfig): void {
    const subName = propagationSubscription(name);
    // Its messages wait for consumption at the destination, which may take long: a long
    // deadline and many attempts (a redelivery there is only a duplicate, dropped by publisherSeq).
    const subConfig: SubscriptionConfig = { ackDeadlineMs: 600_000, maxDeliveries: 1000, startAt: 'latest' };
    if (config.filter !== undefined) subConfig.filter = config.filter;
    const sub = q.subscription(subName) ?? this.#addSubscription(q, subName, subConfig, Date.now(), undefined, 0);
    const prop = new Propagation(`${this.serverId}:${q.name}`, this.destinationFor(config), {
      ackSeqs: (seqs) => sub.ackSeqs(seqs),
      get pending() { return sub.backlog + sub.inFlight; },
    }, config.queue);
    const detach = this.consume(q.name, subName, prop);
    let byName = this.#props.get(q.name);
    if (byName === undefined) this.#props.set(q.name, (byName = new Map()));
    byName.set(name, { config, prop, detach });
  }

  // --- consuming -----------------------------------------------------------------

  /** Pull: `render` turns the batch into the caller's form in the delivering turn. */
  pull<T>(queueName: string, subName: string, max: number, waitMs: number, autoAck: boolean, render: (b: DeliveryBatch) => T, signal?: AbortSignal): Promise<T> {
    return this.subscription(queueName, subName).pull(max, waitMs, autoAck, render, signal);
  }

  /** Pull as Message objects. */
  pullMessages(queueName: string, subName: string, opts: { max?: number; waitMs?: number; autoAck?: boolean } = {}): Promise<Message[]> {
    return this.pull(queueName, subName, opts.max ?? 1, opts.waitMs ?? 0, opts.autoAck ?? false, (b) => b.messages());
  }

  ack(queueName: string, subName: string, ids: readonly unknown[]): { acked: number; unknown: unknown[] } {
    const unknown: unknown[] = [];
    const acked = this.subscription(queueName, subName).ack(ids, unknown);
    return { acked, unknown };
  }

  nack(queueName: string, subName: string, ids: readonly unknown[], delayMs = 0): { nacked: number; unknown: unknown[] } {
    const unknown: unknown[] = [];
    const nacked = this.subscription(queueName, subName).nack(ids, delayMs, unknown);
    return { nacked, unknown };
  }

  extend(queueName: string, subName: string, ids: readonly unknown[], ackDeadlineMs: number): { extended: number; unknown: unknown[] } {
    const unknown: unknown[] = [];
    const extended = this.subscription(queueName, subName).extend(ids, ackDeadlineMs, unknown);
    return { extended, unknown };
  }

  /** Attaches a push consumer; returns the function that detaches it (unacked messages go to others). */
  consume(queueName: string, subName: string, consumer: Consumer): () => void {
    const sub = this.subscription(queueName, subName);
    sub.addConsumer(consumer);
    return () => sub.removeConsumer(consumer);
  }

  /** Stops taking publishes and clears every timer. Messages are not kept. */
  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    clearInterval(this.#ticker);
    clearInterval(this.#sweeper);
    this.#tx.close();
    for (const byName of this.#props.values()) for (const e of byName.values()) e.prop.stop();
    for (const q of this.#queues.values()) {
      for (const sub of q.subscriptions) {
        this.#forget(sub);
        sub.releaseWaiters();
      }
      q.closeSpill();
    }
    const tmp = this.#spillTmp;
    return (this.#spill?.close() ?? Promise.resolve()).then(() => {
      if (tmp !== undefined) rmSync(tmp, { recursive: true, force: true });
    });
  }

  get closing(): boolean { return this.#closed; }

  // --- QueueHost -----------------------------------------------------------------

  wake(sub: Subscription): void {
    this.#dirty.add(sub);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      // Right after the current read (all frames of one TCP chunk), before the loop polls
      // again: what one read published goes out together, with no wait for the next turn.
      process.nextTick(this.#flush);
    }
  }

  /** One dispatch per woken subscription per read: what is ready goes out together. */
  readonly #flush = (): void => {
    this.#flushScheduled = false;
    for (const sub of this.#dirty) {
      this.#dirty.delete(sub);
      sub.dispatch();
    }
  };

  watch(sub: Subscription): void {
    this.#timed.add(sub);
    if (this.#ticker === undefined && !this.#closed) {
      this.#ticker = setInterval(this.#tick, this.#tickMs);
      this.#ticker.unref();
    }
  }

  readonly #tick = (): void => {
    const now = Date.now();
    for (const sub of this.#timed) {
      sub.expire(now);
      if (!sub.hasDeadlines) this.#timed.delete(sub);
    }
    if (this.#timed.size === 0) {
      clearInterval(this.#ticker);
      this.#ticker = undefined;
    }
  };

  deadLetter(_from: Queue, sub: Subscription, src: Buffer, start: number, len: number, attempt: number): boolean {
    const dlqName = sub.config.deadLetterQueue;
    const dlq = dlqName === undefined ? undefined : this.#queues.get(dlqName);
    if (dlq === undefined) return false;
    const m = decodeBody(src, start, len, attempt);
    const bytes = m.encoding === 'utf8' ? Buffer.byteLength(m.data) : Buffer.from(m.data, 'base64').length;
    const attrs = Object.keys(m.attributes).length > 0 ? m.attributes : undefined;
    const prepared = preparedFrom(m.data, m.encoding, bytes, attrs, m.key, undefined);
    const now = Date.now();
    // Dead letters bypass flow control: refusing them would lose the message.
    const p = dlq.ledger.get(m.publisherId, now);
    if (!dlq.write(p, [prepared], now, { ids: [], seqs: [], duplicates: 0 }, false)) return false;
    dlq.commit();
    return true;
  }

  spillFor(q: Queue): QueueSpill | undefined {
    return this.#spill?.forQueue(q.name, q.ring.sab);
  }

  spillError(q: Queue, err: string): void {
    this.#spillErrors++;
    if (this.#spillErrors <= 10 || this.#spillErrors % 1000 === 0) process.emitWarning(`spill on queue ${q.name}: ${err}`, { code: 'SPILLWAY_SPILL' });
  }

  /** Spill figures for metrics: disk bytes in use, write/read errors, corrupt records found. */
  get spillStats(): { usedBytes: number; maxBytes: number; errors: number; corruptRecords: number; workerRestarts: number } {
    const s = this.#spill;
    return {
      usedBytes: s?.usedBytes ?? 0,
      maxBytes: s?.maxDiskBytes ?? 0,
      errors: this.#spillErrors,
      corruptRecords: s?.corruptRecords ?? 0,
      workerRestarts: s?.worker.restarts ?? 0,
    };
  }

  /** Fault injection for tests: the next `writes` spill writes fail, or the worker dies. */
  injectSpillFault(fault: { failWrites: number } | 'crash'): Promise<unknown> {
    const w = this.#spill?.worker;
    if (w === undefined) return Promise.resolve();
    return fault === 'crash' ? w.request({ type: 'crash' }) : w.request({ type: 'fail', writes: fault.failWrites });
  }

  subscriptionEnded(_queue: Queue, sub: Subscription): void {
    this.#forget(sub);
    this.#save();
  }

  observeFirstDelivery(publishedAt: number, now: number): void {
    this.latency.observe(now - publishedAt);
  }

  // --- internals -----------------------------------------------------------------

  #addQueue(name: string, config: QueueConfig): Queue {
    const initial = Math.min(INITIAL_CAPACITY, config.memoryBytes);
    if (this.#allocated + initial > this.memoryBytes) {
      throw new SpillwayError('INSUFFICIENT_STORAGE',
        `no ring memory left for queue ${name}: the server's ${this.memoryBytes} bytes (--memory) are in use`, { queue: name });
    }
    const q = new Queue(name, config, this);
    this.#queues.set(name, q);
    this.#allocated += q.ring.capacity;
    return q;
  }

  /** Rings grow into the server's memory budget as they fill; the budget is never exceeded. */
  reserveMemory(bytes: number): boolean {
    if (this.#allocated + bytes > this.memoryBytes) return false;
    this.#allocated += bytes;
    return true;
  }

  /** Ring memory taken by all queues. */
  get allocatedMemory(): number { return this.#allocated; }

  #addSubscription(q: Queue, name: string, config: SubscriptionConfig, createdAt: number, expiresAt: number | undefined, ackedEvents: number): Subscription {
    const sub = q.addSubscription(name, config, createdAt, expiresAt);
    sub.ackedEvents = ackedEvents;
    if (expiresAt !== undefined) {
      sub.setTtlTimer(expiresAt - Date.now(), () => {
        if (q.subscription(name) !== sub) return;
        this.#forget(sub);
        q.removeSubscription(name, 'expired');
        this.#save();
      });
    }
    return sub;
  }

  #forget(sub: Subscription): void {
    this.#dirty.delete(sub);
    this.#timed.delete(sub);
  }

  #restore(dataDir: string): void {
    const defs = loadDefinitions(dataDir);
    if (defs === undefined) {
      this.#save();
      return;
    }
    if (defs.serverId !== undefined) this.serverId = defs.serverId;
    const now = Date.now();
    for (const qd of defs.queues) {
      const q = this.#addQueue(qd.name, parseQueueConfig(qd.config));
      for (const sd of qd.subscriptions) {
        if (sd.expiresAt !== undefined && sd.expiresAt <= now) continue;
        const cfg = parseSubscriptionConfig(sd.config);
        if (cfg.maxEvents !== undefined && (sd.ackedEvents ?? 0) >= cfg.maxEvents) continue;
        this.#addSubscription(q, sd.name, cfg, sd.createdAt, sd.expiresAt, sd.ackedEvents ?? 0);
      }
      for (const pd of qd.propagations ?? []) this.#startPropagation(q, pd.name, parsePropagationConfig(pd.config));
    }
    this.#save();
  }

  #save(): void {
    if (this.#dataDir === undefined) return;
    const defs: Definitions = {
      version: 1,
      serverId: this.serverId,
      queues: this.queues().map((q) => ({
        name: q.name,
        config: q.config,
        // A propagation's subscription is made again from the propagation.
        propagations: [...(this.#props.get(q.name)?.entries() ?? [])].map(([name, e]) => ({ name, config: e.config })),
        subscriptions: q.subscriptions.filter((s) => !s.name.startsWith('propagation:')).map((s) => {
          const d: Definitions['queues'][number]['subscriptions'][number] = { name: s.name, config: s.config, createdAt: s.createdAt };
          if (s.expiresAt !== undefined) d.expiresAt = s.expiresAt;
          if (s.config.maxEvents !== undefined) d.ackedEvents = s.ackedEvents;
          return d;
        }),
      })),
    };
    saveDefinitions(this.#dataDir, defs);
  }
}

/**
 * A chained publish (see docs/http.md, "Pipelined publishing") is stored only right after the
 * batch it names: a batch refused in a pipeline can then never be overtaken by a later one.
 */
function checkChain(q: Queue, publisherId: string, after: number, epoch: string): void {
  const last = Math.max(0, q.ledger.find(publisherId)?.lastSeq ?? 0);
  if (last !== after) {
    throw invalid(`afterPublisherSeq ${after} does not follow publisher ${publisherId}: its last publisherSeq on queue ${q.name} is ${last}`, {
      field: 'afterPublisherSeq', lastPublisherSeq: last, epoch,
    });
  }
}
