import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Broker, type BrokerOptions } from '../../src/broker';
import { buildServer, type ServerOptions } from '../../src/http';
import { SpillwayClient, wsTransport, type ClientOptions, type TransportInfo } from '../../src/client';

/** A real server on 127.0.0.1 (port 0 unless given), with its broker. */
export interface Served {
  broker: Broker;
  app: FastifyInstance;
  url: string;
  port: number;
  /** Drops every WebSocket at once, without a close handshake (as a network failure would). */
  dropSockets(): number;
  close(): Promise<void>;
}

export interface ServeOptions {
  port?: number;
  dataDir?: string;
  brokerOptions?: BrokerOptions;
  server?: Partial<ServerOptions>;
  /** Adds routes before listening (the browser test serves its page this way). */
  routes?: (app: FastifyInstance) => void;
}

export async function serve(opts: ServeOptions = {}): Promise<Served> {
  const broker = new Broker({ memoryBytes: 64 * 1024 * 1024, tickMs: 10, dataDir: opts.dataDir, ...opts.brokerOptions });
  const app = buildServer({ defaultMetrics: false, ...opts.server, broker });
  opts.routes?.(app);
  try {
    await app.listen({ port: opts.port ?? 0, host: '127.0.0.1' });
  } catch (err) {
    await broker.close();
    throw err;
  }
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
  let closed = false;
  return {
    broker,
    app,
    url: `http://127.0.0.1:${port}`,
    port,
    dropSockets() {
      let n = 0;
      for (const ws of app.websocketServer.clients) {
        ws.terminate();
        n++;
      }
      return n;
    },
    async close() {
      if (closed) return;
      closed = true;
      await app.close();
      await broker.close();
    },
  };
}

export function tempDir(): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), 'spillway-client-test-'));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** Frames a client sent and received, by op (through a wrapped `ws` transport). */
export class FrameLog {
  readonly sent: Record<string, unknown>[] = [];
  readonly received: Record<string, unknown>[] = [];
  /** Called after each frame is sent (e.g. to drop the socket at a chosen moment). */
  afterSend: ((frame: Record<string, unknown>, sock: { terminate(): void }) => void) | undefined;

  readonly transport: TransportInfo = {
    headers: true,
    transport: (url, o, h) => {
      const s = wsTransport(url, o, {
        ...h,
        onMessage: (d) => {
          this.received.push(JSON.parse(d) as Record<string, unknown>);
          h.onMessage(d);
        },
      });
      return {
        get bufferedAmount() { return s.bufferedAmount; },
        send: (d) => {
          const f = JSON.parse(d) as Record<string, unknown>;
          this.sent.push(f);
          s.send(d);
          this.afterSend?.(f, s);
        },
        close: (c, r) => s.close(c, r),
        terminate: () => s.terminate(),
      };
    },
  };

  ops(op: string, from: 'sent' | 'received' = 'sent'): Record<string, any>[] {
    return this[from].filter((f) => f.op === op);
  }
}

/** Clients made by a test, closed after it. */
export class Clients {
  readonly #all: SpillwayClient[] = [];

  make(url: string, opts: Partial<ClientOptions> = {}): SpillwayClient {
    const c = new SpillwayClient({ url, timeoutMs: 5000, connectTimeoutMs: 2000, reconnect: { initialDelayMs: 20, maxDelayMs: 200 }, ...opts });
    this.#all.push(c);
    return c;
  }

  async closeAll(): Promise<void> {
    await Promise.allSettled(this.#all.splice(0).map((c) => c.close({ timeoutMs: 500 })));
  }
}

/** Resolves once `cond()` holds, polling each few ms (for state the test cannot await). */
export async function until(cond: () => boolean, what = 'condition', timeoutMs = 10_000): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** The next `event` of an emitter-like object. */
export function nextEvent<T>(c: { once(ev: any, fn: (p: T) => void): unknown }, event: string): Promise<T> {
  return new Promise((resolve) => c.once(event, resolve));
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
