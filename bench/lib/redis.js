'use strict';
// Start a throw-away redis-server on a free loopback port, without persistence.
//
//   const r = await startRedis();   // -> { port, pid, version, stop() } or null (reason printed)
//   ...
//   await r.stop();
//
// Env: REDIS_SERVER=/path/to/redis-server to use a specific binary,
//      BENCH_NO_REDIS=1 to skip Redis entirely.
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const net = require('node:net');
const { spawn, spawnSync } = require('node:child_process');

let lastReason = null;
const live = new Set(); // child processes still running, killed on process exit as a last resort

process.on('exit', () => {
  for (const child of live) {
    try { child.kill('SIGKILL'); } catch { /* already gone */ }
  }
});

function fail(reason) {
  lastReason = reason;
  console.error(`[redis] not available: ${reason}`);
  return null;
}

function findRedisServer() {
  if (process.env.REDIS_SERVER) {
    return isExecutable(process.env.REDIS_SERVER) ? process.env.REDIS_SERVER : null;
  }
  const dirs = (process.env.PATH || '').split(path.delimiter).filter(Boolean);
  for (const extra of ['/usr/local/bin', '/usr/bin', '/usr/sbin', '/usr/local/sbin', '/bin', '/sbin']) {
    if (!dirs.includes(extra)) dirs.push(extra);
  }
  for (const dir of dirs) {
    const candidate = path.join(dir, 'redis-server');
    if (isExecutable(candidate)) return candidate;
  }
  return null;
}

function isExecutable(file) {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

function tail(text, lines = 5) {
  return String(text || '').trim().split('\n').slice(-lines).join('\n');
}

function aptGet(args) {
  const res = spawnSync('apt-get', args, {
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    encoding: 'utf8',
    timeout: 10 * 60 * 1000,
    maxBuffer: 64 * 1024 * 1024,
  });
  if (res.error) return { ok: false, detail: res.error.message };
  if (res.status !== 0) return { ok: false, detail: `exit ${res.status}${res.signal ? ' (' + res.signal + ')' : ''}: ${tail(res.stderr || res.stdout)}` };
  return { ok: true };
}

/** Try to install redis-server with apt-get (root only). Returns { path } or { reason }. */
function installRedis() {
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  if (!isRoot) return { reason: 'redis-server is not installed and we are not root (install it with: apt-get install -y redis-server)' };
  console.error('[redis] redis-server not found; running: apt-get install -y redis-server');
  let res = aptGet(['install', '-y', 'redis-server']);
  if (!res.ok) {
    // A fresh container often has empty package lists; refresh once and retry.
    console.error('[redis] install failed, running apt-get update and retrying');
    const upd = aptGet(['update']);
    if (!upd.ok) return { reason: `apt-get update failed: ${upd.detail}` };
    res = aptGet(['install', '-y', 'redis-server']);
    if (!res.ok) return { reason: `apt-get install -y redis-server failed: ${res.detail}` };
  }
  const found = findRedisServer();
  return found ? { path: found } : { reason: 'apt-get install -y redis-server succeeded but no redis-server binary was found on PATH' };
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Send PING until +PONG, or give up at the deadline. */
async function waitForPong(port, child, deadlineMs) {
  while (Date.now() < deadlineMs) {
    if (child.exitCode !== null || child.signalCode !== null) return false;
    const ok = await new Promise((resolve) => {
      const sock = net.connect({ host: '127.0.0.1', port });
      let buf = '';
      const done = (v) => { clearTimeout(timer); sock.destroy(); resolve(v); };
      const timer = setTimeout(() => done(false), 500);
      sock.on('connect', () => sock.write('PING\r\n'));
      sock.on('data', (d) => { buf += d; if (buf.includes('\r\n')) done(buf.startsWith('+PONG')); });
      sock.on('error', () => done(false));
    });
    if (ok) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

function stopChild(child, dir) {
  let promise = null;
  const cleanup = () => {
    live.delete(child);
    try { fs.rmSync(dir, { recursive: true, force: true }); } catch { /* ignore */ }
  };
  return function stop() {
    if (promise) return promise;
    promise = new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) {
        cleanup();
        resolve();
        return;
      }
      const killTimer = setTimeout(() => {
        try { child.kill('SIGKILL'); } catch { /* already gone */ }
      }, 3000);
      child.once('exit', () => {
        clearTimeout(killTimer);
        cleanup();
        resolve();
      });
      try { child.kill('SIGTERM'); } catch { /* exit handler or SIGKILL timer finishes */ }
    });
    return promise;
  };
}

async function spawnOnce(bin, extraArgs) {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spillway-bench-redis-'));
  const args = [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--save', '',
    '--appendonly', 'no',
    '--daemonize', 'no',
    '--dir', dir,
    '--loglevel', 'warning',
    ...extraArgs,
  ];
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  let output = '';
  const keep = (d) => { output = (output + d).slice(-4000); };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  child.on('error', (err) => keep(`\nspawn error: ${err.message}`));
  const stop = stopChild(child, dir);
  const ready = await waitForPong(port, child, Date.now() + 10000);
  if (!ready) {
    await stop();
    return { error: `redis-server did not answer PING on 127.0.0.1:${port}: ${tail(output) || '(no output)'}` };
  }
  return { handle: { port, host: '127.0.0.1', pid: child.pid, bin, stop } };
}

/**
 * Find (or install) redis-server and start it on a free loopback port with no persistence.
 * Resolves to { port, host, pid, bin, version, stop() } or null (the reason is printed and
 * available as lastReason()).
 */
async function startRedis(options = {}) {
  lastReason = null;
  if (process.env.BENCH_NO_REDIS === '1') return fail('disabled by BENCH_NO_REDIS=1');
  let bin = findRedisServer();
  if (!bin) {
    if (process.env.REDIS_SERVER) return fail(`REDIS_SERVER=${process.env.REDIS_SERVER} is not an executable file`);
    const installed = installRedis();
    if (!installed.path) return fail(installed.reason);
    bin = installed.path;
  }
  const version = (spawnSync(bin, ['--version'], { encoding: 'utf8', timeout: 5000 }).stdout || '').trim();
  let lastError = 'unknown error';
  for (let attempt = 0; attempt < 3; attempt++) { // the free port can be taken between probe and bind
    const res = await spawnOnce(bin, options.args || []);
    if (res.handle) return { ...res.handle, version };
    lastError = res.error;
  }
  return fail(lastError);
}

module.exports = { startRedis, findRedisServer, lastReason: () => lastReason };
