import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { Ring } from '../../src/queue/ring';
import { H_HEAD, H_TAIL, HEADER_SLOTS } from '../../src/queue/layout';

/*
 * One real Worker on the other side of a ring. ts-jest does not compile worker code, so the
 * worker runs the compiled ring from dist/ (built here when missing or older than the source).
 * Both sides run the same writer/reader code (HELPERS, plain JS): the main thread evaluates it
 * with `new Function`, the worker as part of its eval'd source. The only synchronisation is the
 * ring's own HEAD and TAIL: the reader polls TAIL, a writer that finds the ring full waits for
 * HEAD to move. A waiter is woken early by Atomics.notify on that slot; every wait also has a
 * short timeout, so a missed notify costs time, never a hang. The main thread never blocks:
 * it waits with Atomics.waitAsync.
 */

const ROOT = path.resolve(__dirname, '../..');
const DIST_RING = path.join(ROOT, 'dist/queue/ring.js');
const DIST_LAYOUT = path.join(ROOT, 'dist/queue/layout.js');
const SOURCES = [path.join(ROOT, 'src/queue/ring.ts'), path.join(ROOT, 'src/queue/layout.ts')];

const CAPACITY = 4096;
const RECORDS = 100_000;
/** Records of at most half the ring always fit once the reader catches up (see the ring unit tests). */
const MAX_BODY = CAPACITY / 2 - 56;
const DEADLINE_MS = 10_000;

