import type { AddressInfo } from 'node:net';
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify';
import WebSocket from 'ws';
import { Broker, type BrokerOptions } from '../../src/broker';
import { buildServer, type ServerOptions } from '../../src/http';

/** A broker and its server, closed by `close()` (call it from afterEach). */
export interface Harness {
  broker: Broker;
  app: FastifyInstance;
  inject(opts: InjectOptions): Promise<LightMyRequestResponse>;
  /** Listens on 127.0.0.1:0; returns `http://127.0.0.1:PORT`. */
  listen(): Promise<string>;
  close(): Promise<void>;
}

export function harness(opts: Partial<ServerOptions> & { brokerOptions?: BrokerOptions } = {}): Harness {
  const broker = opts.broker ?? new Broker({ memoryBytes: 256 * 1024 * 1024, ...opts.brokerOptions });
  const app = buildServer({ defaultMetrics: false, ...opts, broker });
  return {
    broker,
    app,
    inject: (o) => app.inject(o),
    async listen() {
      await app.listen({ port: 0, host: '127.0.0.1' });
      return `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    },
    async close() {
      await app.close();
      await broker.close();
    },
  };
}

/** Resolves once `count()` has been called `n` times. */
export class Latch {
  #left: number;
  #resolve!: () => void;
  readonly done: Promise<void>;

  constructor(n: number) {
    this.#left = n;
    this.done = new Promise((r) => { this.#resolve = r; });
    if (n <= 0) this.#resolve();
  }

  count(): void {
    if (--this.#left === 0) this.#resolve();
  }
}

/** Polls a condition each turn of the loop (for broker state the test cannot subscribe to). */
export async function until(cond: () => boolean, what = 'condition', timeoutMs = 10_000): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** Lets the broker run `turns` dispatch turns (setImmediate), to show that something does not happen. */
export async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
}

export type Frame = Record<string, any>;

/** A WebSocket client that queues the frames it gets and lets a test wait for one. */
export class Client {
  readonly ws: WebSocket;
  /** Frames received and not yet taken by `next()`. */
  readonly frames: Frame[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  readonly #waiters: { pred: (f: Frame) => boolean; resolve: (f: Frame) => void }[] = [];

  private constructor(ws: WebSocket) {
    this.ws = ws;
    this.closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    ws.on('message', (data) => {
      const f = JSON.parse(data.toString()) as Frame;
      const i = this.#waiters.findIndex((w) => w.pred(f));
      if (i >= 0) this.#waiters.splice(i, 1)[0]!.resolve(f);
      else this.frames.push(f);
    });
  }

  static open(url: string, opts: WebSocket.ClientOptions = {}): Promise<Client> {
    const ws = new WebSocket(url.replace(/^http/, 'ws'), { perMessageDeflate: false, ...opts });
    const c = new Client(ws);
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(c));
      ws.once('error', reject);
    });
  }

  /** Opening fails: resolves with the HTTP status of the refusal. */
  static refused(url: string, opts: WebSocket.ClientOptions = {}): Promise<number> {
    const ws = new WebSocket(url.replace(/^http/, 'ws'), opts);
    return new Promise((resolve, reject) => {
      ws.once('open', () => { ws.terminate(); reject(new Error('upgrade was accepted')); });
      ws.once('unexpected-response', (_req, res) => { resolve(res.statusCode ?? 0); ws.terminate(); });
      ws.once('error', () => { /* after unexpected-response */ });
    });
  }

  send(frame: unknown): void {
    this.ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  /** The next frame (not yet taken) that matches. */
  next(pred: (f: Frame) => boolean = () => true): Promise<Frame> {
    const i = this.frames.findIndex(pred);
    if (i >= 0) return Promise.resolve(this.frames.splice(i, 1)[0]!);
    return new Promise((resolve) => this.#waiters.push({ pred, resolve }));
  }

  op(op: string, extra: (f: Frame) => boolean = () => true): Promise<Frame> {
    return this.next((f) => f.op === op && extra(f));
  }

  /** Messages frames until `n` messages have come; returns the messages. */
  async messages(n: number): Promise<Frame[]> {
    const out: Frame[] = [];
    while (out.length < n) {
      const f = await this.op('messages');
      out.push(...(f.messages as Frame[]));
    }
    return out;
  }

  close(): void { this.ws.close(); }
}

export const json = (res: LightMyRequestResponse): any => JSON.parse(res.body);
