//! The Roomcast client: one logical connection to a cluster that survives
//! transport losses. It owns the connection's lifecycle (states, reconnect
//! with backoff, transport fallback, token refresh, keep-alive pings), the
//! rooms to re-join with `since`, and requests matched to answers.

import { attemptAfterConnection, backoffDelay, DEFAULT_BACKOFF, nextRetry, type BackoffOptions } from './backoff.js';
import { decideClose, decideUpgradeFailure } from './close.js';
import { Emitter } from './emitter.js';
import { PendingRequests, RoomcastError, type Ok } from './requests.js';
import { RoomBook, type JoinOptions, type JoinOutcome } from './rooms.js';
import { transition, type ConnectionEvent, type ConnectionState } from './state.js';
import { refreshDelay, tokenExpiry } from './token.js';
import { pollTransport } from './transport/poll.js';
import { sseTransport } from './transport/sse.js';
import type {
  Codec,
  Transport,
  TransportClose,
  TransportFactory,
  TransportName,
  WebSocketConstructor,
} from './transport/types.js';
import { websocketTransport } from './transport/websocket.js';

/** A token, or a callback giving one (null or '' for none: anonymous). */
export type TokenSource = string | (() => string | null | Promise<string | null>);

export interface ClientOptions {
  /** The gateway (or load balancer) base URL, `https://host` or `wss://host`; a function is asked again at every reconnect. */
  url: string | (() => string);
  /** A token, or a callback that fetches one: asked before connecting, on 4001, and before expiry. */
  token?: TokenSource;
  /** Transports to try, in order (default all three: WebSocket, then SSE, then long polling). */
  transports?: TransportName[];
  /** Opt-in MessagePack over WebSocket (e.g. `import { encode, decode } from '@msgpack/msgpack'`). */
  codec?: Codec;
  /** How long a request waits for its answer (default 10 s). */
  requestTimeoutMs?: number;
  backoff?: Partial<BackoffOptions>;
  /** Refresh a token this long before it expires at most (default 30 s; short tokens earlier in proportion). */
  refreshMarginMs?: number;
  /** Ping when nothing arrived for this long; no answer closes the link (default: the welcome's `heartbeat_ms`; 0: off). */
  pingIntervalMs?: number;
  /** Requests queued while disconnected, at most (default 1000). */
  maxQueued?: number;
  /** A WebSocket implementation when there is no global one (Node 20 without --experimental-websocket: the `ws` package). */
  WebSocket?: WebSocketConstructor;
  fetch?: typeof fetch;
  /** Replaces transports (tests). */
  transportFactories?: Partial<Record<TransportName, TransportFactory>>;
  /** Random source in [0, 1) for the jitter (tests). */
  random?: () => number;
}

export interface Welcome {
  session: string;
  user: string;
  node: string;
  heartbeatMs: number;
  transport: TransportName;
  encoding: 'json' | 'msgpack';
}

export interface RoomMessage {
  room: string;
  from: string | null;
  data: unknown;
  offset?: number;
  epoch?: string;
}

export interface HistoryMessage {
  offset: number;
  from: string | null;
  data: unknown;
}

export interface ClientEvents {
  state: { state: ConnectionState; previous: ConnectionState };
  connected: Welcome;
  /** The link ended; `reconnectInMs` is null when the client stops (see `closed`). */
  disconnected: { code: number; reason: string; transport: TransportName; reconnectInMs: number | null };
  /** The client stopped for good: a final close (4003, 1008, refused token) or `close()`. */
  closed: { code: number; reason: string };
  message: RoomMessage;
  direct: { from: string | null; data: unknown };
  joined: { room: string; user: string };
  left: { room: string; user: string };
  unsubscribed: { room: string };
  /** A room was joined again after a reconnect. `recovered: false`: messages were missed, reload the room's state. */
  rejoined: { room: string } & JoinOutcome;
  token: { exp: number | null };
  error: { error: RoomcastError; room?: string };
}

const ALL_TRANSPORTS: TransportName[] = ['websocket', 'sse', 'poll'];
/**
 * Join answers worth retrying on the same link: the gateway (or its bus) is busy or
 * not ready yet, e.g. a gateway just restarted whose bus connection is still coming up.
 */
