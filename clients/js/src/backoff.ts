//! Reconnect delays: exponential backoff with full jitter and a ceiling, reset
//! once a connection has stayed up long enough. Pure functions, no timers.

export interface BackoffOptions {
  /** First delay ceiling in ms (attempt 0). */
  baseMs: number;
  /** Largest delay in ms, however many attempts failed. */
  maxMs: number;
  /** A connection that stayed up this long resets the attempt count. */
  stableAfterMs: number;
  /** After a drain (1012) another gateway is ready now: wait at most this long, jittered. */
  drainJitterMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = {
  baseMs: 500,
  maxMs: 15_000,
  stableAfterMs: 10_000,
  drainJitterMs: 1_000,
};

/**
 * Full jitter (uniform in [0, min(max, base * 2^attempt))): spreads a crowd of
 * clients that lost the same gateway, instead of making them retry in waves.
 */
export function backoffDelay(attempt: number, options: BackoffOptions, random: () => number): number {
  const exp = Math.min(attempt, 30); // 2^30 * base is past any ceiling; avoids Infinity
  const ceiling = Math.min(options.maxMs, options.baseMs * 2 ** exp);
  return Math.floor(random() * ceiling);
}

/** The delay before the next attempt after a close, and the attempt count to keep. */
export function nextRetry(
  attempt: number,
  drained: boolean,
  options: BackoffOptions,
  random: () => number,
): { delayMs: number; attempt: number } {
  if (drained) return { delayMs: Math.floor(random() * options.drainJitterMs), attempt: 0 };
  return { delayMs: backoffDelay(attempt, options, random), attempt: attempt + 1 };
}

/** The attempt count once a connection ends: reset if it lived long enough. */
export function attemptAfterConnection(attempt: number, upForMs: number, options: BackoffOptions): number {
  return upForMs >= options.stableAfterMs ? 0 : attempt;
}
