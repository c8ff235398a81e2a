import { connect } from 'node:net';
import { harness, type Harness } from './helpers';

let h: Harness;
let port = 0;

beforeEach(async () => {
  h = harness();
  port = Number(new URL(await h.listen()).port);
});
afterEach(() => h.close());

/** Sends raw bytes; resolves with everything the server wrote before it closed. */
function raw(bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => s.write(bytes));
    let got = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => { got += d; });
    s.on('close', () => resolve(got));
    s.on('error', reject);
  });
}

function envelope(response: string): { status: number; body: { error: { code: string; message: string } } } {
  const [head, body] = response.split('\r\n\r\n', 2);
  return { status: Number(head!.split(' ')[1]), body: JSON.parse(body!) };
}

test('http client errors - what the HTTP parser refuses is answered in the error envelope and the connection closes', async () => {
  const cases: [string, number, RegExp][] = [
    ['GARBAGE\r\n\r\n', 400, /malformed HTTP request/],
    ['GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n', 400, /malformed HTTP request/],
    ['POST /v1/queues/q/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n', 400, /malformed HTTP request/],
    [`GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(32 * 1024)}\r\n\r\n`, 431, /headers are over the server's limit/],
  ];
  for (const [req, status, message] of cases) {
    const res = envelope(await raw(req));
    expect([res.status, res.body.error.code]).toEqual([status, 'INVALID_ARGUMENT']);
    expect(res.body.error.message).toMatch(message);
  }
  // The server goes on.
  expect((await h.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
});
