export { Broker, ANONYMOUS_PUBLISHER, DEFAULT_MEMORY_BYTES, type BrokerOptions, type PublishOutcome } from './broker';
export { parseQueueConfig, QUEUE_DEFAULTS, type QueueConfig } from './config';
export { prepareBatch, prepareMessage, prepareRaw, checkPublisherId, MAX_BATCH, type Prepared, type PublishMessage } from './prepare';
export type { QueueStats, PublishResult } from './queue';
export { LATENCY_BUCKETS_SECONDS, LatencyHistogram } from './latency';
