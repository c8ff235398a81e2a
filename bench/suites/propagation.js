'use strict';
// Suite `propagation`: messages forwarded from a queue on server A to a queue on server B, and
// consumed there by a WebSocket subscriber, against the same publisher and subscriber on A
// directly. Both measured in each run of this one process (see bench/README.md, "Suite propagation").
//
//   direct:      WS publisher → A/bench → WS subscriber on A
//   propagated:  WS publisher → A/bench → propagation (pipelined WS frames) → B/bench → WS subscriber on B
//
// Each run starts fresh Brokers + servers (temporary data dirs) and closes every socket, server
// and broker before it returns. Messages are 100 B; subscribers ack each frame with one ack frame.

const { mkdtempSync, rmSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join } = require('node:path');
const { once } = require('node:events');
const { performance } = require('node:perf_hooks');
const { WebSocket } = require('ws');
const { Broker } = require('../../dist');
const { startServer } = require('../../dist/http');
const { helpers } = require('../baselines');
const { rest, openWs, closeWs, failures, subscriber, wsPublisher, startSpillway } = require('../lib/sockets');
const { startServerProcess } = require('../lib/server-process');

exports.description = 'Propagation: A → B over pipelined WebSocket frames, delivered to a WS subscriber on B, against a WS subscriber on A';

const MiB = 1024 * 1024;
const DATA = 'x'.repeat(helpers.MESSAGE_SIZE); // 100 B
const HIGH_WATER = helpers.HIGH_WATER;
const WS_BATCH = 100; // messages a publish frame
const IN_FLIGHT = 8; // unanswered publish frames
const PREFETCH = 1000;
const MAX_LAG = 20000; // the publisher waits while the subscriber is this many messages behind
const QUEUE = 'bench';



/**
 * Publisher on A; subscriber on A (`mode` 'direct'), or on B behind a propagation A/bench →
 * B/bench, B in this process ('same') or in a child process of its own ('process').
 * -> delivered msg/s at the subscriber.
 */
async function run(ctx, mode) {
  const seconds = helpers.benchSeconds();
  const warmup = helpers.warmupSeconds(seconds);
  const propagated = mode !== 'direct';
  const a = await startSpillway('prop-a');
  let b = null;
  try {
    if (mode === 'same') b = await startSpillway('prop-b');
    else if (mode === 'process') b = await startServerProcess();
  } catch (err) {
    await a.close();
    throw err;
  }
  if (b && !b.wsUrl) b.wsUrl = b.url.replace(/^http/, 'ws') + '/v1/ws';
  const fails = failures();
  let sub = null;
  let pub = null;
  try {
    await rest(a.url, 'PUT', `/v1/queues/${QUEUE}`, { defaultSubscription: !propagated, memoryBytes: 128 * MiB }, [201]);
    if (propagated) {
      await rest(b.url, 'PUT', `/v1/queues/${QUEUE}`, { memoryBytes: 128 * MiB }, [201]);
      await rest(a.url, 'PUT', `/v1/queues/${QUEUE}/propagations/to-b`, { url: b.url, queue: QUEUE }, [201]);
    }
    sub = await subscriber((propagated ? b : a).wsUrl, 'default', fails);
    pub = await wsPublisher(a.wsUrl, fails, () => pub.sent - sub.count);
    sub.onProgress = () => pub.wake();
    pub.start();
    const failed = new Promise((resolve) => { const t = setInterval(() => { if (fails.any || pub.stopped) { clearInterval(t); resolve(); } }, 50); });
    const rate = await helpers.measureRate(() => sub.count, seconds, warmup, failed);
    pub.stopped = true;
    await failed;
    fails.check(mode);
    const info = propagated ? await rest(a.url, 'GET', `/v1/queues/${QUEUE}/propagations/to-b`, undefined, [200]) : null;
    ctx.log(`    ${mode}: published ${pub.sent}, delivered ${sub.count}, restricted ${pub.restricted}×` +
      (info ? `; propagation ${info.state}, sentSeq ${info.sentSeq}, ackedSeq ${info.ackedSeq}, lag ${info.lag}` : ''));
    return rate;
  } finally {
    if (pub) { pub.stopped = true; pub.closing = true; }
    if (sub) sub.closing = true;
    await closeWs([pub && pub.ws, sub && sub.ws]);
    if (b) await b.close();
    await a.close();
  }
}

exports.run = async function runSuite(ctx) {
  ctx.log(`spillway propagation: ${ctx.runs} run(s) × 3 × ${ctx.seconds} s`);
  const r = await ctx.repeat(async (i) => {
    const direct = await run(ctx, 'direct');
    const processB = await run(ctx, 'process');
    const sameB = await run(ctx, 'same');
    ctx.log(`  run ${i + 1}/${ctx.runs}: direct ${Math.round(direct)} msg/s; propagated, B in its own process ${Math.round(processB)} msg/s ` +
      `(${(processB / direct).toFixed(2)}×), B in this process ${Math.round(sameB)} msg/s (${(sameB / direct).toFixed(2)}×)`);
    return { direct, processB, sameB };
  });
  ctx.addRow({ name: 'spillway ws publish → A → ws subscriber on A (direct), acks, prefetch 1000', value: r.median.direct, unit: 'msg/s',
    samples: r.samples.map((s) => s.direct), note: 'baseline of the rows below, same run' });
  ctx.addRow({ name: 'spillway ws publish → A → propagation → B (own process) → ws subscriber on B, acks', value: r.median.processB, unit: 'msg/s',
    baseline: 'direct (row above)', baselineValue: r.median.direct, target: '>=0.5', samples: r.samples.map((s) => s.processB),
    note: 'chained WS frames of ≤ 1000, ≤ 8 in flight on one socket; A acks once B reports them consumed' });
  ctx.addRow({ name: 'the same, B in the same process as A and both clients', value: r.median.sameB, unit: 'msg/s',
    baseline: 'direct (row above)', baselineValue: r.median.direct, samples: r.samples.map((s) => s.sameB),
    note: 'one thread does the work of both servers: shown, not targeted' });
};

// One measurement alone: node bench/suites/propagation.js direct|process|same
if (require.main === module) {
  const which = process.argv[2] || 'process';
  const ctx = { log: (...a) => console.error(...a) };
  run(ctx, which).then((v) => console.log(which, Math.round(v)), (err) => { console.error(err); process.exitCode = 1; });
}
