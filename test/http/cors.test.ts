import { harness, type Harness } from './helpers';

const APP = 'https://app.example';
let h: Harness | undefined;
afterEach(async () => { await h?.close(); h = undefined; });

describe('http cors', () => {
  test('cors - a listed origin gets a preflight answer and the allow header on answers, errors included', async () => {
    h = harness({ allowedOrigins: [APP], auth: { tokens: [{ token: 't', name: 'web', publish: ['*'], subscribe: ['*'], admin: true }] } });
    const pre = await h.inject({
      method: 'OPTIONS', url: '/v1/queues/q/messages',
      headers: { origin: APP, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' },
    });
    expect(pre.statusCode).toBe(204);
    expect(pre.headers).toMatchObject({
      'access-control-allow-origin': APP, 'access-control-allow-methods': 'GET, POST, PUT, DELETE',
      'access-control-allow-headers': 'Authorization, Content-Type, X-Publisher-Id', vary: 'Origin',
    });
    // Without a token: 401 in the envelope, readable by the page.
    const denied = await h.inject({ method: 'GET', url: '/v1/queues', headers: { origin: APP } });
    expect([denied.statusCode, denied.json().error.code, denied.headers['access-control-allow-origin']]).toEqual([401, 'UNAUTHENTICATED', APP]);
    const ok = await h.inject({ method: 'PUT', url: '/v1/queues/q', headers: { origin: APP, authorization: 'Bearer t' } });
    expect([ok.statusCode, ok.headers['access-control-allow-origin'], ok.headers['access-control-expose-headers']]).toEqual([201, APP, 'Retry-After']);
  });

  test('cors - another origin, or no list at all, gets no CORS header and no preflight', async () => {
    h = harness({ allowedOrigins: [APP] });
    const other = await h.inject({ method: 'OPTIONS', url: '/v1/queues/q/messages', headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' } });
    expect(other.statusCode).toBe(404);
    expect(other.headers['access-control-allow-origin']).toBeUndefined();
    expect((await h.inject({ method: 'GET', url: '/v1/queues', headers: { origin: 'https://evil.example' } })).headers['access-control-allow-origin']).toBeUndefined();
    await h.close();
    h = harness();
    const unlisted = await h.inject({ method: 'GET', url: '/v1/queues', headers: { origin: APP } });
    expect([unlisted.statusCode, unlisted.headers['access-control-allow-origin']]).toEqual([200, undefined]);
  });
});
