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
//! - `sse.rs`, `poll.rs`: the HTTP fallbacks (Server-Sent Events, long
//!   polling). Both run a session through `fallback.rs` over a `mailbox.rs`
//!   wire; `registry.rs` finds their sessions by id and answers requests on
//!   them, `forward.rs` encodes those requests for the cluster bus when
//!   another gateway holds the session.

pub mod deflate;
pub mod fallback;
pub mod forward;
pub mod mailbox;
pub mod poll;
pub mod registry;
pub mod sse;
pub mod websocket;
pub mod ws;
