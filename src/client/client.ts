import { SpillwayClientError, closedError, fromEnvelope, isSpillwayClientError, timeoutError } from './errors';
import { Message, type AckSink } from './message';
import {
  Publisher, type BatchOptions, type Frame, type LaneStatus, type PublishHost, type PublisherOptions,
  type RestrictedEvent, type ResumedEvent, type WsRequest,
} from './publisher';
import { Rest, seg, type FetchLike } from './rest';
import { Emitter, backgroundInterval, backgroundTimer, nextTurn, randomId } from './runtime';
import { Subscription, kDeliver, kEnd, kLost, type SubscribeOptions, type SubscriptionHost } from './subscription';
import { Transaction } from './transaction';
import { globalWebSocketTransport, type Transport, type TransportInfo, type TransportSocket } from './transport';
import type {
  AckResult, CallOptions, ExtendResult, Health, MessageId, NackResult, PublishInput, PublisherState, PullOptions,
  QueueConfig, QueueStats, SubscriptionConfig, SubscriptionInfo, WireMessage,
} from './types';

export interface ReconnectOptions {
  /** First delay after a lost connection (ms, default 100). */
  initialDelayMs?: number;
  /** Largest delay (ms, default 5000). */
  maxDelayMs?: number;
  /** Growth per failed attempt (default 2). Each delay is jittered down by up to half. */
  factor?: number;
}

export interface ClientOptions {
  /** The server: `http://host:port` (or `https://`, `ws://`, `wss://`). */
  url: string;
  /** Bearer token (auth on). Browsers send it as `?token=` on the WebSocket. */
  token?: string;
  /**
   * The id this client publishes as. Default: a random `c-…` id (or, with a token, none:
   * the server uses the token's name, and messages are not numbered). One live client per id:
   * publisherSeqs are counted by the client, and with a chosen id they continue after the
   * server's `lastPublisherSeq`.
   */
  publisherId?: string;
  /** Number messages with publisherSeq so re-sends are never stored twice (default true). */
  sequence?: boolean;
  /** Timeout of every call (ms, default 30000). */
  timeoutMs?: number;
  /** Time for one connection attempt, WebSocket upgrade and /healthz (ms, default 10000). */
  connectTimeoutMs?: number;
  reconnect?: ReconnectOptions;
  batch?: BatchOptions;
  /** Bound of the client's own publisher: publish() waits for room beyond it. */
  maxPendingMessages?: number;
  maxPendingBytes?: number;
  /** The WebSocket to use (default: `ws` in Node, the global WebSocket in browsers). */
  transport?: Transport | TransportInfo;
  /** Default: the global fetch. */
  fetch?: FetchLike;
}

export type ConnectionState = 'idle' | 'connecting' | 'ready' | 'reconnecting' | 'closed';

export interface ClientEvents {
  /** The WebSocket is open and the server's epoch known. */
  connected: { epoch: string; reconnected: boolean };
  disconnected: { code: number; reason: string };
  /** The next attempt is in `delayMs`. */
  reconnecting: { attempt: number; delayMs: number; error?: string };
  /** The server restarted: repeatable publishers re-send what was not yet safe. */
  epoch: { previous: string; epoch: string };
  /** A publish got 429 PUBLISHER_RESTRICTED: it is held back and retried after `retryAfterMs`. */
  restricted: RestrictedEvent;
  /** Publishing to the queue goes on after a restriction. */
  resumed: ResumedEvent;
  /** Failures that have no caller to reject (a re-send refused, a callback that threw, a stray error frame). */
  error: unknown;
}

let defaultTransport: TransportInfo | undefined;

/** The transport used when none is given (the Node entry installs `ws`). */
export function setDefaultTransport(t: TransportInfo | undefined): void {
  defaultTransport = t;
}

const MAX_PULL_WAIT_MS = 30_000;

/** The ack, nack and extend of one (queue, subscription); acks of a turn leave as one frame. */
class AckTarget implements AckSink {
  readonly queue: string;
  readonly subscription: string;
  /** `{"op":"ack","queue":…,"subscription":…,"ids":`, made once. */
  readonly prefix: string;
  ids: string[] = [];
  queued = false;
  readonly #client: SpillwayClient;
  readonly #hooks: AckHooks;

  constructor(client: SpillwayClient, hooks: AckHooks, queue: string, subscription: string) {
    this.#client = client;
    this.#hooks = hooks;
    this.queue = queue;
    this.subscription = subscription;
    this.prefix = '{"op":"ack","queue":' + JSON.stringify(queue) + ',"subscription":' + JSON.stringify(subscription) + ',"ids":';
  }

  ack(id: string): void {
    this.ids.push(id);
    if (!this.queued) {
      this.queued = true;
      this.#hooks.queueAcks(this);
    }
  }

