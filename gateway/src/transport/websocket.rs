//! The WebSocket transport: one upgraded connection from the 101 response to
//! the close, in one task that owns the socket.
//!
//! It moves frames and nothing else: it reads client frames (`ws.rs` parses
//! them) and hands their text to the [`Session`], writes out what the
//! session's outbound queue holds when the socket was too full to take it at
//! once (most frames never wait: see `delivery/outbound.rs`), and keeps what
//! is WebSocket's own: pings and pongs, heartbeat silence, the token's expiry
//! timer and the close handshake. Every close (drain, slow consumer,
//! oversized frame, client close) ends in one place: a close frame queued
//! behind what must still be written.

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until};

use super::ws::{self, FrameReader, Incoming, Violation, WireFrame, echo_code};
use crate::auth::Identity;
use crate::delivery::frame::Format;
use crate::delivery::outbound::{Close, Flush, Wire};
use crate::session::Session;
use crate::state::Shared;

/// How long a close may take: writing the close frame, and waiting for the
/// client's reply. After that the socket is dropped. A slow consumer's close
/// has its own bound (`limits.slow_close_timeout_ms`, see [`close_timeout`]).
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the close handshake of `close` may take. A slow consumer (4008)
/// gets `slow`: its socket buffer is full of frames it has not read yet, and
/// the close frame can only go out once it reads them (a backgrounded tab,
/// a phone out of coverage). Its queue is already dropped, so waiting costs
/// a socket and no memory, and a client that resumes in time reads what it
/// was sent and then learns why it was closed instead of seeing 1006.
pub fn close_timeout(close: Close, slow: Duration) -> Duration {
    if close == Close::SLOW_CONSUMER {
        slow
    } else {
        CLOSE_TIMEOUT
    }
}

/// Bytes read from the socket at a time (on the stack, never per connection).
const READ_CHUNK: usize = 4096;

impl Wire for TcpStream {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // sendmsg(2) on the borrowed socket skips tokio's readiness
        // bookkeeping and the VFS layer of writev(2): 2 to 8 % less gateway
        // CPU per delivery, measured A/B (docs/performance.md). Only when the
        // socket is full does tokio's own write run, so that tokio clears
        // the readiness the session's `writable()` then waits on.
        match socket2::SockRef::from(self).send_vectored(bufs) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                TcpStream::try_write_vectored(self, bufs)
            }
            other => other,
        }
    }

    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(std::os::fd::AsRawFd::as_raw_fd(self))
    }
}

/// What the upgrade negotiated for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Negotiated {
    /// `roomcast.v1.msgpack`: binary MessagePack frames both ways.
    pub msgpack: bool,
    /// permessage-deflate, without context takeover either way.
    pub deflate: bool,
}

/// Serves one upgraded connection until it closes. `early` holds bytes the
/// client sent right behind its upgrade request.
pub async fn serve(
    socket: TcpStream,
    early: Bytes,
    shared: Arc<Shared>,
    identity: Identity,
    negotiated: Negotiated,
) {
    let socket = Arc::new(socket);
    let heartbeat = Duration::from_millis(shared.config.heartbeat_ms);
    let slow_close = Duration::from_millis(shared.config.limits.slow_close_timeout_ms);
    let mut reader = FrameReader::new(shared.config.limits.max_frame_bytes);
    if negotiated.deflate {
        reader = reader.with_deflate();
    }
    let format = Format::websocket(
        negotiated.msgpack,
        negotiated
            .deflate
            .then_some(shared.config.websocket.compression_threshold),
    );
    let wire: Arc<dyn Wire> = socket.clone();
    let session = Session::open(shared, identity, wire, format, "websocket").await;
    reader.feed(&early);
    // It may share HTTP's whole read buffer: never keep it for the session's life.
    drop(early);
    let mut connection = Connection {
        session,
        reader,
        slow_close,
        msgpack: negotiated.msgpack,
    };
    connection.serve(&socket, heartbeat).await;
    connection.session.end().await;
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
    /// Frames held for a coalesced write are due (`write_delay_ms`).
    write: Option<Instant>,
}

