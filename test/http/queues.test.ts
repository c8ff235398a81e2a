import { harness, json, type Harness } from './helpers';

describe('http queues and subscriptions', () => {
  let h: Harness;
  beforeEach(() => { h = harness(); });
  afterEach(() => h.close());

  test('queues - PUT creates (201), same config is 200, a different one 409', async () => {
    let res = await h.inject({ method: 'PUT', url: '/v1/queues/orders', payload: { memoryBytes: 1 << 20 } });
    expect(res.statusCode).toBe(201);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    expect(json(res)).toMatchObject({ name: 'orders', messages: 0, memoryBytes: 1 << 20, subscriptions: ['default'], publishers: [] });
    res = await h.inject({ method: 'PUT', url: '/v1/queues/orders', payload: { memoryBytes: 1 << 20 } });
    expect(res.statusCode).toBe(200);
    res = await h.inject({ method: 'PUT', url: '/v1/queues/orders', payload: { memoryBytes: 2 << 20 } });
    expect(res.statusCode).toBe(409);
    expect(json(res).error).toMatchObject({ code: 'ALREADY_EXISTS', queue: 'orders' });
  });

  test('queues - PUT without a body, or with an empty JSON body, uses the defaults', async () => {
    expect((await h.inject({ method: 'PUT', url: '/v1/queues/a' })).statusCode).toBe(201);
    const res = await h.inject({ method: 'PUT', url: '/v1/queues/b', headers: { 'content-type': 'application/json' }, payload: '' });
    expect(res.statusCode).toBe(201);
    expect((await h.inject({ method: 'PUT', url: '/v1/queues/b', payload: {} })).statusCode).toBe(200);
  });

  test('queues - defaultSubscription false makes a queue without subscriptions', async () => {
    const res = await h.inject({ method: 'PUT', url: '/v1/queues/bare', payload: { defaultSubscription: false } });
    expect(json(res).subscriptions).toEqual([]);
  });

  test('queues - list, get, purge, delete', async () => {
    await h.inject({ method: 'PUT', url: '/v1/queues/q1' });
    await h.inject({ method: 'PUT', url: '/v1/queues/q2' });
    await h.inject({ method: 'POST', url: '/v1/queues/q1/messages', payload: { publisherId: 'p', messages: [{ data: 'a' }, { data: 'b' }] } });

    let res = await h.inject({ method: 'GET', url: '/v1/queues' });
    expect(res.statusCode).toBe(200);
    expect(json(res).queues.map((q: { name: string }) => q.name).sort()).toEqual(['q1', 'q2']);

    res = await h.inject({ method: 'GET', url: '/v1/queues/q1' });
    expect(res.statusCode).toBe(200);
    const stats = json(res);
    for (const k of ['name', 'messages', 'memoryBytes', 'memoryUsedBytes', 'spilledMessages', 'spilledBytes', 'published', 'dropped', 'subscriptions', 'publishers']) {
      expect(stats).toHaveProperty(k);
    }
    expect(stats).toMatchObject({ name: 'q1', messages: 2, published: 2, dropped: 0, publishers: ['p'] });
    expect(stats.memoryUsedBytes).toBeGreaterThan(0);

    res = await h.inject({ method: 'POST', url: '/v1/queues/q1/purge' });
    expect(res.statusCode).toBe(200);
    expect(json(res)).toEqual({ purged: 2 });
    expect(json(await h.inject({ method: 'GET', url: '/v1/queues/q1' })).messages).toBe(0);

    res = await h.inject({ method: 'DELETE', url: '/v1/queues/q1' });
    expect(res.statusCode).toBe(204);
    expect(res.body).toBe('');
    res = await h.inject({ method: 'GET', url: '/v1/queues/q1' });
    expect(res.statusCode).toBe(404);
    expect(json(res).error.code).toBe('QUEUE_NOT_FOUND');
    expect((await h.inject({ method: 'DELETE', url: '/v1/queues/q1' })).statusCode).toBe(404);
  });

  test('queues - bad names and bad fields are 400 INVALID_ARGUMENT', async () => {
    let res = await h.inject({ method: 'PUT', url: '/v1/queues/-bad' });
    expect(res.statusCode).toBe(400);
    expect(json(res).error.code).toBe('INVALID_ARGUMENT');
    res = await h.inject({ method: 'PUT', url: `/v1/queues/${'x'.repeat(129)}` });
    expect(res.statusCode).toBe(400);
    res = await h.inject({ method: 'PUT', url: '/v1/queues/ok', payload: { memoryBytes: 'big' } });
    expect(res.statusCode).toBe(400);
    expect(json(res).error).toMatchObject({ code: 'INVALID_ARGUMENT', field: 'memoryBytes' });
    res = await h.inject({ method: 'PUT', url: '/v1/queues/ok', payload: { colour: 'red' } });
    expect(res.statusCode).toBe(400);
    expect(json(res).error).toMatchObject({ code: 'INVALID_ARGUMENT', field: 'colour' });
    res = await h.inject({ method: 'PUT', url: '/v1/queues/ok', payload: [1, 2] });
    expect(res.statusCode).toBe(400);
    expect(h.broker.hasQueue('ok')).toBe(false);
  });

  test('queues - a 128-character name is fine', async () => {
    const name = 'q'.repeat(128);
    expect((await h.inject({ method: 'PUT', url: `/v1/queues/${name}` })).statusCode).toBe(201);
    expect((await h.inject({ method: 'GET', url: `/v1/queues/${name}` })).statusCode).toBe(200);
  });

  test('errors - malformed JSON is 400, another content type 415, an unknown route 404 NOT_FOUND', async () => {
    let res = await h.inject({ method: 'PUT', url: '/v1/queues/a', headers: { 'content-type': 'application/json' }, payload: '{"memoryBytes":' });
    expect(res.statusCode).toBe(400);
    expect(json(res).error.code).toBe('INVALID_ARGUMENT');
    res = await h.inject({ method: 'PUT', url: '/v1/queues/a', headers: { 'content-type': 'text/plain' }, payload: 'hello' });
    expect(res.statusCode).toBe(415);
    expect(json(res).error.code).toBe('UNSUPPORTED_MEDIA_TYPE');
    res = await h.inject({ method: 'GET', url: '/v1/nothing/here' });
    expect(res.statusCode).toBe(404);
    expect(json(res)).toEqual({ error: { code: 'NOT_FOUND', message: expect.any(String) } });
    res = await h.inject({ method: 'GET', url: '/v1/queues/%zz' });
    expect(res.statusCode).toBe(400);
    expect(json(res).error.code).toBe('INVALID_ARGUMENT');
  });

  test('errors - a body over the server limit is 413 BODY_TOO_LARGE', async () => {
    const small = harness({ bodyLimit: 1024 });
    try {
      await small.inject({ method: 'PUT', url: '/v1/queues/q' });
      const res = await small.inject({ method: 'POST', url: '/v1/queues/q/messages', payload: { messages: [{ data: 'x'.repeat(2000) }] } });
      expect(res.statusCode).toBe(413);
      expect(json(res).error.code).toBe('BODY_TOO_LARGE');
      const raw = await small.inject({ method: 'POST', url: '/v1/queues/q/messages', headers: { 'content-type': 'application/octet-stream' }, payload: Buffer.alloc(2000) });
      expect(raw.statusCode).toBe(413);
      expect(json(raw).error.code).toBe('BODY_TOO_LARGE');
      expect(small.broker.queue('q').published).toBe(0);
    } finally {
      await small.close();
    }
  });

  test('errors - a queue the server has no memory for is 507 INSUFFICIENT_STORAGE', async () => {
    const tiny = harness({ brokerOptions: { memoryBytes: 64 * 1024 } });
    try {
      expect((await tiny.inject({ method: 'PUT', url: '/v1/queues/one', payload: { memoryBytes: 65536 } })).statusCode).toBe(201);
      const res = await tiny.inject({ method: 'PUT', url: '/v1/queues/two', payload: { memoryBytes: 65536 } });
      expect(res.statusCode).toBe(507);
      expect(json(res).error.code).toBe('INSUFFICIENT_STORAGE');
    } finally {
      await tiny.close();
    }
  });

  test('subscriptions - PUT 201/200/409, GET with stats and config, list, DELETE 204', async () => {
    await h.inject({ method: 'PUT', url: '/v1/queues/q' });
    const body = { filter: { attributes: { kind: 'a' } }, ackDeadlineMs: 5000, maxDeliveries: 3 };
    let res = await h.inject({ method: 'PUT', url: '/v1/queues/q/subscriptions/s1', payload: body });
    expect(res.statusCode).toBe(201);
    expect(json(res)).toMatchObject({ name: 's1', queue: 'q', backlog: 0, inFlight: 0, ackDeadlineMs: 5000, maxDeliveries: 3, filter: { attributes: { kind: 'a' } } });
    expect((await h.inject({ method: 'PUT', url: '/v1/queues/q/subscriptions/s1', payload: body })).statusCode).toBe(200);
    res = await h.inject({ method: 'PUT', url: '/v1/queues/q/subscriptions/s1', payload: { ...body, maxDeliveries: 4 } });
    expect(res.statusCode).toBe(409);
    expect(json(res).error.code).toBe('ALREADY_EXISTS');

    await h.inject({ method: 'POST', url: '/v1/queues/q/messages', payload: { messages: [{ data: 'x', attributes: { kind: 'a' } }, { data: 'y', attributes: { kind: 'b' } }] } });
    res = await h.inject({ method: 'GET', url: '/v1/queues/q/subscriptions/s1' });
    expect(res.statusCode).toBe(200);
    const info = json(res);
    for (const k of ['name', 'queue', 'backlog', 'inFlight', 'delivered', 'acked', 'redelivered', 'deadLettered']) expect(info).toHaveProperty(k);
    expect(info).toMatchObject({ backlog: 1, inFlight: 0, delivered: 0, acked: 0 });

    res = await h.inject({ method: 'GET', url: '/v1/queues/q/subscriptions' });
    expect(json(res).subscriptions.map((s: { name: string }) => s.name).sort()).toEqual(['default', 's1']);

    expect((await h.inject({ method: 'DELETE', url: '/v1/queues/q/subscriptions/s1' })).statusCode).toBe(204);
    res = await h.inject({ method: 'GET', url: '/v1/queues/q/subscriptions/s1' });
    expect(res.statusCode).toBe(404);
    expect(json(res).error.code).toBe('SUBSCRIPTION_NOT_FOUND');
    res = await h.inject({ method: 'PUT', url: '/v1/queues/nope/subscriptions/s' });
    expect(res.statusCode).toBe(404);
    expect(json(res).error.code).toBe('QUEUE_NOT_FOUND');
  });

  test('subscriptions - ttlMs and maxEvents show expiresAt and remainingEvents', async () => {
    await h.inject({ method: 'PUT', url: '/v1/queues/q' });
    const res = await h.inject({ method: 'PUT', url: '/v1/queues/q/subscriptions/t', payload: { ttlMs: 60_000, maxEvents: 5 } });
    expect(res.statusCode).toBe(201);
    expect(json(res)).toMatchObject({ ttlMs: 60_000, maxEvents: 5, remainingEvents: 5 });
    expect(Date.parse(json(res).expiresAt)).toBeGreaterThan(Date.now());
  });

  test('subscriptions - a bad config is 400', async () => {
    await h.inject({ method: 'PUT', url: '/v1/queues/q' });
    let res = await h.inject({ method: 'PUT', url: '/v1/queues/q/subscriptions/s', payload: { startAt: 'middle' } });
    expect(res.statusCode).toBe(400);
    expect(json(res).error).toMatchObject({ code: 'INVALID_ARGUMENT', field: 'startAt' });
    res = await h.inject({ method: 'PUT', url: '/v1/queues/q/subscriptions/s!' });
    expect(res.statusCode).toBe(400);
  });

  test('health - /healthz answers with the epoch', async () => {
    const res = await h.inject({ method: 'GET', url: '/healthz' });
    expect(res.statusCode).toBe(200);
    expect(json(res)).toEqual({ status: 'ok', epoch: h.broker.epoch });
  });

  test('openapi - /openapi.json lists every route with its schemas', async () => {
    const res = await h.inject({ method: 'GET', url: '/openapi.json' });
    expect(res.statusCode).toBe(200);
    const doc = json(res);
    expect(doc.openapi).toMatch(/^3\./);
    const paths = doc.paths;
    for (const [path, method] of [
      ['/v1/queues', 'get'], ['/v1/queues/{queue}', 'put'], ['/v1/queues/{queue}', 'get'], ['/v1/queues/{queue}', 'delete'],
      ['/v1/queues/{queue}/purge', 'post'], ['/v1/queues/{queue}/messages', 'post'], ['/v1/queues/{queue}/publishers/{id}', 'get'],
      ['/v1/queues/{queue}/subscriptions/{sub}', 'put'], ['/v1/queues/{queue}/subscriptions/{sub}/pull', 'post'],
      ['/v1/queues/{queue}/subscriptions/{sub}/ack', 'post'], ['/v1/queues/{queue}/subscriptions/{sub}/nack', 'post'],
      ['/v1/queues/{queue}/subscriptions/{sub}/extend', 'post'], ['/v1/queues/{queue}/dequeue', 'post'], ['/v1/queues/{queue}/ack', 'post'],
      ['/v1/transactions', 'post'], ['/v1/transactions/{id}/commit', 'post'], ['/v1/transactions/{id}/rollback', 'post'],
      ['/v1/ws', 'get'], ['/healthz', 'get'], ['/metrics', 'get'],
    ] as const) {
      expect(paths[path]?.[method]).toBeDefined();
    }
    const publish = paths['/v1/queues/{queue}/messages'].post;
    expect(publish.requestBody.content['application/json'].schema.properties.messages.maxItems).toBe(1000);
    expect(publish.responses['201'].content['application/json'].schema.properties.ids).toBeDefined();
    expect(publish.responses['429']).toBeDefined();
  });
});
