//! `fanout`: N subscribers over K rooms spread across the targets, P
//! publishers at R msg/s with S-byte payloads; delivered rate, end-to-end
//! latency, and lost / duplicated / out-of-order counts per (publisher, room,
//! subscriber); server CPU time per delivered message. Shares of the
//! subscribers may use the HTTP fallbacks (SSE, long polling) instead of
//! WebSocket; latency is then reported per transport too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::client::{self, Ws};
use crate::fallback::{self, Feed};
use crate::latency::{self, Summary, round3, unix_us};
use crate::ledger::Problems;
use crate::procstat::{CpuSnapshot, ProcessCpu};
use crate::scenario::{all_ok, open_all, own_cpu_seconds, room_name};
use crate::subscriber::{Conn, Path, TRANSPORTS};
use crate::target::{Target, source_address};
use crate::wsfeed::WsFeed;
use crate::{BenchError, publisher, subscriber, wire};

/// Problem triples listed individually in the result (the rest are counted).
const LISTED_PROBLEMS: usize = 20;

/// Parameters of a fanout run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Gateways (or baseline nodes) to spread clients over.
    pub targets: Vec<Target>,
    /// Subscribing connections, each in one room.
    pub subscribers: usize,
    /// Rooms.
    pub rooms: usize,
    /// Publishing connections.
    pub publishers: usize,
    /// Messages per second per publisher.
    pub rate: f64,
    /// Approximate size of each message's `data`, bytes.
    pub payload: usize,
    /// How long publishers publish.
    pub duration: Duration,
    /// Messages sent in this first part are checked but not timed.
    pub warmup: Duration,
    /// How long to wait after the last publish for deliveries in flight.
    pub grace: Duration,
    /// Server processes whose CPU time is measured.
    pub server_pids: Vec<u32>,
    /// Handshakes in flight at once while connecting.
    pub connect_concurrency: usize,
    /// Connections per loopback source address (0: no binding).
    pub per_source_address: usize,
    /// Room names are this prefix and the room index.
    pub room_prefix: String,
    /// Share of the subscribers on Server-Sent Events (0..=1).
    pub sse_share: f64,
    /// Share of the subscribers on long polling (0..=1).
    pub poll_share: f64,
}

/// One (publisher, room, subscriber) triple with problems.
#[derive(Debug, Clone, Serialize)]
pub struct Triple {
    /// Publisher index.
    pub publisher: u32,
    /// Room index.
    pub room: u32,
    /// Subscriber index.
    pub subscriber: usize,
    /// Its counts.
    #[serde(flatten)]
    pub problems: Problems,
}

/// The result of a fanout run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always "fanout".
    pub scenario: &'static str,
    /// Target URLs.
    pub targets: Vec<String>,
    /// Subscribers.
    pub subscribers: usize,
    /// Rooms.
    pub rooms: usize,
    /// Publishers.
    pub publishers: usize,
    /// Messages per second per publisher.
    pub rate_per_publisher: f64,
    /// Payload bytes.
    pub payload_bytes: usize,
    /// Publishing time, seconds.
    pub duration_s: f64,
    /// Deliveries per second offered: publishes/s × members per room.
    pub offered_deliveries_per_s: f64,
    /// Publishes sent.
    pub published: u64,
    /// Deliveries the publishes call for.
    pub expected_deliveries: u64,
    /// Probes received by subscribers.
    pub delivered: u64,
    /// Deliveries per second, from the first due publish to the end of delivery.
    pub delivered_per_s: f64,
    /// Publish → deliver latency (send time to receipt), after warm-up.
    pub latency: Summary,
    /// Subscribers per transport (`websocket`, `sse`, `poll`).
    pub transports: BTreeMap<String, usize>,
    /// The latency of each transport that has subscribers.
    pub latency_by_transport: BTreeMap<String, Summary>,
    /// The latency of deliveries by the publisher's own gateway
    /// (`same_gateway`) and of those that crossed NATS (`across_gateways`),
    /// each where there were any.
    pub latency_by_path: BTreeMap<String, Summary>,
    /// Totals over all triples.
    #[serde(flatten)]
    pub problems: Problems,
    /// Triples with any problem.
    pub problem_triples: usize,
    /// The first few of them.
    pub problem_list: Vec<Triple>,
    /// Messages that were not probes, or probes from rooms a subscriber is not in.
    pub foreign: u64,
    /// Probes with impossible sequence numbers.
    pub implausible: u64,
    /// Subscribers closed by the server, by close code.
    pub subscriber_closes: BTreeMap<String, u64>,
    /// Subscribers whose connection failed.
    pub subscriber_failures: u64,
    /// `error` frames to publishers, by code.
    pub publisher_errors: BTreeMap<String, u64>,
    /// Publishers that could not send everything.
    pub publisher_failures: u64,
    /// How late publishes went out against their schedule (a held-back
    /// publisher: see `publisher.rs`).
    pub publisher_lag: Summary,
    /// CPU seconds per server process during the run.
    pub server_cpu: Vec<ProcessCpu>,
    /// Their sum.
    pub server_cpu_s: f64,
    /// Server CPU microseconds per delivered message.
    pub server_cpu_us_per_delivery: f64,
    /// CPU seconds of the load generator itself.
    pub loadgen_cpu_s: f64,
}

