//! `presence`: presence events under churn on two gateways. M members sit in
//! K rooms (connection `i` on gateway `i % 2`, room `i % K`); then visitors
//! (each a new user) join a room at a steady rate for a while and leave:
//! first without any watcher anywhere (the exchange should cost no bus
//! message), then with W watchers per room (`presence: true`, spread over
//! both gateways) while the visitors watch too. Measures the `joined`/`left`
//! events delivered per second, the servers' CPU, the presence bus messages
//! per join (from the gateways' `/metrics`), and checks every persistent
//! watcher's view (the `presence` answer at its start plus the events it got)
//! against the `presence` answer at the end: no duplicate, no zombie.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, STEP_TIMEOUT, Ws};
use crate::procstat::CpuSnapshot;
use crate::scenario::{all_ok, open_all, room_name};
use crate::target::{Target, source_address};
use crate::{BenchError, latency};

/// Visits in flight at most; a visit due beyond it is skipped and counted.
const MAX_VISITS_IN_FLIGHT: usize = 4000;

/// Parameters of a presence run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Gateways; connection `i` goes to target `i % len`.
    pub targets: Vec<Target>,
    /// The gateways' admin listeners (for `/metrics`).
    pub admins: Vec<SocketAddr>,
    /// Members that stay joined.
    pub members: usize,
    /// Rooms.
    pub rooms: usize,
    /// Persistent watchers per room (spread over the gateways).
    pub watchers_per_room: usize,
    /// Visits (connect, join, hold, close) started per second.
    pub rate: f64,
    /// How long a visitor stays.
    pub hold: Duration,
    /// Seconds of visits without watchers.
    pub unwatched: Duration,
    /// Seconds of visits with watchers.
    pub duration: Duration,
    /// Wait for events in flight before the final check.
    pub settle: Duration,
    /// Handshakes in flight at once while connecting members.
    pub connect_concurrency: usize,
    /// Connections per loopback source address (0: no binding).
    pub per_source_address: usize,
    /// Server processes whose CPU is measured.
    pub server_pids: Vec<u32>,
}

/// One phase of visits.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Phase {
    /// Seconds.
    pub seconds: f64,
    /// Visits completed.
    pub visits: u64,
    /// Visits that failed (connect, join).
    pub failed_visits: u64,
    /// Visits skipped because too many were in flight.
    pub skipped_visits: u64,
    /// Joins counted by the gateways (`roomcast_joins_total`).
    pub joins: f64,
    /// Presence messages the gateways published (`roomcast_presence_bus_messages_out_total`).
    pub presence_bus_messages: f64,
    /// The two above divided: a visit's join and its leave together.
    pub presence_bus_messages_per_join: f64,
    /// `joined`/`left` events received by every client.
    pub events: u64,
    /// Events per second.
    pub events_per_s: f64,
    /// Server CPU seconds (gateways and nats-server).
    pub server_cpu_s: f64,
}

/// The result of a presence run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always "presence".
    pub scenario: &'static str,
    /// Target URLs.
    pub targets: Vec<String>,
    /// Members.
    pub members: usize,
    /// Rooms.
    pub rooms: usize,
    /// Persistent watchers.
    pub watchers: usize,
    /// Visits started per second.
    pub rate: f64,
    /// How long a visitor stayed, seconds.
    pub hold_s: f64,
    /// Visits with nobody watching.
    pub unwatched: Phase,
    /// Visits with watchers.
    pub watched: Phase,
    /// Server CPU per delivered event while watched, microseconds.
    pub server_cpu_us_per_event: f64,
    /// Persistent watchers whose final view matched the final `presence`.
    pub views_consistent: usize,
    /// Persistent watchers whose view did not (duplicates, zombies, misses).
    pub views_wrong: usize,
    /// Events that were impossible for the watcher's view: `joined` for a
    /// user already there, `left` for one not there.
    pub impossible_events: u64,
    /// The first wrong view, if any.
    pub first_wrong_view: Option<String>,
}

/// The gateway and room of connection `i`: rooms in turn, and each room's
/// connections in turn over the gateways (so every room has members, and
/// watchers, on every gateway).
fn spread(i: usize, targets: usize, rooms: usize) -> (usize, usize) {
    ((i / rooms.max(1)) % targets.max(1), i % rooms.max(1))
}

