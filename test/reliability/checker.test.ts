import fc from 'fast-check';
import { Checker, check, checksumOf, deliveryOf, expectClean, makePayload, parseHeader, type DeliveryRecord, type PublishRecord } from './checker';

/**
 * Self-test of the accounting checker: a clean history passes, and every kind of fault
 * injected into it (loss, duplication, reordering, corruption, invented messages) is caught
 * and counted exactly.
 */

interface History {
  published: PublishRecord[];
  deliveries: DeliveryRecord[];
}

/** Publishers p0..p(n-1) with `per` messages each; sub `a` gets all, `b` exists from seq 50, `even` filters even seqs. */
function cleanHistory(publishers = 3, per = 120): History {
  const published: PublishRecord[] = [];
  const deliveries: DeliveryRecord[] = [];
  for (let i = 1; i <= per; i++) {
    for (let p = 0; p < publishers; p++) {
      const publisher = `p${p}`;
      const subs = ['a'];
      if (i >= 50) subs.push('b');
      if (i % 2 === 0) subs.push('even');
      const checksum = checksumOf(makePayload(publisher, i, 64));
      published.push({ publisher, publisherSeq: i, checksum, subscriptions: subs });
      for (const s of subs) deliveries.push({ subscription: s, publisher, publisherSeq: i, checksum, attempt: 1, consumer: 'c1', run: 'r1' });
    }
  }
  return { published, deliveries };
}

const idx = (h: History, sub: string, publisher: string, seq: number): number =>
  h.deliveries.findIndex((d) => d.subscription === sub && d.publisher === publisher && d.publisherSeq === seq);

