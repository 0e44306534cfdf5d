//! Long-polling transport: `POST /poll` opens the session (its answer is the
//! welcome), `GET /poll/{session}` returns the frames queued since the last
//! poll (waiting up to 25 s); client frames go to `POST /session/{session}`.

import { FallbackLink, httpUrl } from './http.js';
import type { Transport, TransportContext, TransportHandlers } from './types.js';

/** The gateway holds a poll up to 25 s; past this the link is taken as lost. */
const POLL_TIMEOUT_MS = 40_000;

export function pollTransport(context: TransportContext, handlers: TransportHandlers): Transport {
  const link = new FallbackLink(context, handlers, 'polling');
  // Returns false once the session ended (a `close` frame).
  const deliver = (frame: unknown): boolean => {
    if (link.done || !frame || typeof frame !== 'object') return !link.done;
    const f = frame as Record<string, unknown>;
    if (f.type === 'close') {
      link.end(Number(f.code) || 1006, 'session closed');
      return false;
    }
    handlers.onFrame(f);
    return true;
  };
  const request = async (method: string, path: string): Promise<{ status: number | null; body?: unknown }> => {
    try {
      const res = await context.fetch(httpUrl(context, path), {
        method,
        signal: AbortSignal.any([link.abort.signal, AbortSignal.timeout(POLL_TIMEOUT_MS)]),
      });
      if (res.status !== 200) {
        await res.body?.cancel().catch(() => undefined);
        return { status: res.status };
      }
      return { status: 200, body: await res.json() };
    } catch {
      return { status: null };
    }
  };

  void (async () => {
    const opening = await request('POST', '/poll');
    if (link.done) return;
    const welcome = opening.body as Record<string, unknown> | undefined;
    if (opening.status !== 200 || !welcome || welcome.type !== 'welcome') {
      return link.end(1006, `HTTP ${opening.status ?? 'unreachable'}`, opening.status);
    }
    link.open(String(welcome.session));
    const path = `/poll/${encodeURIComponent(String(welcome.session))}`;
    if (!deliver(welcome)) return;
    while (!link.done) {
      const polled = await request('GET', path);
      if (link.done) return;
      if (polled.status !== 200 || !Array.isArray(polled.body)) {
        return link.end(1006, polled.status === 404 ? 'session ended' : `poll failed (${polled.status ?? 'unreachable'})`);
      }
      for (const frame of polled.body) if (!deliver(frame)) return;
    }
  })();

  return {
    name: 'poll',
    encoding: 'json',
    send: (frame) => link.send(frame),
    close: () => link.close(),
  };
}
