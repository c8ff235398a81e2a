import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { until } from '../http/helpers';
import { prepareBatch } from '../../src/broker';
import { RemoteQueue, type Destination } from '../../src/propagation';
import { Drainer, Node, closeNodes, numbered, numbers, propagate, publish, range } from './helpers';

afterEach(closeNodes);

test('propagation - every message reaches the destination and is freed at the source only once consumed there', async () => {
  const a = await Node.start();
  const b = await Node.start();
  a.broker.createQueue('src', { defaultSubscription: false });
  b.broker.createQueue('dst');
  const put = await a.h.inject({ method: 'PUT', url: '/v1/queues/src/propagations/to-b', payload: { url: b.url, queue: 'dst' } });
  expect(put.statusCode).toBe(201);
  expect(put.json()).toMatchObject({ name: 'to-b', url: b.url, queue: 'dst', sentSeq: 0, ackedSeq: 0 });
  const N = 2000;
  for (let i = 0; i < N; i += 100) {
    a.broker.publish('src', 'p', prepareBatch(Array.from({ length: 100 }, (_, k) => ({ data: `m${i + k}`, attributes: { n: String(i + k) }, key: 'k' })), 1024));
  }
  await until(() => b.broker.queueStats('dst').published === N && a.broker.propagationInfo('src', 'to-b').sentSeq === N, 'all at the destination');
  // Received there but not consumed: the source keeps every message.
  expect(a.broker.queueStats('src').messages).toBe(N);
  expect(a.broker.propagationInfo('src', 'to-b')).toMatchObject({ state: 'running', sentSeq: N, ackedSeq: 0, lag: N });

  const got: string[] = [];
  while (got.length < N) {
    const msgs = await b.broker.pullMessages('dst', 'default', { max: 500, waitMs: 1000 });
    for (const m of msgs) {
      expect(m.attributes).toEqual({ n: m.data.slice(1) });
      expect(m.key).toBe('k');
      got.push(m.data);
    }
    b.broker.ack('dst', 'default', msgs.map((m) => m.id));
  }
  expect(got).toEqual(Array.from({ length: N }, (_, i) => `m${i}`));
  await until(() => a.broker.queueStats('src').messages === 0, 'source freed after consumption');
  expect(a.broker.propagationInfo('src', 'to-b')).toMatchObject({ state: 'running', sentSeq: N, ackedSeq: N, lag: 0 });
  const listed = await a.h.inject({ method: 'GET', url: '/v1/queues/src/propagations' });
  expect(listed.json().propagations).toHaveLength(1);
  expect((await a.h.inject({ method: 'DELETE', url: '/v1/queues/src/propagations/to-b' })).statusCode).toBe(204);
  expect((await a.h.inject({ method: 'GET', url: '/v1/queues/src/propagations/to-b' })).statusCode).toBe(404);
  expect(a.broker.queue('src').subscription('propagation:to-b')).toBeUndefined();
});

