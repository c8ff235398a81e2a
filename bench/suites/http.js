'use strict';
// Suite `http`: the Spillway server end to end (fastify HTTP + WebSocket), one Node process
// holding the server, the publishers and the subscribers, as the baselines do. Every figure is
// beside a baseline measured in this run (see bench/README.md, "Suite http").
//
//   1. single-message POST /v1/queues/{q}/messages (autocannon, as fastifyHelloPost)
//   2. batched POST (100 × 100 B a request), msg/s against row 1's msg/s
//   3. WebSocket publish → WebSocket subscriber with acks, 1→1
//   4. the same with 4 subscriptions (one socket each), total delivered/s
//   5. publish → delivery latency at 10 k msg/s over WebSocket
//
// Publishing rows (1, 2) keep one subscription on the queue drained by a WebSocket consumer
// with acks, so the queue does not fill. Each run starts a fresh Broker + server and closes
// every socket, the server and the broker before it returns.

const { mkdtempSync, rmSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join } = require('node:path');
const { once } = require('node:events');
const { performance } = require('node:perf_hooks');
const autocannon = require('autocannon');
const { WebSocket } = require('ws');
const { Broker } = require('../../dist');
const { startServer } = require('../../dist/http');
const { helpers } = require('../baselines');
const { rest, openWs, closeWs, failures, subscriber, wsPublisher, startSpillway: startShared } = require('../lib/sockets');
const { startServerProcess } = require('../lib/server-process');

exports.description = 'HTTP + WebSocket server: single and batched REST publish, WS 1→1 / 1→4 with acks, WS latency @10k msg/s';

const MiB = 1024 * 1024;
const MESSAGE_SIZE = helpers.MESSAGE_SIZE; // 100
const DATA = 'x'.repeat(MESSAGE_SIZE);
const HIGH_WATER = helpers.HIGH_WATER; // ~1 MiB of unsent bytes before a WS publisher pauses
const WS_BATCH = 100; // messages a publish frame
const IN_FLIGHT = 8; // unanswered publish frames
const PREFETCH = 1000;
const MAX_LAG = 20000; // a publisher waits while the slowest subscriber is this many messages behind (as the Redis baselines)
const HTTP_BATCH = 100; // messages a batched POST
const LATENCY_RATE = 10000;
const LATENCY_PREWARM = 20000; // messages pushed through before the timed latency phase (not recorded)
const QUEUE = 'bench';

const immediate = () => new Promise((resolve) => setImmediate(resolve));

// ---------------------------------------------------------------------------------------------
// server and sockets

async function setupQueue(url, subs) {
  await rest(url, 'PUT', `/v1/queues/${QUEUE}`, { defaultSubscription: false, memoryBytes: 128 * MiB, publisherLimitBytes: 4 * 1024 * MiB }, [201]);
  for (const s of subs) await rest(url, 'PUT', `/v1/queues/${QUEUE}/subscriptions/${s}`, {}, [201]);
}

/**
 * A server with the queue of the suite (no default subscription) and subscriptions `subs`; in
 * this process, or with `ownProcess` in a child process of its own, as redis-server runs.
 */
async function startSpillway(subs, { ownProcess = false } = {}) {
  if (!ownProcess) return startShared('http', (url) => setupQueue(url, subs));
  const srv = await startServerProcess();
  try {
    await setupQueue(srv.url, subs);
  } catch (err) {
    await srv.close();
    throw err;
  }
  return { ...srv, wsUrl: srv.url.replace(/^http/, 'ws') + '/v1/ws' };
}




// ---------------------------------------------------------------------------------------------
// 1./2. REST publish with autocannon

function publishBody(n) {
  return JSON.stringify({ messages: Array.from({ length: n }, () => ({ data: DATA })) });
}

/**
 * autocannon (50 connections, pipelining 1, as fastifyHelloPost) on POST /v1/queues/bench/messages
 * with `perRequest` messages a request, one subscription drained by a WebSocket consumer with acks.
 * -> { reqs: 2xx/s, msgs: messages/s, delivered: drained msg/s }
 */
