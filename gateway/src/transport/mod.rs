//! Transports: how a client's frames travel between its socket and its
//! session. A transport moves encoded frames in and out and keeps its own
//! liveness and close handshake; what a session is and does lives in
//! `session.rs`, the same for every transport.
//!
//! - `ws.rs`: WebSocket framing (pure): the handshake, server frames, the
//!   incremental client-frame reader.
//! - `deflate.rs`: permessage-deflate (pure): the offer chosen in the
//!   upgrade, server messages compressed, client messages inflated.
//! - `websocket.rs`: the WebSocket socket loop.
//!
//! Server-Sent Events and long polling plug in here: each opens a
//! `Session` over its own `Wire` and `Format`.

pub mod deflate;
pub mod websocket;
pub mod ws;
