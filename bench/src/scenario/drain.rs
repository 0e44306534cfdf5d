//! `drain`: N clients on gateway A, `POST /drain` on A; the time until all of
//! them are reconnected (welcomed and rejoined) on other gateways, failures,
//! and what clients that stayed on the other gateways lost meanwhile while
//! publishers kept publishing. With `--history` the rooms keep history
//! (`hist:` namespace): drained clients rejoin with `since` (the last offset
//! they got) and what they lost is counted too.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::{Instant, sleep};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Ws};
use crate::latency::{Summary, round3, summarize, unix_us};
use crate::ledger::{Ledger, Problems};
use crate::scenario::fanout::{expected_deliveries, members_per_room, subscriber_room};
use crate::scenario::{all_ok, open_all, room_name};
use crate::target::{Target, source_address};
use crate::wire::Incoming;
use crate::{BenchError, progress, publisher, subscriber, wire};

/// Parameters of a drain run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The gateway that is drained.
    pub drained: Target,
    /// Its admin listener (`POST /drain`).
    pub admin: SocketAddr,
    /// The gateways clients move to (and where stayers and publishers live).
    pub others: Vec<Target>,
    /// Clients on the drained gateway.
    pub clients: usize,
    /// Subscribers on the other gateways, checked for loss.
    pub stayers: usize,
    /// Rooms (clients and stayers share them).
    pub rooms: usize,
    /// Publishers on the other gateways.
    pub publishers: usize,
    /// Messages per second per publisher.
    pub rate: f64,
    /// Payload bytes.
    pub payload: usize,
    /// Give up on clients not reconnected this long after the drain starts.
    pub timeout: Duration,
    /// Connections per loopback source address (0: no binding).
    pub per_source_address: usize,
    /// Handshakes in flight at once while connecting.
    pub connect_concurrency: usize,
    /// Rooms in the `hist:` namespace (the gateways must keep its history):
    /// drained clients recover with `since` and their losses are counted.
    pub history: bool,
}

/// Room names of a run: `hist:drain-N` with history, else `drain-N`.
pub fn room_prefix(history: bool) -> &'static str {
    if history { "hist:drain-" } else { "drain-" }
}

/// What the drained clients received across their move (history runs).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Movers {
    /// Rejoins answered `recovered: true`.
    pub recovered: usize,
    /// Messages they should have received (published to their rooms).
    pub expected: u64,
    /// Messages they received, before and after the move.
    pub delivered: u64,
    /// What they lost, got twice or out of order.
    pub problems: Problems,
}

/// The result of a drain run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always "drain".
    pub scenario: &'static str,
    /// Drained gateway URL.
    pub drained: String,
    /// HTTP status of `POST /drain`.
    pub drain_status: u16,
    /// Clients on the drained gateway.
    pub clients: usize,
    /// Clients closed by the drained gateway, by close code.
    pub closes: BTreeMap<String, u64>,
    /// Clients welcomed and rejoined on another gateway.
    pub reconnected: usize,
    /// Clients that did not make it before the timeout.
    pub failures: usize,
    /// Seconds from `POST /drain` until the last client rejoined elsewhere.
    pub time_to_all_reconnected_s: Option<f64>,
    /// Close → rejoined elsewhere, per client.
    pub reconnect_latency: Summary,
    /// Subscribers that stayed on the other gateways.
    pub stayers: usize,
    /// Messages the stayers should have received.
    pub stayer_expected: u64,
    /// Messages they received.
    pub stayer_delivered: u64,
    /// What they lost, got twice or out of order.
    pub stayer_problems: Problems,
    /// `error` frames to publishers, by code.
    pub publisher_errors: BTreeMap<String, u64>,
    /// With history: what the drained clients lost across the move.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub movers: Option<Movers>,
}

/// Backoff before reconnect attempt `attempt` of client `client`: doubling
/// from 50 ms up to 1 s, plus up to 100 ms of deterministic jitter.
pub fn backoff(client: usize, attempt: u32) -> Duration {
    let base = 50u64.saturating_mul(1 << attempt.min(5)).min(1000);
    // A cheap hash of (client, attempt) spreads clients without an RNG.
    let mut x = (client as u64) << 8 ^ u64::from(attempt) ^ 0x9e37_79b9_7f4a_7c15;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    Duration::from_millis(base + x % 100)
}

struct Moved {
    close: Option<u16>,
    closed_at: Option<Instant>,
    rejoined_at: Option<Instant>,
    /// Probes received before and after the move (history runs).
    ledger: Ledger,
    received: u64,
    recovered: bool,
}

