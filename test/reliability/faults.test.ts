import { Checker, expectClean, summary } from './checker';
import { ChildSubscriber, RepeatablePublisher, RestPublisher, healthy } from './clients';
import { note, recordFigures, scale, sleep, waitFor } from './config';
import { RssSampler, call, startServer, stopAll, type ServerProcess } from './server';

/**
 * Faults around a real `spillway serve` process: subscribers killed or frozen mid-stream,
 * and the server itself killed and restarted under a repeatable publisher. Each ends by
 * draining and running the accounting checker: nothing lost, nothing corrupt.
 */

const children: ChildSubscriber[] = [];
afterEach(async () => {
  for (const c of children.splice(0)) await c.stop();
});
afterAll(stopAll);

function subscriber(s: ServerProcess, checker: Checker, opts: Omit<ConstructorParameters<typeof ChildSubscriber>[0], 'url'>): ChildSubscriber {
  const c = new ChildSubscriber({ url: s.url, ...opts }, checker);
  children.push(c);
  return c;
}

describe('reliability faults', () => {
  test('faults - a subscriber process killed with SIGKILL mid-stream: a new one gets its unacked messages again (deliveryAttempt > 1)', async () => {
    const s = await startServer({ memory: '64MiB' });
    const rss = new RssSampler(s.pid);
    expect((await call(s.url, 'PUT', '/v1/queues/kill')).status).toBe(201);
    const checker = new Checker();
    const N = scale(6000, 60_000);
    const kills = scale(2, 6);
    const pub = new RestPublisher({ url: s.url, queue: 'kill', id: 'p-kill', checker, subscriptions: ['default'], size: 300, batch: 50 });
    // Acks go out 30 ms after a message is logged, so a kill always leaves some unacked.
    const opts = { queue: 'kill', subscription: 'default', prefetch: 500, ackDelayMs: 30 };
    let current = subscriber(s, checker, { ...opts, label: 'sub-0' });
    await current.waitSubscribed();
    const publishing = pub.run(60_000, scale(3000, 6000));
    const redeliveredTo: number[] = [];
    for (let k = 1; k <= kills; k++) {
      const target = Math.floor((N * k) / (kills + 1));
      await waitFor(() => checker.deliveries >= target, `deliveries to reach ${target}`, 60_000);
      current.kill('SIGKILL');
      await current.exited;
      current = subscriber(s, checker, { ...opts, label: `sub-${k}` });
      await current.waitSubscribed();
      const next = current;
      await waitFor(() => next.received > 0, `sub-${k} to receive`, 10_000);
      redeliveredTo.push(next.redelivered);
    }
    await waitFor(() => pub.accepted >= N, 'publishing', 60_000);
    pub.stop();
    await publishing;
    await waitFor(() => checker.lostNow() === 0, 'the last subscriber to drain', 30_000, () => summary(checker.report()));
    rss.stop();

    const r = checker.report();
    note(summary(r));
    expectClean(r);
    // Every replacement got messages its killed predecessor had not acked, marked as redeliveries.
    for (const n of redeliveredTo) expect(n).toBeGreaterThan(0);
    expect(r.redeliveries).toBeGreaterThan(0);
    expect(pub.errors).toEqual([]);
    const info = (await call(s.url, 'GET', '/v1/queues/kill/subscriptions/default')).body;
    await waitFor(async () => (await call(s.url, 'GET', '/v1/queues/kill/subscriptions/default')).body.inFlight === 0, 'acks to land');
    expect(info).toMatchObject({ backlog: 0, deadLettered: 0 });
    recordFigures({
      scenario: `SIGKILL subscriber ×${kills}`, published: r.published, delivered: r.delivered, lost: r.lost, duplicated: r.duplicated,
      corrupt: r.corrupt, restricted: pub.restricted, peakRssMiB: rss.peakMiB,
    });
  }, scale(60_000, 180_000));

  test('faults - a subscriber frozen with SIGSTOP past its ack deadline: others get its messages again; its late acks after SIGCONT are harmless', async () => {
    const s = await startServer({ memory: '64MiB' });
    expect((await call(s.url, 'PUT', '/v1/queues/stop')).status).toBe(201);
    const DEADLINE = 1000;
    expect((await call(s.url, 'PUT', '/v1/queues/stop/subscriptions/work', { ackDeadlineMs: DEADLINE, maxDeliveries: 100 })).status).toBe(201);
    const checker = new Checker();
    const subs = ['default', 'work'];
    const pub = new RestPublisher({ url: s.url, queue: 'stop', id: 'p-stop', checker, subscriptions: subs, size: 300, batch: 20 });
    // `default` is consumed throughout by a plain subscriber: the freeze must not touch it.
    const plain = subscriber(s, checker, { queue: 'stop', subscription: 'default', prefetch: 200, label: 'plain' });
    // Two consumers compete on `work`; the frozen one acks 300 ms late, so it holds unacked messages when stopped.
    const frozen = subscriber(s, checker, { queue: 'stop', subscription: 'work', prefetch: 100, ackDelayMs: 300, label: 'frozen' });
    const other = subscriber(s, checker, { queue: 'stop', subscription: 'work', prefetch: 100, label: 'other' });
    await Promise.all([plain.waitSubscribed(), frozen.waitSubscribed(), other.waitSubscribed()]);
    const publishing = pub.run(60_000, 1000);
    await frozen.waitReceived(300);

    const stops = scale(1, 3);
    for (let k = 0; k < stops; k++) {
      frozen.kill('SIGSTOP');
      const otherBefore = other.redelivered;
      const plainBefore = plain.received;
      // Past the deadline (and the broker's tick): what the frozen one held goes to the other consumer.
      await sleep(DEADLINE + 1500);
      expect(other.redelivered).toBeGreaterThan(otherBefore);
      expect(plain.received).toBeGreaterThan(plainBefore);
      const acksBefore = { ...frozen.acks };
      frozen.kill('SIGCONT');
      // Its timers fire: late acks for ids that were redelivered (and maybe acked) since.
      await waitFor(() => frozen.acks.acked + frozen.acks.unknown > acksBefore.acked + acksBefore.unknown, 'the late acks to be answered', 10_000);
      await sleep(500);
    }
    await waitFor(() => pub.accepted >= scale(4000, 20_000), 'publishing', 60_000);
    pub.stop();
    await publishing;
    await waitFor(() => checker.lostNow() === 0, 'draining', 30_000, () => summary(checker.report()));

    const r = checker.report();
    note(summary(r));
    expectClean(r);
    expect(r.redeliveries).toBeGreaterThan(0);
    expect([...frozen.errors, ...other.errors, ...plain.errors]).toEqual([]);
    // Late acks changed nothing they should not: every message counted acked exactly once on each subscription.
    await waitFor(async () => {
      const w = (await call(s.url, 'GET', '/v1/queues/stop/subscriptions/work')).body;
      return w.inFlight === 0 && w.backlog === 0;
    }, 'the work subscription to settle', 10_000);
    for (const sub of subs) {
      const info = (await call(s.url, 'GET', `/v1/queues/stop/subscriptions/${sub}`)).body;
      expect({ sub, acked: info.acked, deadLettered: info.deadLettered, dropped: info.dropped }).toEqual({ sub, acked: pub.accepted, deadLettered: 0, dropped: 0 });
    }
    // The frozen subscriber is still a working consumer.
    expect(frozen.closes).toEqual([]);
    expect(await healthy(s.url)).toBe(true);
    recordFigures({
      scenario: `SIGSTOP subscriber ×${stops} past ack deadline`, published: r.published, delivered: r.delivered, lost: r.lost,
      duplicated: r.duplicated, corrupt: r.corrupt, restricted: pub.restricted,
    });
  }, scale(45_000, 120_000));

  test('faults - a server killed (SIGKILL) and stopped (SIGTERM) under a repeatable publisher: nothing lost once it re-sends', async () => {
    let s = await startServer({ memory: '64MiB' });
    const { port, dataDir } = s;
    const samplers = [new RssSampler(s.pid)];
    expect((await call(s.url, 'PUT', '/v1/queues/rq')).status).toBe(201);
    const checker = new Checker();
    const pub = new RepeatablePublisher({ url: () => s.url, queue: 'rq', id: 'p-rep', checker, subscriptions: ['default'], size: 300, batch: 25 });
    // Acks go out 50 ms late: at each crash some delivered messages are not safe yet and must be re-sent.
    const sub = subscriber(s, checker, { queue: 'rq', subscription: 'default', prefetch: 300, ackDelayMs: 50, reconnect: true, label: 'rep-sub' });
    await sub.waitSubscribed();
    const N = scale(6000, 40_000);
    const publishing = pub.publish(N, scale(2000, 4000));

    const restart = async (signal: NodeJS.Signals, at: number): Promise<void> => {
      await waitFor(() => pub.generated >= at, `publishing to reach ${at}`, 60_000);
      const old = s;
      old.child.kill(signal);
      const exit = await old.exited;
      expect(signal === 'SIGKILL' ? exit.signal : exit.code).toBe(signal === 'SIGKILL' ? 'SIGKILL' : 0);
      samplers[samplers.length - 1]!.stop();
      // Same port and data dir: the queue and its subscription come back from definitions.json.
      s = await startServer({ memory: '64MiB', port, dataDir });
      samplers.push(new RssSampler(s.pid));
    };
    await restart('SIGKILL', Math.floor(N / 3));
    await restart('SIGTERM', Math.floor((2 * N) / 3));
    await publishing;
    await pub.settle(30_000);
    await waitFor(() => checker.lostNow() === 0, 'the subscriber to receive everything', 30_000, () => summary(checker.report()));

    for (const x of samplers) x.stop();
    const r = checker.report();
    note(summary(r));
    expectClean(r);
    expect(r.published).toBe(N);
    expect(pub.epochChanges).toBe(2);
    expect(pub.resent).toBeGreaterThan(0);
    // The subscriber reconnected to each new run.
    expect(sub.subscribed).toBeGreaterThanOrEqual(3);
    const q = (await call(s.url, 'GET', '/v1/queues/rq')).body;
    expect(q.subscriptions).toEqual(['default']);
    recordFigures({
      scenario: 'server SIGKILL + SIGTERM, repeatable publisher', published: r.published, delivered: r.delivered, lost: r.lost,
      duplicated: r.duplicated, corrupt: r.corrupt, restricted: pub.restricted, peakRssMiB: Math.max(...samplers.map((x) => x.peakMiB)),
      note: `${pub.resent} re-sent after restarts`,
    });
  }, scale(60_000, 180_000));
});
