/**
 * The shapes of API.md as the client sees them. Declared here rather than imported from the
 * server folders so that the client's declarations need neither Node types nor server code.
 */

export type Encoding = 'utf8' | 'base64';

/** `PUT /v1/queues/{queue}` body (all optional). */
export interface QueueConfig {
  memoryBytes?: number;
  maxMessageBytes?: number;
  publisherLimitBytes?: number;
  publisherResumeBytes?: number;
  publisherSpillLimitBytes?: number;
  defaultSubscription?: boolean;
  spill?: boolean;
}

export interface QueueStats {
  name: string;
  messages: number;
  memoryBytes: number;
  memoryUsedBytes: number;
  spilledMessages: number;
  spilledBytes: number;
  published: number;
  dropped: number;
  subscriptions: string[];
  publishers: string[];
  config?: Required<QueueConfig>;
  [extra: string]: unknown;
}

/** `PUT /v1/queues/{queue}/subscriptions/{sub}` body (all optional). */
export interface SubscriptionConfig {
  filter?: { attributes: Record<string, string> };
  ackDeadlineMs?: number;
  maxDeliveries?: number;
  deadLetterQueue?: string;
  startAt?: 'latest' | 'earliest';
  ttlMs?: number;
  maxEvents?: number;
}

export interface SubscriptionInfo extends SubscriptionConfig {
  name: string;
  queue: string;
  backlog: number;
  inFlight: number;
  delivered: number;
  acked: number;
  redelivered: number;
  deadLettered: number;
  dropped?: number;
  expiresAt?: string;
  remainingEvents?: number;
  [extra: string]: unknown;
}

/** The server's own definitions: type-only, so nothing of the server reaches a browser bundle. */
export type { PublisherState } from '../flowcontrol/ledger';

export interface Health {
  status: string;
  epoch: string;
}

/** A message as the server delivers it (API.md, Message). */
export type { Message as WireMessage } from '../queue/message';

/** What `publish` takes: text, bytes (sent as base64), or a message with attributes and key. */
export interface OutgoingMessage {
  data: string | Uint8Array;
  /** Only for string data that is already base64. */
  encoding?: Encoding;
  attributes?: Record<string, string>;
  key?: string;
}

export type PublishInput = string | Uint8Array | OutgoingMessage;

/**
 * The id the server gave a message. `null` only for a duplicate (a re-send after a lost
 * answer) whose original id the server no longer remembers.
 */
export type MessageId = string | null;

export interface AckResult { acked: number; unknown: string[] }
export interface NackResult { nacked: number; unknown: string[] }
export interface ExtendResult { extended: number; unknown: string[] }

export interface PullOptions {
  /** 1..1000 (default 1). */
  max?: number;
  /** Wait up to this long for the first message (0..30000, default 0). */
  waitMs?: number;
  autoAck?: boolean;
  timeoutMs?: number;
}

export interface CallOptions {
  /** Overrides the client's `timeoutMs` for this call. */
  timeoutMs?: number;
}
