//! The cluster bus: how a gateway exchanges room and user traffic with the
//! other gateways of its cluster.
//!
//! The rest of the gateway talks to [`Bus`] and nothing else knows which bus is
//! in use. Delivery to this gateway's own connections is always done locally
//! by the hub (see `hub.rs`); the bus only carries traffic to *other*
//! gateways, so every client publish costs at most one bus publish.
//!
//! Today there is the in-process bus: a gateway running alone, whose every
//! subscription is trivially live and which has no peers to reach.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;

use crate::room::RoomName;

/// Whether `token` can stand as one NATS subject token: non-empty, and only
/// letters, digits, `_` and `-` (no `.`, `*`, `>` or whitespace).
pub fn is_subject_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// What traffic is addressed to: a room, or every connection of a user.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Members of a room.
    Room(RoomName),
    /// Connections of a user id.
    User(Arc<str>),
}

/// A bus operation that failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BusError {
    /// The bus is unreachable; nothing was delivered to other gateways.
    #[error("the cluster bus is unavailable")]
    Unavailable,
}

/// The cluster bus in use.
#[derive(Debug, Clone)]
pub enum Bus {
    /// In-process: this gateway alone, no NATS.
    Local,
}

impl Bus {
    /// Whether the bus is reachable (it drives `/readyz` and `unavailable`).
    pub fn is_up(&self) -> bool {
        match self {
            Bus::Local => true,
        }
    }

    /// Starts receiving `topic`'s traffic from other gateways. Returns once
    /// the subscription is live in the whole cluster, which is what lets a
    /// join's `ok` promise delivery of anything published afterwards.
    pub async fn subscribe(&self, _topic: &Topic) -> Result<(), BusError> {
        match self {
            Bus::Local => Ok(()),
        }
    }

    /// Stops receiving `topic`'s traffic.
    pub async fn unsubscribe(&self, _topic: &Topic) {
        match self {
            Bus::Local => {}
        }
    }

    /// Sends an encoded frame for `topic` to the other gateways.
    pub async fn publish(&self, _topic: &Topic, _frame: &Utf8Bytes) -> Result<(), BusError> {
        match self {
            Bus::Local => Ok(()),
        }
    }

    /// Distinct user ids joined to `room` on the other gateways.
    pub async fn remote_members(&self, _room: &RoomName) -> Result<Vec<String>, BusError> {
        match self {
            Bus::Local => Ok(Vec::new()),
        }
    }
}
