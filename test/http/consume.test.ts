import { prepareRaw } from '../../src/broker';
import { harness, json, turns, type Harness } from './helpers';

describe('http pull, ack, nack, extend', () => {
  let h: Harness;
  beforeEach(async () => {
    h = harness({ brokerOptions: { tickMs: 5 } });
    await h.inject({ method: 'PUT', url: '/v1/queues/q' });
  });
  afterEach(() => h.close());

  const publish = (...data: string[]) =>
    h.inject({ method: 'POST', url: '/v1/queues/q/messages', payload: { messages: data.map((d) => ({ data: d })) } });
  const pull = async (body: object = { max: 100 }, url = '/v1/queues/q/subscriptions/default/pull') => {
    const res = await h.inject({ method: 'POST', url, payload: body });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    return json(res).messages as any[];
  };

  test('pull - max 1 by default, in seq order, then ack', async () => {
    await publish('a', 'b', 'c');
    const [m] = await pull({});
    expect(m).toMatchObject({ data: 'a', seq: 1, deliveryAttempt: 1 });
    const rest = await pull({ max: 10 });
    expect(rest.map((x) => x.data)).toEqual(['b', 'c']);
    const res = await h.inject({ method: 'POST', url: '/v1/queues/q/subscriptions/default/ack', payload: { ids: [m.id, rest[0].id, 'nope'] } });
    expect(res.statusCode).toBe(200);
    expect(json(res)).toEqual({ acked: 2, unknown: ['nope'] });
    expect(h.broker.subscription('q', 'default').inFlight).toBe(1);
  });

  test('pull - an empty body and no body mean the defaults', async () => {
    await publish('a', 'b');
    const res = await h.inject({ method: 'POST', url: '/v1/queues/q/subscriptions/default/pull' });
    expect(json(res).messages).toHaveLength(1);
  });

  test('pull - waitMs waits for the first message', async () => {
    const pending = pull({ max: 5, waitMs: 10_000 });
    await turns(10);
    await publish('late');
    const msgs = await pending;
    expect(msgs.map((m) => m.data)).toEqual(['late']);
  });

  test('pull - waitMs with nothing to deliver answers empty after the wait', async () => {
    const msgs = await pull({ waitMs: 20 });
    expect(msgs).toEqual([]);
  });

  test('pull - autoAck acks in the same call', async () => {
    await publish('a');
    await pull({ autoAck: true });
    expect(h.broker.subscription('q', 'default').stats()).toMatchObject({ inFlight: 0, acked: 1 });
  });

  test('pull - bad arguments are 400; unknown subscription 404', async () => {
    for (const body of [{ max: 0 }, { max: 1001 }, { waitMs: 30_001 }, { waitMs: -1 }, { autoAck: 'yes' }, { max: 1.5 }, { other: 1 }]) {
      const res = await h.inject({ method: 'POST', url: '/v1/queues/q/subscriptions/default/pull', payload: body });
      expect([res.statusCode, json(res).error.code]).toEqual([400, 'INVALID_ARGUMENT']);
    }
    let res = await h.inject({ method: 'POST', url: '/v1/queues/q/subscriptions/nope/pull', payload: {} });
    expect([res.statusCode, json(res).error.code]).toEqual([404, 'SUBSCRIPTION_NOT_FOUND']);
    res = await h.inject({ method: 'POST', url: '/v1/queues/nope/subscriptions/default/pull', payload: {} });
    expect([res.statusCode, json(res).error.code]).toEqual([404, 'QUEUE_NOT_FOUND']);
    res = await h.inject({ method: 'POST', url: '/v1/queues/q/subscriptions/default/ack', payload: { ids: 'x' } });
    expect([res.statusCode, json(res).error.code]).toEqual([400, 'INVALID_ARGUMENT']);
  });

  test('aliases - dequeue and ack work on the default subscription', async () => {
    await publish('a', 'b');
    const msgs = await pull({ max: 10 }, '/v1/queues/q/dequeue');
    expect(msgs.map((m) => m.data)).toEqual(['a', 'b']);
    const res = await h.inject({ method: 'POST', url: '/v1/queues/q/ack', payload: { ids: msgs.map((m) => m.id) } });
    expect(json(res)).toEqual({ acked: 2, unknown: [] });
  });

  test('nack - redelivered with deliveryAttempt 2', async () => {
    await publish('a');
    const [m] = await pull();
    const res = await h.inject({ method: 'POST', url: '/v1/queues/q/subscriptions/default/nack', payload: { ids: [m.id, 'x'] } });
    expect(json(res)).toEqual({ nacked: 1, unknown: ['x'] });
    const [again] = await pull();
    expect(again).toMatchObject({ id: m.id, deliveryAttempt: 2 });
    expect(h.broker.subscription('q', 'default').redelivered).toBe(1);
  });

  test('nack - delayMs holds the message back', async () => {
    await publish('a');
    const [m] = await pull();
    await h.inject({ method: 'POST', url: '/v1/queues/q/subscriptions/default/nack', payload: { ids: [m.id], delayMs: 50 } });
    expect(await pull()).toEqual([]);
    const [again] = await pull({ waitMs: 5000 });
    expect(again.id).toBe(m.id);
  });

  test('extend - moves the deadline; ackDeadlineMs is required', async () => {
    await publish('a');
    const [m] = await pull();
    let res = await h.inject({ method: 'POST', url: '/v1/queues/q/subscriptions/default/extend', payload: { ids: [m.id] } });
    expect([res.statusCode, json(res).error.code]).toEqual([400, 'INVALID_ARGUMENT']);
    res = await h.inject({ method: 'POST', url: '/v1/queues/q/subscriptions/default/extend', payload: { ids: [m.id, 'zz'], ackDeadlineMs: 60_000 } });
    expect(res.statusCode).toBe(200);
    expect(json(res)).toEqual({ extended: 1, unknown: ['zz'] });
  });

  test('redelivery - a passed ack deadline delivers again', async () => {
    await h.inject({ method: 'PUT', url: '/v1/queues/q/subscriptions/quick', payload: { ackDeadlineMs: 20 } });
    await publish('a');
    const [m] = await pull({}, '/v1/queues/q/subscriptions/quick/pull');
    const [again] = await pull({ waitMs: 5000 }, '/v1/queues/q/subscriptions/quick/pull');
    expect(again).toMatchObject({ id: m.id, deliveryAttempt: 2 });
  });

  test('fan-out and filters - each subscription gets every eligible message', async () => {
    await h.inject({ method: 'PUT', url: '/v1/queues/q/subscriptions/only-red', payload: { filter: { attributes: { colour: 'red' } } } });
    await h.inject({
      method: 'POST', url: '/v1/queues/q/messages',
      payload: { messages: [{ data: '1', attributes: { colour: 'red' } }, { data: '2', attributes: { colour: 'blue' } }] },
    });
    expect((await pull()).map((m) => m.data)).toEqual(['1', '2']);
    expect((await pull({ max: 10 }, '/v1/queues/q/subscriptions/only-red/pull')).map((m) => m.data)).toEqual(['1']);
  });

  test('dead letters - after maxDeliveries a nacked message goes to the deadLetterQueue', async () => {
    await h.inject({ method: 'PUT', url: '/v1/queues/dlq' });
    await h.inject({ method: 'PUT', url: '/v1/queues/q/subscriptions/once', payload: { maxDeliveries: 1, deadLetterQueue: 'dlq' } });
    await h.inject({ method: 'POST', url: '/v1/queues/q/messages', payload: { messages: [{ data: 'poison', attributes: { k: 'v' } }] } });
    const [m] = await pull({}, '/v1/queues/q/subscriptions/once/pull');
    await h.inject({ method: 'POST', url: '/v1/queues/q/subscriptions/once/nack', payload: { ids: [m.id] } });
    expect(json(await h.inject({ method: 'GET', url: '/v1/queues/q/subscriptions/once' }))).toMatchObject({ deadLettered: 1, inFlight: 0, backlog: 0 });
    const [dead] = await pull({}, '/v1/queues/dlq/dequeue');
    expect(dead).toMatchObject({ data: 'poison', attributes: { k: 'v' }, deliveryAttempt: 1 });
  });

  test('startAt earliest - a new subscription gets what the queue retains', async () => {
    await publish('old-1', 'old-2');
    await h.inject({ method: 'PUT', url: '/v1/queues/q/subscriptions/late', payload: { startAt: 'earliest' } });
    await h.inject({ method: 'PUT', url: '/v1/queues/q/subscriptions/latest' });
    await publish('new');
    expect((await pull({ max: 10 }, '/v1/queues/q/subscriptions/late/pull')).map((m) => m.data)).toEqual(['old-1', 'old-2', 'new']);
    expect((await pull({ max: 10 }, '/v1/queues/q/subscriptions/latest/pull')).map((m) => m.data)).toEqual(['new']);
  });

  test('shutdown - a long poll answers empty when the server closes', async () => {
    const pending = h.inject({ method: 'POST', url: '/v1/queues/q/subscriptions/default/pull', payload: { waitMs: 30_000 } });
    await turns(10);
    const closed = h.app.close();
    const started = Date.now();
    const res = await pending;
    expect(Date.now() - started).toBeLessThan(5000);
    expect(res.statusCode).toBe(200);
    expect(json(res)).toEqual({ messages: [] });
    await closed;
    // The broker still holds the abandoned pull (and its timer) until something is published.
    h.broker.publish('q', undefined, [prepareRaw(Buffer.from('wake'), 100)]);
    await turns(5);
  });
});

