'use strict';
// Helpers the Spillway suites share: REST calls, WebSocket open/close, and failure collection.

const { mkdtempSync, rmSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join } = require('node:path');
const { once } = require('node:events');
const { performance } = require('node:perf_hooks');
const { WebSocket } = require('ws');
const { helpers } = require('../baselines');
const { Broker } = require('../../dist');
const { startServer } = require('../../dist/http');

/** The WebSocket workload every Spillway suite measures: 100-byte messages, 100 a publish frame. */
const DATA = 'x'.repeat(helpers.MESSAGE_SIZE);
const HIGH_WATER = helpers.HIGH_WATER; // ~1 MiB of unsent bytes before a WS publisher pauses
const WS_BATCH = 100; // messages a publish frame
const IN_FLIGHT = 8; // unanswered publish frames
const PREFETCH = 1000;
const MAX_LAG = 20000; // a publisher waits while the slowest subscriber is this many messages behind (as the Redis baselines)
const QUEUE = 'bench';

async function rest(base, method, path, body, okStatus) {
  const res = await fetch(base + path, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!okStatus.includes(res.status)) throw new Error(`${method} ${path} -> ${res.status} ${text}`);
  return text ? JSON.parse(text) : undefined;
}

async function openWs(url) {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
    ws.once('close', (code) => reject(new Error(`ws ${url} closed (${code}) before open`)));
  });
  ws.removeAllListeners('error');
  ws.removeAllListeners('close');
  return ws;
}

async function closeWs(sockets) {
  await Promise.all(sockets.filter(Boolean).map((ws) => {
    if (ws.readyState === WebSocket.CLOSED) return undefined;
    const closed = once(ws, 'close').catch(() => {});
    ws.terminate();
    return closed;
  }));
}

/**
 * Tracks failures of a run: a server `error` frame, an unexpected close, an HTTP error. The first
 * one is thrown by check() at the end (and makes the publishers stop).
 */
function failures() {
  const list = [];
  return {
    add(msg) { list.push(msg); },
    get any() { return list.length > 0; },
    check(what) {
      if (list.length) throw new Error(`${what}: ${list.length} failure(s), first: ${list[0]}`);
    },
  };
}

/**
 * A WebSocket consumer of `sub` with acks: it subscribes with `prefetch`, acks each messages
 * frame with one ack frame of all its ids, and calls onMessages(messages, now) before acking.
 */
async function subscriber(wsUrl, sub, fails, { onMessages, prefetch = PREFETCH } = {}) {
  const ws = await openWs(wsUrl);
  const state = { ws, count: 0, closing: false };
  const prefix = `{"op":"ack","queue":${JSON.stringify(QUEUE)},"subscription":${JSON.stringify(sub)},"ids":`;
  let subscribed;
  const ready = new Promise((resolve, reject) => { subscribed = { resolve, reject }; });
  ws.on('error', (err) => fails.add(`subscriber ${sub}: socket error ${err.message}`));
  ws.on('close', (code, reason) => {
    if (!state.closing) fails.add(`subscriber ${sub}: socket closed ${code} ${reason}`);
    subscribed.reject(new Error(`subscriber ${sub}: closed before subscribed (${code} ${reason})`));
  });
  ws.on('message', (data) => {
    const now = performance.now();
    let f;
    try {
      f = JSON.parse(data.toString());
    } catch (err) {
      fails.add(`subscriber ${sub}: frame is not JSON: ${err.message}`);
      return;
    }
    if (f.op === 'messages') {
      const msgs = f.messages;
      const ids = new Array(msgs.length);
      for (let i = 0; i < msgs.length; i++) ids[i] = msgs[i].id;
      if (onMessages) onMessages(msgs, now);
      ws.send(prefix + JSON.stringify(ids) + '}');
      state.count += msgs.length;
      if (state.onProgress) state.onProgress();
    } else if (f.op === 'subscribed') {
      subscribed.resolve();
    } else {
      fails.add(`subscriber ${sub}: unexpected frame ${data.toString().slice(0, 300)}`);
      if (f.op === 'error') subscribed.reject(new Error(`subscriber ${sub}: ${f.code} ${f.message}`));
    }
  });
  ws.send(JSON.stringify({ op: 'subscribe', ref: 1, queue: QUEUE, subscription: sub, prefetch }));
  await ready;
  return state;
}

