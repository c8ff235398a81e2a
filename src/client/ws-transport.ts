import WebSocket from 'ws';
import type { Transport, TransportInfo } from './transport';

/** The `ws` package as a transport (Node only: the Node entry installs it as the default). */
export const wsTransport: Transport = (url, opts, h) => {
  const ws = new WebSocket(url, { headers: opts.headers, perMessageDeflate: false });
  let closed = false;
  ws.on('open', () => h.onOpen());
  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    h.onMessage(Buffer.isBuffer(data) ? data.toString('utf8') : Array.isArray(data) ? Buffer.concat(data).toString('utf8') : Buffer.from(data).toString('utf8'));
  });
  ws.on('error', (err) => h.onError(err));
  ws.on('close', (code, reason) => {
    if (closed) return;
    closed = true;
    h.onClose(code, reason.toString());
  });
  return {
    get bufferedAmount() { return ws.bufferedAmount; },
    send: (data) => ws.send(data),
    close: (code, reason) => ws.close(code, reason),
    terminate: () => ws.terminate(),
  };
};

export const wsTransportInfo: TransportInfo = { transport: wsTransport, headers: true };
