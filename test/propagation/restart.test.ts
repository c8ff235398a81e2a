import { Client, until } from '../http/helpers';
import { RemoteQueue, type Destination } from '../../src/propagation';
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

test('propagation - a link lost with frames in flight: the destination\'s lastPublisherSeq tells which arrived; nothing lost, nothing twice', async () => {
  const a = await Node.start();
  const b = await Node.start();
  a.broker.createQueue('src', { defaultSubscription: false });
  b.broker.createQueue('dst');
  // The far end as it is, except that the first link is cut right after its third frame went
  // out: the destination stores what reached it, and its answers are never read.
  let links = 0;
  let sent = 0;
  a.broker.destinationFor = (c) => {
    const real = new RemoteQueue(c.url, c.queue, c.token);
    const dest: Destination = {
      connect(events) {
        const n = ++links;
        let cut = false;
        const link = real.connect({
          opened: () => events.opened(),
          answer: (f) => { if (!cut) events.answer(f); },
          closed: (reason) => { if (!cut) events.closed(reason); },
        });
        return {
          send(frame) {
            link.send(frame);
            if (n === 1 && ++sent === 3) {
              cut = true;
              // After the bytes are written, as a network failure would: the frames arrive, the answers do not.
              setTimeout(() => { link.close(); events.closed('cut by the test'); }, 50);
            }
          },
          get buffered() { return link.buffered; },
          close: () => link.close(),
        };
      },
      state: (id) => real.state(id),
      epoch: () => real.epoch(),
    };
    return dest;
  };
  await propagate(a, 'src', 'to-b', { url: b.url, queue: 'dst' });
  await until(() => a.broker.propagationInfo('src', 'to-b').state === 'running', 'connected');
  const N = 6000;
  for (let i = 0; i < N; i += 200) publish(a, 'src', 'p', numbered(i, i + 200));
  await until(() => links === 2 && b.broker.queueStats('dst').published === N, 'everything at the destination after the reconnect', 15_000);
  const drain = new Drainer(b, 'dst');
  await until(() => a.broker.queueStats('src').messages === 0, 'consumed there, freed here', 15_000);
  await drain.stop();
  expect(sent).toBeGreaterThanOrEqual(3);
  // Each message stored once: frames that arrived before the cut were not sent again.
  expect(numbers(drain.got)).toEqual(range(0, N));
  expect(b.broker.queueStats('dst')).toMatchObject({ published: N, messages: 0 });
  expect(a.broker.propagationInfo('src', 'to-b')).toMatchObject({ state: 'running', sentSeq: N, ackedSeq: N, lag: 0 });
});

test('propagation - a chained publish stores only right after the frame it names; the answer tells what is consumed', async () => {
  const b = await Node.start();
  b.broker.createQueue('dst');
  const ws = await Client.open(`${b.url}/v1/ws`);
  const request = (f: Record<string, unknown>) => {
    ws.send(f);
    return ws.next((a) => a.ref === f.ref);
  };
  const frame = (ref: number, after: number, from: number, to: number) => ({
    op: 'publish', ref, queue: 'dst', publisherId: 'chain', afterPublisherSeq: after,
    messages: range(from, to).map((n) => ({ data: `m${n}`, publisherSeq: n })),
  });
  expect(await request(frame(1, 0, 1, 4))).toMatchObject({ op: 'published', ref: 1, duplicates: 0, epoch: b.broker.epoch, lastPublisherSeq: 3, safePublisherSeq: 0 });
  // A frame that does not follow the last one stores nothing, whatever its numbers.
  for (const after of [0, 2, 10]) {
    expect(await request(frame(2, after, 4, 6))).toMatchObject({ op: 'error', ref: 2, code: 'INVALID_ARGUMENT', field: 'afterPublisherSeq', lastPublisherSeq: 3, epoch: b.broker.epoch });
  }
  expect(b.broker.queueStats('dst').published).toBe(3);
  const msgs = await b.broker.pullMessages('dst', 'default', { max: 10 });
  b.broker.ack('dst', 'default', msgs.map((m) => m.id));
  expect(await request(frame(3, 3, 4, 6))).toMatchObject({ op: 'published', ref: 3, lastPublisherSeq: 5, safePublisherSeq: 3 });
  expect(await request({ ...frame(4, 5, 6, 7), afterPublisherSeq: -1 })).toMatchObject({ op: 'error', ref: 4, code: 'INVALID_ARGUMENT', field: 'afterPublisherSeq' });
  // Without afterPublisherSeq the answer is API.md's, with nothing added.
  expect(Object.keys(await request({ op: 'publish', ref: 5, queue: 'dst', messages: [{ data: 'x' }] })).sort()).toEqual(['duplicates', 'ids', 'op', 'ref', 'seqs']);
  expect(b.broker.queueStats('dst').published).toBe(6);
  ws.close();
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
