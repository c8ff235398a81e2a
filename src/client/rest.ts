import { SpillwayClientError, fromEnvelope, timeoutError } from './errors';

/** The part of `fetch` the client uses (the global one in Node 20 and browsers, or an injected one). */
export type FetchLike = (url: string, init: {
  method: string;
  headers: Record<string, string>;
  body?: string;
  signal?: AbortSignal;
}) => Promise<{ status: number; text(): Promise<string> }>;

/** REST calls of API.md: JSON in, JSON out, the error envelope as a SpillwayClientError. */
export class Rest {
  readonly #base: string;
  readonly #fetch: FetchLike;
  readonly #headers: Record<string, string>;

  constructor(base: string, fetchFn: FetchLike, token: string | undefined) {
    this.#base = base;
    this.#fetch = fetchFn;
    this.#headers = token === undefined ? {} : { authorization: `Bearer ${token}` };
  }

  /** `path` is already encoded. Resolves with the parsed body (undefined for 204). */
  async call<T>(method: string, path: string, body: unknown, timeoutMs: number): Promise<T> {
    return (await this.request<T>(method, path, body, timeoutMs)).body;
  }

  /** As `call`, with the status. `rawBody`: a body already in JSON. */
  async request<T>(method: string, path: string, body: unknown, timeoutMs: number, rawBody?: string): Promise<{ status: number; body: T }> {
    const ac = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      ac.abort();
    }, timeoutMs);
    const payload = rawBody ?? (body === undefined ? undefined : JSON.stringify(body));
    const headers = payload === undefined ? this.#headers : { ...this.#headers, 'content-type': 'application/json' };
    let status: number;
    let text: string;
    try {
      const res = await this.#fetch(this.#base + path, { method, headers, body: payload, signal: ac.signal });
      status = res.status;
      text = await res.text();
    } catch (err) {
      if (timedOut) throw timeoutError(`${method} ${path}`, timeoutMs);
      throw new SpillwayClientError('NETWORK', `${method} ${path}: ${(err as Error).message ?? String(err)}`, { cause: err });
    } finally {
      clearTimeout(timer);
    }
    let parsed: unknown;
    if (text.length > 0) {
      try {
        parsed = JSON.parse(text);
      } catch {
        throw new SpillwayClientError(status >= 400 ? 'INTERNAL' : 'NETWORK', `${method} ${path}: ${status} with a body that is not JSON`, { status });
      }
    }
    if (status >= 400) {
      const env = (parsed as { error?: Record<string, unknown> } | undefined)?.error;
      if (env !== undefined && typeof env === 'object') throw fromEnvelope(env, status);
      throw new SpillwayClientError('INTERNAL', `${method} ${path}: ${status}`, { status });
    }
    return { status, body: parsed as T };
  }
}

/** One path segment, percent-encoded. */
export const seg = (s: string): string => encodeURIComponent(s);
