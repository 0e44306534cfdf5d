//! What the HTTP fallbacks share: URLs with the token, and posting client
//! frames to `POST /session/{session}` in batches (at most 100 per request).

import type { TransportContext, TransportHandlers } from './types.js';

/** `base` + `path` on the http(s) scheme, with the token as a query parameter. */
export function httpUrl(context: Pick<TransportContext, 'url' | 'token'>, path: string): string {
  const url = new URL(path, toHttp(context.url));
  const token = context.token();
  if (token) url.searchParams.set('token', token);
  return url.toString();
}

export function toHttp(url: string): string {
  return url.replace(/^ws(s?):/i, 'http$1:');
}

export function toWs(url: string): string {
  return url.replace(/^http(s?):/i, 'ws$1:');
}

/** The contract's cap on frames in one `POST /session/{session}`. */
const BATCH_MAX = 100;

/**
 * Queues client frames and posts them in order, one request at a time, so
 * frames reach the session in the order they were sent.
 */
export class SessionPoster {
  private queue: Record<string, unknown>[] = [];
  private busy = false;
  private session: string | null = null;
  private closed = false;

  constructor(
    private readonly context: TransportContext,
    /** Called when the session is gone (404) or the gateway cannot be reached. */
    private readonly onLost: (status: number | null) => void,
  ) {}

  start(session: string): void {
    this.session = session;
    void this.flush();
  }

  send(frame: Record<string, unknown>): void {
    this.queue.push(frame);
    void this.flush();
  }

  stop(): void {
    this.closed = true;
    this.queue = [];
  }

  private async flush(): Promise<void> {
    if (this.busy || this.closed || this.session === null || this.queue.length === 0) return;
    this.busy = true;
    try {
      while (!this.closed && this.queue.length > 0) {
        const batch = this.queue.splice(0, BATCH_MAX);
        let status: number | null;
        try {
          const res = await this.context.fetch(httpUrl(this.context, `/session/${encodeURIComponent(this.session)}`), {
            method: 'POST',
            headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify(batch.length === 1 ? batch[0] : batch),
            signal: AbortSignal.timeout(this.context.requestTimeoutMs),
          });
          status = res.status;
          await res.body?.cancel();
        } catch {
          status = null;
        }
        if (status !== 202 && status !== 200) {
          if (!this.closed) this.onLost(status);
          return;
        }
      }
    } finally {
      this.busy = false;
    }
  }
}

/**
 * The lifecycle both HTTP fallbacks share: one abort for all their requests, a
 * close reported once (never after `close()`), and the poster for client frames.
 */
export class FallbackLink {
  readonly abort = new AbortController();
  readonly poster: SessionPoster;
  done = false;
  opened = false;

  constructor(
    context: TransportContext,
    private readonly handlers: TransportHandlers,
    private readonly what: string,
  ) {
    this.poster = new SessionPoster(context, (status) => this.end(1006, `session request failed (${status ?? 'unreachable'})`));
  }

  /** The welcome arrived: client frames may flow. */
  open(session: string): void {
    this.opened = true;
    this.poster.start(session);
  }

  /** Ends the session and reports why (with the refusing status when it never opened). */
  end(code: number, reason: string, status?: number | null): void {
    if (this.done) return;
    this.close();
    this.handlers.onClose(this.opened ? { code, reason, beforeOpen: false } : { code, reason, beforeOpen: true, status });
  }

  send(frame: Record<string, unknown>): void {
    if (!this.opened || this.done) throw new Error(`${this.what} session is not open`);
    this.poster.send(frame);
  }

  close(): void {
    this.done = true;
    this.poster.stop();
    this.abort.abort();
  }
}
