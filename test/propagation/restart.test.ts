import { until } from '../http/helpers';
import { HttpDestination, type Destination } from '../../src/propagation';
import { Drainer, Node, closeNodes, numbered, numbers, propagate, publish, range } from './helpers';

afterEach(closeNodes);

test('propagation - destination restarted mid-stream: what was sent and not consumed is sent again, nothing is lost', async () => {
  const a = await Node.start();
  const b = await Node.start({ persistent: true });
  a.broker.createQueue('src', { defaultSubscription: false });
  b.broker.createQueue('dst');
  await propagate(a, 'src', 'to-b', { url: b.url, queue: 'dst' });
  const info = () => a.broker.propagationInfo('src', 'to-b');
  const N = 4000;
  const drain = new Drainer(b, 'dst', 'default', 50);

  // A publisher that keeps going through the restart: paced by consumption there (at most 600
  // ahead) until the restart begins, then a batch every millisecond through it.
  let published = 0;
  let restarting = false;
  const publishing = (async () => {
    while (published < N) {
      publish(a, 'src', 'p', numbered(published, published + 20));
      published += 20;
      if (restarting) await new Promise((r) => setTimeout(r, 1));
      else await until(() => drain.got.length >= published - 600 || restarting, 'consumption keeps up');
    }
  })();

  await until(() => drain.got.length >= 500, 'some consumed before the restart');
  drain.pause();
  // Sent there and not consumed: lost with the destination's run, so they must come again.
  await until(() => info().sentSeq - drain.got.length >= 300, 'some sent and not consumed');
  restarting = true;
  const oldRun = b.broker.epoch;
  const before = info();
  const consumedBefore = drain.got.length;
  await b.restart();
  // Publishing went on while it restarted.
  expect(published).toBeGreaterThan(before.sentSeq);
  expect(published).toBeLessThan(N);
  expect(b.broker.epoch).not.toBe(oldRun);
  drain.resume();

  await publishing;
  await until(() => info().ackedSeq === N && a.broker.queueStats('src').messages === 0, 'everything consumed after the restart', 20_000);
  await drain.stop();
  const consumedOld = new Set(numbers(drain.got.filter((m) => m.run === oldRun)));
  const consumedNew = new Set(numbers(drain.got.filter((m) => m.run !== oldRun)));
  // Every message consumed somewhere; everything the old run did not consume was consumed by the new one.
  const missing = range(0, N).filter((n) => !consumedOld.has(n) && !consumedNew.has(n));
  expect(missing).toEqual([]);
  // Among them, the messages that were at the destination but not consumed when it stopped.
  const resent = range(before.ackedSeq, before.sentSeq).filter((n) => !consumedOld.has(n));
  expect(consumedOld.size).toBe(consumedBefore);
  expect(resent.length).toBeGreaterThanOrEqual(300);
  expect(resent.filter((n) => !consumedNew.has(n))).toEqual([]);
  // Data intact and in order within each run.
  for (const m of drain.got) expect(m.data).toBe(`m${m.attributes.n}`);
  expect(info()).toMatchObject({ state: 'running', sentSeq: N, ackedSeq: N, lag: 0 });
});

test('propagation - a batch that reaches a restarted destination before the restart is noticed does not hide what it lost', async () => {
  const a = await Node.start();
  const b = await Node.start({ persistent: true });
  a.broker.createQueue('src', { defaultSubscription: false });
  b.broker.createQueue('dst');
  // The far end over HTTP, with the second publish request held back until the destination has
  // restarted: as if that request had been slow on the network.
  let publishes = 0;
  let firstStarted!: () => void;
  let secondHeld!: () => void;
  let release!: () => void;
  const first = new Promise<void>((r) => { firstStarted = r; });
  const held = new Promise<void>((r) => { secondHeld = r; });
  const gate = new Promise<void>((r) => { release = r; });
  a.broker.destinationFor = (c) => {
    const real = new HttpDestination(c.url, c.queue, c.token);
    const dest: Destination = {
      async publish(id, msgs) {
        const n = ++publishes;
        if (n === 1) firstStarted();
        if (n === 2) {
          secondHeld();
          await gate;
          // The pooled keep-alive connection went with the old run: a throwaway request clears it, so
          // this one reaches the new run instead of failing (a failure would be noticed).
          await real.epoch().catch(() => undefined);
        }
        return real.publish(id, msgs);
      },
      state: (id) => real.state(id),
      epoch: () => real.epoch(),
    };
    return dest;
  };
  await propagate(a, 'src', 'to-b', { url: b.url, queue: 'dst' });
  publish(a, 'src', 'p', numbered(0, 100));
  await first;
  // Delivered to the propagation while the first request is out: it goes right after that one's answer.
  publish(a, 'src', 'p', numbered(100, 200));
  await held;
  await b.restart();
  release();

  const drain = new Drainer(b, 'dst');
  await until(() => a.broker.queueStats('src').messages === 0, 'everything consumed', 15_000);
  await drain.stop();
  expect([...new Set(numbers(drain.got))].sort((x, y) => x - y)).toEqual(range(0, 200));
  expect(a.broker.propagationInfo('src', 'to-b')).toMatchObject({ sentSeq: 200, ackedSeq: 200, lag: 0 });
});