/// The room subscriber `i` joins.
pub fn subscriber_room(i: usize, rooms: usize) -> usize {
    i % rooms.max(1)
}

/// The target subscriber `i` connects to: consecutive members of one room
/// alternate between targets, so every room spans every gateway.
pub fn subscriber_target(i: usize, rooms: usize, targets: usize) -> usize {
    (i / rooms.max(1)) % targets.max(1)
}

/// The fallback subscriber `i` uses (`None`: WebSocket), for shares `sse`
/// and `poll` of the subscribers. A golden-ratio sequence spreads each
/// transport evenly over the subscribers, so over every room and target.
pub fn subscriber_transport(i: usize, sse: f64, poll: f64) -> Option<fallback::Kind> {
    let x = (i as f64 * 0.618_033_988_749_895).fract();
    if x < sse {
        Some(fallback::Kind::Sse)
    } else if x < sse + poll {
        Some(fallback::Kind::Poll)
    } else {
        None
    }
}

/// Members of each room.
pub fn members_per_room(subscribers: usize, rooms: usize) -> Vec<u64> {
    let mut members = vec![0u64; rooms.max(1)];
    for i in 0..subscribers {
        members[subscriber_room(i, rooms)] += 1;
    }
    members
}

/// Deliveries that `sent[p][room]` publishes call for.
pub fn expected_deliveries(sent: &[Vec<u64>], members: &[u64]) -> u64 {
    sent.iter()
        .flat_map(|per_room| per_room.iter().zip(members).map(|(s, m)| s * m))
        .sum()
}

