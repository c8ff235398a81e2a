import type { ErrorCode } from '../errors';

/** Codes the client makes itself, beside the server's catalogue (src/errors.ts). */
export type ClientErrorCode =
  /** A call got no answer within its timeout. */
  | 'TIMEOUT'
  /** The client was closed before the call could finish. */
  | 'CLOSED'
  /** The server could not be reached, or answered something that is not the API's JSON. */
  | 'NETWORK';

export type SpillwayErrorCode = ErrorCode | ClientErrorCode;

/**
 * Every error the client throws or emits: `code` is API.md's code (QUEUE_NOT_FOUND,
 * PUBLISHER_RESTRICTED, …) or one of the client's own (TIMEOUT, CLOSED, NETWORK).
 * `status` is the HTTP status when the server answered; `details` the envelope's other fields.
 */
export class SpillwayClientError extends Error {
  override name = 'SpillwayClientError';
  readonly code: SpillwayErrorCode;
  readonly status: number | undefined;
  readonly details: Record<string, unknown>;

  constructor(code: SpillwayErrorCode, message: string, opts: { status?: number; details?: Record<string, unknown>; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.code = code;
    this.status = opts.status;
    this.details = opts.details ?? {};
  }

  /** For PUBLISHER_RESTRICTED: how long the server asked to wait. */
  get retryAfterMs(): number | undefined {
    const v = this.details.retryAfterMs;
    return typeof v === 'number' ? v : undefined;
  }
}

export function isSpillwayClientError(err: unknown): err is SpillwayClientError {
  return err instanceof Error && err.name === 'SpillwayClientError' && typeof (err as SpillwayClientError).code === 'string';
}

/** An `{"op": "error", ...}` frame or an `{"error": {...}}` envelope as an error. */
export function fromEnvelope(e: Record<string, unknown>, status?: number): SpillwayClientError {
  const { code, message, op: _op, ref: _ref, ...details } = e;
  return new SpillwayClientError(
    (typeof code === 'string' ? code : 'INTERNAL') as SpillwayErrorCode,
    typeof message === 'string' ? message : 'server error',
    { status, details },
  );
}

export const timeoutError = (what: string, ms: number): SpillwayClientError =>
  new SpillwayClientError('TIMEOUT', `${what}: no answer within ${ms} ms`, { details: { timeoutMs: ms } });

export const closedError = (what = 'the client is closed'): SpillwayClientError => new SpillwayClientError('CLOSED', what);
