import { appendFileSync } from 'node:fs';

/**
 * Short form (inside `npm test`, a couple of minutes on a 2-core machine) or full form
 * (`npm run test:reliability`, RELIABILITY=full: longer durations and more runs).
 */
export const FULL = process.env.RELIABILITY === 'full';

/** `short` in the default run, `full` with RELIABILITY=full. */
export const scale = <T>(short: T, full: T): T => (FULL ? full : short);

/** Tests that only the full form runs (they take minutes, or wait out the server's default timeouts). */
export const fullOnly: jest.It = FULL ? test : test.skip;

/** One row of the table `npm run test:reliability` prints. */
export interface Figures {
  scenario: string;
  published: number;
  delivered: number;
  lost: number;
  duplicated: number;
  corrupt?: number;
  restricted?: number;
  peakRssMiB?: number;
  seconds?: number;
  note?: string;
}

/** Appends a row to the report file of the full run (RELIABILITY_REPORT); a no-op otherwise. */
export function recordFigures(f: Figures): void {
  const file = process.env.RELIABILITY_REPORT;
  if (file === undefined || file === '') return;
  appendFileSync(file, JSON.stringify(f) + '\n');
}

export const MiB = 1024 * 1024;
/** Unref'd: a sleep raced against an event does not keep the process alive after the tests. */
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms).unref());

/** Polls `cond` until it holds; fails with `what` (and `detail()`) after `timeoutMs`. */
export async function waitFor(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000, detail?: () => string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${detail ? `: ${detail()}` : ''}`);
    await sleep(20);
  }
}

/** Progress notes, shown with RELIABILITY=full or RELIABILITY_VERBOSE=1. */
export function note(text: string): void {
  if (FULL || process.env.RELIABILITY_VERBOSE === '1') process.stderr.write(`  [reliability] ${text}\n`);
}
