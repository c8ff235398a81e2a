import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { prepareBatch } from '../../src/broker';
import { SpillwayClient, connect, isSpillwayClientError, type Message, type SpillwayClientError } from '../../src/client';
import { Clients, FrameLog, nextEvent, serve, sleep, until, type Served } from './helpers';

/** The rejection of `p`, which must reject. */
async function failure(p: Promise<unknown>): Promise<SpillwayClientError> {
  try {
    await p;
  } catch (err) {
    if (!isSpillwayClientError(err)) throw err;
    return err;
  }
  throw new Error('expected a rejection');
}

/** Takes `n` messages from an iterator. */
async function take(it: AsyncIterator<Message>, n: number): Promise<Message[]> {
  const out: Message[] = [];
  while (out.length < n) {
    const r = await it.next();
    if (r.done === true) break;
    out.push(r.value);
  }
  return out;
}

describe('client', () => {
  let s: Served;
  const clients = new Clients();

  beforeEach(async () => {
    s = await serve();
  });

  afterEach(async () => {
    await clients.closeAll();
    await s.close();
  });

  // --- admin ---------------------------------------------------------------------------

  test('admin - queues: create (201/200/409), get, list, purge, delete', async () => {
    const c = clients.make(s.url);
    const made = await c.createQueue('orders', { memoryBytes: 1 << 20 });
    expect(made.created).toBe(true);
    expect(made.queue).toMatchObject({ name: 'orders', subscriptions: ['default'] });
    expect((await c.createQueue('orders', { memoryBytes: 1 << 20 })).created).toBe(false);
    const conflict = await failure(c.createQueue('orders', { memoryBytes: 2 << 20 }));
    expect(conflict).toMatchObject({ code: 'ALREADY_EXISTS', status: 409, name: 'SpillwayClientError' });

    await c.publish('orders', ['a', 'b', 'c']);
    expect(await c.getQueue('orders')).toMatchObject({ name: 'orders', messages: 3, published: 3, publishers: [c.publisherId] });
    expect((await c.listQueues()).map((q) => q.name)).toEqual(['orders']);
    expect(await c.purgeQueue('orders')).toBe(3);
    expect((await c.getQueue('orders')).messages).toBe(0);
    await c.deleteQueue('orders');
    expect(await failure(c.getQueue('orders'))).toMatchObject({ code: 'QUEUE_NOT_FOUND', status: 404 });
    expect(await c.listQueues()).toEqual([]);
  });

  test('admin - subscriptions: create, get, list, delete; health; publisher state', async () => {
    const c = clients.make(s.url);
    await c.createQueue('q', { defaultSubscription: false });
    const r = await c.createSubscription('q', 'audit', { ackDeadlineMs: 5000, filter: { attributes: { kind: 'a' } } });
    expect(r).toMatchObject({ created: true, subscription: { name: 'audit', queue: 'q', ackDeadlineMs: 5000, backlog: 0 } });
    expect((await c.createSubscription('q', 'audit', { ackDeadlineMs: 5000, filter: { attributes: { kind: 'a' } } })).created).toBe(false);
    expect(await failure(c.createSubscription('q', 'audit', { ackDeadlineMs: 6000 }))).toMatchObject({ code: 'ALREADY_EXISTS' });
    await c.createSubscription('q', 'all');
    expect((await c.listSubscriptions('q')).map((x) => x.name).sort()).toEqual(['all', 'audit']);

    await c.publish('q', [{ data: 'x', attributes: { kind: 'a' } }, { data: 'y', attributes: { kind: 'b' } }]);
    expect(await c.getSubscription('q', 'audit')).toMatchObject({ backlog: 1 });
    expect(await c.getSubscription('q', 'all')).toMatchObject({ backlog: 2 });

    const h = await c.health();
    expect(h).toEqual({ status: 'ok', epoch: s.broker.epoch });
    const st = await c.publisherState('q');
    expect(st).toMatchObject({ id: c.publisherId, epoch: s.broker.epoch, lastPublisherSeq: 2, unconsumedMessages: 2, restricted: false });
    expect(await failure(c.publisherState('q', 'nobody'))).toMatchObject({ code: 'NOT_FOUND' });

    await c.deleteSubscription('q', 'audit');
    expect(await failure(c.getSubscription('q', 'audit'))).toMatchObject({ code: 'SUBSCRIPTION_NOT_FOUND', status: 404 });
  });

  // --- publish -------------------------------------------------------------------------

  test('publish - arrays of texts: plain ones go as they are, any other text is escaped; data, order and numbering hold', async () => {
    const c = clients.make(s.url);
    await c.createQueue('q');
    const plain = ['p1', 'p2', ''];
    const mixed = ['m1', 'say "hi"', 'back\\slash', 'tab\t', 'ünïcødé', '\u2028'];
    const ids = [...await c.publish('q', plain), ...await c.publish('q', mixed)];
    expect(new Set(ids).size).toBe(9);
    const got = await c.pull('q', 'default', { max: 20 });
    expect(got.map((m) => [m.id, m.data, m.publisherSeq])).toEqual([...plain, ...mixed].map((d, i) => [ids[i], d, i + 1]));
  });

  test('publish - one message gives an id, an array gives ids; messages are numbered with publisherSeq', async () => {
    const c = clients.make(s.url);
    await c.createQueue('q');
    const id = await c.publish('q', 'hello');
    expect(typeof id).toBe('string');
    const ids = await c.publish('q', ['a', { data: 'b', attributes: { k: 'v' }, key: 'K' }]);
    expect(ids).toHaveLength(2);
    expect(new Set([id, ...ids]).size).toBe(3);
    expect(await c.publish('q', [])).toEqual([]);
    const got = await c.pull('q', 'default', { max: 10 });
    expect(got.map((m) => [m.id, m.data, m.publisherSeq, m.publisherId])).toEqual([
      [id, 'hello', 1, c.publisherId], [ids[0], 'a', 2, c.publisherId], [ids[1], 'b', 3, c.publisherId],
    ]);
    expect(got[2]).toMatchObject({ attributes: { k: 'v' }, key: 'K', deliveryAttempt: 1, queue: 'q', subscription: 'default' });
  });

  test('publish - concurrent publishes go out as one frame; batches are bounded by count', async () => {
    const log = new FrameLog();
    const c = clients.make(s.url, { transport: log.transport });
    await c.createQueue('q');
    await c.connect();
    const ids = await Promise.all(Array.from({ length: 200 }, (_, i) => c.publish('q', `m${i}`)));
    expect(new Set(ids).size).toBe(200);
    const frames = log.ops('publish');
    expect(frames).toHaveLength(1);
    expect(frames[0]!.messages).toHaveLength(200);
    expect(frames[0]!.publisherId).toBe(c.publisherId);
    expect(frames[0]!.messages.map((m: { publisherSeq: number }) => m.publisherSeq)).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));

    const log2 = new FrameLog();
    const c2 = clients.make(s.url, { transport: log2.transport, batch: { maxMessages: 30, maxBytes: 1 << 20 } });
    await Promise.all(Array.from({ length: 100 }, (_, i) => c2.publish('q', `n${i}`)));
    const sizes = log2.ops('publish').map((f) => f.messages.length);
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(100);
    expect(Math.max(...sizes)).toBeLessThanOrEqual(30);
    expect((await c.getQueue('q')).published).toBe(300);
  });

  test('publish - batches are bounded by bytes, and a linger gathers publishes spread over turns', async () => {
    const log = new FrameLog();
    const c = clients.make(s.url, { transport: log.transport, batch: { maxBytes: 2000, lingerMs: 30 } });
    await c.createQueue('q');
    await c.connect();
    const big = 'x'.repeat(500);
    await Promise.all(Array.from({ length: 12 }, () => c.publish('q', big)));
    const frames = log.ops('publish');
    for (const f of frames) expect(JSON.stringify(f.messages).length).toBeLessThan(2000 + 600);
    expect(frames.length).toBeGreaterThanOrEqual(3);

    // Spread over several turns of the loop, within the linger: one frame.
    log.sent.length = 0;
    const ps: Promise<unknown>[] = [];
    for (let i = 0; i < 5; i++) {
      ps.push(c.publish('q', `t${i}`));
      await new Promise((r) => setImmediate(r));
    }
    await Promise.all(ps);
    expect(log.ops('publish')).toHaveLength(1);
  });

  test('publish - bytes travel as base64 and come back as the same bytes', async () => {
    const c = clients.make(s.url);
    await c.createQueue('q');
    const bytes = new Uint8Array([0, 1, 2, 250, 255, 0x80]);
    await c.publish('q', bytes);
    await c.publish('q', { data: new Uint8Array([0xe2, 0x82, 0xac]), attributes: { t: 'euro' } });
    await c.publish('q', { data: 'aGk=', encoding: 'base64' });
    const [a, b, d] = await c.pull('q', 'default', { max: 3 });
    expect(a!.encoding).toBe('base64');
    expect([...a!.bytes()]).toEqual([...bytes]);
    expect(b!.text()).toBe('€');
    expect(d!.text()).toBe('hi');
  });

  test('publish - a client-side invalid message is refused at once; a too large one refuses only its own call', async () => {
    const c = clients.make(s.url);
    await c.createQueue('q', { maxMessageBytes: 100 });
    expect(await failure(c.publish('q', { data: 5 as unknown as string }))).toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect(await failure(c.publish('q', { data: 'x', attributes: { n: 1 as unknown as string } }))).toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect(await failure(c.publish('q', Array.from({ length: 1001 }, () => 'x')))).toMatchObject({ code: 'INVALID_ARGUMENT' });
    await c.connect();
    // Three calls in one batch; the middle one is too large: only it fails.
    const results = await Promise.allSettled([c.publish('q', 'ok1'), c.publish('q', ['fine', 'y'.repeat(200)]), c.publish('q', 'ok2')]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect((results[1] as PromiseRejectedResult).reason).toMatchObject({ code: 'MESSAGE_TOO_LARGE', details: { index: 1 } });
    expect((await c.pull('q', 'default', { max: 10 })).map((m) => m.data)).toEqual(['ok1', 'ok2']);
  });

  test('publish - errors carry the API code: unknown queue', async () => {
    const c = clients.make(s.url);
    const err = await failure(c.publish('nope', 'x'));
    expect(err).toBeInstanceOf(Error);
    expect(err).toMatchObject({ code: 'QUEUE_NOT_FOUND' });
    expect(err.message).toMatch(/nope/);
  });

  test('publish - a chosen publisherId continues after the server\'s lastPublisherSeq', async () => {
    const a = clients.make(s.url, { publisherId: 'billing' });
    await a.createQueue('q');
    await a.publish('q', ['1', '2', '3']);
    await a.close();
    // A new process with the same id: its messages must not be taken for duplicates.
    const b = clients.make(s.url, { publisherId: 'billing' });
    const id = await b.publish('q', '4');
    expect(id).not.toBeNull();
    const got = await b.pull('q', 'default', { max: 10 });
    expect(got.map((m) => [m.data, m.publisherSeq])).toEqual([['1', 1], ['2', 2], ['3', 3], ['4', 4]]);
  });

  // --- subscribe -----------------------------------------------------------------------

  test('subscribe - async iterator with ack; prefetch bounds what is unacked', async () => {
    const c = clients.make(s.url);
    await c.createQueue('q');
    const sub = await c.subscribe('q', 'default', { prefetch: 5 });
    await c.publish('q', Array.from({ length: 20 }, (_, i) => `m${i}`));
    const it = sub[Symbol.asyncIterator]();
    const first = await take(it, 5);
    expect(first.map((m) => m.data)).toEqual(['m0', 'm1', 'm2', 'm3', 'm4']);
    expect(first.every((m) => m.deliveryAttempt === 1)).toBe(true);
    // Nothing acked: the server holds the rest back.
    await sleep(50);
    expect(sub.buffered).toBe(0);
    expect((await c.getSubscription('q', 'default')).inFlight).toBe(5);
    for (const m of first) m.ack();
    const rest: Message[] = [];
    while (rest.length < 15) {
      const r = await it.next();
      rest.push(r.value as Message);
      (r.value as Message).ack();
    }
    expect(rest.map((m) => m.data)).toEqual(Array.from({ length: 15 }, (_, i) => `m${i + 5}`));
    await until(() => s.broker.subscription('q', 'default').stats().acked === 20, 'acks');
    await sub.close();
    expect(await sub.closed).toEqual({ reason: 'closed' });
    expect(await it.next()).toEqual({ value: undefined, done: true });
  });

  test('subscribe - for await, break unsubscribes; acks taken before it still count', async () => {
    const c = clients.make(s.url);
    await c.createQueue('q');
    const sub = await c.subscribe('q');
    await c.publish('q', ['a', 'b', 'c']);
    const seen: string[] = [];
    for await (const m of sub) {
      seen.push(m.data);
      m.ack();
      if (seen.length === 2) break;
    }
    expect(seen).toEqual(['a', 'b']);
    expect(await sub.closed).toEqual({ reason: 'closed' });
    await until(() => s.broker.subscription('q', 'default').stats().acked === 2, 'two acks');
    // 'c' was delivered to the closed consumer and given back: a new subscriber gets it.
    const again = await c.subscribe('q');
    const [m] = await take(again[Symbol.asyncIterator](), 1);
    expect(m!.data).toBe('c');
  });

  test('subscribe - callback API with autoAck; a throwing handler nacks, the message comes back', async () => {
    const c = clients.make(s.url);
    const errors: unknown[] = [];
    await c.createQueue('q');
    const seen: [string, number][] = [];
    await c.subscribe('q', 'default', {
      prefetch: 10,
      autoAck: true,
      onMessage: async (m) => {
        seen.push([m.data, m.deliveryAttempt]);
        if (m.data === 'bad' && m.deliveryAttempt === 1) throw new Error('boom');
      },
      onError: (err) => errors.push(err),
    });
    await c.publish('q', ['good', 'bad']);
    await until(() => seen.length === 3, 'three deliveries');
    expect(seen).toEqual([['good', 1], ['bad', 1], ['bad', 2]]);
    expect(errors).toHaveLength(1);
    await until(() => s.broker.subscription('q', 'default').stats().acked === 2, 'acks');
  });

  test('subscribe - nack with a delay, extend, and confirmed ack/nack by id', async () => {
    const c = clients.make(s.url);
    await c.createQueue('q');
    await c.createSubscription('q', 'slow', { ackDeadlineMs: 300 });
    const sub = await c.subscribe('q', 'slow', { prefetch: 10 });
    const it = sub[Symbol.asyncIterator]();
    await c.publish('q', ['n', 'e', 'k']);
    const [n, e, k] = await take(it, 3);
    const t0 = Date.now();
    n!.nack(150);
    expect(await e!.extend(5000)).toBe(true);
    const [again] = await take(it, 1);
    expect(again!.data).toBe('n');
    expect(again!.deliveryAttempt).toBe(2);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
    expect(await c.ack('q', 'slow', [again!.id, 'bogus'])).toEqual({ acked: 1, unknown: ['bogus'] });
    // 'k' passes its 300 ms deadline and comes back; 'e' was extended and does not.
    const [k2] = await take(it, 1);
    expect(k2).toMatchObject({ data: 'k', deliveryAttempt: 2 });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
    expect(await c.nack('q', 'slow', [k2!.id], 0)).toEqual({ nacked: 1, unknown: [] });
    const [k3] = await take(it, 1);
    expect(k3).toMatchObject({ data: 'k', deliveryAttempt: 3 });
    expect(sub.buffered).toBe(0);
    void k;
    expect(await c.extend('q', 'slow', [k3!.id, e!.id], 1000)).toEqual({ extended: 2, unknown: [] });
  });

  test('subscribe - errors: unknown subscription; twice on one client', async () => {
    const c = clients.make(s.url);
    await c.createQueue('q');
    expect(await failure(c.subscribe('q', 'nope'))).toMatchObject({ code: 'SUBSCRIPTION_NOT_FOUND' });
    expect(await failure(c.subscribe('none', 'default'))).toMatchObject({ code: 'QUEUE_NOT_FOUND' });
    expect(await failure(c.subscribe('q', 'default', { prefetch: 0 }))).toMatchObject({ code: 'INVALID_ARGUMENT' });
    await c.subscribe('q');
    expect(await failure(c.subscribe('q'))).toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  test('subscribe - deleting the subscription ends the iterator with reason "deleted"', async () => {
    const c = clients.make(s.url);
    await c.createQueue('q');
    await c.createSubscription('q', 'temp');
    const sub = await c.subscribe('q', 'temp');
    const next = sub.next();
    await c.deleteSubscription('q', 'temp');
    expect(await next).toEqual({ value: undefined, done: true });
    expect(await sub.closed).toEqual({ reason: 'deleted' });
  });

  // --- pull, transactions --------------------------------------------------------------

  test('pull - REST pull with wait, and ack of pulled messages without a WebSocket', async () => {
    const c = clients.make(s.url);
    await c.createQueue('q');
    const pending = c.pull('q', 'default', { max: 5, waitMs: 2000 });
    await sleep(30);
    s.broker.publish('q', 'p', prepareBatch([{ data: 'late' }], 1 << 20));
    const got = await pending;
    expect(got.map((m) => m.data)).toEqual(['late']);
    expect(c.state).toBe('idle');
    got[0]!.ack();
    await until(() => s.broker.subscription('q', 'default').stats().acked === 1, 'ack over REST');
    expect(c.state).toBe('idle');
  });

  test('transaction - staged messages appear on commit, all at once; rollback discards', async () => {
    const c = clients.make(s.url);
    await c.createQueue('a');
    await c.createQueue('b');
    const tx = await c.transaction({ timeoutMs: 10_000 });
    expect(typeof tx.id).toBe('string');
    expect(await tx.publish('a', ['a1', 'a2'])).toBe(2);
    expect(await tx.publish('b', { data: 'b1', attributes: { x: 'y' } })).toBe(1);
    expect((await c.getQueue('a')).messages).toBe(0);
    expect(await tx.commit()).toBe(3);
    expect((await c.pull('a', 'default', { max: 5 })).map((m) => m.data)).toEqual(['a1', 'a2']);
    expect((await c.pull('b', 'default', { max: 5 })).map((m) => [m.data, m.attributes])).toEqual([['b1', { x: 'y' }]]);
    await expect(tx.commit()).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });

    const tx2 = await c.transaction();
    await tx2.publish('a', 'never');
    await tx2.rollback();
    expect((await c.getQueue('a')).published).toBe(2);
    // An expired transaction rolled back by itself: its commit is TRANSACTION_NOT_FOUND.
    const tx3 = await c.transaction({ timeoutMs: 50 });
    await tx3.publish('a', 'expires');
    await sleep(200);
    expect(await failure(tx3.commit())).toMatchObject({ code: 'TRANSACTION_NOT_FOUND', status: 404 });
  });

  // --- timeouts, close -----------------------------------------------------------------

  describe('against a server that never answers', () => {
    let silent: Server;
    let url: string;
    const sockets: Socket[] = [];
    beforeEach(async () => {
      silent = createServer((sock) => { sockets.push(sock); });
      await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
      url = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`;
    });
    afterEach(async () => {
      for (const sock of sockets.splice(0)) sock.destroy();
      await new Promise((r) => silent.close(r));
    });

    test('timeouts - REST calls, connect, publish and subscribe end with TIMEOUT', async () => {
      const c = clients.make(url, { timeoutMs: 300, connectTimeoutMs: 150 });
      const t0 = Date.now();
      expect(await failure(c.listQueues())).toMatchObject({ code: 'TIMEOUT' });
      expect(Date.now() - t0).toBeLessThan(2000);
      expect(await failure(c.connect({ timeoutMs: 400 }))).toMatchObject({ code: 'TIMEOUT' });
      expect(await failure(c.publish('q', 'x', { timeoutMs: 200 }))).toMatchObject({ code: 'TIMEOUT' });
      expect(await failure(c.subscribe('q', 'default', { timeoutMs: 200 }))).toMatchObject({ code: 'TIMEOUT' });
      expect(c.publishStatus('q')).toMatchObject({ pendingMessages: 0, inFlightMessages: 0 });
      await c.close({ timeoutMs: 100 });
      expect(c.state).toBe('closed');
    });
  });

  test('close - drains: queued publishes are sent and answered, acks go out, later calls get CLOSED', async () => {
    const c = clients.make(s.url);
    await c.createQueue('q');
    const sub = await c.subscribe('q', 'default', { prefetch: 100 });
    await c.publish('q', ['x', 'y']);
    const it = sub[Symbol.asyncIterator]();
    const got = await take(it, 2);
    for (const m of got) m.ack();
    // Queued in this turn, not yet sent: close() must still deliver them.
    const ps = Array.from({ length: 50 }, (_, i) => c.publish('q', `late${i}`));
    await c.close();
    expect((await Promise.all(ps)).every((id) => typeof id === 'string')).toBe(true);
    expect(c.state).toBe('closed');
    expect(s.broker.subscription('q', 'default').stats().acked).toBe(2);
    expect((await new SpillwayClient({ url: s.url }).getQueue('q')).published).toBe(52);
    expect(await failure(c.publish('q', 'after'))).toMatchObject({ code: 'CLOSED' });
    expect(await failure(c.subscribe('q'))).toMatchObject({ code: 'CLOSED' });
    expect(await it.next()).toEqual({ value: undefined, done: true });
    await c.close();
  });

  test('connect - resolves with a connected client; no server: TIMEOUT, and the client is closed', async () => {
    const c = await connect({ url: s.url, timeoutMs: 2000 });
    try {
      expect(c.state).toBe('ready');
    } finally {
      await c.close();
    }
    const gone = s.url;
    await s.close();
    const err = await failure(connect({ url: gone, timeoutMs: 300, reconnect: { initialDelayMs: 20, maxDelayMs: 50 } }));
    expect(err.code).toBe('TIMEOUT');
    expect(err.message).toMatch(/could not connect/);
    s = await serve(); // for afterEach
  });

  test('auth - the token goes on REST and on the upgrade; the publisher id is the token\'s name', async () => {
    await s.close();
    s = await serve({
      server: {
        auth: {
          tokens: [
            { token: 't-ops', name: 'ops', publish: ['*'], subscribe: ['*'], admin: true },
            { token: 't-reader', name: 'reader', publish: [], subscribe: ['*'], admin: false },
          ],
        },
      },
    });
    const ops = clients.make(s.url, { token: 't-ops', publisherId: 'ops' });
    await ops.createQueue('q');
    const sub = await ops.subscribe('q');
    await ops.publish('q', 'secret');
    const [m] = await take(sub[Symbol.asyncIterator](), 1);
    expect(m).toMatchObject({ data: 'secret', publisherId: 'ops', publisherSeq: 1 });
    m!.ack();

    const reader = clients.make(s.url, { token: 't-reader' });
    expect(reader.publisherId).toBeUndefined();
    expect(await failure(reader.createQueue('other'))).toMatchObject({ code: 'FORBIDDEN', status: 403 });
    expect(await failure(reader.publish('q', 'no'))).toMatchObject({ code: 'FORBIDDEN' });
    const anon = clients.make(s.url);
    expect(await failure(anon.listQueues())).toMatchObject({ code: 'UNAUTHENTICATED', status: 401 });
  });

  test('events - connected carries the epoch; state goes idle → ready → closed', async () => {
    const c = clients.make(s.url);
    expect(c.state).toBe('idle');
    const ev = nextEvent<{ epoch: string; reconnected: boolean }>(c, 'connected');
    await c.connect();
    expect(await ev).toEqual({ epoch: s.broker.epoch, reconnected: false });
    expect(c.state).toBe('ready');
    expect(c.epoch).toBe(s.broker.epoch);
    await c.close();
    expect(c.state).toBe('closed');
  });
});
