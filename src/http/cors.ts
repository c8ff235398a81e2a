import type { FastifyInstance } from 'fastify';
import { normaliseOrigin } from './auth';

const PREFLIGHT_MAX_AGE_S = '600';

/**
 * CORS for the origins of `--allowed-origins`, so a browser page served from one of them can
 * call the REST API (the WebSocket checks the same list). Without the list no CORS header is
 * sent: a page from any other site then cannot read answers, nor send JSON or a token.
 * Registered before the auth hook: a preflight carries no token, and errors (401, 429, …) carry
 * the header too, so the page can read them.
 */
export function registerCors(app: FastifyInstance, allowedOrigins: string[] | undefined): void {
  if (allowedOrigins === undefined || allowedOrigins.length === 0) return;
  const origins = new Set(allowedOrigins.map(normaliseOrigin));
  app.addHook('onRequest', (req, reply, done) => {
    const origin = req.headers.origin;
    if (origin === undefined || !origins.has(normaliseOrigin(origin))) {
      done();
      return;
    }
    reply.header('access-control-allow-origin', origin).header('vary', 'Origin').header('access-control-expose-headers', 'Retry-After');
    if (req.method === 'OPTIONS' && req.headers['access-control-request-method'] !== undefined) {
      reply.code(204)
        .header('access-control-allow-methods', 'GET, POST, PUT, DELETE')
        .header('access-control-allow-headers', 'Authorization, Content-Type, X-Publisher-Id')
        .header('access-control-max-age', PREFLIGHT_MAX_AGE_S)
        .send();
      return;
    }
    done();
  });
}