test('propagation - source restart: the propagation and serverId survive, messages published after it flow', async () => {
  const a = await Node.start({ persistent: true });
  const b = await Node.start();
  a.broker.createQueue('src', { defaultSubscription: false });
  b.broker.createQueue('dst');
  const config = { url: b.url, queue: 'dst', filter: { attributes: { ok: 'y' } } };
  await propagate(a, 'src', 'to-b', config);
  const serverId = a.broker.serverId;
  const oldEpoch = a.broker.epoch;
  const ok = (from: number, to: number) => numbered(from, to).map((m) => ({ ...m, attributes: { ...m.attributes, ok: 'y' } }));
  const drain = new Drainer(b, 'dst');
  publish(a, 'src', 'p', ok(0, 100));
  await until(() => drain.got.length === 100 && a.broker.queueStats('src').messages === 0, 'first run consumed');

  await a.restart();
  expect(a.broker.epoch).not.toBe(oldEpoch);
  expect(a.broker.serverId).toBe(serverId);
  const listed = (await a.h.inject({ method: 'GET', url: '/v1/queues/src/propagations' })).json();
  expect(listed.propagations).toEqual([expect.objectContaining({ name: 'to-b', url: b.url, queue: 'dst', sentSeq: 0, ackedSeq: 0 })]);
  // The same definition: PUT with the same config is 200.
  expect((await a.h.inject({ method: 'PUT', url: '/v1/queues/src/propagations/to-b', payload: config })).statusCode).toBe(200);

  // The new run's seqs start at 1 again: the destination must not take them for duplicates.
  publish(a, 'src', 'p', ok(100, 150));
  publish(a, 'src', 'p', numbered(150, 160)); // not matching the filter
  await until(() => drain.got.length === 150 && a.broker.queueStats('src').messages === 0, 'second run consumed', 15_000);
  await drain.stop();
  expect(numbers(drain.got)).toEqual(range(0, 150));
  expect(new Set(drain.got.map((m) => m.publisherId))).toEqual(new Set([`${serverId}:src`]));
  expect(b.broker.queueStats('dst')).toMatchObject({ published: 150, messages: 0 });
  expect(a.broker.propagationInfo('src', 'to-b')).toMatchObject({ state: 'running', sentSeq: 50, ackedSeq: 50, lag: 0 });
});

test('propagation - an unreachable destination makes it "failing"; it delivers once the destination is up', async () => {
  const a = await Node.start();
  const b = await Node.start({ persistent: true });
  a.broker.createQueue('src', { defaultSubscription: false });
  b.broker.createQueue('dst');
  await b.stop();
  await propagate(a, 'src', 'to-b', { url: b.url, queue: 'dst' });
  publish(a, 'src', 'p', numbered(0, 300));
  await until(() => a.broker.propagationInfo('src', 'to-b').state === 'failing', 'failing');
  expect(a.broker.propagationInfo('src', 'to-b')).toMatchObject({ sentSeq: 0, ackedSeq: 0, lag: 300, lastError: expect.stringMatching(/fetch failed|ECONNREFUSED/) });
  await b.startAgain();
  const drain = new Drainer(b, 'dst');
  await until(() => drain.got.length === 300 && a.broker.queueStats('src').messages === 0, 'delivered after the destination came up', 15_000);
  expect(numbers(drain.got)).toEqual(range(0, 300));
  expect(a.broker.propagationInfo('src', 'to-b')).toMatchObject({ state: 'running', ackedSeq: 300 });
  expect(a.broker.propagationInfo('src', 'to-b').lastError).toBeUndefined();
});

test('propagation - a missing destination queue makes it "failing" with the reason; it delivers once the queue exists', async () => {
  const a = await Node.start();
  const b = await Node.start();
  a.broker.createQueue('src', { defaultSubscription: false });
  await propagate(a, 'src', 'to-b', { url: b.url, queue: 'later' });
  publish(a, 'src', 'p', numbered(0, 50));
  await until(() => a.broker.propagationInfo('src', 'to-b').state === 'failing', 'failing');
  expect(a.broker.propagationInfo('src', 'to-b').lastError).toMatch(/^404 QUEUE_NOT_FOUND/);
  b.broker.createQueue('later');
  const drain = new Drainer(b, 'later');
  await until(() => drain.got.length === 50 && a.broker.queueStats('src').messages === 0, 'delivered once the queue exists', 15_000);
  expect(numbers(drain.got)).toEqual(range(0, 50));
});
