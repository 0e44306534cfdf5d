//! Server-Sent Events transport: `GET /sse` streams server frames (read with
//! fetch, so it works in Node and sees HTTP statuses); client frames go to
//! `POST /session/{session}`.

import { FallbackLink, httpUrl } from './http.js';
import type { Transport, TransportContext, TransportHandlers } from './types.js';

export function sseTransport(context: TransportContext, handlers: TransportHandlers): Transport {
  const link = new FallbackLink(context, handlers, 'SSE');
  const deliver = (frame: Record<string, unknown>) => {
    if (link.done) return;
    if (frame.type === 'close') return link.end(Number(frame.code) || 1006, 'session closed');
    if (!link.opened && frame.type === 'welcome') link.open(String(frame.session));
    handlers.onFrame(frame);
  };

  void (async () => {
    let res: Response;
    try {
      res = await context.fetch(httpUrl(context, '/sse'), {
        headers: { Accept: 'text/event-stream' },
        signal: link.abort.signal,
      });
    } catch {
      return link.end(1006, 'unreachable', null);
    }
    if (res.status !== 200 || !res.body) {
      await res.body?.cancel().catch(() => undefined);
      return link.end(1006, `HTTP ${res.status}`, res.status);
    }
    try {
      await readEvents(res.body, deliver);
    } catch {
      /* aborted or the connection broke */
    }
    link.end(1006, 'stream ended');
  })();

  return {
    name: 'sse',
    encoding: 'json',
    send: (frame) => link.send(frame),
    close: () => link.close(),
  };
}

/** Parses an event stream: each event's `data:` lines joined are one JSON frame; comments are skipped. */
export async function readEvents(body: ReadableStream<Uint8Array>, deliver: (frame: Record<string, unknown>) => void) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let data: string[] = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let nl: number;
    while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + (buffer.startsWith('\r\n', nl) ? 2 : 1));
      if (line === '') {
        if (data.length > 0) {
          const text = data.join('\n');
          data = [];
          try {
            const frame = JSON.parse(text) as unknown;
            if (frame && typeof frame === 'object') deliver(frame as Record<string, unknown>);
          } catch {
            /* not a frame: ignored like any unreadable frame */
          }
        }
      } else if (line.startsWith('data:')) {
        data.push(line.slice(line.startsWith('data: ') ? 6 : 5));
      }
      // Comments (":…") keep the stream alive; other fields (event:, id:) are not used.
    }
  }
}
