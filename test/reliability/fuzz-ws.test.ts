import fc from 'fast-check';
import { expectClean, summary } from './checker';
import { Bystander, healthy } from './clients';
import { note, recordFigures, scale } from './config';
import { OP, RawWs, encodeFrame } from './raw';
import { call, startServer, stopAll, type ServerProcess } from './server';

/**
 * Property-based fuzzing of the WebSocket frame codec over a raw TCP connection: the upgrade,
 * then a stream of frames (whole or fragmented, text or binary, with pings between
 * fragments) cut at random byte offsets into separate writes. Intact streams must be
 * answered exactly as if sent whole, and the published bytes stored exactly; corrupted
 * streams must end in an answer or a close code, never a crash; a bystander is served
 * throughout.
 */

let s: ServerProcess;
let by: Bystander;
beforeAll(async () => {
  s = await startServer({ memory: '128MiB', bodyLimit: '1MiB' });
  by = new Bystander(s.url);
  await by.start();
  expect((await call(s.url, 'PUT', '/v1/queues/wf')).status).toBe(201);
});
afterAll(stopAll);

type Item =
  | { kind: 'publish'; data: string[]; fragments: number; binary: boolean }
  | { kind: 'ack'; ids: string[] }
  | { kind: 'ping'; payload: Uint8Array };

const itemArb: fc.Arbitrary<Item> = fc.oneof(
  { weight: 5, arbitrary: fc.record({
    kind: fc.constant('publish' as const),
    data: fc.array(fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: 'binary', maxLength: 20 }), fc.constantFrom('\ud800', 'a\udfffb', '\u0000\u001f'), fc.constant('x'.repeat(70_000))), { minLength: 1, maxLength: 3 }),
    fragments: fc.integer({ min: 1, max: 6 }),
    binary: fc.boolean(),
  }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('ack' as const), ids: fc.array(fc.string({ maxLength: 12 }), { maxLength: 4 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('ping' as const), payload: fc.uint8Array({ maxLength: 125 }) }) },
);

/** The bytes of a stream of items, and what the server must answer. */
function encode(items: Item[]): { bytes: Buffer; replies: string[]; pongs: number; data: string[] } {
  const parts: Buffer[] = [];
  const replies: string[] = [];
  const data: string[] = [];
  let pongs = 0;
  items.forEach((it, i) => {
    const ref = `r${i}`;
    if (it.kind === 'ping') {
      parts.push(encodeFrame(OP.PING, Buffer.from(it.payload)));
      pongs++;
      return;
    }
    const text = it.kind === 'publish'
      ? JSON.stringify({ op: 'publish', ref, queue: 'wf', messages: it.data.map((d) => ({ data: d })) })
      : JSON.stringify({ op: 'ack', ref, queue: 'wf', subscription: 'default', ids: it.ids });
    replies.push(`${it.kind === 'publish' ? 'published' : 'acked'}:${ref}`);
    if (it.kind === 'publish') data.push(...it.data);
    const bytes = Buffer.from(text, 'utf8');
    const n = it.kind === 'publish' ? it.fragments : 1;
    const size = Math.ceil(bytes.length / n);
    for (let k = 0; k < n; k++) {
      const piece = bytes.subarray(k * size, Math.min(bytes.length, (k + 1) * size));
      const opcode = k === 0 ? (it.kind === 'publish' && it.binary ? OP.BINARY : OP.TEXT) : OP.CONT;
      parts.push(encodeFrame(opcode, piece, { fin: k === n - 1 }));
      // A control frame may come between the fragments of a message.
      if (k < n - 1 && k === 0 && n > 2) {
        parts.push(encodeFrame(OP.PING, Buffer.from('mid')));
        pongs++;
      }
    }
  });
  return { bytes: Buffer.concat(parts), replies, pongs, data };
}

describe('reliability fuzz: WebSocket frames cut at random byte offsets', () => {
  test('fuzz ws - intact streams cut anywhere are answered exactly as if sent whole, and store exactly the bytes sent', async () => {
    let runs = 0;
    let frames = 0;
    await fc.assert(fc.asyncProperty(fc.array(itemArb, { minLength: 1, maxLength: 8 }), fc.array(fc.nat(), { maxLength: 40 }), async (items, cuts) => {
      const { bytes, replies, pongs, data } = encode(items);
      const ws = await RawWs.open(s.url);
      try {
        await ws.writeCut(bytes, cuts);
        const ok = await ws.waitFor((r) => r.json().length >= replies.length && r.frames.filter((f) => f.opcode === OP.PONG).length >= pongs, 10_000);
        const got = ws.reader.json().map((f) => `${f.op}:${f.ref}`);
        if (!ok || got.join() !== replies.join()) throw new Error(`answers ${JSON.stringify(got)} for ${JSON.stringify(replies)} (closed ${ws.closed})`);
        expect(ws.closed).toBe(false);
      } finally {
        ws.destroy();
      }
      // What was published is exactly what was sent, in order.
      const stored: string[] = [];
      while (stored.length < data.length) {
        const r = await call(s.url, 'POST', '/v1/queues/wf/dequeue', { max: 1000, autoAck: true });
        if (r.body.messages.length === 0) break;
        stored.push(...r.body.messages.map((m: { data: string; encoding: string }) => { expect(m.encoding).toBe('utf8'); return m.data; }));
      }
      // Lone surrogates included: JSON escapes go through unchanged.
      expect(stored).toEqual(data);
      runs++;
      frames += items.length;
    }), { numRuns: scale(100, 1000), seed: 11 });
    note(`fuzz ws intact: ${runs} streams, ${frames} requests`);
  }, scale(60_000, 600_000));

  test('fuzz ws - corrupted streams cut anywhere end in answers or a close code, never a crash; others are served', async () => {
    const closeCodes: Record<string, number> = {};
    const mark = by.mark();
    await fc.assert(fc.asyncProperty(
      fc.array(itemArb, { minLength: 1, maxLength: 6 }), fc.array(fc.nat(), { maxLength: 20 }),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }),
      async (items, cuts, flips) => {
        const { bytes } = encode(items);
        for (const [at, v] of flips) bytes[at % bytes.length] = v;
        const ws = await RawWs.open(s.url);
        try {
          await ws.writeCut(bytes, cuts);
          // A mangled length may leave the server waiting for bytes that never come: then the client gives up.
          await ws.waitFor((r) => r.closeCode() !== undefined || ws.closed, 300);
          const code = ws.reader.closeCode();
          closeCodes[String(code ?? (ws.closed ? 'dropped' : 'open'))] = (closeCodes[String(code ?? (ws.closed ? 'dropped' : 'open'))] ?? 0) + 1;
          if (code !== undefined) expect([1002, 1007, 1008, 1009]).toContain(code);
          for (const f of ws.reader.json()) expect(typeof f.op).toBe('string');
        } finally {
          ws.destroy();
        }
        if (!s.alive()) throw new Error(`the server died: ${s.stderr().slice(-2000)}`);
      },
    ), { numRuns: scale(100, 1000), seed: 12 });
    note(`fuzz ws corrupted: close codes ${JSON.stringify(closeCodes)}`);
    expect(await healthy(s.url)).toBe(true);
    await by.expectProgress(mark);
    const r = await by.finish();
    expectClean(r);
    note(`bystander: ${summary(r)}`);
    recordFigures({ scenario: 'WebSocket frame fuzz', published: r.published, delivered: r.delivered, lost: r.lost, duplicated: r.duplicated, corrupt: r.corrupt, note: 'bystander figures' });
  }, scale(60_000, 600_000));
});
