#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { Broker, DEFAULT_MEMORY_BYTES, type BrokerOptions } from './broker';
import { buildServer, DEFAULT_BODY_LIMIT } from './http';

const USAGE = `Usage: spillway serve [options]

Options:
  --port N               port to listen on (env SPILLWAY_PORT, default 8080; 0 = any free port)
  --host HOST            address to bind (default 127.0.0.1)
  --memory SIZE          total ring memory of all queues (default 256MiB)
  --data-dir DIR         queue definitions and spill files (default ./spillway-data)
  --max-disk SIZE        disk budget for spill files
  --auth-file FILE       JSON {"tokens": [{"token", "name", "publish", "subscribe", "admin"}]}
  --allowed-origins LIST comma-separated Origins allowed to open WebSockets and call REST (CORS)
  --body-limit SIZE      largest request body and WebSocket frame (default 16MiB)
  --max-connections N    refuse connections beyond this many
  --log-level LEVEL      fatal, error, warn, info, debug (default warn; logs go to stderr)

SIZE is a number of bytes, or a number with a unit: KiB, MiB, GiB, TiB (or K, M, G, T), KB, MB, GB, TB.
`;

/** How long shutdown may take before the process exits anyway. */
const SHUTDOWN_DEADLINE_MS = 9_000;

const UNITS: Record<string, number> = {
  '': 1, b: 1,
  k: 1024, kib: 1024, kb: 1000,
  m: 1024 ** 2, mib: 1024 ** 2, mb: 1000 ** 2,
  g: 1024 ** 3, gib: 1024 ** 3, gb: 1000 ** 3,
  t: 1024 ** 4, tib: 1024 ** 4, tb: 1000 ** 4,
};

/** `256MiB`, `1GiB`, `1.5G`, `1048576` → bytes. */
export function parseSize(text: string, what: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = m === null ? undefined : UNITS[m[2]!.toLowerCase()];
  if (m === null || unit === undefined) throw new UsageError(`${what}: ${JSON.stringify(text)} is not a size (e.g. 256MiB, 1GiB, 1048576)`);
  const n = Math.floor(Number(m[1]) * unit);
  if (!Number.isSafeInteger(n) || n <= 0) throw new UsageError(`${what}: ${text} is out of range`);
  return n;
}

function parsePort(text: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text.trim()) || !Number.isInteger(n) || n < 0 || n > 65535) throw new UsageError(`--port: ${text} is not a port number`);
  return n;
}

class UsageError extends Error {
  override name = 'UsageError';
}

async function serve(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      port: { type: 'string' },
      host: { type: 'string', default: '127.0.0.1' },
      memory: { type: 'string' },
      'data-dir': { type: 'string', default: './spillway-data' },
      'max-disk': { type: 'string' },
      'auth-file': { type: 'string' },
      'allowed-origins': { type: 'string' },
      'body-limit': { type: 'string' },
      'max-connections': { type: 'string' },
      'log-level': { type: 'string', default: 'warn' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: false,
    strict: true,
  });
  if (values.help === true) {
    process.stdout.write(USAGE);
    return;
  }
  const port = parsePort(values.port ?? process.env.SPILLWAY_PORT ?? '8080');
  const host = values.host!;
  const memoryBytes = values.memory === undefined ? DEFAULT_MEMORY_BYTES : parseSize(values.memory, '--memory');
  const bodyLimit = values['body-limit'] === undefined ? DEFAULT_BODY_LIMIT : parseSize(values['body-limit'], '--body-limit');
  const maxConnections = values['max-connections'] === undefined ? undefined : parsePort(values['max-connections']);
  const allowedOrigins = values['allowed-origins']?.split(',').map((s) => s.trim()).filter((s) => s.length > 0);

  const brokerOptions: BrokerOptions = { memoryBytes, dataDir: values['data-dir'] };
  if (values['max-disk'] !== undefined) brokerOptions.maxDiskBytes = parseSize(values['max-disk'], '--max-disk');
  const broker = new Broker(brokerOptions);

  const app = buildServer({
    broker,
    authFile: values['auth-file'],
    allowedOrigins,
    bodyLimit,
    maxConnections,
    logger: { level: values['log-level']!, stream: process.stderr },
  });

  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) {
      process.stderr.write(`spillway: ${signal} again, exiting now\n`);
      process.exit(1);
    }
    stopping = true;
    process.stderr.write(`spillway: ${signal}, shutting down\n`);
    const deadline = setTimeout(() => {
      process.stderr.write('spillway: shutdown took too long, exiting\n');
      process.exit(1);
    }, SHUTDOWN_DEADLINE_MS);
    deadline.unref();
    // Publishes answer 503 from here on; then the listener stops, sockets close with 1001, long polls answer.
    const brokerClosed = broker.close();
    app.close().then(() => brokerClosed).then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`spillway: error while closing: ${String(err)}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));

  await app.listen({ port, host });
  const addr = app.server.address();
  const realPort = typeof addr === 'object' && addr !== null ? addr.port : port;
  const shownHost = host.includes(':') ? `[${host}]` : host;
  process.stdout.write(`spillway listening on http://${shownHost}:${realPort}\n`);
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'serve':
        await serve(rest);
        return 0;
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(USAGE);
        return command === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command ${JSON.stringify(command)}`);
    }
  } catch (err) {
    const usage = err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') === true;
    process.stderr.write(`spillway: ${(err as Error).message}\n`);
    if (usage) process.stderr.write(USAGE);
    return usage ? 2 : 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => {
    if (code !== 0) process.exit(code);
  }, (err: unknown) => {
    process.stderr.write(`spillway: ${String(err)}\n`);
    process.exit(1);
  });
}
