import type { Broker } from '../broker';
import type { Auth } from './auth';

/** What the route files share: the broker, auth, and the server's closing state. */
export class HttpContext {
  readonly broker: Broker;
  readonly auth: Auth | undefined;
  #closing = false;
  #resolveClosed!: () => void;
  /** Resolves when the server begins to close: long polls answer at once. */
  readonly closed: Promise<void> = new Promise((resolve) => { this.#resolveClosed = resolve; });

  constructor(broker: Broker, auth: Auth | undefined) {
    this.broker = broker;
    this.auth = auth;
  }

  get closing(): boolean { return this.#closing; }

  beginClose(): void {
    if (this.#closing) return;
    this.#closing = true;
    this.#resolveClosed();
  }
}
