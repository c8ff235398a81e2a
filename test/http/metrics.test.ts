import { harness, until, type Harness } from './helpers';

const SERIES = [
  'spillway_messages_published_total',
  'spillway_messages_delivered_total',
  'spillway_messages_acked_total',
  'spillway_messages_redelivered_total',
  'spillway_messages_dead_lettered_total',
  'spillway_messages_dropped_total',
  'spillway_publisher_restricted_total',
  'spillway_queue_messages',
  'spillway_queue_memory_bytes',
  'spillway_queue_spilled_bytes',
  'spillway_subscription_backlog',
  'spillway_subscription_in_flight',
  'spillway_delivery_latency_seconds',
];

describe('http metrics', () => {
  let h: Harness;
  afterEach(() => h.close());

  test('metrics - every series of API.md, read from the broker at scrape time', async () => {
    h = harness({ defaultMetrics: true });
    await h.inject({ method: 'PUT', url: '/v1/queues/q' });
    await h.inject({ method: 'PUT', url: '/v1/queues/none', payload: { defaultSubscription: false } });
    await h.inject({ method: 'POST', url: '/v1/queues/q/messages', payload: { publisherId: 'secret-publisher', messages: [{ data: 'a' }, { data: 'b' }, { data: 'c' }] } });
    await h.inject({ method: 'POST', url: '/v1/queues/none/messages', payload: { messages: [{ data: 'dropped' }] } });
    const pulled = JSON.parse((await h.inject({ method: 'POST', url: '/v1/queues/q/dequeue', payload: { max: 2 } })).body).messages;
    await h.inject({ method: 'POST', url: '/v1/queues/q/ack', payload: { ids: [pulled[0].id] } });

    const res = await h.inject({ method: 'GET', url: '/metrics' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain/);
    const text = res.body;
    for (const s of SERIES) expect(text).toContain(`# TYPE ${s} `);
    expect(text).toMatch(/^# TYPE spillway_messages_published_total counter$/m);
    expect(text).toMatch(/^# TYPE spillway_queue_messages gauge$/m);
    expect(text).toMatch(/^# TYPE spillway_delivery_latency_seconds histogram$/m);
    expect(text).toMatch(/^spillway_messages_published_total\{queue="q"\} 3$/m);
    expect(text).toMatch(/^spillway_messages_dropped_total\{queue="none"\} 1$/m);
    expect(text).toMatch(/^spillway_messages_delivered_total\{queue="q",subscription="default"\} 2$/m);
    expect(text).toMatch(/^spillway_messages_acked_total\{queue="q",subscription="default"\} 1$/m);
    expect(text).toMatch(/^spillway_subscription_in_flight\{queue="q",subscription="default"\} 1$/m);
    expect(text).toMatch(/^spillway_subscription_backlog\{queue="q",subscription="default"\} 1$/m);
    expect(text).toMatch(/^spillway_queue_messages\{queue="q"\} 2$/m);
    expect(text).toMatch(/^spillway_delivery_latency_seconds_bucket\{le="\+Inf"\} 2$/m);
    expect(text).toMatch(/^spillway_delivery_latency_seconds_bucket\{le="0.005"\} \d+$/m);
    expect(text).toMatch(/^spillway_delivery_latency_seconds_sum [\d.e-]+$/m);
    expect(text).toMatch(/^spillway_delivery_latency_seconds_count 2$/m);
    // Default process metrics, and no publisher ids in labels.
    expect(text).toContain('process_cpu_user_seconds_total');
    expect(text).not.toContain('secret-publisher');
  });

  test('metrics - histogram buckets are cumulative', async () => {
    h = harness();
    await h.inject({ method: 'PUT', url: '/v1/queues/q' });
    h.broker.latency.observe(0.1);
    h.broker.latency.observe(3);
    h.broker.latency.observe(20_000);
    const text = (await h.inject({ method: 'GET', url: '/metrics' })).body;
    const buckets = [...text.matchAll(/^spillway_delivery_latency_seconds_bucket\{le="([^"]+)"\} (\d+)$/gm)].map((m) => [m[1], Number(m[2])] as const);
    const counts = buckets.map(([, n]) => n);
    expect(counts).toEqual([...counts].sort((a, b) => a - b));
    expect(buckets[0]).toEqual(['0.0005', 1]);
    expect(buckets.find(([le]) => le === '0.005')).toEqual(['0.005', 2]);
    expect(buckets.at(-1)).toEqual(['+Inf', 3]);
  });

  test('metrics - two servers in one process each have their own registry', async () => {
    h = harness({ defaultMetrics: true });
    const other = harness({ defaultMetrics: true });
    try {
      await other.inject({ method: 'PUT', url: '/v1/queues/elsewhere' });
      expect((await h.inject({ method: 'GET', url: '/metrics' })).body).not.toContain('elsewhere');
      expect((await other.inject({ method: 'GET', url: '/metrics' })).body).toContain('queue="elsewhere"');
    } finally {
      await other.close();
    }
  });

  test('metrics - per propagation: sent and acked seq, lag, and a state series that is 1 for the current state', async () => {
    h = harness();
    const dest = harness();
    try {
      const url = await dest.listen();
      dest.broker.createQueue('in');
      await h.inject({ method: 'PUT', url: '/v1/queues/q', payload: { defaultSubscription: false } });
      expect((await h.inject({ method: 'PUT', url: '/v1/queues/q/propagations/to-dest', payload: { url, queue: 'in' } })).statusCode).toBe(201);
      // Nowhere to go: failing from the start.
      await h.inject({ method: 'PUT', url: '/v1/queues/q/propagations/nowhere', payload: { url: 'http://127.0.0.1:9', queue: 'in' } });
      await h.inject({ method: 'POST', url: '/v1/queues/q/messages', payload: { messages: Array.from({ length: 10 }, (_, i) => ({ data: `m${i}` })) } });
      await until(() => h.broker.propagationInfo('q', 'to-dest').sentSeq === 10, 'sent');
      const four = await dest.broker.pullMessages('in', 'default', { max: 4 });
      dest.broker.ack('in', 'default', four.map((m) => m.id));
      await until(() => h.broker.propagationInfo('q', 'to-dest').ackedSeq === 4 && h.broker.propagationInfo('q', 'nowhere').state === 'failing', 'acked and failing');

      const text = (await h.inject({ method: 'GET', url: '/metrics' })).body;
      expect(text).toMatch(/^# TYPE spillway_propagation_sent_seq gauge$/m);
      expect(text).toMatch(/^# TYPE spillway_propagation_state gauge$/m);
      expect(text).toMatch(/^spillway_propagation_sent_seq\{queue="q",propagation="to-dest"\} 10$/m);
      expect(text).toMatch(/^spillway_propagation_acked_seq\{queue="q",propagation="to-dest"\} 4$/m);
      expect(text).toMatch(/^spillway_propagation_lag\{queue="q",propagation="to-dest"\} 6$/m);
      expect(text).toMatch(/^spillway_propagation_sent_seq\{queue="q",propagation="nowhere"\} 0$/m);
      expect(text).toMatch(/^spillway_propagation_lag\{queue="q",propagation="nowhere"\} 10$/m);
      const states = (name: string): Record<string, number> => Object.fromEntries(
        [...text.matchAll(new RegExp(`^spillway_propagation_state\\{queue="q",propagation="${name}",state="(\\w+)"\\} (\\d+)$`, 'gm'))].map((m) => [m[1], Number(m[2])]));
      expect(states('to-dest')).toEqual({ connecting: 0, running: 1, restricted: 0, failing: 0 });
      expect(states('nowhere')).toEqual({ connecting: 0, running: 0, restricted: 0, failing: 1 });
      // Read at scrape time: a deleted propagation is gone from the next scrape.
      await h.inject({ method: 'DELETE', url: '/v1/queues/q/propagations/nowhere' });
      expect((await h.inject({ method: 'GET', url: '/metrics' })).body).not.toContain('propagation="nowhere"');
    } finally {
      await dest.close();
    }
  });
});
