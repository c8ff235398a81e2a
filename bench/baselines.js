'use strict';
// Reference measurements that Spillway figures are compared against (as ratios, same run,
// same machine). Every function is bounded in time (BENCH_SECONDS, default 3 s, plus a short
// warm-up) and in message count, closes everything it opened, and resolves to plain numbers:
//   throughput functions -> number (req/s, msg/s or delivered msg/s)
//   latency functions    -> { p50, p99, samples } (milliseconds, samples = number of measurements)
const { performance } = require('node:perf_hooks');
const { once } = require('node:events');
const Fastify = require('fastify');
const autocannon = require('autocannon');
const { WebSocket, WebSocketServer } = require('ws');
const Redis = require('ioredis');
const { percentiles } = require('./lib/stats');

const MESSAGE_SIZE = 100; // bytes per message in every baseline
const HIGH_WATER = 1024 * 1024; // ~1 MiB of buffered bytes before a sender pauses
const BATCH = 100; // Redis pipeline / XREADGROUP COUNT batch size
const MAX_LAG = 20000; // Redis producers wait when the slowest consumer is this many messages behind
const MAX_MESSAGES = 50_000_000; // hard cap on messages per measurement (time is the usual limit)

// ---------------------------------------------------------------------------------------------
// helpers

function benchSeconds(opts = {}) {
  const v = opts.seconds !== undefined ? Number(opts.seconds) : Number(process.env.BENCH_SECONDS || 3);
  if (!Number.isFinite(v) || v <= 0) throw new RangeError(`invalid benchmark duration: ${opts.seconds ?? process.env.BENCH_SECONDS}`);
  return Math.min(v, 600);
}

function warmupSeconds(seconds, opts = {}) {
  if (opts.warmup !== undefined) return Math.max(0, Number(opts.warmup) || 0);
  return Math.min(0.5, seconds * 0.25);
}

/** A Promise that resolves after ms, or earlier when `early` settles; never leaves a timer behind. */
function sleep(ms, early) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    if (early) early.then(() => { clearTimeout(timer); resolve(); }, () => { clearTimeout(timer); resolve(); });
  });
}

const immediate = () => new Promise((resolve) => setImmediate(resolve));

/** A 100-byte JSON document. */
function jsonBody(size = MESSAGE_SIZE) {
  const base = JSON.stringify({ msg: '' });
  return JSON.stringify({ msg: 'x'.repeat(Math.max(0, size - base.length)) });
}

function payload(size = MESSAGE_SIZE) {
  return Buffer.alloc(size, 'x');
}

const TEMPLATE = payload();
/** A fresh 100-byte message whose first 8 bytes hold performance.now() (pooled allocation, less GC). */
function stampedPayload() {
  const b = Buffer.allocUnsafe(MESSAGE_SIZE);
  TEMPLATE.copy(b, 8, 8);
  b.writeDoubleLE(performance.now(), 0);
  return b;
}

/** Deferred promise. */
function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
  return { promise, resolve, reject };
}

/**
 * Measure a steady-state rate: wait out the warm-up, then count how much `getCount()` grew over
 * `seconds`. Ends early (and measures over the shorter window) if `done` settles first.
 */
async function measureRate(getCount, seconds, warmup, done) {
  const tStart = performance.now();
  await sleep(warmup * 1000, done);
  const c0 = getCount();
  const t0 = performance.now();
  await sleep(seconds * 1000, done);
  const c1 = getCount();
  const t1 = performance.now();
  if (t1 - t0 >= 1) return ((c1 - c0) * 1000) / (t1 - t0);
  return (c1 * 1000) / Math.max(1, t1 - tStart); // ended during warm-up (tiny message cap)
}

/** Wakes producers waiting for consumers to catch up. */
function makeSignal() {
  let waiters = [];
  return {
    wait(maxMs = 20) {
      return new Promise((resolve) => {
        const timer = setTimeout(done, maxMs);
        function done() { clearTimeout(timer); resolve(); }
        waiters.push(done);
      });
    },
    notify() {
      if (waiters.length === 0) return;
      const w = waiters;
      waiters = [];
      for (const fn of w) fn();
    },
  };
}

