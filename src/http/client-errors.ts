import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';

/** How long a refused connection may take to read its answer before it is destroyed. */
const CLOSE_GRACE_MS = 1000;

/**
 * Requests that Node's HTTP parser refuses before fastify sees them (a malformed request line
 * or header, headers over the limit, a request not received in time) get API.md's envelope
 * like every other error, and the connection is closed, as Node does: the parser cannot go on.
 */
export function onClientError(err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  if (socket.writable) {
    // HTTP's own statuses for these two, which clients and proxies act on; the envelope as always.
    const [status, message] = err.code === 'HPE_HEADER_OVERFLOW' ? [431, 'request headers are over the server\'s limit']
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? [408, 'the request was not received in time']
        : [400, `malformed HTTP request (${err.code ?? 'parse error'})`];
    const body = JSON.stringify({ error: { code: 'INVALID_ARGUMENT', message } });
    socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  }
  setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref();
}
