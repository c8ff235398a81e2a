// The public surface of the client, shared by the Node entry (index.ts) and the browser entry (browser.ts).
export { SpillwayClient, connect, setDefaultTransport, type ClientOptions, type ClientEvents, type ConnectionState, type ReconnectOptions } from './client';
export { SpillwayClientError, isSpillwayClientError, type SpillwayErrorCode, type ClientErrorCode } from './errors';
export { Message } from './message';
export { Publisher, type BatchOptions, type PublisherOptions, type PublisherStats, type LaneStatus, type RestrictedEvent, type ResumedEvent } from './publisher';
export { Subscription, type SubscribeOptions, type SubscriptionEnd, type EndReason } from './subscription';
export { Transaction } from './transaction';
export { globalWebSocketTransport, type Transport, type TransportInfo, type TransportSocket, type TransportHandlers, type TransportOptions } from './transport';
export type { FetchLike } from './rest';
export type * from './types';