test('propagation - data, encoding (incl. binary base64), attributes and key arrive exactly as the source delivers them', async () => {
  const a = await Node.start();
  const b = await Node.start();
  a.broker.createQueue('src', { defaultSubscription: false });
  // A subscription at the source: what a consumer there would get is the reference.
  a.broker.createSubscription('src', 'mirror');
  b.broker.createQueue('dst');
  await propagate(a, 'src', 'to-b', { url: b.url, queue: 'dst' });

  const allBytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  const invalidUtf8 = Buffer.from([0xff, 0xfe, 0x00, 0xc3, 0x28, 0xed, 0xa0, 0x80]);
  const sent: { data: string; encoding?: string; attributes?: Record<string, string>; key?: string }[] = [
    { data: 'plain', attributes: { a: '1' } },
    { data: 'ünïcødé ✓ 😀 — 中文', key: 'kü 😀' },
    { data: '"quotes" \\ back\\slash \n newline \t tab \u0001 control \u2028', attributes: { 'we"ird': 'v\\al\nue', ['__proto__']: 'p', 'constructor': 'c' } },
    { data: allBytes.toString('base64'), encoding: 'base64', attributes: { type: 'bin' }, key: 'b' },
    { data: invalidUtf8.toString('base64'), encoding: 'base64' },
    { data: Buffer.from('valid utf-8 sent as base64').toString('base64'), encoding: 'base64' },
    { data: '' },
    { data: 'x'.repeat(100_000), attributes: { big: 'yes' } },
  ];
  const post = await a.h.inject({ method: 'POST', url: '/v1/queues/src/messages', payload: { publisherId: 'pub', messages: sent } });
  expect(post.statusCode).toBe(201);
  // A raw body: binary bytes as sent.
  const raw = await a.h.inject({ method: 'POST', url: '/v1/queues/src/messages', headers: { 'content-type': 'application/octet-stream', 'x-publisher-id': 'pub' }, payload: invalidUtf8 });
  expect(raw.statusCode).toBe(201);
  const total = sent.length + 1;

  const pull = async (node: Node, url: string): Promise<any[]> => {
    const res = await node.h.inject({ method: 'POST', url, payload: { max: 100, waitMs: 5000 } });
    expect(res.statusCode).toBe(200);
    return res.json().messages;
  };
  const atB: any[] = [];
  while (atB.length < total) atB.push(...await pull(b, '/v1/queues/dst/subscriptions/default/pull'));
  const atA = await pull(a, '/v1/queues/src/subscriptions/mirror/pull');
  expect(atA).toHaveLength(total);
  expect(atB).toHaveLength(total);
  const shape = (m: any) => ({ data: m.data, encoding: m.encoding, attributes: m.attributes, key: m.key });
  expect(atB.map(shape)).toEqual(atA.map(shape));
  // And against what was published.
  expect(atB[0]).toMatchObject({ data: 'plain', encoding: 'utf8', attributes: { a: '1' } });
  expect(atB[0].key).toBeUndefined();
  expect(atB[1]).toMatchObject({ data: sent[1]!.data, encoding: 'utf8', key: 'kü 😀', attributes: {} });
  expect(atB[2].data).toBe(sent[2]!.data);
  expect(atB[2].attributes).toEqual(JSON.parse('{"we\\"ird":"v\\\\al\\nue","__proto__":"p","constructor":"c"}'));
  expect(Object.keys(atB[2].attributes).sort()).toEqual(['__proto__', 'constructor', 'we"ird']);
  expect(atB[3]).toMatchObject({ encoding: 'base64', attributes: { type: 'bin' }, key: 'b' });
  expect(Buffer.from(atB[3].data, 'base64').equals(allBytes)).toBe(true);
  expect(atB[4].encoding).toBe('base64');
  expect(Buffer.from(atB[4].data, 'base64').equals(invalidUtf8)).toBe(true);
  expect(Buffer.from(atB[5].data, atB[5].encoding).toString()).toBe('valid utf-8 sent as base64');
  expect(atB[6]).toMatchObject({ data: '', encoding: 'utf8' });
  expect(atB[7].data).toBe('x'.repeat(100_000));
  expect(atB[8].encoding).toBe('base64');
  expect(Buffer.from(atB[8].data, 'base64').equals(invalidUtf8)).toBe(true);
  // Published there by the propagation, as `{serverId}:{queue}` with publisherSeq = the source seq.
  for (let i = 0; i < total; i++) {
    expect(atB[i].publisherId).toBe(`${a.broker.serverId}:src`);
    expect(atB[i].publisherSeq).toBe(atA[i].seq);
  }
});

