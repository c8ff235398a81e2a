/**
 * The one thing the client needs from a WebSocket implementation. Browsers (and Node ≥ 22)
 * have a global WebSocket; in Node 20 the `ws` package is injected by the Node entry
 * (`./ws-transport`), so nothing here imports Node modules.
 */

export interface TransportHandlers {
  onOpen(): void;
  /** One text frame. */
  onMessage(data: string): void;
  /** Called once, also after a failed open. */
  onClose(code: number, reason: string): void;
  onError(err: Error): void;
}

export interface TransportSocket {
  /** Bytes queued and not yet sent. */
  readonly bufferedAmount: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  /** Drops the connection at once, without the closing handshake. */
  terminate(): void;
}

export interface TransportOptions {
  /** Extra headers for the upgrade (not possible in browsers: the token then goes as `?token=`). */
  headers?: Record<string, string>;
}

/** Opens a socket to `url` and reports through `handlers`. */
export type Transport = (url: string, opts: TransportOptions, handlers: TransportHandlers) => TransportSocket;

/** Whether a transport can send headers on the upgrade (else auth goes in the query). */
export interface TransportInfo {
  transport: Transport;
  headers: boolean;
}

interface StandardWebSocket {
  readonly bufferedAmount: number;
  readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

type StandardWebSocketCtor = new (url: string) => StandardWebSocket;

/** The standard (WHATWG) WebSocket of the global scope, or undefined when there is none. */
export function globalWebSocketTransport(): TransportInfo | undefined {
  const Ctor = (globalThis as { WebSocket?: StandardWebSocketCtor }).WebSocket;
  if (typeof Ctor !== 'function') return undefined;
  const transport: Transport = (url, _opts, h) => {
    const ws = new Ctor(url);
    let closed = false;
    ws.onopen = () => h.onOpen();
    ws.onmessage = (ev) => {
      if (typeof ev.data === 'string') h.onMessage(ev.data);
    };
    ws.onerror = () => h.onError(new Error('websocket error'));
    ws.onclose = (ev) => {
      if (closed) return;
      closed = true;
      h.onClose(ev.code, ev.reason);
    };
    return {
      get bufferedAmount() { return ws.bufferedAmount; },
      send: (data) => ws.send(data),
      close: (code, reason) => ws.close(code, reason),
      terminate: () => {
        // Browsers cannot drop a socket without the handshake: close it and report at once.
        try { ws.close(); } catch { /* already closing */ }
        if (!closed) {
          closed = true;
          h.onClose(1006, 'terminated');
        }
      },
    };
  };
  return { transport, headers: false };
}
