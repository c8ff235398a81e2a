import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import WebSocket from 'ws';
import { Broker } from '../../src/broker';
import { buildServer } from '../../src/http';
import { call, expectError } from './server';

/**
 * Auth under attack: no token, a wrong one, a token for another queue or another verb, a
 * foreign publisherId, acks on another subscription's messages, a WebSocket from a disallowed
 * Origin. Every one is refused, and none changes the broker's state (compared before and after).
 */

const TOKENS = {
  tokens: [
    { token: 'admin-token', name: 'admin', admin: true, publish: ['*'], subscribe: ['*'] },
    { token: 'pub-a-token', name: 'pub-a', publish: ['a-*'] },
    { token: 'sub-a-token', name: 'sub-a', subscribe: ['a-*'] },
    { token: 'pub-b-token', name: 'pub-b', publish: ['b-*'] },
    { token: 'sub-b-token', name: 'sub-b', subscribe: ['b-*'] },
  ],
};
const ORIGIN = 'https://app.example';
const bearer = (t: string): Record<string, string> => ({ authorization: `Bearer ${t}` });
const ADMIN = bearer('admin-token');
const PUB_A = bearer('pub-a-token');
const SUB_A = bearer('sub-a-token');
const PUB_B = bearer('pub-b-token');
const SUB_B = bearer('sub-b-token');

let broker: Broker;
let app: FastifyInstance;
let url: string;

beforeAll(async () => {
  broker = new Broker({});
  app = buildServer({ broker, auth: TOKENS, allowedOrigins: [ORIGIN], defaultMetrics: false });
  await app.listen({ port: 0, host: '127.0.0.1' });
  url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await app.close();
  await broker.close();
});

/** Everything a refusal must not change: queue stats, subscription stats, publisher states. */
function snapshot(): string {
  return JSON.stringify(broker.queues().map((q) => ({
    stats: q.stats(),
    subscriptions: q.subscriptions.map((s) => ({ ...s.stats(), ...s.config })),
    publishers: q.ledger.ids().map((id) => broker.publisherState(q.name, id)),
  })));
}

function wsOpen(path: string, headers: Record<string, string>): Promise<{ ws: WebSocket; frames: any[] } | number> {
  const ws = new WebSocket(url.replace(/^http/, 'ws') + path, { headers, perMessageDeflate: false });
  const frames: any[] = [];
  ws.on('message', (d) => frames.push(JSON.parse(d.toString())));
  return new Promise((resolve) => {
    ws.once('open', () => resolve({ ws, frames }));
    ws.once('unexpected-response', (_req, res) => { resolve(res.statusCode ?? 0); ws.terminate(); });
    ws.once('error', () => { /* after unexpected-response */ });
  });
}

