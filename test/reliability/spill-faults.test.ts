import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { Broker, type BrokerOptions } from '../../src/broker';
import { buildServer } from '../../src/http';
import { Checker, expectClean, summary } from './checker';
import { Puller, RestPublisher } from './clients';
import { note, recordFigures, scale, sleep, waitFor } from './config';

/**
 * Spill under faults, end to end over HTTP: failing disk writes, a disk budget spent, and the
 * spill worker thread dying, while publishers and pullers run. The broker's fault injection
 * (`injectSpillFault`) needs the broker in this process, so the server is built here.
 */

const KiB = 1024;
let broker: Broker | undefined;
let app: FastifyInstance | undefined;
let dir: string | undefined;
const pullers: Puller[] = [];

// Spill failures are process warnings: kept out of the test output.
beforeEach(() => {
  jest.spyOn(process, 'emitWarning').mockImplementation((() => {}) as typeof process.emitWarning);
});
afterEach(async () => {
  for (const p of pullers.splice(0)) await p.stop();
  await app?.close();
  await broker?.close();
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  app = broker = dir = undefined;
  jest.restoreAllMocks();
});

async function serve(opts: BrokerOptions = {}): Promise<{ url: string; b: Broker }> {
  dir = mkdtempSync(join(tmpdir(), 'spillway-relspill-'));
  broker = new Broker({ memoryBytes: 64 * 1024 * KiB, tickMs: 10, dataDir: dir, ...opts });
  app = buildServer({ broker, defaultMetrics: false });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  return { url, b: broker };
}

/** A queue of 256 KiB with two subscriptions, and a stalled puller on each. */
function setup(b: Broker, url: string, checker: Checker): { pub: RestPublisher; pulls: Puller[] } {
  b.createQueue('sp', { memoryBytes: 256 * KiB });
  b.createSubscription('sp', 'second', {});
  const subs = ['default', 'second'];
  const pub = new RestPublisher({ url, queue: 'sp', id: 'p-spill', checker, subscriptions: subs, size: 1000, batch: 20 });
  const pulls = subs.map((s) => new Puller({ url, queue: 'sp', subscription: s, checker, max: 200 }));
  for (const p of pulls) {
    p.paused = true;
    p.start();
    pullers.push(p);
  }
  return { pub, pulls };
}

async function drain(b: Broker, checker: Checker, pulls: Puller[]): Promise<ReturnType<Checker['report']>> {
  for (const p of pulls) p.paused = false;
  await waitFor(() => checker.lostNow() === 0, 'the pullers to drain', 30_000, () => summary(checker.report()));
  await waitFor(() => b.queueStats('sp').messages === 0, 'every message to be released', 10_000, () => JSON.stringify(b.queueStats('sp')));
  for (const p of pulls) expect(p.errors).toEqual([]);
  return checker.report();
}

