//! The connection's state machine: which state follows which event. Pure; the
//! client emits a `state` event for every change it returns.

export type ConnectionState = 'connecting' | 'connected' | 'disconnected' | 'closed';

export type ConnectionEvent =
  /** `connect()` was called, or a reconnect timer fired. */
  | 'connect'
  /** The gateway's `welcome` arrived. */
  | 'welcome'
  /** The transport ended and a reconnect is scheduled. */
  | 'lost'
  /** The transport ended for good (final close code, refused token). */
  | 'final'
  /** `close()` was called. */
  | 'close';

/** The next state, or null when the event changes nothing in this state. */
export function transition(state: ConnectionState, event: ConnectionEvent): ConnectionState | null {
  switch (event) {
    case 'connect':
      return state === 'disconnected' || state === 'closed' ? 'connecting' : null;
    case 'welcome':
      return state === 'connecting' ? 'connected' : null;
    case 'lost':
      return state === 'connecting' || state === 'connected' ? 'disconnected' : null;
    case 'final':
    case 'close':
      return state === 'closed' ? null : 'closed';
  }
}
