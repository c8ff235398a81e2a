import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import WebSocket from 'ws';
import { Checker, checksumOf, deliveryOf, makePayload } from './checker';
import { sleep, waitFor } from './config';
import { call, request, type ServerProcess } from './server';

/**
 * The suite's own clients (the TypeScript client of src/client is not used here): paced REST
 * publishers, REST pullers, a repeatable publisher, WebSocket subscribers in this process or
 * in a child process, and a bystander. Every one logs what it publishes or receives into a
 * Checker.
 */

type Url = string | (() => string);
const urlOf = (u: Url): string => (typeof u === 'string' ? u : u());

// --- publishing ----------------------------------------------------------------------------

export interface PublisherOptions {
  url: Url;
  queue: string;
  id: string;
  checker: Checker;
  /** Subscriptions eligible for its messages. */
  subscriptions: readonly string[];
  size?: number;
  batch?: number;
  headers?: Record<string, string>;
}

/** A publisher over REST: batches with publisherSeq, logged once answered 201. */
export class RestPublisher {
  readonly opts: PublisherOptions;
  nextSeq = 1;
  accepted = 0;
  /** 429 answers. */
  restricted = 0;
  /** Other refusals by code (507, 503, ...). */
  readonly refused: Record<string, number> = {};
  readonly errors: string[] = [];
  /** Slowest publish answer (ms). */
  maxLatencyMs = 0;
  #stop = false;

  constructor(opts: PublisherOptions) {
    this.opts = opts;
  }

  /** One batch of `n` messages: true when accepted; on 429 it waits `retryAfterMs` (capped) and returns false. */
  async publishBatch(n = this.opts.batch ?? 20): Promise<boolean> {
    const o = this.opts;
    const size = o.size ?? 256;
    const messages = [];
    for (let i = 0; i < n; i++) messages.push({ data: makePayload(o.id, this.nextSeq + i, size), publisherSeq: this.nextSeq + i });
    const t0 = Date.now();
    let r: { status: number; body: any };
    try {
      r = await call(urlOf(o.url), 'POST', `/v1/queues/${o.queue}/messages`, { publisherId: o.id, messages }, o.headers);
    } catch (err) {
      this.errors.push(String(err));
      await sleep(50);
      return false;
    }
    this.maxLatencyMs = Math.max(this.maxLatencyMs, Date.now() - t0);
    if (r.status === 201) {
      if (r.body.duplicates !== 0) this.errors.push(`unexpected duplicates: ${JSON.stringify(r.body)}`);
      for (let i = 0; i < n; i++) {
        const seq = this.nextSeq + i;
        o.checker.published({ publisher: o.id, publisherSeq: seq, checksum: checksumOf(messages[i]!.data), subscriptions: o.subscriptions });
      }
      this.nextSeq += n;
      this.accepted += n;
      return true;
    }
    const code = String(r.body?.error?.code ?? r.status);
    if (r.status === 429) {
      this.restricted++;
      await sleep(Math.min(Number(r.body.error.retryAfterMs ?? 50), 200));
      return false;
    }
    this.refused[code] = (this.refused[code] ?? 0) + 1;
    if (r.status !== 507 && r.status !== 503) this.errors.push(`${r.status} ${JSON.stringify(r.body)}`);
    await sleep(20);
    return false;
  }

  /**
   * Publishes for `durationMs`: at `ratePerSec` messages a second on a schedule it catches up
   * with (so counts over the window measure what the server let through), or flat out.
   */
  async run(durationMs: number, ratePerSec = 0): Promise<void> {
    this.#stop = false;
    const start = Date.now();
    const base = this.accepted;
    const batch = this.opts.batch ?? 20;
    while (!this.#stop && Date.now() - start < durationMs) {
      if (ratePerSec > 0) {
        const due = Math.floor(((Date.now() - start) / 1000) * ratePerSec) - (this.accepted - base);
        if (due <= 0) {
          await sleep(Math.max(1, Math.ceil((1000 * batch) / ratePerSec / 4)));
          continue;
        }
        await this.publishBatch(Math.min(batch, Math.max(1, due)));
      } else await this.publishBatch(batch);
    }
  }

