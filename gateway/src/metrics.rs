//! Gateway metrics: lock-free counters, gauges and the fan-out latency histogram, described
//! once in [`FAMILIES`] and turned by `roomcast_telemetry::exposition` into the Prometheus
//! text of the admin listener's `/metrics` and, when OTLP export is on, observable
//! OpenTelemetry instruments reading the same atomics (nothing is counted twice).

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use opentelemetry::metrics::Meter;
use roomcast_telemetry::exposition::{self, Family, Histogram, count};

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
    /// Write calls that carried frames to clients: one carries several when
    /// frames are coalesced, so `frames_out / frame_writes` is frames per write.
    pub frame_writes: AtomicU64,
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
    /// Connections on the public listener in the HTTP phase (not upgraded).
    pub http_connections: AtomicI64,
    /// Connections refused at accept because `limits.max_http_connections` were in the HTTP phase.
    pub http_connections_refused: AtomicU64,
    /// 1 while draining.
    pub draining: AtomicI64,
    /// 1 while the cluster bus is reachable.
    pub bus_up: AtomicI64,
    /// 1 while fan-out writes are batched through io_uring.
    pub io_uring: AtomicI64,
    /// Bus subscriptions held by this gateway (rooms and users with local members).
    pub bus_subscriptions: AtomicI64,
    /// 1 while the history store answers (always, in process or without
    /// history); 0 while JetStream is missing or unreachable.
    pub history_up: AtomicI64,
    /// Messages received from other gateways.
    pub bus_messages_in: AtomicU64,
    /// Messages published to other gateways.
    pub bus_messages_out: AtomicU64,
    /// Times the bus connection was restored after a loss.
    pub bus_reconnects: AtomicU64,
    /// Time to queue one message for every local recipient.
    pub fanout_seconds: Fanout,
    /// `joined`/`left` frames queued for local watchers.
    pub presence_events: AtomicU64,
    /// Presence exchange messages published to the bus (reports and watches).
    pub presence_bus_messages_out: AtomicU64,
    /// Presence reports received from other gateways.
    pub presence_bus_messages_in: AtomicU64,
}

impl Metrics {
    /// Counts an error frame.
    pub fn error(&self, code: ErrorCode) {
        self.errors[code.index()].fetch_add(1, Relaxed);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        exposition::render(FAMILIES, self)
    }

    /// Exports every metric over OTLP too: observable instruments read the same atomics at
    /// each export; fan-out latencies are recorded into an OpenTelemetry histogram from now on.
    pub fn export_otlp(self: &Arc<Self>, meter: &Meter) {
        exposition::export_otlp(FAMILIES, self, meter);
    }
}

/// Every metric family, in exposition order.
pub const FAMILIES: &[Family<Metrics>] = &[
    Family::gauge("roomcast_connections", "Open WebSocket connections.", |m| {
        m.connections.load(Relaxed)
    }),
    Family::counter(
        "roomcast_connections_opened_total",
        "WebSocket connections accepted.",
        |m| count(&m.connections_opened),
    ),
    Family::counter("roomcast_frames_in_total", "Client frames received.", |m| {
        count(&m.frames_in)
    }),
    Family::counter(
        "roomcast_frames_out_total",
        "Frames written to clients.",
        |m| count(&m.frames_out),
    ),
    Family::counter(
        "roomcast_frame_writes_total",
        "Socket write calls that carried frames to clients (several frames each when coalesced).",
        |m| count(&m.frame_writes),
    ),
    Family::counter(
        "roomcast_slow_consumer_closes_total",
        "Connections closed with 4008 (outbound queue overflow).",
        |m| count(&m.slow_consumer_closes),
    ),
    Family::gauge(
        "roomcast_outbound_queued_bytes",
        "Bytes waiting in outbound queues.",
        |m| m.queued_bytes.load(Relaxed),
    ),
    Family::gauge(
        "roomcast_outbound_queued_frames",
        "Frames waiting in outbound queues.",
        |m| m.queued_frames.load(Relaxed),
    ),
    Family::gauge(
        "roomcast_rooms",
        "Rooms with at least one local member.",
        |m| m.rooms.load(Relaxed),
    ),
    Family::counter("roomcast_joins_total", "Successful joins.", |m| {
        count(&m.joins)
    }),
    Family::counter(
        "roomcast_publishes_total",
        "Publishes accepted (WebSocket and HTTP).",
        |m| count(&m.publishes),
    ),
    Family::counter(
        "roomcast_sends_total",
        "Direct sends accepted (WebSocket and HTTP).",
        |m| count(&m.sends),
    ),
    Family::counter(
        "roomcast_upgrades_refused_total",
        "WebSocket upgrades refused.",
        |m| count(&m.upgrades_refused),
    ),
    Family::gauge(
        "roomcast_http_connections",
        "Connections on the public listener in the HTTP phase (not upgraded).",
        |m| m.http_connections.load(Relaxed),
    ),
    Family::counter(
        "roomcast_http_connections_refused_total",
        "Public connections refused at accept: limits.max_http_connections were in the HTTP phase.",
        |m| count(&m.http_connections_refused),
    ),
    Family::gauge("roomcast_draining", "1 while the gateway drains.", |m| {
        m.draining.load(Relaxed)
    }),
    Family::gauge(
        "roomcast_bus_up",
        "1 while the cluster bus is reachable.",
        |m| m.bus_up.load(Relaxed),
    ),
    Family::gauge(
        "roomcast_io_uring",
        "1 while fan-out writes go to the kernel 64 sockets per io_uring submission; 0: one sendmsg each.",
        |m| m.io_uring.load(Relaxed),
    ),
    Family::gauge(
        "roomcast_history_up",
        "1 while the history store answers; 0 while JetStream is missing or unreachable.",
        |m| m.history_up.load(Relaxed),
    ),
    Family::gauge(
        "roomcast_bus_subscriptions",
        "Bus subscriptions held (rooms and users with local members).",
        |m| m.bus_subscriptions.load(Relaxed),
    ),
    Family::counter(
        "roomcast_bus_messages_in_total",
        "Messages received from other gateways.",
        |m| count(&m.bus_messages_in),
    ),
    Family::counter(
        "roomcast_bus_messages_out_total",
        "Messages published to other gateways.",
        |m| count(&m.bus_messages_out),
    ),
    Family::counter(
        "roomcast_bus_reconnects_total",
        "Times the bus connection was restored after a loss.",
        |m| count(&m.bus_reconnects),
    ),
    Family::counter(
        "roomcast_presence_events_total",
        "joined/left frames queued for local watchers.",
        |m| count(&m.presence_events),
    ),
    Family::counter(
        "roomcast_presence_bus_messages_out_total",
        "Presence exchange messages published to the bus (reports and watches).",
        |m| count(&m.presence_bus_messages_out),
    ),
    Family::counter(
        "roomcast_presence_bus_messages_in_total",
        "Presence reports received from other gateways.",
        |m| count(&m.presence_bus_messages_in),
    ),
    Family::labelled_counter(
        "roomcast_errors_total",
        "Error frames sent, by code.",
        |m, out| {
            for code in ErrorCode::ALL {
                out.labelled(&[("code", code.as_str())], count(&m.errors[code.index()]));
            }
        },
    ),
    Family::histogram(
        "roomcast_fanout_seconds",
        "Time to queue one message for every local recipient (one observation per message).",
        |m| &m.fanout_seconds,
    ),
];

