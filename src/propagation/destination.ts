import { WebSocket } from 'ws';

/**
 * The far end of a propagation: a queue on another Spillway server. Messages go over one
 * WebSocket as pipelined publish frames; the publisher state (what has been consumed there,
 * and the server's epoch) is read over REST when the link (re)starts or has nothing in flight.
 */

export interface RemotePublisher {
  epoch: string;
  lastPublisherSeq?: number;
  safePublisherSeq?: number;
}

/** An answer frame of the destination: `published` or `error` (API.md, WebSocket). */
export interface Answer {
  op: string;
  ref?: unknown;
  code?: string;
  message?: string;
  field?: string;
  retryAfterMs?: number;
  epoch?: string;
  lastPublisherSeq?: number;
  safePublisherSeq?: number;
}

export interface LinkEvents {
  opened(): void;
  /** Answers come in the order the frames were sent. */
  answer(a: Answer): void;
  /** Called once, whatever closed it (not after `close()`). */
  closed(reason: string): void;
}

export interface Link {
  send(frame: Buffer): void;
  /** Bytes sent and not yet written to the network. */
  readonly buffered: number;
  close(): void;
}

export type StateResult =
  /** `publisher` is undefined when the destination does not know ours (new, forgotten, or restarted). */
  | { ok: true; publisher: RemotePublisher | undefined }
  | { ok: false; error: string };

export interface Destination {
  connect(events: LinkEvents): Link;
  state(publisherId: string): Promise<StateResult>;
  /** The destination server's epoch. */
  epoch(): Promise<string>;
}

const TIMEOUT_MS = 10_000;
/**
 * Masking protects browsers' connections from proxies that mistake frames for HTTP; a link
 * between two servers has no such proxy, and a zero mask spares both ends a pass over every byte.
 */
const noMask = (mask: Buffer): void => { mask.fill(0); };
/** Answers are small; the limit only guards against a peer that is not a Spillway server. */
const MAX_ANSWER_BYTES = 16 * 1024 * 1024;

/** A destination reached at `url` (http or https), with its WebSocket at `/v1/ws`. */
export class RemoteQueue implements Destination {
  readonly #base: string;
  readonly #queue: string;
  readonly #headers: Record<string, string> = {};

  constructor(url: string, queue: string, token: string | undefined) {
    this.#base = url.replace(/\/+$/, '');
    this.#queue = encodeURIComponent(queue);
    if (token !== undefined) this.#headers.authorization = `Bearer ${token}`;
  }

  connect(events: LinkEvents): Link {
    const ws = new WebSocket(this.#base.replace(/^http/, 'ws') + '/v1/ws', {
      headers: this.#headers, perMessageDeflate: false, maxPayload: MAX_ANSWER_BYTES, handshakeTimeout: TIMEOUT_MS, generateMask: noMask,
    });
    let done = false;
    const end = (reason: string): void => {
      if (done) return;
      done = true;
      events.closed(reason);
    };
    ws.on('open', () => { if (!done) events.opened(); });
    ws.on('message', (data: Buffer, binary: boolean) => {
      if (done) return;
      let a: Answer;
      try {
        a = JSON.parse(binary ? '' : data.toString('utf8')) as Answer;
      } catch {
        ws.terminate();
        end('the destination sent a frame that is not JSON');
        return;
      }
      events.answer(a);
    });
    ws.on('unexpected-response', (req, res) => {
      // Refused upgrade (401, 403, 404, …): its body is API.md's error envelope.
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (s: string) => { if (body.length < 4096) body += s; });
      res.on('end', () => end(`HTTP ${res.statusCode} on the WebSocket upgrade${describeEnvelope(body)}`));
      res.on('error', () => end(`HTTP ${res.statusCode} on the WebSocket upgrade`));
      req.on('error', () => {});
      setTimeout(() => req.destroy(), 1000).unref();
    });
    ws.on('error', (err: Error) => end(err.message));
    ws.on('close', (code: number, reason: Buffer) => end(`connection closed (${code}${reason.length > 0 ? ' ' + reason.toString() : ''})`));
    return {
      send(frame: Buffer): void { if (ws.readyState === WebSocket.OPEN) ws.send(frame, { binary: false }); },
      get buffered(): number { return ws.bufferedAmount; },
      close(): void {
        done = true;
        if (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN) ws.terminate();
      },
    };
  }

  async state(publisherId: string): Promise<StateResult> {
    let res: Response;
    try {
      res = await fetch(`${this.#base}/v1/queues/${this.#queue}/publishers/${encodeURIComponent(publisherId)}`, {
        headers: this.#headers, signal: AbortSignal.timeout(TIMEOUT_MS),
      });
    } catch (err) {
      const cause = (err as { cause?: Error }).cause;
      return { ok: false, error: `${(err as Error).message}${cause ? ': ' + cause.message : ''}` };
    }
    let json: unknown;
    try {
      json = await res.json();
    } catch {
      return { ok: false, error: `HTTP ${res.status} without a JSON body` };
    }
    if (res.ok) return { ok: true, publisher: json as RemotePublisher };
    const e = (json as { error?: { code?: string; message?: string } }).error ?? {};
    if (e.code === 'NOT_FOUND') return { ok: true, publisher: undefined };
    return { ok: false, error: `${res.status} ${e.code ?? ''}: ${e.message ?? ''}` };
  }

  async epoch(): Promise<string> {
    const res = await fetch(this.#base + '/healthz', { signal: AbortSignal.timeout(TIMEOUT_MS) });
    const body = (await res.json()) as { epoch?: string };
    if (typeof body.epoch !== 'string') throw new Error('the destination did not tell its epoch');
    return body.epoch;
  }
}

function describeEnvelope(body: string): string {
  try {
    const e = (JSON.parse(body) as { error?: { code?: string; message?: string } }).error;
    return e ? ` ${e.code ?? ''}: ${e.message ?? ''}` : '';
  } catch {
    return '';
  }
}
