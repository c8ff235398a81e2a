import { invalid } from '../errors';

/**
 * Small validators for the bodies the broker does not validate itself (pull, ack, nack,
 * extend, transactions), with API.md's INVALID_ARGUMENT and a `field` detail.
 */

/** A JSON object body (an absent body is `{}`); unknown fields are refused. */
export function objectBody(body: unknown, allowed: readonly string[]): Record<string, unknown> {
  if (body === undefined || body === null) return {};
  if (typeof body !== 'object' || Array.isArray(body) || Buffer.isBuffer(body)) throw invalid('request body must be a JSON object');
  const b = body as Record<string, unknown>;
  for (const k in b) if (!allowed.includes(k)) throw invalid(`unknown field: ${k}`, { field: k });
  return b;
}

export function intField(b: Record<string, unknown>, field: string, min: number, max: number, dflt: number): number {
  const v = b[field];
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) throw invalid(`${field} must be an integer from ${min} to ${max}`, { field });
  return v;
}

export function requiredInt(b: Record<string, unknown>, field: string, min: number, max: number): number {
  if (b[field] === undefined) throw invalid(`${field} is required`, { field });
  return intField(b, field, min, max, 0);
}

export function boolField(b: Record<string, unknown>, field: string, dflt: boolean): boolean {
  const v = b[field];
  if (v === undefined) return dflt;
  if (typeof v !== 'boolean') throw invalid(`${field} must be true or false`, { field });
  return v;
}

/** `ids`: an array (ids that are not strings are reported as unknown by the broker). */
export function idsField(b: Record<string, unknown>): unknown[] {
  const v = b.ids;
  if (!Array.isArray(v)) throw invalid('ids must be an array of message ids', { field: 'ids' });
  return v;
}

export function stringField(b: Record<string, unknown>, field: string): string {
  const v = b[field];
  if (typeof v !== 'string') throw invalid(`${field} must be a string`, { field });
  return v;
}
