import type { FastifyInstance } from 'fastify';
import { objectBody } from './body';
import type { HttpContext } from './context';
import * as S from './schemas';

interface TxParams { id: string }

/** Transactions: begin, commit, rollback. Staging is `POST .../messages?tx=ID` (routes-publish). */
export function registerTransactionRoutes(app: FastifyInstance, ctx: HttpContext): void {
  const broker = ctx.broker;

  app.post<{ Body: unknown }>('/v1/transactions', {
    config: { perm: 'any' },
    schema: { operationId: 'beginTransaction', summary: 'Begin a transaction', tags: ['transactions'], body: S.txBeginBody, response: { 201: S.txBeginResponse } },
  }, (req, reply) => {
    const b = objectBody(req.body, ['timeoutMs']);
    // The broker validates timeoutMs (and answers SHUTTING_DOWN while closing).
    return reply.code(201).send(broker.beginTransaction(b.timeoutMs as number | undefined));
  });

  app.post<{ Params: TxParams; Body: unknown }>('/v1/transactions/:id/commit', {
    config: { perm: 'any' },
    schema: { operationId: 'commitTransaction', summary: 'Make every staged message visible at once', tags: ['transactions'], params: S.txParams, response: { 200: S.txCommitResponse } },
  }, (req) => {
    objectBody(req.body, []);
    return broker.commitTransaction(req.params.id);
  });

  app.post<{ Params: TxParams; Body: unknown }>('/v1/transactions/:id/rollback', {
    config: { perm: 'any' },
    schema: { operationId: 'rollbackTransaction', summary: 'Discard every staged message', tags: ['transactions'], params: S.txParams, response: { 200: S.txRollbackResponse } },
  }, (req) => {
    objectBody(req.body, []);
    broker.rollbackTransaction(req.params.id);
    return { rolledBack: true };
  });
}