const TRANSIENT = new Set(['unavailable', 'rate_limited', 'internal', 'timeout']);
const FACTORIES: Record<TransportName, TransportFactory> = {
  websocket: websocketTransport,
  sse: sseTransport,
  poll: pollTransport,
};

interface Link {
  transport: Transport;
  welcomed: boolean;
  welcomedAt: number;
  lastFrameAt: number;
  /** Requests sent on this link: lost with it. */
  inFlight: Set<number>;
}

interface Queued {
  id: number;
  frame: Record<string, unknown>;
}

interface Waiter {
  resolve: (outcome: JoinOutcome) => void;
  reject: (e: RoomcastError) => void;
}

export class RoomcastClient extends Emitter<ClientEvents> {
  private readonly options: Required<
    Pick<ClientOptions, 'transports' | 'requestTimeoutMs' | 'refreshMarginMs' | 'maxQueued' | 'random'>
  > & { backoff: BackoffOptions };
  private _state: ConnectionState = 'disconnected';
  private link: Link | null = null;
  private welcome: Welcome | null = null;
  private readonly pending = new PendingRequests();
  private readonly book = new RoomBook();
  private readonly waiters = new Map<string, Waiter[]>();
  private readonly everJoined = new Set<string>();
  /** Join answers to apply before their promise settles (replayed messages come first, in order). */
  private readonly joinHooks = new Map<number, { room: string; sentSince: boolean }>();
  /** Joins refused for a transient reason, retried with backoff while the link lasts. */
  private readonly joinRetries = new Map<string, { attempt: number; timer?: ReturnType<typeof setTimeout> }>();
  private outbox: Queued[] = [];
  private attempt = 0;
  private transportIndex = 0;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private pingTimer: ReturnType<typeof setInterval> | undefined;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private token: string | null = null;
  private tokenStale = false;
  /** A refused token was replaced once in this round; a second refusal is final. */
  private retriedToken = false;
  private generation = 0;

  constructor(private readonly config: ClientOptions) {
    super();
    this.options = {
      transports: config.transports?.length ? config.transports : ALL_TRANSPORTS,
      requestTimeoutMs: config.requestTimeoutMs ?? 10_000,
      refreshMarginMs: config.refreshMarginMs ?? 30_000,
      maxQueued: config.maxQueued ?? 1000,
      random: config.random ?? Math.random,
      backoff: { ...DEFAULT_BACKOFF, ...config.backoff },
    };
    if (typeof config.token === 'string') this.token = config.token;
  }

  get state(): ConnectionState {
    return this._state;
  }

  /** The current link's welcome (session, user, node, transport), or null while not connected. */
  get session(): Welcome | null {
    return this._state === 'connected' ? this.welcome : null;
  }

  /** Rooms the client is in or joining (re-joined after every reconnect). */
  get rooms(): string[] {
    return this.book.names();
  }

  /** Starts connecting (and reconnecting until `close()` or a final close). */
  connect(): void {
    if (this._state === 'connecting' || this._state === 'connected') return;
    if (this._state === 'closed') {
      this.attempt = 0;
      this.retriedToken = false;
    }
    clearTimeout(this.retryTimer);
    this.transportIndex = 0;
    void this.open();
  }

  /** While waiting to reconnect: try now, with the backoff reset (e.g. the browser went back online). */
  reconnectNow(): void {
    if (this._state !== 'disconnected') return;
    clearTimeout(this.retryTimer);
    this.attempt = 0;
    this.transportIndex = 0;
    void this.open();
  }

  /** Closes the link and stops reconnecting. Pending and queued requests fail with `closed`. */
  close(): void {
    this.stop(1000, 'closed by the client');
  }

  /** Joins `room`; resolves with the join's outcome once the gateway confirmed it. The room is re-joined after every reconnect. */
  join(room: string, options: JoinOptions = {}): Promise<JoinOutcome> {
    this.book.want(room, options);
    const done = new Promise<JoinOutcome>((resolve, reject) => {
      const list = this.waiters.get(room) ?? [];
      list.push({ resolve, reject });
      this.waiters.set(room, list);
    });
    if (this.isLive()) this.sendJoin(room);
    return done;
  }

  /** Leaves `room` (and stops re-joining it). */
  async leave(room: string): Promise<void> {
    this.forget(room);
    this.rejectWaiters(room, new RoomcastError('left', `left ${room} before the join completed`));
    if (this.isLive()) await this.request({ type: 'leave', room });
  }

