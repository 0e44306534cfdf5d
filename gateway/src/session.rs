//! One WebSocket connection, from upgrade to close.
//!
//! A session runs as a single task with two halves: the reader decodes client
//! frames and executes them against the hub, in order; the writer drains the
//! connection's outbound queue, writing everything queued and flushing once.
//! Heartbeats, token expiry and server-initiated closes (drain, slow consumer,
//! oversized frame) all end in one place: a close frame written by the writer.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite;

use crate::auth::Identity;
use crate::bus::{BusError, Topic};
use crate::hub::Conn;
use crate::outbound::{Close, Next, Outbound, QueueLimits};
use crate::protocol::{self, ErrorCode, Failure, Op};
use crate::ratelimit::TokenBucket;
use crate::room::RoomName;
use crate::server::Shared;

/// How long a close may take: writing the close frame, and waiting for the
/// client's reply. After that the socket is dropped.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves one upgraded connection until it closes.
pub async fn run(socket: WebSocket, shared: Arc<Shared>, identity: Identity) {
    let config = &shared.config;
    let session: Arc<str> = new_session_id().into();
    let user: Arc<str> = identity
        .user
        .clone()
        .map_or_else(|| session.clone(), Into::into);
    let limits = QueueLimits {
        frames: config.limits.outbound_queue_frames,
        bytes: config.limits.outbound_queue_bytes,
    };
    let conn = Arc::new(Conn {
        id: shared.hub.next_conn_id(),
        session,
        user,
        outbound: Outbound::new(limits, shared.metrics.clone()),
    });
    // Queued before the connection is reachable, so it is always the first frame.
    conn.outbound.push(
        protocol::welcome(&conn.session, &conn.user, &shared.node, config.heartbeat_ms).into(),
    );
    Box::pin(shared.hub.connect(&conn)).await;
    tracing::debug!(session = %conn.session, user = %conn.user, "connected");

    let heartbeat = Duration::from_millis(config.heartbeat_ms);
    let (mut sink, mut stream) = socket.split();
    let mut session = Session {
        bucket: TokenBucket::new(
            config.limits.publish_rate_per_second,
            config.limits.publish_burst,
            std::time::Instant::now(),
        ),
        conn: conn.clone(),
        shared: shared.clone(),
        identity,
        joined: HashSet::new(),
    };
    {
        let reader = session.read(&mut stream, heartbeat);
        let writer = write(&mut sink, &conn.outbound, heartbeat, &shared);
        tokio::pin!(reader, writer);
        let (mut reader_done, mut writer_done) = (false, false);
        tokio::select! {
            _ = &mut reader => reader_done = true,
            _ = &mut writer => writer_done = true,
            _ = conn.outbound.closing() => {}
        }
        conn.outbound.close(Close::NORMAL);
        // Let the writer send its close frame and the reader see the reply, within bounds.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            if !writer_done {
                (&mut writer).await;
            }
            if !reader_done {
                (&mut reader).await;
            }
        })
        .await;
    }
    let rooms = std::mem::take(&mut session.joined);
    Box::pin(shared.hub.disconnect(&conn, rooms)).await;
    tracing::debug!(session = %conn.session, "disconnected");
}

fn new_session_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The reader's state: who the client is and what it has joined.
struct Session {
    conn: Arc<Conn>,
    shared: Arc<Shared>,
    identity: Identity,
    joined: HashSet<RoomName>,
    bucket: TokenBucket,
}

