//! The soak's periodic samples: RSS and open file descriptors of every
//! gateway, of nats-server and of the load generator itself (from /proc),
//! and each gateway's connection and room gauges (from its `/metrics`).

use std::net::SocketAddr;

use serde::Serialize;

use crate::client;
use crate::procstat::{fd_count, rss_kib};

/// Largest `/metrics` answer read.
const METRICS_LIMIT: u64 = 1 << 20;

/// The value of an unlabelled gauge or counter in a Prometheus text exposition.
pub fn parse_gauge(text: &str, name: &str) -> Option<i64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        let v: f64 = value.split_whitespace().next()?.parse().ok()?;
        Some(v as i64)
    })
}

/// One process at one sample.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessSample {
    /// `gw-a`, `gw-b`, `nats` or `loadgen`.
    pub name: String,
    /// Process id.
    pub pid: u32,
    /// VmRSS in KiB (`None`: unreadable, e.g. the process is gone).
    pub rss_kib: Option<u64>,
    /// Entries of /proc/PID/fd.
    pub fds: Option<u64>,
}

/// One gateway's gauges at one sample.
#[derive(Debug, Clone, Serialize)]
pub struct GatewaySample {
    /// `roomcast_connections`.
    pub connections: Option<i64>,
    /// `roomcast_rooms`.
    pub rooms: Option<i64>,
    /// `roomcast_bus_up`.
    pub bus_up: Option<i64>,
    /// `roomcast_slow_consumer_closes_total` (4008 closes so far).
    pub slow_closes: Option<i64>,
}

/// Everything read at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the load started.
    pub t_s: f64,
    /// `load` (during the run) or `end` (after every client left).
    pub phase: &'static str,
    /// Churning connections the load generator had open.
    pub churn_open: u64,
    /// Per process, gateways first, then nats-server, then the load generator.
    pub processes: Vec<ProcessSample>,
    /// Per gateway, in the order of the targets.
    pub gateways: Vec<GatewaySample>,
}

/// Reads one gateway's gauges.
pub async fn gateway(admin: SocketAddr) -> GatewaySample {
    let text = client::http_get(admin, "/metrics", METRICS_LIMIT)
        .await
        .unwrap_or_default();
    GatewaySample {
        connections: parse_gauge(&text, "roomcast_connections"),
        rooms: parse_gauge(&text, "roomcast_rooms"),
        bus_up: parse_gauge(&text, "roomcast_bus_up"),
        slow_closes: parse_gauge(&text, "roomcast_slow_consumer_closes_total"),
    }
}

/// Reads a process's RSS and descriptors.
pub fn process(name: &str, pid: u32) -> ProcessSample {
    ProcessSample {
        name: name.to_owned(),
        pid,
        rss_kib: rss_kib(pid),
        fds: fd_count(pid),
    }
}

/// Takes one sample of `processes` (name, pid) and the gateways at `admins`.
pub async fn take(
    t_s: f64,
    phase: &'static str,
    churn_open: u64,
    processes: &[(String, u32)],
    admins: &[SocketAddr],
) -> Sample {
    let mut gateways = Vec::with_capacity(admins.len());
    for &admin in admins {
        gateways.push(gateway(admin).await);
    }
    Sample {
        t_s: crate::latency::round3(t_s),
        phase,
        churn_open,
        processes: processes
            .iter()
            .map(|(name, pid)| process(name, *pid))
            .collect(),
        gateways,
    }
}

/// The values of `metric` (`rss` or `fds`) of process `name` over `samples`,
/// skipping samples where it was unreadable or had another pid than `pid`.
pub fn series(samples: &[&Sample], name: &str, pid: u32, rss: bool) -> Vec<u64> {
    samples
        .iter()
        .filter_map(|s| {
            let p = s
                .processes
                .iter()
                .find(|p| p.name == name && p.pid == pid)?;
            if rss { p.rss_kib } else { p.fds }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_are_found_by_exact_name() {
        let text = "# HELP roomcast_connections Open WebSocket connections.\n\
                    # TYPE roomcast_connections gauge\n\
                    roomcast_connections 12\n\
                    roomcast_connections_opened_total 500\n\
                    roomcast_rooms 3\n\
                    roomcast_errors_total{code=\"internal\"} 0\n\
                    roomcast_bus_up 1\n";
        assert_eq!(parse_gauge(text, "roomcast_connections"), Some(12));
        assert_eq!(
            parse_gauge(text, "roomcast_connections_opened_total"),
            Some(500)
        );
        assert_eq!(parse_gauge(text, "roomcast_rooms"), Some(3));
        assert_eq!(parse_gauge(text, "roomcast_bus_up"), Some(1));
        assert_eq!(parse_gauge(text, "roomcast_errors_total"), None);
        assert_eq!(parse_gauge(text, "roomcast_missing"), None);
        assert_eq!(parse_gauge("x 1e3\n", "x"), Some(1000));
        assert_eq!(parse_gauge("x nope\n", "x"), None);
    }

    #[test]
    fn series_follow_one_process_instance() {
        let sample = |t: f64, pid: u32, rss: Option<u64>| Sample {
            t_s: t,
            phase: "load",
            churn_open: 0,
            processes: vec![ProcessSample {
                name: "nats".into(),
                pid,
                rss_kib: rss,
                fds: Some(10),
            }],
            gateways: vec![],
        };
        let all = [
            sample(0.0, 1, Some(100)),
            sample(1.0, 1, None),
            sample(2.0, 2, Some(300)),
            sample(3.0, 2, Some(310)),
        ];
        let refs: Vec<&Sample> = all.iter().collect();
        assert_eq!(series(&refs, "nats", 1, true), vec![100]);
        assert_eq!(series(&refs, "nats", 2, true), vec![300, 310]);
        assert_eq!(series(&refs, "nats", 2, false), vec![10, 10]);
        assert!(series(&refs, "gw-a", 1, true).is_empty());
    }
}
