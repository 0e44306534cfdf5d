//! The long-polling transport: `POST /poll` opens a fallback session and
//! answers its `welcome`; the frames that follow are answered by
//! `GET /poll/{session}` (see `registry.rs`, which also serves polls
//! forwarded from other gateways) and client frames come in with
//! `POST /session/{session}`. A session not polled for 60 s ends.

use std::sync::Arc;

use bytes::Bytes;

use super::fallback;
use super::registry::{Answer, Kind};
use crate::auth::Identity;
use crate::state::Shared;

/// Opens a long-polling session for `identity`: 200 with its `welcome`.
pub async fn open(shared: Arc<Shared>, identity: Identity) -> Answer {
    let handle = fallback::open(shared, identity, Kind::Poll).await;
    // `welcome` is always the first frame, and it is there already.
    let welcome = handle.mailbox().take(Some(1)).frames.pop();
    (200, welcome.unwrap_or_else(|| Bytes::from_static(b"{}")))
}