test('propagation - the source frees a message only once every subscription at the destination has consumed it', async () => {
  const a = await Node.start();
  const b = await Node.start();
  a.broker.createQueue('src', { defaultSubscription: false });
  b.broker.createQueue('dst');
  b.broker.createSubscription('dst', 'other');
  await propagate(a, 'src', 'to-b', { url: b.url, queue: 'dst' });
  const N = 1000;
  publish(a, 'src', 'p', numbered(0, N));
  await until(() => a.broker.propagationInfo('src', 'to-b').sentSeq === N, 'all sent');

  // Consumed by one subscription there: not yet consumed at the destination.
  const first = await b.broker.pullMessages('dst', 'default', { max: 1000 });
  expect(first).toHaveLength(N);
  b.broker.ack('dst', 'default', first.map((m) => m.id));
  expect(a.broker.propagationInfo('src', 'to-b').ackedSeq).toBe(0);
  expect(a.broker.queueStats('src').messages).toBe(N);

  // The second subscription consumes the first 300: exactly those are freed at the source.
  const part = await b.broker.pullMessages('dst', 'other', { max: 300 });
  b.broker.ack('dst', 'other', part.map((m) => m.id));
  // Exactly 300: the poll that saw them also saw 'default' done with all N, which freed nothing more.
  await until(() => a.broker.propagationInfo('src', 'to-b').ackedSeq === 300, 'first 300 acked at the source');
  expect(a.broker.queueStats('src').messages).toBe(N - 300);
  expect(a.broker.propagationInfo('src', 'to-b')).toMatchObject({ sentSeq: N, ackedSeq: 300, lag: N - 300 });
  // Pulled but not acked there: in flight is not consumed.
  const rest = await b.broker.pullMessages('dst', 'other', { max: 1000 });
  expect(rest).toHaveLength(N - 300);
  const publisher = await b.h.inject({ method: 'GET', url: `/v1/queues/dst/publishers/${encodeURIComponent(`${a.broker.serverId}:src`)}` });
  expect(publisher.json()).toMatchObject({ lastPublisherSeq: N, safePublisherSeq: 300 });
  expect(a.broker.queueStats('src').messages).toBe(N - 300);
  b.broker.ack('dst', 'other', rest.map((m) => m.id));
  await until(() => a.broker.queueStats('src').messages === 0, 'all freed');
  expect(a.broker.propagationInfo('src', 'to-b')).toMatchObject({ sentSeq: N, ackedSeq: N, lag: 0, state: 'running' });
});

test('propagation - a restricted destination shows state "restricted" and resumes once a consumer drains it', async () => {
  const a = await Node.start();
  const b = await Node.start();
  a.broker.createQueue('src', { defaultSubscription: false });
  // 2 KiB of unconsumed messages restricts the propagation's publisher there; nobody consumes yet.
  b.broker.createQueue('dst', { publisherLimitBytes: 2048 });
  await propagate(a, 'src', 'to-b', { url: b.url, queue: 'dst' });
  const body = 'y'.repeat(100);
  const msg = (i: number) => ({ data: body, attributes: { n: String(i) } });
  // A first burst goes through whole (a batch is all or nothing) and puts the publisher over its limit.
  publish(a, 'src', 'p', range(0, 30).map(msg));
  await until(() => a.broker.propagationInfo('src', 'to-b').sentSeq === 30, 'first burst sent');
  // In deliveries of their own, so several frames are in flight when the 429 comes: the ones
  // behind the refused frame must not be stored ahead of it.
  for (let i = 30; i < 200; i += 10) {
    publish(a, 'src', 'p', range(i, i + 10).map(msg));
    await new Promise((r) => setImmediate(r));
  }
  await until(() => a.broker.propagationInfo('src', 'to-b').state === 'restricted', 'restricted');
  const info = a.broker.propagationInfo('src', 'to-b');
  expect(info.sentSeq).toBe(30);
  expect(info.lastError).toMatch(/^429 PUBLISHER_RESTRICTED/);
  expect(a.broker.queueStats('src').messages).toBe(200);
  const restricted = await a.h.inject({ method: 'GET', url: '/v1/queues/src/propagations/to-b' });
  expect(restricted.json()).toMatchObject({ state: 'restricted', sentSeq: 30, ackedSeq: 0, lag: 200 });

  const drain = new Drainer(b, 'dst', 'default', 10);
  await until(() => drain.got.length === 200 && a.broker.queueStats('src').messages === 0, 'drained through the restriction', 20_000);
  await drain.stop();
  expect(numbers(drain.got)).toEqual(range(0, 200));
  expect(a.broker.propagationInfo('src', 'to-b')).toMatchObject({ state: 'running', sentSeq: 200, ackedSeq: 200, lag: 0 });
  expect(a.broker.propagationInfo('src', 'to-b').lastError).toBeUndefined();
  expect(b.broker.queue('dst').ledger.restrictions).toBeGreaterThan(0);
});

