//! What a close means for the client: reconnect, reconnect with a new token,
//! or stop for good. Pure decisions from close codes and HTTP statuses.

/** Close codes of the Roomcast protocol (v1 and 1.1). */
export const CloseCode = {
  normal: 1000,
  abnormal: 1006,
  policy: 1008,
  tooBig: 1009,
  drain: 1012,
  tokenExpired: 4001,
  disconnected: 4003,
  slowConsumer: 4008,
} as const;

export type CloseDecision =
  /** Reconnect after a backoff. */
  | 'reconnect'
  /** Reconnect promptly (jittered): the gateway is draining, another one is ready. */
  | 'reconnect-drain'
  /** Fetch a new token, then reconnect. */
  | 'reconnect-new-token'
  /** Do not reconnect. */
  | 'final';

/** A close after a welcome (or a fallback session's `close` frame). */
export function decideClose(code: number, hasTokenCallback: boolean): CloseDecision {
  switch (code) {
    case CloseCode.drain:
      return 'reconnect-drain';
    case CloseCode.tokenExpired:
      // A fixed token would be refused again at the upgrade (401): stop instead of looping.
      return hasTokenCallback ? 'reconnect-new-token' : 'final';
    case CloseCode.disconnected: // the server API removed this user
    case CloseCode.policy: // the client broke a rule; retrying repeats it
      return 'final';
    default:
      return 'reconnect';
  }
}

export type UpgradeFailure =
  /** The token was refused: with a callback, ask it for a new one once, else stop. */
  | 'unauthorized'
  /** The gateway refused us (origin not allowed): stop. */
  | 'forbidden'
  /** The gateway is there but busy (draining, connection limit): back off, same transport. */
  | 'busy'
  /** The gateway answers HTTP but the WebSocket did not get through (a proxy): next transport. */
  | 'fallback'
  /** Nothing answered: back off. */
  | 'unreachable';

/**
 * A transport that failed before its welcome. Browsers hide the status of a
 * refused WebSocket upgrade (it reads as 1006), so the WebSocket transport
 * probes the same URL with a plain GET: the gateway checks the token and the
 * origin before the upgrade headers, so the status tells why.
 * `status` is null when nothing answered.
 */
export function decideUpgradeFailure(status: number | null): UpgradeFailure {
  if (status === null) return 'unreachable';
  if (status === 401) return 'unauthorized';
  if (status === 403) return 'forbidden';
  if (status === 503 || status === 429) return 'busy';
  if (status >= 500) return 'unreachable';
  return 'fallback';
}
