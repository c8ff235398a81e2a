/**
 * The far end of a propagation: a queue on another Spillway server, reached over its REST
 * API. Every answer carries the destination's PublisherState for our publisher id, which is
 * how the source learns what has been consumed there (safePublisherSeq) and whether the
 * destination restarted (epoch).
 */

export interface RemoteMessage {
  data: string;
  encoding: 'utf8' | 'base64';
  attributes: Record<string, string>;
  key?: string;
  publisherSeq: number;
}

export interface RemotePublisher {
  epoch: string;
  lastPublisherSeq?: number;
  safePublisherSeq?: number;
}

export type DestinationResult =
  | { ok: true; publisher: RemotePublisher | undefined }
  /** Flow control at the destination: wait and send again. */
  | { ok: false; restricted: true; retryAfterMs: number; error: string }
  | { ok: false; restricted: false; error: string };

export interface Destination {
  publish(publisherId: string, messages: RemoteMessage[]): Promise<DestinationResult>;
  /** The destination's state of our publisher (undefined when it does not know it, e.g. after a restart). */
  state(publisherId: string): Promise<DestinationResult>;
  /** The destination server's epoch. */
  epoch(): Promise<string>;
}

const TIMEOUT_MS = 10_000;

/** A destination over HTTP, with keep-alive connections (Node's fetch). */
export class HttpDestination implements Destination {
  readonly #base: string;
  readonly #queue: string;
  readonly #headers: Record<string, string>;

  constructor(url: string, queue: string, token: string | undefined) {
    this.#base = url.replace(/\/+$/, '');
    this.#queue = encodeURIComponent(queue);
    this.#headers = { 'content-type': 'application/json' };
    if (token !== undefined) this.#headers.authorization = `Bearer ${token}`;
  }

  publish(publisherId: string, messages: RemoteMessage[]): Promise<DestinationResult> {
    return this.#call('POST', `/v1/queues/${this.#queue}/messages`, JSON.stringify({ publisherId, messages }), (body) => (body as { publisher?: RemotePublisher }).publisher);
  }

  state(publisherId: string): Promise<DestinationResult> {
    return this.#call('GET', `/v1/queues/${this.#queue}/publishers/${encodeURIComponent(publisherId)}`, undefined, (body) => body as RemotePublisher);
  }

  async epoch(): Promise<string> {
    const res = await fetch(this.#base + '/healthz', { signal: AbortSignal.timeout(TIMEOUT_MS) });
    const body = (await res.json()) as { epoch?: string };
    if (typeof body.epoch !== 'string') throw new Error('the destination did not tell its epoch');
    return body.epoch;
  }

  async #call(method: string, path: string, body: string | undefined, pick: (body: unknown) => RemotePublisher | undefined): Promise<DestinationResult> {
    let res: Response;
    try {
      const init: RequestInit = { method, headers: this.#headers, signal: AbortSignal.timeout(TIMEOUT_MS) };
      if (body !== undefined) init.body = body;
      res = await fetch(this.#base + path, init);
    } catch (err) {
      return { ok: false, restricted: false, error: `${(err as Error).message}${(err as { cause?: Error }).cause ? ': ' + (err as { cause: Error }).cause.message : ''}` };
    }
    let json: unknown;
    try {
      json = await res.json();
    } catch {
      return { ok: false, restricted: false, error: `HTTP ${res.status} without a JSON body` };
    }
    if (res.ok) return { ok: true, publisher: pick(json) };
    const e = (json as { error?: { code?: string; message?: string; retryAfterMs?: number } }).error ?? {};
    if (method === 'GET' && e.code === 'NOT_FOUND') return { ok: true, publisher: undefined };
    const error = `${res.status} ${e.code ?? ''}: ${e.message ?? ''}`;
    if (res.status === 429) return { ok: false, restricted: true, retryAfterMs: typeof e.retryAfterMs === 'number' ? e.retryAfterMs : 1000, error };
    return { ok: false, restricted: false, error };
  }
}
