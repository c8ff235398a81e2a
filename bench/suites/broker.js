'use strict';
// Suite `broker`: the embedded broker without HTTP (issue figures for the core and flow control).
// Every figure is beside a baseline measured in this run: a plain JavaScript queue doing the
// same publish → deliver → ack bookkeeping (bench/lib/jsqueue.js).

const v8 = require('node:v8');
const vm = require('node:vm');
const { Broker, Ring, prepareBatch } = require('../../dist');
const { JsQueue } = require('../lib/jsqueue');

exports.description = 'embedded broker: ring append/read, publish → deliver → ack (1 and 4 subscriptions), backlog heap, flow-control cost';

const PAYLOAD = 'x'.repeat(100);
const BATCH = 100;
const PREFIX = Buffer.from('{"op":"messages","queue":"q","subscription":"s","messages":[');
const SUFFIX = Buffer.from(']}');
const turn = () => new Promise((r) => setImmediate(r));

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc');

function batchOf(n) {
  const out = [];
  for (let i = 0; i < n; i++) out.push({ data: PAYLOAD });
  return out;
}

/** Ring append + read in place: one writer, one reader, 100-byte bodies. */
function ringRate(seconds) {
  const ring = Ring.create(16 * 1024 * 1024);
  const body = Buffer.from(PAYLOAD);
  let seq = 1;
  let readPos = 0;
  let read = 0;
  let check = 0;
  const end = Date.now() + seconds * 1000;
  const t0 = process.hrtime.bigint();
  while (Date.now() < end) {
    for (let i = 0; i < 64; i++) {
      const pos = ring.claim(body.length);
      if (pos < 0) break;
      body.copy(ring.data, ring.bodyStart(pos));
      ring.writeHeader(pos, body.length, seq++, 0, NaN, 0, body.length, 0, 0, 0);
    }
    ring.publish(seq);
    const tail = ring.tail;
    while (readPos !== tail) {
      readPos = ring.settle(readPos);
      if (readPos === tail) break;
      check += ring.data[ring.bodyStart(readPos)] + ring.bodyLenOf(readPos); // read in place
      read++;
      readPos = ring.after(readPos, tail);
    }
    ring.release(readPos, seq);
  }
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (check === 0) throw new Error('nothing read');
  return read / s;
}

function jsQueueRingRate(seconds) {
  const q = [];
  const body = Buffer.from(PAYLOAD);
  let read = 0;
  let check = 0;
  const end = Date.now() + seconds * 1000;
  const t0 = process.hrtime.bigint();
  while (Date.now() < end) {
    for (let i = 0; i < 64; i++) q.push(Buffer.from(body));
    while (q.length > 0) {
      const b = q.shift();
      check += b[0] + b.length;
      read++;
    }
  }
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (check === 0) throw new Error('nothing read');
  return read / s;
}

/** Publish → deliver → ack through the embedded broker with `subs` subscriptions; returns deliveries/s. */
async function brokerRate(seconds, subs, flowControl = true) {
  const b = new Broker({ memoryBytes: 512 * 1024 * 1024, spill: false });
  b.createQueue('q', { memoryBytes: 256 * 1024 * 1024, defaultSubscription: false, publisherLimitBytes: 1024 * 1024 * 1024 });
  if (!flowControl) b.queue('q').ledger.enabled = false;
  let acked = 0;
  let frameBytes = 0;
  const detach = [];
  for (let s = 0; s < subs; s++) {
    b.createSubscription('q', 's' + s, {});
    const sub = b.subscription('q', 's' + s);
    const seqs = [];
    const consumer = {
      prefetch: 10000,
      unacked: 0,
      ready: () => true,
      deliver(batch) {
        frameBytes += batch.encode(PREFIX, SUFFIX).length; // what a socket would be sent
        seqs.length = 0;
        for (let i = 0; i < batch.count; i++) seqs.push(batch.seqs[i]);
        acked += sub.ackSeqs(seqs);
      },
      ended() {},
    };
    detach.push(b.consume('q', 's' + s, consumer));
  }
  const msgs = batchOf(BATCH);
  const end = Date.now() + seconds * 1000;
  const t0 = process.hrtime.bigint();
  while (Date.now() < end) {
    for (let k = 0; k < 20; k++) b.publish('q', 'bench', prepareBatch(msgs, 1 << 20));
    await turn();
  }
  await turn();
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  for (const d of detach) d();
  await b.close();
  if (frameBytes === 0) throw new Error('nothing delivered');
  return acked / s;
}

async function jsQueueRate(seconds, subs) {
  const q = new JsQueue(subs);
  const payloads = batchOf(BATCH).map((m) => m.data);
  let acked = 0;
  const end = Date.now() + seconds * 1000;
  const t0 = process.hrtime.bigint();
  while (Date.now() < end) {
    for (let k = 0; k < 20; k++) q.publish('bench', payloads);
    await turn();
    for (let s = 0; s < subs; s++) {
      while (q.deliver(s, 512, (ms) => {
        if (JsQueue.encode(ms).length === 0) throw new Error('empty frame');
        const seqs = ms.map((m) => m.seq);
        q.ack(s, seqs);
        acked += seqs.length;
      }) > 0);
    }
  }
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  return acked / s;
}

