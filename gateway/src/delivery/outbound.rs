//! A connection's way out: frames written straight to its socket, and a
//! bounded queue for when the socket cannot take them yet.
//!
//! Producers (the connection's own session, and every publisher fanning out to
//! a room it is in) push [`Frame`]s without blocking; the queue takes each in
//! its transport's [`Format`], encoded once for all recipients of that format. While nothing
//! is queued, a push writes the frame to the socket at once, from the
//! producer's task: fan-out to a hundred connections is a hundred `write`s and
//! no task wake-ups. When the socket is full the frame (or what is left of it)
//! is queued, and the connection's session writes the queue out once the
//! socket is writable again. A queue that would exceed its frame or byte bound
//! marks the connection for a 4008 close instead of growing, so memory stays
//! bounded whatever a client does. Queued frames share their bytes with every
//! other recipient's: queuing is a reference-count increment, never a copy.
//! The queue knows nothing of the transport beyond its [`Wire`] and format.
//!
//! Writes are coalesced: frames pushed together ([`Outbound::push_many`], a
//! burst from the bus) and frames queued behind a full socket go out in one
//! vectored write. A write delay (`write_delay_ms`, off by default) holds
//! fan-out frames to an idle connection for that long so the ones after them
//! share the write; the session's own replies are never held. Held frames
//! are written by the hub's `Coalescer` when their window ends, for every
//! connection at once, so holding wakes no connection task.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::frame::{Format, Frame};
use crate::metrics::Metrics;

/// Why and how a connection is being closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    /// WebSocket close code.
    pub code: u16,
    /// Close reason sent to the client.
    pub reason: &'static str,
}

impl Close {
    /// 1000: normal closure.
    pub const NORMAL: Close = Close {
        code: 1000,
        reason: "bye",
    };
    /// 1001: the gateway is shutting down without a drain.
    pub const GOING_AWAY: Close = Close {
        code: 1001,
        reason: "going away",
    };
    /// 1002: the client broke the WebSocket protocol.
    pub const PROTOCOL: Close = Close {
        code: 1002,
        reason: "protocol error",
    };
    /// 1007: a text frame that is not UTF-8.
    pub const INVALID_PAYLOAD: Close = Close {
        code: 1007,
        reason: "invalid utf-8",
    };
    /// 1008: the peer stayed silent for two heartbeat intervals.
    pub const HEARTBEAT: Close = Close {
        code: 1008,
        reason: "heartbeat timeout",
    };
    /// 1009: a client frame over the size limit.
    pub const TOO_BIG: Close = Close {
        code: 1009,
        reason: "frame too big",
    };
    /// 1012: the gateway is draining; reconnect.
    pub const DRAIN: Close = Close {
        code: 1012,
        reason: "draining, reconnect",
    };
    /// 1012: the bus connection dropped and the messages of a history room
    /// missed meanwhile are no longer kept (or could not be read); rejoin
    /// with `since` to learn `recovered`.
    pub const RECOVER: Close = Close {
        code: 1012,
        reason: "history interrupted, rejoin with since",
    };
    /// 4001: the token expired.
    pub const TOKEN_EXPIRED: Close = Close {
        code: 4001,
        reason: "token expired",
    };
    /// 4003: closed by the server API (`POST /v1/disconnect`).
    pub const DISCONNECTED: Close = Close {
        code: 4003,
        reason: "disconnected by the server",
    };
    /// 4008: the outbound queue overflowed.
    pub const SLOW_CONSUMER: Close = Close {
        code: 4008,
        reason: "slow consumer",
    };

    /// Whether frames still queued are dropped rather than written first.
    /// Only a slow consumer loses them: writing them is what it cannot keep up with.
    pub fn discards_pending(self) -> bool {
        self.code == Close::SLOW_CONSUMER.code
    }
}

/// Bounds of one queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Most frames queued at once.
    pub frames: usize,
    /// Most bytes queued at once.
    pub bytes: usize,
}

/// Where a connection's bytes go: its socket, as its transport provides it.
/// Writes never block; a write the socket cannot take now fails with `WouldBlock`.
pub trait Wire: Debug + Send + Sync {
    /// Writes as much of `bufs` as the socket takes now.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;

    /// The socket's descriptor, so that a fan-out can batch its write with
    /// other connections' ([`super::batch`]); `None` for a wire that is not
    /// one socket. The wire keeps it open for as long as it lives.
    fn raw_fd(&self) -> Option<RawFd> {
        None
    }
}

/// What became of a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Written to the socket.
    Written,
    /// Queued behind frames the socket has not taken yet.
    Queued,
    /// Dropped: the connection is closing (or the push started a 4008 close).
    Refused,
}

/// What the session should do after [`Outbound::flush`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Everything is written.
    Idle,
    /// Frames are left: wait until the socket is writable, then flush again.
    Blocked,
    /// Write this close (any frames due before it are written), then flush
    /// until idle.
    Close(Close),
    /// Frames are held for a coalesced write (`write_delay_ms`): flush again
    /// at this instant (or earlier: an early flush only shortens the delay).
    Delayed(Instant),
    /// The socket failed: the connection is gone.
    Failed,
}

