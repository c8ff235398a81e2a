'use strict';
// Small statistics helpers for the benchmark harness (no dependencies).

function toSortedArray(values) {
  // Accepts plain arrays and typed arrays; never mutates the input.
  const copy = ArrayBuffer.isView(values) ? Float64Array.from(values) : Float64Array.from(values.filter((v) => typeof v === 'number' && Number.isFinite(v)));
  copy.sort();
  return copy;
}

/** Median of a list of numbers (mean of the two middle values for even lengths). NaN when empty. */
function median(values) {
  const s = toSortedArray(values);
  const n = s.length;
  if (n === 0) return NaN;
  const mid = n >> 1;
  return n % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** Nearest-rank percentile on an already sorted (ascending) array; p in [0, 100]. */
function percentileSorted(sorted, p) {
  const n = sorted.length;
  if (n === 0) return NaN;
  if (p <= 0) return sorted[0];
  if (p >= 100) return sorted[n - 1];
  const rank = Math.ceil((p / 100) * n);
  return sorted[Math.min(n, Math.max(1, rank)) - 1];
}

/** Nearest-rank percentile of an unsorted list. */
function percentile(values, p) {
  return percentileSorted(toSortedArray(values), p);
}

/**
 * Several percentiles at once (sorts only once).
 * percentiles(samples, [50, 99]) -> { p50: ..., p99: ... }
 */
function percentiles(values, ps = [50, 90, 99]) {
  const s = toSortedArray(values);
  const out = {};
  for (const p of ps) out['p' + String(p).replace('.', '_')] = percentileSorted(s, p);
  return out;
}

function mean(values) {
  let sum = 0;
  let n = 0;
  for (const v of values) { sum += v; n++; }
  return n ? sum / n : NaN;
}

/**
 * Median of a list of measurement results. Numbers -> number. Objects -> an object with the
 * median of every numeric key (e.g. {p50, p99} latency results). null/undefined samples are ignored.
 */
function medianOfSamples(samples) {
  const present = samples.filter((s) => s !== null && s !== undefined);
  if (present.length === 0) return null;
  if (present.every((s) => typeof s === 'number')) return median(present);
  if (present.every((s) => typeof s === 'object')) {
    const keys = new Set();
    for (const s of present) for (const k of Object.keys(s)) if (typeof s[k] === 'number') keys.add(k);
    const out = {};
    for (const k of keys) out[k] = median(present.map((s) => s[k]).filter((v) => typeof v === 'number'));
    return out;
  }
  throw new TypeError('repeat(): measurement must return a number or an object of numbers');
}

/**
 * Run the async measurement `fn(i)` n times, sequentially, and return
 * { median, samples } where median is a number or an object of per-key medians.
 */
async function repeat(n, fn) {
  const runs = Math.max(1, Math.floor(Number(n) || 1));
  const samples = [];
  for (let i = 0; i < runs; i++) {
    if (typeof global.gc === 'function') global.gc();
    samples.push(await fn(i));
  }
  return { median: medianOfSamples(samples), samples };
}

module.exports = { median, mean, percentile, percentiles, percentileSorted, medianOfSamples, repeat };