/** Shared by both sides. `ring` is a Ring (dist or src: same layout); `rnd` a mulberry32. */
const HELPERS = String.raw`
function mulberry32(seed) {
  let a = seed | 0;
  return function () {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// FNV-1a over body bytes [4, len), seeded with the seq and the length. The multiply by the FNV
// prime is spelled as shifts: Math.imul is not inlined in Jest's vm context and is ~100x slower there.
function checksum(data, start, len, seq) {
  let h = (0x811c9dc5 ^ (seq % 4294967296) ^ Math.imul(len, 0x9e3779b1)) | 0;
  for (let i = start + 4; i < start + len; i++) {
    h ^= data[i];
    h = (h + (h << 1) + (h << 4) + (h << 7) + (h << 8) + (h << 24)) | 0;
  }
  return h >>> 0;
}

// Body: [0,4) checksum, [4,8) seq low 32 bits, then random bytes.
function fillBody(data, start, len, seq, rnd) {
  data.writeUInt32LE((seq % 4294967296) >>> 0, start + 4);
  let x = ((rnd() * 4294967296) >>> 0) | 1;
  for (let i = start + 8; i < start + len; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    data[i] = x & 0xff;
  }
  data.writeUInt32LE(checksum(data, start, len, seq), start);
}

function drawBodyLen(rnd, maxBody) {
  return rnd() < 0.8 ? 8 + Math.floor(rnd() * 193) : 8 + Math.floor(rnd() * (maxBody - 7));
}

function makeWriter(ring, hdr, H_HEAD, H_TAIL, firstSeq, count, seed, maxBody) {
  return { ring, hdr, H_HEAD, H_TAIL, next: firstSeq, end: firstSeq + count, rnd: mulberry32(seed), maxBody,
    publishes: 0, rollbacks: 0, fullWaits: 0 };
}

// Writes until done (returns -1) or the ring is full (returns the HEAD value seen before the
// failed claim: the caller waits for HEAD to move from it).
function writeSome(w) {
  const ring = w.ring;
  while (w.next < w.end) {
    const batch = 1 + Math.floor(w.rnd() * 4);
    const rollback = w.rnd() < 0.02;
    const head0 = Atomics.load(w.hdr, w.H_HEAD);
    let seq = w.next;
    let full = false;
    for (let k = 0; k < batch && seq < w.end; k++) {
      const len = drawBodyLen(w.rnd, w.maxBody);
      const pos = ring.claim(len);
      if (pos < 0) { full = true; break; }
      fillBody(ring.data, ring.bodyStart(pos), len, seq, w.rnd);
      ring.writeHeader(pos, len, seq, seq * 2, Number.NaN, seq & 0xffff, len, 0, 0, seq & 1);
      seq++;
    }
    if (rollback) {
      ring.rollback(); // these seqs are written again later; the reader must never see this batch
      w.rollbacks++;
    } else if (seq > w.next) {
      ring.publish(seq);
      w.next = seq;
      w.publishes++;
      Atomics.notify(w.hdr, w.H_TAIL);
    }
    if (full) { w.fullWaits++; return head0; }
  }
  return -1;
}

function makeReader(ring, hdr, H_HEAD, firstSeq, count, seed, maxBody) {
  return { ring, hdr, H_HEAD, pos: ring.head, expect: firstSeq, count: 0, want: count, rnd: mulberry32(seed), maxBody,
    mismatches: 0, firstMismatch: null, releases: 0, wraps: 0 };
}

function mismatch(r, what) {
  r.mismatches++;
  if (r.firstMismatch === null) r.firstMismatch = 'seq ' + r.expect + ' at ' + r.pos + ': ' + what;
}

// Reads, checks and releases everything published; returns the TAIL it read up to.
function readSome(r) {
  const ring = r.ring;
  const tail = ring.tail;
  let pos = r.pos;
  if (pos === tail) return tail;
  pos = ring.settle(pos);
  while (pos !== tail) {
    r.pos = pos;
    const seq = ring.seqAt(pos);
    const len = ring.bodyLenOf(pos);
    if (seq !== r.expect) mismatch(r, 'seq ' + seq);
    if (len < 8 || len > r.maxBody || ring.lengthOf(pos) !== ((56 + len + 7) & ~7)) {
      mismatch(r, 'length ' + ring.lengthOf(pos) + ' body ' + len);
      r.mismatches += r.want; // the walk cannot be trusted any more
      return tail;
    }
    const start = ring.bodyStart(pos);
    if (ring.data.readUInt32LE(start) !== checksum(ring.data, start, len, seq)) mismatch(r, 'checksum');
    if (ring.data.readUInt32LE(start + 4) !== (seq % 4294967296) >>> 0) mismatch(r, 'body seq');
    if (ring.bytesOf(pos) !== len || ring.publisherOf(pos) !== (seq & 0xffff) || ring.flagsOf(pos) !== (seq & 1)
        || ring.publishedAtOf(pos) !== seq * 2 || !Number.isNaN(ring.publisherSeqOf(pos))) mismatch(r, 'header fields');
    const next = ring.after(pos, tail);
    if (next < pos) r.wraps++;
    r.expect++;
    r.count++;
    // Release after each record or only once caught up, at random: both kinds of reader.
    if (next === tail || r.rnd() < 0.5) {
      ring.release(next, r.expect);
      r.releases++;
      Atomics.notify(r.hdr, r.H_HEAD);
    }
    pos = next;
  }
  r.pos = pos;
  return tail;
}
`;

const WORKER_CODE = String.raw`
const { parentPort, workerData } = require('node:worker_threads');
${HELPERS}
const { Ring } = require(workerData.ringPath);
const { H_HEAD, H_TAIL, HEADER_SLOTS } = require(workerData.layoutPath);
const ring = Ring.attach(workerData.sab);
const hdr = new Int32Array(workerData.sab, 0, HEADER_SLOTS);
const deadline = Date.now() + workerData.deadlineMs;
if (workerData.role === 'reader') {
  const r = makeReader(ring, hdr, H_HEAD, workerData.firstSeq, workerData.count, workerData.seed, workerData.maxBody);
  while (r.count < r.want && r.mismatches < r.want && Date.now() < deadline) {
    const tail = readSome(r);
    if (r.count < r.want) Atomics.wait(hdr, H_TAIL, tail, 20);
  }
  parentPort.postMessage({ count: r.count, mismatches: r.mismatches, firstMismatch: r.firstMismatch,
    releases: r.releases, wraps: r.wraps, timedOut: r.count < r.want });
} else {
  const w = makeWriter(ring, hdr, H_HEAD, H_TAIL, workerData.firstSeq, workerData.count, workerData.seed, workerData.maxBody);
  let head0;
  while ((head0 = writeSome(w)) !== -1 && Date.now() < deadline) Atomics.wait(hdr, H_HEAD, head0, 20);
  parentPort.postMessage({ written: w.next - workerData.firstSeq, publishes: w.publishes, rollbacks: w.rollbacks,
    fullWaits: w.fullWaits, timedOut: w.next < w.end });
}
`;

