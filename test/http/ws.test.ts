import { connect, type Socket } from 'node:net';
import { prepareBatch } from '../../src/broker';
import { Client, harness, turns, until, type Frame, type Harness } from './helpers';

describe('http websocket', () => {
  let h: Harness;
  let url: string;
  const clients: Client[] = [];
  const open = async (path = '/v1/ws', opts = {}) => {
    const c = await Client.open(url + path, opts);
    clients.push(c);
    return c;
  };
  const start = async (opts: Parameters<typeof harness>[0] = {}) => {
    h = harness(opts);
    url = await h.listen();
    await h.inject({ method: 'PUT', url: '/v1/queues/q' });
  };
  const publish = (queue: string, n: number, size = 1, from = 0) => {
    const msgs = Array.from({ length: n }, (_, i) => ({ data: String(from + i).padEnd(size, '.') }));
    for (let i = 0; i < n; i += 1000) h.broker.publish(queue, undefined, prepareBatch(msgs.slice(i, i + 1000), 1 << 20));
  };

  afterEach(async () => {
    for (const c of clients.splice(0)) c.ws.terminate();
    await h.close();
  });

  test('ws - subscribe, then messages frames with whole Message objects', async () => {
    await start();
    const c = await open();
    c.send({ op: 'subscribe', ref: 'r1', queue: 'q', subscription: 'default', prefetch: 10 });
    expect(await c.op('subscribed')).toEqual({ op: 'subscribed', ref: 'r1', queue: 'q', subscription: 'default', prefetch: 10 });
    h.broker.publish('q', 'p', prepareBatch([{ data: 'one', attributes: { a: 'b' } }, { data: 'two' }], 1000));
    const f = await c.op('messages');
    expect(f.queue).toBe('q');
    expect(f.subscription).toBe('default');
    expect(f.messages).toEqual([
      { id: expect.any(String), seq: 1, data: 'one', encoding: 'utf8', attributes: { a: 'b' }, publisherId: 'p', publishedAt: expect.any(String), deliveryAttempt: 1 },
      expect.objectContaining({ seq: 2, data: 'two', deliveryAttempt: 1 }),
    ]);
  });

  test('ws - never more than prefetch unacked; acks let more through', async () => {
    await start();
    publish('q', 50);
    const c = await open();
    c.send({ op: 'subscribe', queue: 'q', subscription: 'default', prefetch: 5 });
    await c.op('subscribed');
    const sub = h.broker.subscription('q', 'default');
    const seen: number[] = [];
    let unacked: Frame[] = [];
    while (seen.length < 50) {
      const got = await c.messages(1);
      unacked.push(...got);
      for (const m of got) seen.push(m.seq);
      expect(unacked.length).toBeLessThanOrEqual(5);
      if (unacked.length === 5) {
        // Full: the server sends nothing more, however many turns pass.
        await turns(20);
        expect(c.frames.filter((f) => f.op === 'messages')).toEqual([]);
        expect(sub.inFlight).toBe(5);
        c.send({ op: 'ack', queue: 'q', subscription: 'default', ids: unacked.slice(0, 2).map((m) => m.id) });
        unacked = unacked.slice(2);
      }
    }
    expect(seen).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
  });

  test('ws - ack with a ref is answered; acked messages are not delivered again', async () => {
    await start({ brokerOptions: { tickMs: 5 } });
    await h.inject({ method: 'PUT', url: '/v1/queues/q/subscriptions/fast', payload: { ackDeadlineMs: 50 } });
    publish('q', 3);
    const c = await open();
    c.send({ op: 'subscribe', queue: 'q', subscription: 'fast' });
    const msgs = await c.messages(3);
    c.send({ op: 'ack', ref: 7, queue: 'q', subscription: 'fast', ids: [...msgs.map((m) => m.id), 'bogus'] });
    expect(await c.op('acked')).toMatchObject({ ref: 7, acked: 3, unknown: ['bogus'] });
    expect(h.broker.subscription('q', 'fast').stats()).toMatchObject({ acked: 3, inFlight: 0, backlog: 0 });
  });

  test('ws - nack redelivers with deliveryAttempt 2', async () => {
    await start();
    publish('q', 1);
    const c = await open();
    c.send({ op: 'subscribe', queue: 'q', subscription: 'default' });
    const [m] = await c.messages(1);
    c.send({ op: 'nack', queue: 'q', subscription: 'default', ids: [m!.id] });
    const [again] = await c.messages(1);
    expect(again).toMatchObject({ id: m!.id, deliveryAttempt: 2 });
  });

  test('ws - when a socket closes its unacked messages go at once to another socket (deliveryAttempt 2)', async () => {
    await start();
    publish('q', 3);
    const a = await open();
    a.send({ op: 'subscribe', queue: 'q', subscription: 'default', prefetch: 10 });
    const first = await a.messages(3);
    const b = await open();
    b.send({ op: 'subscribe', queue: 'q', subscription: 'default', prefetch: 10 });
    await b.op('subscribed');
    await turns(10);
    expect(b.frames.filter((f) => f.op === 'messages')).toEqual([]);
    a.ws.close();
    const again = await b.messages(3);
    expect(again.map((m) => m.id).sort()).toEqual(first.map((m) => m.id).sort());
    expect(again.every((m) => m.deliveryAttempt === 2)).toBe(true);
  });

  test('ws - unsubscribe detaches and gives unacked messages back', async () => {
    await start();
    publish('q', 2);
    const a = await open();
    a.send({ op: 'subscribe', queue: 'q', subscription: 'default' });
    await a.messages(2);
    a.send({ op: 'unsubscribe', ref: 'u', queue: 'q', subscription: 'default' });
    expect(await a.op('unsubscribed')).toMatchObject({ ref: 'u', queue: 'q', subscription: 'default' });
    expect(h.broker.subscription('q', 'default').stats()).toMatchObject({ inFlight: 0, backlog: 2 });
  });

  test('ws - many subscriptions on one socket', async () => {
    await start();
    await h.inject({ method: 'PUT', url: '/v1/queues/q2' });
    await h.inject({ method: 'PUT', url: '/v1/queues/q/subscriptions/other' });
    const c = await open();
    for (const [queue, subscription] of [['q', 'default'], ['q', 'other'], ['q2', 'default']]) {
      c.send({ op: 'subscribe', queue, subscription });
      await c.op('subscribed', (f) => f.queue === queue && f.subscription === subscription);
    }
    publish('q', 1);
    publish('q2', 1);
    const got = await Promise.all([
      c.op('messages', (f) => f.queue === 'q' && f.subscription === 'default'),
      c.op('messages', (f) => f.queue === 'q' && f.subscription === 'other'),
      c.op('messages', (f) => f.queue === 'q2' && f.subscription === 'default'),
    ]);
    expect(got.map((f) => f.messages.length)).toEqual([1, 1, 1]);
  });

  test('ws - publish answers published with ids and seqs; a bad batch stores nothing', async () => {
    await start();
    const c = await open();
    c.send({ op: 'publish', ref: 'p1', queue: 'q', publisherId: 'w', messages: [{ data: 'a', publisherSeq: 1 }, { data: 'b', publisherSeq: 2 }] });
    const res = await c.op('published');
    expect(res).toEqual({ op: 'published', ref: 'p1', ids: [expect.any(String), expect.any(String)], seqs: [1, 2], duplicates: 0 });
    c.send({ op: 'publish', ref: 'p2', queue: 'q', publisherId: 'w', messages: [{ data: 'b', publisherSeq: 2 }] });
    expect(await c.op('published')).toMatchObject({ ref: 'p2', ids: [res.ids[1]], duplicates: 1 });
    c.send({ op: 'publish', ref: 'p3', queue: 'q', messages: [{ data: 'ok' }, { data: 'bad', encoding: 'nope' }] });
    expect(await c.op('error')).toMatchObject({ ref: 'p3', code: 'INVALID_ARGUMENT', index: 1 });
    expect(h.broker.queue('q').published).toBe(2);
  });

  test('ws - failures are error frames with the ref; the socket stays open', async () => {
    await start();
    await h.inject({ method: 'PUT', url: '/v1/queues/slow', payload: { publisherLimitBytes: 10, publisherResumeBytes: 1 } });
    const c = await open();
    c.send({ op: 'publish', ref: 1, queue: 'nope', messages: [{ data: 'x' }] });
    expect(await c.op('error')).toMatchObject({ ref: 1, code: 'QUEUE_NOT_FOUND', message: expect.any(String) });
    c.send({ op: 'subscribe', ref: 2, queue: 'q', subscription: 'nope' });
    expect(await c.op('error')).toMatchObject({ ref: 2, code: 'SUBSCRIPTION_NOT_FOUND' });
    c.send({ op: 'dance', ref: 3 });
    expect(await c.op('error')).toMatchObject({ ref: 3, code: 'INVALID_ARGUMENT' });
    c.send({ op: 'subscribe', ref: 4, queue: 'q', prefetch: 0 });
    expect(await c.op('error')).toMatchObject({ ref: 4, code: 'INVALID_ARGUMENT' });
    c.send('[1,2]');
    const noRef = await c.op('error');
    expect(noRef.code).toBe('INVALID_ARGUMENT');
    expect(noRef).not.toHaveProperty('ref');
    c.send({ op: 'publish', ref: 5, queue: 'slow', messages: [{ data: 'x'.repeat(20) }] });
    await c.op('published');
    c.send({ op: 'publish', ref: 6, queue: 'slow', messages: [{ data: 'y' }] });
    const restricted = await c.op('error');
    expect(restricted).toMatchObject({ ref: 6, code: 'PUBLISHER_RESTRICTED', reason: 'unconsumed' });
    expect(restricted.retryAfterMs).toBeGreaterThan(0);
    c.send({ op: 'publish', ref: 7, queue: 'q', messages: [{ data: 'still open' }] });
    expect(await c.op('published')).toMatchObject({ ref: 7 });
  });

  test('ws - a frame that is not JSON closes with 1007', async () => {
    await start();
    const c = await open();
    c.send('this is not json');
    expect((await c.closed).code).toBe(1007);
  });

  test('ws - a frame over the size limit closes with 1009', async () => {
    await start({ bodyLimit: 1024 });
    const c = await open();
    c.send({ op: 'publish', queue: 'q', messages: [{ data: 'x'.repeat(2000) }] });
    expect((await c.closed).code).toBe(1009);
    expect(h.broker.queue('q').published).toBe(0);
  });

  test('ws - deleting the subscription tells its consumers with "deleted"', async () => {
    await start();
    await h.inject({ method: 'PUT', url: '/v1/queues/q/subscriptions/temp' });
    const c = await open();
    c.send({ op: 'subscribe', queue: 'q', subscription: 'temp' });
    await c.op('subscribed');
    await h.inject({ method: 'DELETE', url: '/v1/queues/q/subscriptions/temp' });
    expect(await c.op('deleted')).toEqual({ op: 'deleted', queue: 'q', subscription: 'temp' });
  });

  test('ws - a subscription that expires by ttlMs or by maxEvents tells its consumers with "expired"', async () => {
    await start();
    await h.inject({ method: 'PUT', url: '/v1/queues/q/subscriptions/brief', payload: { ttlMs: 50 } });
    await h.inject({ method: 'PUT', url: '/v1/queues/q/subscriptions/counted', payload: { maxEvents: 2 } });
    const c = await open();
    c.send({ op: 'subscribe', queue: 'q', subscription: 'brief' });
    c.send({ op: 'subscribe', queue: 'q', subscription: 'counted' });
    await c.op('subscribed', (f) => f.subscription === 'brief');
    await c.op('subscribed', (f) => f.subscription === 'counted');
    expect(await c.op('expired', (f) => f.subscription === 'brief')).toEqual({ op: 'expired', queue: 'q', subscription: 'brief' });
    publish('q', 3);
    const got: Frame[] = [];
    while (got.length < 2) got.push(...(await c.op('messages', (f) => f.subscription === 'counted')).messages);
    c.send({ op: 'ack', queue: 'q', subscription: 'counted', ids: got.slice(0, 2).map((m) => m.id) });
    expect(await c.op('expired', (f) => f.subscription === 'counted')).toEqual({ op: 'expired', queue: 'q', subscription: 'counted' });
    const res = await h.inject({ method: 'GET', url: '/v1/queues/q/subscriptions/counted' });
    expect(res.statusCode).toBe(404);
  });

  test('ws - backpressure: pushes stop while the client does not read, and resume when it does', async () => {
    await start({ webSocket: { highWaterMark: 64 * 1024 } });
    await h.inject({ method: 'PUT', url: '/v1/queues/big', payload: { memoryBytes: 128 << 20, maxMessageBytes: 64 * 1024 } });
    const N = 2000;
    publish('big', N, 32 * 1024);
    const c = await open();
    const sub = h.broker.subscription('big', 'default');
    c.send({ op: 'subscribe', queue: 'big', subscription: 'default', prefetch: 10_000 });
    await c.op('subscribed');
    const raw = (c.ws as unknown as { _socket: Socket })._socket;
    raw.pause();

    // The server fills the socket up to its mark (and the kernel's buffers), then stops:
    // dispatch turns come and go and nothing more is delivered.
    let last = -1;
    let still = 0;
    while (still < 20) {
      h.broker.wake(sub);
      await turns(3);
      await new Promise((r) => setTimeout(r, 1));
      if (sub.delivered === last) still++;
      else { still = 0; last = sub.delivered; }
    }
    expect(sub.delivered).toBeLessThan(N);
    expect(sub.backlog).toBe(N - sub.delivered);
    expect(sub.backlog).toBeGreaterThan(N / 4);

    raw.resume();
    const got = await c.messages(N);
    expect(got.map((m) => m.seq)).toEqual(Array.from({ length: N }, (_, i) => i + 1));
    expect(got.every((m) => m.deliveryAttempt === 1)).toBe(true);
    expect(sub.backlog).toBe(0);
  });

  test('ws - a client whose send buffer stays over the hard limit is cut off with 1008', async () => {
    await start({ webSocket: { highWaterMark: 1024, hardLimit: 256 * 1024, slowGraceMs: 50 } });
    const c = await open();
    (c.ws as unknown as { _socket: Socket })._socket.pause();
    // Publish answers pile up unread until the buffer passes the hard limit.
    const batch = JSON.stringify({ op: 'publish', ref: 'x'.repeat(8000), queue: 'q', messages: [{ data: 'm' }] });
    let closed: { code: number; reason: string } | undefined;
    void c.closed.then((v) => { closed = v; });
    const serverClosed = new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        if (h.app.websocketServer.clients.size === 0 || [...h.app.websocketServer.clients].every((s) => s.readyState >= 2)) {
          clearInterval(timer);
          resolve();
        }
      }, 5);
    });
    for (let i = 0; i < 2000 && closed === undefined; i++) {
      c.ws.send(batch);
      if (i % 50 === 0) await turns(1);
    }
    await serverClosed;
    (c.ws as unknown as { _socket: Socket })._socket.resume();
    const { code, reason } = await c.closed;
    expect(code).toBe(1008);
    expect(reason).toMatch(/slow consumer/);
  });

  test('ws - a peer that does not answer pings is terminated', async () => {
    await start({ webSocket: { pingIntervalMs: 30 } });
    const c = await open('/v1/ws', { autoPong: false });
    expect((await c.closed).code).toBe(1006);
  });

  test('ws - server shutdown closes sockets with 1001', async () => {
    await start();
    const c = await open();
    c.send({ op: 'subscribe', queue: 'q', subscription: 'default' });
    await c.op('subscribed');
    const closing = h.app.close();
    expect((await c.closed).code).toBe(1001);
    await closing;
  });

  test('ws - GET /v1/ws without an upgrade is 400', async () => {
    await start();
    const res = await h.inject({ method: 'GET', url: '/v1/ws' });
    expect(res.statusCode).toBe(400);
    expect(JSON.parse(res.body).error.code).toBe('INVALID_ARGUMENT');
  });

  test('ws - metrics count open sockets', async () => {
    await start();
    await open();
    await until(() => h.app.websocketServer.clients.size === 1);
    const res = await h.inject({ method: 'GET', url: '/metrics' });
    expect(res.body).toMatch(/^spillway_websocket_connections 1$/m);
  });

  test('limits - connections beyond maxConnections are refused', async () => {
    await start({ maxConnections: 1 });
    await open();
    const port = Number(new URL(url).port);
    const extra = connect(port, '127.0.0.1', () => extra.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'));
    let answered = '';
    extra.on('data', (d: Buffer) => { answered += d.toString(); });
    extra.on('error', () => { /* a reset is a refusal too */ });
    await new Promise((resolve) => extra.on('close', resolve));
    expect(answered).toBe('');
  });
});
