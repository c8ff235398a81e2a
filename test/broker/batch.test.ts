import fc from 'fast-check';
import { DeliveryBatch } from '../../src/subscribers/batch';

const PREFIX = Buffer.from('{"op":"messages","messages":[');
const SUFFIX = Buffer.from(']}');

/** The frame as plain concatenation: what encode() must produce however it copies. */
function reference(b: DeliveryBatch): string {
  const parts: string[] = [];
  for (let i = 0; i < b.count; i++) {
    const s = b.starts[i]!;
    parts.push(b.srcs[i]!.subarray(s, s + b.lens[i]!).toString('latin1') + ',"deliveryAttempt":' + b.attempts[i] + '}');
  }
  return PREFIX.toString('latin1') + parts.join(',') + SUFFIX.toString('latin1');
}

test('delivery batch - encode() equals the plain concatenation for any layout of bodies in any buffers', () => {
  // Bodies laid out as records are (a gap of at least a record header between them), with runs
  // that break on a wider gap, a step back, or another buffer.
  const body = fc.record({
    len: fc.integer({ min: 1, max: 300 }),
    gap: fc.oneof(fc.integer({ min: 56, max: 70 }), fc.integer({ min: 0, max: 2000 })),
    attempt: fc.oneof(fc.constant(1), fc.integer({ min: 2, max: 10 ** 7 })),
    other: fc.boolean(),
    back: fc.boolean(),
  });
  fc.assert(fc.property(fc.array(body, { maxLength: 40 }), fc.integer({ min: 0, max: 255 }), (msgs, seed) => {
    const a = Buffer.alloc(64 * 1024);
    const c = Buffer.alloc(64 * 1024);
    for (let i = 0; i < a.length; i++) {
      a[i] = 0x20 + ((i * 7 + seed) % 90);
      c[i] = 0x20 + ((i * 13 + seed) % 90);
    }
    const b = new DeliveryBatch();
    let pos = 0;
    for (const [k, m] of msgs.entries()) {
      pos = m.back && k > 0 ? Math.max(0, pos - 500) : pos + m.gap;
      if (pos + m.len > a.length) pos = 0;
      b.add(m.other ? c : a, pos, m.len, m.attempt, k + 1);
      pos += m.len;
    }
    expect(b.encode(PREFIX, SUFFIX).toString('latin1')).toBe(reference(b));
  }), { numRuns: 500 });
});

test('delivery batch - an empty batch is the prefix and the suffix', () => {
  expect(new DeliveryBatch().encode(PREFIX, SUFFIX).toString()).toBe('{"op":"messages","messages":[]}');
});
