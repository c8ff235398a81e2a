import fc from 'fast-check';
import { messageId, seqOfId } from '../../src/queue/message';

test('message ids - seqOfId reads back the seq of every id of this run', () => {
  fc.assert(fc.property(fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }), (seq) => seqOfId('r1x', messageId('r1x', seq)) === seq));
});

test('message ids - anything else is -1: another run, no seq, not digits, zero, too large, not a string', () => {
  for (const id of ['r2x-5', 'r1x5', 'r1x-', 'r1x-5a', 'r1x- 5', 'r1x--5', 'r1x-0', 'r1x-9007199254740992', 'r1x-12345678901234567', 'x-r1x-5', '', 5, null, undefined, ['r1x-5']]) {
    expect([id, seqOfId('r1x', id)]).toEqual([id, -1]);
  }
});