  /** Publishes `data` to `room`; resolves with the `ok` (carrying `offset`/`epoch` in history rooms). */
  async publish(room: string, data: unknown, options: { echo?: boolean } = {}): Promise<{ offset?: number; epoch?: string }> {
    const frame: Record<string, unknown> = { type: 'publish', room, data };
    if (options.echo === false) frame.echo = false;
    const ok = await this.request(frame);
    return pick(ok);
  }

  /** Sends `data` to every connection of user `to`. */
  async send(to: string, data: unknown): Promise<void> {
    await this.request({ type: 'send', to, data });
  }

  /** The distinct users in `room` across the cluster. */
  async presence(room: string): Promise<string[]> {
    const ok = await this.request({ type: 'presence', room });
    return Array.isArray(ok.members) ? ok.members.map(String) : [];
  }

  /** The last `limit` kept messages of `room`, or the first `limit` after `since`. */
  async history(
    room: string,
    options: { limit?: number; since?: { offset: number; epoch: string } } = {},
  ): Promise<{ messages: HistoryMessage[]; offset: number; epoch: string }> {
    const frame: Record<string, unknown> = { type: 'history', room };
    if (options.limit !== undefined) frame.limit = options.limit;
    if (options.since) frame.since = options.since;
    const ok = await this.request(frame);
    return {
      messages: Array.isArray(ok.messages) ? (ok.messages as HistoryMessage[]) : [],
      offset: Number(ok.offset),
      epoch: String(ok.epoch),
    };
  }

  /** Round trip to the gateway; resolves with the server time (ms since the epoch). */
  async ping(): Promise<number> {
    const ok = await this.request({ type: 'ping' });
    return Number(ok.ts);
  }

  /** Fetches a new token from the callback and hands it to the session (`refresh`) without reconnecting. */
  async refreshToken(): Promise<{ exp: number | null }> {
    const token = await this.fetchToken();
    if (token === null) throw new RoomcastError('token', 'the token callback gave no token to refresh with');
    const ok = await this.request({ type: 'refresh', token });
    this.token = token;
    const exp = typeof ok.exp === 'number' ? ok.exp : null;
    this.scheduleRefresh(exp);
    this.emit('token', { exp });
    return { exp };
  }

  /**
   * Sends any client frame with a fresh `id` and resolves with its `ok`
   * (rejects with the `error`, `timeout` or `disconnected`). While not
   * connected the frame waits in a bounded queue for the next connection.
   */
  request(frame: Record<string, unknown>): Promise<Ok> {
    return this.issue(frame).answer;
  }

  private issue(frame: Record<string, unknown>): { id: number; answer: Promise<Ok> } {
    if (this._state === 'closed') return { id: -1, answer: Promise.reject(new RoomcastError('closed', 'the client is closed')) };
    const { id, answer } = this.pending.open(this.options.requestTimeoutMs);
    const framed = { ...frame, id };
    if (this.isLive()) this.transmit(framed, id);
    else if (this.outbox.length >= this.options.maxQueued) {
      this.pending.fail(id, new RoomcastError('queue_full', `${this.options.maxQueued} requests already wait for a connection`));
    } else this.outbox.push({ id, frame: framed });
    return { id, answer };
  }

  // ---- connection lifecycle ---------------------------------------------

  private isLive(): boolean {
    return this._state === 'connected' && this.link !== null && this.link.welcomed;
  }

  private move(event: ConnectionEvent): void {
    const next = transition(this._state, event);
    if (next === null || next === this._state) return;
    const previous = this._state;
    this._state = next;
    this.emit('state', { state: next, previous });
  }

