import { constants, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { crc32 } from 'node:zlib';
import { KIND_CORRUPT, R_BODY_LEN, R_CHECKSUM, R_KIND, R_LEN, RECORD_HEADER_BYTES } from '../queue/layout';
import type { WorkerCommand, WorkerReply, WorkerRequest } from './protocol';

/** A segment file grows to about this size before a new one is started. */
const SEGMENT_BYTES = 64 * 1024 * 1024;
/** Read-ahead chunk. */
export const READ_BYTES = 1024 * 1024;

/** Per-publisher figures of the records of one extent, so disk records need no per-message memory. */
export interface PublisherSummary {
  count: number;
  bytes: number;
  unconsumedCount: number;
  unconsumedBytes: number;
  maxPublisherSeq: number;
}

interface Segment {
  path: string;
  size: number;
  liveExtents: number;
  sealed: boolean;
}

/** A run of records written together: every retained seq in [firstSeq, endSeq) lives here. */
export class Extent {
  constructor(
    readonly firstSeq: number,
    readonly endSeq: number,
    readonly segment: Segment,
    readonly offset: number,
    readonly length: number,
    readonly count: number,
    readonly publishers: Map<number, PublisherSummary>,
  ) {}
}

function workerPath(): string {
  // Under ts-jest the sources run from src/: the worker runs from the build.
  return __filename.endsWith('.ts') ? join(__dirname, '../../dist/spill/worker.js') : join(__dirname, 'worker.js');
}

/** The spill worker, restarted when it dies; requests in flight when it dies fail (nothing is lost: the records stay in the ring). */
class SpillWorker {
  #worker: Worker | undefined;
  #nextId = 1;
  readonly #pending = new Map<number, (r: WorkerReply) => void>();
  readonly #attached = new Map<number, SharedArrayBuffer>();
  restarts = 0;

  request(req: WorkerCommand): Promise<WorkerReply> {
    const w = this.#ensure();
    const id = this.#nextId++;
    return new Promise((resolve) => {
      this.#pending.set(id, resolve);
      w.postMessage({ ...req, id } as WorkerRequest);
    });
  }

  attach(queueId: number, sab: SharedArrayBuffer): void {
    this.#attached.set(queueId, sab);
    if (this.#worker !== undefined) void this.request({ type: 'attach', queueId, sab });
  }

  detach(queueId: number): void {
    this.#attached.delete(queueId);
    if (this.#worker !== undefined) void this.request({ type: 'detach', queueId });
  }

  async close(): Promise<void> {
    const w = this.#worker;
    this.#worker = undefined;
    this.#attached.clear();
    if (w !== undefined) await w.terminate();
    for (const [id, done] of this.#pending) done({ id, ok: false, bytes: 0, error: 'spill closed', code: 'ECLOSED' });
    this.#pending.clear();
  }

  #ensure(): Worker {
    if (this.#worker !== undefined) return this.#worker;
    const w = new Worker(workerPath());
    w.unref();
    w.on('message', (r: WorkerReply) => {
      const done = this.#pending.get(r.id);
      this.#pending.delete(r.id);
      done?.(r);
    });
    const died = (why: string): void => {
      if (this.#worker !== w) return;
      this.#worker = undefined;
      this.restarts++;
      for (const [id, done] of this.#pending) done({ id, ok: false, bytes: 0, error: `spill worker ${why}`, code: 'EWORKER' });
      this.#pending.clear();
    };
    w.on('error', (err) => died(`failed: ${err.message}`));
    w.on('exit', (code) => died(`exited with code ${code}`));
    this.#worker = w;
    let id = this.#nextId;
    for (const [queueId, sab] of this.#attached) {
      id = this.#nextId++;
      this.#pending.set(id, () => {});
      w.postMessage({ type: 'attach', id, queueId, sab } satisfies WorkerRequest);
    }
    return w;
  }
}

/** The server's spill: one directory, one worker, one disk budget shared by every queue. */
export class SpillStore {
  readonly dir: string;
  readonly maxDiskBytes: number;
  readonly worker = new SpillWorker();
  usedBytes = 0;
  writeErrors = 0;
  corruptRecords = 0;
  #nextQueueId = 1;

  constructor(dir: string, maxDiskBytes: number) {
    this.dir = dir;
    this.maxDiskBytes = maxDiskBytes;
    // Messages do not survive a restart: files of an earlier run are removed.
    mkdirSync(dir, { recursive: true });
    for (const f of readdirSync(dir)) if (f.endsWith('.seg')) rmSync(join(dir, f), { force: true });
  }

  forQueue(name: string, sab: SharedArrayBuffer): QueueSpill {
    const id = this.#nextQueueId++;
    this.worker.attach(id, sab);
    return new QueueSpill(this, id, name);
  }

  close(): Promise<void> {
    return this.worker.close();
  }
}

/** One queue's part of the spill: its extents in seq order and its segment files. */
export class QueueSpill {
  readonly #store: SpillStore;
  readonly queueId: number;
  readonly #name: string;
  readonly extents: Extent[] = [];
  #active: Segment | undefined;
  #segNo = 0;
  readonly #handles = new Map<string, Promise<FileHandle>>();
  messages = 0;
  bytes = 0;
  /** A spill write is in flight. */
  busy = false;
  /** After a failed write, no new spill before this time. */
  retryAt = 0;
  lastError: string | undefined;

  constructor(store: SpillStore, queueId: number, name: string) {
    this.#store = store;
    this.queueId = queueId;
    this.#name = name;
  }

  get store(): SpillStore { return this.#store; }

  /** Room on disk for `bytes` more. */
  hasRoom(bytes: number): boolean {
    return this.#store.usedBytes + bytes <= this.#store.maxDiskBytes;
  }

  /** Where the next write goes (a new segment when the active one is full). */
  target(): Segment {
    let seg = this.#active;
    if (seg === undefined || seg.size >= SEGMENT_BYTES) {
      if (seg !== undefined) { seg.sealed = true; this.#maybeUnlink(seg); }
      seg = { path: join(this.#store.dir, `${this.#name}.${this.queueId}.${++this.#segNo}.seg`), size: 0, liveExtents: 0, sealed: false };
      this.#active = seg;
    }
    return seg;
  }

  /** Writes `count` ring records from `fromPos` to the segment at its end. */
  write(seg: Segment, fromPos: number, count: number): Promise<WorkerReply> {
    return this.#store.worker.request({ type: 'spill', queueId: this.queueId, fromPos, count, path: seg.path, offset: seg.size });
  }

  added(e: Extent): void {
    this.extents.push(e);
    e.segment.size += e.length;
    e.segment.liveExtents++;
    this.messages += e.count;
    this.bytes += e.length;
    this.#store.usedBytes += e.length;
  }

  /** The oldest extent is no longer needed by any subscription. */
  shift(): Extent {
    const e = this.extents.shift()!;
    this.messages -= e.count;
    this.bytes -= e.length;
    this.#store.usedBytes -= e.length;
    const seg = e.segment;
    seg.liveExtents--;
    // An emptied active segment goes too, unless a write into it is under way.
    if (seg === this.#active && seg.liveExtents === 0 && !this.busy) {
      seg.sealed = true;
      this.#active = undefined;
    }
    this.#maybeUnlink(seg);
    return e;
  }

  /** Drops everything (purge, delete). */
  clear(): void {
    while (this.extents.length > 0) this.shift();
    if (this.#active !== undefined) {
      this.#active.sealed = true;
      this.#maybeUnlink(this.#active);
      this.#active = undefined;
    }
  }

  /** The extent holding the first record at or after `seq`, or undefined when none is on disk. */
  find(seq: number): Extent | undefined {
    return this.extents[this.findIndex(seq)];
  }

  /** Index of the first extent that ends after `seq` (the length when none does). */
  findIndex(seq: number): number {
    const ex = this.extents;
    let lo = 0;
    let hi = ex.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (ex[mid]!.endSeq <= seq) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /**
   * Reads whole records of `e` from `offset`, at least one, about READ_BYTES. Records whose
   * checksum fails are marked KIND_CORRUPT. Resolves to the buffer, or throws on a disk error.
   */
  async read(e: Extent, offset: number): Promise<Buffer> {
    const fh = await this.#handle(e.segment.path);
    const at = e.offset + offset;
    const want = Math.min(READ_BYTES, e.length - offset);
    let buf = Buffer.allocUnsafe(want);
    let { bytesRead } = await fh.read(buf, 0, want, at);
    const first = bytesRead >= 8 ? buf.readInt32LE(R_LEN) : 0;
    if (first > bytesRead && first <= e.length - offset) {
      buf = Buffer.allocUnsafe(first);
      ({ bytesRead } = await fh.read(buf, 0, first, at));
    }
    let end = 0;
    while (end + RECORD_HEADER_BYTES <= bytesRead) {
      const len = buf.readInt32LE(end + R_LEN);
      if (len < RECORD_HEADER_BYTES || end + len > bytesRead) break;
      const bodyLen = buf.readInt32LE(end + R_BODY_LEN);
      const body = end + RECORD_HEADER_BYTES;
      if (bodyLen < 0 || body + bodyLen > end + len || crc32(buf.subarray(body, body + bodyLen)) !== buf.readUInt32LE(end + R_CHECKSUM)) {
        buf[end + R_KIND] = KIND_CORRUPT;
        this.#store.corruptRecords++;
      }
      end += len;
    }
    if (end === 0) throw Object.assign(new Error(`spill segment ${e.segment.path} is truncated or corrupt at offset ${at}`), { code: 'EBADSEG' });
    return buf.subarray(0, end);
  }

  #handle(path: string): Promise<FileHandle> {
    let h = this.#handles.get(path);
    if (h === undefined) {
      h = open(path, constants.O_RDONLY);
      this.#handles.set(path, h);
      h.catch(() => this.#handles.delete(path));
    }
    return h;
  }

  #maybeUnlink(seg: Segment): void {
    if (!seg.sealed || seg.liveExtents > 0) return;
    const h = this.#handles.get(seg.path);
    this.#handles.delete(seg.path);
    if (h !== undefined) void h.then((fh) => fh.close()).catch(() => {});
    // If the worker died before it could unlink, the file is removed from here.
    void this.#store.worker.request({ type: 'unlink', path: seg.path }).then((r) => {
      if (!r.ok) void unlink(seg.path).catch(() => {});
    });
  }

  detach(): void {
    this.clear();
    this.#store.worker.detach(this.queueId);
  }
}
