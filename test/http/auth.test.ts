import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Auth, globToRegExp } from '../../src/http';
import { publisherFor } from '../../src/http/auth';
import { Client, harness, json, type Harness } from './helpers';

const TOKENS = {
  tokens: [
    { token: 'admin-token', name: 'root', admin: true, publish: ['*'], subscribe: ['*'] },
    { token: 'pub-token', name: 'orders-writer', publish: ['orders.*'] },
    { token: 'sub-token', name: 'orders-reader', subscribe: ['orders.*'] },
  ],
};

const bearer = (t: string) => ({ authorization: `Bearer ${t}` });

describe('http auth', () => {
  let dir: string;
  let h: Harness;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'spillway-auth-'));
    writeFileSync(join(dir, 'auth.json'), JSON.stringify(TOKENS));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  beforeEach(async () => {
    h = harness({ authFile: join(dir, 'auth.json'), allowedOrigins: ['https://app.example'] });
    for (const q of ['orders.eu', 'other']) {
      const res = await h.inject({ method: 'PUT', url: `/v1/queues/${q}`, headers: bearer('admin-token') });
      expect(res.statusCode).toBe(201);
    }
  });
  afterEach(() => h.close());

  test('auth - no token or an unknown one is 401 UNAUTHENTICATED; /healthz needs none', async () => {
    for (const headers of [{}, bearer('wrong'), { authorization: 'Basic abc' }, { authorization: 'Bearer' }]) {
      const res = await h.inject({ method: 'GET', url: '/v1/queues', headers });
      expect([res.statusCode, json(res).error.code]).toEqual([401, 'UNAUTHENTICATED']);
    }
    for (const url of ['/metrics', '/openapi.json', '/v1/queues/orders.eu']) {
      expect((await h.inject({ method: 'GET', url })).statusCode).toBe(401);
    }
    const publish = await h.inject({ method: 'POST', url: '/v1/queues/orders.eu/messages', payload: { messages: [{ data: 'x' }] } });
    expect(publish.statusCode).toBe(401);
    expect(h.broker.queue('orders.eu').published).toBe(0);
    expect((await h.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
  });

  test('auth - admin covers creating and deleting queues and subscriptions, and purge', async () => {
    for (const [method, url] of [
      ['PUT', '/v1/queues/new'], ['DELETE', '/v1/queues/orders.eu'], ['POST', '/v1/queues/orders.eu/purge'],
      ['PUT', '/v1/queues/orders.eu/subscriptions/s'], ['DELETE', '/v1/queues/orders.eu/subscriptions/default'],
    ] as const) {
      for (const t of ['pub-token', 'sub-token']) {
        const res = await h.inject({ method, url, headers: bearer(t) });
        expect([method, url, t, res.statusCode, json(res).error.code]).toEqual([method, url, t, 403, 'FORBIDDEN']);
      }
    }
    expect((await h.inject({ method: 'PUT', url: '/v1/queues/orders.eu/subscriptions/s', headers: bearer('admin-token') })).statusCode).toBe(201);
    expect((await h.inject({ method: 'DELETE', url: '/v1/queues/orders.eu/subscriptions/s', headers: bearer('admin-token') })).statusCode).toBe(204);
  });

  test('auth - publish globs: the publisher id is the token name, another publisherId is 403', async () => {
    let res = await h.inject({ method: 'POST', url: '/v1/queues/orders.eu/messages', headers: bearer('pub-token'), payload: { messages: [{ data: 'x' }] } });
    expect(res.statusCode).toBe(201);
    expect(json(res).publisher.id).toBe('orders-writer');
    res = await h.inject({ method: 'POST', url: '/v1/queues/orders.eu/messages', headers: bearer('pub-token'), payload: { publisherId: 'orders-writer', messages: [{ data: 'x' }] } });
    expect(res.statusCode).toBe(201);
    res = await h.inject({ method: 'POST', url: '/v1/queues/orders.eu/messages', headers: bearer('pub-token'), payload: { publisherId: 'someone-else', messages: [{ data: 'x' }] } });
    expect([res.statusCode, json(res).error.code]).toEqual([403, 'FORBIDDEN']);
    res = await h.inject({
      method: 'POST', url: '/v1/queues/orders.eu/messages',
      headers: { ...bearer('pub-token'), 'content-type': 'text/plain', 'x-publisher-id': 'someone-else' }, payload: 'raw',
    });
    expect([res.statusCode, json(res).error.code]).toEqual([403, 'FORBIDDEN']);
    res = await h.inject({ method: 'POST', url: '/v1/queues/other/messages', headers: bearer('pub-token'), payload: { messages: [{ data: 'x' }] } });
    expect([res.statusCode, json(res).error.code]).toEqual([403, 'FORBIDDEN']);
    res = await h.inject({ method: 'POST', url: '/v1/queues/orders.eu/messages', headers: bearer('sub-token'), payload: { messages: [{ data: 'x' }] } });
    expect([res.statusCode, json(res).error.code]).toEqual([403, 'FORBIDDEN']);
    expect(h.broker.queue('orders.eu').published).toBe(2);
    expect(h.broker.queue('other').published).toBe(0);
  });

  test('auth - subscribe globs cover pull, ack, nack, extend and the aliases', async () => {
    await h.inject({ method: 'POST', url: '/v1/queues/orders.eu/messages', headers: bearer('pub-token'), payload: { messages: [{ data: 'x' }] } });
    const paths = ['subscriptions/default/pull', 'subscriptions/default/ack', 'subscriptions/default/nack', 'dequeue', 'ack'];
    for (const p of paths) {
      const res = await h.inject({ method: 'POST', url: `/v1/queues/orders.eu/${p}`, headers: bearer('pub-token'), payload: p.endsWith('ack') ? { ids: [] } : {} });
      expect([p, res.statusCode]).toEqual([p, 403]);
    }
    let res = await h.inject({ method: 'POST', url: '/v1/queues/orders.eu/dequeue', headers: bearer('sub-token'), payload: {} });
    expect(res.statusCode).toBe(200);
    const [m] = json(res).messages;
    expect(m.publisherId).toBe('orders-writer');
    res = await h.inject({ method: 'POST', url: '/v1/queues/orders.eu/subscriptions/default/extend', headers: bearer('sub-token'), payload: { ids: [m.id], ackDeadlineMs: 1000 } });
    expect(res.statusCode).toBe(200);
    res = await h.inject({ method: 'POST', url: '/v1/queues/orders.eu/ack', headers: bearer('sub-token'), payload: { ids: [m.id] } });
    expect(json(res)).toEqual({ acked: 1, unknown: [] });
    res = await h.inject({ method: 'POST', url: '/v1/queues/other/dequeue', headers: bearer('sub-token'), payload: {} });
    expect(res.statusCode).toBe(403);
  });

  test('auth - reading stats needs some permission on the queue; the list shows only those', async () => {
    expect((await h.inject({ method: 'GET', url: '/v1/queues/orders.eu', headers: bearer('sub-token') })).statusCode).toBe(200);
    expect((await h.inject({ method: 'GET', url: '/v1/queues/other', headers: bearer('sub-token') })).statusCode).toBe(403);
    const list = json(await h.inject({ method: 'GET', url: '/v1/queues', headers: bearer('pub-token') }));
    expect(list.queues.map((q: { name: string }) => q.name)).toEqual(['orders.eu']);
    expect(json(await h.inject({ method: 'GET', url: '/v1/queues', headers: bearer('admin-token') })).queues).toHaveLength(2);
    expect((await h.inject({ method: 'GET', url: '/metrics', headers: bearer('sub-token') })).statusCode).toBe(200);
  });

  test('auth - WebSocket: refused without a token (401), with a bad Origin (403); header or ?token= work', async () => {
    const url = await h.listen();
    expect(await Client.refused(`${url}/v1/ws`)).toBe(401);
    expect(await Client.refused(`${url}/v1/ws?token=wrong`)).toBe(401);
    expect(await Client.refused(`${url}/v1/ws?token=sub-token`, { origin: 'https://evil.example' })).toBe(403);

    const byQuery = await Client.open(`${url}/v1/ws?token=sub-token`, { origin: 'https://app.example' });
    const byHeader = await Client.open(`${url}/v1/ws`, { headers: bearer('pub-token') });
    try {
      byHeader.send({ op: 'publish', ref: 1, queue: 'orders.eu', messages: [{ data: 'hi' }] });
      expect(await byHeader.op('published')).toMatchObject({ ref: 1, duplicates: 0 });
      byHeader.send({ op: 'publish', ref: 2, queue: 'orders.eu', publisherId: 'intruder', messages: [{ data: 'hi' }] });
      expect(await byHeader.op('error')).toMatchObject({ ref: 2, code: 'FORBIDDEN' });
      byHeader.send({ op: 'publish', ref: 3, queue: 'other', messages: [{ data: 'hi' }] });
      expect(await byHeader.op('error')).toMatchObject({ ref: 3, code: 'FORBIDDEN' });
      byHeader.send({ op: 'subscribe', ref: 4, queue: 'orders.eu', subscription: 'default' });
      expect(await byHeader.op('error')).toMatchObject({ ref: 4, code: 'FORBIDDEN' });

      byQuery.send({ op: 'subscribe', ref: 'a', queue: 'orders.eu', subscription: 'default' });
      expect(await byQuery.op('subscribed')).toMatchObject({ ref: 'a', queue: 'orders.eu', subscription: 'default' });
      const [m] = await byQuery.messages(1);
      expect(m).toMatchObject({ data: 'hi', publisherId: 'orders-writer' });
      byQuery.send({ op: 'publish', ref: 'b', queue: 'orders.eu', messages: [{ data: 'no' }] });
      expect(await byQuery.op('error')).toMatchObject({ ref: 'b', code: 'FORBIDDEN' });
      byQuery.send({ op: 'subscribe', ref: 'c', queue: 'other', subscription: 'default' });
      expect(await byQuery.op('error')).toMatchObject({ ref: 'c', code: 'FORBIDDEN' });
    } finally {
      byQuery.close();
      byHeader.close();
    }
  });

  test('auth - tokens are matched exactly; globs are anchored', () => {
    const auth = new Auth(TOKENS);
    expect(auth.lookup('admin-token')?.name).toBe('root');
    expect(auth.lookup('admin-toke')).toBeUndefined();
    expect(auth.lookup('admin-token ')).toBeUndefined();
    expect(globToRegExp('orders.*').test('orders.eu')).toBe(true);
    expect(globToRegExp('orders.*').test('ordersXeu')).toBe(false);
    expect(globToRegExp('orders.*').test('x.orders.eu')).toBe(false);
    expect(globToRegExp('q?').test('q1')).toBe(true);
    expect(() => new Auth({ tokens: [{ token: '', name: 'x' }] })).toThrow(/token/);
    expect(() => new Auth({ tokens: [{ token: 'a', name: 'x' }, { token: 'b', name: 'x' }] })).toThrow(/twice/);
    expect(() => new Auth({ tokens: [{ token: 'a', name: 'x', publishAs: 'y' as unknown as string[] }] })).toThrow(/publishAs/);
  });

  test('auth - publishAs: a token may publish as its name or an id its globs cover, nothing else', () => {
    const p = new Auth({ tokens: [{ token: 't', name: 'server-a', publish: ['*'], publishAs: ['*:orders'] }] }).lookup('t')!;
    expect(publisherFor(p, undefined)).toBe('server-a');
    expect(publisherFor(p, 'server-a')).toBe('server-a');
    expect(publisherFor(p, '5f2c:orders')).toBe('5f2c:orders');
    expect(() => publisherFor(p, '5f2c:invoices')).toThrow(/may not publish as/);
    expect(() => publisherFor(new Auth(TOKENS).lookup('pub-token')!, 'x:orders')).toThrow(/may not publish as/);
    expect(publisherFor(null, 'anyone')).toBe('anyone');
  });
});