async function restPublish(ctx, perRequest, { drained = true, held = false } = {}) {
  const seconds = helpers.benchSeconds();
  const warmup = helpers.warmupSeconds(seconds);
  // held: one subscription that nobody consumes during the run, so every message is stored.
  const srv = await startSpillway(drained ? ['drain'] : held ? ['held'] : []);
  const fails = failures();
  const sockets = [];
  let sub = null;
  try {
    if (drained) {
      sub = await subscriber(srv.wsUrl, 'drain', fails);
      sockets.push(sub.ws);
    }
    const t0 = performance.now();
    const result = await autocannon({
      url: `${srv.url}/v1/queues/${QUEUE}/messages`,
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: publishBody(perRequest),
      connections: 50,
      pipelining: 1,
      duration: seconds,
      ...(warmup > 0 ? { warmup: { connections: 50, duration: warmup } } : {}),
    });
    const wall = (performance.now() - t0) / 1000;
    const ok = result['2xx'];
    // let the consumer catch up a moment, then check it got everything (at least once)
    const deadline = performance.now() + 1000;
    const subStats = () => (drained ? rest(srv.url, 'GET', `/v1/queues/${QUEUE}/subscriptions/drain`, undefined, [200]) : { backlog: 0, inFlight: 0 });
    let stats = await subStats();
    while ((stats.backlog > 0 || stats.inFlight > 0) && performance.now() < deadline && !fails.any) {
      await helpers.sleep(20);
      stats = await subStats();
    }
    const qs = await rest(srv.url, 'GET', `/v1/queues/${QUEUE}`, undefined, [200]);
    if (result.errors || result.non2xx || !ok) {
      const codes = Object.entries(result.statusCodeStats || {}).map(([k, v]) => `${k}×${v.count}`).join(' ');
      throw new Error(`POST ×${perRequest}: ${result.errors} errors, ${result.timeouts} timeouts, ${result.non2xx} non-2xx (${codes}), ${ok} 2xx`);
    }
    fails.check(`POST ×${perRequest}`);
    ctx.log(`    POST ×${perRequest}: ${Math.round(ok / result.duration)} req/s, p99 ${result.latency.p99} ms; ` +
      `queue published ${qs.published}, dropped ${qs.dropped}; ` +
      (drained ? `drain consumer got ${sub.count} msgs (backlog left ${stats.backlog}, in flight ${stats.inFlight}) ` : '') + `in ${wall.toFixed(1)} s`);
    return { reqs: ok / result.duration, msgs: (ok * perRequest) / result.duration };
  } finally {
    if (sub) sub.closing = true;
    await closeWs(sockets);
    await srv.close();
  }
}

// ---------------------------------------------------------------------------------------------
// 3./4. WebSocket publish -> WebSocket subscribers with acks

/**
 * One WS publisher, `nSubs` subscriptions with one WS consumer each (clients in this process;
 * the server too, or in its own with `ownProcess`). -> total delivered msg/s.
 */
async function wsFanout(ctx, nSubs, opts = {}) {
  const seconds = helpers.benchSeconds();
  const warmup = helpers.warmupSeconds(seconds);
  const names = Array.from({ length: nSubs }, (_, i) => `s${i}`);
  const srv = await startSpillway(names, opts);
  const fails = failures();
  const subs = [];
  let pub = null;
  try {
    for (const n of names) subs.push(await subscriber(srv.wsUrl, n, fails));
    const minDelivered = () => subs.reduce((m, s) => Math.min(m, s.count), Infinity);
    pub = await wsPublisher(srv.wsUrl, fails, () => pub.sent - minDelivered());
    for (const s of subs) s.onProgress = () => pub.wake();
    pub.start();
    const failed = new Promise((resolve) => { const t = setInterval(() => { if (fails.any || pub.stopped) { clearInterval(t); resolve(); } }, 50); });
    const total = () => subs.reduce((a, s) => a + s.count, 0);
    const rate = await helpers.measureRate(total, seconds, warmup, failed);
    pub.stopped = true;
    await failed;
    fails.check(`ws 1→${nSubs}`);
    ctx.log(`    ws 1→${nSubs}${opts.ownProcess ? ' (server process)' : ''}: published ${pub.acked}, delivered ${subs.map((s) => s.count).join('/')}, restricted ${pub.restricted}×`);
    return rate;
  } finally {
    if (pub) { pub.stopped = true; pub.closing = true; }
    for (const s of subs) s.closing = true;
    await closeWs([pub && pub.ws, ...subs.map((s) => s.ws)]);
    await srv.close();
  }
}