  /** Publishes exactly `count` more messages (retrying refusals). */
  async publishCount(count: number, deadlineMs = 60_000): Promise<void> {
    const end = this.accepted + count;
    const deadline = Date.now() + deadlineMs;
    while (this.accepted < end) {
      if (Date.now() > deadline) throw new Error(`${this.opts.id}: stuck at ${this.accepted} of ${end}: ${this.errors.slice(-3).join('; ')}`);
      await this.publishBatch(Math.min(this.opts.batch ?? 20, end - this.accepted));
    }
  }

  stop(): void { this.#stop = true; }
}

/**
 * A repeatable publisher over REST, as API.md describes it: numbers its messages with
 * publisherSeq, keeps every message above the server's safePublisherSeq, and when the
 * server's epoch changes (a restart: messages do not survive it) sends them again before
 * anything new. It checks /healthz before each batch, so a batch never reaches a new run
 * before the retained messages do (a new run would take the batch's higher publisherSeqs
 * as the publisher's last and refuse the re-sent lower ones as duplicates).
 */
export class RepeatablePublisher {
  readonly opts: PublisherOptions;
  #nextSeq = 1;
  /** Messages above safePublisherSeq, in order. */
  readonly retained: { seq: number; data: string }[] = [];
  epoch: string | undefined;
  safe = 0;
  epochChanges = 0;
  resent = 0;
  failures = 0;
  restricted = 0;

  constructor(opts: PublisherOptions) {
    this.opts = opts;
  }

  get generated(): number { return this.#nextSeq - 1; }

  /** Publishes `count` new messages, surviving restarts. */
  async publish(count: number, ratePerSec = 0, deadlineMs = 120_000): Promise<void> {
    const start = Date.now();
    const batch = this.opts.batch ?? 20;
    let done = 0;
    while (done < count) {
      if (Date.now() - start > deadlineMs) throw new Error(`repeatable publisher stuck after ${done} of ${count}`);
      if (ratePerSec > 0 && done >= ((Date.now() - start) / 1000) * ratePerSec) {
        await sleep(5);
        continue;
      }
      const n = Math.min(batch, count - done);
      const fresh = [];
      for (let i = 0; i < n; i++) {
        const seq = this.#nextSeq++;
        const data = makePayload(this.opts.id, seq, this.opts.size ?? 256);
        // Logged when made: a repeatable publisher answers for it whatever happens to the server.
        this.opts.checker.published({ publisher: this.opts.id, publisherSeq: seq, checksum: checksumOf(data), subscriptions: this.opts.subscriptions });
        fresh.push({ seq, data });
      }
      this.retained.push(...fresh);
      await this.#send(fresh);
      done += n;
    }
  }

  /** Polls the publisher state until everything is safe (acked by every subscription). */
  async settle(timeoutMs = 30_000): Promise<void> {
    await waitFor(async () => {
      try {
        await this.#checkEpoch();
        const r = await call(urlOf(this.opts.url), 'GET', `/v1/queues/${this.opts.queue}/publishers/${this.opts.id}`);
        if (r.status === 200) this.#advance(r.body);
      } catch { /* server restarting */ }
      return this.retained.length === 0;
    }, 'every message to be safe', timeoutMs, () => `${this.retained.length} retained, safe ${this.safe}`);
  }

  async #send(msgs: { seq: number; data: string }[]): Promise<void> {
    for (;;) {
      try {
        await this.#checkEpoch();
        const r = await call(urlOf(this.opts.url), 'POST', `/v1/queues/${this.opts.queue}/messages`, {
          publisherId: this.opts.id, messages: msgs.map((m) => ({ data: m.data, publisherSeq: m.seq })),
        });
        if (r.status === 201) {
          if (r.body.publisher.epoch !== this.epoch) throw new Error('a restart raced a publish: the checker will tell');
          this.#advance(r.body.publisher);
          return;
        }
        if (r.status === 429) {
          this.restricted++;
          await sleep(Math.min(Number(r.body.error.retryAfterMs ?? 50), 200));
          continue;
        }
        if (r.status !== 503) throw new Error(`publish refused: ${r.status} ${JSON.stringify(r.body)}`);
      } catch (err) {
        if (/refused:|raced/.test(String(err))) throw err;
      }
      // Connection refused or reset, or 503 while shutting down: the server is restarting.
      this.failures++;
      await sleep(50);
    }
  }