describe('reliability checker', () => {
  test('checker - a clean history: every pair delivered once, nothing else', () => {
    const h = cleanHistory();
    const r = check(h.published, [h.deliveries]);
    expect(r).toMatchObject({ published: 360, lost: 0, duplicated: 0, corrupt: 0, unexpected: 0, reordered: 0, redeliveries: 0 });
    // a: 360, b: 3 × 71, even: 3 × 60
    expect(r.expected).toBe(360 + 213 + 180);
    expect(r.delivered).toBe(r.expected);
    expect(() => expectClean(r)).not.toThrow();
  });

  test('checker - injected loss is caught and named', () => {
    const h = cleanHistory();
    h.deliveries.splice(idx(h, 'b', 'p1', 77), 1);
    h.deliveries.splice(idx(h, 'even', 'p2', 10), 1);
    const r = check(h.published, [h.deliveries]);
    expect(r.lost).toBe(2);
    expect(r.examples.lost.sort()).toEqual(['b: p1#77', 'even: p2#10']);
    expect(() => expectClean(r)).toThrow(/lost 2/);
  });

  test('checker - a message published before a subscription existed is not lost there', () => {
    const h = cleanHistory();
    // b was created at seq 50: nothing below it was owed to b.
    expect(h.deliveries.some((d) => d.subscription === 'b' && d.publisherSeq < 50)).toBe(false);
    expect(check(h.published, [h.deliveries]).lost).toBe(0);
  });

  test('checker - injected duplication is counted but is not a failure (at least once)', () => {
    const h = cleanHistory();
    const d = h.deliveries[idx(h, 'a', 'p0', 5)]!;
    h.deliveries.push({ ...d, attempt: 2 }, { ...d, attempt: 3 });
    const r = check(h.published, [h.deliveries]);
    expect(r).toMatchObject({ duplicated: 1, duplicateDeliveries: 2, redeliveries: 2, lost: 0 });
    expect(r.examples.duplicated).toEqual(['a: p0#5 ×3']);
    expect(() => expectClean(r)).not.toThrow();
  });

  test('checker - injected reordering of first deliveries is caught; redeliveries out of order are not', () => {
    const h = cleanHistory();
    const i = idx(h, 'a', 'p1', 30);
    const j = idx(h, 'a', 'p1', 31);
    [h.deliveries[i], h.deliveries[j]] = [h.deliveries[j]!, h.deliveries[i]!];
    const r = check(h.published, [h.deliveries]);
    expect(r.reordered).toBe(1);
    expect(r.examples.reordered).toEqual(['a: p1#30 first delivered after #31 (consumer c1)']);
    expect(() => expectClean(r)).toThrow(/reordered 1/);

    // A redelivery (attempt 2) of an old message later on is not a reordering.
    const h2 = cleanHistory();
    h2.deliveries.push({ ...h2.deliveries[idx(h2, 'a', 'p1', 3)]!, attempt: 2 });
    expect(check(h2.published, [h2.deliveries]).reordered).toBe(0);
    // Nor are first deliveries in another run (after a restart, a repeatable publisher re-sends).
    const h3 = cleanHistory();
    h3.deliveries.push({ ...h3.deliveries[idx(h3, 'a', 'p1', 3)]!, run: 'r2' });
    expect(check(h3.published, [h3.deliveries]).reordered).toBe(0);
  });

  test('checker - injected corruption is caught, on the first delivery or a later one', () => {
    const h = cleanHistory();
    h.deliveries[idx(h, 'a', 'p2', 60)]!.checksum ^= 1;
    const d = h.deliveries[idx(h, 'b', 'p0', 61)]!;
    h.deliveries.push({ ...d, checksum: d.checksum ^ 0x100, attempt: 2 });
    const r = check(h.published, [h.deliveries]);
    expect(r.corrupt).toBe(2);
    expect(r.examples.corrupt.sort()).toEqual(['a: p2#60 delivered with other bytes than published', 'b: p0#61 delivered with other bytes than published']);
    expect(() => expectClean(r)).toThrow(/corrupt 2/);
  });

  test('checker - unexpected deliveries: never published, not eligible, or unparseable', () => {
    const h = cleanHistory();
    const base = h.deliveries[0]!;
    h.deliveries.push({ ...base, publisherSeq: 999 });
    h.deliveries.push({ ...base, subscription: 'b', publisherSeq: 3 });
    h.deliveries.push({ ...base, publisher: '?', publisherSeq: -1 });
    const r = check(h.published, [h.deliveries]);
    expect(r.unexpected).toBe(3);
    expect(r.corrupt).toBe(1);
    expect(() => expectClean(r)).toThrow(/unexpected 3/);
  });

  test('checker - records may come in any order (a delivery logged before its publish answer)', () => {
    const h = cleanHistory();
    const c = new Checker();
    for (const d of h.deliveries) c.delivered(d);
    for (const p of h.published) c.published(p);
    expect(c.report()).toMatchObject({ lost: 0, corrupt: 0, unexpected: 0, reordered: 0, delivered: 753 });
  });

  test('checker - a message re-published with other bytes is a test bug, refused', () => {
    const c = new Checker();
    c.published({ publisher: 'p', publisherSeq: 1, checksum: 1, subscriptions: ['a'] });
    c.published({ publisher: 'p', publisherSeq: 1, checksum: 1, subscriptions: ['a'] });
    expect(() => c.published({ publisher: 'p', publisherSeq: 1, checksum: 2, subscriptions: ['a'] })).toThrow(/different checksums/);
    expect(c.report().published).toBe(1);
  });

  test('checker - payloads name their message and deliveries are read back from API Messages', () => {
    const text = makePayload('pub-1', 42, 100);
    expect(Buffer.byteLength(text)).toBe(100);
    expect(parseHeader(Buffer.from(text))).toEqual({ publisher: 'pub-1', publisherSeq: 42 });
    expect(makePayload('pub-1', 43, 100)).not.toBe(text);
    const d = deliveryOf('s', { id: 'abcd-7', data: text, encoding: 'utf8', deliveryAttempt: 2 }, 'c');
    expect(d).toEqual({ subscription: 's', publisher: 'pub-1', publisherSeq: 42, checksum: checksumOf(text), attempt: 2, consumer: 'c', run: 'abcd' });
    const b = deliveryOf('s', { id: 'abcd-8', data: Buffer.from(text).toString('base64'), encoding: 'base64', deliveryAttempt: 1 });
    expect(b.checksum).toBe(checksumOf(text));
    expect(parseHeader(Buffer.from('garbage')).publisherSeq).toBe(-1);
  });

  test('checker - property: any mix of injected faults is counted exactly', () => {
    fc.assert(fc.property(
      fc.integer({ min: 1, max: 4 }), fc.integer({ min: 5, max: 60 }),
      fc.array(fc.record({ kind: fc.constantFrom('lose', 'dup', 'corrupt', 'invent'), at: fc.nat() }), { maxLength: 12 }),
      (pubs, per, faults) => {
        const h = cleanHistory(pubs, per);
        const n = h.deliveries.length;
        // Faults target distinct deliveries, so their counts add up.
        const used = new Set<number>();
        const want = { lost: 0, dup: 0, corrupt: 0, unexpected: 0 };
        const extra: DeliveryRecord[] = [];
        const drop = new Set<number>();
        for (const f of faults) {
          const i = f.at % n;
          if (used.has(i)) continue;
          used.add(i);
          const d = h.deliveries[i]!;
          if (f.kind === 'lose') { drop.add(i); want.lost++; }
          if (f.kind === 'dup') { extra.push({ ...d, attempt: 2 }); want.dup++; }
          if (f.kind === 'corrupt') { d.checksum = (d.checksum + 1) >>> 0; want.corrupt++; }
          if (f.kind === 'invent') { extra.push({ ...d, publisherSeq: per + 1 + i, attempt: 2 }); want.unexpected++; }
        }
        const r = check(h.published, [h.deliveries.filter((_, i) => !drop.has(i)), extra]);
        expect([r.lost, r.duplicated, r.corrupt, r.unexpected, r.reordered]).toEqual([want.lost, want.dup, want.corrupt, want.unexpected, 0]);
      },
    ), { numRuns: 200, seed: 7 });
  });
});