// ---------------------------------------------------------------------------------------------
// 5. latency at a fixed rate

/**
 * Single-message publish frames at `rate` msg/s (a ~1 ms timer sends what is due, as
 * wsRelayLatency), data = performance.now() padded to 100 B; one WS subscriber with acks records
 * receive − send. Warm-up messages are not recorded. -> { p50, p99, samples } ms.
 */
async function wsLatency(ctx, rate = LATENCY_RATE, { prewarm = LATENCY_PREWARM } = {}) {
  const seconds = helpers.benchSeconds();
  const warmup = helpers.warmupSeconds(seconds);
  const total = Math.ceil(rate * (seconds + warmup));
  const srv = await startSpillway(['lat']);
  const fails = failures();
  let sub = null;
  let pubWs = null;
  let timer = null;
  let pubClosing = false;
  try {
    const rec = helpers.latencyRecorder(rate * seconds * 1.1 + 1000);
    let start = 0;
    let recordFrom = Infinity;
    let done;
    const allReceived = new Promise((resolve) => { done = resolve; });
    sub = await subscriber(srv.wsUrl, 'lat', fails, {
      onMessages(msgs, now) {
        for (let i = 0; i < msgs.length; i++) {
          const sentAt = parseFloat(msgs[i].data);
          if (sentAt >= recordFrom) rec.record(now - sentAt);
        }
      },
    });
    let base = Infinity; // sub.count when the timed phase starts
    sub.onProgress = () => { if (sub.count - base >= total) done(); };
    pubWs = await openWs(srv.wsUrl);
    pubWs.on('error', (err) => fails.add(`publisher: socket error ${err.message}`));
    pubWs.on('close', (code) => { if (!pubClosing) fails.add(`publisher: socket closed ${code}`); });
    let answered = 0;
    pubWs.on('message', (data) => {
      const s = data.toString();
      if (s.startsWith('{"op":"published"')) { answered++; return; }
      fails.add(`publisher: unexpected frame ${s.slice(0, 300)}`);
    });
    const head = `{"op":"publish","queue":${JSON.stringify(QUEUE)},"publisherId":"bench-lat","ref":`;
    // Pre-warm (not recorded): `prewarm` single-message frames as fast as they are answered
    // (≤ 256 unanswered), so the timed phase measures a warm server, not its JIT start-up.
    const stale = '0'.repeat(MESSAGE_SIZE);
    for (let w = 0; w < prewarm && !fails.any;) {
      while (w < prewarm && w - answered < 256 && pubWs.bufferedAmount < HIGH_WATER) pubWs.send(head + '"w' + (++w) + '","messages":[{"data":"' + stale + '"}]}');
      await immediate();
    }
    const warmDeadline = performance.now() + 5000;
    while (sub.count < prewarm && !fails.any && performance.now() < warmDeadline) await helpers.sleep(5);
    fails.check('ws latency (pre-warm)');
    if (sub.count < prewarm) throw new Error(`ws latency: pre-warm: only ${sub.count} of ${prewarm} messages delivered in 5 s`);
    answered = 0;
    base = sub.count;
    let sent = 0;
    start = performance.now();
    recordFrom = start + warmup * 1000;
    const tick = () => {
      timer = null;
      const due = Math.min(total, Math.floor(((performance.now() - start) / 1000) * rate));
      while (sent < due && pubWs.readyState === WebSocket.OPEN && !fails.any) {
        const stamp = performance.now().toFixed(4);
        sent++;
        pubWs.send(head + sent + ',"messages":[{"data":"' + stamp + DATA.slice(stamp.length) + '"}]}');
      }
      if (sent < total && !fails.any) timer = setTimeout(tick, 1);
    };
    tick();
    await helpers.sleep((warmup + seconds) * 1000 + 1000, allReceived);
    fails.check('ws latency');
    const r = rec.result();
    const received = sub.count - base;
    ctx.log(`    ws latency: pre-warm ${prewarm}, then sent ${sent}, answered ${answered}, received ${received}, recorded ${r.samples}`);
    if (received < sent) throw new Error(`ws latency: only ${received} of ${sent} messages delivered within 1 s after the last send`);
    return r;
  } finally {
    if (timer) clearTimeout(timer);
    pubClosing = true;
    if (sub) sub.closing = true;
    await closeWs([pubWs, sub && sub.ws]);
    await srv.close();
  }
}

