import { harness, json, type Harness } from './helpers';

describe('http publish', () => {
  let h: Harness;
  beforeEach(async () => {
    h = harness();
    await h.inject({ method: 'PUT', url: '/v1/queues/q' });
  });
  afterEach(() => h.close());

  const pull = async (max = 100, sub = 'default') =>
    json(await h.inject({ method: 'POST', url: `/v1/queues/q/subscriptions/${sub}/pull`, payload: { max } })).messages as any[];

  test('publish - a JSON batch is 201 with ids, seqs, duplicates and the publisher state', async () => {
    const res = await h.inject({
      method: 'POST', url: '/v1/queues/q/messages',
      payload: { publisherId: 'pub-1', messages: [{ data: 'héllo', attributes: { a: '1' }, key: 'k' }, { data: 'AAEC/w==', encoding: 'base64' }] },
    });
    expect(res.statusCode).toBe(201);
    const body = json(res);
    expect(body.ids).toHaveLength(2);
    expect(body.seqs).toEqual([1, 2]);
    expect(body.duplicates).toBe(0);
    expect(body.staged).toBeUndefined();
    expect(body.publisher).toMatchObject({ id: 'pub-1', epoch: h.broker.epoch, unconsumedMessages: 2, restricted: false });
    const msgs = await pull();
    expect(msgs).toEqual([
      {
        id: body.ids[0], seq: 1, data: 'héllo', encoding: 'utf8', attributes: { a: '1' }, key: 'k',
        publisherId: 'pub-1', publishedAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/), deliveryAttempt: 1,
      },
      expect.objectContaining({ id: body.ids[1], seq: 2, data: 'AAEC/w==', encoding: 'base64', attributes: {} }),
    ]);
  });

  test('publish - one bad message refuses the whole batch and stores nothing', async () => {
    const res = await h.inject({
      method: 'POST', url: '/v1/queues/q/messages',
      payload: { messages: [{ data: 'good' }, { data: 'also good' }, { data: '%%%', encoding: 'base64' }] },
    });
    expect(res.statusCode).toBe(400);
    expect(json(res).error).toMatchObject({ code: 'INVALID_ARGUMENT', index: 2 });
    expect(h.broker.queue('q').published).toBe(0);
    expect(await pull()).toEqual([]);
  });

  test('publish - bad batches: empty, over 1000, unknown fields, data not a string', async () => {
    const cases: unknown[] = [
      { messages: [] },
      { messages: Array.from({ length: 1001 }, () => ({ data: 'x' })) },
      { messages: [{ data: 'x', colour: 'red' }] },
      { messages: [{ data: 5 }] },
      { messages: [{ data: 'x', encoding: 'latin1' }] },
      { messages: [{ data: 'x', attributes: { a: 1 } }] },
      { messages: [{ data: 'x', publisherSeq: -1 }] },
      { messages: [{ data: 'x' }], extra: true },
      { publisherId: '', messages: [{ data: 'x' }] },
      [{ data: 'x' }],
    ];
    for (const payload of cases) {
      const res = await h.inject({ method: 'POST', url: '/v1/queues/q/messages', payload: payload as object });
      expect([res.statusCode, json(res).error.code]).toEqual([400, 'INVALID_ARGUMENT']);
    }
    expect(h.broker.queue('q').published).toBe(0);
  });

  test('publish - a message over maxMessageBytes is 413 MESSAGE_TOO_LARGE', async () => {
    await h.inject({ method: 'PUT', url: '/v1/queues/small', payload: { maxMessageBytes: 10 } });
    let res = await h.inject({ method: 'POST', url: '/v1/queues/small/messages', payload: { messages: [{ data: 'ok' }, { data: 'x'.repeat(11) }] } });
    expect(res.statusCode).toBe(413);
    expect(json(res).error).toMatchObject({ code: 'MESSAGE_TOO_LARGE', index: 1 });
    res = await h.inject({ method: 'POST', url: '/v1/queues/small/messages', headers: { 'content-type': 'application/octet-stream' }, payload: Buffer.alloc(11) });
    expect(res.statusCode).toBe(413);
    expect(json(res).error.code).toBe('MESSAGE_TOO_LARGE');
    expect(h.broker.queue('small').published).toBe(0);
  });

  test('publish - an unknown queue is 404 QUEUE_NOT_FOUND (no auto-create)', async () => {
    const res = await h.inject({ method: 'POST', url: '/v1/queues/nope/messages', payload: { messages: [{ data: 'x' }] } });
    expect(res.statusCode).toBe(404);
    expect(json(res).error).toMatchObject({ code: 'QUEUE_NOT_FOUND', queue: 'nope' });
    expect(h.broker.hasQueue('nope')).toBe(false);
  });

  test('publish - a raw body is one message: UTF-8 text as text, other bytes as base64; publisher from X-Publisher-Id', async () => {
    let res = await h.inject({ method: 'POST', url: '/v1/queues/q/messages', headers: { 'content-type': 'text/plain', 'x-publisher-id': 'raw-1' }, payload: 'plain "text" ✓' });
    expect(res.statusCode).toBe(201);
    expect(json(res).publisher.id).toBe('raw-1');
    const bytes = Buffer.from([0, 1, 2, 0xff, 0xfe]);
    res = await h.inject({ method: 'POST', url: '/v1/queues/q/messages', headers: { 'content-type': 'application/octet-stream' }, payload: bytes });
    expect(res.statusCode).toBe(201);
    res = await h.inject({ method: 'POST', url: '/v1/queues/q/messages', headers: { 'content-type': 'application/xml' }, payload: '<a/>' });
    expect(res.statusCode).toBe(201);
    const msgs = await pull();
    expect(msgs.map((m) => [m.data, m.encoding, m.publisherId])).toEqual([
      ['plain "text" ✓', 'utf8', 'raw-1'],
      [bytes.toString('base64'), 'base64', 'anonymous'],
      ['<a/>', 'utf8', 'anonymous'],
    ]);
  });

  test('publish - a publish without a body is 400', async () => {
    const res = await h.inject({ method: 'POST', url: '/v1/queues/q/messages' });
    expect(res.statusCode).toBe(400);
    expect(json(res).error.code).toBe('INVALID_ARGUMENT');
  });

  test('publish - publisherSeq duplicates are not stored again and answer the original id', async () => {
    const first = json(await h.inject({ method: 'POST', url: '/v1/queues/q/messages', payload: { publisherId: 'rp', messages: [{ data: 'a', publisherSeq: 1 }, { data: 'b', publisherSeq: 2 }] } }));
    const again = json(await h.inject({ method: 'POST', url: '/v1/queues/q/messages', payload: { publisherId: 'rp', messages: [{ data: 'b', publisherSeq: 2 }, { data: 'c', publisherSeq: 3 }] } }));
    expect(again.duplicates).toBe(1);
    expect(again.ids[0]).toBe(first.ids[1]);
    expect(again.seqs).toEqual([2, 3]);
    expect((await pull()).map((m) => m.data)).toEqual(['a', 'b', 'c']);
    const st = json(await h.inject({ method: 'GET', url: '/v1/queues/q/publishers/rp' }));
    expect(st).toMatchObject({ id: 'rp', lastPublisherSeq: 3, restricted: false });
    const missing = await h.inject({ method: 'GET', url: '/v1/queues/q/publishers/nobody' });
    expect(missing.statusCode).toBe(404);
    expect(json(missing).error.code).toBe('NOT_FOUND');
  });

  test('flow control - a restricted publisher gets 429 with Retry-After and retryAfterMs, stores nothing; others go on', async () => {
    await h.inject({ method: 'PUT', url: '/v1/queues/slow', payload: { publisherLimitBytes: 100, publisherResumeBytes: 10 } });
    const big = { messages: [{ data: 'x'.repeat(150) }] };
    let res = await h.inject({ method: 'POST', url: '/v1/queues/slow/messages', payload: { publisherId: 'hog', ...big } });
    expect(res.statusCode).toBe(201);
    expect(json(res).publisher).toMatchObject({ restricted: true, reason: 'unconsumed' });
    res = await h.inject({ method: 'POST', url: '/v1/queues/slow/messages', payload: { publisherId: 'hog', messages: [{ data: 'y' }] } });
    expect(res.statusCode).toBe(429);
    const err = json(res).error;
    expect(err).toMatchObject({ code: 'PUBLISHER_RESTRICTED', reason: 'unconsumed' });
    expect(err.retryAfterMs).toBeGreaterThan(0);
    expect(res.headers['retry-after']).toBe(String(Math.ceil(err.retryAfterMs / 1000)));
    expect(h.broker.queue('slow').published).toBe(1);
    // Another publisher is not held back.
    res = await h.inject({ method: 'POST', url: '/v1/queues/slow/messages', payload: { publisherId: 'other', messages: [{ data: 'z' }] } });
    expect(res.statusCode).toBe(201);
    // Consuming lifts the restriction.
    const pulled = json(await h.inject({ method: 'POST', url: '/v1/queues/slow/dequeue', payload: { max: 10 } })).messages as any[];
    await h.inject({ method: 'POST', url: '/v1/queues/slow/ack', payload: { ids: pulled.map((m) => m.id) } });
    res = await h.inject({ method: 'POST', url: '/v1/queues/slow/messages', payload: { publisherId: 'hog', messages: [{ data: 'y' }] } });
    expect(res.statusCode).toBe(201);
  });

  test('publish - a full queue with spill off is 507 QUEUE_FULL and stores nothing of the batch', async () => {
    await h.inject({ method: 'PUT', url: '/v1/queues/full', payload: { memoryBytes: 65536, spill: false, publisherLimitBytes: 1 << 30, publisherResumeBytes: 0 } });
    const msg = { data: 'x'.repeat(1000) };
    let status = 201;
    let sent = 0;
    while (status === 201 && sent < 1000) {
      const res = await h.inject({ method: 'POST', url: '/v1/queues/full/messages', payload: { messages: [msg, msg, msg, msg, msg] } });
      status = res.statusCode;
      if (status === 201) sent += 5;
      else expect(json(res).error).toMatchObject({ code: 'QUEUE_FULL', queue: 'full' });
    }
    expect(status).toBe(507);
    expect(h.broker.queue('full').published).toBe(sent);
  });

  test('shutdown - a closing broker answers publishes with 503 SHUTTING_DOWN', async () => {
    await h.broker.close();
    const res = await h.inject({ method: 'POST', url: '/v1/queues/q/messages', payload: { messages: [{ data: 'x' }] } });
    expect(res.statusCode).toBe(503);
    expect(json(res).error.code).toBe('SHUTTING_DOWN');
    const tx = await h.inject({ method: 'POST', url: '/v1/transactions' });
    expect(tx.statusCode).toBe(503);
  });
});