/** A latency recorder with a preallocated, bounded sample buffer. */
function latencyRecorder(capacity) {
  const samples = new Float64Array(Math.max(1, Math.ceil(capacity)));
  let n = 0;
  let dropped = 0;
  return {
    record(ms) { if (n < samples.length) samples[n++] = ms; else dropped++; },
    get count() { return n; },
    result() {
      const { p50, p99 } = percentiles(samples.subarray(0, n), [50, 99]);
      return { p50, p99, samples: n, ...(dropped ? { dropped } : {}) };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// 1. fastify hello-world POST, loaded by autocannon in the same process

/** fastify POST route returning {"hello":"world"}; autocannon (50 connections, pipelining 1, 100-byte JSON body) -> req/s. */
async function fastifyHelloPost(opts = {}) {
  const seconds = benchSeconds(opts);
  const warmup = warmupSeconds(seconds, opts);
  const app = Fastify({ logger: false });
  app.post('/', async () => ({ hello: 'world' }));
  await app.listen({ host: '127.0.0.1', port: 0 });
  try {
    const { port } = app.server.address();
    const result = await autocannon({
      url: `http://127.0.0.1:${port}/`,
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: jsonBody(),
      connections: 50,
      pipelining: 1,
      duration: seconds,
      ...(warmup > 0 ? { warmup: { connections: 50, duration: warmup } } : {}),
    });
    const ok = result['2xx'];
    if (result.errors || result.non2xx || !ok) {
      throw new Error(`fastifyHelloPost: ${result.errors} errors, ${result.non2xx} non-2xx, ${ok} 2xx responses`);
    }
    return ok / result.duration;
  } finally {
    await app.close();
  }
}

// ---------------------------------------------------------------------------------------------
// 2. bare ws relay: publisher -> ws server -> one subscriber

/**
 * Starts a bare ws relay server. The connection on /pub is the publisher; every frame it sends
 * is forwarded to the connection on /sub. When the subscriber's socket holds more than ~1 MiB the
 * server pauses reading from the publisher until it drains (so memory stays bounded).
 */
async function startWsRelay() {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
  await once(wss, 'listening');
  let sub = null;
  wss.on('connection', (ws, req) => {
    ws.on('error', () => {});
    if (req.url === '/sub') {
      sub = ws;
      ws.on('close', () => { if (sub === ws) sub = null; });
      return;
    }
    let paused = false;
    const waitDrain = () => {
      if (ws.readyState !== WebSocket.OPEN) return;
      if (!sub || sub.bufferedAmount < HIGH_WATER / 2) { paused = false; ws.resume(); return; }
      setImmediate(waitDrain);
    };
    ws.on('message', (data, isBinary) => {
      const target = sub;
      if (!target || target.readyState !== WebSocket.OPEN) return;
      target.send(data, { binary: isBinary });
      if (!paused && target.bufferedAmount > HIGH_WATER) {
        paused = true;
        ws.pause();
        setImmediate(waitDrain);
      }
    });
  });
  const { port } = wss.address();
  return {
    port,
    async close() {
      for (const ws of wss.clients) ws.terminate();
      await new Promise((resolve) => wss.close(() => resolve()));
    },
  };
}

async function openWs(url) {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  ws.on('error', () => {});
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
    ws.once('close', () => reject(new Error(`ws ${url} closed before open`)));
  });
  return ws;
}

async function closeWs(...sockets) {
  await Promise.all(sockets.filter(Boolean).map((ws) => {
    if (ws.readyState === WebSocket.CLOSED) return undefined;
    const closed = once(ws, 'close').catch(() => {});
    ws.terminate();
    return closed;
  }));
}

/**
 * Delivered msg/s through a bare ws relay: the publisher sends 100-byte binary frames as fast as it
 * can while its bufferedAmount stays under ~1 MiB (otherwise it retries on the next setImmediate);
 * the subscriber counts. Stops after the measurement window or after `messages` messages.
 */
async function wsRelay(messages = MAX_MESSAGES, opts = {}) {
  const seconds = benchSeconds(opts);
  const warmup = warmupSeconds(seconds, opts);
  const limit = Math.max(1, Math.min(MAX_MESSAGES, Math.floor(messages)));
  const relay = await startWsRelay();
  let pub = null;
  let sub = null;
  let stopped = false;
  try {
    const url = `ws://127.0.0.1:${relay.port}`;
    sub = await openWs(`${url}/sub`);
    pub = await openWs(`${url}/pub`);
    let received = 0;
    const allReceived = deferred();
    sub.on('message', () => { if (++received === limit) allReceived.resolve(); });

    const frame = payload();
    let sent = 0;
    const pump = () => {
      if (stopped || sent >= limit || pub.readyState !== WebSocket.OPEN) return;
      let burst = 0;
      while (pub.bufferedAmount < HIGH_WATER && sent < limit && burst < 10000) {
        pub.send(frame, { binary: true });
        sent++;
        burst++;
      }
      setImmediate(pump);
    };
    pump();
    return await measureRate(() => received, seconds, warmup, allReceived.promise);
  } finally {
    stopped = true;
    await closeWs(pub, sub);
    await relay.close();
  }
}

/**
 * Latency through the same bare ws relay: frames carrying a send timestamp are sent at a fixed
 * `rate` (msg/s, scheduled on a ~1 ms timer) for the measurement window; the subscriber records
 * send->receive time. Frames sent during the warm-up are not recorded. -> { p50, p99, samples } ms.
 */
async function wsRelayLatency(rate = 10000, opts = {}) {
  const seconds = benchSeconds(opts);
  const warmup = warmupSeconds(seconds, opts);
  const total = Math.min(MAX_MESSAGES, Math.ceil(rate * (seconds + warmup)));
  const relay = await startWsRelay();
  let pub = null;
  let sub = null;
  let timer = null;
  try {
    const url = `ws://127.0.0.1:${relay.port}`;
    sub = await openWs(`${url}/sub`);
    pub = await openWs(`${url}/pub`);
    const rec = latencyRecorder(rate * seconds * 1.1 + 1000);
    let received = 0;
    const allReceived = deferred();
    const start = performance.now();
    const recordFrom = start + warmup * 1000;
    sub.on('message', (data) => {
      const now = performance.now();
      const sentAt = data.readDoubleLE(0);
      if (sentAt >= recordFrom) rec.record(now - sentAt);
      if (++received === total) allReceived.resolve();
    });
    let sent = 0;
    const tick = () => {
      timer = null;
      const due = Math.min(total, Math.floor(((performance.now() - start) / 1000) * rate));
      while (sent < due && pub.readyState === WebSocket.OPEN) {
        pub.send(stampedPayload(), { binary: true });
        sent++;
      }
      if (sent < total) timer = setTimeout(tick, 1);
    };
    tick();
    // sending takes (warmup + seconds); give in-flight frames up to 1 s more to arrive
    await sleep((warmup + seconds) * 1000 + 1000, allReceived.promise);
    return rec.result();
  } finally {
    if (timer) clearTimeout(timer);
    await closeWs(pub, sub);
    await relay.close();
  }
}

// ---------------------------------------------------------------------------------------------
// 3./4. Redis (ioredis)

let keySeq = 0;
const uniqueKey = (kind) => `spillway-bench:${kind}:${process.pid}:${Date.now()}:${++keySeq}`;

async function redisConnect(port, errors, extra = {}) {
  const conn = new Redis({
    host: '127.0.0.1',
    port,
    lazyConnect: true,
    retryStrategy: () => null, // never reconnect: a dropped connection is a benchmark failure
    maxRetriesPerRequest: 0,
    enableReadyCheck: true,
    ...extra,
  });
  conn.on('error', (err) => errors.push(err));
  await conn.connect();
  return conn;
}

function disconnectAll(conns) {
  for (const c of conns) {
    try { c.disconnect(); } catch { /* ignore */ }
  }
}

function throwIfErrors(errors, what) {
  if (errors.length) throw new Error(`${what}: ${errors.length} Redis error(s), first: ${errors[0] && errors[0].message}`);
}

/** Run `pipelines` concurrent producer loops calling sendBatch() until stop() is true. */
async function producerLoops({ pipelines, stop, lag, signal, sendBatch }) {
  const worker = async () => {
    while (!stop()) {
      if (lag() > MAX_LAG) { await signal.wait(); continue; }
      await sendBatch();
    }
  };
  await Promise.all(Array.from({ length: pipelines }, worker));
}

async function execPipeline(pipeline, errors) {
  const results = await pipeline.exec();
  if (results) for (const [err] of results) if (err) { errors.push(err); break; }
}

/**
 * One producer XADDs 100-byte entries to one stream, pipelined in batches of 100; `groups`
 * consumer groups with one consumer each read with XREADGROUP COUNT 100 BLOCK 100 and XACK what
 * they read. The producer holds back while the slowest group is more than MAX_LAG entries behind.
 * -> total delivered entries/s (summed over groups).
 */
async function redisStreamsFanout(port, groups, opts = {}) {
  const seconds = benchSeconds(opts);
  const warmup = warmupSeconds(seconds, opts);
  const pipelines = opts.pipelines || 2;
  const limit = opts.messages || MAX_MESSAGES;
  const key = uniqueKey('stream');
  const errors = [];
  const conns = [];
  let stopped = false;
  let admin = null;
  try {
    admin = await redisConnect(port, errors);
    conns.push(admin);
    const producer = await redisConnect(port, errors);
    conns.push(producer);
    const consumers = [];
    for (let g = 0; g < groups; g++) {
      await admin.xgroup('CREATE', key, `g${g}`, '$', 'MKSTREAM');
      const conn = await redisConnect(port, errors);
      conns.push(conn);
      consumers.push({ conn, group: `g${g}`, count: 0 });
    }
    const signal = makeSignal();
    const consume = async (c) => {
      while (!stopped) {
        const res = await c.conn.xreadgroupBuffer('GROUP', c.group, 'c1', 'COUNT', BATCH, 'BLOCK', 100, 'STREAMS', key, '>');
        if (!res) continue;
        const entries = res[0][1];
        if (entries.length === 0) continue;
        c.count += entries.length;
        // not awaited: same connection, so it is applied before the next XREADGROUP
        c.conn.xack(key, c.group, ...entries.map((e) => e[0])).catch((err) => errors.push(err));
        signal.notify();
      }
    };
    const consumerLoops = consumers.map((c) => consume(c).catch((err) => { if (!stopped) errors.push(err); }));

    const body = payload();
    let produced = 0;
    const minDelivered = () => consumers.reduce((m, c) => Math.min(m, c.count), Infinity);
    const producing = producerLoops({
      pipelines,
      signal,
      stop: () => stopped || produced >= limit || errors.length > 0,
      lag: () => produced - minDelivered(),
      sendBatch: () => {
        const p = producer.pipeline();
        for (let i = 0; i < BATCH; i++) p.xadd(key, '*', 'd', body);
        produced += BATCH;
        return execPipeline(p, errors);
      },
    }).catch((err) => errors.push(err));

    const total = () => consumers.reduce((s, c) => s + c.count, 0);
    const rate = await measureRate(total, seconds, warmup);
    stopped = true;
    await producing;
    await Promise.all(consumerLoops);
    throwIfErrors(errors, `redisStreams 1->${groups}`);
    return rate;
  } finally {
    stopped = true;
    if (admin && admin.status === 'ready') await admin.unlink(key).catch(() => {});
    disconnectAll(conns);
  }
}

/** Redis Streams, one producer, one consumer group -> delivered msg/s. */
function redisStreams1to1(port, opts = {}) {
  return redisStreamsFanout(port, 1, opts);
}

/** Redis Streams fan-out: one stream, 4 consumer groups with one consumer each -> total delivered msg/s. */
function redisStreams1to4(port, opts = {}) {
  return redisStreamsFanout(port, 4, opts);
}

/**
 * Redis Streams latency: entries carrying a send timestamp are XADDed at a fixed `rate` (the
 * entries due on each ~1 ms tick go out as one pipeline), one consumer group reads them with
 * XREADGROUP COUNT 100 BLOCK 100 + XACK. -> { p50, p99, samples } ms, warm-up excluded.
 */
async function redisStreamsLatency(port, rate = 10000, opts = {}) {
  const seconds = benchSeconds(opts);
  const warmup = warmupSeconds(seconds, opts);
  const total = Math.min(MAX_MESSAGES, Math.ceil(rate * (seconds + warmup)));
  const key = uniqueKey('stream-lat');
  const errors = [];
  const conns = [];
  let stopped = false;
  let timer = null;
  let admin = null;
  try {
    admin = await redisConnect(port, errors);
    conns.push(admin);
    const producer = await redisConnect(port, errors);
    conns.push(producer);
    const consumer = await redisConnect(port, errors);
    conns.push(consumer);
    await admin.xgroup('CREATE', key, 'g0', '$', 'MKSTREAM');

    const rec = latencyRecorder(rate * seconds * 1.1 + 1000);
    const start = performance.now();
    const recordFrom = start + warmup * 1000;
    let received = 0;
    const allReceived = deferred();
    const consume = async () => {
      while (!stopped) {
        const res = await consumer.xreadgroupBuffer('GROUP', 'g0', 'c1', 'COUNT', BATCH, 'BLOCK', 100, 'STREAMS', key, '>');
        if (!res) continue;
        const now = performance.now();
        const entries = res[0][1];
        if (entries.length === 0) continue;
        for (const [, fields] of entries) {
          const sentAt = fields[1].readDoubleLE(0);
          if (sentAt >= recordFrom) rec.record(now - sentAt);
        }
        received += entries.length;
        consumer.xack(key, 'g0', ...entries.map((e) => e[0])).catch((err) => errors.push(err));
        if (received >= total) allReceived.resolve();
      }
    };
    const consuming = consume().catch((err) => { if (!stopped) errors.push(err); });

    let sent = 0;
    const pending = new Set();
    const tick = () => {
      timer = null;
      const due = Math.min(total, Math.floor(((performance.now() - start) / 1000) * rate));
      if (due > sent && errors.length === 0) {
        const p = producer.pipeline();
        for (; sent < due; sent++) {
          p.xadd(key, '*', 'd', stampedPayload());
        }
        const done = execPipeline(p, errors).catch((err) => errors.push(err));
        pending.add(done);
        done.then(() => pending.delete(done));
      }
      if (sent < total && errors.length === 0) timer = setTimeout(tick, 1);
    };
    tick();
    await sleep((warmup + seconds) * 1000 + 1000, allReceived.promise);
    stopped = true;
    if (timer) { clearTimeout(timer); timer = null; }
    await Promise.all(pending);
    await consuming;
    throwIfErrors(errors, 'redisStreamsLatency');
    return rec.result();
  } finally {
    stopped = true;
    if (timer) clearTimeout(timer);
    if (admin && admin.status === 'ready') await admin.unlink(key).catch(() => {});
    disconnectAll(conns);
  }
}

/**
 * Redis pub/sub fan-out: one publisher PUBLISHes 100-byte messages (pipelined in batches of 100)
 * on one channel with `subscribers` (default 4) subscriber connections. The publisher holds back
 * while the slowest subscriber is more than MAX_LAG messages behind, so Redis never drops a
 * subscriber for exceeding its output buffer limit. -> total delivered msg/s.
 */
async function redisPubSub1to4(port, opts = {}) {
  const seconds = benchSeconds(opts);
  const warmup = warmupSeconds(seconds, opts);
  const nSubs = opts.subscribers || 4;
  const pipelines = opts.pipelines || 2;
  const limit = opts.messages || MAX_MESSAGES;
  const channel = uniqueKey('channel');
  const errors = [];
  const conns = [];
  let stopped = false;
  try {
    const publisher = await redisConnect(port, errors);
    conns.push(publisher);
    const signal = makeSignal();
    const subs = [];
    for (let i = 0; i < nSubs; i++) {
      const conn = await redisConnect(port, errors);
      conns.push(conn);
      const s = { conn, count: 0 };
      conn.on('messageBuffer', () => { s.count++; signal.notify(); });
      conn.on('close', () => { if (!stopped) errors.push(new Error(`subscriber ${i} disconnected`)); });
      await conn.subscribe(channel);
      subs.push(s);
    }
    const body = payload();
    let produced = 0;
    const minDelivered = () => subs.reduce((m, s) => Math.min(m, s.count), Infinity);
    const producing = producerLoops({
      pipelines,
      signal,
      stop: () => stopped || produced >= limit || errors.length > 0,
      lag: () => produced - minDelivered(),
      sendBatch: () => {
        const p = publisher.pipeline();
        for (let i = 0; i < BATCH; i++) p.publish(channel, body);
        produced += BATCH;
        return execPipeline(p, errors);
      },
    }).catch((err) => errors.push(err));
    const total = () => subs.reduce((s, x) => s + x.count, 0);
    const rate = await measureRate(total, seconds, warmup);
    stopped = true;
    await producing;
    throwIfErrors(errors, `redisPubSub 1->${nSubs}`);
    return rate;
  } finally {
    stopped = true;
    disconnectAll(conns);
  }
}

// ---------------------------------------------------------------------------------------------
// Catalog used by bench/run.js (ctx.baseline(key)) and the `baselines` suite. `fn(redisPort)`.

const catalog = {
  fastifyHelloPost: {
    label: 'fastify hello-world POST (autocannon c=50, same process)',
    unit: 'req/s',
    redis: false,
    fn: () => fastifyHelloPost(),
  },
  wsRelay: {
    label: 'bare ws relay 1→1, 100 B frames',
    unit: 'msg/s',
    redis: false,
    fn: () => wsRelay(),
  },
  wsRelayLatency: {
    label: 'bare ws relay latency @10k msg/s',
    unit: 'ms',
    redis: false,
    fn: () => wsRelayLatency(10000),
  },
  redisStreams1to1: {
    label: 'Redis Streams 1→1 (XADD ×100 / XREADGROUP+XACK)',
    unit: 'msg/s',
    redis: true,
    fn: (port) => redisStreams1to1(port),
  },
  redisStreams1to4: {
    label: 'Redis Streams 1→4 groups (fan-out)',
    unit: 'delivered/s',
    redis: true,
    fn: (port) => redisStreams1to4(port),
  },
  redisStreamsLatency: {
    label: 'Redis Streams latency @10k msg/s',
    unit: 'ms',
    redis: true,
    fn: (port) => redisStreamsLatency(port, 10000),
  },
  redisPubSub1to4: {
    label: 'Redis pub/sub 1→4 subscribers',
    unit: 'delivered/s',
    redis: true,
    fn: (port) => redisPubSub1to4(port),
  },
};

module.exports = {
  fastifyHelloPost,
  wsRelay,
  wsRelayLatency,
  redisStreams1to1,
  redisStreams1to4,
  redisStreamsLatency,
  redisPubSub1to4,
  catalog,
  // shared helpers for other suites
  helpers: { benchSeconds, warmupSeconds, measureRate, latencyRecorder, sleep, payload, jsonBody, startWsRelay, MESSAGE_SIZE, HIGH_WATER },
};