  nack(id: string, delayMs: number): void { this.#hooks.nack(this, id, delayMs); }

  extend(ids: string[], ackDeadlineMs: number, opts?: CallOptions): Promise<ExtendResult> {
    return this.#client.extend(this.queue, this.subscription, ids, ackDeadlineMs, opts);
  }
}

interface AckHooks {
  queueAcks(t: AckTarget): void;
  nack(t: AckTarget, id: string, delayMs: number): void;
}

/** A WS call other than publish (subscribe, unsubscribe, ack/nack with a ref), re-sent after a reconnect until its deadline. */
interface OneShot extends WsRequest {
  frame: (ref: number) => string;
}

interface SubState {
  /** The first subscribe: `subscribe()` waits for it. */
  first: { resolve: () => void; reject: (e: unknown) => void; deadline: number } | undefined;
  timeoutMs: number;
}

const key = (queue: string, sub: string): string => queue + '\n' + sub;

/**
 * A Spillway client: one WebSocket (publish, subscribe, ack, nack), REST for the rest, automatic
 * reconnect with backoff. Connects on first use, or with `connect()`.
 */
export class SpillwayClient extends Emitter<ClientEvents> {
  readonly url: string;
  readonly publisherId: string | undefined;
  readonly #wsUrl: string;
  readonly #transport: TransportInfo;
  readonly #headers: Record<string, string> | undefined;
  readonly #rest: Rest;
  readonly #timeoutMs: number;
  readonly #connectTimeoutMs: number;
  readonly #reconnect: Required<ReconnectOptions>;
  readonly #batch: Required<BatchOptions>;
  readonly #sequence: boolean;
  readonly #publisher: Publisher;
  readonly #publishers = new Set<Publisher>();
  #repeatableCount = 0;
  /** The publisher id was given in the options (not made up here). */
  readonly #idChosen: boolean;

  #state: ConnectionState = 'idle';
  #closing = false;
  #closePromise: Promise<void> | undefined;
  #socket: TransportSocket | undefined;
  #ready = false;
  #everReady = false;
  #attempt = 0;
  #lastError: string | undefined;
  #reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  #connectTimer: ReturnType<typeof setTimeout> | undefined;
  #sweeper: ReturnType<typeof setInterval> | undefined;
  #epoch: string | undefined;
  /** Date.now() at the last sweep plus one sweep period (see PublishHost.clock). */
  #clock = Date.now();
  readonly #sweepMs: number;
  #readyWaiters: { resolve: () => void; reject: (e: unknown) => void }[] = [];

  #ref = 0;
  readonly #requests = new Map<number, WsRequest>();
  #deferred: OneShot[] = [];

  readonly #subs = new Map<string, Subscription>();
  readonly #subStates = new Map<Subscription, SubState>();
  readonly #targets = new Map<string, AckTarget>();
  #ackQueue: AckTarget[] = [];
  #ackScheduled = false;

