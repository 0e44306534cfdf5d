//! WebSocket transport: `GET /ws` with subprotocol `roomcast.v1` (or
//! `roomcast.v1.msgpack` when a codec is given), the token in the `token`
//! query parameter (browsers cannot set headers).

import { httpUrl, toWs } from './http.js';
import type { Transport, TransportContext, TransportHandlers, WebSocketConstructor } from './types.js';

export const SUBPROTOCOL_JSON = 'roomcast.v1';
export const SUBPROTOCOL_MSGPACK = 'roomcast.v1.msgpack';

export function websocketTransport(context: TransportContext, handlers: TransportHandlers): Transport {
  const Ctor: WebSocketConstructor | undefined =
    context.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (!Ctor) {
    throw new Error('no WebSocket implementation: pass options.WebSocket (Node 20: run with --experimental-websocket, or use the ws package)');
  }
  const protocols = context.codec ? [SUBPROTOCOL_MSGPACK, SUBPROTOCOL_JSON] : [SUBPROTOCOL_JSON];
  const ws = new Ctor(toWs(httpUrl(context, '/ws')), protocols);
  ws.binaryType = 'arraybuffer';
  let opened = false;
  let done = false;

  const finish = async (code: number, reason: string) => {
    if (done) return;
    done = true;
    if (opened) return handlers.onClose({ code, reason, beforeOpen: false });
    handlers.onClose({ code, reason, beforeOpen: true, status: await probe(context) });
  };

  ws.onopen = () => {
    opened = true;
  };
  ws.onmessage = (event: MessageEvent) => {
    if (done) return;
    let frame: unknown;
    try {
      if (typeof event.data === 'string') frame = JSON.parse(event.data);
      else if (context.codec && event.data instanceof ArrayBuffer) frame = context.codec.decode(new Uint8Array(event.data));
    } catch {
      return; // not a frame: the protocol says ignore what cannot be read
    }
    if (frame && typeof frame === 'object' && typeof (frame as { type?: unknown }).type === 'string') {
      handlers.onFrame(frame as Record<string, unknown>);
    }
  };
  ws.onclose = (event: CloseEvent) => void finish(event.code, event.reason);
  ws.onerror = () => {
    // Browsers follow with a close event; some runtimes (Node 20's WebSocket) do not
    // after a refused upgrade, so an error before the open ends the attempt here.
    if (!opened) void finish(1006, 'connection failed');
  };

  return {
    name: 'websocket',
    get encoding() {
      return ws.protocol === SUBPROTOCOL_MSGPACK && context.codec ? 'msgpack' : 'json';
    },
    send(frame) {
      if (ws.readyState !== 1) throw new Error('WebSocket is not open');
      if (ws.protocol === SUBPROTOCOL_MSGPACK && context.codec) ws.send(context.codec.encode(frame));
      else ws.send(JSON.stringify(frame));
    },
    close(code = 1000, reason = '') {
      done = true;
      try {
        ws.close(code, reason);
      } catch {
        ws.close();
      }
    },
  };
}

/**
 * Why an upgrade failed: a plain GET on the same URL, which the gateway
 * answers with the status it would have refused the upgrade with (401 token,
 * 403 origin, 503 draining) or a 4xx about the missing upgrade headers when it
 * would have accepted. Null when nothing answered.
 */
async function probe(context: TransportContext): Promise<number | null> {
  try {
    const res = await context.fetch(httpUrl(context, '/ws'), { signal: AbortSignal.timeout(context.requestTimeoutMs) });
    await res.body?.cancel();
    return res.status;
  } catch {
    return null;
  }
}