#[derive(Debug, Default)]
struct State {
    /// Bytes the socket has not taken yet, in order; the front may be the
    /// rest of a partly written frame.
    queue: VecDeque<Bytes>,
    /// The front is the rest of a partly written frame: it must be written
    /// even when the queue is discarded, or the stream would be corrupt.
    front_partial: bool,
    bytes: usize,
    /// With a write delay: when the frames held for one coalesced write are due.
    due: Option<Instant>,
    close: Option<Close>,
    close_taken: bool,
    /// A write failed: nothing more can be written.
    broken: bool,
}

/// The way out of one connection.
#[derive(Debug)]
pub struct Outbound {
    state: Mutex<State>,
    wire: Arc<dyn Wire>,
    /// The wire's socket, when it is one (see [`Outbound::direct`]).
    fd: Option<RawFd>,
    format: Format,
    wake: Notify,
    limits: QueueLimits,
    /// How long a frame may wait for others to share its write (0: written at once).
    delay: Duration,
    metrics: Arc<Metrics>,
}

/// Capacity an idle queue keeps; more is released so idle connections stay small.
const IDLE_CAPACITY: usize = 16;

/// Most buffers handed to one vectored write (Linux takes up to 1024).
const MAX_IOV: usize = 64;

/// What a push of several frames did, for the caller's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushedMany {
    /// What became of the frames as a whole: `Written` when all were
    /// written, `Queued` when some wait (or the rest of one), `Refused` when
    /// some were dropped.
    pub pushed: Pushed,
    /// Frames written whole by this push.
    pub written: u64,
    /// Write calls made (one per frame before coalescing).
    pub writes: u64,
    /// The push started a held window (`write_delay_ms`) due then: the
    /// caller hands the connection to the [`Coalescer`](super::coalesce::Coalescer),
    /// which writes it out when due. The session is not woken for it.
    pub held_until: Option<Instant>,
}

impl From<Pushed> for PushedMany {
    /// A single frame's push, counted: a frame written whole took one write.
    fn from(pushed: Pushed) -> Self {
        let written = u64::from(pushed == Pushed::Written);
        PushedMany {
            pushed,
            written,
            writes: written,
            held_until: None,
        }
    }
}

impl PushedMany {
    const REFUSED: PushedMany = PushedMany {
        pushed: Pushed::Refused,
        written: 0,
        writes: 0,
        held_until: None,
    };
}

/// How far a push has got: frames before `next` are written, and `offset`
/// bytes of `next`.
#[derive(Debug)]
struct Progress {
    next: usize,
    offset: usize,
    done: PushedMany,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            next: 0,
            offset: 0,
            done: PushedMany {
                pushed: Pushed::Written,
                written: 0,
                writes: 0,
                held_until: None,
            },
        }
    }
}

impl Progress {
    /// Counts `n` more bytes taken by the socket.
    fn advance<'a>(&mut self, mut n: usize, nth: impl Fn(usize) -> &'a Bytes) {
        while n > 0 {
            let left = nth(self.next).len() - self.offset;
            if n >= left {
                n -= left;
                self.next += 1;
                self.offset = 0;
                self.done.written += 1;
            } else {
                self.offset += n;
                n = 0;
            }
        }
    }
}

/// A push of one frame whose write is made by the caller (see
/// [`Outbound::direct`]); the connection is locked until it is finished.
#[derive(Debug)]
pub struct Direct<'a> {
    outbound: &'a Outbound,
    state: MutexGuard<'a, State>,
    /// The socket to write to.
    pub fd: RawFd,
}

impl<'a> Direct<'a> {
    /// The bytes of `frame` in this connection's format.
    pub fn bytes<'f>(&self, frame: &'f Frame) -> &'f Bytes {
        frame.encoded(self.outbound.format)
    }

    /// Finishes the push of `frame` after the caller's write of
    /// [`Direct::bytes`] did `sent`: what the socket did not take is queued
    /// for the session, as [`Outbound::push_many`] would; a failed socket
    /// closes the connection; `None` (not written) writes it here.
    pub fn finish(self, frame: &Frame, sent: Option<io::Result<usize>>) -> PushedMany {
        let Direct {
            outbound,
            mut state,
            ..
        } = self;
        let nth = |_| frame.encoded(outbound.format);
        let mut push = Progress::default();
        match sent {
            None => {
                if outbound.write_now(&mut state, 1, &nth, &mut push).is_err() {
                    return outbound.broke(state);
                }
            }
            Some(Ok(n)) => {
                push.done.writes = 1;
                push.advance(n, nth);
            }
            Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => push.done.writes = 1,
            Some(Err(_)) => return outbound.broke(state),
        }
        if push.next == 1 {
            return push.done;
        }
        outbound.queue_rest(state, false, 1, nth, push)
    }
}

