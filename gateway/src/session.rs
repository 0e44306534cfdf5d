//! One WebSocket connection, from upgrade to close.
//!
//! A session is a single task that owns the connection's socket. It reads
//! client frames and executes them against the hub, in order; it writes out
//! whatever the outbound queue holds when the socket was too full to take it
//! at once (most frames never wait: see `outbound.rs`); and it keeps the
//! heartbeat, the token's expiry and the close handshake. Every close
//! (drain, slow consumer, oversized frame, client close) ends in one place:
//! a close frame queued behind what must still be written.

use std::collections::HashSet;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until};

use crate::auth::Identity;
use crate::bus::{BusError, Topic};
use crate::hub::Conn;
use crate::outbound::{Close, Flush, Outbound, Pushed, QueueLimits, Wire};
use crate::protocol::{self, ErrorCode, Failure, Op};
use crate::ratelimit::TokenBucket;
use crate::room::RoomName;
use crate::server::Shared;
use crate::trace;
use crate::ws::{FrameReader, Incoming, Violation, WireFrame, echo_code};

/// How long a close may take: writing the close frame, and waiting for the
/// client's reply. After that the socket is dropped.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes read from the socket at a time (on the stack, never per connection).
const READ_CHUNK: usize = 4096;

/// Serves one upgraded connection until it closes. `early` holds bytes the
/// client sent right behind its upgrade request.
pub async fn run(socket: TcpStream, early: Bytes, shared: Arc<Shared>, identity: Identity) {
    let config = &shared.config;
    let socket = Arc::new(socket);
    let session: Arc<str> = new_session_id().into();
    let user: Arc<str> = identity
        .user
        .clone()
        .map_or_else(|| session.clone(), Into::into);
    let limits = QueueLimits {
        frames: config.limits.outbound_queue_frames,
        bytes: config.limits.outbound_queue_bytes,
    };
    let wire: Arc<dyn Wire> = socket.clone();
    let conn = Arc::new(Conn {
        id: shared.hub.next_conn_id(),
        session,
        user,
        outbound: Outbound::new(limits, shared.metrics.clone(), Some(wire)),
    });
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
        reader: FrameReader::new(config.limits.max_frame_bytes),
    };
    // Written before the connection is reachable, so it is always the first frame.
    session.send(&WireFrame::text(&protocol::welcome(
        &conn.session,
        &conn.user,
        &shared.node,
        config.heartbeat_ms,
    )));
    Box::pin(shared.hub.connect(&conn)).await;
    tracing::debug!(session = %conn.session, user = %conn.user, "connected");
    session.reader.feed(&early);
    // It may share HTTP's whole read buffer: never keep it for the session's life.
    drop(early);
    session
        .serve(&socket, Duration::from_millis(config.heartbeat_ms))
        .await;
    let rooms = std::mem::take(&mut session.joined);
    Box::pin(shared.hub.disconnect(&conn, rooms)).await;
    tracing::debug!(session = %conn.session, "disconnected");
}

fn new_session_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The session's state: who the client is, what it has joined, and the
/// client frame being read.
struct Session {
    conn: Arc<Conn>,
    shared: Arc<Shared>,
    identity: Identity,
    joined: HashSet<RoomName>,
    bucket: TokenBucket,
    reader: FrameReader,
}

/// The deadlines one timer serves: an idle connection keeps a single timer.
struct Clock {
    heartbeat: Duration,
    /// Next server ping.
    ping: Instant,
    /// The client counts as dead if it sends nothing until then.
    silence: Instant,
    /// The token expires.
    expiry: Option<Instant>,
    /// The close handshake is given up.
    close: Option<Instant>,
}

impl Clock {
    fn next(&self) -> Instant {
        match self.close {
            Some(close) => close,
            None => self
                .ping
                .min(self.silence)
                .min(self.expiry.unwrap_or(self.silence)),
        }
    }
}

/// Where the close handshake stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// Open.
    No,
    /// The close frame is queued; when it is written, wait for the client's.
    Queued,
    /// The close frame is written.
    Sent,
}

/// What the session does with what the client sends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Frames are read and executed.
    Frames,
    /// After a frame that broke the framing: bytes are read and dropped
    /// (closing the socket with unread bytes would reset it and could lose
    /// our close frame).
    Discard,
    /// The client closed (or vanished): nothing more to read.
    Done,
}

