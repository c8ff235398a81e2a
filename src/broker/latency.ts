/**
 * Publish-to-first-delivery latency in fixed buckets: one array increment per delivery,
 * read by the metrics endpoint at scrape time (no metric library on the hot path).
 */
export const LATENCY_BUCKETS_SECONDS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const BOUNDS_MS = LATENCY_BUCKETS_SECONDS.map((s) => s * 1000);

export class LatencyHistogram {
  /** Counts per bucket (not cumulative); the last slot is +Inf. */
  readonly counts = new Float64Array(BOUNDS_MS.length + 1);
  sumMs = 0;
  count = 0;

  observe(ms: number): void {
    if (ms < 0) ms = 0;
    let i = 0;
    while (i < BOUNDS_MS.length && ms > BOUNDS_MS[i]!) i++;
    this.counts[i]!++;
    this.sumMs += ms;
    this.count++;
  }
}
