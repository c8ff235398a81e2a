import { invalid } from '../errors';
import { checkName } from '../names';

export interface SubscriptionConfig {
  filter?: { attributes: Record<string, string> };
  ackDeadlineMs: number;
  maxDeliveries: number;
  deadLetterQueue?: string;
  startAt: 'latest' | 'earliest';
  ttlMs?: number;
  maxEvents?: number;
}

export const SUBSCRIPTION_DEFAULTS = { ackDeadlineMs: 30_000, maxDeliveries: 10, startAt: 'latest' } as const;
const MAX_ACK_DEADLINE_MS = 600_000;

function int(body: Record<string, unknown>, field: string, min: number, max: number): number | undefined {
  const v = body[field];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) {
    throw invalid(`${field} must be an integer from ${min} to ${max}`, { field });
  }
  return v;
}

/** Validates a subscription body of API.md and fills in the defaults. */
export function parseSubscriptionConfig(body: unknown): SubscriptionConfig {
  if (body === undefined || body === null) body = {};
  if (typeof body !== 'object' || Array.isArray(body)) throw invalid('subscription config must be a JSON object');
  const b = body as Record<string, unknown>;
  const known = new Set(['filter', 'ackDeadlineMs', 'maxDeliveries', 'deadLetterQueue', 'startAt', 'ttlMs', 'maxEvents']);
  for (const k of Object.keys(b)) if (!known.has(k)) throw invalid(`unknown field: ${k}`, { field: k });
  const cfg: SubscriptionConfig = {
    ackDeadlineMs: int(b, 'ackDeadlineMs', 1, MAX_ACK_DEADLINE_MS) ?? SUBSCRIPTION_DEFAULTS.ackDeadlineMs,
    maxDeliveries: int(b, 'maxDeliveries', 1, 1000) ?? SUBSCRIPTION_DEFAULTS.maxDeliveries,
    startAt: SUBSCRIPTION_DEFAULTS.startAt,
  };
  if (b.startAt !== undefined) {
    if (b.startAt !== 'latest' && b.startAt !== 'earliest') throw invalid('startAt must be "latest" or "earliest"', { field: 'startAt' });
    cfg.startAt = b.startAt;
  }
  if (b.filter !== undefined) {
    const f = b.filter as Record<string, unknown>;
    if (typeof f !== 'object' || f === null || Array.isArray(f)) throw invalid('filter must be an object', { field: 'filter' });
    for (const k of Object.keys(f)) if (k !== 'attributes') throw invalid(`unknown filter field: ${k}`, { field: 'filter' });
    const attrs = f.attributes;
    if (typeof attrs !== 'object' || attrs === null || Array.isArray(attrs)) throw invalid('filter.attributes must be an object of strings', { field: 'filter' });
    const out: Record<string, string> = Object.create(null) as Record<string, string>; // '__proto__' is a key like any other
    for (const [k, v] of Object.entries(attrs)) {
      if (typeof v !== 'string') throw invalid('filter.attributes values must be strings', { field: 'filter' });
      out[k] = v;
    }
    cfg.filter = { attributes: out };
  }
  if (b.deadLetterQueue !== undefined) cfg.deadLetterQueue = checkName(b.deadLetterQueue, 'deadLetterQueue');
  const ttl = int(b, 'ttlMs', 1, Number.MAX_SAFE_INTEGER);
  if (ttl !== undefined) cfg.ttlMs = ttl;
  const maxEvents = int(b, 'maxEvents', 1, Number.MAX_SAFE_INTEGER);
  if (maxEvents !== undefined) cfg.maxEvents = maxEvents;
  return cfg;
}

/** True when two configs are the same (create is idempotent only for the same config). */
export function sameConfig(a: object, b: object): boolean {
  return canonical(a) === canonical(b);
}

function canonical(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) return '[' + v.map(canonical).join(',') + ']';
  const o = v as Record<string, unknown>;
  return '{' + Object.keys(o).filter((k) => o[k] !== undefined).sort().map((k) => JSON.stringify(k) + ':' + canonical(o[k])).join(',') + '}';
}