describe('reliability spill faults', () => {
  test('spill faults - disk write errors (EIO) during spill: publishes are refused 507 meanwhile, nothing accepted is lost', async () => {
    const { url, b } = await serve();
    const checker = new Checker();
    const { pub, pulls } = setup(b, url, checker);
    const failures = scale(5, 20);
    await b.injectSpillFault({ failWrites: failures });
    const N = scale(3000, 20_000);
    let maxSpilled = 0;
    const watch = setInterval(() => { maxSpilled = Math.max(maxSpilled, b.queueStats('sp').spilledMessages); }, 20);
    // The pullers wake halfway: first the backlog must go to a failing disk, then it is read back while publishing goes on.
    const publishing = pub.publishCount(N, 60_000);
    await waitFor(() => pub.accepted >= N / 2, 'half the messages', 60_000);
    const r = await publishing.then(() => drain(b, checker, pulls));
    clearInterval(watch);
    note(summary(r));
    expectClean(r);
    expect(r.published).toBe(N);
    expect(b.spillStats.errors).toBe(failures);
    expect(pub.refused.INSUFFICIENT_STORAGE ?? 0).toBeGreaterThan(0);
    expect(maxSpilled).toBeGreaterThan(N / 4);
    expect(b.spillStats).toMatchObject({ corruptRecords: 0, usedBytes: 0 });
    expect(pub.errors).toEqual([]);
    recordFigures({
      scenario: `spill disk errors (${failures} failed writes)`, published: r.published, delivered: r.delivered, lost: r.lost,
      duplicated: r.duplicated, corrupt: r.corrupt, restricted: pub.restricted + (pub.refused.INSUFFICIENT_STORAGE ?? 0), note: 'refusals: 429 + 507',
    });
  }, scale(30_000, 120_000));

  test('spill faults - the disk budget spent (disk full): 507 INSUFFICIENT_STORAGE until subscribers drain, then publishing goes on', async () => {
    const { url, b } = await serve({ maxDiskBytes: 600 * KiB });
    const checker = new Checker();
    const { pub, pulls } = setup(b, url, checker);
    // Memory (256 KiB) and disk (600 KiB) hold about 800 messages of 1000 bytes: publish until refused.
    let full = false;
    for (let i = 0; i < 200 && !full; i++) {
      await pub.publishBatch();
      full = (pub.refused.INSUFFICIENT_STORAGE ?? 0) > 0;
    }
    expect(full).toBe(true);
    const held = pub.accepted;
    expect(held).toBeGreaterThan(500);
    expect(held).toBeLessThan(1200);
    // Refused publishes stored nothing: the queue holds exactly what was accepted.
    expect(b.queueStats('sp').messages).toBe(held);
    expect(b.spillStats.usedBytes).toBeLessThanOrEqual(600 * KiB);
    // Subscribers drain; the publisher goes on to several times what fits.
    for (const p of pulls) p.paused = false;
    const N = scale(4000, 20_000);
    await pub.publishCount(N - held, 60_000);
    const r = await drain(b, checker, pulls);
    note(summary(r));
    expectClean(r);
    expect(r.published).toBe(N);
    expect(pub.errors).toEqual([]);
    recordFigures({
      scenario: 'spill disk budget spent (600 KiB)', published: r.published, delivered: r.delivered, lost: r.lost,
      duplicated: r.duplicated, corrupt: r.corrupt, restricted: pub.restricted + (pub.refused.INSUFFICIENT_STORAGE ?? 0), note: 'refusals: 429 + 507',
    });
  }, scale(30_000, 120_000));

  test('spill faults - the spill worker crashing repeatedly mid-stream: a new worker takes over and nothing is lost', async () => {
    const { url, b } = await serve();
    const checker = new Checker();
    const { pub, pulls } = setup(b, url, checker);
    const crashes = scale(4, 15);
    const N = scale(4000, 20_000);
    const publishing = pub.publishCount(N, 60_000);
    for (let k = 0; k < crashes; k++) {
      await waitFor(() => pub.accepted >= ((k + 1) * N) / (crashes + 2), `publishing to reach crash ${k + 1}`, 60_000);
      await b.injectSpillFault('crash');
      if (k === Math.floor(crashes / 2)) for (const p of pulls) p.paused = false;
      await sleep(50);
    }
    await publishing;
    const r = await drain(b, checker, pulls);
    note(summary(r));
    expectClean(r);
    expect(r.published).toBe(N);
    expect(b.spillStats.workerRestarts).toBeGreaterThanOrEqual(crashes);
    expect(b.spillStats.corruptRecords).toBe(0);
    expect(pub.errors).toEqual([]);
    recordFigures({
      scenario: `spill worker crash ×${crashes}`, published: r.published, delivered: r.delivered, lost: r.lost,
      duplicated: r.duplicated, corrupt: r.corrupt, restricted: pub.restricted + (pub.refused.INSUFFICIENT_STORAGE ?? 0), note: 'refusals: 429 + 507',
    });
  }, scale(30_000, 120_000));
});
