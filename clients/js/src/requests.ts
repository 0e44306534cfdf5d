//! Requests matched to answers by `id`: each pending request is a promise that
//! settles with the `ok`, an `error`, a timeout, or the loss of its connection.

/** An `error` frame answering a request, a timeout, or a lost connection. */
export class RoomcastError extends Error {
  /** A protocol error code (`forbidden`, `no_history`, …), or `timeout`, `disconnected`, `closed`, `queue_full`. */
  readonly code: string;
  constructor(code: string, message: string) {
    super(`${code}: ${message}`);
    this.name = 'RoomcastError';
    this.code = code;
  }
}

export type Ok = { type: 'ok'; id: number } & Record<string, unknown>;

interface Pending {
  resolve: (ok: Ok) => void;
  reject: (e: RoomcastError) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** Ids are integers from 1, unique for the client's lifetime (across reconnects). */
export class PendingRequests {
  private next = 1;
  private readonly pending = new Map<number, Pending>();

  get size(): number {
    return this.pending.size;
  }

  /** A new id and the promise of its answer, rejected with `timeout` after `timeoutMs`. */
  open(timeoutMs: number): { id: number; answer: Promise<Ok> } {
    const id = this.next++;
    const answer = new Promise<Ok>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new RoomcastError('timeout', `no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
    });
    return { id, answer };
  }

  /** Settles the request an `ok` or `error` frame answers; false when none waits for it. */
  settle(frame: { type: string; id?: unknown; code?: unknown; message?: unknown }): boolean {
    if (typeof frame.id !== 'number') return false;
    const p = this.pending.get(frame.id);
    if (!p) return false;
    this.pending.delete(frame.id);
    clearTimeout(p.timer);
    if (frame.type === 'ok') p.resolve(frame as Ok);
    else p.reject(new RoomcastError(String(frame.code ?? 'error'), String(frame.message ?? '')));
    return true;
  }

  /** Rejects one request (it could not be sent). */
  fail(id: number, error: RoomcastError): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    p.reject(error);
  }

  /** Rejects every pending request: their connection is gone, answers will never come. */
  failAll(error: RoomcastError): void {
    for (const id of Array.from(this.pending.keys())) this.fail(id, error);
  }
}