/// Runs the scenario.
pub async fn run(cfg: &Config) -> Result<Report, BenchError> {
    if cfg.targets.is_empty() || cfg.rooms == 0 || cfg.publishers == 0 || cfg.rate <= 0.0 {
        return Err(BenchError::new(
            "fanout needs targets, rooms, publishers and a positive rate",
        ));
    }
    let shares_ok = |x: f64| (0.0..=1.0).contains(&x);
    if !shares_ok(cfg.sse_share)
        || !shares_ok(cfg.poll_share)
        || cfg.sse_share + cfg.poll_share > 1.0
    {
        return Err(BenchError::new(
            "--sse-share and --poll-share are shares of the subscribers: each in 0..=1, together at most 1",
        ));
    }
    let http = fallback::http_client()?;
    let rooms: Arc<Vec<String>> = Arc::new(
        (0..cfg.rooms)
            .map(|r| room_name(&cfg.room_prefix, r))
            .collect(),
    );

    let subs: Vec<Conn> = all_ok(
        open_all(
            cfg.subscribers,
            cfg.connect_concurrency,
            "subscribers",
            |i| {
                let target = &cfg.targets[subscriber_target(i, cfg.rooms, cfg.targets.len())];
                let room = rooms[subscriber_room(i, cfg.rooms)].clone();
                let source = source_address(i, cfg.per_source_address, &target.addr);
                let kind = subscriber_transport(i, cfg.sse_share, cfg.poll_share);
                let http = &http;
                async move {
                    if let Some(kind) = kind {
                        let feed = Feed::open(http, target, kind, &room).await?;
                        return Ok(Conn::Fallback(feed, kind));
                    }
                    let mut feed = WsFeed::connect_welcomed(target, source).await?;
                    feed.join(&room, 1).await?;
                    Ok(Conn::Feed(feed))
                }
            },
        )
        .await,
        "subscribers",
    )?;
    let pubs: Vec<Ws> = all_ok(
        open_all(cfg.publishers, cfg.connect_concurrency, "publishers", |j| {
            let target = &cfg.targets[j % cfg.targets.len()];
            async move { Ok(client::connect_welcomed(target, None).await?.0) }
        })
        .await,
        "publishers",
    )?;

    // Everything is connected and joined: start the clock a little ahead so
    // every task is spawned before the first message is due.
    let lead = Duration::from_millis(100);
    let start = Instant::now() + lead;
    let start_unix_us = unix_us() + lead.as_micros() as u64;
    let max_seq = (cfg.rate * cfg.duration.as_secs_f64()).ceil() as u64 + 16;
    let mut transports: BTreeMap<String, usize> = BTreeMap::new();
    for sub in &subs {
        *transports
            .entry(TRANSPORTS[sub.transport()].into())
            .or_default() += 1;
    }
    // Subscriber i reads from the target `subscriber_target` gave it, and
    // publisher j publishes to target j % n (as opened above).
    let homes = (0..cfg.subscribers)
        .map(|i| subscriber_target(i, cfg.rooms, cfg.targets.len()))
        .collect();
    let ctx = Arc::new(
        subscriber::Context::new(32, start_unix_us + cfg.warmup.as_micros() as u64, max_seq)
            .with_homes(homes, cfg.targets.len()),
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let sub_tasks = subscriber::spawn_all(subs, &ctx, &stop_rx);

    let cpu_before = CpuSnapshot::take(&cfg.server_pids);
    let own_before = own_cpu_seconds();
    let schedule = publisher::Schedule {
        rooms: Arc::clone(&rooms),
        rate: cfg.rate,
        start,
        start_unix_us,
        until: Some(start + cfg.duration),
        padding: wire::padding(cfg.payload).into(),
    };
    let pub_tasks = publisher::spawn_all(pubs, &schedule, &stop_rx);

    let bar = crate::progress::bar(cfg.duration.as_secs(), "publishing");
    let ticker = {
        let bar = bar.clone();
        tokio::spawn(async move {
            let mut every =
                tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
            loop {
                every.tick().await;
                bar.inc(1);
            }
        })
    };
    let mut pub_outcomes = Vec::with_capacity(pub_tasks.len());
    for task in pub_tasks {
        pub_outcomes.push(task.await.map_err(|e| BenchError::new(e.to_string()))?);
    }
    ticker.abort();
    bar.finish_and_clear();

    let sent: Vec<Vec<u64>> = pub_outcomes.iter().map(|o| o.sent.clone()).collect();
    let members = members_per_room(cfg.subscribers, cfg.rooms);
    let expected = expected_deliveries(&sent, &members);
    let deadline = Instant::now() + cfg.grace;
    while ctx.delivered.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let finished = Instant::now();
    let server_cpu = cpu_before.used_until(&CpuSnapshot::take(&cfg.server_pids));
    let loadgen_cpu_s = round3(own_cpu_seconds() - own_before);
    let _ = stop_tx.send(true);

    let mut outcomes = Vec::with_capacity(sub_tasks.len());
    for task in sub_tasks {
        outcomes.push(task.await.map_err(|e| BenchError::new(e.to_string()))?);
    }

    let mut totals = Problems::default();
    let mut problem_triples = 0;
    let mut problem_list = Vec::new();
    let mut foreign = 0;
    let mut implausible = 0;
    let mut delivered = 0;
    let mut subscriber_closes = BTreeMap::new();
    let mut subscriber_failures = 0;
    for (i, out) in outcomes.iter().enumerate() {
        let room = subscriber_room(i, cfg.rooms);
        for (p, per_room) in sent.iter().enumerate() {
            let problems = out.ledger.problems(p as u32, room as u32, per_room[room]);
            if problems.any() {
                problem_triples += 1;
                if problem_list.len() < LISTED_PROBLEMS {
                    problem_list.push(Triple {
                        publisher: p as u32,
                        room: room as u32,
                        subscriber: i,
                        problems,
                    });
                }
            }
            totals.add(&problems);
        }
        foreign += out.foreign + out.ledger.streams_outside(&[room as u32]) as u64;
        implausible += out.ledger.implausible;
        delivered += out.received;
        if let Some(code) = out.closed {
            *subscriber_closes.entry(code.to_string()).or_insert(0) += 1;
        } else if out.failure.is_some() {
            subscriber_failures += 1;
        }
    }
    let publisher_errors = publisher::errors_by_code(&pub_outcomes);
    let server_cpu_s = round3(server_cpu.iter().fold(0.0, |a, p| a + p.cpu_seconds));
    let elapsed = finished
        .saturating_duration_since(start)
        .as_secs_f64()
        .max(1e-3);
    let avg_members = cfg.subscribers as f64 / cfg.rooms as f64;
    Ok(Report {
        scenario: "fanout",
        targets: cfg.targets.iter().map(|t| t.url.clone()).collect(),
        subscribers: cfg.subscribers,
        rooms: cfg.rooms,
        publishers: cfg.publishers,
        rate_per_publisher: cfg.rate,
        payload_bytes: cfg.payload,
        duration_s: cfg.duration.as_secs_f64(),
        offered_deliveries_per_s: round3(cfg.rate * cfg.publishers as f64 * avg_members),
        published: sent.iter().flatten().sum(),
        expected_deliveries: expected,
        delivered,
        delivered_per_s: round3(delivered as f64 / elapsed),
        latency: latency::summarize(&ctx.all_latencies()),
        latency_by_transport: TRANSPORTS
            .iter()
            .enumerate()
            .filter(|(_, name)| transports.contains_key(**name))
            .map(|(i, name)| {
                let summary = latency::summarize(&ctx.transport_latencies(i));
                ((*name).to_owned(), summary)
            })
            .collect(),
        latency_by_path: [
            ("same_gateway", Path::Same),
            ("across_gateways", Path::Across),
        ]
        .into_iter()
        .map(|(name, path)| (name.to_owned(), ctx.path_latencies(path)))
        .filter(|(_, h)| !h.is_empty())
        .map(|(name, h)| (name, latency::summarize(&h)))
        .collect(),
        transports,
        problems: totals,
        problem_triples,
        problem_list,
        foreign,
        implausible,
        subscriber_closes,
        subscriber_failures,
        publisher_errors,
        publisher_failures: pub_outcomes.iter().filter(|o| o.failure.is_some()).count() as u64,
        publisher_lag: publisher::lag_summary(&pub_outcomes),
        server_cpu,
        server_cpu_s,
        server_cpu_us_per_delivery: if delivered == 0 {
            0.0
        } else {
            round3(server_cpu_s * 1e6 / delivered as f64)
        },
        loadgen_cpu_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_room_spans_every_target() {
        let (rooms, targets) = (20, 2);
        for room in 0..rooms {
            let used: std::collections::BTreeSet<usize> = (0..2000)
                .filter(|&i| subscriber_room(i, rooms) == room)
                .map(|i| subscriber_target(i, rooms, targets))
                .collect();
            assert_eq!(used.len(), targets, "room {room}");
        }
    }

    #[test]
    fn transport_shares_are_kept_and_spread_over_rooms() {
        let kinds: Vec<_> = (0..2000)
            .map(|i| subscriber_transport(i, 0.25, 0.25))
            .collect();
        let count = |k| kinds.iter().filter(|&&x| x == k).count();
        for k in [Some(fallback::Kind::Sse), Some(fallback::Kind::Poll)] {
            assert!((480..=520).contains(&count(k)), "{k:?}: {}", count(k));
            let rooms: std::collections::BTreeSet<usize> = (0..2000)
                .filter(|&i| kinds[i] == k)
                .map(|i| subscriber_room(i, 20))
                .collect();
            assert_eq!(rooms.len(), 20, "{k:?} in every room");
        }
        assert!((0..100).all(|i| subscriber_transport(i, 0.0, 0.0).is_none()));
    }

    #[test]
    fn expected_deliveries_multiply_by_members() {
        let members = members_per_room(5, 2);
        assert_eq!(members, vec![3, 2]);
        let sent = vec![vec![10, 1], vec![0, 4]];
        assert_eq!(expected_deliveries(&sent, &members), 10 * 3 + 2 + 4 * 2);
    }
}
