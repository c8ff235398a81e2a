import WebSocket from 'ws';
import { until } from '../http/helpers';
import { Checker, checksumOf, deliveryOf, expectClean, makePayload, summary, type Report } from '../reliability/checker';
import { Node, closeNodes, propagate } from './helpers';

afterEach(closeNodes);

/** Where the checker expects every message: the default subscription of C's queue. */
const AT_C = 'C/out/default';

/**
 * Message `seq` of `pub`: a checker payload (`pub|seq|…`, CRC-32 known) of varying size, every
 * fifth one sent as base64, with attributes and a key that must come through unchanged.
 */
function message(pub: string, seq: number): { data: string; encoding: 'utf8' | 'base64'; attributes: Record<string, string>; key: string; publisherSeq: number } {
  const payload = makePayload(pub, seq, 40 + (seq % 300));
  const binary = seq % 5 === 0;
  return {
    data: binary ? Buffer.from(payload).toString('base64') : payload,
    encoding: binary ? 'base64' : 'utf8',
    attributes: { pub, seq: String(seq) },
    key: `${pub}-${seq % 4}`,
    publisherSeq: seq,
  };
}

/** A WebSocket consumer of `queue`'s default subscription on `node`, acking each frame. */
async function wsConsumer(node: Node, queue: string, onMessage: (m: any) => void): Promise<WebSocket> {
  const ws = new WebSocket(node.url.replace(/^http/, 'ws') + '/v1/ws', { perMessageDeflate: false });
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  const subscribed = new Promise<void>((resolve) => {
    ws.on('message', (raw) => {
      const f = JSON.parse(raw.toString());
      if (f.op === 'subscribed') resolve();
      if (f.op !== 'messages') return;
      for (const m of f.messages) onMessage(m);
      ws.send(JSON.stringify({ op: 'ack', queue, subscription: 'default', ids: f.messages.map((m: any) => m.id) }));
    });
  });
  ws.send(JSON.stringify({ op: 'subscribe', queue, subscription: 'default', prefetch: 500 }));
  await subscribed;
  return ws;
}

async function chain(opts: { restartMiddle: boolean }): Promise<Report> {
  const a = await Node.start();
  const b = await Node.start({ persistent: true });
  const c = await Node.start();
  a.broker.createQueue('in', { defaultSubscription: false });
  // B only relays: its one subscription is the propagation, so "consumed at B" means consumed at C.
  b.broker.createQueue('relay', { defaultSubscription: false });
  c.broker.createQueue('out');
  await propagate(a, 'in', 'to-b', { url: b.url, queue: 'relay' });
  await propagate(b, 'relay', 'to-c', { url: c.url, queue: 'out' });

  const checker = new Checker();
  let published = 0;
  let distinct = 0;
  const seen = new Set<string>();
  const badMeta: string[] = [];
  const ws = await wsConsumer(c, 'out', (m) => {
    checker.delivered(deliveryOf(AT_C, m, 'ws'));
    const id = `${m.attributes.pub}:${m.attributes.seq}`;
    if (!seen.has(id)) { seen.add(id); distinct++; }
    if (m.key !== `${m.attributes.pub}-${Number(m.attributes.seq) % 4}` || !m.data.startsWith(m.encoding === 'base64' ? '' : `${m.attributes.pub}|${m.attributes.seq}|`)) badMeta.push(id);
  });
  const PUBLISHERS = ['alpha', 'beta', 'gamma'];
  const PER = 1500;
  const BATCH = 50;
  let stalled = false;
  let stop = false;
  const ackedAtA = () => a.broker.propagationInfo('in', 'to-b').ackedSeq;
  // Each publisher goes over REST, in batches, at most 1500 messages ahead of what A has freed
  // (consumed at C), so the stream is still flowing when B restarts.
  const publishing = Promise.all(PUBLISHERS.map(async (pub) => {
    for (let s = 1; s <= PER && !stop; s += BATCH) {
      const msgs = Array.from({ length: BATCH }, (_, i) => message(pub, s + i));
      let res = await a.h.inject({ method: 'POST', url: '/v1/queues/in/messages', payload: { publisherId: pub, messages: msgs } });
      // Flow control at A (e.g. its queue spilling while B is down): retry when told, as publishers do.
      while (res.statusCode === 429) {
        await new Promise((r) => setTimeout(r, res.json().error.retryAfterMs));
        res = await a.h.inject({ method: 'POST', url: '/v1/queues/in/messages', payload: { publisherId: pub, messages: msgs } });
      }
      if (res.statusCode !== 201) throw new Error(`publish: ${res.statusCode} ${res.body}`);
      for (const m of msgs) {
        const bytes = Buffer.from(m.data, m.encoding === 'base64' ? 'base64' : 'utf8');
        checker.published({ publisher: pub, publisherSeq: m.publisherSeq, checksum: checksumOf(bytes), subscriptions: [AT_C] });
      }
      published += msgs.length;
      await until(() => ackedAtA() >= published - 1500 || stalled || stop, 'consumption at C keeps up', 15_000);
    }
  }));

  try {
    if (opts.restartMiddle) {
      // Mid-stream: C has consumed some (and A has freed some), B holds some not yet consumed at C,
      // A has more. B's new run numbers its messages from 1 again, and they are not A's numbers.
      await until(() => distinct >= 1000 && ackedAtA() >= 300 && b.broker.queueStats('relay').messages > 0,
        'flowing through B');
      stalled = true;
      const epoch = b.broker.epoch;
      await b.restart();
      expect(b.broker.epoch).not.toBe(epoch);
      expect(b.broker.listPropagations('relay').map((p) => p.name)).toEqual(['to-c']);
      stalled = false;
    }
    await publishing;
    const total = PUBLISHERS.length * PER;
    await until(() => distinct === total && a.broker.queueStats('in').messages === 0 && b.broker.queueStats('relay').messages === 0,
      'everything consumed at C and freed at A and B', 20_000).catch((err: Error) => {
      throw new Error(`${err.message}: ${summary(checker.report())}; ${a.broker.queueStats('in').messages} kept at A, ${b.broker.queueStats('relay').messages} at B`);
    });
    const report = checker.report();
    expect(report).toMatchObject({ published: total, expected: total, delivered: total });
    // Nothing lost, corrupt or invented; without a restart, each publisher's messages come in order too.
    expectClean(report, { ordered: !opts.restartMiddle });
    expect(badMeta).toEqual([]);
    expect(a.broker.propagationInfo('in', 'to-b')).toMatchObject({ state: 'running', lag: 0 });
    expect(b.broker.propagationInfo('relay', 'to-c')).toMatchObject({ state: 'running', lag: 0 });
    return report;
  } finally {
    // A failed run must not leave the publishers waiting after the test.
    stop = true;
    ws.close();
    await publishing.catch(() => undefined);
  }
}

test('propagation - chain A → B → C: every (publisher, seq) published at A is consumed at C once, intact', async () => {
  const report = await chain({ restartMiddle: false });
  // No restart, no failure: exactly once.
  expect(report).toMatchObject({ duplicated: 0, redeliveries: 0, reordered: 0 });
});

test('propagation - chain A → B → C with B restarted mid-stream: nothing lost, nothing corrupted', async () => {
  const report = await chain({ restartMiddle: true });
  // What B had sent to C and C had not yet consumed comes again from A: duplicates, never gaps.
  expect(report.lost).toBe(0);
});