impl Session {
    /// Reads frames until the client goes away or the connection must close.
    async fn read(&mut self, stream: &mut SplitStream<WebSocket>, heartbeat: Duration) {
        let silence = sleep_until(Instant::now() + 2 * heartbeat);
        let expiry = sleep_until(
            self.identity
                .expires_at
                .map_or_else(far_future, deadline_of),
        );
        tokio::pin!(silence, expiry);
        let expires = self.identity.expires_at.is_some();
        loop {
            tokio::select! {
                message = stream.next() => {
                    silence.as_mut().reset(Instant::now() + 2 * heartbeat);
                    match message {
                        None | Some(Ok(Message::Close(_))) => return,
                        Some(Err(error)) => {
                            if let Some(close) = close_for(error) {
                                self.conn.outbound.close(close);
                            }
                            return;
                        }
                        Some(Ok(Message::Text(text))) => self.frame(&text).await,
                        Some(Ok(Message::Binary(_))) => {
                            self.shared.metrics.frames_in.fetch_add(1, Relaxed);
                            self.fail(None, &Failure::new(ErrorCode::BadRequest, "frames must be text (UTF-8 JSON)"));
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    }
                }
                _ = &mut silence => {
                    self.conn.outbound.close(Close::HEARTBEAT);
                    return;
                }
                _ = &mut expiry, if expires => {
                    self.conn.outbound.close(Close::TOKEN_EXPIRED);
                    return;
                }
            }
        }
    }

    /// Decodes and executes one text frame, then answers it.
    async fn frame(&mut self, text: &str) {
        self.shared.metrics.frames_in.fetch_add(1, Relaxed);
        if self.conn.outbound.is_closing() {
            return;
        }
        let request = protocol::decode(text);
        let outcome = match request.op {
            // Boxed: executing can await the bus, whose futures are large;
            // inline they would sit in every idle connection's task.
            Ok(op) => Box::pin(self.execute(op)).await,
            Err(failure) => Err(failure),
        };
        match (outcome, &request.id) {
            (Ok(extra), Some(id)) => {
                self.conn.outbound.push(protocol::ok(id, &extra).into());
            }
            (Ok(_), None) => {}
            (Err(failure), id) => self.fail(id.as_ref(), &failure),
        }
    }

    fn fail(&self, id: Option<&protocol::RequestId>, failure: &Failure) {
        self.shared.metrics.error(failure.code);
        self.conn.outbound.push(protocol::error(id, failure).into());
    }

    /// Executes an operation; `Ok` carries the extra fields of the `ok` answer.
    async fn execute(&mut self, op: Op<'_>) -> Result<String, Failure> {
        let limits = &self.shared.config.limits;
        match op {
            Op::Join(room) => {
                self.check_access(&room)?;
                if self.joined.contains(&room) {
                    return Ok(String::new());
                }
                if self.joined.len() >= limits.max_rooms_per_connection {
                    return Err(Failure::new(
                        ErrorCode::TooManyRooms,
                        format!(
                            "a connection may join at most {} rooms",
                            limits.max_rooms_per_connection
                        ),
                    ));
                }
                self.shared
                    .hub
                    .join(&room, &self.conn)
                    .await
                    .map_err(unavailable)?;
                self.joined.insert(room);
                Ok(String::new())
            }
            Op::Leave(room) => {
                if self.joined.remove(&room) {
                    self.shared.hub.leave(&room, self.conn.id).await;
                }
                Ok(String::new())
            }
            Op::Publish { room, data, echo } => {
                self.check_access(&room)?;
                check_payload(data.get().len(), limits.max_payload_bytes)?;
                self.take_token()?;
                let frame = protocol::message(&room, Some(&self.conn.user), data);
                let skip = (!echo).then_some(self.conn.id);
                self.shared
                    .hub
                    .publish(&Topic::Room(room), frame.into(), skip)
                    .await
                    .map_err(unavailable)?;
                self.shared.metrics.publishes.fetch_add(1, Relaxed);
                Ok(String::new())
            }
            Op::Send { to, data } => {
                check_payload(data.get().len(), limits.max_payload_bytes)?;
                self.take_token()?;
                let frame = protocol::direct(Some(&self.conn.user), data);
                self.shared
                    .hub
                    .publish(&Topic::User(to.into()), frame.into(), None)
                    .await
                    .map_err(unavailable)?;
                self.shared.metrics.sends.fetch_add(1, Relaxed);
                Ok(String::new())
            }
            Op::Presence(room) => {
                self.check_access(&room)?;
                let members = self.shared.hub.presence(&room).await.map_err(unavailable)?;
                Ok(protocol::members_field(&members))
            }
            Op::Ping => {
                let ts = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                Ok(format!(r#""ts":{ts}"#))
            }
        }
    }

    fn check_access(&self, room: &RoomName) -> Result<(), Failure> {
        if self.identity.rooms.allows(room) {
            Ok(())
        } else {
            Err(Failure::new(
                ErrorCode::Forbidden,
                "the token does not allow this room",
            ))
        }
    }

    fn take_token(&mut self) -> Result<(), Failure> {
        if self.bucket.try_take(std::time::Instant::now()) {
            Ok(())
        } else {
            Err(Failure::new(
                ErrorCode::RateLimited,
                "publish/send rate exceeded; frame dropped",
            ))
        }
    }
}

/// Refuses a `data` over the payload limit.
pub fn check_payload(len: usize, max: usize) -> Result<(), Failure> {
    if len > max {
        Err(Failure::new(
            ErrorCode::PayloadTooLarge,
            format!("data is {len} bytes; the limit is {max}"),
        ))
    } else {
        Ok(())
    }
}

/// Maps a bus failure to the contract's error.
pub fn unavailable(error: BusError) -> Failure {
    Failure::new(ErrorCode::Unavailable, error.to_string())
}

/// The close a read error calls for, if the socket is still usable for one.
fn close_for(error: axum::Error) -> Option<Close> {
    match error
        .into_inner()
        .downcast::<tungstenite::Error>()
        .map(|e| *e)
    {
        Ok(tungstenite::Error::Capacity(_)) => Some(Close::TOO_BIG),
        Ok(tungstenite::Error::Utf8(_)) => Some(Close::INVALID_PAYLOAD),
        _ => None,
    }
}

/// Writes queued frames (all of them, then one flush) and pings, until a
/// close has been written or the socket fails. Pings go out on schedule even
/// while frames keep flowing, so a busy receiver that never sends is not
/// mistaken for a dead one.
async fn write(
    sink: &mut SplitSink<WebSocket, Message>,
    outbound: &Outbound,
    heartbeat: Duration,
    shared: &Shared,
) {
    let mut batch: VecDeque<Utf8Bytes> = VecDeque::new();
    let ping_due = sleep_until(Instant::now() + heartbeat);
    tokio::pin!(ping_due);
    loop {
        if ping_due.is_elapsed() {
            if sink.send(Message::Ping(bytes::Bytes::new())).await.is_err() {
                return;
            }
            ping_due.as_mut().reset(Instant::now() + heartbeat);
        }
        match outbound.next(&mut batch) {
            Next::Frames => {
                let count = batch.len() as u64;
                for frame in batch.drain(..) {
                    if sink.feed(Message::Text(frame)).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
                shared.metrics.frames_out.fetch_add(count, Relaxed);
            }
            Next::Close(close) => {
                let frame = CloseFrame {
                    code: close.code,
                    reason: Utf8Bytes::from_static(close.reason),
                };
                // The client may already have closed (its close was answered
                // automatically), so failures here are expected and harmless.
                let _ = sink.send(Message::Close(Some(frame))).await;
                let _ = sink.flush().await;
                return;
            }
            Next::Idle => {
                tokio::select! {
                    _ = outbound.wait() => {}
                    _ = &mut ping_due => {}
                }
            }
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

/// The monotonic instant of a wall-clock time (now, if it has passed).
fn deadline_of(at: SystemTime) -> Instant {
    let left = at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Instant::now() + left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_limit_is_inclusive() {
        assert!(check_payload(10, 10).is_ok());
        assert_eq!(
            check_payload(11, 10).unwrap_err().code,
            ErrorCode::PayloadTooLarge
        );
    }

    #[test]
    fn session_ids_are_unique_and_fixed_width() {
        let (a, b) = (new_session_id(), new_session_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn past_deadlines_are_now() {
        let d = deadline_of(UNIX_EPOCH);
        assert!(d <= Instant::now());
    }
}