/// What a moving client needs besides its connection.
struct Mover {
    index: usize,
    room: String,
    drained_node: String,
    others: Arc<Vec<Target>>,
    deadline: watch::Receiver<bool>,
    rejoined: Arc<AtomicUsize>,
    stop: watch::Receiver<bool>,
    /// With history: the room's position from the first join's `ok`.
    position: Option<(u64, String)>,
    /// Probes received by all movers so far.
    delivered: Arc<AtomicU64>,
    max_seq: u64,
}

impl Moved {
    /// Records a history room's frame: its probe, and where it stands.
    fn record(&mut self, text: &str, position: &mut Option<(u64, String)>, delivered: &AtomicU64) {
        if let Incoming::Message(probe) = wire::decode(text) {
            self.ledger.record(probe.p, probe.r, probe.s);
            self.received += 1;
            delivered.fetch_add(1, Ordering::Relaxed);
            if let Some(wire::Placed {
                offset: Some(offset),
                epoch: Some(epoch),
                ..
            }) = wire::placed(text)
            {
                *position = Some((offset, epoch));
            }
        }
    }
}

/// Joins a history room with `since` (when known), recording the replay
/// that comes before the `ok`; the `ok`'s position and `recovered`.
async fn join_recovering(
    ws: &mut Ws,
    room: &str,
    since: Option<&(u64, String)>,
    mut replay: impl FnMut(&str),
) -> Result<((u64, String), bool), BenchError> {
    let id = 1;
    let frame = match since {
        Some((offset, epoch)) => wire::join_since(room, id, *offset, epoch),
        None => wire::join(room, id),
    };
    ws.send(Message::text(frame)).await?;
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let Some(text) = client::next_text(ws).await? else {
                return Err(BenchError::new(format!("closed before joining {room}")));
            };
            match wire::decode(&text) {
                Incoming::Ok { id: Some(1) } => {
                    let placed = wire::placed(&text);
                    let offset = placed.as_ref().and_then(|p| p.offset);
                    let epoch = placed.as_ref().and_then(|p| p.epoch.clone());
                    let (Some(offset), Some(epoch)) = (offset, epoch) else {
                        return Err(BenchError::new(format!(
                            "join {room}: no offset/epoch (is the hist namespace configured?)"
                        )));
                    };
                    let recovered = placed.and_then(|p| p.recovered).unwrap_or(false);
                    return Ok(((offset, epoch), recovered));
                }
                Incoming::Error { code, id: Some(1) } => {
                    return Err(BenchError::new(format!("join {room}: {code}")));
                }
                Incoming::Message(_) => replay(&text),
                _ => {}
            }
        }
    })
    .await
    .map_err(|_| BenchError::new(format!("no answer to join {room} in time")))?
}

