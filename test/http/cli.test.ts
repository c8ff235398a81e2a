import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from './helpers';

const CLI = join(__dirname, '..', '..', 'dist', 'cli.js');

interface Running {
  child: ChildProcessWithoutNullStreams;
  url: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr: () => string;
}

/** Starts `node dist/cli.js serve ...` and waits for the line with its URL. */
function serve(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Running> {
  const child = spawn(process.execPath, [CLI, 'serve', ...args], { env: { ...process.env, ...env } });
  let out = '';
  let err = '';
  child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return new Promise((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /(http:\/\/\S+)/.exec(out);
      if (m) resolve({ child, url: m[1]!, exited, stderr: () => err });
    });
    void exited.then(({ code }) => reject(new Error(`spillway exited with ${code} before listening: ${err}`)));
  });
}

describe('cli', () => {
  let dir: string;
  const children: ChildProcessWithoutNullStreams[] = [];
  beforeAll(() => {
    if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build first`);
  });
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'spillway-cli-')); });
  afterEach(() => {
    for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  test('cli - serve prints its URL (the real port with --port 0) and answers /healthz', async () => {
    const s = await serve(['--port', '0', '--data-dir', dir, '--memory', '64MiB']);
    children.push(s.child);
    expect(s.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(s.url).not.toMatch(/:0$/);
    const res = await fetch(`${s.url}/healthz`);
    expect(res.status).toBe(200);
    const body = await res.json() as { status: string; epoch: string };
    expect(body.status).toBe('ok');
    expect(body.epoch).toMatch(/^[0-9a-f-]{36}$/);
    s.child.kill('SIGTERM');
    expect(await s.exited).toEqual({ code: 0, signal: null });
  });

  test('cli - SPILLWAY_PORT sets the port when --port is not given', async () => {
    const s = await serve(['--data-dir', dir], { SPILLWAY_PORT: '0' });
    children.push(s.child);
    expect((await fetch(`${s.url}/healthz`)).status).toBe(200);
    s.child.kill('SIGTERM');
    expect((await s.exited).code).toBe(0);
  });

  test('cli - SIGTERM closes WebSockets with 1001 and exits 0 within 10 s', async () => {
    const s = await serve(['--port', '0', '--data-dir', dir]);
    children.push(s.child);
    expect((await fetch(`${s.url}/v1/queues/q`, { method: 'PUT' })).status).toBe(201);
    const c = await Client.open(`${s.url}/v1/ws`);
    c.send({ op: 'subscribe', queue: 'q', subscription: 'default' });
    await c.op('subscribed');
    c.send({ op: 'publish', ref: 1, queue: 'q', messages: [{ data: 'before' }] });
    await c.op('published');
    await c.messages(1);

    const started = Date.now();
    s.child.kill('SIGTERM');
    const closed = await c.closed;
    expect(closed.code).toBe(1001);
    expect(await s.exited).toEqual({ code: 0, signal: null });
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(s.stderr()).toContain('SIGTERM');
    // Definitions survive in the data dir.
    expect(existsSync(join(dir, 'definitions.json'))).toBe(true);
  });

  test('cli - --auth-file turns auth on', async () => {
    writeFileSync(join(dir, 'auth.json'), JSON.stringify({ tokens: [{ token: 'tok', name: 'me', admin: true }] }));
    const s = await serve(['--port', '0', '--data-dir', dir, '--auth-file', join(dir, 'auth.json')]);
    children.push(s.child);
    expect((await fetch(`${s.url}/v1/queues`)).status).toBe(401);
    expect((await fetch(`${s.url}/v1/queues`, { headers: { authorization: 'Bearer tok' } })).status).toBe(200);
    expect((await fetch(`${s.url}/healthz`)).status).toBe(200);
    s.child.kill('SIGINT');
    expect((await s.exited).code).toBe(0);
  });

  test('cli - bad flags exit 2 with the usage', async () => {
    for (const args of [['--memory', 'lots'], ['--port', 'http'], ['--no-such-flag']]) {
      const child = spawn(process.execPath, [CLI, 'serve', ...args]);
      let err = '';
      child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
      const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
      expect([args, code]).toEqual([args, 2]);
      expect(err).toContain('Usage: spillway serve');
    }
  });
});

describe('cli sizes', () => {
  // Imported lazily: the module only runs main() when it is the entry point.
  const { parseSize } = require('../../src/cli') as typeof import('../../src/cli');

  test('cli - sizes accept bytes and binary or decimal units', () => {
    expect(parseSize('1048576', '--memory')).toBe(1048576);
    expect(parseSize('256MiB', '--memory')).toBe(256 * 1024 * 1024);
    expect(parseSize('1GiB', '--memory')).toBe(1024 ** 3);
    expect(parseSize('1g', '--memory')).toBe(1024 ** 3);
    expect(parseSize('1.5KiB', '--memory')).toBe(1536);
    expect(parseSize('2MB', '--memory')).toBe(2_000_000);
    expect(() => parseSize('12 parsecs', '--memory')).toThrow(/--memory/);
    expect(() => parseSize('0', '--memory')).toThrow(/range/);
  });
});