  /** Learns the epoch; when it changed, sends every retained message again, in order, first. */
  async #checkEpoch(): Promise<void> {
    const h = await call(urlOf(this.opts.url), 'GET', '/healthz');
    if (h.status !== 200) throw new Error(`healthz ${h.status}`);
    const epoch = h.body.epoch as string;
    if (epoch === this.epoch) return;
    const first = this.epoch === undefined;
    this.epoch = epoch;
    this.safe = 0;
    if (first) return;
    this.epochChanges++;
    // The batch being sent is retained too: sent here first, it is a duplicate when the caller sends it.
    const all = [...this.retained];
    for (let i = 0; i < all.length; i += 100) {
      const part = all.slice(i, i + 100);
      const r = await call(urlOf(this.opts.url), 'POST', `/v1/queues/${this.opts.queue}/messages`, {
        publisherId: this.opts.id, messages: part.map((m) => ({ data: m.data, publisherSeq: m.seq })),
      });
      if (r.status !== 201 || r.body.publisher.epoch !== epoch) throw new Error(`re-send refused: ${r.status}`);
      this.resent += part.length;
      this.#advance(r.body.publisher);
    }
  }

  #advance(state: { safePublisherSeq?: number }): void {
    const safe = state.safePublisherSeq ?? 0;
    if (safe > this.safe) this.safe = safe;
    let k = 0;
    while (k < this.retained.length && this.retained[k]!.seq <= this.safe) k++;
    if (k > 0) this.retained.splice(0, k);
  }
}

// --- consuming -----------------------------------------------------------------------------

export interface PullerOptions {
  url: Url;
  queue: string;
  subscription: string;
  checker: Checker;
  max?: number;
  /** At most this many messages a second (0: as fast as it can). */
  rate?: number;
  label?: string;
  headers?: Record<string, string>;
}

/** A REST consumer: pull, log, ack. `paused` holds it (a stalled subscription). */
export class Puller {
  readonly opts: PullerOptions;
  paused = false;
  received = 0;
  readonly errors: string[] = [];
  #stopped = false;
  #loop: Promise<void> | undefined;

  constructor(opts: PullerOptions) {
    this.opts = opts;
  }

  start(): void {
    this.#stopped = false;
    this.#loop ??= this.#run();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#loop;
    this.#loop = undefined;
  }

  async #run(): Promise<void> {
    const o = this.opts;
    const t0 = Date.now();
    let taken = 0;
    while (!this.#stopped) {
      if (this.paused) {
        await sleep(50);
        continue;
      }
      let max = o.max ?? 500;
      if (o.rate !== undefined && o.rate > 0) {
        const allowed = Math.floor(((Date.now() - t0) / 1000) * o.rate) - taken;
        if (allowed <= 0) {
          await sleep(20);
          continue;
        }
        max = Math.min(max, allowed);
      }
      try {
        const r = await call(urlOf(o.url), 'POST', `/v1/queues/${o.queue}/subscriptions/${o.subscription}/pull`, { max, waitMs: 100 }, o.headers);
        if (r.status !== 200) {
          this.errors.push(`pull ${r.status} ${JSON.stringify(r.body)}`);
          await sleep(50);
          continue;
        }
        const msgs = r.body.messages as { id: string; data: string; encoding: string; deliveryAttempt: number }[];
        if (msgs.length === 0) continue;
        for (const m of msgs) o.checker.delivered(deliveryOf(o.subscription, m, o.label ?? o.subscription));
        this.received += msgs.length;
        taken += msgs.length;
        const a = await call(urlOf(o.url), 'POST', `/v1/queues/${o.queue}/subscriptions/${o.subscription}/ack`, { ids: msgs.map((m) => m.id) }, o.headers);
        if (a.status !== 200) this.errors.push(`ack ${a.status} ${JSON.stringify(a.body)}`);
      } catch (err) {
        this.errors.push(String(err));
        await sleep(50);
      }
    }
  }
}