/// One client of the drained gateway: wait for the close, reconnect
/// elsewhere with backoff, rejoin (with `since` on a history run), then read
/// until `stop`.
async fn move_client(mut ws: Ws, mover: Mover) -> Moved {
    let Mover {
        index: i,
        room,
        drained_node,
        others,
        deadline,
        rejoined,
        mut stop,
        mut position,
        delivered,
        max_seq,
    } = mover;
    let history = position.is_some();
    let mut moved = Moved {
        close: None,
        closed_at: None,
        rejoined_at: None,
        ledger: Ledger::new(max_seq),
        received: 0,
        recovered: false,
    };
    loop {
        let frame = tokio::select! {
            _ = stop.changed() => return moved,
            frame = ws.next() => frame,
        };
        match frame {
            Some(Ok(Message::Close(frame))) => {
                moved.close = Some(frame.map_or(1005, |f| u16::from(f.code)));
                break;
            }
            Some(Ok(Message::Text(text))) if history => {
                moved.record(&text, &mut position, &delivered);
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    moved.closed_at = Some(Instant::now());
    drop(ws);
    for attempt in 0u32.. {
        if *deadline.borrow() {
            return moved;
        }
        sleep(backoff(i, attempt)).await;
        let target = &others[(i + attempt as usize) % others.len()];
        let Ok((mut fresh, node)) = client::connect_welcomed(target, None).await else {
            continue;
        };
        if node == drained_node {
            continue;
        }
        if history {
            let since = position.clone();
            let mut replayed = Vec::new();
            let joined = join_recovering(&mut fresh, &room, since.as_ref(), |text| {
                replayed.push(text.to_owned())
            })
            .await;
            let Ok((_, recovered)) = joined else { continue };
            for text in &replayed {
                moved.record(text, &mut position, &delivered);
            }
            moved.recovered = recovered;
        } else if client::join(&mut fresh, &room, 1).await.is_err() {
            continue;
        }
        moved.rejoined_at = Some(Instant::now());
        rejoined.fetch_add(1, Ordering::Relaxed);
        // Stay connected (and read what arrives) until the run ends.
        loop {
            let frame = tokio::select! {
                _ = stop.changed() => return moved,
                frame = fresh.next() => frame,
            };
            match frame {
                Some(Ok(Message::Text(text))) if history => {
                    moved.record(&text, &mut position, &delivered);
                }
                Some(Ok(_)) => {}
                _ => return moved,
            }
        }
    }
    moved
}

/// Runs the scenario.
pub async fn run(cfg: &Config) -> Result<Report, BenchError> {
    if cfg.others.is_empty() || cfg.rooms == 0 || cfg.publishers == 0 || cfg.rate <= 0.0 {
        return Err(BenchError::new(
            "drain needs other gateways, rooms, publishers and a positive rate",
        ));
    }
    let rooms: Arc<Vec<String>> = Arc::new(
        (0..cfg.rooms)
            .map(|r| room_name(room_prefix(cfg.history), r))
            .collect(),
    );
    let others = Arc::new(cfg.others.clone());

    let clients = all_ok(
        open_all(cfg.clients, cfg.connect_concurrency, "clients", |i| {
            let room = rooms[i % cfg.rooms].clone();
            let source = source_address(i, cfg.per_source_address, &cfg.drained.addr);
            async move {
                let (mut ws, node) = client::connect_welcomed(&cfg.drained, source).await?;
                let position = if cfg.history {
                    Some(join_recovering(&mut ws, &room, None, |_| {}).await?.0)
                } else {
                    client::join(&mut ws, &room, 1).await?;
                    None
                };
                Ok((ws, node, position))
            }
        })
        .await,
        "clients of the drained gateway",
    )?;
    let drained_node = clients
        .first()
        .map(|(_, n, _)| n.clone())
        .unwrap_or_default();
    let stayers = all_ok(
        open_all(cfg.stayers, cfg.connect_concurrency, "stayers", |i| {
            let target = &others[i % others.len()];
            let room = rooms[subscriber_room(i, cfg.rooms)].clone();
            async move {
                let (mut ws, _) = client::connect_welcomed(target, None).await?;
                client::join(&mut ws, &room, 1).await?;
                Ok(ws)
            }
        })
        .await,
        "stayers",
    )?;
    let pubs = all_ok(
        open_all(cfg.publishers, cfg.connect_concurrency, "publishers", |j| {
            let target = &others[j % others.len()];
            async move { Ok(client::connect_welcomed(target, None).await?.0) }
        })
        .await,
        "publishers",
    )?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let (pub_stop_tx, pub_stop_rx) = watch::channel(false);
    let (deadline_tx, deadline_rx) = watch::channel(false);
    let start = Instant::now();
    let start_unix_us = unix_us();
    let horizon = cfg.timeout + Duration::from_secs(30);
    let ctx = Arc::new(subscriber::Context::new(
        8,
        start_unix_us,
        (cfg.rate * horizon.as_secs_f64()).ceil() as u64 + 16,
    ));
    let stayers = stayers.into_iter().map(subscriber::Conn::Ws).collect();
    let stayer_tasks = subscriber::spawn_all(stayers, &ctx, &stop_rx);
    let schedule = publisher::Schedule {
        rooms: Arc::clone(&rooms),
        rate: cfg.rate,
        start,
        start_unix_us,
        until: Some(start + horizon),
        padding: wire::padding(cfg.payload).into(),
    };
    let pub_tasks = publisher::spawn_all(pubs, &schedule, &pub_stop_rx);
    let rejoined = Arc::new(AtomicUsize::new(0));
    let mover_delivered = Arc::new(AtomicU64::new(0));
    let client_tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, (ws, _, position))| {
            tokio::spawn(move_client(
                ws,
                Mover {
                    index: i,
                    room: rooms[i % cfg.rooms].clone(),
                    drained_node: drained_node.clone(),
                    others: Arc::clone(&others),
                    deadline: deadline_rx.clone(),
                    rejoined: Arc::clone(&rejoined),
                    stop: stop_rx.clone(),
                    position,
                    delivered: Arc::clone(&mover_delivered),
                    max_seq: ctx.max_seq,
                },
            ))
        })
        .collect();

    // Let traffic flow before the drain, then drain and watch clients move.
    sleep(Duration::from_millis(500)).await;
    let drain_started = Instant::now();
    let drain_status = client::post_drain(cfg.admin).await?;
    let bar = progress::bar(cfg.clients as u64, "rejoined");
    let give_up = drain_started + cfg.timeout;
    while rejoined.load(Ordering::Relaxed) < cfg.clients && Instant::now() < give_up {
        bar.set_position(rejoined.load(Ordering::Relaxed) as u64);
        sleep(Duration::from_millis(10)).await;
    }
    bar.finish_and_clear();
    let _ = deadline_tx.send(true);
    // A little more traffic after the move, then stop publishing.
    sleep(Duration::from_millis(500)).await;
    let _ = pub_stop_tx.send(true);
    let mut pub_outcomes = Vec::new();
    for task in pub_tasks {
        pub_outcomes.push(task.await.map_err(|e| BenchError::new(e.to_string()))?);
    }
    let sent: Vec<Vec<u64>> = pub_outcomes.iter().map(|o| o.sent.clone()).collect();
    let members = members_per_room(cfg.stayers, cfg.rooms);
    let expected = expected_deliveries(&sent, &members);
    let mover_members = members_per_room(if cfg.history { cfg.clients } else { 0 }, cfg.rooms);
    let mover_expected = expected_deliveries(&sent, &mover_members);
    let settle = Instant::now() + Duration::from_secs(5);
    while (ctx.delivered.load(Ordering::Relaxed) < expected
        || mover_delivered.load(Ordering::Relaxed) < mover_expected)
        && Instant::now() < settle
    {
        sleep(Duration::from_millis(5)).await;
    }
    let _ = stop_tx.send(true);

    let mut problems = Problems::default();
    let mut delivered = 0;
    for (i, task) in stayer_tasks.into_iter().enumerate() {
        let out = task.await.map_err(|e| BenchError::new(e.to_string()))?;
        let room = subscriber_room(i, cfg.rooms);
        for (p, per_room) in sent.iter().enumerate() {
            problems.add(&out.ledger.problems(p as u32, room as u32, per_room[room]));
        }
        delivered += out.received;
    }
    let mut closes = BTreeMap::new();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
        .map_err(|e| BenchError::new(e.to_string()))?;
    let mut last_rejoin: Option<Instant> = None;
    let mut reconnected = 0;
    let mut movers = Movers {
        expected: mover_expected,
        ..Movers::default()
    };
    for (i, task) in client_tasks.into_iter().enumerate() {
        let moved = task.await.map_err(|e| BenchError::new(e.to_string()))?;
        let room = i % cfg.rooms;
        for (p, per_room) in sent.iter().enumerate() {
            movers
                .problems
                .add(&moved.ledger.problems(p as u32, room as u32, per_room[room]));
        }
        movers.delivered += moved.received;
        movers.recovered += usize::from(moved.recovered);
        let code = moved.close.map_or("none".to_owned(), |c| c.to_string());
        *closes.entry(code).or_insert(0) += 1;
        if let (Some(closed), Some(rejoined)) = (moved.closed_at, moved.rejoined_at) {
            reconnected += 1;
            hist.saturating_record((rejoined - closed).as_micros() as u64);
            last_rejoin = Some(last_rejoin.map_or(rejoined, |l| l.max(rejoined)));
        }
    }
    let publisher_errors = publisher::errors_by_code(&pub_outcomes);
    Ok(Report {
        scenario: "drain",
        drained: cfg.drained.url.clone(),
        drain_status,
        clients: cfg.clients,
        closes,
        reconnected,
        failures: cfg.clients - reconnected,
        time_to_all_reconnected_s: match last_rejoin {
            Some(last) if reconnected == cfg.clients => Some(round3(
                last.saturating_duration_since(drain_started).as_secs_f64(),
            )),
            _ => None,
        },
        reconnect_latency: summarize(&hist),
        stayers: cfg.stayers,
        stayer_expected: expected,
        stayer_delivered: delivered,
        stayer_problems: problems,
        publisher_errors,
        movers: cfg.history.then_some(movers),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_with_bounded_jitter() {
        for client in 0..50 {
            let first = backoff(client, 0);
            assert!(first >= Duration::from_millis(50) && first < Duration::from_millis(150));
            let late = backoff(client, 30);
            assert!(late >= Duration::from_secs(1) && late < Duration::from_millis(1100));
        }
        let spread: std::collections::BTreeSet<_> = (0..50).map(|c| backoff(c, 0)).collect();
        assert!(spread.len() > 10, "jitter spreads clients");
    }
}
