import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build } from 'esbuild';
import { serve, until, type Served } from './helpers';

/** Debian's chromium (installed by .ci/run), or undefined. */
function findChromium(): string | undefined {
  const env = process.env.CHROMIUM;
  if (env !== undefined && existsSync(env)) return env;
  for (const p of ['/usr/bin/chromium', '/usr/bin/chromium-browser']) if (existsSync(p)) return p;
  const r = spawnSync('sh', ['-c', 'command -v chromium || command -v chromium-browser'], { encoding: 'utf8' });
  const found = r.stdout.trim();
  return found.length > 0 ? found : undefined;
}

const chromium = findChromium();
if (chromium === undefined) {
  // Skipped, not passed: jest lists the test as skipped and this says why.
  console.warn('client browser test SKIPPED: no chromium on this machine (install it with `apt-get install -y chromium`, as .ci/run does)');
}
const withChromium = chromium !== undefined ? test : test.skip;

/** The page: the IIFE bundle as `Spillway`, publishing and receiving, then posting what it saw. */
const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>spillway client</title></head>
<body><pre id="out">running</pre>
<script src="/browser/client.js"></script>
<script>
const report = (r) => fetch('/browser/result', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(r) });
window.addEventListener('error', (e) => report({ ok: false, error: 'page error: ' + e.message }));
(async () => {
  try {
    const c = new Spillway.SpillwayClient({ url: location.origin, timeoutMs: 5000 });
    const states = [c.state];
    c.on('connected', (e) => states.push('connected:' + (e.epoch === undefined ? '?' : 'epoch')));
    await c.createQueue('browser');
    const sub = await c.subscribe('browser', 'default', { prefetch: 10 });
    const ids = await Promise.all([
      c.publish('browser', { data: 'hello from chromium', attributes: { from: 'browser' } }),
      c.publish('browser', new Uint8Array([1, 2, 3, 255])),
    ]);
    const it = sub[Symbol.asyncIterator]();
    const m1 = (await it.next()).value;
    const m2 = (await it.next()).value;
    m1.ack();
    m2.ack();
    await c.close();
    states.push(c.state);
    const result = { ok: true, ids, messages: [m1.toJSON(), { id: m2.id, encoding: m2.encoding, bytes: Array.from(m2.bytes()) }], states,
      globals: { Buffer: typeof Buffer, process: typeof process, require: typeof require } };
    document.getElementById('out').textContent = JSON.stringify(result);
    await report(result);
  } catch (e) {
    await report({ ok: false, error: String((e && e.stack) || e), code: e && e.code });
  }
})();
</script></body></html>`;

describe('client in a browser', () => {
  let s: Served | undefined;
  let browser: ChildProcess | undefined;
  let profile: string | undefined;

  afterEach(async () => {
    // Chromium first: its open connections would hold up the server's close.
    const b = browser;
    browser = undefined;
    if (b !== undefined && b.pid !== undefined && b.exitCode === null && b.signalCode === null) {
      // Its children (zygote, renderers, GPU) share the process group it leads (spawned detached).
      const exited = new Promise((r) => b.once('exit', r));
      try { process.kill(-b.pid, 'SIGKILL'); } catch { /* already gone */ }
      let t: NodeJS.Timeout | undefined;
      await Promise.race([exited, new Promise((r) => { t = setTimeout(r, 3000); })]);
      clearTimeout(t);
    }
    if (profile !== undefined) {
      rmSync(profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
      profile = undefined;
    }
    await s?.close();
    s = undefined;
  });

  test('browser - the browser entry bundles without Node modules', async () => {
    const out = await build({
      entryPoints: [join(__dirname, '../../src/client/browser.ts')],
      bundle: true, format: 'iife', globalName: 'Spillway', platform: 'browser', target: 'es2022', write: false, logLevel: 'silent',
    });
    expect(out.errors).toEqual([]);
    const code = out.outputFiles[0]!.text;
    expect(code).not.toMatch(/require\(/);
    expect(code).not.toMatch(/["']node:[a-z]|from ["']ws["']/);
    expect(code).toMatch(/SpillwayClient/);
  });

  withChromium('browser - headless Chromium publishes and receives through the bundled client', async () => {
    const out = await build({
      entryPoints: [join(__dirname, '../../src/client/browser.ts')],
      bundle: true, format: 'iife', globalName: 'Spillway', platform: 'browser', target: 'es2022', write: false, logLevel: 'silent',
    });
    const bundle = out.outputFiles[0]!.text;
    let resolveResult!: (r: Record<string, any>) => void;
    const result = new Promise<Record<string, any>>((r) => { resolveResult = r; });
    // Same origin as the API: the page, the bundle and a route the page reports to.
    s = await serve({
      routes: (app) => {
        app.get('/browser/', (_req, reply) => reply.type('text/html; charset=utf-8').send(PAGE));
        app.get('/browser/client.js', (_req, reply) => reply.type('text/javascript; charset=utf-8').send(bundle));
        app.post('/browser/result', (req, reply) => {
          resolveResult(req.body as Record<string, any>);
          return reply.code(204).send();
        });
      },
    });
    profile = mkdtempSync(join(tmpdir(), 'spillway-chromium-'));
    const stderr: string[] = [];
    browser = spawn(chromium!, [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage', '--disable-breakpad', '--disable-crash-reporter',
      `--user-data-dir=${profile}`, `${s.url}/browser/`,
    ], { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
    browser.stderr!.on('data', (d: Buffer) => { if (stderr.length < 200) stderr.push(d.toString()); });
    const exited = new Promise<string>((r) => browser!.once('exit', (code) => r(`chromium exited (${code}) before the page reported:\n${stderr.join('').slice(-2000)}`)));
    const timer = new Promise<string>((r) => setTimeout(() => r(`no report from the page in 20 s; chromium said:\n${stderr.join('').slice(-2000)}`), 20_000).unref());
    const r = await Promise.race([result, exited, timer]);
    if (typeof r === 'string') throw new Error(r);
    if (r.ok !== true) throw new Error(`the page failed: ${r.code ?? ''} ${r.error}`);

    expect(r.ids).toHaveLength(2);
    expect(r.messages[0]).toMatchObject({ id: r.ids[0], data: 'hello from chromium', attributes: { from: 'browser' }, deliveryAttempt: 1, publisherSeq: 1 });
    expect(r.messages[1]).toEqual({ id: r.ids[1], encoding: 'base64', bytes: [1, 2, 3, 255] });
    expect(r.states).toEqual(['idle', 'connected:epoch', 'closed']);
    expect(r.globals).toEqual({ Buffer: 'undefined', process: 'undefined', require: 'undefined' });
    // The server saw it all: published, delivered and acked (the report may overtake the last ack frame).
    const served = s;
    await until(() => served.broker.subscription('browser', 'default').stats().acked === 2, 'acks from the page', 5000);
    expect(s.broker.subscription('browser', 'default').stats()).toMatchObject({ delivered: 2, acked: 2, inFlight: 0 });
  }, 30_000);
});
