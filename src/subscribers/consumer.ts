import type { DeliveryBatch } from './batch';

export type EndReason = 'expired' | 'deleted';

/**
 * A push consumer of a subscription: a WebSocket, or an embedded callback.
 * The subscription owns `unacked`; the consumer says whether it can take more now.
 */
export interface Consumer {
  readonly prefetch: number;
  unacked: number;
  /** False while the consumer cannot take more, e.g. its socket's send buffer is above its mark. */
  ready(): boolean;
  /** Takes a batch in this turn: bodies must be copied before returning. */
  deliver(batch: DeliveryBatch): void;
  /** The subscription is gone; the consumer will get nothing more. */
  ended(reason: EndReason): void;
}
