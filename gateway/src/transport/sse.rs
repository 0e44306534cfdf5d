//! The Server-Sent Events transport: `GET /sse` opens a fallback session
//! whose frames stream out as events (`data: <json>`), `welcome` first,
//! with a heartbeat comment so idle proxies keep the stream (see
//! `fallback.rs`). Client frames come in with `POST /session/{session}`.
//!
//! The response streams the session's mailbox: whatever is waiting is
//! written as one chunk. When the client goes, hyper drops the stream,
//! which abandons the mailbox and so ends the session.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};

use super::fallback;
use super::mailbox::Mailbox;
use super::registry::Kind;
use crate::auth::Identity;
use crate::state::Shared;

/// Opens an SSE session for `identity` and answers with its stream.
pub async fn open(shared: Arc<Shared>, identity: Identity) -> Response {
    let handle = fallback::open(shared, identity, Kind::Sse).await;
    let reader = Reader(handle.mailbox().clone());
    let events = futures_util::stream::unfold(reader, |reader| async move {
        reader.0.wait_arrived().await;
        let taken = reader.0.take(None);
        if taken.frames.is_empty() {
            // Finished, and the close already went out.
            return None;
        }
        Some((Ok::<Bytes, Infallible>(concat(taken.frames)), reader))
    });
    let mut response = (StatusCode::OK, Body::from_stream(events)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    // Proxies must pass events on as they come, and never replay a stream.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// The response's hold on the mailbox; dropping it (the client went, or
/// the stream ended) tells the session no one reads any more.
struct Reader(Arc<Mailbox>);

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.abandon();
    }
}

/// Frames as one chunk of the response.
fn concat(frames: Vec<Bytes>) -> Bytes {
    if frames.len() == 1 {
        return frames.into_iter().next().unwrap_or_default();
    }
    let mut chunk = BytesMut::with_capacity(frames.iter().map(Bytes::len).sum());
    for frame in frames {
        chunk.extend_from_slice(&frame);
    }
    chunk.freeze()
}
