'use strict';
// Suite `client`: the TypeScript client (dist/client) against raw WebSocket frames, in the same
// run and the same way as the `http` suite's "WS publish → WS subscriber 1→1" row:
//
//   raw     one ws publisher (100-message frames with a ref, ≤ 8 unanswered, pause at ≥ 1 MiB
//           buffered or 20 000 messages of lag), one ws subscriber (prefetch 1000) acking each
//           messages frame with one ack frame. This is bench/suites/http.js's wsFanout(1),
//           rewritten here because that suite exports only run().
//   client  a SpillwayClient publisher calling publish(queue, message) for each message (the
//           client batches them), at most WINDOW unresolved calls and 20 000 messages of lag;
//           another SpillwayClient subscribed with onMessage + message.ack() (prefetch 1000).
//   client×100  the same with publish(queue, [100 messages]) per call, as the raw frames.
//
// Each run starts a fresh Broker + server (queue `bench` without default subscription, one
// subscription) and closes everything before it returns. Runs alternate raw / client so that
// both see the same machine noise. Target: the client costs at most 20 % (ratio ≥ 0.8).
// `node bench/suites/client.js raw|client|client100` runs one measurement alone.

const { mkdtempSync, rmSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join } = require('node:path');
const { once } = require('node:events');
const { performance } = require('node:perf_hooks');
const { WebSocket } = require('ws');
const { Broker } = require('../../dist');
const { startServer } = require('../../dist/http');
const { SpillwayClient } = require('../../dist/client');
const { helpers } = require('../baselines');
const { rest, openWs, closeWs, failures, subscriber, wsPublisher, startSpillway: startShared } = require('../lib/sockets');

exports.description = 'TypeScript client: publish → subscribe 1→1 with acks, against raw WebSocket frames in the same run';

const MiB = 1024 * 1024;
const DATA = 'x'.repeat(helpers.MESSAGE_SIZE); // 100 B
const HIGH_WATER = helpers.HIGH_WATER;
const WS_BATCH = 100;
const IN_FLIGHT = 8;
const PREFETCH = 1000;
const MAX_LAG = 20000;
const WINDOW = 1000; // unresolved client publish() calls (single-message form)
const QUEUE = 'bench';
const SUB = 's0';
/** A server with the suite's queue and its one subscription, made through the client. */
function startSpillway() {
  return startShared('client', async (url) => {
    const admin = new SpillwayClient({ url });
    await admin.createQueue(QUEUE, { defaultSubscription: false, memoryBytes: 128 * MiB });
    await admin.createSubscription(QUEUE, SUB);
    await admin.close();
  });
}

async function raw(ctx) {
  const seconds = helpers.benchSeconds();
  const warmup = helpers.warmupSeconds(seconds);
  const srv = await startSpillway();
  const fails = failures();
  let sub = null;
  let pub = null;
  try {
    sub = await subscriber(srv.wsUrl, SUB, fails);
    pub = await wsPublisher(srv.wsUrl, fails, () => pub.sent - sub.count);
    sub.onProgress = () => pub.wake();
    pub.start();
    const rate = await helpers.measureRate(() => sub.count, seconds, warmup, null);
    pub.stopped = true;
    fails.check('raw ws 1→1');
    ctx.log(`    raw: delivered ${sub.count}, restricted ${pub.restricted}×`);
    return rate;
  } finally {
    if (pub) { pub.stopped = true; pub.closing = true; }
    if (sub) sub.closing = true;
    await closeWs([pub && pub.ws, sub && sub.ws]);
    await srv.close();
  }
}

// ---------------------------------------------------------------------------------------------
// the client

