import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';

/**
 * Raw sockets for what an HTTP or WebSocket library will not send: lying Content-Length,
 * control characters in the request line, frames cut at arbitrary bytes.
 */

export interface RawResult {
  /** Everything the server sent, latin1. */
  text: string;
  /** The status of the first response, 0 when there was none. */
  status: number;
  /** The server closed (or reset) the connection before `waitMs` ran out. */
  closed: boolean;
  ms: number;
}

/** Opens a connection to `url`'s host and port, resolving once connected. */
export function openSocket(url: string): Promise<Socket> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s = connect(Number(u.port), u.hostname, () => resolve(s));
    s.setNoDelay(true);
    s.once('error', reject);
  });
}

/**
 * Sends `parts` (written `gapMs` apart) and collects the answer until the server closes or
 * `waitMs` passes (then the client closes).
 */
export async function rawHttp(url: string, parts: (string | Buffer)[] | string | Buffer, waitMs = 2000, gapMs = 0): Promise<RawResult> {
  const s = await openSocket(url);
  const list = Array.isArray(parts) ? parts : [parts];
  const t0 = Date.now();
  const chunks: Buffer[] = [];
  s.on('data', (d: Buffer) => chunks.push(d));
  s.on('error', () => { /* a reset counts as closed */ });
  const done = new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), waitMs);
    s.on('close', () => { clearTimeout(timer); resolve(true); });
  });
  void (async () => {
    for (const p of list) {
      if (s.destroyed) return;
      s.write(p);
      if (gapMs > 0) await new Promise((r) => setTimeout(r, gapMs));
    }
  })();
  const closed = await done;
  s.destroy();
  const text = Buffer.concat(chunks).toString('latin1');
  const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
  return { text, status: m === null ? 0 : Number(m[1]), closed, ms: Date.now() - t0 };
}

/** The JSON body of the first response in a raw answer (Content-Length framed), or undefined. */
export function rawJson(text: string): any {
  const i = text.indexOf('\r\n\r\n');
  if (i < 0) return undefined;
  const head = text.slice(0, i);
  const len = /content-length: *(\d+)/i.exec(head);
  const body = len === null ? text.slice(i + 4) : text.slice(i + 4, i + 4 + Number(len[1]));
  try { return JSON.parse(Buffer.from(body, 'latin1').toString('utf8')); } catch { return undefined; }
}

// --- WebSocket frames ----------------------------------------------------------------------------

export const OP = { CONT: 0, TEXT: 1, BINARY: 2, CLOSE: 8, PING: 9, PONG: 10 } as const;

/** One frame as a client sends it (masked unless `mask: false`). */
export function encodeFrame(opcode: number, payload: Buffer | string, opts: { fin?: boolean; mask?: boolean; rsv?: number; declaredLength?: number } = {}): Buffer {
  const data = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  const fin = opts.fin ?? true;
  const mask = opts.mask ?? true;
  const len = opts.declaredLength ?? data.length;
  const head: number[] = [(fin ? 0x80 : 0) | ((opts.rsv ?? 0) << 4) | opcode];
  const m = mask ? 0x80 : 0;
  if (len < 126) head.push(m | len);
  else if (len < 65536) head.push(m | 126, len >> 8, len & 0xff);
  else {
    head.push(m | 127);
    const big = Buffer.alloc(8);
    big.writeBigUInt64BE(BigInt(len));
    head.push(...big);
  }
  if (!mask) return Buffer.concat([Buffer.from(head), data]);
  const key = randomBytes(4);
  const masked = Buffer.alloc(data.length);
  for (let i = 0; i < data.length; i++) masked[i] = data[i]! ^ key[i & 3]!;
  return Buffer.concat([Buffer.from(head), key, masked]);
}

export interface ServerFrame {
  fin: boolean;
  opcode: number;
  payload: Buffer;
}

/** Decodes the server's (unmasked) frames from a byte stream, keeping what is incomplete. */
export class FrameReader {
  #buf: Buffer = Buffer.alloc(0);
  readonly frames: ServerFrame[] = [];

  push(chunk: Buffer): void {
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    for (;;) {
      const b = this.#buf;
      if (b.length < 2) return;
      let len = b[1]! & 0x7f;
      let off = 2;
      if (len === 126) {
        if (b.length < 4) return;
        len = b.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (b.length < 10) return;
        len = Number(b.readBigUInt64BE(2));
        off = 10;
      }
      if (b.length < off + len) return;
      this.frames.push({ fin: (b[0]! & 0x80) !== 0, opcode: b[0]! & 0x0f, payload: b.subarray(off, off + len) });
      this.#buf = b.subarray(off + len);
    }
  }

  /** Text frames, parsed. */
  json(): any[] {
    return this.frames.filter((f) => f.opcode === OP.TEXT).map((f) => JSON.parse(f.payload.toString('utf8')));
  }

  /** The close code the server sent, if it sent a close frame. */
  closeCode(): number | undefined {
    const c = this.frames.find((f) => f.opcode === OP.CLOSE);
    return c === undefined || c.payload.length < 2 ? undefined : c.payload.readUInt16BE(0);
  }
}

/** A raw WebSocket connection: the upgrade done by hand, then bytes as the test wants them. */
export class RawWs {
  readonly reader = new FrameReader();
  closed = false;
  readonly closedP: Promise<void>;

  private constructor(readonly socket: Socket) {
    this.closedP = new Promise((resolve) => socket.on('close', () => { this.closed = true; resolve(); }));
    socket.on('error', () => { /* close follows */ });
  }

  /** Upgrades; resolves once the 101 arrived (any bytes after it go to the frame reader). */
  static async open(url: string, path = '/v1/ws', headers: Record<string, string> = {}): Promise<RawWs> {
    const s = await openSocket(url);
    const u = new URL(url);
    const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
    s.write(`GET ${path} HTTP/1.1\r\nHost: ${u.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`);
    const ws = new RawWs(s);
    await new Promise<void>((resolve, reject) => {
      let head = Buffer.alloc(0);
      const onData = (d: Buffer): void => {
        head = Buffer.concat([head, d]);
        const i = head.indexOf('\r\n\r\n');
        if (i < 0) return;
        s.off('data', onData);
        const status = head.toString('latin1', 0, i);
        if (!status.startsWith('HTTP/1.1 101')) {
          reject(new Error(`upgrade refused: ${status.split('\r\n')[0]}`));
          s.destroy();
          return;
        }
        s.on('data', (c: Buffer) => ws.reader.push(c));
        if (head.length > i + 4) ws.reader.push(head.subarray(i + 4));
        resolve();
      };
      s.on('data', onData);
      s.once('close', () => reject(new Error('closed during upgrade')));
    });
    return ws;
  }

  write(b: Buffer): boolean { return this.socket.write(b); }

  /** Writes `bytes` in pieces cut at `cuts` (offsets), each its own write a turn apart. */
  async writeCut(bytes: Buffer, cuts: readonly number[]): Promise<void> {
    const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
    let at = 0;
    for (const p of [...points, bytes.length]) {
      if (p <= at) continue;
      if (this.socket.destroyed) return;
      this.socket.write(bytes.subarray(at, p));
      at = p;
      await new Promise((r) => setImmediate(r));
    }
  }

  async waitFor(pred: (r: FrameReader) => boolean, timeoutMs = 5000): Promise<boolean> {
    const end = Date.now() + timeoutMs;
    while (!pred(this.reader)) {
      if (Date.now() > end) return false;
      await new Promise((r) => setTimeout(r, 5));
    }
    return true;
  }

  destroy(): void { this.socket.destroy(); }
}
