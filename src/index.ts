export * from './broker';
export * from './errors';
export { Ring, type Message, type Encoding } from './queue';
export { DeliveryBatch, type Consumer, type EndReason, type SubscriptionConfig, type SubscriptionStats } from './subscribers';
export type { PublisherState } from './flowcontrol';
