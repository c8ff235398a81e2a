import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { SpillwayError } from '../errors';

/** What a route needs: `public` (no token), `any` (a valid token), or a permission on its `{queue}`. */
export type Permission = 'public' | 'any' | 'read' | 'publish' | 'subscribe' | 'admin';

declare module 'fastify' {
  interface FastifyContextConfig {
    perm?: Permission;
  }
  interface FastifyRequest {
    /** The token's holder; null when auth is off. */
    principal: Principal | null;
  }
}

/** One entry of the auth file. */
export interface TokenSpec {
  token: string;
  name: string;
  publish?: string[];
  subscribe?: string[];
  /** Publisher ids this token may publish as besides its name (a propagation's is `{serverId}:{queue}`). */
  publishAs?: string[];
  admin?: boolean;
}

export interface AuthConfig {
  tokens: TokenSpec[];
}

/** The holder of a token and its permissions. */
export class Principal {
  readonly name: string;
  readonly admin: boolean;
  readonly #publish: RegExp[];
  readonly #subscribe: RegExp[];
  readonly #publishAs: RegExp[];

  constructor(spec: TokenSpec) {
    this.name = spec.name;
    this.admin = spec.admin === true;
    this.#publish = (spec.publish ?? []).map(globToRegExp);
    this.#subscribe = (spec.subscribe ?? []).map(globToRegExp);
    this.#publishAs = (spec.publishAs ?? []).map(globToRegExp);
  }