/** A WebSocket subscriber in this process: logs and acks each frame at once. */
export class WsSubscriber {
  readonly ws: WebSocket;
  received = 0;
  readonly errors: string[] = [];
  readonly closed: Promise<number>;
  readonly opened: Promise<void>;

  constructor(url: string, readonly queue: string, readonly subscription: string, readonly checker: Checker, opts: { prefetch?: number; headers?: Record<string, string>; label?: string } = {}) {
    this.ws = new WebSocket(url.replace(/^http/, 'ws') + '/v1/ws', { perMessageDeflate: false, headers: opts.headers });
    this.closed = new Promise((resolve) => this.ws.on('close', (code) => resolve(code)));
    this.ws.on('error', (err) => this.errors.push(String(err)));
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', () => {
        this.ws.send(JSON.stringify({ op: 'subscribe', queue, subscription, prefetch: opts.prefetch ?? 200 }));
        resolve();
      });
      this.ws.once('error', reject);
    });
    this.ws.on('message', (raw) => {
      const f = JSON.parse(raw.toString()) as { op: string; messages?: { id: string; data: string; encoding: string; deliveryAttempt: number }[] };
      if (f.op === 'error') this.errors.push(JSON.stringify(f));
      if (f.op !== 'messages') return;
      for (const m of f.messages!) checker.delivered(deliveryOf(subscription, m, opts.label ?? 'ws'));
      this.received += f.messages!.length;
      this.ws.send(JSON.stringify({ op: 'ack', queue, subscription, ids: f.messages!.map((m) => m.id) }));
    });
  }

  close(): void { this.ws.close(); }
}

export interface ChildSubscriberOptions {
  url: string;
  queue: string;
  subscription: string;
  prefetch?: number;
  ackDelayMs?: number;
  rate?: number;
  reconnect?: boolean;
  label: string;
}

const FIXTURE = join(__dirname, 'fixtures', 'subscriber.js');

/** fixtures/subscriber.js in a child process; its log goes into the checker as it is read. */
export class ChildSubscriber {
  readonly child: ChildProcessWithoutNullStreams;
  readonly exited: Promise<void>;
  received = 0;
  redelivered = 0;
  subscribed = 0;
  readonly latencies: { at: number; ms: number }[] = [];
  readonly acks = { acked: 0, unknown: 0 };
  readonly errors: string[] = [];
  readonly closes: number[] = [];
  #stderr = '';