test('propagation - frames in flight behind a refused one are not stored ahead of it, even when the restriction lifts in between', async () => {
  const a = await Node.start();
  const b = await Node.start();
  a.broker.createQueue('src', { defaultSubscription: false });
  b.broker.createQueue('dst', { publisherLimitBytes: 2048 });
  // The far end as it is, except that once armed, the frames behind the next one wait until
  // its answer is a 429 and the destination has been drained: they reach a destination that
  // takes that publisher again, as they would if the network had held them back.
  let armed = false;
  let holding = false;
  const held: Buffer[] = [];
  a.broker.destinationFor = (c) => {
    const real = new RemoteQueue(c.url, c.queue, c.token);
    return {
      connect(events) {
        const link = real.connect({
          opened: () => events.opened(),
          answer: (f) => {
            if (holding && f.code === 'PUBLISHER_RESTRICTED') {
              holding = armed = false;
              void (async () => {
                const msgs = await b.broker.pullMessages('dst', 'default', { max: 1000 });
                b.broker.ack('dst', 'default', msgs.map((m) => m.id));
                for (const frame of held.splice(0)) link.send(frame);
              })();
            }
            events.answer(f);
          },
          closed: (reason) => events.closed(reason),
        });
        return {
          send(frame) {
            if (holding) held.push(frame);
            else {
              link.send(frame);
              holding = armed;
            }
          },
          get buffered() { return link.buffered; },
          close: () => link.close(),
        };
      },
      state: (id) => real.state(id),
      epoch: () => real.epoch(),
    } satisfies Destination;
  };
  await propagate(a, 'src', 'to-b', { url: b.url, queue: 'dst' });
  const msg = (i: number) => ({ data: 'y'.repeat(100), attributes: { n: String(i) } });
  publish(a, 'src', 'p', range(0, 30).map(msg));
  await until(() => a.broker.propagationInfo('src', 'to-b').sentSeq === 30, 'first burst sent');
  armed = true;
  for (let i = 30; i < 200; i += 10) {
    publish(a, 'src', 'p', range(i, i + 10).map(msg));
    await new Promise((r) => setImmediate(r));
  }
  await until(() => !armed && held.length === 0, 'the 429 came and the held frames went');
  const drain = new Drainer(b, 'dst', 'default', 10);
  await until(() => a.broker.queueStats('src').messages === 0, 'everything consumed there', 20_000);
  await drain.stop();
  // The first 30 were consumed by the test's drain above; the rest arrive once each, in order.
  expect(numbers(drain.got)).toEqual(range(30, 200));
  expect(a.broker.propagationInfo('src', 'to-b')).toMatchObject({ state: 'running', sentSeq: 200, ackedSeq: 200, lag: 0 });
});

