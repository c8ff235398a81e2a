'use strict';
// Helpers the Spillway suites share: REST calls, WebSocket open/close, and failure collection.

const { once } = require('node:events');
const { WebSocket } = require('ws');

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

module.exports = { rest, openWs, closeWs, failures };
