import type { FastifyInstance } from 'fastify';
import { Registry, collectDefaultMetrics } from 'prom-client';
import { LATENCY_BUCKETS_SECONDS, type Broker } from '../broker';
import { PROPAGATION_STATES } from '../propagation';

type Labels = Record<string, string>;
interface Sample { value: number; labels?: Labels; metricName?: string }
type MetricType = 'counter' | 'gauge' | 'histogram';

/**
 * A metric read from the broker at scrape time: the registry calls `get()`, which walks
 * the queues once. Nothing is counted on the hot paths for metrics' sake. Labels are queue,
 * subscription and propagation names only (their number is set by configuration, never by
 * publisher ids).
 */
class Collected {
  readonly name: string;
  readonly help: string;
  readonly type: MetricType;
  readonly aggregator = 'sum';
  readonly #read: () => Sample[];

  constructor(name: string, help: string, type: MetricType, read: () => Sample[]) {
    this.name = name;
    this.help = help;
    this.type = type;
    this.#read = read;
  }

  get(): { name: string; help: string; type: MetricType; values: Sample[]; aggregator: string } {
    return { name: this.name, help: this.help, type: this.type, values: this.#read(), aggregator: this.aggregator };
  }

  reset(): void { /* values live in the broker */ }
}

export interface MetricsOptions {
  /** Process metrics of prom-client (default true). */
  defaultMetrics?: boolean;
  /** Extra gauges of the HTTP layer. */
  webSocketConnections?: () => number;
}

/** A registry of its own per server, so several servers in one process do not clash. */
export function createRegistry(broker: Broker, opts: MetricsOptions = {}): Registry {
  const registry = new Registry();
  if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry });
  const add = (name: string, help: string, type: MetricType, read: () => Sample[]): void => {
    registry.registerMetric(new Collected(name, help, type, read) as unknown as Parameters<Registry['registerMetric']>[0]);
  };
  const perQueue = (value: (q: ReturnType<Broker['queues']>[number]) => number) => (): Sample[] =>
    broker.queues().map((q) => ({ value: value(q), labels: { queue: q.name } }));
  const perSub = (value: (s: ReturnType<Broker['queues']>[number]['subscriptions'][number]) => number) => (): Sample[] => {
    const out: Sample[] = [];
    for (const q of broker.queues()) for (const s of q.subscriptions) out.push({ value: value(s), labels: { queue: q.name, subscription: s.name } });
    return out;
  };

  const perPropagation = (value: (p: ReturnType<Broker['listPropagations']>[number]) => number) => (): Sample[] => {
    const out: Sample[] = [];
    for (const q of broker.queues()) for (const p of broker.listPropagations(q.name)) out.push({ value: value(p), labels: { queue: q.name, propagation: p.name } });
    return out;
  };

  add('spillway_messages_published_total', 'Messages accepted by publish, per queue', 'counter', perQueue((q) => q.published));
  add('spillway_messages_delivered_total', 'Deliveries (first and repeated), per subscription', 'counter', perSub((s) => s.delivered));
  add('spillway_messages_acked_total', 'Messages acked, per subscription', 'counter', perSub((s) => s.acked));
  add('spillway_messages_redelivered_total', 'Deliveries after the first, per subscription', 'counter', perSub((s) => s.redelivered));
  add('spillway_messages_dead_lettered_total', 'Messages moved to a dead-letter queue, per subscription', 'counter', perSub((s) => s.deadLettered));
  add('spillway_messages_dropped_total',
    'Messages dropped: no eligible subscription at publish, or out of delivery attempts without a dead-letter queue', 'counter',
    perQueue((q) => {
      let n = q.dropped;
      for (const s of q.subscriptions) n += s.dropped;
      return n;
    }));
  add('spillway_publisher_restricted_total', 'Times a publisher was restricted by flow control, per queue', 'counter', perQueue((q) => q.ledger.restrictions));
  add('spillway_queue_messages', 'Messages retained by a queue (in memory or spilled)', 'gauge', perQueue((q) => q.retained));
  add('spillway_queue_memory_bytes', 'Ring memory in use by a queue', 'gauge', perQueue((q) => q.ring.usedBytes));
  add('spillway_queue_memory_limit_bytes', 'Ring memory of a queue', 'gauge', perQueue((q) => q.config.memoryBytes));
  add('spillway_queue_spilled_bytes', 'Bytes of a queue\'s messages on disk', 'gauge', perQueue((q) => q.stats().spilledBytes));
  add('spillway_subscription_backlog', 'Messages waiting to be delivered, per subscription', 'gauge', perSub((s) => s.backlog));
  add('spillway_subscription_in_flight', 'Messages delivered and not yet acked, per subscription', 'gauge', perSub((s) => s.inFlight));
  add('spillway_spill_disk_bytes', 'Bytes of spill files on disk, all queues', 'gauge', () => [{ value: broker.spillStats.usedBytes }]);
  add('spillway_spill_disk_limit_bytes', 'Disk budget for spill files (--max-disk)', 'gauge', () => [{ value: broker.spillStats.maxBytes }]);
  add('spillway_spill_errors_total', 'Failed spill writes and reads', 'counter', () => [{ value: broker.spillStats.errors }]);
  add('spillway_spill_corrupt_records_total', 'Spilled records whose checksum failed (never delivered)', 'counter', () => [{ value: broker.spillStats.corruptRecords }]);
  add('spillway_propagation_sent_seq', 'Highest source seq a propagation has sent to its destination (this run)', 'gauge', perPropagation((p) => p.sentSeq));
  add('spillway_propagation_acked_seq', 'Highest source seq consumed at the destination and so acked here (this run)', 'gauge', perPropagation((p) => p.ackedSeq));
  add('spillway_propagation_lag', 'Messages of a propagation not yet consumed at its destination (waiting, sent, or in flight)', 'gauge', perPropagation((p) => p.lag));
  add('spillway_propagation_state', 'State of a propagation: 1 for the current one, 0 for the others', 'gauge', () => {
    const out: Sample[] = [];
    for (const q of broker.queues()) {
      for (const p of broker.listPropagations(q.name)) {
        for (const state of PROPAGATION_STATES) out.push({ value: p.state === state ? 1 : 0, labels: { queue: q.name, propagation: p.name, state } });
      }
    }
    return out;
  });
  if (opts.webSocketConnections !== undefined) {
    const n = opts.webSocketConnections;
    add('spillway_websocket_connections', 'Open WebSocket connections', 'gauge', () => [{ value: n() }]);
  }

  const name = 'spillway_delivery_latency_seconds';
  add(name, 'Time from publish to first delivery', 'histogram', () => {
    const h = broker.latency;
    const out: Sample[] = [];
    let cum = 0;
    for (let i = 0; i < LATENCY_BUCKETS_SECONDS.length; i++) {
      cum += h.counts[i]!;
      out.push({ metricName: name + '_bucket', labels: { le: String(LATENCY_BUCKETS_SECONDS[i]) }, value: cum });
    }
    cum += h.counts[LATENCY_BUCKETS_SECONDS.length]!;
    out.push({ metricName: name + '_bucket', labels: { le: '+Inf' }, value: cum });
    out.push({ metricName: name + '_sum', value: h.sumMs / 1000 });
    out.push({ metricName: name + '_count', value: h.count });
    return out;
  });
  return registry;
}

export function registerMetricsRoute(app: FastifyInstance, registry: Registry): void {
  app.get('/metrics', {
    config: { perm: 'any' },
    schema: { operationId: 'metrics', summary: 'Prometheus metrics', tags: ['operations'], produces: ['text/plain'] },
  }, async (_req, reply) => {
    const text = await registry.metrics();
    return reply.type(registry.contentType).send(text);
  });
}
