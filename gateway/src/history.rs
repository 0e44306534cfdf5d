//! Room history (protocol v1.1, "History, offsets and recovery"): the store
//! abstraction every history room goes through, its two implementations and
//! the pure recovery decision.
//!
//! - [`HistoryStore`]: append a room's message (it is accepted only once
//!   stored) and get its offset and epoch; read the last L messages or those
//!   after an offset; the room's current position.
//! - [`memory::MemoryStore`]: in-process, for the in-process bus.
//! - [`jetstream::JetStreamStore`]: NATS JetStream, shared by the cluster.
//! - [`recovery`]: merges a replay with live messages exactly once, in order.
//! - [`kept`]: kept messages read back into history answers.
//!
//! Payloads are opaque bytes here: what is kept is the room message's bus
//! payload (JSON text, or MessagePack from a MessagePack client), so the
//! store never re-encodes what it keeps.

pub mod jetstream;
pub mod kept;
pub mod memory;
pub mod recovery;

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;

use crate::protocol::HistoryQuery;

/// Identifies one incarnation of a room's history. It changes only when the
/// history was lost (the store was recreated); offsets of different epochs do
/// not compare.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(Arc<str>);

impl Epoch {
    /// An epoch from its text.
    pub fn new(text: impl Into<Arc<str>>) -> Self {
        Self(text.into())
    }

    /// The epoch as the wire carries it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a room's history stands: its last offset (0 when it keeps no
/// message) in an epoch; also what an append answers for the new message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// Offset of the last kept message (of the appended one, for an append).
    pub offset: u64,
    /// The room's epoch.
    pub epoch: Epoch,
}

/// One kept message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Its offset (≥ 1), increasing in the order the room's messages were accepted.
    pub offset: u64,
    /// What was appended, byte for byte.
    pub payload: Bytes,
}

/// An answer to a read: kept messages, oldest first, and the room's position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The messages, in offset order.
    pub messages: Vec<Stored>,
    /// The room's position when it was read.
    pub position: Position,
    /// For [`HistoryStore::after`]: whether every message after the given
    /// offset is still kept (none was dropped by size or age, and the offset
    /// is not beyond the room's). Always true for [`HistoryStore::last`].
    pub complete: bool,
}

/// Why a history operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// The room's namespace keeps no history (contract code `no_history`).
    #[error("the room's namespace keeps no history")]
    NoHistory,
    /// The store is missing or unreachable: nothing was stored or read
    /// (contract code `unavailable`, HTTP 503).
    #[error("history store unavailable: {0}")]
    Unavailable(String),
}

/// A room history store. Implementations bound what they keep per room by
/// the namespace's `history_size` and `history_ttl_seconds`.
pub trait HistoryStore: Send + Sync {
    /// Stores one message of `room`; answers its offset and epoch once it is
    /// stored (then, and only then, the message is accepted).
    fn append(
        &self,
        room: &str,
        payload: Bytes,
    ) -> impl Future<Output = Result<Position, HistoryError>> + Send;

    /// The last `limit` kept messages of `room`, oldest first.
    fn last(
        &self,
        room: &str,
        limit: usize,
    ) -> impl Future<Output = Result<Page, HistoryError>> + Send;

    /// The first `limit` kept messages of `room` with an offset above `since`,
    /// and whether every message after `since` is still kept.
    fn after(
        &self,
        room: &str,
        since: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Page, HistoryError>> + Send;

    /// The room's current position.
    fn position(&self, room: &str) -> impl Future<Output = Result<Position, HistoryError>> + Send;
}

/// What a history query reads (the `history` frame, `GET /v1/history`):
/// with `since` the first `limit` kept messages after it; a `since` of
/// another epoch does not compare with this one's offsets, so it reads as
/// the start of history. Without it the last `limit` kept.
pub async fn read(store: &Store, query: &HistoryQuery) -> Result<Page, HistoryError> {
    let room = query.room.as_str();
    match &query.since {
        None => store.last(room, query.limit).await,
        Some(since) => {
            let page = store.after(room, since.offset, query.limit).await?;
            if page.position.epoch.as_str() == since.epoch {
                Ok(page)
            } else {
                store.after(room, 0, query.limit).await
            }
        }
    }
}

/// The fields of a JSON history answer (`GET /v1/history`): `messages`,
/// `offset`, `epoch` (see [`read`] and `kept.rs`).
pub async fn answer(store: &Store, query: &HistoryQuery) -> Result<String, HistoryError> {
    Ok(kept::fields(&read(store, query).await?))
}

/// The store a gateway runs with, chosen by its bus at start-up.
pub enum Store {
    /// In process (the in-process bus).
    Memory(memory::MemoryStore),
    /// NATS JetStream (the NATS bus); boxed, being much the larger.
    JetStream(Box<jetstream::JetStreamStore>),
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Store::Memory(_) => "Store::Memory",
            Store::JetStream(_) => "Store::JetStream",
        })
    }
}

impl HistoryStore for Store {
    async fn append(&self, room: &str, payload: Bytes) -> Result<Position, HistoryError> {
        match self {
            Store::Memory(s) => s.append(room, payload).await,
            Store::JetStream(s) => s.append(room, payload).await,
        }
    }

    async fn last(&self, room: &str, limit: usize) -> Result<Page, HistoryError> {
        match self {
            Store::Memory(s) => s.last(room, limit).await,
            Store::JetStream(s) => s.last(room, limit).await,
        }
    }

    async fn after(&self, room: &str, since: u64, limit: usize) -> Result<Page, HistoryError> {
        match self {
            Store::Memory(s) => s.after(room, since, limit).await,
            Store::JetStream(s) => s.after(room, since, limit).await,
        }
    }

    async fn position(&self, room: &str) -> Result<Position, HistoryError> {
        match self {
            Store::Memory(s) => s.position(room).await,
            Store::JetStream(s) => s.position(room).await,
        }
    }
}
