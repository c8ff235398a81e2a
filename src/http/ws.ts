import { isUtf8 } from 'node:buffer';
import type { Duplex } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import type { WebSocket, RawData } from 'ws';
import { checkPublisherId, prepareBatch, type Broker } from '../broker';
import { SpillwayError, invalid } from '../errors';
import type { Consumer, DeliveryBatch, EndReason, Subscription } from '../subscribers';
import { publisherFor, type Principal } from './auth';
import { toSpillwayError } from './errors';

export interface WebSocketOptions {
  /** Pushes stop while a socket has more than this many bytes unsent (default 1 MiB). */
  highWaterMark?: number;
  /** A socket with more than this unsent for `slowGraceMs` is cut off with 1008 (default 16 MiB). */
  hardLimit?: number;
  slowGraceMs?: number;
  /** Ping period; a peer that has not answered the previous ping by then is terminated (default 30 s). */
  pingIntervalMs?: number;
  defaultPrefetch?: number;
  maxPrefetch?: number;
}

const OPEN = 1;
const TEXT = { binary: false } as const;
const MESSAGES_SUFFIX = Buffer.from(']}');
const CLOSE_INVALID_JSON = 1007;
const CLOSE_POLICY = 1008;
const CLOSE_GOING_AWAY = 1001;
/** How long a closing socket may take to finish the close handshake before it is destroyed. */
const CLOSE_GRACE_MS = 2000;

/** One subscription pushed to one socket. The subscription owns `unacked`. */
class WsConsumer implements Consumer {
  prefetch: number;
  unacked = 0;
  readonly key: string;
  readonly queue: string;
  readonly subscription: string;
  readonly sub: Subscription;
  /** `{"op":"messages","queue":…,"subscription":…,"messages":[`, made once. */
  readonly #prefix: Buffer;
  readonly #conn: WsConnection;
  detach: () => void = () => {};

  constructor(conn: WsConnection, key: string, queue: string, subscription: string, sub: Subscription, prefetch: number) {
    this.#conn = conn;
    this.key = key;
    this.queue = queue;
    this.subscription = subscription;
    this.sub = sub;
    this.prefetch = prefetch;
    this.#prefix = Buffer.from(`{"op":"messages","queue":${JSON.stringify(queue)},"subscription":${JSON.stringify(subscription)},"messages":[`);
  }