fn join_frame(room: &str, presence: bool, id: u64) -> String {
    format!(r#"{{"type":"join","room":"{room}","presence":{presence},"id":{id}}}"#)
}

fn presence_frame(room: &str, id: u64) -> String {
    format!(r#"{{"type":"presence","room":"{room}","id":{id}}}"#)
}

/// Sends `text` and reads until the reply with `id`; presence events read
/// on the way go to `on_event`.
async fn request(
    ws: &mut Ws,
    text: String,
    id: u64,
    mut on_event: impl FnMut(&Value),
) -> Result<Value, BenchError> {
    ws.send(Message::text(text)).await?;
    timeout(STEP_TIMEOUT, async {
        loop {
            let Some(frame) = client::next_text(ws).await? else {
                return Err(BenchError::new("closed before the reply"));
            };
            let Ok(value) = serde_json::from_str::<Value>(&frame) else {
                continue;
            };
            if value["id"] == id {
                if value["type"] == "ok" {
                    return Ok(value);
                }
                return Err(BenchError::new(format!("refused: {value}")));
            }
            if is_event(&value) {
                on_event(&value);
            }
        }
    })
    .await
    .map_err(|_| BenchError::new("no reply in time"))?
}

fn is_event(v: &Value) -> bool {
    v["type"] == "joined" || v["type"] == "left"
}

fn members_of(reply: &Value) -> HashSet<String> {
    reply["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Applies one event to a view; false when it was impossible.
fn apply(view: &mut HashSet<String>, event: &Value) -> bool {
    let Some(user) = event["user"].as_str() else {
        return false;
    };
    if event["type"] == "joined" {
        view.insert(user.to_owned())
    } else {
        view.remove(user)
    }
}

/// What one persistent watcher saw.
struct Verdict {
    consistent: bool,
    impossible: u64,
    detail: String,
}

/// A persistent watcher: its view (from a `presence` asked while nothing
/// changes, before the visits start), updated by every event until `stop`,
/// compared with a last `presence`, asked once the visits are over.
async fn watcher(
    mut ws: Ws,
    room: String,
    mut view: HashSet<String>,
    events: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> Result<Verdict, BenchError> {
    let mut impossible = 0;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            frame = client::next_text(&mut ws) => {
                let Some(frame) = frame? else {
                    return Err(BenchError::new("watcher closed by the server"));
                };
                if let Ok(value) = serde_json::from_str::<Value>(&frame)
                    && is_event(&value)
                {
                    events.fetch_add(1, Relaxed);
                    impossible += u64::from(!apply(&mut view, &value));
                }
            }
        }
    }
    let mut late = Vec::new();
    let last = request(&mut ws, presence_frame(&room, 3), 3, |e| {
        late.push(e.clone())
    })
    .await?;
    for event in &late {
        events.fetch_add(1, Relaxed);
        impossible += u64::from(!apply(&mut view, event));
    }
    let want = members_of(&last);
    let consistent = view == want && impossible == 0;
    let detail = if consistent {
        String::new()
    } else {
        let extra: Vec<_> = view.difference(&want).collect();
        let missing: Vec<_> = want.difference(&view).collect();
        format!("{room}: {impossible} impossible events, extra {extra:?}, missing {missing:?}")
    };
    Ok(Verdict {
        consistent,
        impossible,
        detail,
    })
}

/// One visit: connect, join (watching or not), stay, close.
async fn visit(
    target: Target,
    room: String,
    watch: bool,
    hold: Duration,
    events: Arc<AtomicU64>,
) -> Result<(), BenchError> {
    let (mut ws, _) = client::connect_welcomed(&target, None).await?;
    request(&mut ws, join_frame(&room, watch, 1), 1, |_| {
        events.fetch_add(1, Relaxed);
    })
    .await?;
    let until = Instant::now() + hold;
    while let Ok(frame) = tokio::time::timeout_at(until, client::next_text(&mut ws)).await {
        let Some(frame) = frame? else { break };
        if frame.contains(r#""type":"joined""#) || frame.contains(r#""type":"left""#) {
            events.fetch_add(1, Relaxed);
        }
    }
    let _ = ws.close(None).await;
    Ok(())
}

/// Sums a counter over the gateways' `/metrics`.
async fn counter(admins: &[SocketAddr], name: &str) -> Result<f64, BenchError> {
    let mut sum = 0.0;
    for admin in admins {
        let text = client::http_get(*admin, "/metrics", 4 << 20).await?;
        sum += metric_value(&text, name)
            .ok_or_else(|| BenchError::new(format!("{name} missing on {admin}")))?;
    }
    Ok(sum)
}

/// The value of an unlabelled sample `name` in a Prometheus text exposition.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}

/// Runs visits at `cfg.rate` for `seconds`; returns the phase's figures.
async fn phase(
    cfg: &Config,
    seconds: Duration,
    watch: bool,
    first_visit: u64,
) -> Result<Phase, BenchError> {
    let events = Arc::new(AtomicU64::new(0));
    let (visits, failed, skipped) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let (joins0, msgs0) = (
        counter(&cfg.admins, "roomcast_joins_total").await?,
        counter(&cfg.admins, "roomcast_presence_bus_messages_out_total").await?,
    );
    let cpu0 = CpuSnapshot::take(&cfg.server_pids);
    let started = Instant::now();
    let slots = Arc::new(Semaphore::new(MAX_VISITS_IN_FLIGHT));
    let interval = Duration::from_secs_f64(1.0 / cfg.rate.max(0.001));
    let mut tasks = Vec::new();
    let mut n = first_visit;
    let mut next = started;
    while next < started + seconds {
        tokio::time::sleep_until(next).await;
        next += interval;
        n += 1;
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            skipped.fetch_add(1, Relaxed);
            continue;
        };
        let (target, room) = spread(n as usize, cfg.targets.len(), cfg.rooms);
        let target = cfg.targets[target].clone();
        // A fixed stride spreads visits over the rooms without a random source.
        let room = room_name("presence-", room.wrapping_mul(7919) % cfg.rooms);
        let (events, visits, failed) = (events.clone(), visits.clone(), failed.clone());
        let hold = cfg.hold;
        tasks.push(tokio::spawn(async move {
            let _slot = slot;
            match visit(target, room, watch, hold, events).await {
                Ok(()) => visits.fetch_add(1, Relaxed),
                Err(_) => failed.fetch_add(1, Relaxed),
            };
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu0.used_until(&CpuSnapshot::take(&cfg.server_pids));
    let joins = counter(&cfg.admins, "roomcast_joins_total").await? - joins0;
    let msgs = counter(&cfg.admins, "roomcast_presence_bus_messages_out_total").await? - msgs0;
    let events = events.load(Relaxed);
    Ok(Phase {
        seconds: latency::round3(elapsed),
        visits: visits.load(Relaxed),
        failed_visits: failed.load(Relaxed),
        skipped_visits: skipped.load(Relaxed),
        joins,
        presence_bus_messages: msgs,
        presence_bus_messages_per_join: if joins > 0.0 {
            latency::round3(msgs / joins)
        } else {
            0.0
        },
        events,
        events_per_s: latency::round3(events as f64 / elapsed.max(0.001)),
        server_cpu_s: latency::round3(cpu.iter().map(|c| c.cpu_seconds).sum()),
    })
}

/// Runs the scenario.
pub async fn run(cfg: &Config) -> Result<Report, BenchError> {
    if cfg.targets.is_empty() || cfg.rooms == 0 || cfg.admins.len() != cfg.targets.len() {
        return Err(BenchError::new(
            "presence needs targets, one admin address per target, and rooms",
        ));
    }
    // Members: joined, read (so pings are answered), never watching.
    let members = all_ok(
        open_all(cfg.members, cfg.connect_concurrency, "members", |i| {
            let (target, room) = spread(i, cfg.targets.len(), cfg.rooms);
            let target = &cfg.targets[target];
            let source = source_address(i, cfg.per_source_address, &target.addr);
            let room = room_name("presence-", room);
            async move {
                let (mut ws, _) = client::connect_welcomed(target, source).await?;
                client::join(&mut ws, &room, 1).await?;
                Ok(ws)
            }
        })
        .await,
        "members",
    )?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut readers = Vec::new();
    for mut ws in members {
        let mut stop = stop_rx.clone();
        readers.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    frame = ws.next() => if !matches!(frame, Some(Ok(_))) { break },
                }
            }
        }));
    }

    let unwatched = phase(cfg, cfg.unwatched, false, 0).await?;

    let watcher_count = cfg.rooms * cfg.watchers_per_room;
    let watcher_events = Arc::new(AtomicU64::new(0));
    let joined = all_ok(
        open_all(watcher_count, cfg.connect_concurrency, "watchers", |j| {
            let (target, room) = spread(j, cfg.targets.len(), cfg.rooms);
            let target = &cfg.targets[target];
            let room = room_name("presence-", room);
            async move {
                let (mut ws, _) = client::connect_welcomed(target, None).await?;
                request(&mut ws, join_frame(&room, true, 1), 1, |_| {}).await?;
                Ok((ws, room))
            }
        })
        .await,
        "watchers",
    )?;
    // Every watcher has joined and no visit is under way: nothing changes,
    // so each answer already holds what the events read meanwhile announce.
    // A peer that answers late is left out of an answer (a lower bound), so
    // each asks until two answers agree.
    let mut watchers = Vec::with_capacity(joined.len());
    for (mut ws, room) in joined {
        let mut view = HashSet::new();
        for id in 2..8 {
            let answer =
                members_of(&request(&mut ws, presence_frame(&room, id), id, |_| {}).await?);
            if id > 2 && answer == view {
                break;
            }
            view = answer;
        }
        watchers.push((ws, room, view));
    }
    let (watch_stop_tx, watch_stop_rx) = watch::channel(false);
    let watcher_tasks: Vec<_> = watchers
        .into_iter()
        .map(|(ws, room, view)| {
            tokio::spawn(watcher(
                ws,
                room,
                view,
                watcher_events.clone(),
                watch_stop_rx.clone(),
            ))
        })
        .collect();

    let mut watched = phase(cfg, cfg.duration, true, 1 << 32).await?;
    tokio::time::sleep(cfg.settle).await;
    let _ = watch_stop_tx.send(true);
    let (mut consistent, mut wrong, mut impossible, mut first_wrong) = (0, 0, 0, None);
    for task in watcher_tasks {
        match task.await {
            Ok(Ok(v)) => {
                impossible += v.impossible;
                if v.consistent {
                    consistent += 1;
                } else {
                    wrong += 1;
                    first_wrong.get_or_insert(v.detail);
                }
            }
            Ok(Err(e)) => {
                wrong += 1;
                first_wrong.get_or_insert(e.to_string());
            }
            Err(e) => {
                wrong += 1;
                first_wrong.get_or_insert(e.to_string());
            }
        }
    }
    // The persistent watchers' events count with the visitors'.
    watched.events += watcher_events.load(Relaxed);
    watched.events_per_s = latency::round3(watched.events as f64 / watched.seconds.max(0.001));
    let _ = stop_tx.send(true);
    for reader in readers {
        let _ = reader.await;
    }
    Ok(Report {
        scenario: "presence",
        targets: cfg.targets.iter().map(|t| t.url.clone()).collect(),
        members: cfg.members,
        rooms: cfg.rooms,
        watchers: watcher_count,
        rate: cfg.rate,
        hold_s: cfg.hold.as_secs_f64(),
        server_cpu_us_per_event: if watched.events > 0 {
            latency::round3(watched.server_cpu_s * 1e6 / watched.events as f64)
        } else {
            0.0
        },
        unwatched,
        watched,
        views_consistent: consistent,
        views_wrong: wrong,
        impossible_events: impossible,
        first_wrong_view: first_wrong,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_room_gets_connections_on_every_gateway() {
        let placed: HashSet<(usize, usize)> = (0..200).map(|i| spread(i, 2, 100)).collect();
        assert_eq!(placed.len(), 200, "each room on both gateways");
        assert_eq!(spread(7, 2, 100), (0, 7));
        assert_eq!(spread(107, 2, 100), (1, 7));
        assert_eq!(spread(3, 0, 0), (0, 0), "no division by zero");
    }

    #[test]
    fn metric_values_are_read_by_exact_name() {
        let text = "# TYPE roomcast_joins_total counter\nroomcast_joins_total 12\nroomcast_joins_total_x 3\n";
        assert_eq!(metric_value(text, "roomcast_joins_total"), Some(12.0));
        assert_eq!(metric_value(text, "roomcast_joins"), None);
    }

    #[test]
    fn views_follow_events_and_flag_impossible_ones() {
        let mut view = HashSet::new();
        let e = |t: &str, u: &str| serde_json::json!({"type": t, "room": "r", "user": u});
        assert!(apply(&mut view, &e("joined", "a")));
        assert!(!apply(&mut view, &e("joined", "a")), "duplicate joined");
        assert!(apply(&mut view, &e("left", "a")));
        assert!(!apply(&mut view, &e("left", "a")), "left without joined");
        assert!(view.is_empty());
        assert_eq!(
            join_frame("r", true, 4),
            r#"{"type":"join","room":"r","presence":true,"id":4}"#
        );
    }
}
