import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { QueueConfig } from './config';
import type { SubscriptionConfig } from '../subscribers/config';
import type { PropagationConfig } from '../propagation/config';

/** What survives a restart: queue and subscription definitions, never messages. */
export interface Definitions {
  version: 1;
  /** This server's id across restarts (propagations publish as `{serverId}:{queue}`). */
  serverId?: string;
  queues: {
    name: string;
    config: QueueConfig;
    subscriptions: { name: string; config: SubscriptionConfig; createdAt: number; expiresAt?: number; ackedEvents?: number }[];
    propagations?: { name: string; config: PropagationConfig }[];
  }[];
}

const FILE = 'definitions.json';

export function loadDefinitions(dataDir: string): Definitions | undefined {
  let text: string;
  try {
    text = readFileSync(join(dataDir, FILE), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const defs = JSON.parse(text) as Definitions;
  if (defs.version !== 1 || !Array.isArray(defs.queues)) throw new Error(`${join(dataDir, FILE)}: not a Spillway definitions file`);
  return defs;
}

/** Writes atomically (temp file, then rename), so a crash never leaves half a file. */
export function saveDefinitions(dataDir: string, defs: Definitions): void {
  mkdirSync(dataDir, { recursive: true });
  const tmp = join(dataDir, FILE + '.tmp');
  // Owner-only: propagation tokens are kept here.
  writeFileSync(tmp, JSON.stringify(defs, null, 1), { mode: 0o600 });
  renameSync(tmp, join(dataDir, FILE));
}