  ready(): boolean { return this.#conn.ready(); }

  /** One frame per batch, encoded from the stored bodies in this turn. */
  deliver(batch: DeliveryBatch): void { this.#conn.sendFrame(batch.encode(this.#prefix, MESSAGES_SUFFIX)); }

  ended(reason: EndReason): void { this.#conn.consumerEnded(this, reason); }
}

/** The WebSocket connections of one server: limits, pings, and closing them all. */
export class WsHub {
  readonly connections = new Set<WsConnection>();
  readonly broker: Broker;
  readonly highWaterMark: number;
  readonly hardLimit: number;
  readonly slowGraceMs: number;
  readonly pingIntervalMs: number;
  readonly defaultPrefetch: number;
  readonly maxPrefetch: number;
  #pinger: NodeJS.Timeout | undefined;
  #closing = false;

  constructor(broker: Broker, opts: WebSocketOptions = {}) {
    this.broker = broker;
    this.highWaterMark = opts.highWaterMark ?? 1024 * 1024;
    this.hardLimit = opts.hardLimit ?? 16 * 1024 * 1024;
    this.slowGraceMs = opts.slowGraceMs ?? 5000;
    this.pingIntervalMs = opts.pingIntervalMs ?? 30_000;
    this.defaultPrefetch = opts.defaultPrefetch ?? 100;
    this.maxPrefetch = opts.maxPrefetch ?? 10_000;
  }

  get closing(): boolean { return this.#closing; }

  add(c: WsConnection): void {
    this.connections.add(c);
    if (this.#pinger === undefined) {
      this.#pinger = setInterval(this.#ping, this.pingIntervalMs);
      this.#pinger.unref();
    }
  }

  remove(c: WsConnection): void {
    this.connections.delete(c);
    if (this.connections.size === 0 && this.#pinger !== undefined) {
      clearInterval(this.#pinger);
      this.#pinger = undefined;
    }
  }

  /** Closes every socket with 1001; the ones that do not finish the handshake in time are destroyed. */
  closeAll(): void {
    this.#closing = true;
    for (const c of this.connections) c.close(CLOSE_GOING_AWAY, 'server shutting down');
  }

  readonly #ping = (): void => {
    for (const c of this.connections) c.ping();
  };
}

/** One socket: its subscriptions, frame handling, and backpressure. Listeners are attached in the constructor. */
export class WsConnection {
  readonly #ws: WebSocket;
  readonly #socket: Duplex | undefined;
  readonly #hub: WsHub;
  readonly #principal: Principal | null;
  readonly #consumers = new Map<string, WsConsumer>();
  #alive = true;
  /** Some consumer was refused for a full send buffer: wake them all when it drains. */
  #blocked = false;
  /** Reading stopped: the peer sends requests faster than it reads the answers. */
  #paused = false;
  #corked = false;
  #recheck: NodeJS.Timeout | undefined;
  #slowTimer: NodeJS.Timeout | undefined;
  #killTimer: NodeJS.Timeout | undefined;

  constructor(ws: WebSocket, socket: Duplex | undefined, hub: WsHub, principal: Principal | null) {
    this.#ws = ws;
    this.#socket = socket;
    this.#hub = hub;
    this.#principal = principal;
    ws.on('message', this.#onMessage);
    ws.on('close', this.#onClose);
    ws.on('pong', this.#onPong);
    ws.on('error', () => { /* 'close' follows; the socket is cleaned up there */ });
    socket?.on('drain', this.#onDrain);
    hub.add(this);
    if (hub.closing) this.close(CLOSE_GOING_AWAY, 'server shutting down');
  }

  /** Whether pushes may go out now: not while the send buffer is above the high mark. */
  ready(): boolean {
    const ws = this.#ws;
    if (ws.readyState !== OPEN) return false;
    if (ws.bufferedAmount < this.#hub.highWaterMark) return true;
    if (!this.#blocked) {
      this.#blocked = true;
      // 'drain' only comes after a write the socket refused; below its own mark, poll instead.
      if (this.#socket?.writableNeedDrain !== true) this.#scheduleRecheck();
    }
    return false;
  }

  sendFrame(frame: Buffer | string): void {
    const ws = this.#ws;
    if (ws.readyState !== OPEN) return;
    // Every frame sent while one read is handled (replies to a burst of publishes, a
    // delivery batch) leaves in one write: cork now, uncork once this turn's work is done.
    const socket = this.#socket;
    if (!this.#corked && socket !== undefined) {
      this.#corked = true;
      socket.cork();
      process.nextTick(this.#uncork);
    }
    ws.send(frame, TEXT);
    if (ws.bufferedAmount > this.#hub.hardLimit) {
      // Answers (not only pushes) pile up when the peer does not read: stop reading its
      // requests until the socket drains, so the grace period below cannot fill memory.
      if (!this.#paused) {
        this.#paused = true;
        ws.pause();
      }
      if (this.#slowTimer === undefined) {
        this.#slowTimer = setTimeout(this.#checkSlow, this.#hub.slowGraceMs);
        this.#slowTimer.unref();
      }
    }
  }

  readonly #uncork = (): void => {
    this.#corked = false;
    this.#socket?.uncork();
  };

  consumerEnded(c: WsConsumer, reason: EndReason): void {
    if (this.#consumers.get(c.key) === c) this.#consumers.delete(c.key);
    this.sendFrame(JSON.stringify({ op: reason, queue: c.queue, subscription: c.subscription }));
  }

  ping(): void {
    const ws = this.#ws;
    if (!this.#alive) {
      ws.terminate();
      return;
    }
    this.#alive = false;
    if (ws.readyState === OPEN) ws.ping();
  }

  close(code: number, reason: string): void {
    const ws = this.#ws;
    if (ws.readyState === OPEN || ws.readyState === 0) ws.close(code, reason);
    if (this.#killTimer === undefined) {
      this.#killTimer = setTimeout(() => ws.terminate(), CLOSE_GRACE_MS);
      this.#killTimer.unref();
    }
  }

  // --- frames ------------------------------------------------------------------

  readonly #onMessage = (data: RawData, isBinary: boolean): void => {
    const buf = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
    let frame: unknown;
    try {
      // ws checks text frames; a binary frame's bytes would be decoded to U+FFFD and stored silently changed.
      if (isBinary && !isUtf8(buf)) throw new Error('not UTF-8');
      frame = JSON.parse(buf.toString('utf8'));
    } catch {
      this.close(CLOSE_INVALID_JSON, 'frame is not valid JSON');
      return;
    }
    if (typeof frame !== 'object' || frame === null || Array.isArray(frame)) {
      this.#sendError(undefined, invalid('a frame must be a JSON object with an "op"', { field: 'op' }));
      return;
    }
    const f = frame as Record<string, unknown>;
    try {
      switch (f.op) {
        case 'publish': this.#publish(f); break;
        case 'ack': this.#ack(f); break;
        case 'nack': this.#nack(f); break;
        case 'subscribe': this.#subscribe(f); break;
        case 'unsubscribe': this.#unsubscribe(f); break;
        default: throw invalid(`unknown op ${JSON.stringify(f.op)}: use subscribe, unsubscribe, ack, nack or publish`, { field: 'op' });
      }
    } catch (err) {
      this.#sendError(f.ref, toSpillwayError(err));
    }
  };

  #publish(f: Record<string, unknown>): void {
    const broker = this.#hub.broker;
    if (broker.closing) throw new SpillwayError('SHUTTING_DOWN', 'the server is shutting down');
    const queue = str(f, 'queue');
    this.#allow(this.#principal?.canPublish(queue), 'publish', queue);
    const q = broker.queue(queue);
    const msgs = prepareBatch(f.messages, q.config.maxMessageBytes);
    const pid = publisherFor(this.#principal, checkPublisherId(f.publisherId));
    const after = chainField(f.afterPublisherSeq);
    const res = broker.publish(queue, pid, msgs, undefined, after);
    // Cost: one string per batch; ids are short and the payloads are not touched.
    let answer = '{"op":"published"' + refPart(f.ref) + ',"ids":' + JSON.stringify(res.ids) + ',"seqs":' + JSON.stringify(res.seqs) +
      ',"duplicates":' + res.duplicates;
    if (after !== undefined) {
      // A pipelined publisher learns here what it may forget, without polling.
      const p = res.publisher;
      answer += ',"epoch":"' + p.epoch + '","lastPublisherSeq":' + (p.lastPublisherSeq ?? 0) + ',"safePublisherSeq":' + (p.safePublisherSeq ?? 0);
    }
    this.sendFrame(answer + '}');
  }

  #ack(f: Record<string, unknown>): void {
    const [queue, subscription] = this.#target(f);
    const ids = idList(f);
    const res = this.#hub.broker.ack(queue, subscription, ids);
    if (f.ref !== undefined) {
      this.sendFrame('{"op":"acked"' + refPart(f.ref) + ',"queue":' + JSON.stringify(queue) + ',"subscription":' + JSON.stringify(subscription) +
        ',"acked":' + res.acked + ',"unknown":' + JSON.stringify(res.unknown) + '}');
    }
  }

  #nack(f: Record<string, unknown>): void {
    const [queue, subscription] = this.#target(f);
    const ids = idList(f);
    const d = f.delayMs;
    if (d !== undefined && (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0 || d > 24 * 3600_000)) {
      throw invalid('delayMs must be an integer from 0 to 86400000', { field: 'delayMs' });
    }
    const res = this.#hub.broker.nack(queue, subscription, ids, (d as number | undefined) ?? 0);
    if (f.ref !== undefined) {
      this.sendFrame('{"op":"nacked"' + refPart(f.ref) + ',"queue":' + JSON.stringify(queue) + ',"subscription":' + JSON.stringify(subscription) +
        ',"nacked":' + res.nacked + ',"unknown":' + JSON.stringify(res.unknown) + '}');
    }
  }

  #subscribe(f: Record<string, unknown>): void {
    const [queue, subscription] = this.#target(f);
    const hub = this.#hub;
    const p = f.prefetch;
    if (p !== undefined && (typeof p !== 'number' || !Number.isSafeInteger(p) || p < 1 || p > hub.maxPrefetch)) {
      throw invalid(`prefetch must be an integer from 1 to ${hub.maxPrefetch}`, { field: 'prefetch' });
    }
    const prefetch = (p as number | undefined) ?? hub.defaultPrefetch;
    const sub = hub.broker.subscription(queue, subscription);
    const key = queue + '/' + subscription;
    const existing = this.#consumers.get(key);
    const reply = JSON.stringify({ op: 'subscribed', ref: f.ref, queue, subscription, prefetch });
    if (existing !== undefined && existing.sub === sub) {
      // Subscribing again changes the prefetch.
      existing.prefetch = prefetch;
      this.sendFrame(reply);
      hub.broker.wake(sub);
      return;
    }
    existing?.detach();
    const c = new WsConsumer(this, key, queue, subscription, sub, prefetch);
    this.#consumers.set(key, c);
    // `subscribed` goes out first: deliveries start on the broker's next turn.
    this.sendFrame(reply);
    c.detach = hub.broker.consume(queue, subscription, c);
  }

  #unsubscribe(f: Record<string, unknown>): void {
    const [queue, subscription] = this.#target(f);
    const key = queue + '/' + subscription;
    const c = this.#consumers.get(key);
    if (c !== undefined) {
      this.#consumers.delete(key);
      c.detach();
    }
    this.sendFrame(JSON.stringify({ op: 'unsubscribed', ref: f.ref, queue, subscription }));
  }

  /** The queue and subscription of a consuming frame, with the subscribe permission. */
  #target(f: Record<string, unknown>): [string, string] {
    const queue = str(f, 'queue');
    const subscription = f.subscription === undefined ? 'default' : str(f, 'subscription');
    this.#allow(this.#principal?.canSubscribe(queue), 'subscribe', queue);
    return [queue, subscription];
  }

  #allow(ok: boolean | undefined, what: string, queue: string): void {
    if (ok === false) throw new SpillwayError('FORBIDDEN', `token ${this.#principal!.name} lacks ${what} on queue ${queue}`);
  }

  #sendError(ref: unknown, err: SpillwayError): void {
    this.sendFrame(JSON.stringify({ op: 'error', ref, code: err.code, message: err.message, ...err.details }));
  }

  // --- socket events -------------------------------------------------------------

  readonly #onPong = (): void => { this.#alive = true; };

  readonly #onDrain = (): void => {
    if (this.#slowTimer !== undefined) {
      clearTimeout(this.#slowTimer);
      this.#slowTimer = undefined;
    }
    if (this.#paused) {
      this.#paused = false;
      this.#ws.resume();
    }
    this.#unblock();
  };

  #scheduleRecheck(): void {
    if (this.#recheck !== undefined) return;
    this.#recheck = setTimeout(() => {
      this.#recheck = undefined;
      if (this.#ws.readyState !== OPEN || !this.#blocked) return;
      if (this.#ws.bufferedAmount < this.#hub.highWaterMark) this.#unblock();
      else if (this.#socket?.writableNeedDrain !== true) this.#scheduleRecheck();
    }, 5);
  }

  #unblock(): void {
    if (!this.#blocked) return;
    if (this.#ws.bufferedAmount >= this.#hub.highWaterMark) {
      if (this.#socket?.writableNeedDrain !== true) this.#scheduleRecheck();
      return;
    }
    this.#blocked = false;
    for (const c of this.#consumers.values()) this.#hub.broker.wake(c.sub);
  }

  readonly #checkSlow = (): void => {
    this.#slowTimer = undefined;
    if (this.#ws.readyState === OPEN && this.#ws.bufferedAmount > this.#hub.hardLimit) {
      this.close(CLOSE_POLICY, 'slow consumer: too much unsent data');
    }
  };

  readonly #onClose = (): void => {
    clearTimeout(this.#slowTimer);
    clearTimeout(this.#recheck);
    clearTimeout(this.#killTimer);
    this.#socket?.off('drain', this.#onDrain);
    // Detaching gives what this socket had unacked to the other consumers at once.
    const consumers = [...this.#consumers.values()];
    this.#consumers.clear();
    for (const c of consumers) c.detach();
    this.#hub.remove(this);
  };
}

function str(f: Record<string, unknown>, field: string): string {
  const v = f[field];
  if (typeof v !== 'string') throw invalid(`${field} must be a string`, { field });
  return v;
}

function idList(f: Record<string, unknown>): unknown[] {
  if (!Array.isArray(f.ids)) throw invalid('ids must be an array of message ids', { field: 'ids' });
  return f.ids;
}

/** `afterPublisherSeq` of a chained publish: absent, or the publisher's last publisherSeq (0 for none). */
function chainField(v: unknown): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw invalid('afterPublisherSeq must be an integer >= 0', { field: 'afterPublisherSeq' });
  return v;
}

function refPart(ref: unknown): string {
  return ref === undefined ? '' : ',"ref":' + JSON.stringify(ref);
}

/**
 * Errors on an open socket (a protocol error from the peer, a reset): ws has already begun
 * the close with the right code (1007, 1009, ...), so let it finish, then make sure it is gone.
 */
export function onSocketError(this: FastifyInstance, err: Error, socket: WebSocket): void {
  this.log.debug({ err }, 'websocket error');
  setTimeout(() => socket.terminate(), CLOSE_GRACE_MS).unref();
}

/** `GET /v1/ws`: the upgrade (auth and Origin were checked by the onRequest hook before it). */
export function registerWebSocketRoute(app: FastifyInstance, hub: WsHub): void {
  app.route({
    method: 'GET',
    url: '/v1/ws',
    config: { perm: 'any' },
    schema: { operationId: 'webSocket', summary: 'WebSocket endpoint (subscribe, ack, nack, unsubscribe, publish)', tags: ['websocket'] },
    handler: () => {
      throw invalid('GET /v1/ws needs a WebSocket upgrade');
    },
    wsHandler: (socket, req) => {
      new WsConnection(socket, req.raw.socket, hub, req.principal);
    },
  });
}
