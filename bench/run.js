#!/usr/bin/env node
'use strict';
// Benchmark runner.
//
//   node bench/run.js                 run every suite in bench/suites/ (baselines first)
//   node bench/run.js baselines ...   run the named suites, in the given order
//   node bench/run.js --list          list suites
//
// Env: BENCH_SECONDS (measurement window per run, default 3), BENCH_RUNS (repetitions, the
// median is reported, default 3), BENCH_NO_REDIS=1 (skip Redis), BENCH_BASELINES=key,key
// (only these baselines), BENCH_JSON (output file, default bench/results/latest.json).
//
// A suite is bench/suites/<name>.js exporting `async function run(ctx)`; see bench/README.md.
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const stats = require('./lib/stats');
const { startRedis, lastReason } = require('./lib/redis');
const { printTable, fmtNumber, DEFAULT_JSON } = require('./lib/table');
const baselines = require('./baselines');

const SUITES_DIR = path.join(__dirname, 'suites');
const EXIT_GRACE_MS = 10000; // after the report, complain if something still keeps the process alive

function log(...args) {
  console.error('[bench]', ...args);
}

function envNumber(name, fallback, { integer = false } = {}) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const v = Number(raw);
  if (!Number.isFinite(v) || v <= 0 || (integer && !Number.isInteger(v))) {
    throw new Error(`${name} must be a positive ${integer ? 'integer' : 'number'}, got ${JSON.stringify(raw)}`);
  }
  return v;
}

function listSuites() {
  let files = [];
  try {
    files = fs.readdirSync(SUITES_DIR).filter((f) => f.endsWith('.js') && !f.startsWith('_'));
  } catch { /* no suites dir */ }
  const names = files.map((f) => f.slice(0, -3)).sort();
  // baselines first so every other suite's ratios use baselines already on the table
  return names.includes('baselines') ? ['baselines', ...names.filter((n) => n !== 'baselines')] : names;
}

function loadSuite(name) {
  if (!/^[\w.-]+$/.test(name)) throw new Error(`invalid suite name: ${name}`);
  const file = path.join(SUITES_DIR, `${name}.js`);
  if (!fs.existsSync(file)) throw new Error(`unknown suite "${name}" (available: ${listSuites().join(', ') || 'none'})`);
  const mod = require(file);
  if (typeof mod.run !== 'function') throw new Error(`suite ${name} (${file}) does not export run(ctx)`);
  return mod;
}

/** Parse a target such as '>=0.8', '<= 2', '>1.5x'. Returns null for free-text targets. */
function parseTarget(target) {
  if (typeof target !== 'string') return null;
  const m = /^\s*(>=|<=|>|<|≥|≤)\s*(-?\d+(?:\.\d+)?)\s*[x×]?\s*$/.exec(target);
  if (!m) return null;
  const op = { '≥': '>=', '≤': '<=' }[m[1]] || m[1];
  return { op, n: Number(m[2]) };
}

function checkTarget(target, actual) {
  const t = parseTarget(target);
  if (!t || typeof actual !== 'number' || !Number.isFinite(actual)) return null;
  switch (t.op) {
    case '>=': return actual >= t.n;
    case '<=': return actual <= t.n;
    case '>': return actual > t.n;
    case '<': return actual < t.n;
    default: return null;
  }
}

