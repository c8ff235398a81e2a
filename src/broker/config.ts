import { invalid } from '../errors';

export interface QueueConfig {
  memoryBytes: number;
  maxMessageBytes: number;
  publisherLimitBytes: number;
  publisherResumeBytes: number;
  publisherSpillLimitBytes: number;
  defaultSubscription: boolean;
  spill: boolean;
}

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

export const QUEUE_DEFAULTS = {
  memoryBytes: 8 * MiB,
  maxMessageBytes: 1 * MiB,
  publisherLimitBytes: 64 * MiB,
  publisherSpillLimitBytes: 1 * GiB,
} as const;

const MIN_MEMORY = 64 * KiB;
const MAX_MEMORY = 1 * GiB;

function size(b: Record<string, unknown>, field: string, min: number, max: number): number | undefined {
  const v = b[field];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) {
    throw invalid(`${field} must be an integer from ${min} to ${max}`, { field });
  }
  return v;
}

function bool(b: Record<string, unknown>, field: string, dflt: boolean): boolean {
  const v = b[field];
  if (v === undefined) return dflt;
  if (typeof v !== 'boolean') throw invalid(`${field} must be true or false`, { field });
  return v;
}

/** Validates a queue body of API.md and fills in the defaults. */
export function parseQueueConfig(body: unknown): QueueConfig {
  if (body === undefined || body === null) body = {};
  if (typeof body !== 'object' || Array.isArray(body)) throw invalid('queue config must be a JSON object');
  const b = body as Record<string, unknown>;
  const known = ['memoryBytes', 'maxMessageBytes', 'publisherLimitBytes', 'publisherResumeBytes', 'publisherSpillLimitBytes', 'defaultSubscription', 'spill'];
  for (const k of Object.keys(b)) if (!known.includes(k)) throw invalid(`unknown field: ${k}`, { field: k });
  const memoryBytes = size(b, 'memoryBytes', MIN_MEMORY, MAX_MEMORY) ?? QUEUE_DEFAULTS.memoryBytes;
  // A record must fit in the ring with room to spare; bodies are JSON, so allow for escaping.
  const maxMessageBytes = size(b, 'maxMessageBytes', 1, 64 * MiB) ?? Math.min(QUEUE_DEFAULTS.maxMessageBytes, Math.floor(memoryBytes / 4));
  const publisherLimitBytes = size(b, 'publisherLimitBytes', 1, Number.MAX_SAFE_INTEGER) ?? QUEUE_DEFAULTS.publisherLimitBytes;
  const publisherResumeBytes = size(b, 'publisherResumeBytes', 0, Number.MAX_SAFE_INTEGER) ?? Math.floor(publisherLimitBytes / 2);
  if (publisherResumeBytes >= publisherLimitBytes) {
    throw invalid('publisherResumeBytes must be below publisherLimitBytes', { field: 'publisherResumeBytes' });
  }
  const publisherSpillLimitBytes = size(b, 'publisherSpillLimitBytes', 1, Number.MAX_SAFE_INTEGER) ?? QUEUE_DEFAULTS.publisherSpillLimitBytes;
  return {
    memoryBytes,
    maxMessageBytes,
    publisherLimitBytes,
    publisherResumeBytes,
    publisherSpillLimitBytes,
    defaultSubscription: bool(b, 'defaultSubscription', true),
    spill: bool(b, 'spill', true),
  };
}
