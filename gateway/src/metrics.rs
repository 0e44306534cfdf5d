//! Gateway metrics: lock-free counters and gauges, rendered in the Prometheus
//! text exposition format on the admin listener's `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use crate::protocol::ErrorCode;

/// Every metric the gateway exports. Shared by all connections; each field is
/// a single atomic so updating one never contends on a lock.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open WebSocket connections (`roomcast_connections`, the operator scales on it).
    pub connections: AtomicI64,
    /// Connections accepted since start.
    pub connections_opened: AtomicU64,
    /// Client frames received.
    pub frames_in: AtomicU64,
    /// Frames written to clients.
    pub frames_out: AtomicU64,
    /// Error frames sent, by code (indexed by [`ErrorCode::index`]).
    pub errors: [AtomicU64; ErrorCode::ALL.len()],
    /// Connections closed with 4008 because their outbound queue overflowed.
    pub slow_consumer_closes: AtomicU64,
    /// Bytes waiting in outbound queues, over all connections.
    pub queued_bytes: AtomicI64,
    /// Frames waiting in outbound queues, over all connections.
    pub queued_frames: AtomicI64,
    /// Rooms with at least one member on this gateway.
    pub rooms: AtomicI64,
    /// Successful joins.
    pub joins: AtomicU64,
    /// Publishes accepted (WebSocket and HTTP API).
    pub publishes: AtomicU64,
    /// Direct sends accepted (WebSocket and HTTP API).
    pub sends: AtomicU64,
    /// Upgrades refused (401, 403, 503).
    pub upgrades_refused: AtomicU64,
    /// 1 while draining.
    pub draining: AtomicI64,
    /// 1 while the cluster bus is reachable.
    pub bus_up: AtomicI64,
    /// Bus subscriptions held by this gateway (rooms and users with local members).
    pub bus_subscriptions: AtomicI64,
    /// Messages received from other gateways.
    pub bus_messages_in: AtomicU64,
    /// Messages published to other gateways.
    pub bus_messages_out: AtomicU64,
    /// Times the bus connection was restored after a loss.
    pub bus_reconnects: AtomicU64,
}

impl Metrics {
    /// Counts an error frame.
    pub fn error(&self, code: ErrorCode) {
        self.errors[code.index()].fetch_add(1, Relaxed);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let gauge = |out: &mut String, name: &str, help: &str, v: i64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
            );
        };
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            );
        };
        gauge(
            &mut out,
            "roomcast_connections",
            "Open WebSocket connections.",
            self.connections.load(Relaxed),
        );
        counter(
            &mut out,
            "roomcast_connections_opened_total",
            "WebSocket connections accepted.",
            self.connections_opened.load(Relaxed),
        );
        counter(
            &mut out,
            "roomcast_frames_in_total",
            "Client frames received.",
            self.frames_in.load(Relaxed),
        );
        counter(
            &mut out,
            "roomcast_frames_out_total",
            "Frames written to clients.",
            self.frames_out.load(Relaxed),
        );
        out.push_str("# HELP roomcast_errors_total Error frames sent, by code.\n# TYPE roomcast_errors_total counter\n");
        for code in ErrorCode::ALL {
            let _ = writeln!(
                out,
                "roomcast_errors_total{{code=\"{}\"}} {}",
                code.as_str(),
                self.errors[code.index()].load(Relaxed)
            );
        }
        counter(
            &mut out,
            "roomcast_slow_consumer_closes_total",
            "Connections closed with 4008 (outbound queue overflow).",
            self.slow_consumer_closes.load(Relaxed),
        );
        gauge(
            &mut out,
            "roomcast_outbound_queued_bytes",
            "Bytes waiting in outbound queues.",
            self.queued_bytes.load(Relaxed),
        );
        gauge(
            &mut out,
            "roomcast_outbound_queued_frames",
            "Frames waiting in outbound queues.",
            self.queued_frames.load(Relaxed),
        );
        gauge(
            &mut out,
            "roomcast_rooms",
            "Rooms with at least one local member.",
            self.rooms.load(Relaxed),
        );
        counter(
            &mut out,
            "roomcast_joins_total",
            "Successful joins.",
            self.joins.load(Relaxed),
        );
        counter(
            &mut out,
            "roomcast_publishes_total",
            "Publishes accepted (WebSocket and HTTP).",
            self.publishes.load(Relaxed),
        );
        counter(
            &mut out,
            "roomcast_sends_total",
            "Direct sends accepted (WebSocket and HTTP).",
            self.sends.load(Relaxed),
        );
        counter(
            &mut out,
            "roomcast_upgrades_refused_total",
            "WebSocket upgrades refused.",
            self.upgrades_refused.load(Relaxed),
        );
        gauge(
            &mut out,
            "roomcast_draining",
            "1 while the gateway drains.",
            self.draining.load(Relaxed),
        );
        gauge(
            &mut out,
            "roomcast_bus_up",
            "1 while the cluster bus is reachable.",
            self.bus_up.load(Relaxed),
        );
        gauge(
            &mut out,
            "roomcast_bus_subscriptions",
            "Bus subscriptions held (rooms and users with local members).",
            self.bus_subscriptions.load(Relaxed),
        );
        counter(
            &mut out,
            "roomcast_bus_messages_in_total",
            "Messages received from other gateways.",
            self.bus_messages_in.load(Relaxed),
        );
        counter(
            &mut out,
            "roomcast_bus_messages_out_total",
            "Messages published to other gateways.",
            self.bus_messages_out.load(Relaxed),
        );
        counter(
            &mut out,
            "roomcast_bus_reconnects_total",
            "Times the bus connection was restored after a loss.",
            self.bus_reconnects.load(Relaxed),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_error_code_and_the_connection_gauge() {
        let m = Metrics::default();
        m.connections.store(3, Relaxed);
        m.error(ErrorCode::RateLimited);
        let text = m.render();
        assert!(text.contains("\nroomcast_connections 3\n"));
        assert!(text.contains("roomcast_errors_total{code=\"rate_limited\"} 1\n"));
        assert!(text.contains("roomcast_errors_total{code=\"internal\"} 0\n"));
    }
}