describe('http transactions', () => {
  let h: Harness;
  beforeEach(async () => {
    h = harness();
    await h.inject({ method: 'PUT', url: '/v1/queues/a' });
    await h.inject({ method: 'PUT', url: '/v1/queues/b' });
  });
  afterEach(() => h.close());

  const begin = async (body?: object) => {
    const res = await h.inject({ method: 'POST', url: '/v1/transactions', ...(body ? { payload: body } : {}) });
    expect(res.statusCode).toBe(201);
    return json(res) as { id: string; expiresAt: string };
  };
  const stage = (q: string, tx: string, ...data: string[]) =>
    h.inject({ method: 'POST', url: `/v1/queues/${q}/messages?tx=${tx}`, payload: { messages: data.map((d) => ({ data: d })) } });
  const pullAll = async (q: string) => json(await h.inject({ method: 'POST', url: `/v1/queues/${q}/dequeue`, payload: { max: 100 } })).messages as any[];

  test('transactions - staged messages are invisible until commit, then all visible at once', async () => {
    const tx = await begin({ timeoutMs: 10_000 });
    expect(Date.parse(tx.expiresAt)).toBeGreaterThan(Date.now());
    let res = await stage('a', tx.id, 'a1', 'a2');
    expect(res.statusCode).toBe(201);
    expect(json(res)).toMatchObject({ staged: true, ids: [null, null], seqs: [null, null], duplicates: 0 });
    await stage('b', tx.id, 'b1');
    await h.inject({ method: 'POST', url: '/v1/queues/a/messages', payload: { messages: [{ data: 'outside' }] } });
    expect((await pullAll('a')).map((m) => m.data)).toEqual(['outside']);
    expect(await pullAll('b')).toEqual([]);

    res = await h.inject({ method: 'POST', url: `/v1/transactions/${tx.id}/commit` });
    expect(res.statusCode).toBe(200);
    expect(json(res)).toEqual({ committed: 3 });
    const a = await pullAll('a');
    expect(a.map((m) => m.data)).toEqual(['a1', 'a2']);
    expect(a[1].seq).toBe(a[0].seq + 1);
    expect((await pullAll('b')).map((m) => m.data)).toEqual(['b1']);

    res = await h.inject({ method: 'POST', url: `/v1/transactions/${tx.id}/commit` });
    expect([res.statusCode, json(res).error.code]).toEqual([404, 'TRANSACTION_NOT_FOUND']);
  });

  test('transactions - rollback discards everything staged', async () => {
    const tx = await begin();
    await stage('a', tx.id, 'x');
    const res = await h.inject({ method: 'POST', url: `/v1/transactions/${tx.id}/rollback` });
    expect(res.statusCode).toBe(200);
    expect(await pullAll('a')).toEqual([]);
    expect(h.broker.queue('a').published).toBe(0);
    const again = await h.inject({ method: 'POST', url: `/v1/transactions/${tx.id}/rollback` });
    expect([again.statusCode, json(again).error.code]).toEqual([404, 'TRANSACTION_NOT_FOUND']);
  });

  test('transactions - staging in an unknown transaction is 404; a bad timeout is 400', async () => {
    let res = await stage('a', 'no-such-tx', 'x');
    expect([res.statusCode, json(res).error.code]).toEqual([404, 'TRANSACTION_NOT_FOUND']);
    res = await h.inject({ method: 'POST', url: '/v1/transactions', payload: { timeoutMs: 0 } });
    expect([res.statusCode, json(res).error.code]).toEqual([400, 'INVALID_ARGUMENT']);
    res = await h.inject({ method: 'POST', url: '/v1/transactions', payload: { timeout: 5 } });
    expect([res.statusCode, json(res).error.code]).toEqual([400, 'INVALID_ARGUMENT']);
    expect(h.broker.queue('a').published).toBe(0);
  });
});