impl Session {
    /// Reads, writes and keeps time until the connection is closed.
    async fn serve(&mut self, socket: &TcpStream, heartbeat: Duration) {
        let conn = self.conn.clone();
        let now = Instant::now();
        let mut clock = Clock {
            heartbeat,
            ping: now + heartbeat,
            silence: now + 2 * heartbeat,
            expiry: self.identity.expires_at.map(deadline_of),
            close: None,
        };
        let timer = sleep_until(clock.next());
        tokio::pin!(timer);
        let mut closing = Closing::No;
        // Frames that came with the upgrade request.
        let mut reading = self.take_frames().await;
        loop {
            let (flush, written) = conn.outbound.flush();
            self.shared.metrics.frames_out.fetch_add(written, Relaxed);
            let blocked = match flush {
                Flush::Failed => return,
                Flush::Blocked => {
                    if clock.close.is_none() && conn.outbound.is_closing() {
                        clock.close = Some(Instant::now() + CLOSE_TIMEOUT);
                    }
                    true
                }
                Flush::Idle => {
                    if closing == Closing::Queued {
                        closing = Closing::Sent;
                        if reading == Reading::Discard {
                            // Our close is out; the FIN tells the client to finish.
                            let _ =
                                socket2::SockRef::from(socket).shutdown(std::net::Shutdown::Write);
                        }
                    }
                    false
                }
                Flush::Close(close) => {
                    conn.outbound
                        .push_close(&WireFrame::close(close.code, close.reason));
                    closing = Closing::Queued;
                    clock.close.get_or_insert(Instant::now() + CLOSE_TIMEOUT);
                    continue;
                }
            };
            if reading == Reading::Done && (closing == Closing::Sent || !conn.outbound.is_closing())
            {
                // Our close is written after the client's, or the client
                // vanished without one.
                return;
            }
            if timer.deadline() != clock.next() {
                timer.as_mut().reset(clock.next());
            }
            tokio::select! {
                biased;
                _ = conn.outbound.wait() => {}
                ready = socket.writable(), if blocked => {
                    if ready.is_err() {
                        return;
                    }
                }
                ready = socket.readable(), if reading != Reading::Done => {
                    if ready.is_err() {
                        return;
                    }
                    let discard = reading == Reading::Discard;
                    match read_into(socket, (!discard).then_some(&mut self.reader)) {
                        Ok(0) => reading = Reading::Done,
                        Ok(_) if discard => {}
                        Ok(_) => {
                            clock.silence = Instant::now() + 2 * clock.heartbeat;
                            reading = self.take_frames().await;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => reading = Reading::Done,
                    }
                }
                () = &mut timer => {
                    let now = Instant::now();
                    if clock.close.is_some_and(|at| at <= now) {
                        return;
                    }
                    if clock.silence <= now {
                        conn.outbound.close(Close::HEARTBEAT);
                    } else if clock.expiry.is_some_and(|at| at <= now) {
                        conn.outbound.close(Close::TOKEN_EXPIRED);
                    } else if clock.ping <= now {
                        self.send(&WireFrame::ping());
                        clock.ping = now + clock.heartbeat;
                    }
                }
            }
        }
    }

    /// Executes every complete frame read so far; says how reading goes on.
    async fn take_frames(&mut self) -> Reading {
        loop {
            let incoming = match self.reader.next_incoming() {
                Ok(Some(incoming)) => incoming,
                Ok(None) => return Reading::Frames,
                Err(violation) => {
                    tracing::debug!(session = %self.conn.session, why = %crate::ws::describe(violation), "closing on a bad frame");
                    match violation {
                        // Still framed after these: read on, for the
                        // client's close (other frames are ignored from now
                        // on: the connection is closing, see `frame`).
                        Violation::TooBig => self.conn.outbound.close(Close::TOO_BIG),
                        Violation::InvalidUtf8 => self.conn.outbound.close(Close::INVALID_PAYLOAD),
                        Violation::Protocol(_) => {
                            self.conn.outbound.close(Close::PROTOCOL);
                            return Reading::Discard;
                        }
                    };
                    continue;
                }
            };
            match incoming {
                Incoming::Text(text) => self.frame(&text).await,
                Incoming::Binary => {
                    self.shared.metrics.frames_in.fetch_add(1, Relaxed);
                    self.fail(
                        None,
                        &Failure::new(ErrorCode::BadRequest, "frames must be text (UTF-8 JSON)"),
                    );
                }
                Incoming::Ping(payload) => self.send(&WireFrame::pong(&payload)),
                Incoming::Pong => {}
                Incoming::Close(code) => {
                    // Answered with the same code, unless we are closing already.
                    self.conn.outbound.close(Close {
                        code: echo_code(code),
                        reason: "",
                    });
                    return Reading::Done;
                }
            }
        }
    }

    /// Sends one of this session's own frames, counting it if written at once.
    fn send(&self, frame: &WireFrame) {
        if self.conn.outbound.push(frame) == Pushed::Written {
            self.shared.metrics.frames_out.fetch_add(1, Relaxed);
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
                self.send(&WireFrame::text(&protocol::ok(id, &extra)));
            }
            (Ok(_), None) => {}
            (Err(failure), id) => self.fail(id.as_ref(), &failure),
        }
    }

    fn fail(&self, id: Option<&protocol::RequestId>, failure: &Failure) {
        self.shared.metrics.error(failure.code);
        self.send(&WireFrame::text(&protocol::error(id, failure)));
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
                let trace = trace::start_publish(room.as_str(), "websocket");
                self.shared
                    .hub
                    .publish(
                        &Topic::Room(room),
                        WireFrame::text(&frame),
                        skip,
                        trace.as_ref(),
                    )
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
                    .publish(&Topic::User(to.into()), WireFrame::text(&frame), None, None)
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

/// Reads what the socket has into the frame reader: the bytes read, 0 at
/// end of stream; without a reader the bytes are dropped. The buffer lives on the stack for the call only, so idle
/// sessions hold none.
fn read_into(socket: &TcpStream, reader: Option<&mut FrameReader>) -> io::Result<usize> {
    let mut chunk = [0u8; READ_CHUNK];
    let n = socket.try_read(&mut chunk)?;
    if let Some(reader) = reader {
        reader.feed(&chunk[..n]);
    }
    Ok(n)
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
