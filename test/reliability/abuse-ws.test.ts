import WebSocket from 'ws';
import { Checker, expectClean, makePayload, checksumOf, summary } from './checker';
import { Bystander, RestPublisher, WsSubscriber, unaffected } from './clients';
import { MiB, note, recordFigures, scale, sleep, waitFor } from './config';
import { OP, RawWs, encodeFrame } from './raw';
import { RssSampler, call, startServer, stopAll, type ServerProcess } from './server';

/**
 * Bad input and abuse over WebSocket against a real `spillway serve` process (frame limit
 * 1 MiB), with a bystander beside it: a clear close code or error frame, the server alive,
 * memory bounded, the bystander unaffected.
 */

let s: ServerProcess;
let by: Bystander;
let rss: RssSampler;
const sockets: { terminate(): void }[] = [];

beforeAll(async () => {
  s = await startServer({ memory: '128MiB', bodyLimit: '1MiB' });
  by = new Bystander(s.url);
  await by.start();
  expect((await call(s.url, 'PUT', '/v1/queues/w')).status).toBe(201);
  rss = new RssSampler(s.pid, 50);
});
afterEach(() => {
  for (const w of sockets.splice(0)) w.terminate();
});
afterAll(async () => {
  rss.stop();
  await stopAll();
});


interface Conn {
  ws: WebSocket;
  frames: any[];
  closed: Promise<{ code: number; reason: string }>;
}

function open(opts: WebSocket.ClientOptions = {}): Promise<Conn> {
  const ws = new WebSocket(s.url.replace(/^http/, 'ws') + '/v1/ws', { perMessageDeflate: false, ...opts });
  sockets.push(ws);
  const frames: any[] = [];
  ws.on('message', (d) => frames.push(JSON.parse(d.toString())));
  ws.on('error', () => { /* close follows */ });
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve({ ws, frames, closed }));
    ws.once('error', reject);
  });
}

async function rawOpen(): Promise<RawWs> {
  const r = await RawWs.open(s.url);
  sockets.push({ terminate: () => r.destroy() });
  return r;
}

