import { isUtf8 } from 'node:buffer';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import websocket from '@fastify/websocket';
import type { Broker } from '../broker';
import { Auth, registerAccess, type AuthConfig } from './auth';
import { HttpContext } from './context';
import { registerErrorHandlers, sendError, toSpillwayError } from './errors';
import { createRegistry, registerMetricsRoute } from './metrics';
import { collectRoutes, registerOpenApiRoute } from './openapi';
import { publishRoutes } from './routes-publish';
import { registerQueueRoutes } from './routes-queues';
import { registerSubscriptionRoutes } from './routes-subscriptions';
import { registerTransactionRoutes } from './routes-transactions';
import { registerPropagationRoutes } from './routes-propagations';
import { onClientError } from './client-errors';
import { registerCors } from './cors';
import * as S from './schemas';
import { WsHub, onSocketError, registerWebSocketRoute, type WebSocketOptions } from './ws';

export const DEFAULT_BODY_LIMIT = 16 * 1024 * 1024;

export interface ServerOptions {
  broker: Broker;
  /** Path of a JSON auth file; or `auth` with the parsed config (or an Auth). Unset: auth off. */
  authFile?: string;
  auth?: AuthConfig | Auth;
  /** WebSocket upgrades whose Origin is not listed are refused with 403; the listed ones get CORS headers. */
  allowedOrigins?: string[];
  /** Largest request body and WebSocket frame (default 16 MiB). */
  bodyLimit?: number;
  logger?: FastifyServerOptions['logger'];
  /** Socket inactivity timeout of HTTP connections (ms, 0 = none). */
  connectionTimeout?: number;
  /** Time to receive a whole request (ms; default 60 s). */
  requestTimeout?: number;
  keepAliveTimeout?: number;
  maxConnections?: number;
  webSocket?: WebSocketOptions;
  /** prom-client's process metrics (default true). */
  defaultMetrics?: boolean;
  /** Close the broker when the server closes (default false: the caller owns it). */
  closeBroker?: boolean;
}

function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return '0.0.0';
  }
}

/** Builds the HTTP, WebSocket and metrics front end of a broker. Call `listen()` or `inject()` on it. */
export function buildServer(opts: ServerOptions): FastifyInstance {
  const broker = opts.broker;
  const auth = opts.auth instanceof Auth ? opts.auth
    : opts.auth !== undefined ? new Auth(opts.auth)
      : opts.authFile !== undefined ? Auth.fromFile(opts.authFile) : undefined;
  const bodyLimit = opts.bodyLimit ?? DEFAULT_BODY_LIMIT;
  const app = fastify({
    logger: opts.logger ?? false,
    bodyLimit,
    connectionTimeout: opts.connectionTimeout ?? 0,
    requestTimeout: opts.requestTimeout ?? 60_000,
    keepAliveTimeout: opts.keepAliveTimeout ?? 72_000,
    // Queue names are up to 128 characters, publisher ids up to 256 (more once percent-encoded).
    routerOptions: { maxParamLength: 1024 },
    // Requests that arrive while closing still run: only publishes answer 503 (SHUTTING_DOWN, in the envelope).
    return503OnClosing: false,
    forceCloseConnections: 'idle',
    // Malformed URLs and over-long params: the envelope too.
    frameworkErrors: (err, _req, reply) => { sendError(reply, toSpillwayError(err)); },
    // And requests Node's HTTP parser refuses before fastify sees them.
    clientErrorHandler: onClientError,
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, allErrors: false } },
  });
  if (opts.maxConnections !== undefined) app.server.maxConnections = opts.maxConnections;

  const ctx = new HttpContext(broker, auth);
  const hub = new WsHub(broker, opts.webSocket);
  const routes = collectRoutes(app);
  const registry = createRegistry(broker, { defaultMetrics: opts.defaultMetrics, webSocketConnections: () => hub.connections.size });

  registerErrorHandlers(app);
  // JSON only, except on the publish route (which adds a catch-all of its own). An empty body is no body.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_req, body, done) => {
    const buf = body as Buffer;
    if (buf.length === 0) {
      done(null, undefined);
      return;
    }
    try {
      // JSON is UTF-8: bytes that are not would be decoded to U+FFFD and stored silently changed.
      // They always leave a U+FFFD in the text, so only a text with one needs the check of the bytes.
      const text = buf.toString('utf8');
      if (text.includes('\uFFFD') && !isUtf8(buf)) throw new Error('not UTF-8');
      // Plain JSON.parse: an own "__proto__" key is harmless here (nothing merges bodies into objects).
      done(null, JSON.parse(text));
    } catch {
      const err = new Error('request body is not valid JSON') as Error & { statusCode: number; code: string };
      err.statusCode = 400;
      err.code = 'FST_ERR_CTP_INVALID_JSON_BODY';
      done(err, undefined);
    }
  });
  registerCors(app, opts.allowedOrigins);
  registerAccess(app, { auth, allowedOrigins: opts.allowedOrigins });

  app.addHook('preClose', (done) => {
    ctx.beginClose();
    hub.closeAll();
    done();
  });
  if (opts.closeBroker === true) app.addHook('onClose', async () => { await broker.close(); });

  app.get('/healthz', {
    config: { perm: 'public' },
    schema: { operationId: 'health', summary: 'Liveness and the epoch of this run', tags: ['operations'], response: { 200: S.health } },
  }, () => ({ status: 'ok', epoch: broker.epoch }));

  registerQueueRoutes(app, ctx);
  registerSubscriptionRoutes(app, ctx);
  registerTransactionRoutes(app, ctx);
  registerPropagationRoutes(app, ctx);
  registerMetricsRoute(app, registry);
  registerOpenApiRoute(app, routes, { version: packageVersion(), auth: auth !== undefined });
  void app.register(publishRoutes, { ctx });
  // @fastify/websocket in a context of its own, so that its onRequest and onResponse hooks run on
  // the WebSocket route only: on REST requests they cost a hook run and response listeners each.
  // An upgrade answered over HTTP elsewhere still has its socket ended (registerAccess's hook).
  let wsApp: FastifyInstance | undefined;
  void app.register(async (child) => {
    await child.register(websocket, {
      options: { maxPayload: bodyLimit, perMessageDeflate: false },
      errorHandler: onSocketError,
      // Sockets are closed with 1001 by the preClose hook above; only the ws server is left to close.
      preClose(this: FastifyInstance, done: () => void) {
        this.websocketServer.close();
        done();
      },
    });
    registerWebSocketRoute(child, hub);
    wsApp = child;
  });
  // What the plugin decorates stays on the root, as when it was registered there.
  void app.after(() => {
    if (wsApp === undefined) return;
    app.decorate('websocketServer', wsApp.websocketServer);
    app.decorate('injectWS', wsApp.injectWS);
  });
  return app;
}

export interface StartOptions extends ServerOptions {
  port?: number;
  host?: string;
}

export interface RunningServer {
  app: FastifyInstance;
  /** `http://host:port`, with the port the server got. */
  url: string;
  port: number;
  close(): Promise<void>;
}

/** Builds and listens (port 0: any free port). */
export async function startServer(opts: StartOptions): Promise<RunningServer> {
  const app = buildServer(opts);
  const host = opts.host ?? '127.0.0.1';
  await app.listen({ port: opts.port ?? 8080, host });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : opts.port ?? 8080;
  const shown = host.includes(':') ? `[${host}]` : host;
  return { app, url: `http://${shown}:${port}`, port, close: () => app.close() };
}
