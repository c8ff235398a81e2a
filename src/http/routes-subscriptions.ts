import type { FastifyInstance, FastifyReply } from 'fastify';
import type { DeliveryBatch } from '../subscribers';
import { boolField, idsField, intField, objectBody, requiredInt } from './body';
import type { HttpContext } from './context';
import * as S from './schemas';

interface QueueParams { queue: string }
interface SubParams { queue: string; sub: string }

const PULL_PREFIX = Buffer.from('{"messages":[');
const PULL_SUFFIX = Buffer.from(']}');
const MAX_PULL = 1000;
const MAX_WAIT_MS = 30_000;
const MAX_DELAY_MS = 24 * 3600_000;
const MAX_ACK_DEADLINE_MS = 600_000;
const DEFAULT_SUBSCRIPTION = 'default';

/** The pull response body, built from the stored bodies in the delivering turn (no JSON.stringify). */
const renderPull = (b: DeliveryBatch): Buffer => b.encode(PULL_PREFIX, PULL_SUFFIX);

/** Subscriptions: create, get, list, delete; pull, ack, nack, extend; and the default-subscription aliases. */
export function registerSubscriptionRoutes(app: FastifyInstance, ctx: HttpContext): void {
  const broker = ctx.broker;

  async function pull(queue: string, sub: string, body: unknown, reply: FastifyReply): Promise<FastifyReply> {
    const b = objectBody(body, ['max', 'waitMs', 'autoAck']);
    const max = intField(b, 'max', 1, MAX_PULL, 1);
    const waitMs = intField(b, 'waitMs', 0, MAX_WAIT_MS, 0);
    const autoAck = boolField(b, 'autoAck', false);
    // A long poll answers empty when the server starts to close, so shutdown does not wait for it.
    const wait = ctx.closing ? 0 : waitMs;
    let out: Buffer;
    if (wait > 0) {
      // A long poll ends empty, taking nothing, when its client goes away or the server closes.
      const stop = new AbortController();
      const gone = (): void => { if (!reply.raw.writableFinished) stop.abort(); };
      reply.raw.once('close', gone);
      void ctx.closed.then(() => stop.abort());
      out = await broker.pull(queue, sub, max, wait, autoAck, renderPull, stop.signal);
      reply.raw.off('close', gone);
    } else {
      out = await broker.pull(queue, sub, max, wait, autoAck, renderPull);
    }
    return reply.code(200).type('application/json; charset=utf-8').send(out);
  }

  function ack(queue: string, sub: string, body: unknown): { acked: number; unknown: unknown[] } {
    const b = objectBody(body, ['ids']);
    return broker.ack(queue, sub, idsField(b));
  }

  app.put<{ Params: SubParams; Body: unknown }>('/v1/queues/:queue/subscriptions/:sub', {
    config: { perm: 'admin' },
    schema: {
      operationId: 'createSubscription', summary: 'Create a subscription (200 when the same config exists, 409 when it differs)', tags: ['subscriptions'],
      params: S.subscriptionParams, body: S.subscriptionConfigBody, response: { 200: S.subscriptionInfo, 201: S.subscriptionInfo },
    },
  }, (req, reply) => {
    const { created, subscription } = broker.createSubscription(req.params.queue, req.params.sub, req.body);
    return reply.code(created ? 201 : 200).send(subscription);
  });

  app.get<{ Params: QueueParams }>('/v1/queues/:queue/subscriptions', {
    config: { perm: 'read' },
    schema: { operationId: 'listSubscriptions', summary: 'Subscriptions of a queue', tags: ['subscriptions'], params: S.queueParams, response: { 200: S.subscriptionList } },
  }, (req) => {
    const q = broker.queue(req.params.queue);
    return { subscriptions: q.subscriptions.map((s) => ({ ...s.stats(), ...s.config })) };
  });

  app.get<{ Params: SubParams }>('/v1/queues/:queue/subscriptions/:sub', {
    config: { perm: 'read' },
    schema: { operationId: 'getSubscription', summary: 'Stats and config of a subscription', tags: ['subscriptions'], params: S.subscriptionParams, response: { 200: S.subscriptionInfo } },
  }, (req) => broker.subscriptionInfo(req.params.queue, req.params.sub));

  app.delete<{ Params: SubParams }>('/v1/queues/:queue/subscriptions/:sub', {
    config: { perm: 'admin' },
    schema: { operationId: 'deleteSubscription', summary: 'Delete a subscription', tags: ['subscriptions'], params: S.subscriptionParams, response: { 204: { type: 'null' } } },
  }, (req, reply) => {
    broker.deleteSubscription(req.params.queue, req.params.sub);
    return reply.code(204).send();
  });

  app.post<{ Params: SubParams; Body: unknown }>('/v1/queues/:queue/subscriptions/:sub/pull', {
    config: { perm: 'subscribe' },
    schema: {
      operationId: 'pull', summary: 'Pull up to max messages, waiting up to waitMs for the first', tags: ['consume'],
      params: S.subscriptionParams, body: S.pullBody, response: { 200: S.pullResponse },
    },
  }, (req, reply) => pull(req.params.queue, req.params.sub, req.body, reply));

  app.post<{ Params: SubParams; Body: unknown }>('/v1/queues/:queue/subscriptions/:sub/ack', {
    config: { perm: 'subscribe' },
    schema: { operationId: 'ack', summary: 'Acknowledge messages by id', tags: ['consume'], params: S.subscriptionParams, body: S.ackBody, response: { 200: S.ackResponse } },
  }, (req) => ack(req.params.queue, req.params.sub, req.body));

  app.post<{ Params: SubParams; Body: unknown }>('/v1/queues/:queue/subscriptions/:sub/nack', {
    config: { perm: 'subscribe' },
    schema: { operationId: 'nack', summary: 'Give messages back, delivered again after delayMs', tags: ['consume'], params: S.subscriptionParams, body: S.nackBody, response: { 200: S.nackResponse } },
  }, (req) => {
    const b = objectBody(req.body, ['ids', 'delayMs']);
    const ids = idsField(b);
    return broker.nack(req.params.queue, req.params.sub, ids, intField(b, 'delayMs', 0, MAX_DELAY_MS, 0));
  });

  app.post<{ Params: SubParams; Body: unknown }>('/v1/queues/:queue/subscriptions/:sub/extend', {
    config: { perm: 'subscribe' },
    schema: { operationId: 'extend', summary: 'Move the ack deadline of in-flight messages', tags: ['consume'], params: S.subscriptionParams, body: S.extendBody, response: { 200: S.extendResponse } },
  }, (req) => {
    const b = objectBody(req.body, ['ids', 'ackDeadlineMs']);
    const ids = idsField(b);
    return broker.extend(req.params.queue, req.params.sub, ids, requiredInt(b, 'ackDeadlineMs', 1, MAX_ACK_DEADLINE_MS));
  });

  app.post<{ Params: QueueParams; Body: unknown }>('/v1/queues/:queue/dequeue', {
    config: { perm: 'subscribe' },
    schema: { operationId: 'dequeue', summary: 'Pull on the default subscription', tags: ['consume'], params: S.queueParams, body: S.pullBody, response: { 200: S.pullResponse } },
  }, (req, reply) => pull(req.params.queue, DEFAULT_SUBSCRIPTION, req.body, reply));

  app.post<{ Params: QueueParams; Body: unknown }>('/v1/queues/:queue/ack', {
    config: { perm: 'subscribe' },
    schema: { operationId: 'ackDefault', summary: 'Acknowledge on the default subscription', tags: ['consume'], params: S.queueParams, body: S.ackBody, response: { 200: S.ackResponse } },
  }, (req) => ack(req.params.queue, DEFAULT_SUBSCRIPTION, req.body));
}