impl Clock {
    fn next(&self) -> Instant {
        let next = match self.close {
            Some(close) => close,
            None => self
                .ping
                .min(self.silence)
                .min(self.expiry.unwrap_or(self.silence)),
        };
        self.write.map_or(next, |write| write.min(next))
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

/// A WebSocket connection: its session and the client frame being read.
struct Connection {
    session: Session,
    reader: FrameReader,
    /// The bound of a 4008 close handshake.
    slow_close: Duration,
    /// Protocol frames are binary MessagePack rather than JSON text.
    msgpack: bool,
}

impl Connection {
    /// Reads, writes and keeps time until the connection is closed.
    async fn serve(&mut self, socket: &TcpStream, heartbeat: Duration) {
        // Its own handle on the queue, so the loop can wait on it while frames
        // are read into `self`.
        let conn = self.session.conn().clone();
        let outbound = &conn.outbound;
        let now = Instant::now();
        let mut clock = Clock {
            heartbeat,
            ping: now + heartbeat,
            silence: now + 2 * heartbeat,
            expiry: self.session.expires_at(),
            close: None,
            write: None,
        };
        let timer = sleep_until(clock.next());
        tokio::pin!(timer);
        let mut closing = Closing::No;
        // Frames that came with the upgrade request.
        let mut reading = self.take_frames().await;
        clock.expiry = self.session.expires_at();
        loop {
            let (flush, written) = outbound.flush();
            self.session.written(written);
            clock.write = None;
            let blocked = match flush {
                Flush::Failed => return,
                Flush::Delayed(due) => {
                    clock.write = Some(due);
                    false
                }
                Flush::Blocked => {
                    if clock.close.is_none()
                        && let Some(close) = outbound.closing()
                    {
                        clock.close = Some(Instant::now() + close_timeout(close, self.slow_close));
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
                    outbound.push_close(WireFrame::close(close.code, close.reason).into_bytes());
                    closing = Closing::Queued;
                    clock
                        .close
                        .get_or_insert(Instant::now() + close_timeout(close, self.slow_close));
                    continue;
                }
            };
            if reading == Reading::Done && (closing == Closing::Sent || !outbound.is_closing()) {
                // Our close is written after the client's, or the client
                // vanished without one.
                return;
            }
            if timer.deadline() != clock.next() {
                timer.as_mut().reset(clock.next());
            }
            tokio::select! {
                biased;
                _ = outbound.wait() => {}
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
                            // A `refresh` may have moved the token's expiry.
                            clock.expiry = self.session.expires_at();
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
                    if clock.write.is_some_and(|at| at <= now) {
                        // Held frames are due: the flush at the top writes them.
                        continue;
                    }
                    if clock.silence <= now {
                        self.session.close(Close::HEARTBEAT);
                    } else if clock.expiry.is_some_and(|at| at <= now) {
                        self.session.expire();
                    } else if clock.ping <= now {
                        self.session.send_transport(WireFrame::ping().into_bytes());
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
                    tracing::debug!(session = %self.session.id(), why = %ws::describe(violation), "closing on a bad frame");
                    match violation {
                        // Still framed after these: read on, for the
                        // client's close (other frames are ignored from now
                        // on: the connection is closing, see `frame`).
                        Violation::TooBig => self.session.close(Close::TOO_BIG),
                        Violation::InvalidUtf8 => self.session.close(Close::INVALID_PAYLOAD),
                        Violation::Protocol(_) => {
                            self.session.close(Close::PROTOCOL);
                            return Reading::Discard;
                        }
                    };
                    continue;
                }
            };
            match incoming {
                Incoming::Text(text) if !self.msgpack => self.session.receive(&text).await,
                Incoming::Binary(bytes) if self.msgpack => {
                    self.session.receive_msgpack(&bytes).await;
                }
                Incoming::Text(_) => self.session.receive_unreadable_msgpack(),
                Incoming::Binary(_) => self.session.receive_unreadable(),
                Incoming::Ping(payload) => self
                    .session
                    .send_transport(WireFrame::pong(&payload).into_bytes()),
                Incoming::Pong => {}
                Incoming::Close(code) => {
                    // Answered with the same code, unless we are closing already.
                    self.session.close(Close {
                        code: echo_code(code),
                        reason: "",
                    });
                    return Reading::Done;
                }
            }
        }
    }
}

/// Reads what the socket has into the frame reader: the bytes read, 0 at
/// end of stream; without a reader the bytes are dropped. The buffer lives on
/// the stack for the call only, so idle connections hold none.
fn read_into(socket: &TcpStream, reader: Option<&mut FrameReader>) -> io::Result<usize> {
    let mut chunk = [0u8; READ_CHUNK];
    let n = socket.try_read(&mut chunk)?;
    if let Some(reader) = reader {
        reader.feed(&chunk[..n]);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_slow_consumer_close_waits_for_its_own_bound() {
        let slow = Duration::from_secs(30);
        assert_eq!(close_timeout(Close::SLOW_CONSUMER, slow), slow);
        for close in [
            Close::NORMAL,
            Close::DRAIN,
            Close::HEARTBEAT,
            Close::TOO_BIG,
        ] {
            assert_eq!(close_timeout(close, slow), CLOSE_TIMEOUT, "{close:?}");
        }
    }
}