/** Heap growth for a backlog of `n` undelivered 100-byte messages. */
async function brokerBacklogHeap(n) {
  gc();
  const before = process.memoryUsage().heapUsed;
  const b = new Broker({ memoryBytes: 1024 * 1024 * 1024, spill: false });
  b.createQueue('q', { memoryBytes: 1024 * 1024 * 1024, publisherLimitBytes: 1024 * 1024 * 1024 });
  const msgs = batchOf(1000);
  for (let i = 0; i < n; i += 1000) b.publish('q', 'bench', prepareBatch(msgs, 1 << 20));
  await turn();
  gc();
  const after = process.memoryUsage().heapUsed;
  const stats = b.queueStats('q');
  if (stats.messages !== n) throw new Error(`expected ${n} messages, got ${stats.messages}`);
  await b.close();
  return (after - before) / (1024 * 1024);
}

async function jsQueueBacklogHeap(n) {
  gc();
  const before = process.memoryUsage().heapUsed;
  const q = new JsQueue(1);
  const payloads = batchOf(1000).map((m) => m.data);
  for (let i = 0; i < n; i += 1000) q.publish('bench', payloads);
  gc();
  const after = process.memoryUsage().heapUsed;
  if (q.messages.length !== n) throw new Error('backlog lost');
  return (after - before) / (1024 * 1024);
}

exports.run = async function run(ctx) {
  const sec = ctx.seconds;

  const ring = await ctx.repeat(() => ringRate(sec));
  const ringBase = await ctx.repeat(() => jsQueueRingRate(sec));
  ctx.addRow({ name: 'js array queue: push + shift (100 B)', value: ringBase.median, unit: 'msg/s', key: 'jsArray', samples: ringBase.samples });
  ctx.addRow({ name: 'ring append + read in place (100 B)', value: ring.median, unit: 'msg/s', baseline: 'jsArray', baselineValue: ringBase.median, target: '≥ 5 M msg/s', pass: ring.median >= 5e6, note: `${(ring.median / 1e6).toFixed(2)} M msg/s`, samples: ring.samples });

  const js1 = await ctx.repeat(() => jsQueueRate(sec, 1));
  ctx.addRow({ name: 'js queue publish → deliver → ack, 1 sub', value: js1.median, unit: 'msg/s', key: 'jsQueue1', samples: js1.samples });
  const b1 = await ctx.repeat(() => brokerRate(sec, 1));
  ctx.addRow({ name: 'broker publish → deliver → ack, 1 sub', value: b1.median, unit: 'msg/s', baseline: 'jsQueue1', baselineValue: js1.median, target: '>=1', note: `${(b1.median / 1e6).toFixed(2)} M msg/s (target ≥ 1 M)`, samples: b1.samples });
  const b4 = await ctx.repeat(() => brokerRate(sec, 4));
  ctx.addRow({ name: 'broker fan-out, 4 subs (total deliveries)', value: b4.median, unit: 'deliveries/s', baseline: 'broker 1 sub', baselineValue: b1.median, target: '>=1.5', samples: b4.samples });

  // Off and on alternate, so drift on a shared machine hits both alike; the ratio is the median of pairs.
  const pairs = await ctx.repeat(async () => {
    const offRate = await brokerRate(sec, 1, false);
    const onRate = await brokerRate(sec, 1, true);
    return { off: offRate, on: onRate, ratio: onRate / offRate };
  });
  ctx.addRow({ name: 'broker 1 sub, flow control off', value: pairs.median.off, unit: 'msg/s' });
  ctx.addRow({ name: 'broker 1 sub, flow control on (ratio: median of on/off pairs)', value: pairs.median.on, unit: 'msg/s', baseline: 'flow control off', baselineValue: pairs.median.off, ratio: pairs.median.ratio, target: '>=0.95' });

  const N = 1_000_000;
  const heapJs = await jsQueueBacklogHeap(N);
  ctx.addRow({ name: 'js queue heap growth, 1 M × 100 B backlog', value: heapJs, unit: 'MiB', key: 'jsHeap' });
  const heap = await brokerBacklogHeap(N);
  ctx.addRow({ name: 'broker heap growth, 1 M × 100 B backlog', value: heap, unit: 'MiB', baseline: 'jsHeap', baselineValue: heapJs, target: '≤ 16 MiB', pass: heap <= 16 });
};

// One measurement alone (e.g. under --cpu-prof): node bench/suites/broker.js 1|4
if (require.main === module) {
  const subs = Number(process.argv[2] || 1);
  brokerRate(Number(process.env.BENCH_SECONDS || 3), subs).then((v) => console.log(`broker 1→${subs}`, Math.round(v)), (err) => { console.error(err); process.exitCode = 1; });
}