describe('reliability abuse: WebSocket', () => {
  test('abuse ws - a frame that is not JSON closes with 1007; JSON that is not a valid request gets an error frame and the socket stays', async () => {
    await unaffected(s, by, async () => {
      const c = await open();
      const bad = ['[1,2]', '"text"', '42', 'null', '{}', '{"op":"nope"}', '{"op":"publish"}', '{"op":"publish","queue":"w","messages":[]}',
        '{"op":"publish","queue":"w","messages":[{"data":1}]}', '{"op":"subscribe","queue":"../x"}', '{"op":"ack","queue":"w","ids":"x"}',
        '{"op":"subscribe","queue":"w","prefetch":1e400}', '{"op":"nack","queue":"w","ids":[],"delayMs":-1}', '{"op":"publish","ref":{"__proto__":{"x":1}},"queue":"nope","messages":[{"data":"x"}]}'];
      for (const b of bad) c.ws.send(b);
      await waitFor(() => c.frames.length >= bad.length, 'an error frame for each');
      expect(c.frames.map((f) => f.op)).toEqual(bad.map(() => 'error'));
      for (const f of c.frames) expect(typeof f.code === 'string' && typeof f.message === 'string').toBe(true);
      expect(c.ws.readyState).toBe(WebSocket.OPEN);
      c.ws.send('{"op":"publish","ref":"ok","queue":"w","messages":[{"data":"still works"}]}');
      await waitFor(() => c.frames.some((f) => f.op === 'published' && f.ref === 'ok'), 'the socket to still work');
      c.ws.send('{not json');
      expect((await c.closed).code).toBe(1007);
    });
  });

  test('abuse ws - invalid UTF-8 closes with 1007, in a text frame or a binary one', async () => {
    await unaffected(s, by, async () => {
      const payload = Buffer.concat([Buffer.from('{"op":"publish","ref":"u","queue":"w","messages":[{"data":"a'), Buffer.from([0xff, 0xfe]), Buffer.from('b"}]}')]);
      const text = await rawOpen();
      text.write(encodeFrame(OP.TEXT, payload));
      await text.waitFor((rd) => rd.closeCode() !== undefined, 3000);
      expect(text.reader.closeCode()).toBe(1007);
      // A binary frame with the same bytes: the server reads frames as UTF-8 JSON, so it must refuse them too.
      const bin = await rawOpen();
      bin.write(encodeFrame(OP.BINARY, payload));
      await bin.waitFor((rd) => rd.closeCode() !== undefined, 3000);
      expect(bin.reader.json().filter((f) => f.op === 'published')).toEqual([]);
      expect(bin.reader.closeCode()).toBe(1007);
      // The same JSON as valid UTF-8 in a binary frame is served.
      const ok = await rawOpen();
      ok.write(encodeFrame(OP.BINARY, '{"op":"publish","ref":"b","queue":"w","messages":[{"data":"binary frame"}]}'));
      expect(await ok.waitFor((rd) => rd.json().some((f) => f.op === 'published' && f.ref === 'b'))).toBe(true);
      expect((await call(s.url, 'GET', '/v1/queues/w')).body.published).toBe(2);
    });
  });

  test('abuse ws - an oversize frame closes with 1009, also when only its header claims the size', async () => {
    await unaffected(s, by, async () => {
      const c = await open();
      c.ws.send(JSON.stringify({ op: 'publish', queue: 'w', messages: [{ data: 'x'.repeat(MiB + 10) }] }));
      expect((await c.closed).code).toBe(1009);
      // A header announcing 2^53 bytes, then nothing: refused from the header alone.
      const r = await rawOpen();
      r.write(encodeFrame(OP.TEXT, Buffer.alloc(0), { declaredLength: Number.MAX_SAFE_INTEGER }).subarray(0, 14));
      await r.closedP;
      expect(r.reader.closeCode()).toBe(1009);
      const r2 = await rawOpen();
      r2.write(encodeFrame(OP.TEXT, Buffer.alloc(0), { declaredLength: 64 * MiB }).subarray(0, 14));
      await r2.closedP;
      expect(r2.reader.closeCode()).toBe(1009);
      // Fragments adding up to more than the limit: 1009 too.
      const f = await open();
      const piece = 'y'.repeat(256 * 1024);
      f.ws.send('{"op":"publish","queue":"w","messages":[{"data":"', { fin: false });
      for (let i = 0; i < 5; i++) f.ws.send(piece, { fin: false });
      expect((await f.closed).code).toBe(1009);
    });
  });

  test('abuse ws - protocol violations (unmasked, reserved opcode or bits, long or fragmented control frames, stray continuation) close with 1002', async () => {
    await unaffected(s, by, async () => {
      const cases: [string, Buffer][] = [
        ['unmasked', encodeFrame(OP.TEXT, '{"op":"x"}', { mask: false })],
        ['reserved opcode', encodeFrame(3, 'x')],
        ['rsv bits', encodeFrame(OP.TEXT, '{}', { rsv: 4 })],
        ['long ping', encodeFrame(OP.PING, Buffer.alloc(200))],
        ['fragmented ping', encodeFrame(OP.PING, 'x', { fin: false })],
        ['stray continuation', encodeFrame(OP.CONT, '{}')],
        ['text inside a fragmented text', Buffer.concat([encodeFrame(OP.TEXT, '{', { fin: false }), encodeFrame(OP.TEXT, '}')])],
      ];
      for (const [name, bytes] of cases) {
        const r = await rawOpen();
        r.write(bytes);
        await Promise.race([r.closedP, sleep(3000)]);
        expect([name, r.closed, r.reader.closeCode()]).toEqual([name, true, 1002]);
      }
    });
  });

  test('abuse ws - tiny fragments: a frame in 1-byte pieces is served; past 16 384 fragments the socket is closed (1008), memory bounded', async () => {
    await unaffected(s, by, async () => {
      const c = await open();
      const frame = JSON.stringify({ op: 'publish', ref: 'frag', queue: 'w', messages: [{ data: 'fragmented' }] });
      for (let i = 0; i < frame.length; i++) c.ws.send(frame[i]!, { fin: i === frame.length - 1 });
      await waitFor(() => c.frames.some((f) => f.op === 'published' && f.ref === 'frag'), 'the fragmented publish to be answered');
      const before = rss.peak;
      const flood = await open();
      flood.ws.send('{', { fin: false });
      const n = scale(100_000, 1_000_000);
      for (let i = 0; i < n && flood.ws.readyState === WebSocket.OPEN; i++) {
        flood.ws.send(' ', { fin: false });
        if (i % 5000 === 0) await sleep(1);
      }
      expect((await flood.closed).code).toBe(1008);
      expect(rss.peak - before).toBeLessThan(64 * MiB);
    });
  });

  test('abuse ws - a flood of frames from one client is all answered in order while others are served', async () => {
    await unaffected(s, by, async () => {
      const checker = new Checker();
      expect((await call(s.url, 'PUT', '/v1/queues/flood')).status).toBe(201);
      const sub = new WsSubscriber(s.url, 'flood', 'default', checker, { prefetch: 1000, label: 'flood-sub' });
      await sub.opened;
      await sleep(100);
      const c = await open();
      const N = scale(20_000, 100_000);
      const t0 = Date.now();
      note(`flood: sending ${N} frames`);
      const sums: number[] = [];
      for (let i = 1; i <= N; i++) {
        const data = makePayload('flood', i, 64);
        sums[i] = checksumOf(data);
        c.ws.send(JSON.stringify({ op: 'publish', ref: i, queue: 'flood', publisherId: 'flood', messages: [{ data, publisherSeq: i }] }));
        // Pings mixed in, answered by pongs. (This client reads as it goes: see the next tests for one that does not.)
        if (i % 100 === 0) c.ws.ping();
        if (i % 500 === 0 || c.ws.bufferedAmount > 4 * MiB) await new Promise((r) => setImmediate(r));
      }
      await waitFor(() => c.frames.length >= N, 'every publish to be answered', 60_000, () => `${c.frames.length} of ${N}`);
      const ms = Date.now() - t0;
      // Every frame answered, in order: published, or refused as restricted (memory full while a
      // spill write is under way) and then not stored.
      expect(c.frames.map((f) => f.ref)).toEqual(Array.from({ length: N }, (_, i) => i + 1));
      let restricted = 0;
      for (const f of c.frames) {
        if (f.op === 'published') checker.published({ publisher: 'flood', publisherSeq: f.ref, checksum: sums[f.ref]!, subscriptions: ['default'] });
        else {
          expect([f.op, f.code]).toEqual(['error', 'PUBLISHER_RESTRICTED']);
          restricted++;
        }
      }
      expect(restricted).toBeLessThan(N / 2);
      await waitFor(() => checker.lostNow() === 0, 'the flood to be delivered', 30_000);
      const r = checker.report();
      note(`flood: ${N} frames answered in ${ms} ms (${restricted} restricted); ${summary(r)}`);
      expectClean(r);
      sub.close();
      recordFigures({ scenario: `WebSocket publish flood (${N} frames)`, published: r.published, delivered: r.delivered, lost: r.lost, duplicated: r.duplicated, corrupt: r.corrupt, restricted, seconds: Math.round(ms / 1000) });
    });
  }, scale(30_000, 180_000));

  test('abuse ws - a ping flood from a client that never reads the pongs is cut off; memory bounded', async () => {
    await unaffected(s, by, async () => {
      const before = rss.peak;
      const r = await rawOpen();
      r.socket.pause();
      const ping = encodeFrame(OP.PING, Buffer.alloc(125, 0x70));
      const batch = Buffer.concat(Array(1000).fill(ping));
      const end = Date.now() + 15_000;
      let sent = 0;
      while (!r.closed && Date.now() < end) {
        if (r.write(batch)) sent += 1000;
        else await new Promise<void>((resolve) => {
          const done = (): void => { clearTimeout(t); r.socket.off('drain', done); resolve(); };
          const t = setTimeout(done, 20);
          r.socket.once('drain', done);
        });
      }
      note(`ping flood without reading: ${sent} pings written, cut off: ${r.closed}, server RSS +${Math.round((rss.peak - before) / MiB)} MiB`);
      // ws terminates a peer with more than 60 pongs it cannot send.
      expect(r.closed).toBe(true);
      expect(rss.peak - before).toBeLessThan(64 * MiB);
    });
  }, 30_000);

  test('abuse ws - a subscriber that never reads: pushes stop at the send buffer mark, memory stays bounded, its messages go to others when it goes', async () => {
    const checker = new Checker();
    // No consumer reads during set-up: let the backlog pass the default 64 MiB publisher limit.
    expect((await call(s.url, 'PUT', '/v1/queues/nr', { publisherLimitBytes: 1024 * MiB })).status).toBe(201);
    const N = scale(20_000, 100_000);
    const SIZE = 2000;
    // A backlog of 40 MiB (200 MiB in full) waits for it.
    const pub = new RestPublisher({ url: s.url, queue: 'nr', id: 'nr', checker, subscriptions: ['default'], size: SIZE, batch: 500 });
    await pub.publishCount(N);
    await unaffected(s, by, async () => {
      const before = rss.peak;
      const r = await rawOpen();
      r.socket.pause();
      r.write(encodeFrame(OP.TEXT, JSON.stringify({ op: 'subscribe', queue: 'nr', subscription: 'default', prefetch: 10_000 })));
      await sleep(scale(2000, 10_000));
      const info = (await call(s.url, 'GET', '/v1/queues/nr/subscriptions/default')).body;
      // Held back long before its prefetch: the server stopped pushing at its send buffer mark.
      note(`never-reading subscriber: ${info.inFlight} in flight of prefetch 10000, server RSS +${Math.round((rss.peak - before) / MiB)} MiB`);
      expect(info.inFlight).toBeLessThan(10_000);
      expect(rss.peak - before).toBeLessThan(64 * MiB);
      r.destroy();
    });
    // Everything, including what it held, reaches a reading subscriber.
    const sub = new WsSubscriber(s.url, 'nr', 'default', checker, { prefetch: 1000, label: 'reader' });
    await sub.opened;
    await waitFor(() => checker.lostNow() === 0, 'a reading subscriber to get everything', 60_000, () => summary(checker.report()));
    const rep = checker.report();
    expectClean(rep, { ordered: false });
    sub.close();
    recordFigures({ scenario: 'WebSocket subscriber that never reads', published: rep.published, delivered: rep.delivered, lost: rep.lost, duplicated: rep.duplicated, corrupt: rep.corrupt, peakRssMiB: rss.peakMiB });
  }, scale(60_000, 180_000));

  test('abuse ws - a client that floods requests and never reads the answers is paused, then cut off; server memory stays bounded', async () => {
    await unaffected(s, by, async () => {
      const before = rss.peak;
      const r = await rawOpen();
      r.socket.pause();
      // Each frame's answer echoes 100 unknown ids: about 2 KiB of reply per 2 KiB of request.
      const frame = encodeFrame(OP.TEXT, JSON.stringify({ op: 'ack', ref: 'x'.repeat(100), queue: 'w', subscription: 'default', ids: Array.from({ length: 100 }, (_, i) => `nope-${i}`) }));
      const batch = Buffer.concat(Array(200).fill(frame));
      const end = Date.now() + scale(4000, 10_000);
      let sent = 0;
      while (Date.now() < end && !r.closed) {
        if (r.write(batch)) sent += 200;
        else await new Promise<void>((resolve) => {
          const done = (): void => { clearTimeout(t); r.socket.off('drain', done); resolve(); };
          const t = setTimeout(done, 20);
          r.socket.once('drain', done);
        });
      }
      const growth = rss.peak - before;
      note(`request flood without reading: ${sent} frames written, server RSS +${Math.round(growth / MiB)} MiB, cut off: ${r.closed}`);
      expect(growth).toBeLessThan(64 * MiB);
      // The server gives up on it (slow consumer: 1008, then the socket is destroyed).
      await Promise.race([r.closedP, sleep(15_000)]);
      expect(r.closed).toBe(true);
    });
  }, 40_000);

  test('abuse ws - the bystander kept publishing and receiving throughout, and lost nothing', async () => {
    const r = await by.finish();
    note(`bystander: ${summary(r)}; slowest publish ${by.publisher.maxLatencyMs} ms`);
    expectClean(r);
    expect(by.publisher.errors).toEqual([]);
    expect(by.publisher.maxLatencyMs).toBeLessThan(3000);
    recordFigures({
      scenario: 'WebSocket abuse (bystander beside it)', published: r.published, delivered: r.delivered, lost: r.lost, duplicated: r.duplicated,
      corrupt: r.corrupt, peakRssMiB: rss.peakMiB, note: `slowest bystander publish ${by.publisher.maxLatencyMs} ms`,
    });
  });
});
