//! Draining: turning a gateway away from new clients and closing its existing
//! connections with 1012, spread evenly over the drain period so their
//! reconnects do not land on the other gateways all at once.
//!
//! SIGTERM and `POST /drain` start the same drain; only SIGTERM exits after it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use crate::delivery::hub::Hub;
use crate::delivery::outbound::Close;
use crate::metrics::Metrics;

/// Share of the drain period over which closes are spread; the rest leaves
/// time for the last close handshakes before the period ends.
const SPREAD_NUMERATOR: u32 = 9;
const SPREAD_DENOMINATOR: u32 = 10;

/// When, relative to the start of a drain, the `i`-th of `n` connections is closed.
pub fn close_offset(i: usize, n: usize, period: Duration) -> Duration {
    if n == 0 {
        return Duration::ZERO;
    }
    let spread = period * SPREAD_NUMERATOR / SPREAD_DENOMINATOR;
    spread.mul_f64(i as f64 / n as f64)
}

/// Whether this gateway is draining, and whether its drain has finished.
#[derive(Debug)]
pub struct Drain {
    started: AtomicBool,
    finished: watch::Sender<bool>,
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            started: AtomicBool::new(false),
            finished: watch::Sender::new(false),
        }
    }
}

impl Drain {
    /// Whether a drain has started (readiness is then 503 and upgrades are refused).
    pub fn is_draining(&self) -> bool {
        self.started.load(Relaxed)
    }

    /// Starts draining `hub` over `period` unless a drain already started.
    /// Returns whether this call started it.
    pub fn start(self: &Arc<Self>, hub: Arc<Hub>, metrics: &Metrics, period: Duration) -> bool {
        if self.started.swap(true, Relaxed) {
            return false;
        }
        metrics.draining.store(1, Relaxed);
        tracing::info!(
            connections = hub.connection_count(),
            period_s = period.as_secs_f64(),
            "drain started"
        );
        let this = self.clone();
        tokio::spawn(async move {
            close_all(&hub, period).await;
            tracing::info!(remaining = hub.connection_count(), "drain finished");
            this.finished.send_replace(true);
        });
        true
    }

    /// Resolves once a started drain has closed every connection or run out its period.
    pub async fn finished(&self) {
        let mut rx = self.finished.subscribe();
        // The sender lives as long as self, so this only ends when finished.
        let _ = rx.wait_for(|done| *done).await;
    }
}

async fn close_all(hub: &Hub, period: Duration) {
    let start = Instant::now();
    let conns = hub.connections();
    let n = conns.len();
    for (i, conn) in conns.iter().enumerate() {
        sleep_until(start + close_offset(i, n, period)).await;
        conn.outbound.close(Close::DRAIN);
    }
    // Connections whose upgrade was under way when the drain started.
    for conn in hub.connections() {
        conn.outbound.close(Close::DRAIN);
    }
    hub.wait_empty(start + period).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_spread_evenly_within_the_period() {
        let period = Duration::from_secs(10);
        let offsets: Vec<_> = (0..4).map(|i| close_offset(i, 4, period)).collect();
        assert_eq!(offsets, [0, 2250, 4500, 6750].map(Duration::from_millis));
        assert!((0..1000).all(|i| close_offset(i, 1000, period) < period * 9 / 10));
        assert_eq!(close_offset(0, 0, period), Duration::ZERO);
    }
}