test('propagation - to a server with auth: a token whose publishAs covers the propagation\'s publisher id delivers; others fail with the reason', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'spillway-prop-auth-'));
  try {
    const authFile = join(dir, 'auth.json');
    writeFileSync(authFile, JSON.stringify({
      tokens: [
        { token: 'from-a', name: 'server-a', publish: ['dst'], publishAs: ['*:src'] },
        { token: 'plain', name: 'plain', publish: ['dst'] },
      ],
    }));
    const a = await Node.start();
    const b = await Node.start({ authFile });
    a.broker.createQueue('src', { defaultSubscription: false });
    b.broker.createQueue('dst');
    await propagate(a, 'src', 'good', { url: b.url, queue: 'dst', token: 'from-a' });
    await propagate(a, 'src', 'no-publish-as', { url: b.url, queue: 'dst', token: 'plain' });
    await propagate(a, 'src', 'unknown', { url: b.url, queue: 'dst', token: 'nope' });
    publish(a, 'src', 'p', numbered(0, 50));
    const drain = new Drainer(b, 'dst');
    await until(() => drain.got.length === 50 && a.broker.propagationInfo('src', 'good').ackedSeq === 50, 'delivered with the right token');
    await until(() => a.broker.propagationInfo('src', 'no-publish-as').state === 'failing' && a.broker.propagationInfo('src', 'unknown').state === 'failing', 'the others failing');
    expect(numbers(drain.got)).toEqual(range(0, 50));
    expect(new Set(drain.got.map((m) => m.publisherId))).toEqual(new Set([`${a.broker.serverId}:src`]));
    expect(a.broker.propagationInfo('src', 'no-publish-as').lastError).toMatch(/^403 FORBIDDEN: token plain may not publish as/);
    expect(a.broker.propagationInfo('src', 'unknown').lastError).toMatch(/401.*UNAUTHENTICATED/);
    // What the failing ones hold stays at the source.
    expect(a.broker.queueStats('src').messages).toBe(50);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('propagation - a filter forwards only the matching messages; the rest are not kept for it', async () => {
  const a = await Node.start();
  const b = await Node.start();
  a.broker.createQueue('src', { defaultSubscription: false });
  b.broker.createQueue('dst');
  await propagate(a, 'src', 'eu', { url: b.url, queue: 'dst', filter: { attributes: { region: 'eu', kind: 'order' } } });
  const msgs = range(0, 300).map((i) => ({
    data: `m${i}`,
    attributes: { n: String(i), region: i % 3 === 0 ? 'eu' : 'us', kind: i % 5 === 0 ? 'refund' : 'order' },
  }));
  publish(a, 'src', 'p', msgs);
  const want = range(0, 300).filter((i) => i % 3 === 0 && i % 5 !== 0);
  // Not eligible for any subscription at the source: dropped there at publish.
  expect(a.broker.queueStats('src')).toMatchObject({ messages: want.length, dropped: 300 - want.length });
  const drain = new Drainer(b, 'dst');
  await until(() => drain.got.length === want.length && a.broker.queueStats('src').messages === 0, 'filtered messages consumed');
  await drain.stop();
  expect(numbers(drain.got)).toEqual(want);
  expect(drain.got.every((m) => m.attributes.region === 'eu' && m.attributes.kind === 'order')).toBe(true);
  expect(b.broker.queueStats('dst').published).toBe(want.length);
  const info = (await a.h.inject({ method: 'GET', url: '/v1/queues/src/propagations/eu' })).json();
  // Seqs start at 1: the last eligible message (297) is seq 298.
  expect(info).toMatchObject({ ackedSeq: 298, lag: 0 });
});

test('propagation - fan-out: two propagations of one queue each deliver everything; the source waits for both', async () => {
  const a = await Node.start();
  const b = await Node.start();
  const c = await Node.start();
  a.broker.createQueue('src', { defaultSubscription: false });
  b.broker.createQueue('in-b');
  c.broker.createQueue('in-c');
  await propagate(a, 'src', 'to-b', { url: b.url, queue: 'in-b' });
  await propagate(a, 'src', 'to-c', { url: c.url, queue: 'in-c' });
  expect((await a.h.inject({ method: 'GET', url: '/v1/queues/src/propagations' })).json().propagations.map((p: any) => p.name).sort()).toEqual(['to-b', 'to-c']);
  const N = 1500;
  for (let i = 0; i < N; i += 250) publish(a, 'src', 'p', numbered(i, i + 250));

  const atB = new Drainer(b, 'in-b');
  await until(() => atB.got.length === N && a.broker.propagationInfo('src', 'to-b').ackedSeq === N, 'consumed at B');
  // Consumed at B only: C's propagation still holds every message at the source.
  expect(a.broker.queueStats('src').messages).toBe(N);
  expect(a.broker.propagationInfo('src', 'to-c')).toMatchObject({ ackedSeq: 0, lag: N });
  const atC = new Drainer(c, 'in-c');
  await until(() => atC.got.length === N && a.broker.queueStats('src').messages === 0, 'consumed at C');
  await atB.stop();
  await atC.stop();
  expect(numbers(atB.got)).toEqual(range(0, N));
  expect(numbers(atC.got)).toEqual(range(0, N));
  expect(atC.got.map((m) => m.data)).toEqual(range(0, N).map((i) => `m${i}`));
  // Deleting one leaves the other running.
  expect((await a.h.inject({ method: 'DELETE', url: '/v1/queues/src/propagations/to-b' })).statusCode).toBe(204);
  expect(a.broker.listPropagations('src').map((p) => p.name)).toEqual(['to-c']);
});

test('propagation - large messages go out in requests the destination accepts (under its body limit)', async () => {
  const a = await Node.start();
  const b = await Node.start();
  a.broker.createQueue('src', { defaultSubscription: false, memoryBytes: 32 * 1024 * 1024 });
  b.broker.createQueue('dst', { memoryBytes: 32 * 1024 * 1024 });
  await propagate(a, 'src', 'to-b', { url: b.url, queue: 'dst' });
  // 40 × 400 KiB binary: ~21 MiB of base64, more than the destination's 16 MiB body limit in one request
  // (500 messages a request would be 413 BODY_TOO_LARGE every time).
  const payload = (i: number) => Buffer.alloc(400 * 1024, i).toString('base64');
  for (let i = 0; i < 40; i += 10) publish(a, 'src', 'p', range(i, i + 10).map((k) => ({ data: payload(k), encoding: 'base64' as const, attributes: { n: String(k) } })));
  const drain = new Drainer(b, 'dst', 'default', 5);
  await until(() => drain.got.length === 40 && a.broker.queueStats('src').messages === 0, 'large messages consumed', 20_000);
  await drain.stop();
  expect(numbers(drain.got)).toEqual(range(0, 40));
  for (const m of drain.got) expect(m.data).toBe(payload(Number(m.attributes.n)));
  expect(a.broker.propagationInfo('src', 'to-b').lastError).toBeUndefined();
});

describe('propagation routes', () => {
  const put = (n: Node, url: string, payload: unknown) => n.h.inject({ method: 'PUT', url, payload: payload as object });

  test('propagation - validation: bad url, bad queue, bad name, unknown field, bad filter → 400 INVALID_ARGUMENT', async () => {
    const a = await Node.start();
    a.broker.createQueue('src');
    const url = '/v1/queues/src/propagations/p';
    const cases: [unknown, string | undefined][] = [
      [{ url: 'not a url', queue: 'dst' }, 'url'],
      [{ url: 'ftp://127.0.0.1:1', queue: 'dst' }, 'url'],
      [{ url: 42, queue: 'dst' }, 'url'],
      [{ queue: 'dst' }, 'url'],
      [{ url: 'http://127.0.0.1:1', queue: 'bad name!' }, 'queue'],
      [{ url: 'http://127.0.0.1:1', queue: '' }, 'queue'],
      [{ url: 'http://127.0.0.1:1' }, 'queue'],
      [{ url: 'http://127.0.0.1:1', queue: 'dst', colour: 'blue' }, 'colour'],
      [{ url: 'http://127.0.0.1:1', queue: 'dst', token: '' }, 'token'],
      [{ url: 'http://127.0.0.1:1', queue: 'dst', filter: { region: 'eu' } }, 'filter'],
      [{ url: 'http://127.0.0.1:1', queue: 'dst', filter: { attributes: { region: 1 } } }, undefined],
      [[], undefined],
    ];
    for (const [body, field] of cases) {
      const res = await put(a, url, body);
      expect({ body, status: res.statusCode, code: res.json().error.code }).toEqual({ body, status: 400, code: 'INVALID_ARGUMENT' });
      if (field !== undefined) expect({ body, field: res.json().error.field }).toEqual({ body, field });
    }
    const badName = await put(a, '/v1/queues/src/propagations/bad:name', { url: 'http://127.0.0.1:1', queue: 'dst' });
    expect(badName.statusCode).toBe(400);
    expect(badName.json().error.code).toBe('INVALID_ARGUMENT');
    expect(a.broker.listPropagations('src')).toEqual([]);
    expect(a.broker.queue('src').subscriptions.map((s) => s.name)).toEqual(['default']);
  });

  test('propagation - 200 for the same config, 409 for a different one, 404 for unknown ones', async () => {
    const a = await Node.start();
    a.broker.createQueue('src');
    const cfg = { url: 'http://127.0.0.1:9/', queue: 'dst', filter: { attributes: { a: '1' } } };
    const created = await put(a, '/v1/queues/src/propagations/p', cfg);
    expect(created.statusCode).toBe(201);
    // The trailing slash is not part of the url kept.
    expect(created.json()).toMatchObject({ name: 'p', url: 'http://127.0.0.1:9', queue: 'dst', sentSeq: 0, ackedSeq: 0, lag: 0 });
    expect(['connecting', 'failing']).toContain(created.json().state);
    expect((await put(a, '/v1/queues/src/propagations/p', cfg)).statusCode).toBe(200);
    for (const other of [{ ...cfg, queue: 'elsewhere' }, { ...cfg, url: 'http://127.0.0.1:10' }, { url: cfg.url, queue: 'dst' }, { ...cfg, token: 't' }]) {
      const res = await put(a, '/v1/queues/src/propagations/p', other);
      expect(res.statusCode).toBe(409);
      expect(res.json().error.code).toBe('ALREADY_EXISTS');
    }
    for (const [method, url, code] of [
      ['GET', '/v1/queues/src/propagations/nope', 'NOT_FOUND'],
      ['DELETE', '/v1/queues/src/propagations/nope', 'NOT_FOUND'],
      ['GET', '/v1/queues/missing/propagations/p', 'QUEUE_NOT_FOUND'],
      ['GET', '/v1/queues/missing/propagations', 'QUEUE_NOT_FOUND'],
      ['PUT', '/v1/queues/missing/propagations/p', 'QUEUE_NOT_FOUND'],
    ] as const) {
      const res = await a.h.inject({ method, url, ...(method === 'PUT' ? { payload: cfg } : {}) });
      expect({ url, status: res.statusCode, code: res.json().error.code }).toEqual({ url, status: 404, code });
    }
    expect((await a.h.inject({ method: 'DELETE', url: '/v1/queues/src/propagations/p' })).statusCode).toBe(204);
    expect((await a.h.inject({ method: 'DELETE', url: '/v1/queues/src/propagations/p' })).statusCode).toBe(404);
    // Gone with its queue too.
    expect((await put(a, '/v1/queues/src/propagations/q', cfg)).statusCode).toBe(201);
    a.broker.deleteQueue('src');
    a.broker.createQueue('src');
    expect((await a.h.inject({ method: 'GET', url: '/v1/queues/src/propagations' })).json()).toEqual({ propagations: [] });
  });
});
