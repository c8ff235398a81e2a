import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { SpillwayError, isSpillwayError } from '../errors';

/**
 * Maps every failure to API.md's envelope `{"error": {"code", "message", ...}}`:
 * SpillwayError as it is, fastify's own errors (parsing, limits, validation, routing)
 * onto the catalogue's codes, anything else to 500 INTERNAL.
 */
export function toSpillwayError(err: unknown): SpillwayError {
  if (isSpillwayError(err)) return err;
  const e = err as Partial<FastifyError> & { validation?: { instancePath?: string; params?: Record<string, unknown> }[] };
  if (e === null || typeof e !== 'object') return new SpillwayError('INTERNAL', 'internal error');
  if (Array.isArray(e.validation)) {
    const first = e.validation[0];
    const field = first?.instancePath ? first.instancePath.replace(/^\//, '').replace(/\//g, '.') : (first?.params?.missingProperty as string | undefined);
    return new SpillwayError('INVALID_ARGUMENT', e.message ?? 'invalid request', field ? { field } : undefined);
  }
  switch (e.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new SpillwayError('BODY_TOO_LARGE', 'request body is over the server\'s body limit');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new SpillwayError('UNSUPPORTED_MEDIA_TYPE', 'unsupported content type: send application/json');
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return new SpillwayError('INVALID_ARGUMENT', 'request body is not valid JSON');
    case 'FST_ERR_NOT_FOUND':
      return new SpillwayError('NOT_FOUND', e.message ?? 'not found');
  }
  const status = typeof e.statusCode === 'number' ? e.statusCode : 500;
  if (status === 404) return new SpillwayError('NOT_FOUND', e.message ?? 'not found');
  if (status === 413) return new SpillwayError('BODY_TOO_LARGE', 'request body is over the server\'s body limit');
  if (status === 415) return new SpillwayError('UNSUPPORTED_MEDIA_TYPE', e.message ?? 'unsupported content type');
  if (status >= 400 && status < 500) return new SpillwayError('INVALID_ARGUMENT', e.message ?? 'bad request');
  return new SpillwayError('INTERNAL', 'internal error', undefined, { cause: err });
}

/** Sends an error as the envelope, with `Retry-After` (whole seconds, rounded up) for 429. */
export function sendError(reply: FastifyReply, err: SpillwayError): FastifyReply {
  if (err.code === 'PUBLISHER_RESTRICTED') {
    const ms = Number(err.details?.retryAfterMs);
    reply.header('retry-after', String(Math.max(1, Math.ceil((Number.isFinite(ms) ? ms : 1000) / 1000))));
  }
  return reply.code(err.status).type('application/json; charset=utf-8').send(JSON.stringify(err.toJSON()));
}

export function registerErrorHandlers(app: FastifyInstance): void {
  app.setErrorHandler((err: unknown, req: FastifyRequest, reply: FastifyReply) => {
    const se = toSpillwayError(err);
    if (se.code === 'INTERNAL') req.log.error({ err }, 'request failed');
    return sendError(reply, se);
  });
  app.setNotFoundHandler((req, reply) => {
    const path = req.url.split('?', 1)[0];
    return sendError(reply, new SpillwayError('NOT_FOUND', `no route ${req.method} ${path}`));
  });
}
