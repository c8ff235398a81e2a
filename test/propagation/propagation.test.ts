import { harness, until, type Harness } from '../http/helpers';
import { prepareBatch } from '../../src/broker';

const open: Harness[] = [];
afterEach(async () => {
  for (const h of open.splice(0)) await h.close();
});

async function server(): Promise<{ h: Harness; url: string }> {
  const h = harness();
  open.push(h);
  return { h, url: await h.listen() };
}

test('propagation - every message reaches the destination and is freed at the source only once consumed there', async () => {
  const a = await server();
  const b = await server();
  a.h.broker.createQueue('src', { defaultSubscription: false });
  b.h.broker.createQueue('dst');
  const put = await a.h.inject({ method: 'PUT', url: '/v1/queues/src/propagations/to-b', payload: { url: b.url, queue: 'dst' } });
  expect(put.statusCode).toBe(201);
  expect(put.json()).toMatchObject({ name: 'to-b', url: b.url, queue: 'dst', sentSeq: 0, ackedSeq: 0 });
  const N = 2000;
  for (let i = 0; i < N; i += 100) {
    a.h.broker.publish('src', 'p', prepareBatch(Array.from({ length: 100 }, (_, k) => ({ data: `m${i + k}`, attributes: { n: String(i + k) }, key: 'k' })), 1024));
  }
  await until(() => b.h.broker.queueStats('dst').published === N && a.h.broker.propagationInfo('src', 'to-b').sentSeq === N, 'all at the destination');
  // Received there but not consumed: the source keeps every message.
  expect(a.h.broker.queueStats('src').messages).toBe(N);
  expect(a.h.broker.propagationInfo('src', 'to-b')).toMatchObject({ state: 'running', sentSeq: N, ackedSeq: 0 });

  const got: string[] = [];
  while (got.length < N) {
    const msgs = await b.h.broker.pullMessages('dst', 'default', { max: 500, waitMs: 1000 });
    for (const m of msgs) {
      expect(m.attributes).toEqual({ n: m.data.slice(1) });
      expect(m.key).toBe('k');
      got.push(m.data);
    }
    b.h.broker.ack('dst', 'default', msgs.map((m) => m.id));
  }
  expect(got).toEqual(Array.from({ length: N }, (_, i) => `m${i}`));
  await until(() => a.h.broker.queueStats('src').messages === 0, 'source freed after consumption');
  expect(a.h.broker.propagationInfo('src', 'to-b')).toMatchObject({ state: 'running', sentSeq: N, ackedSeq: N, lag: 0 });
  const listed = await a.h.inject({ method: 'GET', url: '/v1/queues/src/propagations' });
  expect(listed.json().propagations).toHaveLength(1);
  expect((await a.h.inject({ method: 'DELETE', url: '/v1/queues/src/propagations/to-b' })).statusCode).toBe(204);
  expect((await a.h.inject({ method: 'GET', url: '/v1/queues/src/propagations/to-b' })).statusCode).toBe(404);
});