impl Outbound {
    /// The way out to `wire`, which takes frames in `format`.
    pub fn new(
        limits: QueueLimits,
        metrics: Arc<Metrics>,
        wire: Arc<dyn Wire>,
        format: Format,
    ) -> Self {
        Self {
            state: Mutex::new(State::default()),
            fd: wire.raw_fd(),
            wire,
            format,
            wake: Notify::new(),
            limits,
            delay: Duration::ZERO,
            metrics,
        }
    }

    /// Holds frames pushed to an idle connection up to `delay`, so that
    /// those that follow within it share one write (`write_delay_ms`). The
    /// transport writes them when [`Outbound::flush`] says they are due.
    pub fn with_write_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // (every update is a single push/take), so recover from poisoning.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a protocol frame in this connection's format: written at once
    /// when nothing is queued ahead of it, queued otherwise. Refused when the
    /// connection is closing or the queue would overflow (which starts a
    /// 4008 close).
    /// The session's own frames (replies) are never held by a write delay:
    /// they go out at once, with whatever fan-out frames were held before them.
    pub fn push(&self, frame: &Frame) -> Pushed {
        let bytes = frame.encoded(self.format);
        self.push_encoded(false, 1, |_| bytes).pushed
    }

    /// Sends several fan-out frames, in order, as one push: what the socket
    /// takes goes out in one vectored write (a burst read from the bus costs
    /// one syscall per connection, not one per frame), the rest is queued
    /// with the same rules as [`Outbound::push`]. With a write delay they are
    /// held for it (see [`Outbound::with_write_delay`]).
    pub fn push_many(&self, frames: &[Frame]) -> PushedMany {
        self.push_encoded(true, frames.len(), |i| frames[i].encoded(self.format))
    }

    /// Sends bytes already in the transport's framing (its own control
    /// frames: pings, pongs), with the same rules as [`Outbound::push`].
    pub fn push_bytes(&self, bytes: Bytes) -> Pushed {
        self.push_encoded(false, 1, |_| &bytes).pushed
    }

