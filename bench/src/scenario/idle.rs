//! `idle`: N idle connections, each joined to one room, opened from
//! 127.0.0.2, 127.0.0.3, … so one process gets past the ephemeral port
//! range; server memory per connection from VmRSS before and after. With
//! `--transport sse` (or `poll`) the connections are HTTP fallback sessions
//! instead of WebSockets.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::watch;

use crate::client;
use crate::fallback::{self, Feed};
use crate::procstat::rss_kib;
use crate::scenario::{open_all, room_name};
use crate::target::{Target, source_address};
use crate::{BenchError, progress};

/// Parameters of an idle run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Gateways (or baseline nodes); connection `i` goes to target `i % len`.
    pub targets: Vec<Target>,
    /// Connections to open.
    pub connections: usize,
    /// Rooms; connection `i` joins room `i % rooms`.
    pub rooms: usize,
    /// Connections per loopback source address (0: no binding).
    pub per_source_address: usize,
    /// Handshakes in flight at once.
    pub connect_concurrency: usize,
    /// Wait after the last join before reading memory.
    pub settle: Duration,
    /// Keep the connections open this much longer (to watch heartbeats).
    pub hold: Duration,
    /// Server processes whose memory is measured.
    pub server_pids: Vec<u32>,
    /// A fallback instead of WebSocket.
    pub fallback: Option<fallback::Kind>,
}

/// Memory of one server process.
#[derive(Debug, Clone, Serialize)]
pub struct ServerMemory {
    /// Process id.
    pub pid: u32,
    /// VmRSS before any connection, KiB.
    pub rss_before_kib: u64,
    /// VmRSS with the connections open, KiB.
    pub rss_after_kib: u64,
}

/// The result of an idle run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always "idle".
    pub scenario: &'static str,
    /// `websocket`, `sse` or `poll`.
    pub transport: &'static str,
    /// Target URLs.
    pub targets: Vec<String>,
    /// Connections asked for.
    pub connections: usize,
    /// Connections welcomed and joined.
    pub connected: usize,
    /// Connections that failed to open or join.
    pub failures: usize,
    /// The first failure, if any.
    pub first_failure: Option<String>,
    /// Connections the server closed while idle.
    pub closed_while_idle: u64,
    /// Per server process.
    pub servers: Vec<ServerMemory>,
    /// Sum of RSS growth over the servers, KiB.
    pub rss_growth_kib: i64,
    /// (RSS with N − RSS with none) / N, bytes.
    pub bytes_per_connection: f64,
    /// Seconds to open and join all connections.
    pub connect_s: f64,
}

/// Memory per connection in bytes from RSS before and after, in KiB.
pub fn bytes_per_connection(before_kib: u64, after_kib: u64, connections: usize) -> f64 {
    if connections == 0 {
        return 0.0;
    }
    let growth = after_kib as f64 - before_kib as f64;
    (growth * 1024.0 / connections as f64).round()
}

/// Runs the scenario.
pub async fn run(cfg: &Config) -> Result<Report, BenchError> {
    if cfg.targets.is_empty() || cfg.rooms == 0 {
        return Err(BenchError::new("idle needs targets and rooms"));
    }
    let before: Vec<u64> = cfg
        .server_pids
        .iter()
        .map(|&pid| rss_kib(pid).unwrap_or(0))
        .collect();
    let http = fallback::http_client()?;
    let started = tokio::time::Instant::now();
    let results = open_all(
        cfg.connections,
        cfg.connect_concurrency,
        "connecting",
        |i| {
            let target = &cfg.targets[i % cfg.targets.len()];
            let source = source_address(i, cfg.per_source_address, &target.addr);
            let room = room_name("idle-", i % cfg.rooms);
            let http = &http;
            async move {
                if let Some(kind) = cfg.fallback {
                    return Ok(Idle::Fallback(Feed::open(http, target, kind, &room).await?));
                }
                let (mut ws, _) = client::connect_welcomed(target, source).await?;
                client::join(&mut ws, &room, 1).await?;
                Ok(Idle::Ws(ws))
            }
        },
    )
    .await;
    let connect_s = started.elapsed().as_secs_f64();

    let closed = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut failures = 0;
    let mut first_failure = None;
    let mut holders = Vec::new();
    for result in results {
        match result {
            Ok(mut conn) => {
                let closed = Arc::clone(&closed);
                let mut stop = stop_rx.clone();
                // Keep reading so pings are answered; count server closes.
                holders.push(tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            _ = stop.changed() => break,
                            open = conn.next() => if !open {
                                closed.fetch_add(1, Ordering::Relaxed);
                                break;
                            },
                        }
                    }
                }));
            }
            Err(e) => {
                failures += 1;
                first_failure.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let connected = holders.len();

    wait(cfg.settle, "settling").await;
    let after: Vec<u64> = cfg
        .server_pids
        .iter()
        .map(|&pid| rss_kib(pid).unwrap_or(0))
        .collect();
    wait(cfg.hold, "holding").await;
    let closed_while_idle = closed.load(Ordering::Relaxed);
    let _ = stop_tx.send(true);
    for holder in holders {
        let _ = holder.await;
    }

    let servers: Vec<ServerMemory> = cfg
        .server_pids
        .iter()
        .zip(before.iter().zip(&after))
        .map(|(&pid, (&b, &a))| ServerMemory {
            pid,
            rss_before_kib: b,
            rss_after_kib: a,
        })
        .collect();
    let before_sum: u64 = before.iter().sum();
    let after_sum: u64 = after.iter().sum();
    Ok(Report {
        scenario: "idle",
        transport: cfg.fallback.map_or("websocket", fallback::Kind::name),
        targets: cfg.targets.iter().map(|t| t.url.clone()).collect(),
        connections: cfg.connections,
        connected,
        failures,
        first_failure,
        closed_while_idle,
        servers,
        rss_growth_kib: after_sum as i64 - before_sum as i64,
        bytes_per_connection: bytes_per_connection(before_sum, after_sum, connected),
        connect_s: crate::latency::round3(connect_s),
    })
}

/// One idle connection.
enum Idle {
    Ws(client::Ws),
    Fallback(Feed),
}

impl Idle {
    /// Reads what comes next (pings, heartbeat comments, empty polls);
    /// false once the server has closed or dropped the connection.
    async fn next(&mut self) -> bool {
        match self {
            Idle::Ws(ws) => matches!(ws.next().await, Some(Ok(_))),
            Idle::Fallback(feed) => matches!(feed.next().await, fallback::Next::Frame(_)),
        }
    }
}

async fn wait(period: Duration, what: &str) {
    if period.is_zero() {
        return;
    }
    let bar = progress::bar(period.as_secs().max(1), what);
    let end = tokio::time::Instant::now() + period;
    while tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1).min(end - tokio::time::Instant::now())).await;
        bar.inc(1);
    }
    bar.finish_and_clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_connection_memory_is_growth_over_count() {
        assert_eq!(bytes_per_connection(10_000, 50_000, 10_000), 4096.0);
        assert_eq!(bytes_per_connection(10_000, 9_000, 1000), -1024.0);
        assert_eq!(bytes_per_connection(1, 2, 0), 0.0);
    }
}
