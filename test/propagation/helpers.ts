import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { Broker, prepareBatch, type PublishMessage } from '../../src/broker';
import type { Message } from '../../src/queue/message';
import { harness, type Harness } from '../http/helpers';

const MEMORY = 64 * 1024 * 1024;

/**
 * One Spillway server on a loopback port. With `persistent`, it has a data dir and
 * `restart()` brings up a new Broker on the same dir and the SAME port, as a real restart would.
 */
export class Node {
  h!: Harness;
  url = '';
  port = 0;
  readonly dataDir: string | undefined;
  readonly #authFile: string | undefined;
  #running = true;

  private constructor(dataDir: string | undefined, authFile: string | undefined) {
    this.dataDir = dataDir;
    this.#authFile = authFile;
  }

  /** With `authFile`, the server takes only the tokens of that file. */
  static async start(opts: { persistent?: boolean; authFile?: string } = {}): Promise<Node> {
    const n = new Node(opts.persistent === true ? mkdtempSync(join(tmpdir(), 'spillway-prop-')) : undefined, opts.authFile);
    nodes.push(n);
    n.#build();
    await n.h.app.listen({ port: 0, host: '127.0.0.1' });
    n.port = (n.h.app.server.address() as AddressInfo).port;
    n.url = `http://127.0.0.1:${n.port}`;
    return n;
  }

  get broker(): Broker { return this.h.broker; }

  #build(): void {
    const broker = new Broker({ memoryBytes: MEMORY, ...(this.dataDir === undefined ? {} : { dataDir: this.dataDir }) });
    this.h = harness({ broker, ...(this.#authFile === undefined ? {} : { authFile: this.#authFile }) });
  }

  /** Stops the server (messages are gone) and starts a new run on the same data dir and port. */
  async restart(): Promise<void> {
    await this.stop();
    await this.startAgain();
  }

  /** Stops the server; `startAgain()` brings up a new run (on the data dir) on the same port. */
  async stop(): Promise<void> {
    if (this.dataDir === undefined) throw new Error('restart needs a persistent node');
    this.#running = false;
    await this.h.close();
  }

  async startAgain(): Promise<void> {
    this.#build();
    this.#running = true;
    await this.h.app.listen({ port: this.port, host: '127.0.0.1' });
  }

  async close(): Promise<void> {
    if (this.#running) await this.h.close();
    this.#running = false;
    if (this.dataDir !== undefined) rmSync(this.dataDir, { recursive: true, force: true });
  }
}

const nodes: Node[] = [];

const drainers: Drainer[] = [];

/** Stops every drainer and closes every node started since the last call (register with afterEach first thing). */
export async function closeNodes(): Promise<void> {
  for (const d of drainers.splice(0)) await d.stop();
  for (const n of nodes.splice(0)) await n.close();
}

/** Publishes in-process on a node's queue (all or nothing, as over REST). */
export function publish(node: Node, queue: string, publisherId: string, msgs: PublishMessage[]): void {
  node.broker.publish(queue, publisherId, prepareBatch(msgs, 1024 * 1024));
}

/** Creates a propagation over REST and returns its answer. */
export async function propagate(from: Node, queue: string, name: string, body: Record<string, unknown>): Promise<Record<string, unknown>> {
  const res = await from.h.inject({ method: 'PUT', url: `/v1/queues/${queue}/propagations/${name}`, payload: body });
  if (res.statusCode !== 201) throw new Error(`PUT propagation ${name}: ${res.statusCode} ${res.body}`);
  return res.json();
}

/**
 * A consumer at a destination: pulls and acks in a loop on whatever broker the node runs now
 * (so it goes on across a restart), recording what it consumed. `pause()` stops taking messages.
 */
export class Drainer {
  /** Messages consumed (pulled, then acked), in order, with the run they were consumed in. */
  readonly got: (Message & { run: string })[] = [];
  #paused = false;
  #resume: (() => void) | undefined;
  #stopped = false;
  readonly done: Promise<void>;

  constructor(readonly node: Node, readonly queue: string, readonly sub = 'default', readonly max = 200) {
    this.done = this.#loop();
    drainers.push(this);
  }

  pause(): void { this.#paused = true; }

  resume(): void {
    this.#paused = false;
    const r = this.#resume;
    this.#resume = undefined;
    r?.();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.resume();
    await this.done;
  }

  async #loop(): Promise<void> {
    while (!this.#stopped) {
      if (this.#paused) {
        await new Promise<void>((r) => { this.#resume = r; });
        continue;
      }
      const broker = this.node.broker;
      if (broker.closing) {
        await new Promise((r) => setImmediate(r));
        continue;
      }
      const msgs = await broker.pullMessages(this.queue, this.sub, { max: this.max, waitMs: 20 });
      // Pulled by a run that has just stopped: not consumed (and gone with it).
      if (broker.closing || msgs.length === 0) continue;
      if (this.#paused || this.#stopped) {
        // Paused while the pull waited: handed back, not consumed.
        broker.nack(this.queue, this.sub, msgs.map((m) => m.id));
        continue;
      }
      broker.ack(this.queue, this.sub, msgs.map((m) => m.id));
      for (const m of msgs) this.got.push({ ...m, run: broker.epoch });
    }
  }
}

/** Messages `m{from}` … `m{to-1}` with attribute `n` and key `k{n % 7}`. */
export function numbered(from: number, to: number): PublishMessage[] {
  return Array.from({ length: to - from }, (_, i) => ({ data: `m${from + i}`, attributes: { n: String(from + i) }, key: `k${(from + i) % 7}` }));
}

/** The numbers of `numbered` messages. */
export const numbers = (msgs: readonly { attributes: Record<string, string> }[]): number[] => msgs.map((m) => Number(m.attributes.n));

export const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, i) => from + i);
