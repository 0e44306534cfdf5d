//! The operator's own `/metrics` (Prometheus text) and `/healthz`, served on the metrics
//! port: reconciles, errors, scale decisions, scrape and drain failures, chosen replicas,
//! leadership. One table ([`FAMILIES`]) feeds both the text exposition and, when export is
//! on, OTLP ([`OperatorMetrics::export_otlp`]), through `roomcast_telemetry::exposition`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use opentelemetry::metrics::Meter;
use roomcast_telemetry::exposition::{self, Family, count};

/// Counters and gauges of one operator process.
#[derive(Debug, Default)]
pub struct OperatorMetrics {
    reconciles: AtomicU64,
    errors: AtomicU64,
    scale_ups: AtomicU64,
    scale_downs: AtomicU64,
    scrape_failures: AtomicU64,
    drain_failures: AtomicU64,
    leader: AtomicBool,
    replicas: Mutex<BTreeMap<(String, String), i32>>,
}

/// Direction of a replica change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// More replicas.
    Up,
    /// Fewer replicas.
    Down,
}

/// Every family the operator exports, in exposition order.
pub const FAMILIES: &[Family<OperatorMetrics>] = &[
    Family::counter(
        "roomcast_operator_reconciles_total",
        "Reconciles run.",
        |m| count(&m.reconciles),
    ),
    Family::counter(
        "roomcast_operator_reconcile_errors_total",
        "Reconciles that failed.",
        |m| count(&m.errors),
    ),
    Family::counter(
        "roomcast_operator_scrape_failures_total",
        "Gateway metrics reads that failed.",
        |m| count(&m.scrape_failures),
    ),
    Family::counter(
        "roomcast_operator_drain_failures_total",
        "Gateway drain calls that failed.",
        |m| count(&m.drain_failures),
    ),
    Family::labelled_counter(
        "roomcast_operator_scale_decisions_total",
        "Replica changes by the builtin autoscaler.",
        |m, out| {
            out.labelled(&[("direction", "up")], count(&m.scale_ups));
            out.labelled(&[("direction", "down")], count(&m.scale_downs));
        },
    ),
    Family::gauge(
        "roomcast_operator_leader",
        "1 while this process holds the leader lease.",
        |m| i64::from(m.leader.load(Ordering::Relaxed)),
    ),
    Family::labelled_gauge(
        "roomcast_operator_replicas",
        "Replicas chosen per RealtimeCluster.",
        |m, out| {
            if let Ok(map) = m.replicas.lock() {
                for ((namespace, name), replicas) in map.iter() {
                    out.labelled(
                        &[("namespace", namespace), ("name", name)],
                        i64::from(*replicas),
                    );
                }
            }
        },
    ),
];

impl OperatorMetrics {
    /// One reconcile ran.
    pub fn reconciled(&self) {
        self.reconciles.fetch_add(1, Ordering::Relaxed);
    }
    /// One reconcile failed.
    pub fn failed(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
    /// The autoscaler changed replicas.
    pub fn scaled(&self, direction: Direction) {
        match direction {
            Direction::Up => &self.scale_ups,
            Direction::Down => &self.scale_downs,
        }
        .fetch_add(1, Ordering::Relaxed);
    }
    /// Pods whose metrics could not be read.
    pub fn scrape_failed(&self, pods: usize) {
        self.scrape_failures
            .fetch_add(u64::try_from(pods).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
    /// Victims whose drain call failed.
    pub fn drain_failed(&self, pods: usize) {
        self.drain_failures
            .fetch_add(u64::try_from(pods).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
    /// Whether this process holds the leader lease.
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }
    /// Replicas chosen for a cluster.
    pub fn set_replicas(&self, namespace: &str, name: &str, replicas: i32) {
        if let Ok(mut map) = self.replicas.lock() {
            map.insert((namespace.into(), name.into()), replicas);
        }
    }
    /// Forgets a deleted cluster, so its series stop being exported.
    pub fn forget(&self, namespace: &str, name: &str) {
        if let Ok(mut map) = self.replicas.lock() {
            map.remove(&(namespace.to_string(), name.to_string()));
        }
    }

    /// Exports the same families over OTLP: observable instruments that read these
    /// values at each export.
    pub fn export_otlp(self: &Arc<Self>, meter: &Meter) {
        exposition::export_otlp(FAMILIES, self, meter);
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        exposition::render(FAMILIES, self)
    }
}

/// The `/metrics` + `/healthz` routes.
pub fn router(metrics: Arc<OperatorMetrics>) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(metrics)
}

async fn serve_metrics(State(m): State<Arc<OperatorMetrics>>) -> impl IntoResponse {
    ([(CONTENT_TYPE, exposition::CONTENT_TYPE)], m.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges() {
        let t = OperatorMetrics::default();
        t.reconciled();
        t.reconciled();
        t.failed();
        t.scaled(Direction::Up);
        t.scrape_failed(3);
        t.set_leader(true);
        t.set_replicas("apps", "chat", 4);
        t.set_replicas("apps", "gone", 1);
        t.forget("apps", "gone");
        let text = t.render();
        for line in [
            "roomcast_operator_reconciles_total 2",
            "roomcast_operator_reconcile_errors_total 1",
            "roomcast_operator_scale_decisions_total{direction=\"up\"} 1",
            "roomcast_operator_scale_decisions_total{direction=\"down\"} 0",
            "roomcast_operator_scrape_failures_total 3",
            "roomcast_operator_leader 1",
            "roomcast_operator_replicas{namespace=\"apps\",name=\"chat\"} 4",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(!text.contains("gone"));
    }

    async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_metrics_and_health_over_http() {
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            let t = Arc::new(OperatorMetrics::default());
            t.reconciled();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move { axum::serve(listener, router(t)).await });
            let health = http_get(addr, "/healthz").await;
            assert!(health.starts_with("HTTP/1.1 200"), "{health}");
            let metrics = http_get(addr, "/metrics").await;
            assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
            assert!(
                metrics.contains("roomcast_operator_reconciles_total 1"),
                "{metrics}"
            );
            assert!(http_get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
            server.abort();
        })
        .await
        .unwrap();
    }
}