function createContext({ seconds, runs }) {
  const rows = [];
  const baselineValues = new Map(); // 'wsRelay' -> number, 'wsRelayLatency.p99' -> number
  const baselineRuns = new Map(); // key -> Promise<median|null>
  let redisPromise = null;
  let redisHandle = null;
  let currentSuite = null;
  let failures = 0;

  const ctx = {
    seconds,
    runs,
    baselines,
    stats,
    log,

    /** repeat(fn) runs fn ctx.runs times; repeat(n, fn) n times. -> { median, samples } */
    repeat(a, b) {
      return typeof a === 'function' ? stats.repeat(runs, a) : stats.repeat(a, b);
    },

    /** Lazily started Redis: resolves to { port, host, pid, version, stop } or null (reason printed). */
    redis() {
      if (!redisPromise) {
        redisPromise = startRedis().then((h) => {
          redisHandle = h;
          if (h) log(`redis-server started on 127.0.0.1:${h.port} (pid ${h.pid}; ${h.version.split(' ').slice(0, 3).join(' ')})`);
          return h;
        }, (err) => {
          log(`redis could not be started: ${err.message}`);
          return null;
        });
      }
      return redisPromise;
    },

    /** Why Redis is unavailable (after ctx.redis() resolved to null). */
    redisReason() {
      return lastReason();
    },

    /**
     * Add a result row. Fills in suite, baselineValue (from ctx.baseline() results of this run,
     * when `baseline` names one), ratio = value / baselineValue, and pass (from a '>=0.8'-style
     * target, compared with the ratio when there is a baseline, else with the value).
     */
    addRow(row) {
      if (!row || typeof row.name !== 'string' || !row.name) throw new TypeError('addRow: row.name is required');
      const r = {
        name: row.name,
        value: row.value ?? null,
        unit: row.unit ?? '',
        baseline: row.baseline ?? null,
        baselineValue: row.baselineValue ?? null,
        ratio: row.ratio ?? null,
        target: row.target ?? null,
        pass: row.pass ?? null,
        suite: row.suite ?? currentSuite,
      };
      for (const extra of ['key', 'samples', 'note']) if (row[extra] !== undefined) r[extra] = row[extra];
      if (r.baseline && r.baselineValue === null && baselineValues.has(r.baseline)) r.baselineValue = baselineValues.get(r.baseline);
      if (r.ratio === null && typeof r.value === 'number' && typeof r.baselineValue === 'number' && r.baselineValue !== 0) {
        r.ratio = r.value / r.baselineValue;
      }
      if (row.pass === undefined && r.target !== null) r.pass = checkTarget(r.target, r.baseline ? r.ratio : r.value);
      rows.push(r);
      return r;
    },

    /**
     * Median value of a baseline from bench/baselines.js `catalog` (e.g. 'wsRelay'), measured at
     * most once per process (ctx.runs repetitions) and added to the table. Latency baselines
     * resolve to { p50, p99 }. Resolves to null when it cannot run (Redis unavailable, error).
     */
    baseline(key) {
      if (baselineRuns.has(key)) return baselineRuns.get(key);
      const entry = baselines.catalog[key];
      if (!entry) return Promise.reject(new Error(`unknown baseline "${key}" (known: ${Object.keys(baselines.catalog).join(', ')})`));
      const p = (async () => {
        let port;
        if (entry.redis) {
          const redis = await ctx.redis();
          if (!redis) {
            log(`skipping baseline ${key} (${entry.label}): Redis unavailable: ${lastReason() || 'unknown reason'}`);
            return null;
          }
          port = redis.port;
        }
        log(`baseline ${key}: ${entry.label} — ${runs} run(s) × ${seconds} s`);
        let result;
        try {
          result = await stats.repeat(runs, async (i) => {
            const t0 = Date.now();
            const v = await entry.fn(port);
            log(`  run ${i + 1}/${runs}: ${describe(v, entry.unit)} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
            return v;
          });
        } catch (err) {
          failures++;
          log(`baseline ${key} FAILED: ${err && err.stack ? err.stack : err}`);
          return null;
        }
        const suite = 'baselines';
        if (typeof result.median === 'number') {
          baselineValues.set(key, result.median);
          ctx.addRow({ name: entry.label, value: result.median, unit: entry.unit, key, suite, samples: result.samples });
        } else if (result.median && typeof result.median === 'object') {
          for (const q of ['p50', 'p99']) {
            if (typeof result.median[q] !== 'number') continue;
            baselineValues.set(`${key}.${q}`, result.median[q]);
            ctx.addRow({ name: `${entry.label} ${q}`, value: result.median[q], unit: entry.unit, key: `${key}.${q}`, suite, samples: result.samples.map((s) => s[q]) });
          }
        }
        return result.median;
      })();
      baselineRuns.set(key, p);
      return p;
    },
  };

  return {
    ctx,
    rows,
    setSuite(name) { currentSuite = name; },
    failures: () => failures,
    async close() {
      if (redisPromise) await redisPromise;
      if (redisHandle) {
        await redisHandle.stop();
        log('redis-server stopped');
        redisHandle = null;
      }
    },
  };
}

function describe(v, unit) {
  if (typeof v === 'number') return `${fmtNumber(v)} ${unit}`;
  if (v && typeof v === 'object') return Object.entries(v).map(([k, x]) => `${k}=${typeof x === 'number' && k.startsWith('p') ? x.toFixed(3) : x}`).join(' ') + ` (${unit})`;
  return String(v);
}

async function main(argv) {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log('usage: node bench/run.js [--list] [suite...]\nenv: BENCH_SECONDS, BENCH_RUNS, BENCH_NO_REDIS, BENCH_BASELINES, BENCH_JSON');
    return 0;
  }
  if (argv.includes('--list')) {
    for (const name of listSuites()) {
      const mod = loadSuite(name);
      console.log(`${name}${mod.description ? ' — ' + mod.description : ''}`);
    }
    return 0;
  }
  const seconds = envNumber('BENCH_SECONDS', 3);
  const runs = envNumber('BENCH_RUNS', 3, { integer: true });
  const names = argv.filter((a) => !a.startsWith('-'));
  const suites = names.length ? names : listSuites();
  if (suites.length === 0) {
    log(`no suites found in ${SUITES_DIR}`);
    return 1;
  }
  const loaded = suites.map((name) => [name, loadSuite(name)]); // fail fast on typos

  const cpus = os.cpus();
  log(`node ${process.version}, ${cpus.length} CPU(s) ${cpus[0] ? cpus[0].model.trim() : ''}, load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  log(`suites: ${suites.join(', ')}; BENCH_SECONDS=${seconds} BENCH_RUNS=${runs}`);

  const h = createContext({ seconds, runs });
  activeHarness = h;
  let exitCode = 0;
  try {
    for (const [name, mod] of loaded) {
      h.setSuite(name);
      log(`=== suite ${name} ===`);
      const t0 = Date.now();
      try {
        await mod.run(h.ctx);
      } catch (err) {
        exitCode = 1;
        log(`suite ${name} FAILED: ${err && err.stack ? err.stack : err}`);
      }
      log(`=== suite ${name} done in ${((Date.now() - t0) / 1000).toFixed(1)} s ===`);
    }
  } finally {
    await h.close();
    activeHarness = null;
  }
  if (h.failures()) exitCode = 1;

  console.log(`\n## Benchmark results (BENCH_SECONDS=${seconds}, BENCH_RUNS=${runs}, median of runs; ratio = value / baseline measured in this run)\n`);
  if (h.rows.length === 0) console.log('(no rows)\n');
  printTable(h.rows, { file: process.env.BENCH_JSON || DEFAULT_JSON });
  return exitCode;
}

let activeHarness = null;
let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    log(`${sig}: stopping`);
    const h = activeHarness;
    Promise.resolve(h && h.close()).finally(() => process.exit(130));
  });
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
    // Everything should be closed by now, so the process exits on its own. If something leaked,
    // say what it is instead of hanging forever (the timer itself does not keep the process alive).
    setTimeout(() => {
      const left = process.getActiveResourcesInfo().filter((r) => r !== 'Timeout');
      log(`process still alive ${EXIT_GRACE_MS / 1000} s after finishing; open resources: ${left.join(', ') || '(timers)'} — forcing exit`);
      process.exit(code || 1);
    }, EXIT_GRACE_MS).unref();
  }, (err) => {
    log(err && err.stack ? err.stack : String(err));
    process.exitCode = 1;
    setTimeout(() => process.exit(1), EXIT_GRACE_MS).unref();
  });
}

module.exports = { main, createContext, listSuites, parseTarget, checkTarget };
