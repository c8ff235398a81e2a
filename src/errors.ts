/** Every error code of the wire contract, with its HTTP status. */
export const ERROR_STATUS = {
  INVALID_ARGUMENT: 400,
  UNAUTHENTICATED: 401,
  FORBIDDEN: 403,
  QUEUE_NOT_FOUND: 404,
  SUBSCRIPTION_NOT_FOUND: 404,
  TRANSACTION_NOT_FOUND: 404,
  NOT_FOUND: 404,
  ALREADY_EXISTS: 409,
  MESSAGE_TOO_LARGE: 413,
  BODY_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  PUBLISHER_RESTRICTED: 429,
  SHUTTING_DOWN: 503,
  QUEUE_FULL: 507,
  INSUFFICIENT_STORAGE: 507,
  INTERNAL: 500,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

/** An error of the wire contract: a stable code, a status, and extra fields for the envelope. */
export class SpillwayError extends Error {
  override name = 'SpillwayError';
  readonly code: ErrorCode;
  readonly status: number;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.status = ERROR_STATUS[code];
    this.details = details;
  }

  /** The `{"error": {...}}` envelope of API.md. */
  toJSON(): { error: Record<string, unknown> } {
    return { error: { code: this.code, message: this.message, ...this.details } };
  }
}

export const invalid = (message: string, details?: Record<string, unknown>): SpillwayError =>
  new SpillwayError('INVALID_ARGUMENT', message, details);

export function isSpillwayError(err: unknown): err is SpillwayError {
  return err instanceof Error && (err as SpillwayError).name === 'SpillwayError' && typeof (err as SpillwayError).code === 'string';
}
