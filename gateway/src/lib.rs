//! Roomcast gateway: WebSocket rooms, direct messages and presence for
//! browsers, apps and backends, one gateway alone or many relayed over a bus.
//!
//! Where things are (see docs/architecture.md for how a frame flows):
//! - `server`: the listeners, routes and upgrade checks; `server/api.rs` is
//!   the HTTP API, `server/admission.rs` bounds the HTTP phase. `state`:
//!   what they all share.
//! - `transport`: how frames travel. `transport/ws.rs` parses and encodes
//!   WebSocket frames; `transport/deflate.rs` is permessage-deflate;
//!   `transport/websocket.rs` is the socket loop.
//! - `session`: what a client session is and does, whatever its transport:
//!   identity, token expiry, rooms, rate limit, executing operations.
//! - `protocol`: client frames decoded to typed operations, server frames
//!   encoded, contract error codes and checks (pure). `msgpack`: the
//!   `roomcast.v1.msgpack` encoding, converted to and from those JSON frames.
//! - `delivery`: the one path of a publish or a direct message
//!   (`delivery::deliver`), frames encoded once per wire format
//!   (`delivery/frame.rs`), room fan-out (`delivery/hub.rs`) and each
//!   connection's bounded way out (`delivery/outbound.rs`).
//! - `bus`: the hop to other gateways (NATS in `bus/nats.rs`, peers in
//!   `bus/peers.rs`); it hands what it receives to an `Inbox` (the hub).
//! - `auth`, `room`, `ratelimit`, `drain`, `metrics`, `trace`, `config`.
//! - `presence`: `joined`/`left` events per user across the cluster (a pure
//!   index in `presence/index.rs`, the bus exchange at its edges).
//! - `namespace`, `history`: room namespaces and room history (protocol v1.1:
//!   stores, the recovery merge and the `history` answer; `delivery/gate.rs`
//!   orders each member's history messages).

pub mod auth;
pub mod bus;
pub mod config;
pub mod delivery;
pub mod drain;
pub mod history;
pub mod metrics;
pub mod msgpack;
pub mod namespace;
pub mod presence;
pub mod protocol;
pub mod ratelimit;
pub mod room;
pub mod server;
pub mod session;
pub mod state;
pub mod trace;
pub mod transport;

pub use config::Config;
pub use server::{Gateway, StartError};
