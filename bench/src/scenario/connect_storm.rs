//! `connect-storm`: N clients connect at once; the time until every one of
//! them has its welcome, the spread of connect → welcome times, and failures.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::{Instant, timeout};

use crate::client;
use crate::latency::{Summary, round3, summarize};
use crate::target::{Target, source_address};
use crate::{BenchError, progress};

/// Parameters of a connect storm.
#[derive(Debug, Clone)]
pub struct Config {
    /// Gateways (or baseline nodes); client `i` goes to target `i % len`.
    pub targets: Vec<Target>,
    /// Clients connecting at once.
    pub clients: usize,
    /// Connections per loopback source address (0: no binding).
    pub per_source_address: usize,
    /// A client not welcomed within this counts as failed.
    pub timeout: Duration,
}

/// The result of a connect storm.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always "connect-storm".
    pub scenario: &'static str,
    /// Target URLs.
    pub targets: Vec<String>,
    /// Clients.
    pub clients: usize,
    /// Clients welcomed.
    pub welcomed: usize,
    /// Clients that failed, by reason.
    pub failures: BTreeMap<String, u64>,
    /// Seconds from the start until the last welcome (all clients, successful or not).
    pub time_to_all_welcomed_s: f64,
    /// Connect → welcome per client.
    pub welcome_latency: Summary,
}

/// A failure reason with the variable parts (addresses) left out, so equal
/// causes group together.
pub fn failure_kind(message: &str) -> String {
    let lower = message.to_ascii_lowercase();
    for kind in [
        "timed out",
        "no welcome",
        "refused",
        "reset",
        "handshake",
        "address",
        "too many open files",
        "closed",
    ] {
        if lower.contains(kind) {
            return kind.to_owned();
        }
    }
    message.chars().take(60).collect()
}

/// Runs the scenario.
pub async fn run(cfg: &Config) -> Result<Report, BenchError> {
    if cfg.targets.is_empty() {
        return Err(BenchError::new("connect-storm needs targets"));
    }
    let start = Instant::now();
    let tasks: Vec<_> = (0..cfg.clients)
        .map(|i| {
            let target = cfg.targets[i % cfg.targets.len()].clone();
            let source = source_address(i, cfg.per_source_address, &target.addr);
            let limit = cfg.timeout;
            tokio::spawn(async move {
                let began = Instant::now();
                match timeout(limit, client::connect_welcomed(&target, source)).await {
                    Ok(Ok((ws, _node))) => Ok((ws, began.elapsed())),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("timed out".to_owned()),
                }
            })
        })
        .collect();
    let bar = progress::bar(cfg.clients as u64, "welcomed");
    let mut open = Vec::with_capacity(cfg.clients);
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
        .map_err(|e| BenchError::new(e.to_string()))?;
    for task in tasks {
        match task.await {
            Ok(Ok((ws, took))) => {
                hist.saturating_record((took.as_micros() as u64).max(1));
                open.push(ws);
            }
            Ok(Err(e)) => *failures.entry(failure_kind(&e)).or_default() += 1,
            Err(e) => *failures.entry(failure_kind(&e.to_string())).or_default() += 1,
        }
        bar.inc(1);
    }
    let all = start.elapsed();
    bar.finish_and_clear();
    let welcomed = open.len();
    drop(open);
    Ok(Report {
        scenario: "connect-storm",
        targets: cfg.targets.iter().map(|t| t.url.clone()).collect(),
        clients: cfg.clients,
        welcomed,
        failures,
        time_to_all_welcomed_s: round3(all.as_secs_f64()),
        welcome_latency: summarize(&hist),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_group_by_cause() {
        assert_eq!(failure_kind("Connection refused (os error 111)"), "refused");
        assert_eq!(
            failure_kind("no welcome from ws://127.0.0.1:1/ws in time"),
            "no welcome"
        );
        assert_eq!(
            failure_kind("Too many open files (os error 24)"),
            "too many open files"
        );
        assert_eq!(failure_kind("weird"), "weird");
    }
}
