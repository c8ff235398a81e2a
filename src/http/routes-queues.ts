import type { FastifyInstance } from 'fastify';
import type { HttpContext } from './context';
import * as S from './schemas';

interface QueueParams { queue: string }
interface PublisherParams { queue: string; id: string }

/** Queues: create, list, stats, delete, purge, and publisher state. */
export function registerQueueRoutes(app: FastifyInstance, ctx: HttpContext): void {
  const broker = ctx.broker;

  app.put<{ Params: QueueParams; Body: unknown }>('/v1/queues/:queue', {
    config: { perm: 'admin' },
    schema: {
      operationId: 'createQueue', summary: 'Create a queue (200 when the same config exists, 409 when it differs)', tags: ['queues'],
      params: S.queueParams, body: S.queueConfigBody, response: { 200: S.queueStats, 201: S.queueStats },
    },
  }, (req, reply) => {
    const { created, queue } = broker.createQueue(req.params.queue, req.body);
    return reply.code(created ? 201 : 200).send({ ...queue, config: broker.queue(req.params.queue).config });
  });

  app.get('/v1/queues', {
    config: { perm: 'any' },
    schema: { operationId: 'listQueues', summary: 'List queues with their stats', tags: ['queues'], response: { 200: S.queueList } },
  }, (req) => {
    const p = req.principal;
    const queues = p === null ? broker.listQueues() : broker.queues().filter((q) => p.canRead(q.name)).map((q) => q.stats());
    return { queues };
  });

  app.get<{ Params: QueueParams }>('/v1/queues/:queue', {
    config: { perm: 'read' },
    schema: { operationId: 'getQueue', summary: 'Stats of a queue', tags: ['queues'], params: S.queueParams, response: { 200: S.queueStats } },
  }, (req) => {
    const q = broker.queue(req.params.queue);
    return { ...q.stats(), config: q.config };
  });

  app.delete<{ Params: QueueParams }>('/v1/queues/:queue', {
    config: { perm: 'admin' },
    schema: { operationId: 'deleteQueue', summary: 'Delete a queue and its subscriptions', tags: ['queues'], params: S.queueParams, response: { 204: { type: 'null' } } },
  }, (req, reply) => {
    broker.deleteQueue(req.params.queue);
    return reply.code(204).send();
  });

  app.post<{ Params: QueueParams }>('/v1/queues/:queue/purge', {
    config: { perm: 'admin' },
    schema: { operationId: 'purgeQueue', summary: 'Remove every retained message', tags: ['queues'], params: S.queueParams, response: { 200: S.purgeResponse } },
  }, (req) => ({ purged: broker.purge(req.params.queue) }));

  app.get<{ Params: PublisherParams }>('/v1/queues/:queue/publishers/:id', {
    config: { perm: 'read' },
    schema: {
      operationId: 'getPublisher', summary: 'Flow-control state of a publisher on a queue', tags: ['publish'],
      params: S.publisherParams, response: { 200: S.publisherState },
    },
  }, (req) => broker.publisherState(req.params.queue, req.params.id));
}