  private async open(): Promise<void> {
    this.move('connect');
    const generation = ++this.generation;
    const name = this.options.transports[this.transportIndex];
    let token: string | null;
    try {
      token = await this.currentToken();
    } catch (e) {
      if (generation !== this.generation || this._state === 'closed') return;
      this.emit('error', { error: new RoomcastError('token', `token callback failed: ${String(e)}`) });
      return this.retry(name, 1006, 'token callback failed', false);
    }
    if (generation !== this.generation || this._state === 'closed') return;
    this.token = token;
    const url = typeof this.config.url === 'function' ? this.config.url() : this.config.url;
    const factory = this.config.transportFactories?.[name] ?? FACTORIES[name];
    const link: Link = { transport: undefined as unknown as Transport, welcomed: false, welcomedAt: 0, lastFrameAt: 0, inFlight: new Set() };
    try {
      link.transport = factory(
        {
          url,
          token: () => this.token,
          codec: this.config.codec,
          WebSocket: this.config.WebSocket,
          fetch: this.config.fetch ?? globalThis.fetch.bind(globalThis),
          requestTimeoutMs: this.options.requestTimeoutMs,
        },
        {
          onFrame: (frame) => {
            if (this.link === link) this.onFrame(link, frame);
          },
          onClose: (close) => {
            if (this.link === link) this.onClose(link, close);
          },
        },
      );
    } catch (e) {
      // This environment lacks the transport (no WebSocket): the next one may work.
      this.emit('error', { error: new RoomcastError('transport', `${name}: ${String(e)}`) });
      return this.onUpgradeFailure(name, { code: 1006, reason: String(e), beforeOpen: true, status: 400 });
    }
    this.link = link;
  }

  private async currentToken(): Promise<string | null> {
    if (typeof this.config.token !== 'function') return this.token;
    const exp = this.token === null ? null : tokenExpiry(this.token);
    const expiring = exp !== null && exp * 1000 - Date.now() < this.options.refreshMarginMs / 10 + 1_000;
    if (this.token !== null && !this.tokenStale && !expiring) return this.token;
    const token = await this.fetchToken();
    this.tokenStale = false;
    return token;
  }