    /// The one way in: `count` encoded frames, the `i`th given by `nth(i)`,
    /// held for the write delay if `hold`. Bytes are cloned (a reference
    /// count) only for what is queued.
    fn push_encoded<'a>(
        &self,
        hold: bool,
        count: usize,
        nth: impl Fn(usize) -> &'a Bytes,
    ) -> PushedMany {
        let hold = hold && !self.delay.is_zero();
        let mut state = self.state();
        if state.close.is_some() {
            return PushedMany::REFUSED;
        }
        let mut push = Progress::default();
        if state.queue.is_empty() && !hold {
            if self.write_now(&mut state, count, &nth, &mut push).is_err() {
                return self.broke(state);
            }
            if push.next == count {
                return push.done;
            }
        }
        self.queue_rest(state, hold, count, nth, push)
    }

    /// Writes frames `push.next..count` (the first from `push.offset`) in
    /// vectored writes until all are written or the socket is full.
    fn write_now<'a>(
        &self,
        state: &mut State,
        count: usize,
        nth: &impl Fn(usize) -> &'a Bytes,
        push: &mut Progress,
    ) -> Result<(), ()> {
        while push.next < count {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut len = 0;
            let mut total = 0;
            for (i, slot) in iov.iter_mut().enumerate() {
                let Some(bytes) = (push.next + i < count).then(|| nth(push.next + i)) else {
                    break;
                };
                let skip = if i == 0 { push.offset } else { 0 };
                *slot = IoSlice::new(&bytes[skip..]);
                total += bytes.len() - skip;
                len += 1;
            }
            push.done.writes += 1;
            let n = match self.wire.try_write_vectored(&iov[..len]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    state.broken = true;
                    return Err(());
                }
            };
            push.advance(n, nth);
            if n < total {
                break;
            }
        }
        Ok(())
    }

    /// After a failed write: nothing more can be written; the session closes.
    fn broke(&self, mut state: MutexGuard<'_, State>) -> PushedMany {
        state.broken = true;
        state.close = Some(Close::NORMAL);
        drop(state);
        self.wake.notify_one();
        PushedMany::REFUSED
    }

    /// Queues what `push` left of the frames (nothing may overtake it), or
    /// starts a 4008 close when that would pass the queue's bounds.
    fn queue_rest<'a>(
        &self,
        mut state: MutexGuard<'_, State>,
        hold: bool,
        count: usize,
        nth: impl Fn(usize) -> &'a Bytes,
        push: Progress,
    ) -> PushedMany {
        let mut done = push.done;
        done.pushed = Pushed::Queued;
        let mut first = false;
        for i in push.next..count {
            let mut bytes = nth(i).clone();
            if i == push.next && push.offset > 0 {
                bytes.advance(push.offset);
                state.front_partial = true;
            }
            if !state.queue.is_empty()
                && (state.queue.len() >= self.limits.frames
                    || state.bytes + bytes.len() > self.limits.bytes)
            {
                state.close = Some(Close::SLOW_CONSUMER);
                drop(state);
                self.metrics.slow_consumer_closes.fetch_add(1, Relaxed);
                self.wake.notify_one();
                done.pushed = Pushed::Refused;
                return done;
            }
            first |= self.enqueue(&mut state, bytes);
        }
        let mut wake = first && !hold;
        if first && hold {
            let due = Instant::now() + self.delay;
            state.due = Some(due);
            done.held_until = Some(due);
        } else if state.due.is_some() && (!hold || state.queue.len() >= MAX_IOV) {
            // A reply, or a full write's worth: held frames go now.
            state.due = None;
            wake = true;
        }
        drop(state);
        if wake {
            self.wake.notify_one();
        }
        done
    }

    /// Starts a push of one fan-out frame whose write the caller makes,
    /// batched with other connections' ([`super::batch`]): only when the
    /// wire is a socket, nothing is queued or held, no close is under way,
    /// and no other push holds this connection now (the batch never waits
    /// for one). `None`: push it with [`Outbound::push_many`] instead.
    /// The connection stays locked until [`Direct::finish`], so nothing
    /// overtakes the frame.
    pub fn direct(&self) -> Option<Direct<'_>> {
        let fd = self.fd?;
        if !self.delay.is_zero() {
            return None;
        }
        let state = match self.state.try_lock() {
            Ok(state) => state,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        (state.close.is_none() && state.queue.is_empty()).then_some(Direct {
            outbound: self,
            state,
            fd,
        })
    }

    /// Writes frames held for a coalesced write if they are due by `now`
    /// (the [`Coalescer`](super::coalesce::Coalescer) calls it for every
    /// connection whose window ends). Wakes the session only when it has
    /// something to do: a socket too full for the rest, or a close. Returns
    /// the frames written.
    pub fn flush_held(&self, now: Instant) -> u64 {
        let mut state = self.state();
        match state.due {
            // Written meanwhile (a reply, a full write's worth), or a
            // newer window whose own turn comes later.
            None => return 0,
            Some(due) if due > now => return 0,
            Some(_) => state.due = None,
        }
        if state.close.is_some() || state.broken {
            drop(state);
            self.wake.notify_one();
            return 0;
        }
        let written = self.write_queued(&mut state).unwrap_or(0);
        let blocked = !state.queue.is_empty() || state.broken;
        drop(state);
        if blocked {
            self.wake.notify_one();
        }
        written
    }

    /// Starts closing with `close` unless a close is already under way.
    /// Returns whether this call started it.
    pub fn close(&self, close: Close) -> bool {
        let mut state = self.state();
        if state.close.is_some() {
            return false;
        }
        state.close = Some(close);
        drop(state);
        self.wake.notify_one();
        true
    }

    /// Whether a close has been started.
    pub fn is_closing(&self) -> bool {
        self.state().close.is_some()
    }

    /// The close under way, if one has been started.
    pub fn closing(&self) -> Option<Close> {
        self.state().close
    }

    /// Resolves when there may be something for [`Outbound::flush`].
    pub async fn wait(&self) {
        self.wake.notified().await;
    }

    /// Writes what is queued, as far as the socket takes it, and says what
    /// the session should do next. Returns the frames written.
    pub fn flush(&self) -> (Flush, u64) {
        self.flush_at(Instant::now())
    }

    /// [`Outbound::flush`] as of `now` (held frames are due or not).
    fn flush_at(&self, now: Instant) -> (Flush, u64) {
        let mut state = self.state();
        if state.broken {
            return (Flush::Failed, 0);
        }
        if let Some(close) = state.close
            && close.discards_pending()
            && !state.close_taken
        {
            self.discard(&mut state);
        }
        if let Some(due) = state.due {
            // A close is written at once, with whatever is held.
            if state.close.is_none() && due > now {
                return (Flush::Delayed(due), 0);
            }
            state.due = None;
        }
        let written = match self.write_queued(&mut state) {
            Ok(written) => written,
            Err(()) => return (Flush::Failed, 0),
        };
        if !state.queue.is_empty() {
            return (Flush::Blocked, written);
        }
        if let Some(close) = state.close
            && !state.close_taken
        {
            state.close_taken = true;
            return (Flush::Close(close), written);
        }
        // Going idle: give back what a burst grew, so idle connections stay small.
        state.queue.shrink_to(IDLE_CAPACITY);
        (Flush::Idle, written)
    }

    /// Queues the transport's final close frame behind whatever is left,
    /// whatever the bounds; [`Outbound::flush`] writes it.
    pub fn push_close(&self, frame: Bytes) {
        let mut state = self.state();
        self.enqueue(&mut state, frame);
    }

    /// Appends to the queue and its gauges; true when nothing was queued before.
    fn enqueue(&self, state: &mut State, bytes: Bytes) -> bool {
        let len = bytes.len();
        state.queue.push_back(bytes);
        state.bytes += len;
        self.metrics.queued_bytes.fetch_add(len as i64, Relaxed);
        self.metrics.queued_frames.fetch_add(1, Relaxed);
        state.queue.len() == 1
    }

    /// Writes from the front of the queue until it is empty or the socket is
    /// full, up to [`MAX_IOV`] frames per write; counts the whole frames written.
    fn write_queued(&self, state: &mut State) -> Result<u64, ()> {
        let (mut frames, mut writes) = (0, 0);
        while !state.queue.is_empty() {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut len = 0;
            for (slot, bytes) in iov.iter_mut().zip(&state.queue) {
                *slot = IoSlice::new(bytes);
                len += 1;
            }
            writes += 1;
            let mut n = match self.wire.try_write_vectored(&iov[..len]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    state.broken = true;
                    return Err(());
                }
            };
            let written = n;
            while n > 0 {
                let Some(front) = state.queue.front_mut() else {
                    break;
                };
                if n >= front.len() {
                    n -= front.len();
                    state.queue.pop_front();
                    state.front_partial = false;
                    frames += 1;
                } else {
                    front.advance(n);
                    state.front_partial = true;
                    n = 0;
                }
            }
            state.bytes -= written;
            self.metrics.queued_bytes.fetch_sub(written as i64, Relaxed);
        }
        self.metrics.queued_frames.fetch_sub(frames as i64, Relaxed);
        self.metrics.frame_writes.fetch_add(writes, Relaxed);
        Ok(frames)
    }

    /// Drops what is queued, except the rest of a partly written frame.
    fn discard(&self, state: &mut State) {
        let keep = if state.front_partial {
            state.queue.pop_front()
        } else {
            None
        };
        let (frames, bytes) = (
            state.queue.len(),
            state.bytes - keep.as_ref().map_or(0, Bytes::len),
        );
        state.queue = keep.into_iter().collect();
        state.bytes -= bytes;
        self.release(frames, bytes);
    }

    fn release(&self, frames: usize, bytes: usize) {
        self.metrics.queued_frames.fetch_sub(frames as i64, Relaxed);
        self.metrics.queued_bytes.fetch_sub(bytes as i64, Relaxed);
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        let (frames, bytes) = (state.queue.len(), state.bytes);
        self.release(frames, bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::ws::WireFrame;

    /// A socket that takes `room` more bytes, then would block.
    #[derive(Debug, Default)]
    struct FakeWire {
        /// Write calls that took bytes.
        writes: std::sync::atomic::AtomicUsize,
        room: Mutex<usize>,
        written: Mutex<Vec<u8>>,
        broken: std::sync::atomic::AtomicBool,
        /// What it gives as its descriptor (never used as one here).
        fd: Option<RawFd>,
    }

    impl FakeWire {
        fn open(&self, bytes: usize) {
            *self.room.lock().unwrap() += bytes;
        }
        fn written(&self) -> Vec<u8> {
            self.written.lock().unwrap().clone()
        }
    }

    impl Wire for FakeWire {
        fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            if self.broken.load(Relaxed) {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            let mut room = self.room.lock().unwrap();
            if *room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for buf in bufs {
                let take = buf.len().min(*room - n);
                self.written.lock().unwrap().extend_from_slice(&buf[..take]);
                n += take;
            }
            *room -= n;
            self.writes.fetch_add(1, Relaxed);
            Ok(n)
        }

        fn raw_fd(&self) -> Option<RawFd> {
            self.fd
        }
    }

    fn outbound(frames: usize, bytes: usize) -> (Outbound, Arc<FakeWire>, Arc<Metrics>) {
        outbound_on(FakeWire::default(), frames, bytes)
    }

    /// An outbound whose wire says it is a socket, for [`Outbound::direct`].
    fn socket_outbound() -> (Outbound, Arc<FakeWire>, Arc<Metrics>) {
        let wire = FakeWire {
            fd: Some(7),
            ..FakeWire::default()
        };
        outbound_on(wire, 10, 1000)
    }

    fn outbound_on(
        wire: FakeWire,
        frames: usize,
        bytes: usize,
    ) -> (Outbound, Arc<FakeWire>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        let wire = Arc::new(wire);
        let out = Outbound::new(
            QueueLimits { frames, bytes },
            metrics.clone(),
            wire.clone(),
            Format::WebSocketText,
        );
        (out, wire, metrics)
    }

    fn text(s: &str) -> Frame {
        Frame::new(s.into())
    }

    #[test]
    fn frames_go_straight_to_a_writable_socket() {
        let (out, wire, m) = outbound(10, 1000);
        wire.open(100);
        assert_eq!(out.push(&text("a")), Pushed::Written);
        assert_eq!(out.push(&text("bc")), Pushed::Written);
        assert_eq!(wire.written(), b"\x81\x01a\x81\x02bc");
        assert_eq!(m.queued_frames.load(Relaxed), 0);
        assert_eq!(out.flush(), (Flush::Idle, 0));
    }

    fn frames(texts: &[&str]) -> Vec<Frame> {
        texts.iter().map(|t| text(t)).collect()
    }

    #[test]
    fn frames_pushed_together_share_one_write() {
        let (out, wire, m) = outbound(10, 1000);
        wire.open(100);
        let pushed = out.push_many(&frames(&["a", "bc", "d"]));
        assert_eq!(
            pushed,
            PushedMany {
                pushed: Pushed::Written,
                written: 3,
                writes: 1,
                held_until: None,
            }
        );
        assert_eq!(wire.writes.load(Relaxed), 1, "one syscall for three frames");
        assert_eq!(wire.written(), b"\x81\x01a\x81\x02bc\x81\x01d");
        assert_eq!(m.queued_frames.load(Relaxed), 0);
    }

    #[test]
    fn frames_pushed_together_to_a_full_socket_queue_in_order() {
        let (out, wire, m) = outbound(10, 1000);
        wire.open(4);
        let pushed = out.push_many(&frames(&["ab", "cd", "e"]));
        assert_eq!((pushed.pushed, pushed.written), (Pushed::Queued, 1));
        assert_eq!(m.queued_frames.load(Relaxed), 2, "the rest of cd, and e");
        assert_eq!(out.push(&text("f")), Pushed::Queued, "never overtakes");
        wire.open(100);
        assert_eq!(out.flush(), (Flush::Idle, 3));
        assert_eq!(wire.written(), b"\x81\x02ab\x81\x02cd\x81\x01e\x81\x01f");
        assert_eq!(
            wire.writes.load(Relaxed),
            2,
            "the queue went out in one write"
        );
        assert_eq!(m.queued_bytes.load(Relaxed), 0);
    }

    #[test]
    fn frames_pushed_together_keep_the_slow_consumer_bound() {
        let (out, wire, m) = outbound(2, 1000);
        let pushed = out.push_many(&frames(&["a", "b", "c", "d"]));
        assert_eq!(pushed.pushed, Pushed::Refused, "the third overflows");
        assert!(out.is_closing());
        assert_eq!(m.slow_consumer_closes.load(Relaxed), 1);
        wire.open(100);
        assert_eq!(out.flush(), (Flush::Close(Close::SLOW_CONSUMER), 0));
        assert!(
            wire.written().is_empty(),
            "a slow consumer's queue is dropped"
        );
        assert_eq!(m.queued_frames.load(Relaxed), 0);
    }

    #[test]
    fn a_write_delay_holds_frames_for_one_write() {
        let (out, wire, m) = outbound(10, 1000);
        let delay = Duration::from_millis(20);
        let out = out.with_write_delay(delay);
        wire.open(100);
        let start = Instant::now();
        let first = out.push_many(&frames(&["a"]));
        assert_eq!(first.pushed, Pushed::Queued, "held, not written");
        assert!(first.held_until.is_some(), "it opens a window");
        let next = out.push_many(&frames(&["b", "c"]));
        assert_eq!((next.pushed, next.held_until), (Pushed::Queued, None));
        let Flush::Delayed(due) = out.flush_at(start).0 else {
            panic!("held frames wait for their due time");
        };
        assert!(due >= start + delay && due <= Instant::now() + delay);
        assert!(wire.written().is_empty());
        assert_eq!(out.flush_at(due), (Flush::Idle, 3));
        assert_eq!(wire.writes.load(Relaxed), 1, "three frames, one write");
        assert_eq!(wire.written(), b"\x81\x01a\x81\x01b\x81\x01c");
        assert_eq!(m.queued_frames.load(Relaxed), 0);
        // Idle again: the next frames start a new delay.
        assert_eq!(out.push_many(&frames(&["d"])).pushed, Pushed::Queued);
        assert!(matches!(out.flush_at(due), (Flush::Delayed(_), 0)));
        // A reply of the session's own is not held, nor what is ahead of it.
        assert_eq!(out.push(&text("e")), Pushed::Queued);
        assert_eq!(out.flush_at(due), (Flush::Idle, 2));
        assert!(wire.written().ends_with(b"\x81\x01d\x81\x01e"));
        assert_eq!(
            out.push(&text("f")),
            Pushed::Written,
            "idle: written at once"
        );
    }

    #[test]
    fn a_write_delay_holds_at_most_one_write_worth() {
        let (out, wire, _) = outbound(1000, 1 << 20);
        let out = out.with_write_delay(Duration::from_secs(1));
        wire.open(1 << 20);
        let start = Instant::now();
        let burst: Vec<Frame> = (0..MAX_IOV - 1).map(|_| text("x")).collect();
        out.push_many(&burst);
        assert!(matches!(out.flush_at(start), (Flush::Delayed(_), 0)));
        out.push_many(&frames(&["y"]));
        assert_eq!(
            out.flush_at(start),
            (Flush::Idle, MAX_IOV as u64),
            "a full write goes out without waiting"
        );
    }

    #[tokio::test]
    async fn held_frames_are_written_when_due_and_the_session_woken_only_if_blocked() {
        let (out, wire, _) = outbound(10, 1000);
        let delay = Duration::from_millis(20);
        let out = out.with_write_delay(delay);
        let due = out.push_many(&frames(&["ab", "cd"])).held_until.unwrap();
        assert_eq!(out.flush_held(due - Duration::from_millis(1)), 0, "not yet");
        wire.open(5);
        assert_eq!(out.flush_held(due), 1, "the socket takes one and a half");
        // The session must write the rest once the socket is writable.
        tokio::time::timeout(Duration::from_secs(5), out.wait())
            .await
            .expect("woken for the rest");
        wire.open(100);
        assert_eq!(out.flush(), (Flush::Idle, 1));
        assert_eq!(wire.written(), b"\x81\x02ab\x81\x02cd");
        // A window already written is not written again.
        assert_eq!(out.flush_held(due + delay), 0);
    }

    #[test]
    fn a_close_writes_held_frames_at_once() {
        let (out, wire, _) = outbound(10, 1000);
        let out = out.with_write_delay(Duration::from_secs(1));
        wire.open(100);
        assert_eq!(out.push_many(&frames(&["a"])).pushed, Pushed::Queued);
        out.close(Close::DRAIN);
        assert_eq!(out.flush(), (Flush::Close(Close::DRAIN), 1));
        assert_eq!(wire.written(), b"\x81\x01a");
    }

    #[test]
    fn a_full_socket_queues_in_order_and_flush_resumes_mid_frame() {
        let (out, wire, m) = outbound(10, 1000);
        wire.open(2);
        assert_eq!(out.push(&text("abc")), Pushed::Queued, "partly written");
        assert_eq!(out.push(&text("de")), Pushed::Queued, "never overtakes");
        assert_eq!(m.queued_frames.load(Relaxed), 2);
        assert_eq!(m.queued_bytes.load(Relaxed), 3 + 4);
        assert_eq!(out.flush(), (Flush::Blocked, 0));
        wire.open(4);
        assert_eq!(out.flush(), (Flush::Blocked, 1));
        wire.open(100);
        assert_eq!(out.flush(), (Flush::Idle, 1));
        assert_eq!(wire.written(), b"\x81\x03abc\x81\x02de");
        assert_eq!(m.queued_bytes.load(Relaxed), 0);
        assert_eq!(m.queued_frames.load(Relaxed), 0);
    }

    #[test]
    fn overflow_by_frames_or_bytes_closes_with_4008_and_drops_the_queue() {
        let (out, wire, m) = outbound(2, 1000);
        assert_eq!(out.push(&text("a")), Pushed::Queued);
        assert_eq!(out.push(&text("b")), Pushed::Queued);
        assert_eq!(out.push(&text("c")), Pushed::Refused);
        assert_eq!(
            out.push(&text("d")),
            Pushed::Refused,
            "closed queues refuse frames"
        );
        assert_eq!(m.slow_consumer_closes.load(Relaxed), 1, "counted once");
        wire.open(100);
        assert_eq!(out.flush(), (Flush::Close(Close::SLOW_CONSUMER), 0));
        assert_eq!(m.queued_bytes.load(Relaxed), 0);
        out.push_close(WireFrame::close(4008, "slow consumer").into_bytes());
        assert_eq!(
            out.flush(),
            (Flush::Idle, 1),
            "the close is handed out once"
        );
        assert_eq!(&wire.written()[..4], &[0x88, 15, 0x0F, 0xA8]);

        let (out, _, _) = outbound(100, 5);
        assert_eq!(out.push(&text("abc")), Pushed::Queued);
        assert_eq!(out.push(&text("abc")), Pushed::Refused);
        assert!(out.is_closing());
    }

    #[test]
    fn a_slow_consumer_close_keeps_the_rest_of_a_partly_written_frame() {
        let (out, wire, _) = outbound(2, 1000);
        wire.open(1);
        assert_eq!(out.push(&text("ab")), Pushed::Queued);
        assert_eq!(out.push(&text("c")), Pushed::Queued);
        assert_eq!(out.push(&text("d")), Pushed::Refused);
        wire.open(100);
        assert_eq!(out.flush(), (Flush::Close(Close::SLOW_CONSUMER), 1));
        assert_eq!(wire.written(), b"\x81\x02ab", "whole frames only");
    }

    #[test]
    fn other_closes_write_pending_frames_first() {
        let (out, wire, _) = outbound(10, 1000);
        assert_eq!(out.push(&text("a")), Pushed::Queued);
        assert!(out.close(Close::DRAIN));
        assert!(!out.close(Close::NORMAL), "the first close wins");
        assert_eq!(out.flush(), (Flush::Blocked, 0));
        wire.open(100);
        assert_eq!(out.flush(), (Flush::Close(Close::DRAIN), 1));
        assert_eq!(wire.written(), b"\x81\x01a");
    }

    #[test]
    fn a_direct_push_is_offered_only_to_an_idle_socket_nobody_else_holds() {
        let (plain, _, _) = outbound(10, 1000);
        assert!(plain.direct().is_none(), "not a socket");
        let (out, wire, _) = socket_outbound();
        let direct = out.direct().expect("idle socket");
        assert_eq!(direct.fd, 7);
        assert!(out.direct().is_none(), "held by the first: never waits");
        drop(direct);
        assert_eq!(out.push(&text("a")), Pushed::Queued, "socket full");
        assert!(out.direct().is_none(), "frames queued ahead");
        wire.open(100);
        assert_eq!(out.flush(), (Flush::Idle, 1));
        assert!(out.direct().is_some());
        out.close(Close::DRAIN);
        assert!(out.direct().is_none(), "closing");
        let (delayed, _, _) = socket_outbound();
        let delayed = delayed.with_write_delay(Duration::from_millis(5));
        assert!(
            delayed.direct().is_none(),
            "held frames go through the coalescer"
        );
    }

    #[test]
    fn a_direct_push_written_whole_leaves_nothing_behind() {
        let (out, wire, m) = socket_outbound();
        let frame = text("abc");
        let direct = out.direct().unwrap();
        assert_eq!(direct.bytes(&frame).as_ref(), b"\x81\x03abc");
        let done = direct.finish(&frame, Some(Ok(5)));
        assert_eq!(
            (done.pushed, done.written, done.writes),
            (Pushed::Written, 1, 1)
        );
        assert!(wire.written().is_empty(), "the caller wrote it");
        assert_eq!(m.queued_frames.load(Relaxed), 0);
        assert_eq!(out.flush(), (Flush::Idle, 0));
    }

    #[test]
    fn a_direct_push_the_socket_took_part_of_queues_the_rest_before_later_frames() {
        let (out, wire, m) = socket_outbound();
        let frame = text("abc");
        let done = out.direct().unwrap().finish(&frame, Some(Ok(3)));
        assert_eq!(
            (done.pushed, done.written, done.writes),
            (Pushed::Queued, 0, 1)
        );
        assert_eq!(m.queued_bytes.load(Relaxed), 2);
        assert_eq!(out.push(&text("d")), Pushed::Queued, "never overtakes");
        wire.open(100);
        assert_eq!(out.flush(), (Flush::Idle, 2));
        assert_eq!(
            wire.written(),
            b"bc\x81\x01d",
            "the rest of the frame, then the next"
        );
    }

    #[test]
    fn a_direct_push_to_a_full_socket_queues_the_frame() {
        let (out, wire, m) = socket_outbound();
        let frame = text("abc");
        let blocked = Some(Err(io::ErrorKind::WouldBlock.into()));
        let done = out.direct().unwrap().finish(&frame, blocked);
        assert_eq!((done.pushed, done.writes), (Pushed::Queued, 1));
        assert_eq!(m.queued_frames.load(Relaxed), 1);
        assert_eq!(out.flush(), (Flush::Blocked, 0));
        wire.open(100);
        assert_eq!(out.flush(), (Flush::Idle, 1));
        assert_eq!(wire.written(), b"\x81\x03abc");
    }

    #[test]
    fn a_direct_push_whose_send_failed_closes_the_connection() {
        let (out, _, _) = socket_outbound();
        let failed = Some(Err(io::ErrorKind::BrokenPipe.into()));
        let done = out.direct().unwrap().finish(&text("a"), failed);
        assert_eq!(done.pushed, Pushed::Refused);
        assert!(out.is_closing());
        assert_eq!(out.flush(), (Flush::Failed, 0));
    }

    #[test]
    fn a_direct_push_not_sent_by_the_caller_is_written_as_a_push_would() {
        let (out, wire, _) = socket_outbound();
        wire.open(3);
        let done = out.direct().unwrap().finish(&text("a"), None);
        assert_eq!(
            (done.pushed, done.written, done.writes),
            (Pushed::Written, 1, 1)
        );
        assert_eq!(wire.written(), b"\x81\x01a");
        let done = out.direct().unwrap().finish(&text("bc"), None);
        assert_eq!(done.pushed, Pushed::Queued, "socket full: queued");
    }

    #[test]
    fn a_failed_write_closes_the_connection() {
        let (out, wire, _) = outbound(10, 1000);
        wire.broken.store(true, Relaxed);
        assert_eq!(out.push(&text("a")), Pushed::Refused);
        assert!(out.is_closing());
        assert_eq!(out.flush(), (Flush::Failed, 0));
    }

    #[test]
    fn dropping_a_queue_releases_its_gauges() {
        let (out, _, m) = outbound(10, 1000);
        assert_eq!(out.push(&text("abcd")), Pushed::Queued);
        drop(out);
        assert_eq!(m.queued_bytes.load(Relaxed), 0);
        assert_eq!(m.queued_frames.load(Relaxed), 0);
    }

    #[tokio::test]
    async fn a_close_wakes_the_session() {
        let (out, _, _) = outbound(10, 1000);
        let out = Arc::new(out);
        let waiter = tokio::spawn({
            let out = out.clone();
            async move { out.wait().await }
        });
        out.close(Close::DRAIN);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
