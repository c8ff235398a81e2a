export { DeliveryBatch } from './batch';
export type { Consumer, EndReason } from './consumer';
export { parseSubscriptionConfig, SUBSCRIPTION_DEFAULTS, type SubscriptionConfig } from './config';
export type { Subscription, SubscriptionStats } from './subscription';