/** `perCall` 1: publish(queue, message) per message; else publish(queue, [perCall messages]). */
async function client(ctx, perCall = 1) {
  const seconds = helpers.benchSeconds();
  const warmup = helpers.warmupSeconds(seconds);
  const srv = await startSpillway();
  const fails = failures();
  const pubClient = new SpillwayClient({ url: srv.url });
  const subClient = new SpillwayClient({ url: srv.url });
  let restricted = 0;
  pubClient.on('restricted', () => { restricted++; });
  for (const c of [pubClient, subClient]) c.on('error', (err) => fails.add(`client error event: ${err && err.message}`));
  let delivered = 0;
  let sent = 0;
  let outstanding = 0;
  let stopped = false;
  let blocked = false;
  const batch = perCall === 1 ? null : Array.from({ length: perCall }, () => DATA);
  const window = perCall === 1 ? WINDOW : Math.max(2, Math.ceil(WINDOW / perCall));
  const onDone = () => { outstanding--; pump(); };
  const onFail = (err) => { outstanding--; fails.add(`publish: ${err.code || ''} ${err.message}`); };
  function pump() {
    while (!stopped && !fails.any && outstanding < window) {
      if (sent - delivered > MAX_LAG) { blocked = true; return; }
      outstanding++;
      sent += perCall;
      if (batch === null) pubClient.publish(QUEUE, DATA).then(onDone, onFail);
      else pubClient.publish(QUEUE, batch).then(onDone, onFail);
    }
  }
  try {
    await pubClient.connect();
    await subClient.subscribe(QUEUE, SUB, {
      prefetch: PREFETCH,
      onMessage(m) {
        delivered++;
        m.ack();
        if (blocked) { blocked = false; pump(); }
      },
    });
    pump();
    const rate = await helpers.measureRate(() => delivered, seconds, warmup, null);
    stopped = true;
    fails.check(`client ×${perCall}`);
    ctx.log(`    client ×${perCall}: published ${sent - outstanding * perCall}, delivered ${delivered}, restricted ${restricted}×`);
    return rate;
  } finally {
    stopped = true;
    await Promise.allSettled([pubClient.close({ timeoutMs: 2000 }), subClient.close({ timeoutMs: 2000 })]);
    await srv.close();
  }
}

// ---------------------------------------------------------------------------------------------

exports.run = async function run(ctx) {
  ctx.log(`client vs raw ws 1→1: ${ctx.runs} run(s) × ${ctx.seconds} s each, alternating`);
  const r = await ctx.repeat(async (i) => {
    const out = { raw: await raw(ctx), client: await client(ctx, 1), client100: await client(ctx, WS_BATCH) };
    ctx.log(`  run ${i + 1}/${ctx.runs}: raw ${Math.round(out.raw)}, client ${Math.round(out.client)}, client×100 ${Math.round(out.client100)} msg/s`);
    return out;
  });
  const rawRow = { name: 'raw ws publish → ws subscriber 1→1 (100-msg frames, as the http suite)', value: r.median.raw, unit: 'msg/s', samples: r.samples.map((s) => s.raw) };
  ctx.addRow(rawRow);
  ctx.addRow({
    name: 'client publish(q, msg) → client subscribe 1→1, acks, prefetch 1000', value: r.median.client, unit: 'msg/s',
    baseline: 'raw ws 1→1 (row above)', baselineValue: r.median.raw, target: '>=0.8', samples: r.samples.map((s) => s.client),
    note: `one publish() call a message, batched by the client; ≤ ${WINDOW} unresolved calls`,
  });
  ctx.addRow({
    name: 'client publish(q, [100 msgs]) → client subscribe 1→1', value: r.median.client100, unit: 'msg/s',
    baseline: 'raw ws 1→1', baselineValue: r.median.raw, target: '>=0.8', samples: r.samples.map((s) => s.client100),
  });
};

// The measurements, for tools that run them alone (e.g. under --cpu-prof).
exports.measurements = { raw, client };

if (require.main === module) {
  const which = process.argv[2] || 'client';
  const ctx = { log: (...a) => console.error(...a) };
  const fns = { raw: () => raw(ctx), client: () => client(ctx, 1), client100: () => client(ctx, WS_BATCH) };
  if (!fns[which]) { console.error(`usage: node bench/suites/client.js ${Object.keys(fns).join('|')}`); process.exit(2); }
  fns[which]().then((v) => console.log(which, Math.round(v)), (err) => { console.error(err); process.exitCode = 1; });
}
