//! Coalesced writes across connections (`write_delay_ms`): one task writes
//! out every connection's held frames when their window ends.
//!
//! With a write delay, a fan-out frame to an idle connection is held so the
//! frames after it share its write. Waking each connection's own task to
//! arm a timer, and again when it fires, would cost two task switches and a
//! timer per connection per window: in a hot room that is more than the
//! writes it saves. Instead the hub hands each connection that starts a
//! window to the [`Coalescer`], which keeps them in the order they are due
//! (every window has the same length, so that is the order they came in)
//! and, when the oldest is due, writes out every connection due by then in
//! one pass. A connection's task is woken only when its socket cannot take
//! everything, or it is closing.
//!
//! Bounded: a connection has at most one open window, so the list holds at
//! most one entry per connection (plus, briefly, stale entries of windows
//! already written, which are dropped when their time comes).

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};

use super::outbound::Outbound;
use crate::metrics::Metrics;

/// Windows ending this close together are written in the same pass: the
/// timer's own granularity is a millisecond, and one wake-up for all of
/// them is the point.
const SLACK: Duration = Duration::from_millis(1);

/// Connections with held frames, in the order their windows end.
#[derive(Debug)]
pub struct Coalescer<C> {
    inner: Arc<Inner<C>>,
    /// The writing task, started by the first hold (a gateway without a
    /// write delay never starts it).
    started: OnceLock<()>,
}

#[derive(Debug)]
struct Inner<C> {
    due: Mutex<VecDeque<(Instant, Arc<C>)>>,
    /// Wakes the task when the list goes from empty to not.
    arrived: Notify,
    metrics: Arc<Metrics>,
}

impl<C: AsRef<Outbound> + Send + Sync + 'static> Coalescer<C> {
    /// An empty list; its task starts with the first hold.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            inner: Arc::new(Inner {
                due: Mutex::new(VecDeque::new()),
                arrived: Notify::new(),
                metrics,
            }),
            started: OnceLock::new(),
        }
    }

    /// Takes connections whose pushes started a held window, each with the
    /// instant it ends (see `PushedMany::held_until`). Must be called
    /// within the Tokio runtime.
    pub fn hold(&self, held: Vec<(Instant, Arc<C>)>) {
        if held.is_empty() {
            return;
        }
        self.started.get_or_init(|| {
            tokio::spawn(Arc::clone(&self.inner).run());
        });
        let mut due = self.inner.list();
        let was_empty = due.is_empty();
        due.extend(held);
        drop(due);
        if was_empty {
            self.inner.arrived.notify_one();
        }
    }
}

impl<C: AsRef<Outbound> + Send + Sync + 'static> Inner<C> {
    fn list(&self) -> MutexGuard<'_, VecDeque<(Instant, Arc<C>)>> {
        // Every update is a single push or drain: a poisoned list is consistent.
        self.due.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes out each window when it ends, for as long as the hub lives.
    async fn run(self: Arc<Self>) {
        let mut batch = Vec::new();
        loop {
            let next = self.list().front().map(|(at, _)| *at);
            match next {
                None => self.arrived.notified().await,
                Some(at) => {
                    sleep_until(at).await;
                    let now = Instant::now();
                    self.take_due(now + SLACK, &mut batch);
                    let mut written = 0;
                    for conn in batch.drain(..) {
                        written += AsRef::<Outbound>::as_ref(&*conn).flush_held(now + SLACK);
                    }
                    self.metrics.frames_out.fetch_add(written, Relaxed);
                }
            }
            // Dropped with the hub: nothing more can be held.
            if Arc::strong_count(&self) == 1 {
                return;
            }
        }
    }

    /// Moves the entries due by `by` into `batch`, in order.
    fn take_due(&self, by: Instant, batch: &mut Vec<Arc<C>>) {
        let mut due = self.list();
        while due.front().is_some_and(|(at, _)| *at <= by) {
            if let Some((_, conn)) = due.pop_front() {
                batch.push(conn);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::frame::{Format, Frame};
    use crate::delivery::outbound::{QueueLimits, Wire};
    use std::io::{self, IoSlice};

    /// A socket that takes everything and counts its writes.
    #[derive(Debug, Default)]
    struct Sink {
        writes: Mutex<Vec<Vec<u8>>>,
    }

    impl Wire for Sink {
        fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let bytes: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = bytes.len();
            self.writes.lock().unwrap().push(bytes);
            Ok(n)
        }
    }

    struct Conn(Outbound);

    impl AsRef<Outbound> for Conn {
        fn as_ref(&self) -> &Outbound {
            &self.0
        }
    }

    fn conn(delay: Duration, metrics: &Arc<Metrics>) -> (Arc<Conn>, Arc<Sink>) {
        let sink = Arc::new(Sink::default());
        let limits = QueueLimits {
            frames: 100,
            bytes: 1 << 20,
        };
        let out = Outbound::new(limits, metrics.clone(), sink.clone(), Format::WebSocketText)
            .with_write_delay(delay);
        (Arc::new(Conn(out)), sink)
    }

    fn text(s: &str) -> Frame {
        Frame::new(s.to_string())
    }

    #[tokio::test(start_paused = true)]
    async fn every_connection_held_in_a_window_gets_one_write_when_it_ends() {
        let metrics = Arc::new(Metrics::default());
        let coalescer = Coalescer::new(metrics.clone());
        let delay = Duration::from_millis(20);
        let conns: Vec<_> = (0..3).map(|_| conn(delay, &metrics)).collect();
        let start = Instant::now();
        let mut held = Vec::new();
        for (c, _) in &conns {
            let pushed = c.0.push_many(&[text("a")]);
            held.push((pushed.held_until.expect("starts a window"), c.clone()));
            let pushed = c.0.push_many(&[text("b"), text("c")]);
            assert_eq!(pushed.held_until, None, "the window is already open");
        }
        coalescer.hold(held);
        // Not before the window ends.
        tokio::time::sleep(delay - Duration::from_millis(2)).await;
        assert!(
            conns
                .iter()
                .all(|(_, s)| s.writes.lock().unwrap().is_empty())
        );
        tokio::time::sleep(Duration::from_millis(3)).await;
        for (_, sink) in &conns {
            let writes = sink.writes.lock().unwrap();
            assert_eq!(writes.len(), 1, "three frames, one write");
            assert_eq!(writes[0], b"\x81\x01a\x81\x01b\x81\x01c");
        }
        assert_eq!(metrics.frames_out.load(Relaxed), 9);
        assert!(Instant::now() - start >= delay);
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_written_early_is_not_written_twice() {
        let metrics = Arc::new(Metrics::default());
        let coalescer = Coalescer::new(metrics.clone());
        let (c, sink) = conn(Duration::from_millis(20), &metrics);
        let pushed = c.0.push_many(&[text("a")]);
        coalescer.hold(vec![(pushed.held_until.unwrap(), c.clone())]);
        // The session's reply takes the held frame with it at once.
        c.0.push(&text("r"));
        assert_eq!(c.0.flush().1, 2);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(sink.writes.lock().unwrap().len(), 1);
        assert_eq!(
            metrics.frames_out.load(Relaxed),
            0,
            "the session counts its own"
        );
    }
}