/**
 * A WebSocket publisher of WS_BATCH-message frames with a ref, keeping at most IN_FLIGHT frames
 * unanswered, pausing while bufferedAmount ≥ HIGH_WATER and while lag() > MAX_LAG.
 * PUBLISHER_RESTRICTED errors are waited out (counted); any other error fails the run.
 */
async function wsPublisher(wsUrl, fails, lag) {
  const ws = await openWs(wsUrl);
  const frameTail = `,"queue":${JSON.stringify(QUEUE)},"publisherId":"bench-ws","messages":${JSON.stringify(Array.from({ length: WS_BATCH }, () => ({ data: DATA })))}}`;
  const st = { ws, sent: 0, acked: 0, restricted: 0, stopped: false, closing: false };
  let ref = 0;
  let inFlight = 0;
  let waiting = false; // a setImmediate/timeout retry is pending
  let holdUntil = 0;
  const pump = () => {
    waiting = false;
    while (!st.stopped && !fails.any && ws.readyState === WebSocket.OPEN && inFlight < IN_FLIGHT) {
      if (performance.now() < holdUntil) { retryIn(Math.max(1, holdUntil - performance.now())); return; }
      if (ws.bufferedAmount >= HIGH_WATER) { retryIn(0); return; }
      if (lag() > MAX_LAG) return; // the subscribers call st.wake() as they progress
      ws.send('{"op":"publish","ref":' + (++ref) + frameTail);
      inFlight++;
      st.sent += WS_BATCH;
    }
  };
  const retryIn = (ms) => {
    if (waiting) return;
    waiting = true;
    if (ms > 0) setTimeout(pump, ms);
    else setImmediate(pump);
  };
  st.wake = () => { if (!waiting && inFlight < IN_FLIGHT && !st.stopped) pump(); };
  ws.on('error', (err) => fails.add(`publisher: socket error ${err.message}`));
  ws.on('close', (code, reason) => { if (!st.closing) fails.add(`publisher: socket closed ${code} ${reason}`); });
  ws.on('message', (data) => {
    const s = data.toString();
    if (s.startsWith('{"op":"published"')) {
      inFlight--;
      st.acked += WS_BATCH;
      pump();
      return;
    }
    let f;
    try { f = JSON.parse(s); } catch { fails.add(`publisher: frame is not JSON: ${s.slice(0, 200)}`); return; }
    if (f.op === 'error' && f.code === 'PUBLISHER_RESTRICTED') {
      inFlight--;
      st.sent -= WS_BATCH;
      st.restricted++;
      holdUntil = performance.now() + (f.retryAfterMs || 10);
      pump();
      return;
    }
    fails.add(`publisher: unexpected frame ${s.slice(0, 300)}`);
  });
  st.start = pump;
  return st;
}

/**
 * A fresh Broker (in a temporary data dir) and HTTP server on 127.0.0.1:0; `setup(url)` creates
 * what the run needs. `close()` stops both and removes the data dir.
 */
async function startSpillway(label, setup = async () => {}) {
  const dataDir = mkdtempSync(join(tmpdir(), `spillway-bench-${label}-`));
  const broker = new Broker({ memoryBytes: 512 * 1024 * 1024, dataDir });
  let server = null;
  try {
    server = await startServer({ broker, host: '127.0.0.1', port: 0 });
    await setup(server.url);
  } catch (err) {
    if (server) await server.close().catch(() => {});
    await broker.close().catch(() => {});
    rmSync(dataDir, { recursive: true, force: true });
    throw err;
  }
  return {
    url: server.url,
    wsUrl: server.url.replace(/^http/, 'ws') + '/v1/ws',
    broker,
    async close() {
      try {
        await server.close();
      } finally {
        try { await broker.close(); } finally { rmSync(dataDir, { recursive: true, force: true }); }
      }
    },
  };
}

module.exports = {
  startSpillway,
  rest, openWs, closeWs, failures, subscriber, wsPublisher,
  DATA, HIGH_WATER, WS_BATCH, IN_FLIGHT, PREFETCH, MAX_LAG, QUEUE,
};
