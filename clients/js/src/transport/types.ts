//! What every transport (WebSocket, SSE, long polling) offers the client: send
//! client frames, deliver server frames, report one close. The client knows
//! nothing else about how frames travel.

/** An optional MessagePack codec (e.g. `@msgpack/msgpack`'s `encode`/`decode`). */
export interface Codec {
  encode(value: unknown): Uint8Array;
  decode(bytes: Uint8Array): unknown;
}

export type TransportName = 'websocket' | 'sse' | 'poll';

/** How a transport ended. */
export interface TransportClose {
  /** WebSocket close code, or the `code` of a fallback session's `close` frame; 1006 when the link was lost. */
  code: number;
  reason: string;
  /** True when it ended before delivering any frame (it could not connect). */
  beforeOpen: boolean;
  /** The HTTP status that refused the connection, when known; null when nothing answered. */
  status?: number | null;
}

export interface TransportHandlers {
  onFrame(frame: Record<string, unknown>): void;
  /** Called at most once, never after `close()`. */
  onClose(close: TransportClose): void;
}

export interface TransportContext {
  /** The gateway's base URL, http(s)://host:port (a ws(s):// URL is accepted too). */
  url: string;
  /** The current token (it may be replaced by a `refresh` during the session). */
  token(): string | null;
  codec?: Codec;
  WebSocket?: WebSocketConstructor;
  fetch: typeof fetch;
  /** Bounds every HTTP request that is not a long poll or a stream. */
  requestTimeoutMs: number;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocket;

export interface Transport {
  readonly name: TransportName;
  /** The encoding in use once connected: `json`, or `msgpack` when the gateway accepted it. */
  readonly encoding: 'json' | 'msgpack';
  send(frame: Record<string, unknown>): void;
  /** Ends the transport without reporting a close. */
  close(code?: number, reason?: string): void;
}

export type TransportFactory = (context: TransportContext, handlers: TransportHandlers) => Transport;
