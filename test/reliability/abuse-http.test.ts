import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';
import { Broker } from '../../src/broker';
import { buildServer } from '../../src/http';
import { checksumOf, expectClean, summary } from './checker';
import { Bystander, healthy, unaffected } from './clients';
import { MiB, fullOnly, note, recordFigures, scale, sleep } from './config';
import { rawHttp, rawJson, openSocket } from './raw';
import { RssSampler, call, expectError, request, startServer, stopAll, type ServerProcess } from './server';

/**
 * Bad input and abuse over HTTP against a real `spillway serve` process (body limit 1 MiB),
 * with a bystander publishing and subscribing beside it the whole time. Each case: a clear
 * 4xx (API.md's envelope where the request reached a route), the server alive, the
 * bystander unaffected.
 */

const LIMIT = 1 * MiB;
let s: ServerProcess;
let by: Bystander;
let rss: RssSampler;
let baseRss = 0;

beforeAll(async () => {
  s = await startServer({ memory: '128MiB', bodyLimit: '1MiB' });
  by = new Bystander(s.url);
  await by.start();
  expect((await call(s.url, 'PUT', '/v1/queues/q')).status).toBe(201);
  rss = new RssSampler(s.pid, 50);
  await sleep(300);
  baseRss = rss.peak;
});
afterAll(async () => {
  rss.stop();
  await stopAll();
});


/** Waits for 'drain' (or 100 ms), without leaving listeners behind. */
function drained(sock: Socket): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => { clearTimeout(t); sock.off('drain', done); resolve(); };
    const t = setTimeout(done, 100);
    sock.once('drain', done);
  });
}

const publish = (body: unknown, headers?: Record<string, string>) => call(s.url, 'POST', '/v1/queues/q/messages', body, headers);

/** Pulls everything on q's default subscription and acks it. */
async function pullAll(): Promise<{ data: string; encoding: string; attributes: Record<string, string> }[]> {
  const r = await call(s.url, 'POST', '/v1/queues/q/dequeue', { max: 1000 });
  expect(r.status).toBe(200);
  const msgs = r.body.messages as { id: string; data: string; encoding: string; attributes: Record<string, string> }[];
  if (msgs.length > 0) expect((await call(s.url, 'POST', '/v1/queues/q/ack', { ids: msgs.map((m) => m.id) })).body.acked).toBe(msgs.length);
  return msgs;
}

