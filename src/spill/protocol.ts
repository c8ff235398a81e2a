/** Messages between the main thread and the spill worker. */
export type WorkerRequest =
  | { type: 'attach'; id: number; queueId: number; sab: SharedArrayBuffer }
  | { type: 'detach'; id: number; queueId: number }
  /** Write `count` records starting at ring position `fromPos` to `path` at `offset`. */
  | { type: 'spill'; id: number; queueId: number; fromPos: number; count: number; path: string; offset: number }
  | { type: 'unlink'; id: number; path: string }
  /** Fault injection for tests: fail the next `writes` spills with EIO. */
  | { type: 'fail'; id: number; writes: number }
  /** Fault injection for tests: the worker dies. */
  | { type: 'crash'; id: number };

export interface WorkerReply {
  id: number;
  ok: boolean;
  bytes: number;
  error?: string;
  code?: string;
}

/** A request before it is numbered. */
export type WorkerCommand = WorkerRequest extends infer R ? (R extends unknown ? Omit<R, 'id'> : never) : never;
