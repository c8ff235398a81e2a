import * as fs from 'node:fs';
import { prepareBatch } from '../../src/broker';
import { OrderCheck, cleanup, makeBroker, payload, publishRange, pullAll, segFiles, until } from './helpers';

afterEach(cleanup);

// Spill failures are reported as process warnings: collected here instead of printed.
let warnings: string[] = [];
beforeEach(() => {
  warnings = [];
  jest.spyOn(process, 'emitWarning').mockImplementation(((w: string | Error) => { warnings.push(String(w)); }) as typeof process.emitWarning);
});
afterEach(() => jest.restoreAllMocks());

const KiB = 1024;
const MEMORY = 256 * KiB;
const SIZE = 1000;

describe('spill', () => {
  test('spill - failed spill writes lose nothing, are counted, and the queue spills again by itself', async () => {
    const { b } = makeBroker();
    b.createQueue('q', { memoryBytes: MEMORY });
    await b.injectSpillFault({ failWrites: 3 });
    const N = 1500;
    let spilledAtFirstRefusal = -1;
    const pub = await publishRange(b, 'q', 0, N, SIZE, {
      retryInsufficient: true,
      onRefusal: (err) => {
        if (err.code === 'INSUFFICIENT_STORAGE' && spilledAtFirstRefusal < 0) spilledAtFirstRefusal = b.queueStats('q').spilledMessages;
      },
    });
    // While the disk failed and memory was full, publishes were refused (stored nothing), not lost.
    expect(pub.insufficient).toBeGreaterThan(0);
    expect(spilledAtFirstRefusal).toBe(0);
    expect(b.spillStats.errors).toBe(3);
    expect(warnings).toEqual(Array(3).fill('spill on queue q: EIO: injected write failure'));
    // Spilling works again without anyone's help.
    const st = b.queueStats('q');
    expect(st).toMatchObject({ published: N, messages: N });
    expect(st.spilledMessages).toBeGreaterThan(N / 2);

    const check = new OrderCheck(SIZE);
    await pullAll(b, 'q', 'default', N, check);
    expect(check.seen).toHaveLength(N);
    expect(b.queueStats('q')).toMatchObject({ messages: 0, spilledMessages: 0, spilledBytes: 0 });
    expect(b.spillStats).toMatchObject({ errors: 3, corruptRecords: 0, usedBytes: 0 });
  });

  test('spill - a record corrupted on disk is never delivered as good data; every other message is', async () => {
    const { b, spillDir } = makeBroker();
    b.createQueue('q', { memoryBytes: MEMORY });
    b.createSubscription('q', 'second', {});
    const N = 1500;
    await publishRange(b, 'q', 0, N, SIZE);
    await until(() => b.queueStats('q').memoryUsedBytes * 2 <= MEMORY, 'spill writes to finish');
    expect(b.queueStats('q').spilledMessages).toBeGreaterThan(400);

    // Message 300 (seq 301) is on disk: change bytes of its body in place, keeping it valid JSON.
    const needle = Buffer.from(`"data":"${payload(300, SIZE).slice(0, 20)}`);
    let hit: { file: string; at: number } | undefined;
    for (const file of segFiles(spillDir)) {
      const at = fs.readFileSync(file).indexOf(needle);
      if (at >= 0) { expect(hit).toBeUndefined(); hit = { file, at }; }
    }
    expect(hit).toBeDefined();
    const fd = fs.openSync(hit!.file, 'r+');
    try {
      fs.writeSync(fd, Buffer.from('####'), 0, 4, hit!.at + needle.length + 100);
    } finally {
      fs.closeSync(fd);
    }

    const CORRUPT = 301;
    for (const sub of ['default', 'second']) {
      const check = new OrderCheck(SIZE, 1, new Set([CORRUPT]));
      await pullAll(b, 'q', sub, N - 1, check, { max: 200 });
      expect(check.seen).toHaveLength(N - 1);
      expect(check.seen).not.toContain(CORRUPT);
      expect(b.subscriptionInfo('q', sub)).toMatchObject({ delivered: N - 1, acked: N - 1, dropped: 1, backlog: 0, inFlight: 0 });
      // Nothing more comes (the bad record is not retried as good data later).
      expect(await b.pullMessages('q', sub, { max: 10 })).toEqual([]);
    }
    expect(b.spillStats.corruptRecords).toBe(2); // once per subscription that read it
    expect(b.queueStats('q')).toMatchObject({ messages: 0, spilledMessages: 0, spilledBytes: 0 });
  });

  test('spill - the spill worker dying with a write in flight loses nothing and a new worker takes over', async () => {
    const { b, spillDir } = makeBroker();
    b.createQueue('q', { memoryBytes: MEMORY });
    const maxBytes = b.queue('q').config.maxMessageBytes;
    const N = 2500;
    await publishRange(b, 'q', 0, 1000, SIZE);
    await until(() => b.queueStats('q').memoryUsedBytes * 2 <= MEMORY, 'spill writes to finish');
    const spilledAtCrash = b.queueStats('q').spilledMessages;
    expect(spilledAtCrash).toBeGreaterThan(0);
    expect(b.spillStats).toMatchObject({ errors: 0, workerRestarts: 0 });

    // The worker is told to die; in the same turn, publishes fill memory past half, so a spill
    // write is sent to it behind the crash and is in flight when it dies.
    const crashed = b.injectSpillFault('crash');
    let i = 1000;
    while (b.queueStats('q').memoryUsedBytes * 2 <= MEMORY) {
      const batch = Array.from({ length: 20 }, (_, k) => ({ data: payload(i + k, SIZE) }));
      expect(b.publish('q', 'pub1', prepareBatch(batch, maxBytes)).seqs[0]).toBe(i + 1);
      i += 20;
    }
    await crashed;
    await until(() => b.spillStats.errors > 0, 'the write in flight to fail');
    expect(b.spillStats).toMatchObject({ errors: 1, workerRestarts: 1 });
    expect(warnings).toEqual(['spill on queue q: EWORKER: spill worker exited with code 1']);
    expect(b.queueStats('q')).toMatchObject({ messages: i, spilledMessages: spilledAtCrash });

    // Publishing goes on (refused with 507 while the queue waits to retry its spill), and
    // spilling goes on with a new worker.
    await publishRange(b, 'q', i, N, SIZE, { retryInsufficient: true });
    const st = b.queueStats('q');
    expect(st).toMatchObject({ published: N, messages: N });
    expect(st.spilledMessages).toBeGreaterThan(spilledAtCrash + 500);
    expect(b.spillStats.workerRestarts).toBe(1);

    const check = new OrderCheck(SIZE);
    await pullAll(b, 'q', 'default', N, check);
    expect(check.seen).toHaveLength(N);
    expect(b.queueStats('q')).toMatchObject({ messages: 0, spilledMessages: 0, spilledBytes: 0 });
    expect(b.spillStats).toMatchObject({ corruptRecords: 0, usedBytes: 0, workerRestarts: 1 });
    await b.injectSpillFault({ failWrites: 0 }); // the worker has done its unlinks
    expect(segFiles(spillDir)).toEqual([]);
  });
});
