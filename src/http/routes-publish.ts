import type { FastifyInstance } from 'fastify';
import { prepareBatch, prepareRaw, checkPublisherId, type Prepared } from '../broker';
import { SpillwayError, invalid } from '../errors';
import { publisherFor } from './auth';
import type { HttpContext } from './context';
import * as S from './schemas';

interface PublishRoute {
  Params: { queue: string };
  Querystring: { tx?: string };
  Body: unknown;
  Headers: { 'x-publisher-id'?: string };
}

/**
 * `POST /v1/queues/{queue}/messages`: a JSON batch, or any other content type as one raw
 * message. Registered as its own plugin so the catch-all body parser stays on this route.
 */
export async function publishRoutes(app: FastifyInstance, opts: { ctx: HttpContext }): Promise<void> {
  const broker = opts.ctx.broker;
  // Any content type but JSON: the bytes as sent (one copy, made by fastify's body reader).
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

  app.post<PublishRoute>('/v1/queues/:queue/messages', {
    config: { perm: 'publish' },
    schema: {
      operationId: 'publish', summary: 'Publish messages (all or nothing); with ?tx=ID stage them in a transaction', tags: ['publish'],
      params: S.queueParams, querystring: S.publishQuery, body: S.publishBody, response: { 201: S.publishResponse },
      consumes: ['application/json', '*/*'],
    },
  }, (req, reply) => {
    if (broker.closing) throw new SpillwayError('SHUTTING_DOWN', 'the server is shutting down');
    const q = broker.queue(req.params.queue);
    const max = q.config.maxMessageBytes;
    const body = req.body;
    const header = req.headers['x-publisher-id'];
    let msgs: Prepared[];
    let asked: string | undefined;
    if (Buffer.isBuffer(body)) {
      msgs = [prepareRaw(body, max)];
      asked = checkPublisherId(header);
    } else if (typeof body === 'object' && body !== null && !Array.isArray(body)) {
      const b = body as Record<string, unknown>;
      for (const k in b) if (k !== 'messages' && k !== 'publisherId') throw invalid(`unknown field: ${k}`, { field: k });
      msgs = prepareBatch(b.messages, max);
      asked = checkPublisherId(b.publisherId ?? header);
    } else {
      throw invalid('request body must be {"messages": [...]} as JSON, or the raw bytes of one message', { field: 'messages' });
    }
    const out = broker.publish(q.name, publisherFor(req.principal, asked), msgs, req.query.tx);
    return reply.code(201).send(out);
  });
}