  private async fetchToken(): Promise<string | null> {
    const source = this.config.token;
    if (typeof source !== 'function') throw new RoomcastError('token', 'no token callback to refresh from');
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new RoomcastError('timeout', 'token callback did not answer')), this.options.requestTimeoutMs);
    });
    try {
      const token = await Promise.race([Promise.resolve(source()), timeout]);
      // '' or null: connect anonymously (a gateway without JWT verification).
      if (token === null || token === '') return null;
      if (typeof token !== 'string') throw new RoomcastError('token', 'token callback gave no string');
      return token;
    } finally {
      clearTimeout(timer);
    }
  }

  private onClose(link: Link, close: TransportClose): void {
    this.detach(link, close.code);
    const name = link.transport.name;
    if (!link.welcomed && close.beforeOpen) return this.onUpgradeFailure(name, close);
    this.attempt = attemptAfterConnection(this.attempt, link.welcomed ? Date.now() - link.welcomedAt : 0, this.options.backoff);
    switch (decideClose(close.code, typeof this.config.token === 'function')) {
      case 'final':
        return this.stop(close.code, close.reason || 'closed by the gateway');
      case 'reconnect-new-token':
        this.tokenStale = true;
        return this.retry(name, close.code, close.reason, false);
      case 'reconnect-drain':
        return this.retry(name, close.code, close.reason, true);
      case 'reconnect':
        return this.retry(name, close.code, close.reason, false);
    }
  }

  private onUpgradeFailure(name: TransportName, close: TransportClose): void {
    const why = close.status ? `HTTP ${close.status}` : close.reason || 'unreachable';
    switch (decideUpgradeFailure(close.status ?? null)) {
      case 'unauthorized':
        if (typeof this.config.token === 'function' && !this.retriedToken) {
          this.retriedToken = true;
          this.tokenStale = true;
          return this.retry(name, close.code, 'token refused (401), asking for a new one', false);
        }
        return this.stop(4001, 'token refused (HTTP 401)');
      case 'forbidden':
        return this.stop(1008, 'refused by the gateway (HTTP 403: origin not allowed?)');
      case 'fallback':
        if (this.transportIndex + 1 < this.options.transports.length) {
          this.transportIndex += 1;
          this.emit('disconnected', { code: close.code, reason: `${name} failed (${why}), trying ${this.options.transports[this.transportIndex]}`, transport: name, reconnectInMs: 0 });
          this.move('lost');
          void this.open();
          return;
        }
        return this.retry(name, close.code, why, false);
      case 'busy':
      case 'unreachable':
        return this.retry(name, close.code, why, false);
    }
  }

  /** Schedules the next attempt (from the first transport again). */
  private retry(name: TransportName, code: number, reason: string, drained: boolean): void {
    const { delayMs, attempt } = nextRetry(this.attempt, drained, this.options.backoff, this.options.random);
    this.attempt = attempt;
    this.transportIndex = 0;
    this.move('lost');
    this.emit('disconnected', { code, reason, transport: name, reconnectInMs: delayMs });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => void this.open(), delayMs);
  }

  /** Forgets a link: its in-flight requests fail, rooms stay wanted. */
  private detach(link: Link, code: number): void {
    if (this.link !== link) return;
    this.link = null;
    clearInterval(this.pingTimer);
    clearTimeout(this.refreshTimer);
    this.clearJoinRetry(); // the next welcome re-joins every room
    for (const id of link.inFlight) this.pending.fail(id, new RoomcastError('disconnected', `connection closed (${code}) before the answer`));
    link.inFlight.clear();
  }

  private stop(code: number, reason: string): void {
    if (this._state === 'closed') return;
    clearTimeout(this.retryTimer);
    this.generation++;
    const link = this.link;
    if (link) {
      this.detach(link, code);
      link.transport.close(1000, 'client closed');
    }
    const error = new RoomcastError('closed', reason);
    this.pending.failAll(error);
    this.outbox = [];
    for (const room of Array.from(this.waiters.keys())) this.rejectWaiters(room, error);
    this.move('final');
    this.emit('closed', { code, reason });
  }

  // ---- frames ------------------------------------------------------------

  private transmit(frame: Record<string, unknown>, id?: number): void {
    const link = this.link;
    if (!link) return;
    try {
      link.transport.send(frame);
      if (id !== undefined) link.inFlight.add(id);
    } catch (e) {
      if (id !== undefined) this.pending.fail(id, new RoomcastError('disconnected', String(e)));
    }
  }

  private onFrame(link: Link, frame: Record<string, unknown>): void {
    link.lastFrameAt = Date.now();
    switch (frame.type) {
      case 'welcome':
        return this.onWelcome(link, frame);
      case 'message': {
        const message = frame as unknown as RoomMessage;
        if (typeof message.room === 'string' && this.book.accept(message)) {
          const out: RoomMessage = { room: message.room, from: message.from ?? null, data: message.data };
          if (typeof message.offset === 'number') out.offset = message.offset;
          if (typeof message.epoch === 'string') out.epoch = message.epoch;
          this.emit('message', out);
        }
        return;
      }
      case 'direct':
        return this.emit('direct', { from: (frame.from as string | null) ?? null, data: frame.data });
      case 'joined':
      case 'left':
        if (typeof frame.room === 'string' && this.book.has(frame.room)) {
          this.emit(frame.type, { room: frame.room, user: String(frame.user) });
        }
        return;
      case 'unsubscribed':
        if (typeof frame.room === 'string') {
          this.forget(frame.room);
          this.rejectWaiters(frame.room, new RoomcastError('unsubscribed', `removed from ${frame.room} by the server`));
          this.emit('unsubscribed', { room: frame.room });
        }
        return;
      case 'ok':
      case 'error':
        return this.onAnswer(link, frame);
      default:
        return; // additions to the protocol this client does not know
    }
  }

  private onWelcome(link: Link, frame: Record<string, unknown>): void {
    link.welcomed = true;
    this.retriedToken = false;
    link.welcomedAt = Date.now();
    this.welcome = {
      session: String(frame.session),
      user: String(frame.user),
      node: String(frame.node),
      heartbeatMs: Number(frame.heartbeat_ms) || 25_000,
      transport: link.transport.name,
      encoding: link.transport.encoding,
    };
    this.move('welcome');
    this.emit('connected', this.welcome);
    for (const room of this.book.names()) this.sendJoin(room);
    const queued = this.outbox;
    this.outbox = [];
    for (const q of queued) this.transmit(q.frame, q.id);
    this.startPings(link);
    if (typeof this.config.token === 'function' && this.token) this.scheduleRefresh(tokenExpiry(this.token));
  }

  private sendJoin(room: string): void {
    const frame = this.book.joinFrame(room);
    const sentSince = 'since' in frame;
    const { id, answer } = this.issue(frame);
    this.joinHooks.set(id, { room, sentSince });
    answer.then(
      () => undefined,
      (error: RoomcastError) => {
        this.joinHooks.delete(id);
        if (error.code === 'disconnected' || error.code === 'closed') return; // re-sent on the next welcome
        this.emit('error', { error, room });
        if (TRANSIENT.has(error.code)) return this.retryJoin(room);
        // The gateway refused the room (forbidden, invalid_room, too_many_rooms): stop wanting it.
        this.forget(room);
        this.rejectWaiters(room, error);
      },
    );
  }

  private onAnswer(link: Link, frame: Record<string, unknown>): void {
    const id = frame.id;
    if (typeof id === 'number') {
      link.inFlight.delete(id);
      const hook = this.joinHooks.get(id);
      if (hook && frame.type === 'ok') {
        this.joinHooks.delete(id);
        if (this.book.has(hook.room)) {
          this.clearJoinRetry(hook.room);
          const outcome = this.book.joined(hook.room, frame, hook.sentSince);
          const rejoin = this.everJoined.has(hook.room);
          this.everJoined.add(hook.room);
          const list = this.waiters.get(hook.room) ?? [];
          this.waiters.delete(hook.room);
          for (const w of list) w.resolve(outcome);
          if (rejoin) this.emit('rejoined', { room: hook.room, ...outcome });
        }
      }
    }
    if (!this.pending.settle(frame as { type: string; id?: unknown }) && frame.type === 'error') {
      // An error without a request waiting (a frame without id, or answered after its timeout).
      this.emit('error', { error: new RoomcastError(String(frame.code ?? 'error'), String(frame.message ?? '')) });
    }
  }

  /** The join stays wanted (its promise pending): try again after a backoff on this link. */
  private retryJoin(room: string): void {
    const retry = this.joinRetries.get(room) ?? { attempt: 0 };
    clearTimeout(retry.timer);
    const link = this.link;
    retry.timer = setTimeout(() => {
      if (this.link === link && this.isLive() && this.book.has(room)) this.sendJoin(room);
    }, backoffDelay(retry.attempt++, this.options.backoff, this.options.random));
    this.joinRetries.set(room, retry);
  }

  private clearJoinRetry(room?: string): void {
    for (const [name, retry] of this.joinRetries) {
      if (room !== undefined && name !== room) continue;
      clearTimeout(retry.timer);
      this.joinRetries.delete(name);
    }
  }

  /** Stops wanting a room (left, refused, or removed by the server). */
  private forget(room: string): void {
    this.book.drop(room);
    this.everJoined.delete(room);
    this.clearJoinRetry(room);
  }

  private rejectWaiters(room: string, error: RoomcastError): void {
    const list = this.waiters.get(room);
    if (!list) return;
    this.waiters.delete(room);
    for (const w of list) w.reject(error);
  }

  // ---- keep-alive and token refresh --------------------------------------

  /** Browsers cannot see WebSocket pings: a `ping` frame after a quiet interval tells a dead link from a quiet one. */
  private startPings(link: Link): void {
    const interval = this.config.pingIntervalMs ?? this.welcome?.heartbeatMs ?? 0;
    if (!interval) return;
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      if (this.link !== link || Date.now() - link.lastFrameAt < interval) return;
      this.ping().catch((e: RoomcastError) => {
        if (e.code !== 'timeout' || this.link !== link) return;
        link.transport.close(4000, 'no answer to ping');
        this.onClose(link, { code: 1006, reason: 'no answer to ping', beforeOpen: false });
      });
    }, interval);
  }

  private scheduleRefresh(exp: number | null): void {
    clearTimeout(this.refreshTimer);
    const delay = refreshDelay(exp, Date.now(), this.options.refreshMarginMs);
    if (delay === null) return;
    const link = this.link;
    this.refreshTimer = setTimeout(() => {
      if (this.link !== link) return;
      this.refreshToken().catch((error: RoomcastError) => {
        // A gateway without `refresh` (bad_request) or a refused token: the 4001 close will
        // bring a reconnect with a token from the callback instead.
        this.emit('error', { error });
      });
    }, delay);
  }
}

function pick(ok: Ok): { offset?: number; epoch?: string } {
  const out: { offset?: number; epoch?: string } = {};
  if (typeof ok.offset === 'number') out.offset = ok.offset;
  if (typeof ok.epoch === 'string') out.epoch = ok.epoch;
  return out;
}