  constructor(readonly opts: ChildSubscriberOptions, readonly checker: Checker) {
    this.child = spawn(process.execPath, [FIXTURE, JSON.stringify(opts)], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stderr.on('data', (d: Buffer) => { this.#stderr += d.toString(); });
    const t0 = Date.now();
    const lines = createInterface({ input: this.child.stdout });
    lines.on('line', (line) => {
      const f = JSON.parse(line) as Record<string, any>;
      switch (f.t) {
        case 'm': {
          const id = f.i as string;
          const dash = id.indexOf('-');
          checker.delivered({
            subscription: opts.subscription, publisher: f.p, publisherSeq: f.s, checksum: f.c, attempt: f.a,
            consumer: opts.label, run: dash > 0 ? id.slice(0, dash) : undefined,
          });
          this.received++;
          if (f.a > 1) this.redelivered++;
          this.latencies.push({ at: Date.now() - t0, ms: f.l });
          break;
        }
        case 'subscribed': this.subscribed++; break;
        case 'acked': this.acks.acked += f.acked; this.acks.unknown += f.unknown; break;
        case 'error': this.errors.push(`${f.code}: ${f.message}`); break;
        case 'closed': this.closes.push(f.code); break;
      }
    });
    this.exited = new Promise((resolve) => {
      // 'close' (not 'exit'): every line of stdout has been read.
      this.child.on('close', () => resolve());
    });
  }

  get stderr(): string { return this.#stderr; }

  async waitSubscribed(n = 1, timeoutMs = 10_000): Promise<void> {
    await waitFor(() => this.subscribed >= n, `${this.opts.label} to subscribe`, timeoutMs, () => this.#stderr);
  }

  async waitReceived(n: number, timeoutMs = 20_000): Promise<void> {
    await waitFor(() => this.received >= n, `${this.opts.label} to receive ${n}`, timeoutMs, () => `got ${this.received}; ${this.#stderr}`);
  }

  kill(signal: NodeJS.Signals): void { this.child.kill(signal); }

  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGCONT');
      this.child.kill('SIGKILL');
    }
    await this.exited;
  }
}

/**
 * A healthy publisher and WebSocket subscriber on a queue of their own, running beside an
 * abuse test: whatever the abuse does, they must keep going (and lose nothing).
 */
export class Bystander {
  readonly checker = new Checker();
  readonly publisher: RestPublisher;
  sub!: WsSubscriber;
  #loop: Promise<void> | undefined;
  #stop = false;

  constructor(readonly url: string, readonly queue = 'bystander', readonly headers: Record<string, string> = {}) {
    this.publisher = new RestPublisher({ url, queue, id: 'bystander', checker: this.checker, subscriptions: ['default'], size: 200, batch: 5, headers });
  }

  async start(): Promise<void> {
    const r = await call(this.url, 'PUT', `/v1/queues/${this.queue}`, undefined, this.headers);
    if (r.status !== 201 && r.status !== 200) throw new Error(`bystander queue: ${r.status} ${JSON.stringify(r.body)}`);
    this.sub = new WsSubscriber(this.url, this.queue, 'default', this.checker, { headers: this.headers, label: 'bystander' });
    await this.sub.opened;
    this.#loop = (async () => {
      while (!this.#stop) {
        await this.publisher.publishBatch();
        await sleep(20);
      }
    })();
  }

  mark(): { published: number; received: number } {
    return { published: this.publisher.accepted, received: this.sub.received };
  }

  /** Publishing and delivery both went on after `since`. */
  async expectProgress(since: { published: number; received: number }): Promise<void> {
    await waitFor(() => this.publisher.accepted > since.published + 10 && this.sub.received > since.received + 10,
      'the bystander to keep publishing and receiving', 10_000, () => `${JSON.stringify(this.mark())} errors ${this.publisher.errors.slice(-3).join('; ')}`);
  }

  /** Stops, drains, and checks the bystander's own accounting. */
  async finish(): Promise<ReturnType<Checker['report']>> {
    this.#stop = true;
    await this.#loop;
    await waitFor(() => this.checker.lostNow() === 0, 'the bystander to receive everything', 10_000);
    this.sub.close();
    return this.checker.report();
  }
}

/** GET /healthz answers 200. */
export async function healthy(url: string): Promise<boolean> {
  try {
    return (await request(url, 'GET', '/healthz', undefined, {}, 5000)).status === 200;
  } catch {
    return false;
  }
}

/** Runs `abuse`, then checks the server is alive and the bystander went on meanwhile. */
export async function unaffected(server: ServerProcess, by: Bystander, abuse: () => Promise<void>): Promise<void> {
  const mark = by.mark();
  await abuse();
  expect(server.alive()).toBe(true);
  expect(await healthy(server.url)).toBe(true);
  await by.expectProgress(mark);
}
