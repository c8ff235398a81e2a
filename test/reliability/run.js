#!/usr/bin/env node
'use strict';
/**
 * `npm run test:reliability`: the full form of the reliability suite (RELIABILITY=full:
 * longer loads, more kills and restarts, ten times the fuzzing, the CLI's default timeouts
 * waited out), run serially, bounded in time, then a table of its figures.
 *
 * Extra arguments go to jest (e.g. `npm run test:reliability -- -t greedy`).
 */
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const LIMIT_MS = Number(process.env.RELIABILITY_LIMIT_MS ?? 30 * 60_000);
const root = path.join(__dirname, '..', '..');
const report = path.join(os.tmpdir(), `spillway-reliability-${process.pid}.jsonl`);
fs.writeFileSync(report, '');

const started = Date.now();
const jest = spawn(process.execPath, [require.resolve('jest/bin/jest', { paths: [root] }), '--runInBand', 'test/reliability', ...process.argv.slice(2)], {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, RELIABILITY: 'full', RELIABILITY_REPORT: report },
});
const limit = setTimeout(() => {
  process.stderr.write(`\nreliability: over ${LIMIT_MS / 60_000} minutes, stopping\n`);
  jest.kill('SIGTERM');
  setTimeout(() => jest.kill('SIGKILL'), 5000).unref();
}, LIMIT_MS);

jest.on('exit', (code, signal) => {
  clearTimeout(limit);
  const rows = fs.readFileSync(report, 'utf8').split('\n').filter((l) => l.length > 0).map((l) => JSON.parse(l));
  fs.rmSync(report, { force: true });
  const minutes = ((Date.now() - started) / 60_000).toFixed(1);
  process.stdout.write(`\n${table(rows)}\n\n${rows.length} scenarios, ${minutes} min, node ${process.version}, ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), ` +
    `${Math.round(os.totalmem() / 2 ** 30)} GiB; jest ${signal ?? `exit ${code}`}\n`);
  process.exit(code ?? 1);
});

function table(rows) {
  const head = ['scenario', 'published', 'delivered (sub × msg)', 'lost', 'duplicated', 'corrupt', 'restricted', 'peak RSS', 'notes'];
  const body = rows.map((r) => [
    r.scenario, n(r.published), n(r.delivered), n(r.lost), n(r.duplicated), n(r.corrupt ?? 0), r.restricted === undefined ? '–' : n(r.restricted),
    r.peakRssMiB === undefined ? '–' : `${r.peakRssMiB} MiB`, [r.seconds === undefined ? '' : `${r.seconds} s`, r.note ?? ''].filter((x) => x).join('; '),
  ]);
  const total = ['**total**', ...[1, 2, 3, 4, 5].map((i) => n(rows.reduce((s, r) => s + ([r.published, r.delivered, r.lost, r.duplicated, r.corrupt ?? 0][i - 1] ?? 0), 0))), '', '', ''];
  const lines = [head, head.map((h, i) => (i > 0 && i < 8 ? '---:' : '---')), ...body, total];
  return lines.map((cells) => `| ${cells.join(' | ')} |`).join('\n');
}

function n(x) {
  return typeof x === 'number' ? x.toLocaleString('en-US') : String(x);
}
