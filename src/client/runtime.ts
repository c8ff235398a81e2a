/**
 * The few things Node and browsers spell differently: the next-turn scheduler, timers that do
 * not hold a Node process open, base64, random ids. No Node imports: globals only.
 */

type Timer = ReturnType<typeof setTimeout>;

const g = globalThis as unknown as {
  setImmediate?: (fn: () => void) => unknown;
  MessageChannel?: new () => { port1: { onmessage: (() => void) | null }; port2: { postMessage(v: unknown): void } };
  Buffer?: {
    from(data: Uint8Array | ArrayBuffer | string, offsetOrEncoding?: number | string, length?: number): Uint8Array & { toString(enc?: string): string };
  };
  btoa?: (s: string) => string;
  atob?: (s: string) => string;
  crypto?: { getRandomValues<T extends ArrayBufferView>(a: T): T };
};

/** Runs `fn` on the next turn of the event loop (after I/O), not in this microtask run. */
export const nextTurn: (fn: () => void) => void = (() => {
  if (typeof g.setImmediate === 'function') {
    const si = g.setImmediate;
    return (fn: () => void) => { si(fn); };
  }
  if (typeof g.MessageChannel === 'function') {
    // setTimeout(0) is clamped to 4 ms once nested in browsers; a message port is not.
    const ch = new g.MessageChannel();
    const q: (() => void)[] = [];
    ch.port1.onmessage = () => {
      const run = q.splice(0);
      for (const f of run) f();
    };
    return (fn: () => void) => {
      q.push(fn);
      if (q.length === 1) ch.port2.postMessage(null);
    };
  }
  return (fn: () => void) => { setTimeout(fn, 0); };
})();

/** A timer that does not keep a Node process alive by itself (sockets and pending calls do). */
export function backgroundTimer(fn: () => void, ms: number): Timer {
  const t = setTimeout(fn, ms);
  (t as { unref?: () => void }).unref?.();
  return t;
}

export function backgroundInterval(fn: () => void, ms: number): Timer {
  const t = setInterval(fn, ms);
  (t as { unref?: () => void }).unref?.();
  return t;
}

export function toBase64(bytes: Uint8Array): string {
  if (g.Buffer !== undefined) return g.Buffer.from(bytes.buffer as ArrayBuffer, bytes.byteOffset, bytes.byteLength).toString('base64');
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, Array.from(bytes.subarray(i, i + 0x8000)));
  return g.btoa!(s);
}

export function fromBase64(text: string): Uint8Array {
  if (g.Buffer !== undefined) {
    const b = g.Buffer.from(text, 'base64');
    return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  }
  const s = g.atob!(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

const encoder = new TextEncoder();
export const utf8Bytes = (s: string): Uint8Array => encoder.encode(s);

/** `prefix` and 64 random bits in base36 (14 characters): short, since it travels in every message. */
export function randomId(prefix: string): string {
  const a = new Uint32Array(2);
  if (g.crypto !== undefined) g.crypto.getRandomValues(a);
  else for (let i = 0; i < a.length; i++) a[i] = Math.floor(Math.random() * 0x100000000);
  return prefix + a[0]!.toString(36).padStart(7, '0') + a[1]!.toString(36).padStart(7, '0');
}

type Listener<T> = (payload: T) => void;

/**
 * A small typed emitter (browsers have no EventEmitter). Listeners run synchronously in the
 * order added; one that throws does not stop the others. An `error` event without a listener
 * is dropped, not thrown: the failing call has its own rejected promise.
 */
export class Emitter<Events extends { [K in keyof Events]: unknown }> {
  readonly #listeners = new Map<keyof Events, Listener<never>[]>();

  on<K extends keyof Events>(event: K, fn: Listener<Events[K]>): this {
    const list = this.#listeners.get(event);
    if (list === undefined) this.#listeners.set(event, [fn as Listener<never>]);
    else list.push(fn as Listener<never>);
    return this;
  }

  off<K extends keyof Events>(event: K, fn: Listener<Events[K]>): this {
    const list = this.#listeners.get(event);
    const i = list?.indexOf(fn as Listener<never>) ?? -1;
    if (i >= 0) list!.splice(i, 1);
    return this;
  }

  once<K extends keyof Events>(event: K, fn: Listener<Events[K]>): this {
    const wrap: Listener<Events[K]> = (p) => {
      this.off(event, wrap);
      fn(p);
    };
    return this.on(event, wrap);
  }

  protected emit<K extends keyof Events>(event: K, payload: Events[K]): void {
    const list = this.#listeners.get(event);
    if (list === undefined || list.length === 0) return;
    for (const fn of list.slice()) {
      try {
        (fn as Listener<Events[K]>)(payload);
      } catch (err) {
        // A listener's bug must not break the connection's state machine.
        setTimeout(() => { throw err; }, 0);
      }
    }
  }

  listenerCount(event: keyof Events): number { return this.#listeners.get(event)?.length ?? 0; }
}