async function nextFrame(c: { frames: any[] }, pred: (f: any) => boolean): Promise<any> {
  const end = Date.now() + 5000;
  for (;;) {
    const f = c.frames.find(pred);
    if (f !== undefined) return f;
    if (Date.now() > end) throw new Error(`no such frame in ${JSON.stringify(c.frames)}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('reliability auth', () => {
  test('auth - every refused request is 401/403 in the envelope, and none of them changes the broker state', async () => {
    // Set-up by the admin and the rightful publishers and subscribers.
    for (const q of ['a-1', 'b-1']) expect((await call(url, 'PUT', `/v1/queues/${q}`, undefined, ADMIN)).status).toBe(201);
    expect((await call(url, 'PUT', '/v1/queues/a-1/subscriptions/s2', {}, ADMIN)).status).toBe(201);
    expect((await call(url, 'POST', '/v1/queues/a-1/messages', { messages: [{ data: 'a1' }, { data: 'a2' }] }, PUB_A)).status).toBe(201);
    expect((await call(url, 'POST', '/v1/queues/b-1/messages', { messages: [{ data: 'b1' }] }, PUB_B)).status).toBe(201);
    // sub-a holds a-1's first message in flight on `default`.
    const pulled = await call(url, 'POST', '/v1/queues/a-1/subscriptions/default/pull', { max: 1 }, SUB_A);
    expect(pulled.body.messages.map((m: { data: string }) => m.data)).toEqual(['a1']);
    const heldId = pulled.body.messages[0].id as string;
    const tx = (await call(url, 'POST', '/v1/transactions', {}, PUB_B)).body.id as string;
    const before = snapshot();

    const refused: [string, string, string, unknown, Record<string, string>, number][] = [
      // No token.
      ['no token', 'GET', '/v1/queues', undefined, {}, 401],
      ['no token', 'GET', '/openapi.json', undefined, {}, 401],
      ['no token', 'GET', '/metrics', undefined, {}, 401],
      ['no token', 'PUT', '/v1/queues/a-new', undefined, {}, 401],
      ['no token', 'POST', '/v1/queues/a-1/messages', { messages: [{ data: 'x' }] }, {}, 401],
      ['no token', 'POST', '/v1/queues/a-1/subscriptions/default/pull', { max: 10 }, {}, 401],
      ['no token', 'POST', '/v1/queues/a-1/subscriptions/default/ack', { ids: [heldId] }, {}, 401],
      ['no token', 'POST', '/v1/queues/a-1/purge', undefined, {}, 401],
      ['no token', 'DELETE', '/v1/queues/a-1', undefined, {}, 401],
      // Wrong or malformed tokens.
      ['wrong token', 'POST', '/v1/queues/a-1/messages', { messages: [{ data: 'x' }] }, bearer('pub-a-tokenX'), 401],
      ['wrong token', 'POST', '/v1/queues/a-1/ack', { ids: [heldId] }, bearer('nope'), 401],
      ['basic auth', 'GET', '/v1/queues', undefined, { authorization: 'Basic YWRtaW46YWRtaW4=' }, 401],
      ['empty bearer', 'GET', '/v1/queues', undefined, { authorization: 'Bearer ' }, 401],
      ['two tokens', 'GET', '/v1/queues', undefined, { authorization: 'Bearer admin-token admin-token' }, 401],
      ['token in query (HTTP)', 'GET', '/v1/queues?token=admin-token', undefined, {}, 401],
      // A token for another queue.
      ['other queue', 'POST', '/v1/queues/a-1/messages', { messages: [{ data: 'x' }] }, PUB_B, 403],
      ['other queue', 'POST', `/v1/queues/a-1/messages?tx=${tx}`, { messages: [{ data: 'x' }] }, PUB_B, 403],
      ['other queue', 'POST', '/v1/queues/a-1/subscriptions/default/pull', { max: 10 }, SUB_B, 403],
      ['other queue', 'POST', '/v1/queues/a-1/subscriptions/default/ack', { ids: [heldId] }, SUB_B, 403],
      ['other queue', 'POST', '/v1/queues/a-1/subscriptions/default/nack', { ids: [heldId] }, SUB_B, 403],
      ['other queue', 'POST', '/v1/queues/a-1/subscriptions/default/extend', { ids: [heldId], ackDeadlineMs: 1 }, SUB_B, 403],
      ['other queue', 'GET', '/v1/queues/a-1', undefined, SUB_B, 403],
      ['other queue', 'GET', '/v1/queues/a-1/publishers/pub-a', undefined, PUB_B, 403],
      // A token for another verb.
      ['other verb', 'POST', '/v1/queues/a-1/subscriptions/default/pull', { max: 10 }, PUB_A, 403],
      ['other verb', 'POST', '/v1/queues/a-1/dequeue', { max: 10 }, PUB_A, 403],
      ['other verb', 'POST', '/v1/queues/a-1/ack', { ids: [heldId] }, PUB_A, 403],
      ['other verb', 'POST', '/v1/queues/a-1/messages', { messages: [{ data: 'x' }] }, SUB_A, 403],
      ['other verb', 'PUT', '/v1/queues/a-new', undefined, PUB_A, 403],
      ['other verb', 'PUT', '/v1/queues/a-1/subscriptions/s3', {}, SUB_A, 403],
      ['other verb', 'DELETE', '/v1/queues/a-1/subscriptions/s2', undefined, SUB_A, 403],
      ['other verb', 'POST', '/v1/queues/a-1/purge', undefined, PUB_A, 403],
      ['other verb', 'DELETE', '/v1/queues/a-1', undefined, SUB_A, 403],
      // A foreign publisherId, in the body or the header.
      ['foreign publisherId', 'POST', '/v1/queues/a-1/messages', { publisherId: 'pub-b', messages: [{ data: 'x' }] }, PUB_A, 403],
      ['foreign publisherId', 'POST', '/v1/queues/a-1/messages', { publisherId: 'admin', messages: [{ data: 'x' }] }, PUB_A, 403],
      ['foreign publisherId', 'POST', '/v1/queues/a-1/messages', 'raw bytes', { ...PUB_A, 'content-type': 'text/plain', 'x-publisher-id': 'pub-b' }, 403],
    ];
    for (const [what, method, path, body, headers, status] of refused) {
      const r = await call(url, method, path, body, headers);
      expect([what, method, path, r.status, r.body?.error?.code]).toEqual([what, method, path, status, status === 401 ? 'UNAUTHENTICATED' : 'FORBIDDEN']);
      expectError(r, status);
    }
    // Acks, nacks and extends on another subscription's (or queue's) messages: answered, but they touch nothing.
    const foreign: [string, Record<string, string>, Record<string, unknown>][] = [
      ['/v1/queues/a-1/subscriptions/s2/ack', SUB_A, { ids: [heldId] }],
      ['/v1/queues/a-1/subscriptions/s2/nack', SUB_A, { ids: [heldId] }],
      ['/v1/queues/a-1/subscriptions/s2/extend', SUB_A, { ids: [heldId], ackDeadlineMs: 1 }],
      ['/v1/queues/b-1/subscriptions/default/ack', SUB_B, { ids: [heldId] }],
      ['/v1/queues/b-1/ack', SUB_B, { ids: [heldId, 'forged-1', '../1', ''] }],
    ];
    for (const [path, headers, body] of foreign) {
      const r = await call(url, 'POST', path, body, headers);
      expect([path, r.status, r.body.acked ?? r.body.nacked ?? r.body.extended, r.body.unknown]).toEqual([path, 200, 0, body.ids]);
    }
    // The public route stays public.
    expect((await call(url, 'GET', '/healthz')).status).toBe(200);

    expect(snapshot()).toBe(before);
    // The held message is still sub-a's to ack on `default`: nobody else's ack consumed it.
    expect((await call(url, 'POST', '/v1/queues/a-1/subscriptions/default/ack', { ids: [heldId] }, SUB_A)).body).toEqual({ acked: 1, unknown: [] });
  });

  test('auth - WebSocket: no or wrong token and a disallowed Origin are refused at the upgrade; frames beyond the token\'s rights are refused; state unchanged', async () => {
    const before = snapshot();
    expect(await wsOpen('/v1/ws', {})).toBe(401);
    expect(await wsOpen('/v1/ws', bearer('wrong'))).toBe(401);
    expect(await wsOpen('/v1/ws?token=wrong', {})).toBe(401);
    // A valid token from a disallowed Origin (a browser page elsewhere riding on the user's token).
    expect(await wsOpen('/v1/ws', { ...ADMIN, origin: 'https://evil.example' })).toBe(403);
    expect(await wsOpen('/v1/ws?token=admin-token', { origin: 'https://app.example.evil' })).toBe(403);
    expect(await wsOpen('/v1/ws', { ...ADMIN, origin: 'null' })).toBe(403);

    // Allowed origin, valid token: open; but the token's rights still hold frame by frame.
    const c = await wsOpen('/v1/ws?token=sub-b-token', { origin: ORIGIN });
    if (typeof c === 'number') throw new Error(`refused: ${c}`);
    c.ws.send(JSON.stringify({ op: 'subscribe', ref: 1, queue: 'a-1', subscription: 'default' }));
    c.ws.send(JSON.stringify({ op: 'ack', ref: 2, queue: 'a-1', subscription: 'default', ids: ['x-1'] }));
    c.ws.send(JSON.stringify({ op: 'publish', ref: 3, queue: 'b-1', messages: [{ data: 'x' }] }));
    for (const ref of [1, 2, 3]) expect(await nextFrame(c, (f) => f.ref === ref)).toMatchObject({ op: 'error', code: 'FORBIDDEN' });
    const p = await wsOpen('/v1/ws', { ...PUB_A, origin: ORIGIN });
    if (typeof p === 'number') throw new Error(`refused: ${p}`);
    p.ws.send(JSON.stringify({ op: 'publish', ref: 4, queue: 'a-1', publisherId: 'pub-b', messages: [{ data: 'x' }] }));
    p.ws.send(JSON.stringify({ op: 'publish', ref: 5, queue: 'b-1', messages: [{ data: 'x' }] }));
    for (const ref of [4, 5]) expect(await nextFrame(p, (f) => f.ref === ref)).toMatchObject({ op: 'error', code: 'FORBIDDEN' });
    expect(c.ws.readyState).toBe(WebSocket.OPEN);
    c.ws.terminate();
    p.ws.terminate();
    await new Promise((r) => setTimeout(r, 50));
    expect(snapshot()).toBe(before);
  });
});
