//! Gateway metrics: lock-free counters, gauges and the fan-out latency
//! histogram, rendered in the Prometheus text exposition format on the admin
//! listener's `/metrics` and, when OTLP export is on, read by observable
//! OpenTelemetry instruments (the same atomics: nothing is counted twice).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;

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
    /// Connections on the public listener in the HTTP phase (not upgraded).
    pub http_connections: AtomicI64,
    /// Connections refused at accept because `limits.max_http_connections` were in the HTTP phase.
    pub http_connections_refused: AtomicU64,
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
    /// Time to queue one message for every local recipient.
    pub fanout_seconds: Histogram,
}

impl Metrics {
    /// Counts an error frame.
    pub fn error(&self, code: ErrorCode) {
        self.errors[code.index()].fetch_add(1, Relaxed);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        for s in SCALARS {
            let kind = match s.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n",
                name = s.name,
                help = s.help,
                v = (s.read)(self)
            );
        }
        out.push_str("# HELP roomcast_errors_total Error frames sent, by code.\n# TYPE roomcast_errors_total counter\n");
        for code in ErrorCode::ALL {
            let _ = writeln!(
                out,
                "roomcast_errors_total{{code=\"{}\"}} {}",
                code.as_str(),
                self.errors[code.index()].load(Relaxed)
            );
        }
        self.fanout_seconds.render(
            &mut out,
            "roomcast_fanout_seconds",
            "Time to queue one message for every local recipient (one observation per message).",
        );
        out
    }

    /// Exports every metric over OTLP too: observable instruments read the
    /// same atomics at each export; fan-out latencies are recorded into an
    /// OpenTelemetry histogram from now on.
    pub fn export_otlp(self: &Arc<Self>, meter: &Meter) {
        for s in SCALARS {
            let name = s.name.trim_end_matches("_total");
            let (m, read) = (self.clone(), s.read);
            match s.kind {
                Kind::Counter => {
                    meter
                        .u64_observable_counter(name)
                        .with_description(s.help)
                        .with_callback(move |o| o.observe(read(&m).max(0) as u64, &[]))
                        .build();
                }
                Kind::Gauge => {
                    meter
                        .i64_observable_gauge(name)
                        .with_description(s.help)
                        .with_callback(move |o| o.observe(read(&m), &[]))
                        .build();
                }
            }
        }
        let m = self.clone();
        meter
            .u64_observable_counter("roomcast_errors")
            .with_description("Error frames sent, by code.")
            .with_callback(move |o| {
                for code in ErrorCode::ALL {
                    o.observe(
                        m.errors[code.index()].load(Relaxed),
                        &[KeyValue::new("code", code.as_str())],
                    );
                }
            })
            .build();
        let histogram = meter
            .f64_histogram("roomcast_fanout_seconds")
            .with_unit("s")
            .with_description("Time to queue one message for every local recipient.")
            .with_boundaries(
                FANOUT_BOUNDS_NANOS
                    .iter()
                    .map(|&n| n as f64 / 1e9)
                    .collect(),
            )
            .build();
        let _ = self.fanout_seconds.otlp.set(histogram);
    }
}

/// Whether a scalar only grows or goes up and down.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// One unlabelled metric: its Prometheus name, help text and reader.
struct Scalar {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    read: fn(&Metrics) -> i64,
}

const fn scalar(
    name: &'static str,
    help: &'static str,
    kind: Kind,
    read: fn(&Metrics) -> i64,
) -> Scalar {
    Scalar {
        name,
        help,
        kind,
        read,
    }
}

fn count(v: &AtomicU64) -> i64 {
    i64::try_from(v.load(Relaxed)).unwrap_or(i64::MAX)
}