interface WriterState { next: number; end: number; publishes: number; rollbacks: number; fullWaits: number }
interface ReaderState {
  count: number; want: number; mismatches: number; firstMismatch: string | null; releases: number; wraps: number;
}
interface Helpers {
  makeWriter(ring: Ring, hdr: Int32Array, hHead: number, hTail: number, firstSeq: number, count: number, seed: number, maxBody: number): WriterState;
  writeSome(w: WriterState): number;
  makeReader(ring: Ring, hdr: Int32Array, hHead: number, firstSeq: number, count: number, seed: number, maxBody: number): ReaderState;
  readSome(r: ReaderState): number;
}
const helpers = new Function(`${HELPERS}\nreturn { makeWriter, writeSome, makeReader, readSome };`)() as Helpers;

type WaitAsyncResult = { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<'ok' | 'timed-out'> };
const waitAsync = (Atomics as unknown as {
  waitAsync(ta: Int32Array, index: number, value: number, timeout?: number): WaitAsyncResult;
}).waitAsync;

/** Resolves when slot `index` no longer holds `value`, or is notified, or after `ms`. */
async function waitWhile(hdr: Int32Array, index: number, value: number, ms: number): Promise<void> {
  const r = waitAsync(hdr, index, value, ms);
  if (r.async) await r.value;
  else await new Promise<void>((resolve) => setImmediate(resolve)); // yield to the event loop anyway
}

/** A worker and a latch on its one report (or its failure). */
function startWorker(workerData: Record<string, unknown>): {
  worker: Worker; report: Promise<Record<string, unknown>>; failed: () => Error | null; reported: () => boolean;
} {
  const worker = new Worker(WORKER_CODE, { eval: true, workerData });
  let failure: Error | null = null;
  let reported = false;
  const report = new Promise<Record<string, unknown>>((resolve, reject) => {
    worker.once('message', (m: Record<string, unknown>) => { reported = true; resolve(m); });
    worker.once('error', (e) => { failure = e; reject(e); });
    worker.once('exit', (code) => {
      if (!reported && !failure) failure = new Error(`worker exited with code ${code} before reporting`);
      if (failure) reject(failure);
    });
  });
  report.catch(() => undefined); // observed by the test through `failed()` or by awaiting it
  return { worker, report, failed: () => failure, reported: () => reported };
}

beforeAll(() => {
  const fresh = () => fs.existsSync(DIST_RING) && fs.existsSync(DIST_LAYOUT)
    && SOURCES.every((src) => fs.statSync(src).mtimeMs <= fs.statSync(src.replace('/src/', '/dist/').replace(/\.ts$/, '.js')).mtimeMs);
  if (fresh()) return;
  const tsc = spawnSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', path.join(ROOT, 'tsconfig.build.json')],
    { cwd: ROOT, encoding: 'utf8' });
  // tsc may exit non-zero on a diagnostic and still emit; what matters is a current dist/queue.
  if (!fresh()) throw new Error(`dist/queue is missing or older than src/queue; tsc said:\n${tsc.stdout}${tsc.stderr}`);
}, 60_000);

