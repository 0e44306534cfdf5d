//! The rooms a client wants to be in, what it last received in each (offset and
//! epoch of history rooms), the `join` frame that re-joins them after a
//! reconnect, and which messages are duplicates. Pure bookkeeping, no I/O.

export interface JoinOptions {
  /** Ask for `joined`/`left` events about the room's other users. */
  presence?: boolean;
  /**
   * Resume after this point of the room's history (e.g. the `offset`/`epoch`
   * of a `history()` answer): the join replays every message after it, once.
   */
  since?: { offset: number; epoch: string };
}

/** What the client knows of one room it wants to be in. */
export interface RoomEntry {
  presence: boolean;
  /** True once a join `ok` carried an offset: the room's namespace keeps history. */
  history: boolean;
  epoch?: string;
  /** The highest offset handed to the application (or the room's offset when joined). */
  offset?: number;
}

/** A `message` frame's fields the book looks at. */
export interface OffsetFields {
  room: string;
  offset?: unknown;
  epoch?: unknown;
}

/** The outcome of a join `ok`: `recovered` is set only for a join that asked to resume (`since`). */
export interface JoinOutcome {
  recovered?: boolean;
  offset?: number;
  epoch?: string;
}

export class RoomBook {
  private readonly rooms = new Map<string, RoomEntry>();

  has(room: string): boolean {
    return this.rooms.has(room);
  }

  names(): string[] {
    return Array.from(this.rooms.keys());
  }

  get(room: string): Readonly<RoomEntry> | undefined {
    return this.rooms.get(room);
  }

  /** Records that the application wants `room` (kept across reconnects until `drop`). */
  want(room: string, options: JoinOptions): void {
    let entry = this.rooms.get(room);
    if (entry) entry.presence = options.presence ?? entry.presence;
    else this.rooms.set(room, (entry = { presence: options.presence ?? false, history: false }));
    if (options.since) {
      entry.history = true;
      entry.offset = options.since.offset;
      entry.epoch = options.since.epoch;
    }
  }

  drop(room: string): boolean {
    return this.rooms.delete(room);
  }

  /**
   * The `join` frame for `room` (without `id`): with `since` when the client
   * already received from this room's history, so a re-join replays exactly
   * what it missed.
   */
  joinFrame(room: string): Record<string, unknown> {
    const entry = this.rooms.get(room);
    const frame: Record<string, unknown> = { type: 'join', room };
    if (!entry) return frame;
    if (entry.presence) frame.presence = true;
    if (entry.history && entry.epoch !== undefined && entry.offset !== undefined) {
      frame.since = { offset: entry.offset, epoch: entry.epoch };
    }
    return frame;
  }

  /** Applies a join `ok`; `sentSince` says whether the join carried `since`. */
  joined(room: string, ok: Record<string, unknown>, sentSince: boolean): JoinOutcome {
    const entry = this.rooms.get(room);
    if (!entry || typeof ok.offset !== 'number' || typeof ok.epoch !== 'string') {
      return sentSince ? { recovered: ok.recovered === true } : {};
    }
    entry.history = true;
    const sameEpoch = entry.epoch === ok.epoch;
    // Same epoch: what was received (replayed or live) stays the mark. Another epoch: start
    // from the room's current offset; messages of the old one do not compare.
    entry.offset = sameEpoch && entry.offset !== undefined ? Math.max(entry.offset, ok.offset) : ok.offset;
    entry.epoch = ok.epoch;
    const outcome: JoinOutcome = { offset: ok.offset, epoch: ok.epoch };
    if (sentSince) outcome.recovered = ok.recovered === true;
    return outcome;
  }

  /**
   * Whether a `message` goes to the application: false for a room not wanted
   * (it was left) and for a history message at or below the last offset
   * handed over in the same epoch (a replay overlapping the live stream).
   */
  accept(message: OffsetFields): boolean {
    const entry = this.rooms.get(message.room);
    if (!entry) return false;
    if (typeof message.offset !== 'number' || typeof message.epoch !== 'string') return true;
    if (entry.epoch === message.epoch && entry.offset !== undefined && message.offset <= entry.offset) return false;
    entry.history = true;
    entry.epoch = message.epoch;
    entry.offset = message.offset;
    return true;
  }
}
