import type { FastifyInstance } from 'fastify';
import type { HttpContext } from './context';
import * as S from './schemas';

interface PropParams { queue: string; name: string }

/** Propagations: a queue forwarding its messages to a queue on another server. */
export function registerPropagationRoutes(app: FastifyInstance, ctx: HttpContext): void {
  const broker = ctx.broker;

  app.put<{ Params: PropParams; Body: unknown }>('/v1/queues/:queue/propagations/:name', {
    config: { perm: 'admin' },
    schema: {
      operationId: 'createPropagation', summary: 'Forward the queue to a queue on another server (200 same config, 409 differs)', tags: ['propagation'],
      params: S.propagationParams, body: S.propagationBody, response: { 200: S.propagationInfo, 201: S.propagationInfo },
    },
  }, (req, reply) => {
    const { created, propagation } = broker.createPropagation(req.params.queue, req.params.name, req.body);
    return reply.code(created ? 201 : 200).send(propagation);
  });

  app.get<{ Params: { queue: string } }>('/v1/queues/:queue/propagations', {
    config: { perm: 'read' },
    schema: { operationId: 'listPropagations', summary: 'Propagations of a queue', tags: ['propagation'], params: S.queueParams, response: { 200: S.propagationList } },
  }, (req) => ({ propagations: broker.listPropagations(req.params.queue) }));

  app.get<{ Params: PropParams }>('/v1/queues/:queue/propagations/:name', {
    config: { perm: 'read' },
    schema: { operationId: 'getPropagation', summary: 'State of a propagation', tags: ['propagation'], params: S.propagationParams, response: { 200: S.propagationInfo } },
  }, (req) => broker.propagationInfo(req.params.queue, req.params.name));

  app.delete<{ Params: PropParams }>('/v1/queues/:queue/propagations/:name', {
    config: { perm: 'admin' },
    schema: { operationId: 'deletePropagation', summary: 'Stop and remove a propagation', tags: ['propagation'], params: S.propagationParams },
  }, (req, reply) => {
    broker.deletePropagation(req.params.queue, req.params.name);
    return reply.code(204).send();
  });
}
