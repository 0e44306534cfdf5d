//! @roomcast/client: the public API.

export { RoomcastClient } from './client.js';
export type { ClientEvents, ClientOptions, HistoryMessage, RoomMessage, TokenSource, Welcome } from './client.js';
export { RoomcastError } from './requests.js';
export type { JoinOptions, JoinOutcome } from './rooms.js';
export type { ConnectionState } from './state.js';
export type { BackoffOptions } from './backoff.js';
export type { Codec, Transport, TransportClose, TransportContext, TransportFactory, TransportHandlers, TransportName } from './transport/types.js';
// Pure pieces, exported for tests and for applications that want the same decisions.
export { backoffDelay, nextRetry, attemptAfterConnection, DEFAULT_BACKOFF } from './backoff.js';
export { decideClose, decideUpgradeFailure, CloseCode } from './close.js';
export { transition } from './state.js';
export { PendingRequests } from './requests.js';
export { RoomBook } from './rooms.js';
export { tokenExpiry, refreshDelay } from './token.js';