/// Upper bounds of the fan-out latency buckets, in nanoseconds (5 µs to 50 ms):
/// integers, so an observation never touches floating point.
pub const FANOUT_BOUNDS_NANOS: [u64; 12] = [
    5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000, 50_000_000,
];

/// The fan-out latency histogram, with the buckets of [`FANOUT_BOUNDS_NANOS`].
#[derive(Debug)]
pub struct Fanout(Histogram);

impl Default for Fanout {
    fn default() -> Self {
        Self(Histogram::new(&FANOUT_BOUNDS_NANOS))
    }
}

impl Deref for Fanout {
    type Target = Histogram;
    fn deref(&self) -> &Histogram {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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

    #[test]
    fn every_metric_keeps_its_name_and_type() {
        let text = Metrics::default().render();
        for (name, kind) in [
            ("roomcast_connections", "gauge"),
            ("roomcast_connections_opened_total", "counter"),
            ("roomcast_frames_in_total", "counter"),
            ("roomcast_frames_out_total", "counter"),
            ("roomcast_frame_writes_total", "counter"),
            ("roomcast_errors_total", "counter"),
            ("roomcast_slow_consumer_closes_total", "counter"),
            ("roomcast_outbound_queued_bytes", "gauge"),
            ("roomcast_outbound_queued_frames", "gauge"),
            ("roomcast_rooms", "gauge"),
            ("roomcast_joins_total", "counter"),
            ("roomcast_publishes_total", "counter"),
            ("roomcast_sends_total", "counter"),
            ("roomcast_upgrades_refused_total", "counter"),
            ("roomcast_http_connections", "gauge"),
            ("roomcast_http_connections_refused_total", "counter"),
            ("roomcast_draining", "gauge"),
            ("roomcast_bus_up", "gauge"),
            ("roomcast_io_uring", "gauge"),
            ("roomcast_history_up", "gauge"),
            ("roomcast_bus_subscriptions", "gauge"),
            ("roomcast_bus_messages_in_total", "counter"),
            ("roomcast_bus_messages_out_total", "counter"),
            ("roomcast_bus_reconnects_total", "counter"),
            ("roomcast_presence_events_total", "counter"),
            ("roomcast_presence_bus_messages_out_total", "counter"),
            ("roomcast_presence_bus_messages_in_total", "counter"),
            ("roomcast_fanout_seconds", "histogram"),
        ] {
            assert!(
                text.contains(&format!("\n# TYPE {name} {kind}\n"))
                    || text.starts_with(&format!("# HELP {name} ")),
                "{name} {kind} missing in\n{text}"
            );
        }
    }

    #[test]
    fn buckets_are_inclusive_upper_bounds() {
        let h = Fanout::default();
        assert_eq!(h.bucket_of(0), 0);
        assert_eq!(h.bucket_of(5_000), 0);
        assert_eq!(h.bucket_of(5_001), 1);
        assert_eq!(h.bucket_of(50_000_000), FANOUT_BOUNDS_NANOS.len() - 1);
        assert_eq!(h.bucket_of(u64::MAX), FANOUT_BOUNDS_NANOS.len());
    }

    #[test]
    fn histogram_renders_cumulative_buckets_sum_and_count() {
        let m = Metrics::default();
        m.fanout_seconds.observe(Duration::from_micros(3));
        m.fanout_seconds.observe(Duration::from_micros(40));
        m.fanout_seconds.observe(Duration::from_secs(1));
        assert_eq!(m.fanout_seconds.count(), 3);
        let text = m.render();
        for line in [
            "roomcast_fanout_seconds_bucket{le=\"0.000005\"} 1",
            "roomcast_fanout_seconds_bucket{le=\"0.00005\"} 2",
            "roomcast_fanout_seconds_bucket{le=\"0.05\"} 2",
            "roomcast_fanout_seconds_bucket{le=\"+Inf\"} 3",
            "roomcast_fanout_seconds_count 3",
            "roomcast_fanout_seconds_sum 1.000043",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