describe('reliability abuse: HTTP', () => {
  test('abuse - malformed JSON is 400 INVALID_ARGUMENT on every route that takes a body', async () => {
    await unaffected(s, by, async () => {
      const bodies = ['{', '{"messages":', 'nul', '{"a":1,}', "{'a':1}", '\u0000', '\uFEFF{"messages":[{"data":"x"}]}', '{"messages":[{"data":"x"}]} trailing', '[1,2', '"unterminated'];
      const routes = [['POST', '/v1/queues/q/messages'], ['POST', '/v1/queues/q/dequeue'], ['POST', '/v1/queues/q/ack'], ['PUT', '/v1/queues/q2'],
        ['PUT', '/v1/queues/q/subscriptions/s2'], ['POST', '/v1/transactions'], ['POST', '/v1/queues/q/subscriptions/default/nack']];
      for (const [method, path] of routes) {
        for (const b of bodies) {
          const r = await call(s.url, method!, path!, b, { 'content-type': 'application/json' });
          expect([method, path, b, r.status, r.body?.error?.code]).toEqual([method, path, b, 400, 'INVALID_ARGUMENT']);
        }
      }
      // Nothing was created by any of them.
      expect((await call(s.url, 'GET', '/v1/queues/q2')).status).toBe(404);
      expect((await call(s.url, 'GET', '/v1/queues/q')).body).toMatchObject({ published: 0, subscriptions: ['default'] });
    });
  });

  test('abuse - deeply nested JSON (100 000 levels) is refused with 400, not a stack overflow', async () => {
    await unaffected(s, by, async () => {
      const depth = 100_000;
      const cases = [
        '['.repeat(depth) + ']'.repeat(depth),
        '{"a":'.repeat(depth) + '1' + '}'.repeat(depth),
        '{"messages":[{"data":"x","attributes":' + '{"a":'.repeat(depth) + '"1"' + '}'.repeat(depth) + '}]}',
        '{"messages":' + '['.repeat(depth) + ']'.repeat(depth) + '}',
      ];
      for (const b of cases) {
        expect(b.length).toBeLessThan(LIMIT);
        for (const path of ['/v1/queues/q/messages', '/v1/queues/q/dequeue', '/v1/queues/q/subscriptions/nested']) {
          const r = await call(s.url, path.endsWith('nested') ? 'PUT' : 'POST', path, b, { 'content-type': 'application/json' });
          expectError(r, 400, 'INVALID_ARGUMENT');
        }
      }
    });
  });

  test('abuse - __proto__, constructor and prototype keys: refused where unknown, plain keys where keys are free, no pollution', async () => {
    await unaffected(s, by, async () => {
      expectError(await call(s.url, 'POST', '/v1/queues/q/messages', '{"__proto__":{"x":1},"messages":[{"data":"x"}]}', { 'content-type': 'application/json' }), 400, 'INVALID_ARGUMENT');
      expectError(await call(s.url, 'POST', '/v1/queues/q/messages', '{"messages":[{"data":"x","__proto__":{"publisherSeq":1}}]}', { 'content-type': 'application/json' }), 400, 'INVALID_ARGUMENT');
      expectError(await call(s.url, 'PUT', '/v1/queues/proto', '{"__proto__":{"memoryBytes":1}}', { 'content-type': 'application/json' }), 400, 'INVALID_ARGUMENT');
      expectError(await call(s.url, 'PUT', '/v1/queues/q/subscriptions/proto', '{"__proto__":{"ackDeadlineMs":1}}', { 'content-type': 'application/json' }), 400, 'INVALID_ARGUMENT');
      expectError(await call(s.url, 'POST', '/v1/queues/q/dequeue', '{"constructor":{"prototype":{"max":5}}}', { 'content-type': 'application/json' }), 400, 'INVALID_ARGUMENT');
      // In attributes and filters, any key is a key: stored, matched and delivered as sent.
      const sub = await call(s.url, 'PUT', '/v1/queues/q/subscriptions/protof', '{"filter":{"attributes":{"__proto__":"yes"}}}', { 'content-type': 'application/json' });
      expect(sub.status).toBe(201);
      expect(sub.body.filter).toEqual(JSON.parse('{"attributes":{"__proto__":"yes"}}'));
      const pub = await call(s.url, 'POST', '/v1/queues/q/messages',
        '{"messages":[{"data":"p1","attributes":{"__proto__":"yes","constructor":"c","prototype":"p"}},{"data":"p2","attributes":{"other":"x"}}]}',
        { 'content-type': 'application/json' });
      expect(pub.status).toBe(201);
      const f = await call(s.url, 'POST', '/v1/queues/q/subscriptions/protof/pull', { max: 10 });
      expect(f.body.messages.map((m: { data: string }) => m.data)).toEqual(['p1']);
      expect(Object.keys(f.body.messages[0].attributes).sort()).toEqual(['__proto__', 'constructor', 'prototype']);
      expect((await pullAll()).map((m) => m.data)).toEqual(['p1', 'p2']);
      // A fresh subscription still gets the defaults: nothing leaked into the server's prototypes.
      const fresh = await call(s.url, 'PUT', '/v1/queues/q/subscriptions/fresh', {});
      expect(fresh.body).toMatchObject({ ackDeadlineMs: 30000, maxDeliveries: 10 });
      for (const name of ['protof', 'fresh']) expect((await call(s.url, 'DELETE', `/v1/queues/q/subscriptions/${name}`)).status).toBe(204);
    });
  });

  test('abuse - huge, fractional, negative and stringly numbers are 400 naming the field', async () => {
    await unaffected(s, by, async () => {
      const digits = '9'.repeat(5000);
      const cases: [string, string, string, string][] = [
        ['POST', '/v1/queues/q/dequeue', '{"max":1e400}', 'max'],
        ['POST', '/v1/queues/q/dequeue', `{"max":${digits}}`, 'max'],
        ['POST', '/v1/queues/q/dequeue', '{"max":1.5}', 'max'],
        ['POST', '/v1/queues/q/dequeue', '{"max":-1}', 'max'],
        ['POST', '/v1/queues/q/dequeue', '{"max":"10"}', 'max'],
        ['POST', '/v1/queues/q/dequeue', '{"waitMs":1e9}', 'waitMs'],
        ['POST', '/v1/queues/q/dequeue', '{"waitMs":-0.5}', 'waitMs'],
        ['PUT', '/v1/queues/huge', '{"memoryBytes":1e19}', 'memoryBytes'],
        ['PUT', '/v1/queues/huge', '{"memoryBytes":9007199254740993}', 'memoryBytes'],
        ['PUT', '/v1/queues/huge', '{"publisherLimitBytes":1e400}', 'publisherLimitBytes'],
        ['PUT', '/v1/queues/q/subscriptions/huge', '{"ackDeadlineMs":1e400}', 'ackDeadlineMs'],
        ['PUT', '/v1/queues/q/subscriptions/huge', `{"maxEvents":${digits}}`, 'maxEvents'],
        ['POST', '/v1/queues/q/messages', '{"messages":[{"data":"x","publisherSeq":9007199254740993}]}', 'publisherSeq'],
        ['POST', '/v1/queues/q/messages', '{"messages":[{"data":"x","publisherSeq":1e21}]}', 'publisherSeq'],
        ['POST', '/v1/queues/q/messages', '{"messages":[{"data":"x","publisherSeq":-1}]}', 'publisherSeq'],
        ['POST', '/v1/queues/q/subscriptions/default/nack', '{"ids":[],"delayMs":1e400}', 'delayMs'],
        ['POST', '/v1/queues/q/subscriptions/default/extend', '{"ids":[],"ackDeadlineMs":1e12}', 'ackDeadlineMs'],
        ['POST', '/v1/transactions', '{"timeoutMs":1e400}', 'timeoutMs'],
      ];
      for (const [method, path, body, field] of cases) {
        const r = await call(s.url, method, path, body, { 'content-type': 'application/json' });
        expect([path, body.slice(0, 60), r.status, r.body?.error?.code]).toEqual([path, body.slice(0, 60), 400, 'INVALID_ARGUMENT']);
        if (field !== 'timeoutMs') expect(r.body.error.field).toBe(field);
      }
      expect((await call(s.url, 'GET', '/v1/queues/huge')).status).toBe(404);
      expect((await call(s.url, 'GET', '/v1/queues/q')).body.published).toBe(2);
    });
  });

  test('abuse - bodies at the limit are taken, over it 413, far over it 413 early without buffering them', async () => {
    await unaffected(s, by, async () => {
      // At: 1 MiB of raw bytes, accepted and delivered byte for byte.
      const at = randomBytes(LIMIT);
      const ok = await request(s.url, 'POST', '/v1/queues/q/messages', at, { 'content-type': 'application/octet-stream' });
      expect(ok.status).toBe(201);
      const [m] = await pullAll();
      expect(m!.encoding).toBe('base64');
      expect(checksumOf(Buffer.from(m!.data, 'base64'))).toBe(checksumOf(at));
      // Over by one byte: 413 BODY_TOO_LARGE, nothing stored.
      const over = await call(s.url, 'POST', '/v1/queues/q/messages', Buffer.alloc(LIMIT + 1, 0x61), { 'content-type': 'application/octet-stream' });
      expectError(over, 413, 'BODY_TOO_LARGE');
      const overJson = await call(s.url, 'POST', '/v1/queues/q/messages', { messages: [{ data: 'x'.repeat(LIMIT) }] });
      expectError(overJson, 413, 'BODY_TOO_LARGE');

      // Far over, declared: 413 from the Content-Length alone, connection closed; the 256 MiB are never read.
      const declared = await rawHttp(s.url, [
        'POST /v1/queues/q/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 268435456\r\n\r\n',
        Buffer.alloc(64 * 1024, 0x61),
      ], 5000);
      expect({ status: declared.status, closed: declared.closed }).toEqual({ status: 413, closed: true });
      expect(rawJson(declared.text).error.code).toBe('BODY_TOO_LARGE');

      // Far over, chunked (no length): the server stops at the limit and closes while the client still sends.
      const sock = await openSocket(s.url);
      let answer = '';
      sock.on('data', (d: Buffer) => { answer += d.toString('latin1'); });
      sock.on('error', () => {});
      const closed = new Promise<void>((resolve) => sock.on('close', () => resolve()));
      sock.write('POST /v1/queues/q/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n');
      const chunk = Buffer.alloc(64 * 1024, 0x62);
      let sent = 0;
      let isClosed = false;
      void closed.then(() => { isClosed = true; });
      while (!isClosed && sent < 256 * MiB) {
        sock.write(chunk.length.toString(16) + '\r\n');
        sock.write(chunk);
        if (!sock.write('\r\n')) await drained(sock);
        sent += chunk.length;
      }
      await closed;
      // The 413 is sent, then the connection closed with the client's bytes unread: the reset
      // that follows may reach the client before the answer does (TCP discards it then).
      if (answer !== '') expect(answer).toMatch(/^HTTP\/1\.1 413 /);
      expect(sent).toBeLessThan(64 * MiB);
      expect((await call(s.url, 'GET', '/v1/queues/q')).body).toMatchObject({ messages: 0 });
    });
    // The server never held the big bodies.
    expect(rss.peak - baseRss).toBeLessThan(96 * MiB);
  });

  test('abuse - lying and contradictory Content-Length: 400 and the connection closed, or a wait the request timeout ends', async () => {
    await unaffected(s, by, async () => {
      const head = (cl: string, extra = '') => `POST /v1/queues/q/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n${cl}${extra}\r\n`;
      const body = '{"messages":[{"data":"liar"}]}';
      // Shorter than the body: the body is cut (400), and the rest is garbage as a next request (400, closed).
      const short = await rawHttp(s.url, head(`Content-Length: ${body.length - 10}\r\n`) + body);
      expect(short.status).toBe(400);
      expect(short.closed).toBe(true);
      for (const cl of ['Content-Length: -1\r\n', 'Content-Length: abc\r\n', 'Content-Length: 99999999999999999999999\r\n',
        `Content-Length: ${body.length}\r\nContent-Length: ${body.length + 1}\r\n`, `Content-Length: ${body.length}\r\nTransfer-Encoding: chunked\r\n`]) {
        const r = await rawHttp(s.url, head(cl) + body);
        expect([cl, r.status, r.closed]).toEqual([cl, 400, true]);
      }
      // Longer than the body: the server waits for the rest (others are served meanwhile)...
      const mark = by.mark();
      const longer = rawHttp(s.url, head('Content-Length: 5000\r\n') + body, 1500);
      await by.expectProgress(mark);
      const r = await longer;
      expect(r.closed).toBe(false);
      // ...and nothing was stored from it.
      expect((await call(s.url, 'GET', '/v1/queues/q')).body.messages).toBe(0);
    });
  });

  test('abuse - invalid, over-long, control-character and path-traversal queue names (raw and percent-encoded) are refused', async () => {
    await unaffected(s, by, async () => {
      const bad = ['-lead', '.hidden', '_x', 'has%20space', 'a+b', 'semi;colon', 'a:b', '%C3%BC', '..', '.', '%2e%2e', '%2E%2E', '..%2F..%2Fetc%2Fpasswd',
        '%2e%2e%2f%2e%2e%2fetc%2fpasswd', 'a%2Fb', 'a%5Cb', '..%5C..%5Cwin', 'a%00b', '%00', 'a%0Ab', 'a%0D%0AX-Injected:%201', 'a%7F', '%FF', '%E0%A4%A', 'a'.repeat(129), 'b'.repeat(2000)];
      for (const name of bad) {
        for (const [method, path] of [['PUT', `/v1/queues/${name}`], ['GET', `/v1/queues/${name}`], ['POST', `/v1/queues/${name}/messages`],
          ['PUT', `/v1/queues/q/subscriptions/${name}`], ['DELETE', `/v1/queues/${name}`]]) {
          const r = await call(s.url, method!, path!, method === 'POST' ? { messages: [{ data: 'x' }] } : undefined);
          // 400 for a bad name; 404 where the router finds no route (a name that decodes to several segments).
          expect([method, path!.slice(0, 80), [400, 404].includes(r.status), typeof r.body?.error?.code]).toEqual([method, path!.slice(0, 80), true, 'string']);
        }
      }
      // Unencoded traversal and control characters in the request line itself.
      for (const line of ['PUT /v1/queues/../../etc/passwd HTTP/1.1', 'PUT /v1/queues/..\\..\\x HTTP/1.1', 'PUT /v1/queues/a\u0000b HTTP/1.1',
        'PUT /v1/queues/a\tb HTTP/1.1', 'PUT /v1/queues/a\u0001b HTTP/1.1', 'PUT /v1/queues/a\u007fb HTTP/1.1']) {
        const r = await rawHttp(s.url, `${line}\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`, 1000);
        expect([JSON.stringify(line), r.status >= 400 && r.status < 500]).toEqual([JSON.stringify(line), true]);
      }
      // At the limit: 128 characters is a name.
      const longest = 'L'.repeat(128);
      expect((await call(s.url, 'PUT', `/v1/queues/${longest}`)).status).toBe(201);
      expect((await call(s.url, 'DELETE', `/v1/queues/${longest}`)).status).toBe(204);
      // A percent-encoded valid name is that name.
      expect((await call(s.url, 'GET', '/v1/queues/%71')).body.name).toBe('q');
      // Nothing outside the data dir, nothing odd inside it.
      const queues = (await call(s.url, 'GET', '/v1/queues')).body.queues.map((q: { name: string }) => q.name).sort();
      expect(queues).toEqual(['bystander', 'q']);
      expect(readdirSync(s.dataDir).sort()).toEqual(['definitions.json', 'spill']);
      for (const f of readdirSync(join(s.dataDir, 'spill'))) expect(f).toMatch(/^[A-Za-z0-9][A-Za-z0-9._-]*\.seg$/);
    });
  });

  test('abuse - binary and invalid UTF-8 payloads: raw bodies round-trip as base64 byte for byte; invalid UTF-8 in JSON is refused', async () => {
    await unaffected(s, by, async () => {
      const invalidUtf8 = [
        Buffer.from([0xff]), Buffer.from([0xfe, 0xff]), Buffer.from([0xc0, 0x80]), Buffer.from([0xe0, 0x80, 0x80]),
        Buffer.from([0xed, 0xa0, 0x80]), Buffer.from([0xf4, 0x90, 0x80, 0x80]), Buffer.from([0x61, 0xe2, 0x82]), Buffer.from([0x80]),
        Buffer.concat([Buffer.from('{"messages":[{"data":"'), Buffer.from([0xff]), Buffer.from('"}]}')]),
      ];
      const randoms = [1, 7, 100, 4096, 65_536, 300_000].map((n) => randomBytes(n));
      const texts = ['plain', 'ünïcödé ✓ 🚀', '\u0000\u0001 nul and control', '{"looks":"like json"}'].map((t) => Buffer.from(t, 'utf8'));
      const all = [...invalidUtf8, ...randoms, ...texts];
      for (const [i, body] of all.entries()) {
        const r = await request(s.url, 'POST', '/v1/queues/q/messages', body, { 'content-type': i % 2 === 0 ? 'application/octet-stream' : 'text/plain', 'x-publisher-id': 'binary' });
        expect([i, r.status]).toEqual([i, 201]);
      }
      const got = await pullAll();
      expect(got).toHaveLength(all.length);
      for (const [i, m] of got.entries()) {
        const bytes = Buffer.from(m.data, m.encoding === 'base64' ? 'base64' : 'utf8');
        expect([i, bytes.equals(all[i]!)]).toEqual([i, true]);
        // Text stays text; anything that is not valid UTF-8 comes back as base64.
        expect([i, m.encoding]).toEqual([i, i >= invalidUtf8.length + randoms.length ? 'utf8' : i < invalidUtf8.length ? 'base64' : m.encoding]);
      }
      // The same bytes inside a JSON body cannot be represented: refused, not replaced by U+FFFD.
      for (const bad of invalidUtf8.slice(0, 8)) {
        const body = Buffer.concat([Buffer.from('{"messages":[{"data":"a'), bad, Buffer.from('b"}]}')]);
        const r = await call(s.url, 'POST', '/v1/queues/q/messages', body, { 'content-type': 'application/json' });
        expectError(r, 400, 'INVALID_ARGUMENT');
      }
      // A lone surrogate written as a JSON escape is valid JSON: it round-trips as the same string.
      expect((await publish('{"messages":[{"data":"x\\ud800y"}]}', { 'content-type': 'application/json' })).status).toBe(201);
      // base64 in JSON: exact bytes; bad base64: 400.
      const bin = randomBytes(1000);
      expect((await publish({ messages: [{ data: bin.toString('base64'), encoding: 'base64' }] })).status).toBe(201);
      expectError(await publish({ messages: [{ data: 'not base64!', encoding: 'base64' }] }), 400, 'INVALID_ARGUMENT');
      const [lone, b64] = await pullAll();
      expect(lone!.data).toBe('x\ud800y');
      expect(Buffer.from(b64!.data, 'base64').equals(bin)).toBe(true);
      expect((await call(s.url, 'GET', '/v1/queues/q')).body.messages).toBe(0);
    });
  });

  test('abuse - thousands of headers: 431 when over the header size, never a crash', async () => {
    await unaffected(s, by, async () => {
      let many = '';
      for (let i = 0; i < 5000; i++) many += `X-Header-${i}: value-${i}\r\n`;
      const big = await rawHttp(s.url, `GET /healthz HTTP/1.1\r\nHost: x\r\n${many}\r\n`);
      expect({ status: big.status, closed: big.closed }).toEqual({ status: 431, closed: true });
      // Thousands of tiny ones under the size: Node keeps the first 2000 (maxHeadersCount); the request is served.
      let tiny = '';
      for (let i = 0; i < 3000; i++) tiny += 'a:b\r\n';
      const small = await rawHttp(s.url, `GET /healthz HTTP/1.1\r\nHost: x\r\n${tiny}Connection: close\r\n\r\n`);
      expect([200, 400, 431]).toContain(small.status);
      // One huge header line, and a huge URL.
      expect((await rawHttp(s.url, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(64 * 1024)}\r\n\r\n`)).status).toBe(431);
      expect((await rawHttp(s.url, `GET /v1/queues/${'a'.repeat(64 * 1024)} HTTP/1.1\r\nHost: x\r\n\r\n`)).status).toBe(431);
    });
  });

  test('abuse - a client pipelining requests that never reads the answers: the server pauses it, memory stays bounded', async () => {
    await unaffected(s, by, async () => {
      const before = rss.peak;
      const sock = await openSocket(s.url);
      sock.pause();
      sock.on('error', () => {});
      const req = Buffer.from('GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(200));
      const end = Date.now() + scale(2500, 10_000);
      let sent = 0;
      while (Date.now() < end) {
        if (sock.write(req)) sent += 200;
        else await drained(sock);
      }
      note(`pipelined ${sent} requests without reading; server RSS +${Math.round((rss.peak - before) / MiB)} MiB`);
      sock.destroy();
      expect(rss.peak - before).toBeLessThan(64 * MiB);
    });
  });

  test('abuse - the bystander kept publishing and receiving throughout, and lost nothing', async () => {
    const r = await by.finish();
    note(`bystander: ${summary(r)}; slowest publish ${by.publisher.maxLatencyMs} ms`);
    expectClean(r);
    expect(by.publisher.errors).toEqual([]);
    expect(by.publisher.maxLatencyMs).toBeLessThan(3000);
    expect(s.alive()).toBe(true);
    recordFigures({
      scenario: 'HTTP abuse (bystander beside it)', published: r.published, delivered: r.delivered, lost: r.lost, duplicated: r.duplicated,
      corrupt: r.corrupt, restricted: by.publisher.restricted, peakRssMiB: rss.peakMiB, note: `slowest bystander publish ${by.publisher.maxLatencyMs} ms`,
    });
  });
});

describe('reliability abuse: HTTP timeouts', () => {
  test('abuse - slow headers, slow bodies, idle connections and a Content-Length never met are cut off by the server timeouts (408, closed)', async () => {
    const broker = new Broker({});
    const app = buildServer({ broker, requestTimeout: 1500, defaultMetrics: false });
    // Node checks these timeouts on an interval (30 s by default); here every 100 ms, so the test is short.
    app.server.headersTimeout = 1000;
    (app.server as unknown as { connectionsCheckingInterval: number }).connectionsCheckingInterval = 100;
    try {
      await app.listen({ port: 0, host: '127.0.0.1' });
      const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
      await call(url, 'PUT', '/v1/queues/q');
      const header = 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ' + 'a'.repeat(60) + '\r\n\r\n';
      const body = '{"messages":[{"data":"' + 'x'.repeat(60) + '"}]}';
      const bodyHead = `POST /v1/queues/q/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`;
      const [slowHeader, slowBody, idle, liar] = await Promise.all([
        rawHttp(url, header.split(''), 8000, 50),
        rawHttp(url, [bodyHead, ...body.split('')], 8000, 50),
        rawHttp(url, [], 8000),
        rawHttp(url, bodyHead.replace(/Content-Length: \d+/, 'Content-Length: 5000') + body, 8000),
      ]);
      // Meanwhile a normal request is served at once.
      expect(await healthy(url)).toBe(true);
      for (const [name, r, max] of [['slow header', slowHeader, 2500], ['slow body', slowBody, 3500], ['idle', idle, 2500], ['lying length', liar, 3500]] as const) {
        expect([name, r.status, r.closed, r.ms < max]).toEqual([name, 408, true, true]);
      }
      expect(broker.queueStats('q').published).toBe(0);
    } finally {
      await app.close();
      await broker.close();
    }
  });

  fullOnly('abuse - with the CLI defaults, a slow-header connection is closed within the 60 s headers timeout (+ Node\'s 30 s check interval)', async () => {
    const t0 = Date.now();
    const header = 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ' + 'a'.repeat(1000) + '\r\n\r\n';
    const r = await rawHttp(s.url, header.split(''), 100_000, 100);
    note(`CLI slow header cut after ${Math.round((Date.now() - t0) / 1000)} s with ${r.status}`);
    expect({ status: r.status, closed: r.closed }).toEqual({ status: 408, closed: true });
    expect(r.ms).toBeLessThan(95_000);
  }, 120_000);
});
