import { HeldChunks, type OffRing } from '../../src/subscribers/held';

const entry = (): OffRing => ({ copy: null, copyStart: 0, copyLen: 0, held: null });
const body = (e: OffRing): string => e.copy!.subarray(e.copyStart, e.copyStart + e.copyLen).toString();
const chunk = (tag: string): Buffer => Buffer.from(`${tag}0${tag}1${tag}2${tag}3`.padEnd(100, '.'));

test('held chunks - bodies point into their chunk; a chunk goes once its messages are released', () => {
  const held = new HeldChunks(1000);
  const a = chunk('a');
  const [e0, e1] = [entry(), entry()];
  held.hold(e0, a, 0, 2);
  held.hold(e1, a, 2, 2);
  expect([e0.copy, body(e0), body(e1)]).toEqual([a, 'a0', 'a1']);
  const b = chunk('b');
  const e2 = entry();
  held.hold(e2, b, 4, 2);
  expect(held.bytes).toBe(200);
  held.release(e0);
  expect(held.bytes).toBe(200); // e1 still needs a
  held.release(e1);
  expect(held.bytes).toBe(100); // a went; b is being delivered from
  held.retire();
  expect(held.bytes).toBe(100);
  held.release(e2);
  expect(held.bytes).toBe(0);
});

test('held chunks - past the budget, the oldest chunk\'s unacked bodies are copied out, intact, and the chunk is let go', () => {
  const held = new HeldChunks(250);
  const a = chunk('a');
  const stuck = entry();
  const done = entry();
  held.hold(stuck, a, 2, 2);
  held.hold(done, a, 4, 2);
  held.release(done);
  held.hold(entry(), chunk('b'), 0, 2);
  expect(held.bytes).toBe(200);
  expect(stuck.copy).toBe(a);
  held.hold(entry(), chunk('c'), 0, 2);
  // 300 > 250: a is the oldest; its one unacked body now has a buffer of its own.
  expect(held.bytes).toBe(200);
  expect(stuck.copy).not.toBe(a);
  expect([stuck.copy!.length, body(stuck), stuck.held]).toEqual([2, 'a1', null]);
  expect(done.held).toBeNull();
  held.release(stuck); // already out: nothing to do
  expect(held.bytes).toBe(200);
});
