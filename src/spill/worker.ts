/**
 * The spill worker: copies records from a queue's shared ring straight to a segment file,
 * so the main thread never copies them and never blocks on disk. Each record's body gets
 * its CRC-32 in the header first, so a read can tell good data from bad.
 */
import { closeSync, constants, openSync, unlinkSync, writeSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import { crc32 } from 'node:zlib';
import { Ring } from '../queue/ring';
import { R_CHECKSUM } from '../queue/layout';
import type { WorkerReply, WorkerRequest } from './protocol';

const rings = new Map<number, Ring>();
const fds = new Map<string, number>();
/** Writes to fail on purpose (tests of disk errors). */
let failWrites = 0;

function fdOf(path: string): number {
  let fd = fds.get(path);
  if (fd === undefined) {
    // Not O_APPEND: positional writes must land where the main thread said.
    fd = openSync(path, constants.O_RDWR | constants.O_CREAT, 0o600);
    fds.set(path, fd);
  }
  return fd;
}

function spill(req: Extract<WorkerRequest, { type: 'spill' }>): number {
  const ring = rings.get(req.queueId);
  if (ring === undefined) throw new Error(`queue ${req.queueId} is not attached`);
  const tail = ring.tail; // also picks up growth
  if (failWrites > 0) {
    failWrites--;
    throw Object.assign(new Error('injected write failure'), { code: 'EIO' });
  }
  const fd = fdOf(req.path);
  const data = ring.data;
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let written = 0;
  let runStart = -1;
  let runEnd = -1;
  let pos = req.fromPos === tail ? tail : ring.settle(req.fromPos);
  const flush = (): void => {
    if (runStart < 0) return;
    let off = runStart;
    while (off < runEnd) off += writeSync(fd, data, off, runEnd - off, req.offset + written + (off - runStart));
    written += runEnd - runStart;
    runStart = -1;
  };
  for (let i = 0; i < req.count; i++) {
    const start = ring.bodyStart(pos);
    const len = ring.bodyLenOf(pos);
    view.setUint32(pos + R_CHECKSUM, crc32(data.subarray(start, start + len)), true);
    const recLen = ring.lengthOf(pos);
    if (runStart >= 0 && pos !== runEnd) flush();
    if (runStart < 0) runStart = pos;
    runEnd = pos + recLen;
    pos = ring.after(pos, tail);
  }
  flush();
  return written;
}

function handle(req: WorkerRequest): WorkerReply {
  try {
    switch (req.type) {
      case 'attach':
        rings.set(req.queueId, Ring.attach(req.sab));
        return { id: req.id, ok: true, bytes: 0 };
      case 'detach':
        rings.delete(req.queueId);
        return { id: req.id, ok: true, bytes: 0 };
      case 'spill':
        return { id: req.id, ok: true, bytes: spill(req) };
      case 'unlink': {
        const fd = fds.get(req.path);
        if (fd !== undefined) { closeSync(fd); fds.delete(req.path); }
        try { unlinkSync(req.path); } catch (err) { if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err; }
        return { id: req.id, ok: true, bytes: 0 };
      }
      case 'fail':
        failWrites = req.writes;
        return { id: req.id, ok: true, bytes: 0 };
      case 'crash':
        process.exit(1);
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return { id: req.id, ok: false, bytes: 0, error: e.message, code: e.code ?? 'EIO' };
  }
}

parentPort!.on('message', (req: WorkerRequest) => parentPort!.postMessage(handle(req)));

