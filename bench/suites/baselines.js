'use strict';
// Suite `baselines`: measures every reference in bench/baselines.js `catalog` (ctx.runs times,
// median reported). Other suites get the same numbers via `await ctx.baseline(key)`, which does
// not measure twice within one process.
//
// BENCH_BASELINES=wsRelay,redisStreams1to1 restricts the suite to some baselines.

exports.description = 'reference figures: fastify hello POST, bare ws relay (+latency), Redis Streams 1→1/1→4 (+latency), Redis pub/sub 1→4';

exports.run = async function run(ctx) {
  const all = Object.keys(ctx.baselines.catalog);
  const only = (process.env.BENCH_BASELINES || '').split(',').map((s) => s.trim()).filter(Boolean);
  const unknown = only.filter((k) => !all.includes(k));
  if (unknown.length) throw new Error(`BENCH_BASELINES: unknown baseline(s) ${unknown.join(', ')} (known: ${all.join(', ')})`);
  for (const key of only.length ? only : all) {
    await ctx.baseline(key); // errors and a missing Redis are reported by ctx.baseline, which resolves to null
  }
};