  mayPublishAs(publisherId: string): boolean { return publisherId === this.name || this.#publishAs.some((r) => r.test(publisherId)); }

  canPublish(queue: string): boolean { return this.#publish.some((r) => r.test(queue)); }
  canSubscribe(queue: string): boolean { return this.#subscribe.some((r) => r.test(queue)); }
  /** Reading a queue's stats: any permission on it. */
  canRead(queue: string): boolean { return this.admin || this.canPublish(queue) || this.canSubscribe(queue); }

  may(perm: Permission, queue: string | undefined): boolean {
    switch (perm) {
      case 'public':
      case 'any':
        return true;
      case 'admin':
        return this.admin;
      case 'publish':
        return queue !== undefined && this.canPublish(queue);
      case 'subscribe':
        return queue !== undefined && this.canSubscribe(queue);
      case 'read':
        return queue !== undefined && this.canRead(queue);
    }
  }
}

/** `*` is any run of characters, `?` one character; the rest is literal. */
export function globToRegExp(glob: string): RegExp {
  let re = '^';
  for (const ch of glob) {
    if (ch === '*') re += '.*';
    else if (ch === '?') re += '.';
    else re += ch.replace(/[\\^$.|+()[\]{}]/g, '\\$&');
  }
  return new RegExp(re + '$', 's');
}

const digest = (s: string): Buffer => createHash('sha256').update(s).digest();

/** Tokens, compared in constant time (hashes of equal length, every entry checked). */
export class Auth {
  readonly #entries: { hash: Buffer; principal: Principal }[];

  constructor(config: AuthConfig) {
    this.#entries = parseAuthConfig(config).map((t) => ({ hash: digest(t.token), principal: new Principal(t) }));
  }

  static fromFile(path: string): Auth {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      throw new Error(`cannot read auth file ${path}: ${(err as Error).message}`, { cause: err });
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw new Error(`auth file ${path} is not valid JSON: ${(err as Error).message}`, { cause: err });
    }
    return new Auth(json as AuthConfig);
  }

  /** The principal of a token, or undefined. */
  lookup(token: string): Principal | undefined {
    const h = digest(token);
    let found: Principal | undefined;
    for (const e of this.#entries) if (timingSafeEqual(e.hash, h) && found === undefined) found = e.principal;
    return found;
  }

  /** The principal of a request: `Authorization: Bearer TOKEN`, or `?token=` where allowed. */
  authenticate(authorization: string | undefined, queryToken: string | undefined): Principal {
    let token: string | undefined;
    if (authorization !== undefined) {
      const m = /^Bearer +(\S+) *$/i.exec(authorization);
      if (m === null) throw new SpillwayError('UNAUTHENTICATED', 'Authorization must be "Bearer TOKEN"');
      token = m[1];
    } else token = queryToken;
    if (token === undefined || token === '') throw new SpillwayError('UNAUTHENTICATED', 'a bearer token is required');
    const p = this.lookup(token);
    if (p === undefined) throw new SpillwayError('UNAUTHENTICATED', 'unknown token');
    return p;
  }
}

export function parseAuthConfig(config: unknown): TokenSpec[] {
  const c = config as AuthConfig;
  if (typeof c !== 'object' || c === null || !Array.isArray(c.tokens)) throw new Error('auth config must be {"tokens": [...]}');
  const names = new Set<string>();
  return c.tokens.map((t, i) => {
    if (typeof t !== 'object' || t === null) throw new Error(`tokens[${i}] must be an object`);
    if (typeof t.token !== 'string' || t.token.length === 0) throw new Error(`tokens[${i}].token must be a non-empty string`);
    if (typeof t.name !== 'string' || t.name.length === 0 || t.name.length > 256) throw new Error(`tokens[${i}].name must be a string of 1 to 256 characters`);
    for (const f of ['publish', 'subscribe', 'publishAs'] as const) {
      const v = t[f];
      if (v !== undefined && (!Array.isArray(v) || v.some((g) => typeof g !== 'string'))) throw new Error(`tokens[${i}].${f} must be an array of globs`);
    }
    if (t.admin !== undefined && typeof t.admin !== 'boolean') throw new Error(`tokens[${i}].admin must be true or false`);
    if (names.has(t.name)) throw new Error(`tokens[${i}].name ${t.name} is used twice`);
    names.add(t.name);
    return t;
  });
}

export function normaliseOrigin(o: string): string {
  return o.trim().toLowerCase().replace(/\/+$/, '');
}

export interface AccessOptions {
  auth: Auth | undefined;
  /** WebSocket upgrades with an Origin not in this list are refused (403); unset: any. */
  allowedOrigins: string[] | undefined;
}

/**
 * One onRequest hook, before any body is read and before a WebSocket upgrade: the token
 * (401), the route's permission on its `{queue}` (403), and the Origin of upgrades (403).
 */
export function registerAccess(app: FastifyInstance, opts: AccessOptions): void {
  app.decorateRequest('principal', null);
  const origins = opts.allowedOrigins?.map(normaliseOrigin);
  const auth = opts.auth;
  app.addHook('onRequest', (req, reply, done) => {
    // The header, not `req.ws`: this hook may run before @fastify/websocket's own.
    const upgrade = req.headers.upgrade?.toLowerCase() === 'websocket';
    // An upgrade answered with an HTTP response (refused, not found) must end its socket
    // itself: nothing else will (as ws does in abortHandshake).
    if (upgrade) reply.raw.once('finish', () => endSocket(req.raw.socket));
    if (upgrade && origins !== undefined) {
      const origin = req.headers.origin;
      if (origin !== undefined && !origins.includes(normaliseOrigin(origin))) {
        done(new SpillwayError('FORBIDDEN', `origin ${origin} is not allowed`));
        return;
      }
    }
    if (auth === undefined) {
      done();
      return;
    }
    // Only with auth on: `routeOptions` builds a new object at every read.
    const perm: Permission = req.routeOptions.config.perm ?? 'any';
    if (perm === 'public') {
      done();
      return;
    }
    try {
      const queryToken = upgrade ? (req.query as Record<string, string | undefined>).token : undefined;
      const p = auth.authenticate(req.headers.authorization, typeof queryToken === 'string' ? queryToken : undefined);
      req.principal = p;
      const queue = (req.params as Record<string, string | undefined> | undefined)?.queue;
      if (!p.may(perm, queue)) {
        const what = perm === 'admin' ? 'admin' : `${perm} on queue ${queue}`;
        done(new SpillwayError('FORBIDDEN', `token ${p.name} lacks ${what}`));
        return;
      }
      done();
    } catch (err) {
      done(err as Error);
    }
  });
}

function endSocket(socket: Socket | undefined): void {
  if (socket === undefined || socket === null || socket.destroyed) return;
  socket.once('finish', () => socket.destroy());
  socket.end();
}

/** With auth on, the publisher id is the token's name, or one its publishAs globs cover; another is 403. */
export function publisherFor(principal: Principal | null, asked: string | undefined): string | undefined {
  if (principal === null) return asked;
  if (asked === undefined) return principal.name;
  if (!principal.mayPublishAs(asked)) {
    throw new SpillwayError('FORBIDDEN', `token ${principal.name} may not publish as ${JSON.stringify(asked)} (its name, or an id its publishAs globs cover)`);
  }
  return asked;
}
