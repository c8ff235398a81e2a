import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MiB } from './config';

const CLI = join(__dirname, '..', '..', 'dist', 'cli.js');

/** A `spillway serve` child process: the server as users run it, so its RSS and its crashes are observable. */
export interface ServerProcess {
  url: string;
  port: number;
  pid: number;
  dataDir: string;
  child: ChildProcessWithoutNullStreams;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr(): string;
  /** Resident set size now (bytes), from /proc. */
  rss(): number;
  alive(): boolean;
}

export interface ServeOptions {
  port?: number;
  dataDir?: string;
  memory?: string;
  bodyLimit?: string;
  maxDisk?: string;
  args?: string[];
}

const started: ServerProcess[] = [];
const dirs: string[] = [];

/** Starts `node dist/cli.js serve` and waits for its URL. Killed by `stopAll()` (afterAll). */
export function startServer(opts: ServeOptions = {}): Promise<ServerProcess> {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build first`);
  const dataDir = opts.dataDir ?? tempDir('spillway-rel-');
  const args = [CLI, 'serve', '--port', String(opts.port ?? 0), '--data-dir', dataDir];
  if (opts.memory !== undefined) args.push('--memory', opts.memory);
  if (opts.bodyLimit !== undefined) args.push('--body-limit', opts.bodyLimit);
  if (opts.maxDisk !== undefined) args.push('--max-disk', opts.maxDisk);
  args.push(...(opts.args ?? []));
  const child = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr.on('data', (d: Buffer) => { err += d.toString(); if (err.length > 1 << 20) err = err.slice(-(1 << 19)); });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return new Promise((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /(http:\/\/\S+)/.exec(out);
      if (m === null) return;
      const url = m[1]!;
      const s: ServerProcess = {
        url, port: Number(new URL(url).port), pid: child.pid!, dataDir, child, exited,
        stderr: () => err,
        rss: () => rssOf(child.pid!),
        alive: () => child.exitCode === null && child.signalCode === null,
      };
      started.push(s);
      resolve(s);
    });
    void exited.then(({ code, signal }) => reject(new Error(`spillway exited (${code ?? signal}) before listening: ${err}`)));
  });
}

/** Kills every server this file started and removes their data dirs. */
export async function stopAll(): Promise<void> {
  for (const s of started.splice(0)) {
    if (s.alive()) {
      s.child.kill('SIGKILL');
      await s.exited;
    }
  }
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
}

export function tempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}

/** RSS of a process in bytes (Linux /proc; 0 when it is gone). */
export function rssOf(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m === null ? 0 : Number(m[1]) * 1024;
  } catch {
    return 0;
  }
}

/** Samples a process's RSS on a timer. */
export class RssSampler {
  readonly samples: { t: number; rss: number }[] = [];
  readonly #timer: NodeJS.Timeout;
  readonly #start = Date.now();

  constructor(readonly pid: number, intervalMs = 100) {
    this.#sample();
    this.#timer = setInterval(() => this.#sample(), intervalMs);
    this.#timer.unref();
  }

  #sample(): void {
    const rss = rssOf(this.pid);
    if (rss > 0) this.samples.push({ t: Date.now() - this.#start, rss });
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#sample();
  }

  get peak(): number { return this.samples.reduce((m, s) => Math.max(m, s.rss), 0); }
  get peakMiB(): number { return Math.round(this.peak / MiB); }
  /** Peak RSS among samples taken in [from, to) ms after the start. */
  peakBetween(from: number, to: number): number {
    return this.samples.filter((s) => s.t >= from && s.t < to).reduce((m, s) => Math.max(m, s.rss), 0);
  }
}

// --- HTTP --------------------------------------------------------------------------------

/** Keep-alive connections for the test's own clients (publishers, pullers). */
export const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

export interface HttpResult {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  json(): any;
}

/**
 * One HTTP request with node:http (paths are sent as given: no normalisation of `..` or
 * re-encoding, unlike fetch). `body` objects are sent as JSON.
 */
export function request(base: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}, timeoutMs = 30_000): Promise<HttpResult> {
  const u = new URL(base);
  let payload: Buffer | undefined;
  const h: Record<string, string> = { ...headers };
  if (body !== undefined) {
    if (Buffer.isBuffer(body)) payload = body;
    else if (typeof body === 'string') payload = Buffer.from(body);
    else {
      payload = Buffer.from(JSON.stringify(body));
      h['content-type'] ??= 'application/json';
    }
    h['content-length'] = String(payload.length);
  }
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, method, path, headers: h, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const buf = Buffer.concat(chunks);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: buf, json: () => JSON.parse(buf.toString('utf8')) });
      });
      res.on('error', reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`${method} ${path} timed out`)));
    req.on('error', reject);
    req.end(payload);
  });
}

/** Shorthand: JSON request, parsed answer. */
export async function call(base: string, method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<{ status: number; body: any }> {
  const r = await request(base, method, path, body, headers);
  const text = r.body.toString('utf8');
  let parsed: unknown = text;
  try { parsed = text.length > 0 ? JSON.parse(text) : undefined; } catch { /* not JSON */ }
  return { status: r.status, body: parsed };
}

/** Asserts `r` is API.md's error envelope with this status and code. */
export function expectError(r: { status: number; body: any }, status: number, code?: string): void {
  const got = { status: r.status, code: r.body?.error?.code, hasMessage: typeof r.body?.error?.message === 'string' };
  expect(got).toEqual({ status, code: code ?? expect.any(String), hasMessage: true });
}
