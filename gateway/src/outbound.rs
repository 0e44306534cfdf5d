//! A connection's bounded outbound queue.
//!
//! Producers (the connection's own session, and every publisher fanning out to
//! a room it is in) push already-encoded frames without blocking; the
//! connection's writer takes everything queued at once and flushes it in one
//! go. A queue that would exceed its frame or byte bound marks the connection
//! for a 4008 close instead of growing, so memory stays bounded whatever a
//! client does. Frames are shared `Utf8Bytes`: queuing one is a reference-count
//! increment, never a copy.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;

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
    /// 4001: the token expired.
    pub const TOKEN_EXPIRED: Close = Close {
        code: 4001,
        reason: "token expired",
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

/// What the writer should do next.
#[derive(Debug, PartialEq)]
pub enum Next {
    /// Frames were moved into the batch: write them all, then flush once.
    Frames,
    /// Close with this code (any frames to write first are in the batch).
    Close(Close),
    /// Nothing to do: wait for [`Outbound::wait`].
    Idle,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Utf8Bytes>,
    bytes: usize,
    close: Option<Close>,
    close_taken: bool,
}

/// The queue between a connection's producers and its writer.
#[derive(Debug)]
pub struct Outbound {
    state: Mutex<State>,
    wake: Notify,
    closing: Notify,
    limits: QueueLimits,
    metrics: Arc<Metrics>,
}

/// Capacity an idle queue keeps; more is released so idle connections stay small.
const IDLE_CAPACITY: usize = 16;

impl Outbound {
    /// An empty queue.
    pub fn new(limits: QueueLimits, metrics: Arc<Metrics>) -> Self {
        Self {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            closing: Notify::new(),
            limits,
            metrics,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // (every update is a single push/take), so recover from poisoning.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a frame. Returns false when the connection is closing or the
    /// queue overflowed (which starts a 4008 close).
    pub fn push(&self, frame: Utf8Bytes) -> bool {
        let len = frame.len();
        let mut state = self.state();
        if state.close.is_some() {
            return false;
        }
        if state.queue.len() >= self.limits.frames || state.bytes + len > self.limits.bytes {
            drop(state);
            if self.close(Close::SLOW_CONSUMER) {
                self.metrics.slow_consumer_closes.fetch_add(1, Relaxed);
            }
            return false;
        }
        state.queue.push_back(frame);
        state.bytes += len;
        let was_empty = state.queue.len() == 1;
        drop(state);
        self.metrics.queued_bytes.fetch_add(len as i64, Relaxed);
        self.metrics.queued_frames.fetch_add(1, Relaxed);
        if was_empty {
            self.wake.notify_one();
        }
        true
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
        self.closing.notify_waiters();
        true
    }

    /// Whether a close has been started.
    pub fn is_closing(&self) -> bool {
        self.state().close.is_some()
    }

    /// Resolves once a close has been started.
    pub async fn closing(&self) {
        loop {
            let notified = self.closing.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_closing() {
                return;
            }
            notified.await;
        }
    }

    /// Resolves when there may be something for [`Outbound::next`].
    pub async fn wait(&self) {
        self.wake.notified().await;
    }

    /// Moves everything queued into `batch` (which the writer reuses) and says
    /// what to do with it.
    pub fn next(&self, batch: &mut VecDeque<Utf8Bytes>) -> Next {
        let mut state = self.state();
        if let Some(close) = state.close
            && (close.discards_pending() || state.queue.is_empty())
        {
            if state.close_taken {
                return Next::Idle;
            }
            state.close_taken = true;
            let (frames, bytes) = (state.queue.len(), state.bytes);
            state.queue = VecDeque::new();
            state.bytes = 0;
            drop(state);
            self.release(frames, bytes);
            return Next::Close(close);
        }
        if state.queue.is_empty() {
            // Going idle: give back what a burst grew, so idle connections stay small.
            state.queue.shrink_to(IDLE_CAPACITY);
            batch.shrink_to(IDLE_CAPACITY);
            return Next::Idle;
        }
        std::mem::swap(&mut state.queue, batch);
        let (frames, bytes) = (batch.len(), state.bytes);
        state.bytes = 0;
        drop(state);
        self.release(frames, bytes);
        Next::Frames
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

    fn queue(frames: usize, bytes: usize) -> (Outbound, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        (
            Outbound::new(QueueLimits { frames, bytes }, metrics.clone()),
            metrics,
        )
    }

    #[test]
    fn takes_everything_queued_at_once() {
        let (q, m) = queue(10, 1000);
        assert!(q.push("a".into()));
        assert!(q.push("bc".into()));
        assert_eq!(m.queued_bytes.load(Relaxed), 3);
        let mut batch = VecDeque::new();
        assert_eq!(q.next(&mut batch), Next::Frames);
        assert_eq!(batch.len(), 2);
        assert_eq!(m.queued_bytes.load(Relaxed), 0);
        assert_eq!(m.queued_frames.load(Relaxed), 0);
        batch.clear();
        assert_eq!(q.next(&mut batch), Next::Idle);
    }

    #[test]
    fn overflow_by_frames_or_bytes_closes_with_4008_and_drops_the_queue() {
        let (q, m) = queue(2, 1000);
        assert!(q.push("a".into()));
        assert!(q.push("b".into()));
        assert!(!q.push("c".into()));
        assert!(!q.push("d".into()), "closed queues refuse frames");
        assert_eq!(m.slow_consumer_closes.load(Relaxed), 1, "counted once");
        let mut batch = VecDeque::new();
        assert_eq!(q.next(&mut batch), Next::Close(Close::SLOW_CONSUMER));
        assert!(batch.is_empty());
        assert_eq!(m.queued_bytes.load(Relaxed), 0);
        assert_eq!(
            q.next(&mut batch),
            Next::Idle,
            "the close is handed out once"
        );

        let (q, _) = queue(100, 5);
        assert!(q.push("abc".into()));
        assert!(!q.push("abc".into()));
        assert!(q.is_closing());
    }

    #[test]
    fn other_closes_write_pending_frames_first() {
        let (q, _) = queue(10, 1000);
        assert!(q.push("a".into()));
        assert!(q.close(Close::DRAIN));
        assert!(!q.close(Close::NORMAL), "the first close wins");
        let mut batch = VecDeque::new();
        assert_eq!(q.next(&mut batch), Next::Frames);
        batch.clear();
        assert_eq!(q.next(&mut batch), Next::Close(Close::DRAIN));
    }

    #[test]
    fn dropping_a_queue_releases_its_gauges() {
        let (q, m) = queue(10, 1000);
        assert!(q.push("abcd".into()));
        drop(q);
        assert_eq!(m.queued_bytes.load(Relaxed), 0);
        assert_eq!(m.queued_frames.load(Relaxed), 0);
    }

    #[tokio::test]
    async fn closing_resolves_after_close() {
        let (q, _) = queue(10, 1000);
        let q = Arc::new(q);
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.closing().await }
        });
        q.close(Close::DRAIN);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
