//! Roomcast gateway: WebSocket rooms, direct messages and presence for
//! browsers, apps and backends, one gateway alone or many relayed over a bus.
//!
//! How a frame flows (see docs/architecture.md): `server` accepts the upgrade,
//! `session` reads and decodes it with `protocol`, executes it against the
//! `hub` (room membership, local fan-out) which relays through the `bus`;
//! recipients' `outbound` writes the shared encoded frame (`ws`) to their
//! sockets, queuing it only when a socket is full.

pub mod admission;
pub mod api;
pub mod auth;
pub mod bus;
pub mod config;
pub mod drain;
pub mod hub;
pub mod metrics;
pub mod outbound;
pub mod protocol;
pub mod ratelimit;
pub mod room;
pub mod server;
pub mod session;
pub mod trace;
pub mod ws;

pub use config::Config;
pub use server::{Gateway, StartError};
