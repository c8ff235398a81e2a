'use strict';
// A Spillway server (Broker + HTTP, from dist/) in a child process of its own, for suites that
// need a second server with its own CPU, as a real second server has.
//
//   const srv = await startServerProcess();   // { url, pid, close() }
//
// The child listens on 127.0.0.1:0 with a temporary data dir, tells its URL over IPC, and
// closes everything (and removes the dir) when told to, or when the parent goes away.

const { fork } = require('node:child_process');
const { once } = require('node:events');

if (require.main === module) {
  // --- the child ---------------------------------------------------------------------------
  const { mkdtempSync, rmSync } = require('node:fs');
  const { tmpdir } = require('node:os');
  const { join } = require('node:path');
  const { Broker } = require('../../dist');
  const { startServer } = require('../../dist/http');
  const dataDir = mkdtempSync(join(tmpdir(), 'spillway-bench-child-'));
  const broker = new Broker({ memoryBytes: 512 * 1024 * 1024, dataDir });
  let server = null;
  const close = async () => {
    try {
      if (server) await server.close();
      await broker.close();
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
      process.exit(0);
    }
  };
  process.on('message', (m) => { if (m && m.op === 'close') void close(); });
  process.on('disconnect', () => void close());
  startServer({ broker, host: '127.0.0.1', port: 0 }).then((s) => {
    server = s;
    process.send({ op: 'ready', url: s.url });
  }, (err) => {
    process.send({ op: 'error', message: err.message });
    void close();
  });
} else {
  // --- the parent --------------------------------------------------------------------------
  exports.startServerProcess = async function startServerProcess() {
    const child = fork(__filename, [], { execArgv: process.env.BENCH_CHILD_PROF ? ['--cpu-prof', '--cpu-prof-dir=' + process.env.BENCH_CHILD_PROF] : [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const exited = once(child, 'exit');
    const [msg] = await Promise.race([
      once(child, 'message'),
      exited.then(([code]) => { throw new Error(`server process exited (${code}) before it was ready`); }),
    ]);
    if (msg.op !== 'ready') {
      child.kill('SIGKILL');
      throw new Error(`server process: ${msg.message}`);
    }
    return {
      url: msg.url,
      pid: child.pid,
      async close() {
        if (child.exitCode !== null || child.signalCode !== null) return;
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        child.send({ op: 'close' });
        await exited;
        clearTimeout(timer);
      },
    };
  };
}
