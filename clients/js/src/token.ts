//! Tokens: when a JWT expires (read from its `exp`, without verifying: the
//! gateway verifies) and when to refresh it. Pure functions.

/** The `exp` claim of a JWT in seconds since the epoch, or null (not a JWT, no `exp`). */
export function tokenExpiry(token: string): number | null {
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  try {
    const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const padded = b64 + '='.repeat((4 - (b64.length % 4)) % 4);
    const claims = JSON.parse(decodeBase64(padded)) as { exp?: unknown };
    return typeof claims.exp === 'number' && Number.isFinite(claims.exp) ? claims.exp : null;
  } catch {
    return null;
  }
}

function decodeBase64(b64: string): string {
  const binary = atob(b64);
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}

/**
 * Milliseconds from `nowMs` until the token should be refreshed: a margin
 * before `exp` of a third of the remaining life, between 1 s and `marginMs`,
 * so short tokens leave time to fetch the next one on a slow network or a
 * busy device, and long ones are not refreshed too early.
 * Null when there is nothing to schedule (no expiry).
 */
export function refreshDelay(expSeconds: number | null, nowMs: number, marginMs: number): number | null {
  if (expSeconds === null) return null;
  const left = expSeconds * 1000 - nowMs;
  const margin = Math.max(1_000, Math.min(marginMs, left / 3));
  return Math.max(0, Math.floor(left - margin));
}
