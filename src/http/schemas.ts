/**
 * The JSON schemas of the routes: params and querystring are validated by fastify,
 * responses are serialised with them, and all of them (bodies included) make the
 * OpenAPI document. Request bodies are validated by the broker's own validators (their
 * messages are better and give API.md's codes), so body schemas here only document.
 */

declare module 'fastify' {
  /** The OpenAPI keywords our routes carry (openapi.ts reads them). */
  interface FastifySchema {
    operationId?: string;
    summary?: string;
    description?: string;
    tags?: string[];
    hide?: boolean;
    consumes?: string[];
    produces?: string[];
  }
}

const NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$';

const name = { type: 'string', pattern: NAME_PATTERN } as const;
const int = { type: 'integer' } as const;
const str = { type: 'string' } as const;
const bool = { type: 'boolean' } as const;
const strMap = { type: 'object', additionalProperties: { type: 'string' } } as const;
const idList = { type: 'array', items: { type: 'string' } } as const;
const unknownList = { type: 'array', items: {} } as const;

export const queueParams = { type: 'object', required: ['queue'], properties: { queue: name } } as const;
export const subscriptionParams = { type: 'object', required: ['queue', 'sub'], properties: { queue: name, sub: name } } as const;
export const publisherParams = { type: 'object', required: ['queue', 'id'], properties: { queue: name, id: str } } as const;
export const txParams = { type: 'object', required: ['id'], properties: { id: str } } as const;
export const publishQuery = { type: 'object', properties: { tx: { type: 'string', minLength: 1 } } } as const;

export const errorEnvelope = {
  type: 'object',
  required: ['error'],
  properties: {
    error: {
      type: 'object',
      required: ['code', 'message'],
      properties: { code: str, message: str, retryAfterMs: int, reason: str, field: str },
      additionalProperties: true,
    },
  },
} as const;

export const queueConfigBody = {
  type: 'object',
  additionalProperties: false,
  properties: {
    memoryBytes: { type: 'integer', minimum: 65536 },
    maxMessageBytes: { type: 'integer', minimum: 1 },
    publisherLimitBytes: { type: 'integer', minimum: 1 },
    publisherResumeBytes: { type: 'integer', minimum: 0 },
    publisherSpillLimitBytes: { type: 'integer', minimum: 1 },
    defaultSubscription: { type: 'boolean', default: true },
    spill: { type: 'boolean', default: true },
  },
} as const;

export const queueStats = {
  type: 'object',
  required: ['name', 'messages', 'memoryBytes', 'memoryUsedBytes', 'spilledMessages', 'spilledBytes', 'published', 'dropped', 'subscriptions', 'publishers'],
  properties: {
    name: str,
    messages: int,
    memoryBytes: int,
    memoryUsedBytes: int,
    spilledMessages: int,
    spilledBytes: int,
    published: int,
    dropped: int,
    subscriptions: { type: 'array', items: str },
    publishers: { type: 'array', items: str },
  },
  additionalProperties: true,
} as const;

export const queueList = { type: 'object', required: ['queues'], properties: { queues: { type: 'array', items: queueStats } } } as const;
export const purgeResponse = { type: 'object', required: ['purged'], properties: { purged: int } } as const;

export const publisherState = {
  type: 'object',
  required: ['id', 'epoch', 'unconsumedBytes', 'unconsumedMessages', 'spilledBytes', 'limitBytes', 'resumeBytes', 'spillLimitBytes', 'restricted'],
  properties: {
    id: str,
    epoch: str,
    unconsumedBytes: int,
    unconsumedMessages: int,
    spilledBytes: int,
    limitBytes: int,
    resumeBytes: int,
    spillLimitBytes: int,
    restricted: bool,
    reason: { type: 'string', enum: ['unconsumed', 'overspilled'] },
    lastPublisherSeq: int,
    safePublisherSeq: int,
  },
  additionalProperties: true,
} as const;

const publishMessage = {
  type: 'object',
  required: ['data'],
  additionalProperties: false,
  properties: {
    data: str,
    encoding: { type: 'string', enum: ['utf8', 'base64'], default: 'utf8' },
    attributes: strMap,
    key: str,
    publisherSeq: { type: 'integer', minimum: 0 },
  },
} as const;

export const publishBody = {
  type: 'object',
  required: ['messages'],
  additionalProperties: false,
  properties: {
    publisherId: str,
    messages: { type: 'array', minItems: 1, maxItems: 1000, items: publishMessage },
  },
} as const;

export const publishResponse = {
  type: 'object',
  required: ['ids', 'seqs', 'duplicates', 'publisher'],
  properties: {
    ids: { type: 'array', items: { type: ['string', 'null'] } },
    seqs: { type: 'array', items: { type: ['integer', 'null'] } },
    duplicates: int,
    publisher: publisherState,
    staged: bool,
  },
} as const;

