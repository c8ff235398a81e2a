import type { FastifyInstance, RouteOptions } from 'fastify';
import * as S from './schemas';

/** A route as registered, with its schema (body included) kept for the document. */
interface RouteRecord {
  method: string;
  url: string;
  schema: Record<string, unknown>;
}

const ERROR_RESPONSES = {
  '400': 'INVALID_ARGUMENT',
  '401': 'UNAUTHENTICATED',
  '403': 'FORBIDDEN',
  '404': 'QUEUE_NOT_FOUND, SUBSCRIPTION_NOT_FOUND, TRANSACTION_NOT_FOUND or NOT_FOUND',
  '409': 'ALREADY_EXISTS',
  '413': 'MESSAGE_TOO_LARGE or BODY_TOO_LARGE',
  '415': 'UNSUPPORTED_MEDIA_TYPE',
  '429': 'PUBLISHER_RESTRICTED (with a Retry-After header and retryAfterMs)',
  '503': 'SHUTTING_DOWN',
  '507': 'QUEUE_FULL or INSUFFICIENT_STORAGE',
} as const;

/**
 * Collects the routes as they are registered (an onRoute hook, added before any route).
 * Request bodies are validated by the handlers (see schemas.ts), so the body schema is
 * taken off the route here and kept for the document only.
 */
export function collectRoutes(app: FastifyInstance): RouteRecord[] {
  const routes: RouteRecord[] = [];
  app.addHook('onRoute', (r: RouteOptions) => {
    const methods = Array.isArray(r.method) ? r.method : [r.method];
    const schema = (r.schema ?? {}) as Record<string, unknown>;
    if (schema.body !== undefined) {
      const { body: _body, ...rest } = schema;
      r.schema = rest;
    }
    for (const m of methods) if (m !== 'HEAD' && schema.hide !== true) routes.push({ method: m.toLowerCase(), url: r.url, schema });
  });
  return routes;
}

function parameters(schema: Record<string, unknown>): unknown[] {
  const out: unknown[] = [];
  for (const [part, where] of [['params', 'path'], ['querystring', 'query']] as const) {
    const s = schema[part] as { properties?: Record<string, unknown>; required?: string[] } | undefined;
    if (s?.properties === undefined) continue;
    for (const [name, prop] of Object.entries(s.properties)) {
      out.push({ name, in: where, required: where === 'path' || (s.required ?? []).includes(name), schema: prop });
    }
  }
  return out;
}

/** The OpenAPI 3.1 document of the registered routes. */
export function openApiDocument(routes: readonly RouteRecord[], opts: { version: string; auth: boolean }): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const path = r.url.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
    const s = r.schema;
    const op: Record<string, unknown> = {};
    for (const k of ['operationId', 'summary', 'description', 'tags'] as const) if (s[k] !== undefined) op[k] = s[k];
    const params = parameters(s);
    if (params.length > 0) op.parameters = params;
    if (s.body !== undefined) {
      const content: Record<string, unknown> = { 'application/json': { schema: s.body } };
      const consumes = s.consumes as string[] | undefined;
      if (consumes?.includes('*/*')) content['*/*'] = { schema: { type: 'string', format: 'binary', description: 'the raw bytes of one message; publisher id from X-Publisher-Id' } };
      op.requestBody = { required: false, content };
    }
    const responses: Record<string, unknown> = {};
    const resp = (s.response ?? {}) as Record<string, unknown>;
    for (const [status, schema] of Object.entries(resp)) {
      responses[status] = status === '204'
        ? { description: 'No Content' }
        : { description: 'OK', content: { 'application/json': { schema } } };
    }
    if (r.url === '/v1/ws') responses['101'] = { description: 'Switching Protocols: JSON text frames, one object each, with an "op"' };
    if (r.url === '/metrics') responses['200'] = { description: 'Prometheus text', content: { 'text/plain': { schema: { type: 'string' } } } };
    if (r.url !== '/healthz') {
      for (const [status, codes] of Object.entries(ERROR_RESPONSES)) {
        responses[status] ??= { description: codes, content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } };
      }
    }
    op.responses = responses;
    if (opts.auth && r.url === '/healthz') op.security = [];
    (paths[path] ??= {})[r.method] = op;
  }
  const doc: Record<string, unknown> = {
    openapi: '3.1.0',
    info: { title: 'Spillway', version: opts.version, description: 'In-memory, buffered publish/subscribe message queue server' },
    paths,
    components: {
      schemas: { Error: S.errorEnvelope, QueueStats: S.queueStats, PublisherState: S.publisherState, Message: S.message, SubscriptionInfo: S.subscriptionInfo },
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
    },
  };
  if (opts.auth) doc.security = [{ bearer: [] }];
  return doc;
}

export function registerOpenApiRoute(app: FastifyInstance, routes: readonly RouteRecord[], opts: { version: string; auth: boolean }): void {
  let cached: string | undefined;
  app.get('/openapi.json', {
    config: { perm: 'any' },
    schema: { operationId: 'openapi', summary: 'This document', tags: ['operations'] },
  }, (_req, reply) => {
    cached ??= JSON.stringify(openApiDocument(routes, opts));
    return reply.type('application/json; charset=utf-8').send(cached);
  });
}
