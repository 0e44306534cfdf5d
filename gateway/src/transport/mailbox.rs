//! A fallback session's wire: the encoded frames waiting for the HTTP side
//! to take them (the SSE response stream, or the next poll).
//!
//! It is the [`Wire`] the session's outbound queue writes to. It holds at
//! most `budget` bytes (one poll answer, or what an SSE stream may have in
//! flight); beyond that writes would block, so frames wait in the outbound
//! queue, whose bounds close a slow consumer with 4008 exactly as over
//! WebSocket. It takes whole frames only (never part of one), so a poll
//! answer is always a list of complete frames.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSlice};
use std::sync::{Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

use crate::delivery::outbound::Wire;

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Bytes>,
    bytes: usize,
    /// The session has written its last frame (its close).
    finished: bool,
    /// The reader is gone for good (the SSE response was dropped).
    abandoned: bool,
}

/// Frames on their way to the HTTP side.
pub struct Mailbox {
    state: Mutex<State>,
    budget: usize,
    /// Woken when frames arrive or the session finishes.
    arrived: Notify,
    /// Woken when frames are taken or the reader goes.
    taken: Notify,
}

impl fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailbox")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// What [`Mailbox::take`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Taken {
    /// The frames, oldest first.
    pub frames: Vec<Bytes>,
    /// Nothing more will ever come: the session has ended.
    pub finished: bool,
}

impl Mailbox {
    /// An empty mailbox holding at most `budget` bytes (and always at least
    /// one frame, however large).
    pub fn new(budget: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            budget,
            arrived: Notify::new(),
            taken: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update is a few field writes that cannot panic halfway.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the frames waiting, at most `max` of them (all when `None`).
    pub fn take(&self, max: Option<usize>) -> Taken {
        let mut state = self.state();
        let n = max.map_or(state.frames.len(), |max| max.min(state.frames.len()));
        let frames: Vec<Bytes> = state.frames.drain(..n).collect();
        state.bytes -= frames.iter().map(Bytes::len).sum::<usize>();
        let taken = Taken {
            frames,
            finished: state.finished && state.frames.is_empty(),
        };
        drop(state);
        // One waiter (the session); a stored permit covers a take that
        // lands between its flush and its wait.
        self.taken.notify_one();
        taken
    }

    /// Waits until frames are waiting or the session has finished.
    pub async fn wait_arrived(&self) {
        self.wait_until(&self.arrived, |s| !s.frames.is_empty() || s.finished)
            .await;
    }

    /// Resolves at the next take or abandonment (the session then flushes again).
    pub async fn wait_taken(&self) {
        self.taken.notified().await;
    }

    /// Waits until everything written has been taken, or the reader is gone.
    pub async fn wait_emptied(&self) {
        self.wait_until(&self.taken, |s| s.frames.is_empty() || s.abandoned)
            .await;
    }

    /// Waits until `done` holds, checking again whenever `notify` wakes.
    async fn wait_until(&self, notify: &Notify, done: impl Fn(&State) -> bool) {
        loop {
            // Registered before the check, so a wake between the two is not lost.
            let woken = notify.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if done(&self.state()) {
                return;
            }
            woken.await;
        }
    }

    /// The session wrote its last frame.
    pub fn finish(&self) {
        self.state().finished = true;
        self.arrived.notify_waiters();
    }

    /// The reader is gone for good: writes fail from now on.
    pub fn abandon(&self) {
        let mut state = self.state();
        state.abandoned = true;
        state.frames.clear();
        state.bytes = 0;
        drop(state);
        self.taken.notify_one();
    }

    /// Whether the reader is gone for good.
    pub fn is_abandoned(&self) -> bool {
        self.state().abandoned
    }
}

impl Wire for Mailbox {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut state = self.state();
        if state.abandoned {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let mut written = 0;
        for buf in bufs {
            if !state.frames.is_empty() && state.bytes + buf.len() > self.budget {
                break;
            }
            state
                .frames
                .push_back(Bytes::from(BytesMut::from(&buf[..])));
            state.bytes += buf.len();
            written += buf.len();
        }
        drop(state);
        if written == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.arrived.notify_waiters();
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(mailbox: &Mailbox, frames: &[&str]) -> io::Result<usize> {
        let slices: Vec<IoSlice<'_>> = frames.iter().map(|f| IoSlice::new(f.as_bytes())).collect();
        mailbox.try_write_vectored(&slices)
    }

    #[test]
    fn whole_frames_are_taken_until_the_budget_then_writes_block() {
        let mailbox = Mailbox::new(5);
        assert_eq!(write(&mailbox, &["abc", "de", "f"]).unwrap(), 5, "f waits");
        assert_eq!(
            write(&mailbox, &["f"]).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        let taken = mailbox.take(Some(1));
        assert_eq!(taken.frames, [Bytes::from_static(b"abc")]);
        assert!(!taken.finished);
        assert_eq!(write(&mailbox, &["f"]).unwrap(), 1);
        assert_eq!(mailbox.take(None).frames.len(), 2);
    }

    #[test]
    fn an_empty_mailbox_takes_one_frame_over_the_budget() {
        let mailbox = Mailbox::new(2);
        assert_eq!(write(&mailbox, &["large", "x"]).unwrap(), 5);
        mailbox.finish();
        let taken = mailbox.take(None);
        assert_eq!(taken.frames, [Bytes::from_static(b"large")]);
        assert!(taken.finished, "finished once emptied");
    }

    #[test]
    fn an_abandoned_mailbox_fails_writes() {
        let mailbox = Mailbox::new(10);
        write(&mailbox, &["a"]).unwrap();
        mailbox.abandon();
        assert!(mailbox.is_abandoned());
        assert_eq!(
            write(&mailbox, &["b"]).unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
    }

    #[tokio::test]
    async fn waiters_wake_on_arrival_and_on_finish() {
        let mailbox = std::sync::Arc::new(Mailbox::new(10));
        let waiter = tokio::spawn({
            let mailbox = mailbox.clone();
            async move { mailbox.wait_arrived().await }
        });
        write(&mailbox, &["a"]).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        mailbox.take(None);
        let emptied =
            tokio::time::timeout(std::time::Duration::from_secs(5), mailbox.wait_emptied());
        emptied.await.unwrap();
        mailbox.finish();
        tokio::time::timeout(std::time::Duration::from_secs(5), mailbox.wait_arrived())
            .await
            .unwrap();
    }
}
