//! The operator's own `/metrics` (Prometheus text) and `/healthz`, served on the metrics
//! port: reconciles, errors, scale decisions, scrape and drain failures, chosen replicas,
//! leadership. The same values go out over OTLP when export is on
//! ([`Telemetry::export_otlp`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;

/// Counters and gauges of one operator process.
#[derive(Debug, Default)]
pub struct Telemetry {
    reconciles: AtomicU64,
    errors: AtomicU64,
    scale_ups: AtomicU64,
    scale_downs: AtomicU64,
    scrape_failures: AtomicU64,
    drain_failures: AtomicU64,
    leader: AtomicBool,
    replicas: Mutex<BTreeMap<(String, String), i32>>,
}

/// Reads one counter of [`Telemetry`].
type Field = fn(&Telemetry) -> &AtomicU64;

/// Direction of a replica change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// More replicas.
    Up,
    /// Fewer replicas.
    Down,
}

impl Telemetry {
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
    /// Forgets a deleted cluster.
    pub fn forget(&self, namespace: &str, name: &str) {
        if let Ok(mut map) = self.replicas.lock() {
            map.remove(&(namespace.to_string(), name.to_string()));
        }
    }

    /// Exports the same counters and gauges over OTLP: observable
    /// instruments that read these atomics at each export.
    pub fn export_otlp(self: &Arc<Self>, meter: &Meter) {
        let counters: [(&str, &str, Field); 4] = [
            ("roomcast_operator_reconciles", "Reconciles run.", |t| {
                &t.reconciles
            }),
            (
                "roomcast_operator_reconcile_errors",
                "Reconciles that failed.",
                |t| &t.errors,
            ),
            (
                "roomcast_operator_scrape_failures",
                "Gateway metrics reads that failed.",
                |t| &t.scrape_failures,
            ),
            (
                "roomcast_operator_drain_failures",
                "Gateway drain calls that failed.",
                |t| &t.drain_failures,
            ),
        ];
        for (name, help, field) in counters {
            let t = self.clone();
            meter
                .u64_observable_counter(name)
                .with_description(help)
                .with_callback(move |o| o.observe(field(&t).load(Ordering::Relaxed), &[]))
                .build();
        }
        let t = self.clone();
        meter
            .u64_observable_counter("roomcast_operator_scale_decisions")
            .with_description("Replica changes by the builtin autoscaler.")
            .with_callback(move |o| {
                for (dir, v) in [("up", &t.scale_ups), ("down", &t.scale_downs)] {
                    o.observe(
                        v.load(Ordering::Relaxed),
                        &[KeyValue::new("direction", dir)],
                    );
                }
            })
            .build();
        let t = self.clone();
        meter
            .i64_observable_gauge("roomcast_operator_leader")
            .with_description("1 while this process holds the leader lease.")
            .with_callback(move |o| o.observe(i64::from(t.leader.load(Ordering::Relaxed)), &[]))
            .build();
        let t = self.clone();
        meter
            .i64_observable_gauge("roomcast_operator_replicas")
            .with_description("Replicas chosen per RealtimeCluster.")
            .with_callback(move |o| {
                if let Ok(map) = t.replicas.lock() {
                    for ((ns, name), r) in map.iter() {
                        o.observe(
                            i64::from(*r),
                            &[
                                KeyValue::new("namespace", ns.clone()),
                                KeyValue::new("name", name.clone()),
                            ],
                        );
                    }
                }
            })
            .build();
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        };
        counter(
            &mut out,
            "roomcast_operator_reconciles_total",
            "Reconciles run.",
            &self.reconciles,
        );
        counter(
            &mut out,
            "roomcast_operator_reconcile_errors_total",
            "Reconciles that failed.",
            &self.errors,
        );
        counter(
            &mut out,
            "roomcast_operator_scrape_failures_total",
            "Gateway metrics reads that failed.",
            &self.scrape_failures,
        );
        counter(
            &mut out,
            "roomcast_operator_drain_failures_total",
            "Gateway drain calls that failed.",
            &self.drain_failures,
        );
        let _ = writeln!(
            out,
            "# HELP roomcast_operator_scale_decisions_total Replica changes by the builtin autoscaler.\n\
             # TYPE roomcast_operator_scale_decisions_total counter"
        );
        for (dir, v) in [("up", &self.scale_ups), ("down", &self.scale_downs)] {
            let _ = writeln!(
                out,
                "roomcast_operator_scale_decisions_total{{direction=\"{dir}\"}} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP roomcast_operator_leader 1 while this process holds the leader lease.\n\
             # TYPE roomcast_operator_leader gauge\nroomcast_operator_leader {}",
            u8::from(self.leader.load(Ordering::Relaxed))
        );
        let _ = writeln!(
            out,
            "# HELP roomcast_operator_replicas Replicas chosen per RealtimeCluster.\n\
             # TYPE roomcast_operator_replicas gauge"
        );
        if let Ok(map) = self.replicas.lock() {
            for ((ns, name), r) in map.iter() {
                let _ = writeln!(
                    out,
                    "roomcast_operator_replicas{{namespace=\"{}\",name=\"{}\"}} {r}",
                    escape(ns),
                    escape(name)
                );
            }
        }
        out
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The `/metrics` + `/healthz` routes.
pub fn router(telemetry: Arc<Telemetry>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(telemetry)
}

async fn metrics(State(t): State<Arc<Telemetry>>) -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], t.render())
}

/// Serves the routes on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, telemetry: Arc<Telemetry>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics and health endpoint listening");
    axum::serve(listener, router(telemetry)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges() {
        let t = Telemetry::default();
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

    async fn http_get(addr: SocketAddr, path: &str) -> String {
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
            let t = Arc::new(Telemetry::default());
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