describe('ring across threads', () => {
  test('ring across threads - main thread appends, a worker reads, verifies and releases 100 000 records', async () => {
    const firstSeq = 2 ** 32 - 40_000; // crosses 2^32 on the way
    const ring = Ring.create(CAPACITY, firstSeq);
    const hdr = new Int32Array(ring.sab, 0, HEADER_SLOTS);
    const { worker, report, failed, reported } = startWorker({
      role: 'reader', sab: ring.sab, ringPath: DIST_RING, layoutPath: DIST_LAYOUT, firstSeq, count: RECORDS,
      seed: 0x0bad_cafe, maxBody: MAX_BODY, deadlineMs: DEADLINE_MS,
    });
    try {
      const w = helpers.makeWriter(ring, hdr, H_HEAD, H_TAIL, firstSeq, RECORDS, 0x5eed_a11e, MAX_BODY);
      const deadline = Date.now() + DEADLINE_MS;
      for (let head0 = helpers.writeSome(w); head0 !== -1; head0 = helpers.writeSome(w)) {
        const f = failed();
        if (f) throw f;
        if (reported()) break; // the reader gave up (mismatches or its deadline): its report says why
        if (Date.now() > deadline) throw new Error(`writer stuck at seq ${w.next}, head ${ring.head}, tail ${ring.tail}`);
        await waitWhile(hdr, H_HEAD, head0, 20);
      }
      const rep = await report;
      expect(rep).toMatchObject({ count: RECORDS, mismatches: 0, firstMismatch: null, timedOut: false });
      expect(w.next - firstSeq).toBe(RECORDS);
      expect(w.fullWaits).toBeGreaterThan(100); // the reader really was the bottleneck at times
      expect(w.rollbacks).toBeGreaterThan(100);
      expect(rep.wraps as number).toBeGreaterThan(1000); // records total far more than the ring
      expect([ring.head, ring.usedBytes, ring.tailSeq, ring.headSeq]).toEqual([ring.tail, 0, firstSeq + RECORDS, firstSeq + RECORDS]);
    } finally {
      await worker.terminate();
    }
  }, 30_000);

  test('ring across threads - a worker appends, the main thread reads, verifies and releases 100 000 records', async () => {
    const firstSeq = 1;
    const ring = Ring.create(CAPACITY, firstSeq);
    const hdr = new Int32Array(ring.sab, 0, HEADER_SLOTS);
    const { worker, report, failed } = startWorker({
      role: 'writer', sab: ring.sab, ringPath: DIST_RING, layoutPath: DIST_LAYOUT, firstSeq, count: RECORDS,
      seed: 0x5eed_b0b0, maxBody: MAX_BODY, deadlineMs: DEADLINE_MS,
    });
    try {
      const r = helpers.makeReader(ring, hdr, H_HEAD, firstSeq, RECORDS, 0x0dd_ba11, MAX_BODY);
      const deadline = Date.now() + DEADLINE_MS;
      while (r.count < RECORDS && r.mismatches === 0) {
        const tail = helpers.readSome(r);
        if (r.count === RECORDS) break;
        const f = failed();
        if (f) throw f;
        if (Date.now() > deadline) throw new Error(`reader stuck after ${r.count} records, head ${ring.head}, tail ${ring.tail}`);
        await waitWhile(hdr, H_TAIL, tail, 20);
      }
      expect({ count: r.count, mismatches: r.mismatches, firstMismatch: r.firstMismatch })
        .toEqual({ count: RECORDS, mismatches: 0, firstMismatch: null });
      const rep = await report;
      expect(rep).toMatchObject({ written: RECORDS, timedOut: false });
      expect(rep.fullWaits as number).toBeGreaterThan(100);
      expect(rep.rollbacks as number).toBeGreaterThan(100);
      expect(r.wraps).toBeGreaterThan(1000);
      expect([ring.head, ring.usedBytes, ring.tailSeq, ring.headSeq]).toEqual([ring.tail, 0, firstSeq + RECORDS, firstSeq + RECORDS]);
    } finally {
      await worker.terminate();
    }
  }, 30_000);
});
