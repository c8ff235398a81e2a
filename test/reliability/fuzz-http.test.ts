import fc from 'fast-check';
import { ERROR_STATUS } from '../../src/errors';
import { expectClean, summary } from './checker';
import { Bystander, healthy } from './clients';
import { note, recordFigures, scale } from './config';
import { request, call, startServer, stopAll, type ServerProcess } from './server';

/**
 * Property-based fuzzing of the HTTP API, driven by its own OpenAPI document: for every
 * route, requests generated from its parameter and body schemas, valid and at their bounds,
 * plus random mutations (fields dropped, added or retyped, bodies replaced by random JSON or
 * bytes, wrong content types, other methods). Against a real `spillway serve` process:
 * never a 5xx (but the documented 507 QUEUE_FULL / INSUFFICIENT_STORAGE), API.md's error
 * envelope with a catalogued code on every 4xx, and the server alive with a bystander served.
 */

type Schema = Record<string, any>;

interface Operation {
  method: string;
  path: string;
  params: { name: string; in: string; schema: Schema }[];
  body: Schema | undefined;
  raw: boolean;
}

interface Req {
  method: string;
  path: string;
  body?: Buffer;
  contentType?: string;
  mutation: string;
}

const NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$';
const NAME_CHARS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-';

/** Names the fuzzer mostly uses, so requests hit things that exist (fuzz queues, never the bystander's). */
const QUEUES = ['fz', 'fz2', 'dlq'];
const SUBS = ['default', 'sub1'];
const POOL = [...QUEUES, ...SUBS];
const validName = fc.tuple(fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789'.split('')), fc.array(fc.constantFrom(...NAME_CHARS.split('')), { maxLength: 12 }))
  .map(([a, rest]) => 'fz-' + a + rest.join(''));
const nameFrom = (pool: string[]): fc.Arbitrary<string> => fc.oneof({ weight: 12, arbitrary: fc.constantFrom(...pool) }, { weight: 2, arbitrary: validName },
  { weight: 2, arbitrary: fc.string({ maxLength: 140 }) }, { weight: 1, arbitrary: fc.constantFrom('..', '.', '%2e%2e', '../x', 'a/b', '\u0000', 'x'.repeat(129), '', ' ') });
const nameArb = nameFrom(POOL);
/** A path parameter by its name: queues, subscriptions, publisher and transaction ids. */
function paramArb(name: string, schema: Schema): fc.Arbitrary<string> {
  if (name === 'queue') return nameFrom(QUEUES);
  if (name === 'sub') return nameFrom(SUBS);
  if (schema.pattern === NAME_PATTERN) return nameArb;
  return fc.oneof({ weight: 4, arbitrary: fc.constantFrom('fuzz-pub', 'anonymous', ...txIds) }, { weight: 1, arbitrary: fc.string({ maxLength: 60 }) });
}
/** Transactions begun before the run, so commit and rollback find some. */
const txIds: string[] = [];

/** An arbitrary for a JSON schema (the subset the routes use), at and around its bounds. */
function arb(schema: Schema | undefined, key = ''): fc.Arbitrary<unknown> {
  if (schema === undefined || Object.keys(schema).length === 0) return fc.jsonValue({ maxDepth: 2 });
  if (key === 'waitMs') return fc.integer({ min: 0, max: 30 }); // long polls would only slow the run
  if (key === 'url') return fc.constantFrom('http://127.0.0.1:1', 'not a url', 'ftp://x', '', 'http://[::1', 'http://127.0.0.1:1/../x');
  if (schema.enum !== undefined) return fc.oneof({ weight: 5, arbitrary: fc.constantFrom(...(schema.enum as unknown[])) }, { weight: 1, arbitrary: fc.string({ maxLength: 8 }) });
  const type = Array.isArray(schema.type) ? schema.type[0] : schema.type;
  switch (type) {
    case 'object': {
      const props = (schema.properties ?? {}) as Record<string, Schema>;
      const rec: Record<string, fc.Arbitrary<unknown>> = {};
      for (const [k, v] of Object.entries(props)) rec[k] = arb(v, k);
      const base = fc.record(rec, { requiredKeys: (schema.required ?? []) as string[] }) as fc.Arbitrary<Record<string, unknown>>;
      const extra = schema.additionalProperties;
      if (extra !== undefined && extra !== false && Object.keys(props).length === 0) {
        return fc.dictionary(fc.string({ maxLength: 10 }), arb(extra === true ? undefined : extra), { maxKeys: 4 });
      }
      return base;
    }
    case 'array': {
      const min = Math.min(schema.minItems ?? 0, 3);
      return fc.array(arb(schema.items), { minLength: min, maxLength: Math.min(schema.maxItems ?? 5, 5) });
    }
    case 'string':
      if (schema.pattern === NAME_PATTERN) return nameArb;
      if (key === 'data') return fc.oneof(fc.string({ maxLength: 50 }), fc.base64String({ maxLength: 40 }), fc.constant('x'.repeat(2000)));
      return fc.oneof({ weight: 4, arbitrary: fc.string({ minLength: schema.minLength ?? 0, maxLength: 30 }) }, { weight: 1, arbitrary: fc.constantFrom(...POOL) });
    case 'integer': {
      const min = schema.minimum ?? -1e6;
      const max = schema.maximum ?? Math.max(min + 1e6, 1e7);
      return fc.oneof({ weight: 6, arbitrary: fc.integer({ min: Math.max(min, -(2 ** 31)), max: Math.min(max, 2 ** 31 - 1) }) },
        { weight: 2, arbitrary: fc.constantFrom(min, max, min - 1, max + 1, 0, -1, 2 ** 53, 1.5, 1e400) });
    }
    case 'number': return fc.double();
    case 'boolean': return fc.boolean();
    case 'null': return fc.constant(null);
    default: return fc.jsonValue({ maxDepth: 2 });
  }
}

/** A mutation of a generated body. */
function mutate(body: unknown, m: number, junk: unknown, bytes: Uint8Array): { body: Buffer | undefined; contentType: string; mutation: string } {
  const json = (v: unknown): Buffer => Buffer.from(JSON.stringify(v) ?? 'null');
  const obj = typeof body === 'object' && body !== null && !Array.isArray(body) ? { ...(body as Record<string, unknown>) } : undefined;
  switch (m) {
    case 0: case 1: case 2: case 3:
      return { body: body === undefined ? undefined : json(body), contentType: 'application/json', mutation: 'as generated' };
    case 4: {
      if (obj === undefined) break;
      const keys = Object.keys(obj);
      if (keys.length > 0) delete obj[keys[bytes.length % keys.length]!];
      return { body: json(obj), contentType: 'application/json', mutation: 'field dropped' };
    }
    case 5:
      if (obj === undefined) break;
      return { body: json({ ...obj, [`unknown${bytes.length}`]: junk, ['__proto__']: junk }), contentType: 'application/json', mutation: 'fields added' };
    case 6: {
      if (obj === undefined) break;
      const keys = Object.keys(obj);
      if (keys.length > 0) obj[keys[bytes.length % keys.length]!] = junk;
      return { body: json(obj), contentType: 'application/json', mutation: 'field retyped' };
    }
    case 7: return { body: json(junk), contentType: 'application/json', mutation: 'random JSON' };
    case 8: return { body: Buffer.from(bytes), contentType: 'application/json', mutation: 'random bytes as JSON' };
    case 9: return { body: json(body).subarray(0, Math.max(1, bytes.length % 20)), contentType: 'application/json', mutation: 'truncated JSON' };
    case 10: return { body: Buffer.from(bytes), contentType: 'application/octet-stream', mutation: 'raw bytes' };
    case 11: return { body: json(body), contentType: 'text/plain; charset=utf-8', mutation: 'other content type' };
  }
  return { body: body === undefined ? undefined : json(body), contentType: 'application/json', mutation: 'as generated' };
}

function requestArb(op: Operation, otherMethods: string[]): fc.Arbitrary<Req> {
  const pathParams = op.params.filter((p) => p.in === 'path');
  const query = op.params.filter((p) => p.in === 'query');
  const paramArbs = pathParams.map((p) => paramArb(p.name, p.schema));
  const queryArb = fc.array(fc.tuple(fc.constantFrom(...query.map((q) => q.name), 'junk'), fc.string({ maxLength: 20 })), { maxLength: query.length > 0 ? 2 : 0 });
  return fc.record({
    values: paramArbs.length > 0 ? fc.tuple(...paramArbs) : fc.constant([] as unknown[]),
    query: queryArb,
    body: op.body !== undefined ? fc.option(arb(op.body), { freq: 8 }) : fc.constant(undefined),
    m: fc.integer({ min: 0, max: 13 }),
    junk: fc.jsonValue({ maxDepth: 3 }),
    bytes: fc.uint8Array({ maxLength: 64 }),
    method: fc.oneof({ weight: 9, arbitrary: fc.constant(op.method) }, { weight: 1, arbitrary: fc.constantFrom(...otherMethods) }),
  }).map(({ values, query: q, body, m, junk, bytes, method }) => {
    let path = op.path;
    pathParams.forEach((p, i) => { path = path.replace(`{${p.name}}`, encodeURIComponent(String(values[i]))); });
    if (q.length > 0) path += '?' + q.map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('&');
    const mut = mutate(body ?? undefined, m, junk, bytes);
    if (m === 12) return { method: op.method, path, body: mut.body, contentType: undefined, mutation: 'no content type' };
    if (m === 13 && op.raw) return { method: op.method, path, body: Buffer.from(bytes), contentType: 'application/x-anything', mutation: 'raw message' };
    return { method, path, body: mut.body, contentType: mut.body === undefined ? undefined : mut.contentType, mutation: method === op.method ? mut.mutation : `method ${method}` };
  });
}

let s: ServerProcess;
let by: Bystander;
beforeAll(async () => {
  s = await startServer({ memory: '256MiB', bodyLimit: '1MiB' });
  by = new Bystander(s.url);
  await by.start();
});
afterAll(stopAll);

describe('reliability fuzz: HTTP API from its OpenAPI document', () => {
  test('fuzz http - every route: no 5xx (but 507), the error envelope on every 4xx, the server alive and others served', async () => {
    const doc = (await call(s.url, 'GET', '/openapi.json')).body as { paths: Record<string, Record<string, any>> };
    const ops: Operation[] = [];
    for (const [path, methods] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(methods)) {
        const content = op.requestBody?.content as Record<string, { schema: Schema }> | undefined;
        ops.push({ method: method.toUpperCase(), path, params: op.parameters ?? [], body: content?.['application/json']?.schema, raw: content?.['*/*'] !== undefined });
      }
    }
    expect(ops.length).toBeGreaterThanOrEqual(20);
    // Things to hit: queues and subscriptions from the pool, made again as the fuzzer deletes them.
    const restock = async (): Promise<void> => {
      for (const q of QUEUES) {
        await call(s.url, 'PUT', `/v1/queues/${q}`);
        await call(s.url, 'PUT', `/v1/queues/${q}/subscriptions/sub1`, { ackDeadlineMs: 50 });
        await call(s.url, 'POST', `/v1/queues/${q}/messages`, { publisherId: 'fuzz-pub', messages: [{ data: 'seed' }, { data: 'seed2', attributes: { a: 'b' } }] });
      }
    };
    for (let i = 0; i < 5; i++) txIds.push((await call(s.url, 'POST', '/v1/transactions', { timeoutMs: 600_000 })).body.id as string);

    const runs = scale(150, 1500);
    const statuses: Record<string, number> = {};
    const mark = by.mark();
    let total = 0;
    for (const op of ops) {
      const others = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS'].filter((m) => m !== op.method);
      await fc.assert(fc.asyncProperty(requestArb(op, others), async (req) => {
        if (total % 20 === 0) await restock();
        const headers: Record<string, string> = {};
        if (req.contentType !== undefined) headers['content-type'] = req.contentType;
        const r = await request(s.url, req.method, req.path, req.body, headers, 10_000);
        total++;
        statuses[r.status] = (statuses[r.status] ?? 0) + 1;
        const where = `${req.method} ${req.path} (${req.mutation}) → ${r.status} ${r.body.toString('utf8').slice(0, 300)}`;
        if (r.status >= 500 && r.status !== 507) throw new Error(`5xx: ${where}`);
        if (r.status >= 400) {
          if (req.method === 'HEAD') return;
          let env: any;
          try { env = JSON.parse(r.body.toString('utf8')); } catch { throw new Error(`not JSON: ${where}`); }
          const code = env?.error?.code as keyof typeof ERROR_STATUS;
          if (typeof env?.error?.message !== 'string' || ERROR_STATUS[code] !== r.status) throw new Error(`not the error envelope: ${where}`);
        }
      }), { numRuns: runs, seed: 42 + total, endOnFailure: true });
    }
    note(`fuzz http: ${total} requests over ${ops.length} operations; statuses ${JSON.stringify(statuses)}`);
    expect(s.alive()).toBe(true);
    expect(await healthy(s.url)).toBe(true);
    // Nothing leaked into the server's prototypes: a fresh subscription has its defaults.
    await call(s.url, 'PUT', '/v1/queues/after');
    expect((await call(s.url, 'PUT', '/v1/queues/after/subscriptions/fresh', {})).body).toMatchObject({ ackDeadlineMs: 30000, maxDeliveries: 10, startAt: 'latest' });
    await by.expectProgress(mark);
    const r = await by.finish();
    expectClean(r);
    note(`bystander: ${summary(r)}`);
    recordFigures({ scenario: `HTTP fuzz (${total} requests)`, published: r.published, delivered: r.delivered, lost: r.lost, duplicated: r.duplicated, corrupt: r.corrupt, note: 'bystander figures; 0 × 5xx' });
  }, scale(90_000, 600_000));
});