  constructor(opts: ClientOptions) {
    super();
    if (typeof opts?.url !== 'string') throw new SpillwayClientError('INVALID_ARGUMENT', 'url is required, e.g. http://127.0.0.1:8080');
    const base = opts.url.replace(/\/+$/, '').replace(/^ws(s?):/, 'http$1:');
    this.url = base;
    const t = opts.transport;
    const info = typeof t === 'function' ? { transport: t, headers: true } : t ?? defaultTransport ?? globalWebSocketTransport();
    if (info === undefined) throw new SpillwayClientError('INVALID_ARGUMENT', 'no WebSocket here: pass a transport (in Node, import the client from "spillway/client")');
    this.#transport = info;
    const tokenQuery = opts.token !== undefined && !info.headers ? '?token=' + encodeURIComponent(opts.token) : '';
    this.#wsUrl = base.replace(/^http/, 'ws') + '/v1/ws' + tokenQuery;
    this.#headers = opts.token !== undefined && info.headers ? { authorization: `Bearer ${opts.token}` } : undefined;
    const f = opts.fetch ?? (globalThis as { fetch?: FetchLike }).fetch;
    if (f === undefined) throw new SpillwayClientError('INVALID_ARGUMENT', 'no fetch here: pass one in the options');
    this.#rest = new Rest(base, f.bind(globalThis) as FetchLike, opts.token);
    this.#timeoutMs = opts.timeoutMs ?? 30_000;
    this.#connectTimeoutMs = opts.connectTimeoutMs ?? 10_000;
    this.#sweepMs = Math.min(100, Math.max(10, Math.floor(this.#timeoutMs / 4)));
    this.#clock = Date.now() + this.#sweepMs;
    this.#reconnect = { initialDelayMs: 100, maxDelayMs: 5000, factor: 2, ...opts.reconnect };
    const b = opts.batch ?? {};
    this.#batch = {
      maxMessages: Math.max(1, Math.min(1000, b.maxMessages ?? 1000)),
      // Under 128 KiB: V8 keeps longer strings in large-object space, where making the frame
      // (and the server's decoding of it) costs about five times as much per byte.
      maxBytes: Math.max(1, b.maxBytes ?? 64 * 1024),
      lingerMs: Math.max(0, b.lingerMs ?? 0),
    };
    this.#sequence = opts.sequence ?? true;
    this.#idChosen = opts.publisherId !== undefined;
    this.publisherId = opts.publisherId ?? (opts.token !== undefined ? undefined : randomId('c-'));
    this.#publisher = new Publisher(this.#publishHost, this.publisherId, false, opts.publisherId === undefined, {
      maxMessages: opts.maxPendingMessages, maxBytes: opts.maxPendingBytes,
    });
    this.#publishers.add(this.#publisher);
  }

  get state(): ConnectionState { return this.#state; }
  /** The server's epoch as last seen (it changes when the server restarts). */
  get epoch(): string | undefined { return this.#epoch; }
  get timeoutMs(): number { return this.#timeoutMs; }

  /** Connects (if not yet) and resolves once the WebSocket is open and the epoch known. */
  connect(opts: CallOptions = {}): Promise<void> {
    if (this.#closing) return Promise.reject(closedError());
    if (this.#ready) return Promise.resolve();
    this.#start();
    const ms = opts.timeoutMs ?? this.#timeoutMs;
    return new Promise((resolve, reject) => {
      const w = {
        resolve: () => { clearTimeout(t); resolve(); },
        reject: (e: unknown) => { clearTimeout(t); reject(e); },
      };
      const t = setTimeout(() => {
        const i = this.#readyWaiters.indexOf(w);
        if (i >= 0) this.#readyWaiters.splice(i, 1);
        reject(new SpillwayClientError('TIMEOUT', `could not connect to ${this.url} within ${ms} ms${this.#lastError ? `: ${this.#lastError}` : ''}`));
      }, ms);
      this.#readyWaiters.push(w);
    });
  }

  // --- publishing --------------------------------------------------------------------

  /**
   * Publishes one message (→ its id) or an array of up to 1000 (→ their ids, all or nothing).
   * Concurrent calls are batched into one frame; 429s are waited out (see the `restricted`
   * event and `publishStatus`); lost connections are ridden out with the same publisherSeqs.
   */
  publish(queue: string, message: PublishInput, opts?: CallOptions): Promise<MessageId>;
  publish(queue: string, messages: readonly PublishInput[], opts?: CallOptions): Promise<MessageId[]>;
  publish(queue: string, input: PublishInput | readonly PublishInput[], opts?: CallOptions): Promise<MessageId | MessageId[]> {
    if (this.#closing) return Promise.reject(closedError());
    return this.#publisher.publish(queue, input, opts);
  }

  /** Where this client's publishes to `queue` stand (`restricted` while a 429 is waited out). */
  publishStatus(queue: string): LaneStatus | undefined { return this.#publisher.status(queue); }

  /**
   * A publisher that keeps each message until the server reports it safe (`safePublisherSeq`:
   * acked by every subscription), and re-sends the rest when the server restarted (new epoch).
   * Its `publish` waits while it holds `maxMessages` / `maxBytes` (backpressure).
   */
  repeatablePublisher(opts: PublisherOptions = {}): Publisher {
    if (this.#closing) throw closedError();
    if (!this.#sequence) throw new SpillwayClientError('INVALID_ARGUMENT', 'a repeatable publisher needs publisherSeq numbering (sequence: true)');
    const n = ++this.#repeatableCount;
    const id = opts.publisherId ?? (this.publisherId === undefined ? undefined : `${this.publisherId}.r${n}`);
    if (id === undefined) throw new SpillwayClientError('INVALID_ARGUMENT', 'a repeatable publisher needs a publisherId (with auth: the token\'s name)');
    for (const p of this.#publishers) {
      if (p.publisherId === id) throw new SpillwayClientError('INVALID_ARGUMENT', `publisher id ${id} is already used by this client`);
    }
    // A random base id has never numbered anything; a chosen one may have (an earlier process).
    const p = new Publisher(this.#publishHost, id, true, opts.publisherId === undefined && !this.#idChosen, opts);
    this.#publishers.add(p);
    return p;
  }

  // --- subscribing -------------------------------------------------------------------

  /**
   * Subscribes over the WebSocket; resolves once the server confirmed. Iterate the result with
   * `for await`, or pass `onMessage` for the callback form. Survives reconnects.
   */
  async subscribe(queue: string, subscription = 'default', opts: SubscribeOptions = {}): Promise<Subscription> {
    if (this.#closing) throw closedError();
    const k = key(queue, subscription);
    if (this.#subs.has(k)) throw new SpillwayClientError('INVALID_ARGUMENT', `this client is already subscribed to ${queue}/${subscription} (one consumer per subscription and connection)`);
    const sub = new Subscription(this.#subHost, this.#target(queue, subscription), opts);
    const timeoutMs = opts.timeoutMs ?? this.#timeoutMs;
    this.#subs.set(k, sub);
    await new Promise<void>((resolve, reject) => {
      this.#subStates.set(sub, { first: { resolve, reject, deadline: Date.now() + timeoutMs }, timeoutMs });
      if (this.#ready) this.#activate(sub);
      else this.#start();
    });
    return sub;
  }

  /** Acks by id (confirmed: resolves with the server's answer). `message.ack()` is the fire-and-forget form. */
  ack(queue: string, subscription: string, ids: string[], opts: CallOptions = {}): Promise<AckResult> {
    if (this.#state === 'idle') return this.#rest.call('POST', `/v1/queues/${seg(queue)}/subscriptions/${seg(subscription)}/ack`, { ids }, opts.timeoutMs ?? this.#timeoutMs);
    return this.#wsCall((ref) => JSON.stringify({ op: 'ack', ref, queue, subscription, ids }), opts.timeoutMs, true)
      .then((f) => ({ acked: f.acked as number, unknown: f.unknown as string[] }));
  }

  /** Gives messages back; they are delivered again after `delayMs`. */
  nack(queue: string, subscription: string, ids: string[], delayMs = 0, opts: CallOptions = {}): Promise<NackResult> {
    if (this.#state === 'idle') return this.#rest.call('POST', `/v1/queues/${seg(queue)}/subscriptions/${seg(subscription)}/nack`, { ids, delayMs }, opts.timeoutMs ?? this.#timeoutMs);
    return this.#wsCall((ref) => JSON.stringify({ op: 'nack', ref, queue, subscription, ids, delayMs }), opts.timeoutMs, true)
      .then((f) => ({ nacked: f.nacked as number, unknown: f.unknown as string[] }));
  }

  /** Moves the ack deadline of in-flight messages (REST). */
  extend(queue: string, subscription: string, ids: string[], ackDeadlineMs: number, opts: CallOptions = {}): Promise<ExtendResult> {
    return this.#rest.call('POST', `/v1/queues/${seg(queue)}/subscriptions/${seg(subscription)}/extend`, { ids, ackDeadlineMs }, opts.timeoutMs ?? this.#timeoutMs);
  }

  /** Pull (REST): up to `max` messages, waiting up to `waitMs` for the first. */
  async pull(queue: string, subscription = 'default', opts: PullOptions = {}): Promise<Message[]> {
    const body: Record<string, unknown> = {};
    if (opts.max !== undefined) body.max = opts.max;
    if (opts.waitMs !== undefined) body.waitMs = opts.waitMs;
    if (opts.autoAck !== undefined) body.autoAck = opts.autoAck;
    const wait = Math.min(opts.waitMs ?? 0, MAX_PULL_WAIT_MS);
    const r = await this.#rest.call<{ messages: WireMessage[] }>('POST', `/v1/queues/${seg(queue)}/subscriptions/${seg(subscription)}/pull`, body,
      Math.max(opts.timeoutMs ?? this.#timeoutMs, wait + 5000));
    const t = this.#target(queue, subscription);
    return r.messages.map((m) => new Message(t, m));
  }

  // --- transactions ------------------------------------------------------------------

  /** Begins a transaction (`timeoutMs`: the server rolls it back after that, default 30 s). */
  async transaction(opts: { timeoutMs?: number; callTimeoutMs?: number } = {}): Promise<Transaction> {
    if (this.#closing) throw closedError();
    const body = opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs };
    const callMs = opts.callTimeoutMs ?? this.#timeoutMs;
    const r = await this.#rest.call<{ id: string; expiresAt: string }>('POST', '/v1/transactions', body, callMs);
    return new Transaction(this.#rest, r.id, r.expiresAt, this.publisherId, callMs);
  }

  // --- admin (REST) ------------------------------------------------------------------

  health(opts: CallOptions = {}): Promise<Health> {
    return this.#rest.call('GET', '/healthz', undefined, opts.timeoutMs ?? this.#timeoutMs);
  }

  /** Creates a queue; `created` is false when the same config existed (a different one: ALREADY_EXISTS). */
  async createQueue(name: string, config: QueueConfig = {}, opts: CallOptions = {}): Promise<{ created: boolean; queue: QueueStats }> {
    const r = await this.#rest.request<QueueStats>('PUT', `/v1/queues/${seg(name)}`, config, opts.timeoutMs ?? this.#timeoutMs);
    return { created: r.status === 201, queue: r.body };
  }

  getQueue(name: string, opts: CallOptions = {}): Promise<QueueStats> {
    return this.#rest.call('GET', `/v1/queues/${seg(name)}`, undefined, opts.timeoutMs ?? this.#timeoutMs);
  }

  async listQueues(opts: CallOptions = {}): Promise<QueueStats[]> {
    return (await this.#rest.call<{ queues: QueueStats[] }>('GET', '/v1/queues', undefined, opts.timeoutMs ?? this.#timeoutMs)).queues;
  }

  async deleteQueue(name: string, opts: CallOptions = {}): Promise<void> {
    await this.#rest.call('DELETE', `/v1/queues/${seg(name)}`, undefined, opts.timeoutMs ?? this.#timeoutMs);
  }

  /** Removes every retained message; resolves with how many. */
  async purgeQueue(name: string, opts: CallOptions = {}): Promise<number> {
    return (await this.#rest.call<{ purged: number }>('POST', `/v1/queues/${seg(name)}/purge`, {}, opts.timeoutMs ?? this.#timeoutMs)).purged;
  }

  async createSubscription(queue: string, name: string, config: SubscriptionConfig = {}, opts: CallOptions = {}): Promise<{ created: boolean; subscription: SubscriptionInfo }> {
    const r = await this.#rest.request<SubscriptionInfo>('PUT', `/v1/queues/${seg(queue)}/subscriptions/${seg(name)}`, config, opts.timeoutMs ?? this.#timeoutMs);
    return { created: r.status === 201, subscription: r.body };
  }

  getSubscription(queue: string, name: string, opts: CallOptions = {}): Promise<SubscriptionInfo> {
    return this.#rest.call('GET', `/v1/queues/${seg(queue)}/subscriptions/${seg(name)}`, undefined, opts.timeoutMs ?? this.#timeoutMs);
  }

  async listSubscriptions(queue: string, opts: CallOptions = {}): Promise<SubscriptionInfo[]> {
    return (await this.#rest.call<{ subscriptions: SubscriptionInfo[] }>('GET', `/v1/queues/${seg(queue)}/subscriptions`, undefined, opts.timeoutMs ?? this.#timeoutMs)).subscriptions;
  }

  async deleteSubscription(queue: string, name: string, opts: CallOptions = {}): Promise<void> {
    await this.#rest.call('DELETE', `/v1/queues/${seg(queue)}/subscriptions/${seg(name)}`, undefined, opts.timeoutMs ?? this.#timeoutMs);
  }

  /** Flow-control state of a publisher on a queue (default: this client's). */
  publisherState(queue: string, publisherId: string | undefined = this.publisherId, opts: CallOptions = {}): Promise<PublisherState> {
    if (publisherId === undefined) return Promise.reject(new SpillwayClientError('INVALID_ARGUMENT', 'publisherId is required (this client has none)'));
    return this.#rest.call('GET', `/v1/queues/${seg(queue)}/publishers/${seg(publisherId)}`, undefined, opts.timeoutMs ?? this.#timeoutMs);
  }

  // --- closing -----------------------------------------------------------------------

  /**
   * Drains and closes: subscriptions stop (buffered messages go back to the server), queued
   * publishes are sent and answered (up to `timeoutMs`, then rejected with CLOSED), pending
   * acks are sent, then the WebSocket closes. Repeatable publishers' retained messages are
   * not waited for: call their `flush()` first for that.
   */
  close(opts: CallOptions = {}): Promise<void> {
    if (this.#closePromise !== undefined) return this.#closePromise;
    this.#closing = true;
    this.#closePromise = this.#drainAndClose(opts.timeoutMs ?? this.#timeoutMs);
    return this.#closePromise;
  }

  async #drainAndClose(timeoutMs: number): Promise<void> {
    const err = closedError();
    this.#flushAcks();
    for (const [sub, st] of [...this.#subStates]) {
      st.first?.reject(err);
      sub[kEnd]({ reason: 'closed' });
      if (this.#ready && st.first === undefined) this.#send(JSON.stringify({ op: 'unsubscribe', queue: sub.queue, subscription: sub.name }));
    }
    this.#subs.clear();
    this.#subStates.clear();
    if (this.#state !== 'idle') {
      await Promise.allSettled([...this.#publishers].map((p) => p.idle(timeoutMs)));
    }
    for (const p of this.#publishers) p.close();
    this.#ackScheduled = false;
    this.#flushAcks();
    const acksByRest = this.#pendingRestAcks.splice(0);
    for (const d of this.#deferred.splice(0)) d.fail(err);
    const reqs = [...this.#requests.values()];
    this.#requests.clear();
    for (const r of reqs) r.fail(err);
    for (const w of this.#readyWaiters.splice(0)) w.reject(err);
    this.#state = 'closed';
    this.#ready = false;
    clearTimeout(this.#reconnectTimer);
    clearTimeout(this.#connectTimer);
    clearInterval(this.#sweeper);
    const s = this.#socket;
    this.#socket = undefined;
    if (s !== undefined) s.close(1000, 'client closed');
    await Promise.allSettled(acksByRest);
  }

  // --- connection --------------------------------------------------------------------

  #start(): void {
    if (this.#state !== 'idle') return;
    this.#state = 'connecting';
    this.#clock = Date.now() + this.#sweepMs;
    this.#sweeper = backgroundInterval(this.#sweep, this.#sweepMs);
    this.#open();
  }

  #open(): void {
    this.#reconnectTimer = undefined;
    if (this.#state === 'closed') return;
    let sock: TransportSocket | undefined;
    try {
      sock = this.#transport.transport(this.#wsUrl, { headers: this.#headers }, {
        onOpen: () => { if (this.#socket === sock && sock !== undefined) this.#onOpen(sock); },
        onMessage: (d) => { if (this.#socket === sock) this.#onFrame(d); },
        onClose: (code, reason) => { if (this.#socket === sock) this.#onClose(code, reason); },
        onError: (e) => { this.#lastError = e.message; },
      });
    } catch (e) {
      this.#lastError = (e as Error).message;
      this.#scheduleReconnect();
      return;
    }
    this.#socket = sock;
    const s = sock;
    this.#connectTimer = backgroundTimer(() => {
      if (this.#socket === s && !this.#ready) {
        this.#lastError = `no connection within ${this.#connectTimeoutMs} ms`;
        s.terminate();
      }
    }, this.#connectTimeoutMs);
  }

  #onOpen(sock: TransportSocket): void {
    // The epoch tells a reconnect to the same run from a restarted server.
    this.#rest.call<Health>('GET', '/healthz', undefined, this.#connectTimeoutMs).then((h) => {
      if (this.#socket !== sock) return;
      clearTimeout(this.#connectTimer);
      const prev = this.#epoch;
      const changed = prev !== undefined && prev !== h.epoch;
      this.#epoch = h.epoch;
      this.#ready = true;
      this.#state = 'ready';
      this.#attempt = 0;
      const reconnected = this.#everReady;
      this.#everReady = true;
      this.emit('connected', { epoch: h.epoch, reconnected });
      if (changed) this.emit('epoch', { previous: prev!, epoch: h.epoch });
      for (const sub of this.#subs.values()) this.#activate(sub);
      for (const d of this.#deferred.splice(0)) this.#sendRequest(d);
      this.#flushAcks();
      for (const p of this.#publishers) p.ready(changed);
      for (const w of this.#readyWaiters.splice(0)) w.resolve();
    }, (err: unknown) => {
      if (this.#socket !== sock) return;
      this.#lastError = `GET /healthz: ${(err as Error).message}`;
      sock.terminate();
    });
  }

  #onClose(code: number, reason: string): void {
    const wasReady = this.#ready;
    this.#socket = undefined;
    this.#ready = false;
    clearTimeout(this.#connectTimer);
    const reqs = [...this.#requests.values()];
    this.#requests.clear();
    for (const r of reqs) r.lost();
    for (const sub of this.#subs.values()) sub[kLost]();
    if (wasReady) this.emit('disconnected', { code, reason });
    if (this.#state === 'closed') return;
    this.#scheduleReconnect();
  }

  #scheduleReconnect(): void {
    const r = this.#reconnect;
    const base = Math.min(r.maxDelayMs, r.initialDelayMs * Math.pow(r.factor, this.#attempt));
    const delayMs = Math.round(base * (0.5 + Math.random() * 0.5));
    this.#attempt++;
    this.#state = this.#everReady ? 'reconnecting' : 'connecting';
    this.emit('reconnecting', { attempt: this.#attempt, delayMs, error: this.#lastError });
    this.#reconnectTimer = setTimeout(() => this.#open(), delayMs);
  }

  /** Drops the socket (a stuck connection); the reconnect follows. */
  #drop(reason: string): void {
    const s = this.#socket;
    if (s === undefined) return;
    this.#lastError = reason;
    s.terminate();
  }

  #send(frame: string): void {
    this.#socket?.send(frame);
  }

  #track(req: WsRequest): number {
    const ref = ++this.#ref;
    this.#requests.set(ref, req);
    return ref;
  }

  // --- frames ------------------------------------------------------------------------

  #onFrame(data: string): void {
    let f: Frame;
    try {
      f = JSON.parse(data) as Frame;
    } catch {
      this.emit('error', new SpillwayClientError('NETWORK', 'the server sent a frame that is not JSON'));
      return;
    }
    switch (f.op) {
      case 'messages': {
        const sub = this.#subs.get(key(f.queue as string, f.subscription as string));
        const msgs = f.messages as WireMessage[];
        if (sub !== undefined && sub.ended === undefined) sub[kDeliver](msgs);
        else if (this.#ready) {
          // Unsubscribed meanwhile: give them back at once rather than after the ack deadline.
          this.#send(JSON.stringify({ op: 'nack', queue: f.queue, subscription: f.subscription, ids: msgs.map((m) => m.id) }));
        }
        return;
      }
      case 'published':
      case 'subscribed':
      case 'unsubscribed':
      case 'acked':
      case 'nacked': {
        const ref = f.ref as number;
        const req = this.#requests.get(ref);
        if (req !== undefined) {
          this.#requests.delete(ref);
          req.answer(f);
        }
        return;
      }
      case 'error': {
        const err = fromEnvelope(f);
        const req = typeof f.ref === 'number' ? this.#requests.get(f.ref) : undefined;
        if (req !== undefined) {
          this.#requests.delete(f.ref as number);
          req.fail(err);
        } else {
          this.emit('error', err);
        }
        return;
      }
      case 'expired':
      case 'deleted': {
        const k = key(f.queue as string, f.subscription as string);
        const sub = this.#subs.get(k);
        if (sub !== undefined) {
          this.#subs.delete(k);
          this.#subStates.delete(sub);
          sub[kEnd]({ reason: f.op });
        }
        return;
      }
      default:
        return;
    }
  }

  // --- subscriptions -----------------------------------------------------------------

  #target(queue: string, subscription: string): AckTarget {
    const k = key(queue, subscription);
    let t = this.#targets.get(k);
    if (t === undefined) {
      t = new AckTarget(this, this.#ackHooks, queue, subscription);
      this.#targets.set(k, t);
    }
    return t;
  }

  /** Sends the subscribe frame (first time, or again after a reconnect). */
  #activate(sub: Subscription): void {
    const st = this.#subStates.get(sub);
    if (st === undefined) return;
    const req: WsRequest = {
      deadline: Date.now() + st.timeoutMs,
      answer: () => {
        const first = st.first;
        st.first = undefined;
        first?.resolve();
      },
      fail: (err) => this.#subFailed(sub, st, err),
      lost: () => { /* subscribed again when the connection is back */ },
      expired: () => {
        if (st.first !== undefined) this.#subFailed(sub, st, timeoutError(`subscribe to ${sub.queue}/${sub.name}`, st.timeoutMs));
        else this.#drop('no answer to a subscribe within the timeout');
      },
    };
    const ref = this.#track(req);
    const frame: Record<string, unknown> = { op: 'subscribe', ref, queue: sub.queue, subscription: sub.name };
    if (sub.prefetch !== undefined) frame.prefetch = sub.prefetch;
    this.#send(JSON.stringify(frame));
  }

  #subFailed(sub: Subscription, st: SubState, err: SpillwayClientError): void {
    const k = key(sub.queue, sub.name);
    if (this.#subs.get(k) === sub) this.#subs.delete(k);
    this.#subStates.delete(sub);
    if (st.first !== undefined) {
      const first = st.first;
      st.first = undefined;
      sub[kEnd]({ reason: 'error', error: err });
      first.reject(err);
      // It may still come through late: make sure the server forgets it.
      if (this.#ready) this.#send(JSON.stringify({ op: 'unsubscribe', queue: sub.queue, subscription: sub.name }));
    } else {
      sub[kEnd]({ reason: 'error', error: err });
      this.emit('error', err);
    }
  }

  readonly #subHost: SubscriptionHost = {
    unsubscribe: async (sub, timeoutMs) => {
      const k = key(sub.queue, sub.name);
      if (this.#subs.get(k) === sub) this.#subs.delete(k);
      const st = this.#subStates.get(sub);
      this.#subStates.delete(sub);
      if (st?.first !== undefined) {
        st.first.reject(closedError('the subscription was closed'));
        return;
      }
      if (!this.#ready) return;
      // Acks taken before the unsubscribe go first, or the server would give those messages out again.
      this.#flushAcks();
      await this.#wsCall((ref) => JSON.stringify({ op: 'unsubscribe', ref, queue: sub.queue, subscription: sub.name }), timeoutMs, false);
    },
    reportError: (err) => this.emit('error', err),
  };

  // --- acks --------------------------------------------------------------------------

  readonly #pendingRestAcks: Promise<unknown>[] = [];

  readonly #ackHooks: AckHooks = {
    queueAcks: (t) => {
      this.#ackQueue.push(t);
      if (!this.#ackScheduled) {
        this.#ackScheduled = true;
        nextTurn(this.#onAckTurn);
      }
    },
    nack: (t, id, delayMs) => {
      const frame = { op: 'nack', queue: t.queue, subscription: t.subscription, ids: [id], delayMs };
      if (this.#ready) this.#send(JSON.stringify(frame));
      else if (this.#state === 'idle' || this.#state === 'closed') {
        this.#restFireAndForget(`/v1/queues/${seg(t.queue)}/subscriptions/${seg(t.subscription)}/nack`, { ids: [id], delayMs });
      }
      // Else the connection is down: the server gives back that socket's messages by itself.
    },
  };

  readonly #onAckTurn = (): void => {
    this.#ackScheduled = false;
    this.#flushAcks();
  };

  /** One ack frame per subscription with everything acked since the last flush. */
  #flushAcks(): void {
    if (this.#ackQueue.length === 0) return;
    if (!this.#ready && this.#state !== 'idle' && this.#state !== 'closed') return; // sent once connected again
    const queue = this.#ackQueue;
    this.#ackQueue = [];
    for (const t of queue) {
      t.queued = false;
      const ids = t.ids;
      t.ids = [];
      if (ids.length === 0) continue;
      if (this.#ready) this.#send(t.prefix + JSON.stringify(ids) + '}');
      else this.#restFireAndForget(`/v1/queues/${seg(t.queue)}/subscriptions/${seg(t.subscription)}/ack`, { ids });
    }
  }

  #restFireAndForget(path: string, body: unknown): void {
    const p = this.#rest.call('POST', path, body, this.#timeoutMs).catch((err: unknown) => this.emit('error', err));
    this.#pendingRestAcks.push(p);
    void p.finally(() => {
      const i = this.#pendingRestAcks.indexOf(p);
      if (i >= 0) this.#pendingRestAcks.splice(i, 1);
    });
  }

  // --- one-shot WS calls -------------------------------------------------------------

  /** Sends a frame with a ref and resolves with its answer; re-sent after a reconnect (`resend`) until the deadline. */
  #wsCall(frame: (ref: number) => string, timeoutMs: number | undefined, resend: boolean): Promise<Frame> {
    if (this.#state === 'closed') return Promise.reject(closedError());
    const ms = timeoutMs ?? this.#timeoutMs;
    return new Promise((resolve, reject) => {
      const req: OneShot = {
        frame,
        deadline: Date.now() + ms,
        answer: resolve,
        fail: reject,
        lost: () => {
          if (resend) this.#deferred.push(req);
          else resolve({});
        },
        expired: () => reject(timeoutError('websocket call', ms)),
      };
      if (this.#ready) this.#sendRequest(req);
      else {
        this.#deferred.push(req);
        this.#start();
      }
    });
  }

  #sendRequest(req: OneShot): void {
    const ref = this.#track(req);
    this.#send(req.frame(ref));
  }

  // --- deadlines ---------------------------------------------------------------------

  /** The one timer of the client: every deadline (requests, publishes, subscribes) is checked here. */
  readonly #sweep = (): void => {
    const now = Date.now();
    this.#clock = now + this.#sweepMs;
    let expired: WsRequest[] | undefined;
    for (const [ref, r] of this.#requests) {
      if (r.deadline <= now) {
        this.#requests.delete(ref);
        (expired ??= []).push(r);
      }
    }
    if (this.#deferred.length > 0) {
      const keep: OneShot[] = [];
      for (const d of this.#deferred) {
        if (d.deadline <= now) (expired ??= []).push(d);
        else keep.push(d);
      }
      this.#deferred = keep;
    }
    for (const [sub, st] of this.#subStates) {
      if (st.first !== undefined && !this.#ready && st.first.deadline <= now) {
        this.#subFailed(sub, st, new SpillwayClientError('TIMEOUT', `subscribe to ${sub.queue}/${sub.name}: not connected within ${st.timeoutMs} ms${this.#lastError ? ` (${this.#lastError})` : ''}`));
      }
    }
    if (expired !== undefined) for (const r of expired) r.expired();
    for (const p of this.#publishers) p.sweep(now);
  };

  // --- the host interface of the publishers ------------------------------------------

  readonly #publishHost: PublishHost = ((client: SpillwayClient) => ({
    get ready() { return client.#ready; },
    get epoch() { return client.#epoch; },
    get timeoutMs() { return client.#timeoutMs; },
    // Before the sweeper runs (nothing started yet) the cached clock may be old: read the real one.
    get clock() { return client.#sweeper !== undefined ? client.#clock : Date.now() + client.#sweepMs; },
    get batch() { return client.#batch; },
    get sequence() { return client.#sequence; },
    start: () => client.#start(),
    send: (frame: string) => client.#send(frame),
    track: (req: WsRequest) => client.#track(req),
    dropConnection: (reason: string) => client.#drop(reason),
    rest: <T>(method: string, path: string, body: unknown, timeoutMs?: number) => client.#rest.call<T>(method, path, body, timeoutMs ?? client.#timeoutMs),
    restricted: (e: RestrictedEvent) => client.emit('restricted', e),
    resumed: (e: ResumedEvent) => client.emit('resumed', e),
    reportError: (err: unknown) => client.emit('error', err),
  }))(this);
}

/** Creates a client and connects it; a client that cannot connect within the timeout is closed. */
export async function connect(opts: ClientOptions & CallOptions): Promise<SpillwayClient> {
  const c = new SpillwayClient(opts);
  try {
    await c.connect({ timeoutMs: opts.timeoutMs });
  } catch (err) {
    await c.close({ timeoutMs: 0 });
    throw err;
  }
  return c;
}

export { isSpillwayClientError };
