'use strict';
// Suite `spill`: queues larger than their memory (issue figures for spill to disk). Each
// figure is a ratio against the same work done in memory in this run.

const { execFileSync } = require('node:child_process');
const { mkdtempSync, rmSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join } = require('node:path');
const { Broker, prepareBatch } = require('../../dist');

exports.description = 'spill: publish and drain rates on disk vs in memory, RSS with a 2 GiB backlog, a stalled neighbour';

const MiB = 1024 * 1024;
const PAYLOAD = 'x'.repeat(100);
const PREFIX = Buffer.from('{"op":"messages","queue":"q","subscription":"default","messages":[');
const SUFFIX = Buffer.from(']}');
const turn = () => new Promise((r) => setImmediate(r));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function withBroker(fn) {
  return async (...args) => {
    const dir = mkdtempSync(join(tmpdir(), 'spillway-bench-'));
    const b = new Broker({ memoryBytes: 1024 * MiB, dataDir: dir });
    try {
      return await fn(b, ...args);
    } finally {
      await b.close();
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

/** Publishes `n` 100-byte messages in batches of 100, retrying when told to; returns msg/s. */
async function publishAll(b, queue, n) {
  const msgs = [];
  for (let i = 0; i < 100; i++) msgs.push({ data: PAYLOAD });
  const t0 = process.hrtime.bigint();
  for (let done = 0; done < n;) {
    try {
      b.publish(queue, 'bench', prepareBatch(msgs, 1 << 20));
      done += 100;
    } catch (err) {
      if (err.code !== 'PUBLISHER_RESTRICTED') throw err;
      await sleep(err.details.retryAfterMs);
    }
    if (done % 10_000 === 0) await turn();
  }
  return n / (Number(process.hrtime.bigint() - t0) / 1e9);
}

/** Drains subscription `sub` with a push consumer that takes each batch as a wire frame and acks it; resolves to msg/s. */
function drain(b, queue, sub, n) {
  return new Promise((resolve) => {
    const s = b.subscription(queue, sub);
    const seqs = [];
    let got = 0;
    const t0 = process.hrtime.bigint();
    const detach = b.consume(queue, sub, {
      prefetch: 5000,
      unacked: 0,
      ready: () => true,
      deliver(batch) {
        // A delivery is the wire frame a WebSocket consumer would be sent.
        if (batch.encode(PREFIX, SUFFIX).length === 0) throw new Error('empty frame');
        seqs.length = 0;
        for (let i = 0; i < batch.count; i++) seqs.push(batch.seqs[i]);
        got += s.ackSeqs(seqs);
        if (got >= n) {
          queueMicrotask(() => detach());
          resolve(n / (Number(process.hrtime.bigint() - t0) / 1e9));
        }
      },
      ended() {},
    });
  });
}

const publishAndDrain = withBroker(async (b, memoryBytes, n) => {
  b.createQueue('q', { memoryBytes, publisherLimitBytes: 4096 * MiB });
  const pub = await publishAll(b, 'q', n);
  const spilled = b.queueStats('q').spilledMessages;
  const drainRate = await drain(b, 'q', 'default', n);
  return { publish: pub, drain: drainRate, spilled };
});

/** Delivery rate of a fast subscription, with or without a stalled one beside it. */
const fastBesideStalled = withBroker(async (b, stalled, n) => {
  b.createQueue('q', { memoryBytes: 4 * MiB, publisherLimitBytes: 4096 * MiB });
  if (stalled) b.createSubscription('q', 'stalled', {});
  const done = drain(b, 'q', 'default', n);
  await publishAll(b, 'q', n);
  const rate = await done;
  if (stalled && b.queueStats('q').spilledMessages === 0) throw new Error('the stalled backlog did not spill');
  return rate;
});

/** RSS of a fresh process holding a 2 GiB backlog in a queue with 64 MiB of memory. */
function rssWithBacklog(totalBytes) {
  const script = `
    const { Broker, prepareBatch } = require(${JSON.stringify(join(__dirname, '../../dist'))});
    const { mkdtempSync, rmSync } = require('node:fs');
    const dir = mkdtempSync(require('node:path').join(require('node:os').tmpdir(), 'spillway-rss-'));
    (async () => {
      const b = new Broker({ memoryBytes: 256 * 1024 * 1024, dataDir: dir, maxDiskBytes: 8 * 1024 ** 3 });
      b.createQueue('q', { memoryBytes: 64 * 1024 * 1024, publisherLimitBytes: 8 * 1024 ** 3, publisherSpillLimitBytes: 8 * 1024 ** 3 });
      const data = 'y'.repeat(4096);
      const msgs = []; for (let i = 0; i < 64; i++) msgs.push({ data });
      let bytes = 0, peak = 0;
      while (bytes < ${totalBytes}) {
        try { b.publish('q', 'bench', prepareBatch(msgs, 1 << 20)); bytes += 64 * 4096; }
        catch (e) { if (e.code !== 'PUBLISHER_RESTRICTED') throw e; await new Promise((r) => setTimeout(r, e.details.retryAfterMs)); }
        await new Promise((r) => setImmediate(r));
        peak = Math.max(peak, process.memoryUsage().rss);
      }
      const s = b.queueStats('q');
      process.stdout.write(JSON.stringify({ peakRss: peak, rss: process.memoryUsage().rss, spilledBytes: s.spilledBytes, messages: s.messages }));
      await b.close();
      rmSync(dir, { recursive: true, force: true });
    })().catch((e) => { console.error(e); process.exit(1); });`;
  return JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8', maxBuffer: 1 << 20 }));
}

exports.run = async function run(ctx) {
  const n = Number(process.env.BENCH_SPILL_MESSAGES || 300_000);
  const mem = await ctx.repeat(() => publishAndDrain(512 * MiB, n));
  const disk = await ctx.repeat(() => publishAndDrain(4 * MiB, n));
  ctx.addRow({ name: `publish ${n} × 100 B, in memory`, value: mem.median.publish, unit: 'msg/s' });
  ctx.addRow({ name: `publish ${n} × 100 B, spilling (4 MiB memory, ${disk.median.spilled} spilled)`, value: disk.median.publish, unit: 'msg/s', baseline: 'in memory', baselineValue: mem.median.publish, target: '>=0.5' });
  ctx.addRow({ name: 'drain the backlog, in memory', value: mem.median.drain, unit: 'msg/s' });
  ctx.addRow({ name: 'drain the backlog, mostly on disk', value: disk.median.drain, unit: 'msg/s', baseline: 'in memory', baselineValue: mem.median.drain, target: '>=0.5' });

  const alone = await ctx.repeat(() => fastBesideStalled(false, n));
  const beside = await ctx.repeat(() => fastBesideStalled(true, n));
  ctx.addRow({ name: 'fast subscription alone (4 MiB memory)', value: alone.median, unit: 'msg/s' });
  ctx.addRow({ name: 'fast subscription beside a stalled one', value: beside.median, unit: 'msg/s', baseline: 'alone', baselineValue: alone.median, target: '>=0.7' });

  const total = Number(process.env.BENCH_SPILL_BACKLOG_BYTES || 2 * 1024 * MiB);
  const r = rssWithBacklog(total);
  ctx.addRow({
    name: `peak RSS, ${(total / 1024 / MiB).toFixed(1)} GiB backlog in a 64 MiB queue (${(r.spilledBytes / MiB).toFixed(0)} MiB on disk)`,
    value: r.peakRss / MiB, unit: 'MiB', target: '≤ 214 MiB (64 + 150)', pass: r.peakRss / MiB <= 214,
  });
};