// ---------------------------------------------------------------------------------------------

async function measure(ctx, label, fn) {
  ctx.log(`spillway ${label}: ${ctx.runs} run(s) × ${ctx.seconds} s`);
  return ctx.repeat(async (i) => {
    const t0 = Date.now();
    const v = await fn();
    const shown = typeof v === 'number' ? Math.round(v)
      : Object.entries(v).map(([k, x]) => `${k}=${typeof x === 'number' ? (Number.isInteger(x) ? x : x.toFixed(3)) : x}`).join(' ');
    ctx.log(`  run ${i + 1}/${ctx.runs}: ${shown} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    return v;
  });
}

function rowError(ctx, name, err) {
  ctx.log(`${name} FAILED: ${err && err.stack ? err.stack : err}`);
  ctx.addRow({ name, value: null, note: `failed: ${err && err.message ? err.message : err}`, pass: false, target: 'runs' });
}

exports.run = async function run(ctx) {
  await ctx.baseline('fastifyHelloPost');
  await ctx.baseline('wsRelay');
  await ctx.baseline('wsRelayLatency');
  const redis = await ctx.redis();
  if (redis) {
    await ctx.baseline('redisStreams1to1');
    await ctx.baseline('redisPubSub1to4');
  } else {
    ctx.log('no Redis, the Redis ratios are left empty:', ctx.redisReason());
  }
  let failed = 0;

  // 1. single-message POST
  let single = null;
  try {
    const r = await measure(ctx, 'POST ×1', () => restPublish(ctx, 1, { drained: false, held: true }));
    single = r.median.msgs;
    ctx.addRow({ name: 'spillway POST /messages, 1 msg (autocannon c=50), stored', value: r.median.reqs, unit: 'req/s',
      baseline: 'fastifyHelloPost', target: '>=0.75', samples: r.samples.map((s) => s.reqs),
      note: 'every message stored for one subscription, consumed after the run' });
  } catch (err) { failed++; rowError(ctx, 'spillway POST /messages, 1 msg', err); }

  // 1b. the same while a WebSocket consumer drains the subscription in the same process
  try {
    const r = await measure(ctx, 'POST ×1 drained', () => restPublish(ctx, 1));
    ctx.addRow({ name: 'spillway POST /messages, 1 msg, drained by a WS consumer in the same process', value: r.median.reqs, unit: 'req/s',
      baseline: 'fastifyHelloPost', samples: r.samples.map((s) => s.reqs),
      note: 'the server also pushes each message and reads its ack; the consumer shares the CPU' });
  } catch (err) { failed++; rowError(ctx, 'spillway POST /messages, 1 msg, drained', err); }

  // 2. batched POST
  try {
    const r = await measure(ctx, `POST ×${HTTP_BATCH}`, () => restPublish(ctx, HTTP_BATCH));
    ctx.addRow({ name: `spillway POST /messages, ${HTTP_BATCH} × 100 B (autocannon c=50)`, value: r.median.msgs, unit: 'msg/s',
      baseline: 'POST ×1 msg/s (row above)', baselineValue: single, target: '>=10', samples: r.samples.map((s) => s.msgs),
      note: `${Math.round(r.median.reqs)} req/s` });
  } catch (err) { failed++; rowError(ctx, `spillway POST /messages, ${HTTP_BATCH} × 100 B`, err); }

  // 3. WS 1→1
  try {
    const r = await measure(ctx, 'ws 1→1', () => wsFanout(ctx, 1));
    const row = { name: 'spillway ws publish → ws subscriber 1→1, acks, prefetch 1000', value: r.median, unit: 'msg/s', samples: r.samples };
    ctx.addRow({ ...row, baseline: 'redisStreams1to1', target: '>=2' });
    ctx.addRow({ ...row, baseline: 'wsRelay', target: '>=1' });
  } catch (err) { failed++; rowError(ctx, 'spillway ws 1→1', err); }

  // 4. WS 1→4
  try {
    const r = await measure(ctx, 'ws 1→4', () => wsFanout(ctx, 4));
    ctx.addRow({ name: 'spillway ws 1→4 subscriptions, acks, prefetch 1000', value: r.median, unit: 'delivered/s',
      baseline: 'redisPubSub1to4', target: '>=1', samples: r.samples });
  } catch (err) { failed++; rowError(ctx, 'spillway ws 1→4', err); }

  // 3b./4b. The same with the server in a process of its own, as redis-server: the clients
  // then no longer share the server's CPU, as they do not share Redis's.
  for (const n of [1, 4]) {
    try {
      const r = await measure(ctx, `ws 1→${n}, server in its own process`, () => wsFanout(ctx, n, { ownProcess: true }));
      ctx.addRow({ name: `spillway ws 1→${n}, acks, prefetch 1000, server in its own process (as redis-server)`, value: r.median, unit: n === 1 ? 'msg/s' : 'delivered/s',
        samples: r.samples, baseline: n === 1 ? 'redisStreams1to1' : 'redisPubSub1to4', target: n === 1 ? '>=2' : '>=1',
        note: 'publisher and subscribers in the bench process, as the Redis clients' });
    } catch (err) { failed++; rowError(ctx, `spillway ws 1→${n}, server in its own process`, err); }
  }

  // 5. latency
  try {
    const r = await measure(ctx, `ws latency @${LATENCY_RATE / 1000}k msg/s`, () => wsLatency(ctx));
    ctx.addRow({ name: 'spillway ws publish → delivery latency @10k msg/s p50', value: r.median.p50, unit: 'ms',
      baseline: 'wsRelayLatency.p50', samples: r.samples.map((s) => s.p50) });
    ctx.addRow({ name: 'spillway ws publish → delivery latency @10k msg/s p99', value: r.median.p99, unit: 'ms',
      baseline: 'wsRelayLatency.p99', target: 'p99 <= 2 ms (absolute)', pass: r.median.p99 <= 2,
      samples: r.samples.map((s) => s.p99) });
  } catch (err) { failed++; rowError(ctx, 'spillway ws latency @10k msg/s', err); }

  if (failed) throw new Error(`${failed} measurement(s) failed (see above)`);
};

// for profiling one measurement alone: node bench/suites/http.js post1|post100|ws1|ws4|latency
if (require.main === module) {
  const which = process.argv[2] || 'ws1';
  const ctx = { log: (...a) => console.error(...a) };
  const fns = {
    post1: () => restPublish(ctx, 1),
    post100: () => restPublish(ctx, HTTP_BATCH),
    post1nosub: () => restPublish(ctx, 1, { drained: false }),
    post1held: () => restPublish(ctx, 1, { drained: false, held: true }),
    post100nosub: () => restPublish(ctx, HTTP_BATCH, { drained: false }),
    ws1: () => wsFanout(ctx, 1),
    ws4: () => wsFanout(ctx, 4),
    ws1own: () => wsFanout(ctx, 1, { ownProcess: true }),
    ws4own: () => wsFanout(ctx, 4, { ownProcess: true }),
    latency: () => wsLatency(ctx),
    latencycold: () => wsLatency(ctx, LATENCY_RATE, { prewarm: 0 }),
  };
  if (!fns[which]) { console.error(`usage: node bench/suites/http.js ${Object.keys(fns).join('|')}`); process.exit(2); }
  fns[which]().then((v) => console.log(which, v), (err) => { console.error(err); process.exitCode = 1; });
}