export const message = {
  type: 'object',
  required: ['id', 'seq', 'data', 'encoding', 'attributes', 'publisherId', 'publishedAt', 'deliveryAttempt'],
  properties: {
    id: str,
    seq: int,
    data: str,
    encoding: { type: 'string', enum: ['utf8', 'base64'] },
    attributes: strMap,
    key: str,
    publisherId: str,
    publisherSeq: int,
    publishedAt: { type: 'string', format: 'date-time' },
    deliveryAttempt: int,
  },
} as const;

export const subscriptionConfigBody = {
  type: 'object',
  additionalProperties: false,
  properties: {
    filter: { type: 'object', properties: { attributes: strMap }, additionalProperties: false },
    // No `default` here: these properties also serialise responses, where a default would be written out.
    ackDeadlineMs: { type: 'integer', minimum: 1, maximum: 600000 },
    maxDeliveries: { type: 'integer', minimum: 1, maximum: 1000 },
    deadLetterQueue: name,
    startAt: { type: 'string', enum: ['latest', 'earliest'] },
    ttlMs: { type: 'integer', minimum: 1 },
    maxEvents: { type: 'integer', minimum: 1 },
  },
} as const;

export const subscriptionInfo = {
  type: 'object',
  required: ['name', 'queue', 'backlog', 'inFlight', 'delivered', 'acked', 'redelivered', 'deadLettered'],
  properties: {
    name: str,
    queue: str,
    backlog: int,
    inFlight: int,
    delivered: int,
    acked: int,
    redelivered: int,
    deadLettered: int,
    dropped: int,
    expiresAt: { type: 'string', format: 'date-time' },
    remainingEvents: int,
    ...subscriptionConfigBody.properties,
  },
  additionalProperties: true,
} as const;

export const subscriptionList = { type: 'object', required: ['subscriptions'], properties: { subscriptions: { type: 'array', items: subscriptionInfo } } } as const;

export const pullBody = {
  type: 'object',
  additionalProperties: false,
  properties: {
    max: { type: 'integer', minimum: 1, maximum: 1000, default: 1 },
    waitMs: { type: 'integer', minimum: 0, maximum: 30000, default: 0 },
    autoAck: { type: 'boolean', default: false },
  },
} as const;

export const pullResponse = { type: 'object', required: ['messages'], properties: { messages: { type: 'array', items: message } } } as const;

export const ackBody = { type: 'object', required: ['ids'], additionalProperties: false, properties: { ids: idList } } as const;
export const ackResponse = { type: 'object', required: ['acked', 'unknown'], properties: { acked: int, unknown: unknownList } } as const;
export const nackBody = {
  type: 'object', required: ['ids'], additionalProperties: false,
  properties: { ids: idList, delayMs: { type: 'integer', minimum: 0, default: 0 } },
} as const;
export const nackResponse = { type: 'object', required: ['nacked', 'unknown'], properties: { nacked: int, unknown: unknownList } } as const;
export const extendBody = {
  type: 'object', required: ['ids', 'ackDeadlineMs'], additionalProperties: false,
  properties: { ids: idList, ackDeadlineMs: { type: 'integer', minimum: 1, maximum: 600000 } },
} as const;
export const extendResponse = { type: 'object', required: ['extended', 'unknown'], properties: { extended: int, unknown: unknownList } } as const;

export const txBeginBody = { type: 'object', additionalProperties: false, properties: { timeoutMs: { type: 'integer', minimum: 1, default: 30000 } } } as const;
export const txBeginResponse = { type: 'object', required: ['id', 'expiresAt'], properties: { id: str, expiresAt: { type: 'string', format: 'date-time' } } } as const;
export const txCommitResponse = { type: 'object', required: ['committed'], properties: { committed: int } } as const;
export const txRollbackResponse = { type: 'object', required: ['rolledBack'], properties: { rolledBack: bool } } as const;

export const health = { type: 'object', required: ['status', 'epoch'], properties: { status: str, epoch: str } } as const;

export const propagationParams = { type: 'object', required: ['queue', 'name'], properties: { queue: name, name } } as const;

export const propagationBody = {
  type: 'object',
  required: ['url', 'queue'],
  properties: { url: str, queue: str, token: str, filter: { type: 'object', properties: { attributes: strMap } } },
} as const;

export const propagationInfo = {
  type: 'object',
  required: ['name', 'url', 'queue', 'state', 'sentSeq', 'ackedSeq', 'lag'],
  properties: {
    name: str, url: str, queue: str,
    state: { type: 'string', enum: ['connecting', 'running', 'restricted', 'failing'] },
    sentSeq: int, ackedSeq: int, lag: int, lastError: str,
  },
} as const;

export const propagationList = { type: 'object', required: ['propagations'], properties: { propagations: { type: 'array', items: propagationInfo } } } as const;