/// Every unlabelled metric, in exposition order.
const SCALARS: &[Scalar] = &[
    scalar(
        "roomcast_connections",
        "Open WebSocket connections.",
        Kind::Gauge,
        |m| m.connections.load(Relaxed),
    ),
    scalar(
        "roomcast_connections_opened_total",
        "WebSocket connections accepted.",
        Kind::Counter,
        |m| count(&m.connections_opened),
    ),
    scalar(
        "roomcast_frames_in_total",
        "Client frames received.",
        Kind::Counter,
        |m| count(&m.frames_in),
    ),
    scalar(
        "roomcast_frames_out_total",
        "Frames written to clients.",
        Kind::Counter,
        |m| count(&m.frames_out),
    ),
    scalar(
        "roomcast_slow_consumer_closes_total",
        "Connections closed with 4008 (outbound queue overflow).",
        Kind::Counter,
        |m| count(&m.slow_consumer_closes),
    ),
    scalar(
        "roomcast_outbound_queued_bytes",
        "Bytes waiting in outbound queues.",
        Kind::Gauge,
        |m| m.queued_bytes.load(Relaxed),
    ),
    scalar(
        "roomcast_outbound_queued_frames",
        "Frames waiting in outbound queues.",
        Kind::Gauge,
        |m| m.queued_frames.load(Relaxed),
    ),
    scalar(
        "roomcast_rooms",
        "Rooms with at least one local member.",
        Kind::Gauge,
        |m| m.rooms.load(Relaxed),
    ),
    scalar(
        "roomcast_joins_total",
        "Successful joins.",
        Kind::Counter,
        |m| count(&m.joins),
    ),
    scalar(
        "roomcast_publishes_total",
        "Publishes accepted (WebSocket and HTTP).",
        Kind::Counter,
        |m| count(&m.publishes),
    ),
    scalar(
        "roomcast_sends_total",
        "Direct sends accepted (WebSocket and HTTP).",
        Kind::Counter,
        |m| count(&m.sends),
    ),
    scalar(
        "roomcast_upgrades_refused_total",
        "WebSocket upgrades refused.",
        Kind::Counter,
        |m| count(&m.upgrades_refused),
    ),
    scalar(
        "roomcast_http_connections",
        "Connections on the public listener in the HTTP phase (not upgraded).",
        Kind::Gauge,
        |m| m.http_connections.load(Relaxed),
    ),
    scalar(
        "roomcast_http_connections_refused_total",
        "Public connections refused at accept: limits.max_http_connections were in the HTTP phase.",
        Kind::Counter,
        |m| count(&m.http_connections_refused),
    ),
    scalar(
        "roomcast_draining",
        "1 while the gateway drains.",
        Kind::Gauge,
        |m| m.draining.load(Relaxed),
    ),
    scalar(
        "roomcast_bus_up",
        "1 while the cluster bus is reachable.",
        Kind::Gauge,
        |m| m.bus_up.load(Relaxed),
    ),
    scalar(
        "roomcast_bus_subscriptions",
        "Bus subscriptions held (rooms and users with local members).",
        Kind::Gauge,
        |m| m.bus_subscriptions.load(Relaxed),
    ),
    scalar(
        "roomcast_bus_messages_in_total",
        "Messages received from other gateways.",
        Kind::Counter,
        |m| count(&m.bus_messages_in),
    ),
    scalar(
        "roomcast_bus_messages_out_total",
        "Messages published to other gateways.",
        Kind::Counter,
        |m| count(&m.bus_messages_out),
    ),
    scalar(
        "roomcast_bus_reconnects_total",
        "Times the bus connection was restored after a loss.",
        Kind::Counter,
        |m| count(&m.bus_reconnects),
    ),
];

/// Upper bounds of the fan-out latency buckets, in nanoseconds (5 µs to 50 ms):
/// integers, so an observation never touches floating point.
pub const FANOUT_BOUNDS_NANOS: [u64; 12] = [
    5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000, 50_000_000,
];

/// A fixed-bucket latency histogram: one atomic add per bucket hit and one
/// for the sum, no lock and no allocation per observation.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; FANOUT_BOUNDS_NANOS.len() + 1],
    sum_nanos: AtomicU64,
    /// The OTLP copy, once OTLP metrics are on.
    otlp: OnceLock<opentelemetry::metrics::Histogram<f64>>,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let i = bucket_of(nanos);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(nanos, Relaxed);
        if let Some(h) = self.otlp.get() {
            h.record(elapsed.as_secs_f64(), &[]);
        }
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} histogram\n");
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Relaxed);
            match FANOUT_BOUNDS_NANOS.get(i) {
                Some(&bound) => {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{le=\"{}\"}} {cumulative}",
                        bound as f64 / 1e9
                    );
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = self.sum_nanos.load(Relaxed) as f64 / 1e9;
        let _ = write!(out, "{name}_sum {sum}\n{name}_count {cumulative}\n");
    }
}

/// The bucket an observation of `nanos` falls in (bounds are inclusive).
fn bucket_of(nanos: u64) -> usize {
    FANOUT_BOUNDS_NANOS
        .iter()
        .position(|&bound| nanos <= bound)
        .unwrap_or(FANOUT_BOUNDS_NANOS.len())
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

    #[test]
    fn every_metric_keeps_its_name_and_type() {
        let text = Metrics::default().render();
        for (name, kind) in [
            ("roomcast_connections", "gauge"),
            ("roomcast_connections_opened_total", "counter"),
            ("roomcast_frames_in_total", "counter"),
            ("roomcast_frames_out_total", "counter"),
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
            ("roomcast_bus_subscriptions", "gauge"),
            ("roomcast_bus_messages_in_total", "counter"),
            ("roomcast_bus_messages_out_total", "counter"),
            ("roomcast_bus_reconnects_total", "counter"),
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
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(5_000), 0);
        assert_eq!(bucket_of(5_001), 1);
        assert_eq!(bucket_of(50_000_000), FANOUT_BOUNDS_NANOS.len() - 1);
        assert_eq!(bucket_of(u64::MAX), FANOUT_BOUNDS_NANOS.len());
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
