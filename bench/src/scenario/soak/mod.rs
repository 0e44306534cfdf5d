//! `soak`: a long run against two gateways on NATS with clients connecting,
//! joining, publishing, leaving and disconnecting at random (cleanly, by TCP
//! reset, by dropping the socket, or as slow readers closed with 4008), and
//! nats-server restarted once in the middle. Samples RSS and open file
//! descriptors of every process and the gateways' connection and room gauges
//! every few seconds, and judges three things: the series are flat after
//! warm-up, connections and rooms are back to 0 at the end, and clients that
//! stayed connected and kept reading lost nothing that was accepted.
//!
//! "Accepted" is per publish: every publish carries an `id`, and only those
//! the gateway answered `ok` are owed to subscribers. A publish answered
//! `error` (`unavailable` while NATS is down, before the gateway's bus is
//! back) was refused and is not owed; one never answered is counted apart.
//! Across the restart, gateways get their bus back one after the other: a
//! publish a gateway accepts while a peer's bus is still down cannot reach
//! that peer's subscribers (NATS has no interest from it yet; delivery is at
//! most once). So the verdict counts publishes accepted outside the restart
//! window (SIGTERM to every gateway's bus up again, plus a second for the
//! polling), and the losses inside it are reported beside it.

pub mod churn;
pub mod publish;
pub mod restart;
pub mod sample;
pub mod verdict;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until, timeout};

use self::churn::{Churn, Counts, Tally};
use self::restart::NatsControl;
use self::sample::Sample;
use self::verdict::{
    FLAT_FD_SLACK, FLAT_RSS_SLACK_KIB, Flatness, Mix, all_zero, flatness, message_of,
};
use crate::client;
use crate::latency::{Summary, round3, summarize, unix_us};
use crate::ledger::Problems;
use crate::procstat::{CpuSnapshot, loadavg};
use crate::scenario::{all_ok, open_all, own_cpu_seconds, room_name};
use crate::target::Target;
use crate::{BenchError, subscriber, wire};

/// Parameters of a soak run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Gateways (two for the standard soak).
    pub targets: Vec<Target>,
    /// Their admin listeners, in the same order (`/metrics`).
    pub admins: Vec<SocketAddr>,
    /// Their pids, in the same order.
    pub gateway_pids: Vec<u32>,
    /// The nats-server to restart in the middle (none: no restart).
    pub nats: Option<NatsControl>,
    /// How long nats-server stays down.
    pub nats_down: Duration,
    /// Length of the load.
    pub duration: Duration,
    /// Samples before this are not judged.
    pub warmup: Duration,
    /// Sampling period.
    pub sample_every: Duration,
    /// Churning slots (connections open at once, about).
    pub churners: usize,
    /// Shortest and longest life of a churning connection.
    pub lifetime: (Duration, Duration),
    /// How connections end, in percent.
    pub mix: Mix,
    /// How long a slow reader stops reading.
    pub stall: Duration,
    /// Steady subscribers (stay connected, keep reading, checked for loss).
    pub steady: usize,
    /// Rooms.
    pub rooms: usize,
    /// Publishers.
    pub publishers: usize,
    /// Messages per second per publisher.
    pub rate: f64,
    /// Payload bytes.
    pub payload: usize,
    /// Messages per second to the hot room (where slow readers are).
    pub hot_rate: f64,
    /// Payload bytes of hot-room messages.
    pub hot_payload: usize,
    /// Steady subscribers of the hot room.
    pub hot_readers: usize,
    /// Churning connections per loopback source address (0: no binding).
    pub per_source_address: usize,
    /// Longest wait for connections and rooms to reach 0 at the end.
    pub settle: Duration,
    /// Seed of every random choice.
    pub seed: u64,
    /// The command line, for the report.
    pub command: String,
}

/// When nats-server was restarted, seconds after the start of the load.
#[derive(Debug, Clone, Serialize)]
pub struct RestartTimes {
    /// Old server stopped (SIGTERM sent).
    pub stop_s: f64,
    /// Old server gone.
    pub stopped_s: f64,
    /// New server listening.
    pub started_s: f64,
    /// Every gateway's `roomcast_bus_up` back to 1 (`None`: not within 60 s).
    pub bus_back_s: Option<f64>,
    /// The new server's pid.
    pub new_pid: u32,
}

/// One judged series.
#[derive(Debug, Clone, Serialize)]
pub struct FlatVerdict {
    /// Process name.
    pub process: String,
    /// `rss_kib` or `fds`.
    pub metric: &'static str,
    /// Samples judged.
    pub samples: usize,
    /// The judgement (`None`: fewer than three samples).
    pub flatness: Option<Flatness>,
}

/// Loss among steady subscribers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Delivery {
    /// Steady subscribers (including hot-room readers).
    pub steady: usize,
    /// Of them, connections that ended before the run did (excluded below).
    pub steady_dropped: usize,
    /// How they ended, if any did.
    pub steady_dropped_how: BTreeMap<String, u64>,
    /// Accepted messages owed to the steady subscribers that stayed.
    pub owed: u64,
    /// Of those, received.
    pub received: u64,
    /// Owed and never received.
    pub lost: u64,
    /// Of the lost, published in the restart window (SIGTERM − 0.5 s to every
    /// gateway's bus back + 1 s).
    pub lost_around_restart: u64,
    /// Of the lost, published outside it (the verdict).
    pub lost_outside_restart: u64,
    /// The first few lost messages: when sent, from which gateway to which.
    pub lost_examples: Vec<String>,
    /// Received more than once, or after a later one.
    pub problems: Problems,
    /// Received although the publish was refused or unanswered.
    pub received_not_accepted: u64,
    /// Publish → receipt latency of every received message.
    pub latency: Summary,
}

/// What the publishers did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Publishing {
    /// Publishes sent.
    pub sent: u64,
    /// Answered `ok`.
    pub accepted: u64,
    /// Answered `error`, by code.
    pub refused: BTreeMap<String, u64>,
    /// Seconds after start of the first and last refusal.
    pub refused_span_s: Option<(f64, f64)>,
    /// Neither by the end.
    pub unanswered: u64,
    /// Publishers whose connection failed.
    pub failures: Vec<String>,
}

/// The end of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Settle {
    /// Seconds after the last client left until both gauges were 0 everywhere.
    pub zero_after_s: Option<f64>,
    /// Final `roomcast_connections` per gateway.
    pub connections: Vec<Option<i64>>,
    /// Final `roomcast_rooms` per gateway.
    pub rooms: Vec<Option<i64>>,
}

/// The verdicts.
#[derive(Debug, Clone, Serialize)]
pub struct Verdicts {
    /// Every gateway's (and the restarted nats-server's) RSS and fds flat after warm-up.
    pub flat: bool,
    /// Connections and rooms back to 0 on every gateway.
    pub back_to_zero: bool,
    /// Nothing accepted was lost by steady subscribers, and none was dropped.
    pub no_loss: bool,
    /// All three.
    pub passed: bool,
}

/// The result of a soak run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always "soak".
    pub scenario: &'static str,
    /// The command that ran it.
    pub command: String,
    /// Seconds of load.
    pub duration_s: f64,
    /// Seconds of warm-up not judged.
    pub warmup_s: f64,
    /// Sampling period, seconds.
    pub sample_every_s: f64,
    /// Churning slots.
    pub churners: usize,
    /// Fates in percent.
    pub mix: Mix,
    /// Steady subscribers, rooms, publishers, rate.
    pub steady: usize,
    /// Rooms (plus the hot room).
    pub rooms: usize,
    /// Publishers (plus the hot publisher).
    pub publishers: usize,
    /// Messages per second per publisher.
    pub rate: f64,
    /// Hot-room messages per second.
    pub hot_rate: f64,
    /// Hot-room payload bytes.
    pub hot_payload: usize,
    /// Seconds a slow reader stops reading.
    pub stall_s: f64,
    /// Load averages before and after.
    pub loadavg_before: Option<[f64; 3]>,
    /// After the run.
    pub loadavg_after: Option<[f64; 3]>,
    /// The restart, if there was one.
    pub restart: Option<RestartTimes>,
    /// Every sample.
    pub samples: Vec<Sample>,
    /// The flatness judgements.
    pub flat: Vec<FlatVerdict>,
    /// Connections and rooms at the end.
    pub settle: Settle,
    /// What steady subscribers got.
    pub delivery: Delivery,
    /// What publishers did.
    pub publishing: Publishing,
    /// What churning clients did.
    pub churn: Counts,
    /// CPU seconds of the gateways during the load.
    pub gateway_cpu_s: f64,
    /// CPU seconds of the load generator.
    pub loadgen_cpu_s: f64,
    /// The verdicts.
    pub verdicts: Verdicts,
}

/// `gw-a`, `gw-b`, … for gateway `i`.
pub fn gateway_name(i: usize) -> String {
    let letter = char::from(b'a' + (i % 26) as u8);
    format!("gw-{letter}")
}

struct Steady {
    ws: client::Ws,
    room: u32,
}

/// Where steady subscriber `i` (or publisher `i`) is connected.
fn target_of(i: usize, targets: usize) -> String {
    gateway_name(i % targets.max(1))
}

/// Runs the scenario.
pub async fn run(cfg: &Config) -> Result<Report, BenchError> {
    if cfg.targets.is_empty()
        || cfg.targets.len() != cfg.admins.len()
        || cfg.rooms == 0
        || cfg.publishers == 0
        || cfg.rate <= 0.0
        || cfg.hot_rate <= 0.0
        || cfg.duration.is_zero()
        || cfg.sample_every.is_zero()
    {
        return Err(BenchError::new(
            "soak needs gateways with one admin address each, rooms, publishers, positive rates, a duration and a sampling period",
        ));
    }
    let loadavg_before = loadavg();
    let hot_index = cfg.rooms as u32;
    let rooms: Vec<String> = (0..cfg.rooms).map(|r| room_name("soak-", r)).collect();
    let hot = "soak-hot".to_owned();
    let nats_pid = Arc::new(AtomicU64::new(
        cfg.nats.as_ref().map_or(0, |n| u64::from(n.pid)),
    ));
    let processes = {
        let nats_pid = Arc::clone(&nats_pid);
        let gateways: Vec<(String, u32)> = cfg
            .gateway_pids
            .iter()
            .enumerate()
            .map(|(i, &pid)| (gateway_name(i), pid))
            .collect();
        move || {
            let mut all = gateways.clone();
            let nats = nats_pid.load(Ordering::Relaxed) as u32;
            if nats != 0 {
                all.push(("nats".to_owned(), nats));
            }
            all.push(("loadgen".to_owned(), std::process::id()));
            all
        }
    };
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let push = |s: Sample| {
        samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(s)
    };
    push(sample::take(0.0, "before", 0, &processes(), &cfg.admins).await);

    // Steady subscribers: pairs on different gateways share a room.
    let targets = &cfg.targets;
    let steady_total = cfg.steady + cfg.hot_readers;
    let steady = all_ok(
        open_all(steady_total, 32, "steady", |i| {
            let target = &targets[i % targets.len()];
            let (room, name) = if i < cfg.steady {
                let r = (i / 2) % cfg.rooms;
                (r as u32, rooms[r].clone())
            } else {
                (hot_index, hot.clone())
            };
            async move {
                let (mut ws, _) = client::connect_welcomed(target, None).await?;
                client::join(&mut ws, &name, 1).await?;
                Ok(Steady { ws, room })
            }
        })
        .await,
        "steady subscribers",
    )?;
    let steady_rooms: Vec<u32> = steady.iter().map(|s| s.room).collect();
    // Publishers 0..P over the rooms, publisher P alone on the hot room.
    let publishers = all_ok(
        open_all(cfg.publishers + 1, 32, "publishers", |j| {
            let target = &targets[j % targets.len()];
            async move { Ok(client::connect_welcomed(target, None).await?.0) }
        })
        .await,
        "publishers",
    )?;

    let start = Instant::now();
    let start_unix_us = unix_us();
    let until = start + cfg.duration;
    let cpu_before = CpuSnapshot::take(&cfg.gateway_pids);
    let loadgen_before = own_cpu_seconds();
    let max_seq = (cfg.rate.max(cfg.hot_rate) * (cfg.duration.as_secs_f64() + 60.0)).ceil() as u64;
    let (stop_tx, stop_rx) = watch::channel(false);
    let ctx = Arc::new(subscriber::Context::new(8, start_unix_us, max_seq));
    let (sub_stop_tx, sub_stop_rx) = watch::channel(false);
    let sub_tasks = subscriber::spawn_all(
        steady
            .into_iter()
            .map(|s| subscriber::Conn::Ws(s.ws))
            .collect(),
        &ctx,
        &sub_stop_rx,
    );

    let all_rooms: Arc<Vec<(u32, String)>> = Arc::new(
        rooms
            .iter()
            .enumerate()
            .map(|(i, n)| (i as u32, n.clone()))
            .collect(),
    );
    let hot_rooms = Arc::new(vec![(hot_index, hot.clone())]);
    let spacing = 1.0 / (cfg.rate * cfg.publishers as f64);
    let padding: Arc<str> = wire::padding(cfg.payload).into();
    let hot_padding: Arc<str> = wire::padding(cfg.hot_payload).into();
    let plans: Vec<publish::Plan> = (0..=cfg.publishers)
        .map(|j| {
            let is_hot = j == cfg.publishers;
            publish::Plan {
                index: j as u32,
                rooms: Arc::clone(if is_hot { &hot_rooms } else { &all_rooms }),
                rate: if is_hot { cfg.hot_rate } else { cfg.rate },
                start,
                start_unix_us,
                phase: Duration::from_secs_f64(if is_hot { 0.0 } else { spacing * j as f64 }),
                until,
                padding: Arc::clone(if is_hot { &hot_padding } else { &padding }),
                max_seq,
            }
        })
        .collect();
    let pub_tasks: Vec<_> = publishers
        .into_iter()
        .zip(plans.iter().cloned())
        .map(|(ws, plan)| tokio::spawn(publish::run(ws, plan, stop_rx.clone())))
        .collect();

    let churn = Arc::new(Churn {
        targets: cfg.targets.clone(),
        rooms: rooms.clone(),
        hot: hot.clone(),
        mix: cfg.mix,
        lifetime: cfg.lifetime,
        stall: cfg.stall,
        per_source_address: cfg.per_source_address,
        seed: cfg.seed,
        until,
        slots: cfg.churners,
        tally: Tally::default(),
    });
    let churn_tasks: Vec<_> = (0..cfg.churners)
        .map(|slot| tokio::spawn(churn::run_slot(slot, Arc::clone(&churn), stop_rx.clone())))
        .collect();

    // The sampler: every period until told to stop.
    let (sampler_stop_tx, mut sampler_stop) = watch::channel(false);
    let sampler = {
        let samples = Arc::clone(&samples);
        let admins = cfg.admins.clone();
        let churn = Arc::clone(&churn);
        let every = cfg.sample_every;
        let load_until_s = cfg.duration.as_secs_f64() - every.as_secs_f64() / 2.0;
        let processes = processes.clone();
        tokio::spawn(async move {
            // Bounded by the stop, sent once the load is over, and by count.
            let most = (sample_bound(every) as u32).max(1);
            for n in 1..=most {
                let at = start + every * n;
                tokio::select! {
                    _ = sleep_until(at) => {}
                    _ = sampler_stop.changed() => break,
                }
                let open = churn.tally.open.load(Ordering::Relaxed);
                let t = start.elapsed().as_secs_f64();
                // At the end of the load clients are leaving (the sample
                // due at the very end races the stop): not judged.
                let phase = if t < load_until_s {
                    "load"
                } else {
                    "wind-down"
                };
                let s = sample::take(t, phase, open, &processes(), &admins).await;
                eprintln!("{}", describe(&s));
                samples
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(s);
            }
        })
    };

    // The restart, half way.
    let mut restart_times = None;
    let mut nats_child = None;
    if let Some(nats) = &cfg.nats {
        sleep_until(start + cfg.duration / 2).await;
        let stop_s = start.elapsed().as_secs_f64();
        eprintln!("soak: stopping nats-server {} at {stop_s:.1} s", nats.pid);
        restart::stop(nats.pid).await?;
        let stopped_s = start.elapsed().as_secs_f64();
        sleep(cfg.nats_down).await;
        let child = restart::start(nats).await?;
        let started_s = start.elapsed().as_secs_f64();
        let new_pid = child.id().unwrap_or(0);
        nats_pid.store(u64::from(new_pid), Ordering::Relaxed);
        nats_child = Some(child);
        eprintln!("soak: nats-server {new_pid} listening at {started_s:.1} s");
        let bus_back_s = bus_back(&cfg.admins, Duration::from_secs(60))
            .await
            .then(|| start.elapsed().as_secs_f64());
        restart_times = Some(RestartTimes {
            stop_s: round3(stop_s),
            stopped_s: round3(stopped_s),
            started_s: round3(started_s),
            bus_back_s: bus_back_s.map(round3),
            new_pid,
        });
    }

    sleep_until(until).await;
    let _ = stop_tx.send(true);
    let mut outcomes = Vec::new();
    for task in pub_tasks {
        // A publisher closes within its own 10 s bound; this bounds it once more.
        let outcome = timeout(Duration::from_secs(60), task)
            .await
            .map_err(|_| BenchError::new("a publisher did not finish within 60 s"))?
            .map_err(|e| BenchError::new(e.to_string()))?;
        outcomes.push(outcome);
    }
    for task in churn_tasks {
        // Every step of a slot is bounded; this bounds the sum once more.
        let abort = task.abort_handle();
        if timeout(Duration::from_secs(60), task).await.is_err() {
            abort.abort();
        }
    }
    let cpu_used: f64 = cpu_before
        .used_until(&CpuSnapshot::take(&cfg.gateway_pids))
        .iter()
        .map(|p| p.cpu_seconds)
        .sum();

    // Wait for what is owed to arrive (bounded), then stop the subscribers.
    let owed_total: u64 = steady_rooms
        .iter()
        .map(|&room| {
            outcomes
                .iter()
                .enumerate()
                .filter_map(|(p, o)| o.accepted.stream(p as u32, room))
                .map(|s| s.distinct())
                .sum::<u64>()
        })
        .sum();
    let grace = Instant::now() + Duration::from_secs(10);
    while ctx.delivered.load(Ordering::Relaxed) < owed_total && Instant::now() < grace {
        sleep(Duration::from_millis(10)).await;
    }
    let _ = sub_stop_tx.send(true);
    let mut subs = Vec::new();
    for task in sub_tasks {
        subs.push(task.await.map_err(|e| BenchError::new(e.to_string()))?);
    }
    let loadgen_cpu_s = round3(own_cpu_seconds() - loadgen_before);
    let _ = sampler_stop_tx.send(true);
    let _ = sampler.await;

    // Every client is gone: the gauges must come back to 0.
    let left_at = Instant::now();
    let settle_until = left_at + cfg.settle;
    let (connections, rooms_left) = loop {
        let mut connections = Vec::new();
        let mut rooms_left = Vec::new();
        for &admin in &cfg.admins {
            let g = sample::gateway(admin).await;
            connections.push(g.connections);
            rooms_left.push(g.rooms);
        }
        if (all_zero(&connections) && all_zero(&rooms_left)) || Instant::now() >= settle_until {
            break (connections, rooms_left);
        }
        sleep(Duration::from_millis(200)).await;
    };
    let zero = all_zero(&connections) && all_zero(&rooms_left);
    let settle = Settle {
        zero_after_s: zero.then(|| round3(left_at.elapsed().as_secs_f64())),
        connections,
        rooms: rooms_left,
    };
    push(
        sample::take(
            start.elapsed().as_secs_f64(),
            "end",
            churn.tally.open.load(Ordering::Relaxed),
            &processes(),
            &cfg.admins,
        )
        .await,
    );
    if let Some(child) = nats_child {
        restart::stop_child(child).await;
    }

    let window = restart_times.as_ref().map(|r| {
        (
            r.stop_s - 0.5,
            r.bus_back_s.unwrap_or(r.started_s + 60.0) + 1.0,
        )
    });
    let delivery = delivery(
        &subs,
        &steady_rooms,
        &outcomes,
        &plans,
        window,
        &ctx,
        cfg.targets.len(),
    );
    let publishing = publishing(&outcomes);
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(PoisonError::into_inner));
    let final_nats = nats_pid.load(Ordering::Relaxed) as u32;
    let flat = flat_verdicts(&samples, cfg, final_nats, restart_times.as_ref());
    let flat_ok = flat.iter().all(|v| v.flatness.is_none_or(|f| f.pass))
        && flat.iter().any(|v| v.flatness.is_some());
    let no_loss =
        delivery.lost_outside_restart == 0 && delivery.steady_dropped == 0 && delivery.owed > 0;
    let verdicts = Verdicts {
        flat: flat_ok,
        back_to_zero: zero,
        no_loss,
        passed: flat_ok && zero && no_loss,
    };
    Ok(Report {
        scenario: "soak",
        command: cfg.command.clone(),
        duration_s: cfg.duration.as_secs_f64(),
        warmup_s: cfg.warmup.as_secs_f64(),
        sample_every_s: cfg.sample_every.as_secs_f64(),
        churners: cfg.churners,
        mix: cfg.mix,
        steady: steady_total,
        rooms: cfg.rooms,
        publishers: cfg.publishers,
        rate: cfg.rate,
        hot_rate: cfg.hot_rate,
        hot_payload: cfg.hot_payload,
        stall_s: cfg.stall.as_secs_f64(),
        loadavg_before,
        loadavg_after: loadavg(),
        restart: restart_times,
        samples,
        flat,
        settle,
        delivery,
        publishing,
        churn: churn.tally.counts(),
        gateway_cpu_s: round3(cpu_used),
        loadgen_cpu_s,
        verdicts,
    })
}

/// The flatness criterion, in words.
pub fn flat_criterion(warmup_s: f64) -> String {
    format!(
        "RSS and open fds of each gateway (and of the restarted nats-server, after its own \
         warm-up), sampled during the load after {warmup_s} s of warm-up: the mean of the last \
         third of the samples ≤ the mean of the first third × {} + {} MiB (RSS) or + {} fds",
        1.0 + verdict::FLAT_GROWTH,
        FLAT_RSS_SLACK_KIB / 1024.0,
        FLAT_FD_SLACK
    )
}

/// The back-to-zero criterion, in words.
pub const ZERO_CRITERION: &str = "once every client has left, `roomcast_connections` and \
    `roomcast_rooms` are 0 on every gateway (polled every 200 ms, within --settle)";

/// The no-loss criterion, in words.
pub const LOSS_CRITERION: &str = "every publish answered `ok` (accepted) outside the restart \
    window (SIGTERM − 0.5 s to every gateway's bus up again + 1 s) reached every steady \
    subscriber of its room that stayed connected and kept reading; no steady subscriber was \
    disconnected";

fn pass(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

/// The verdicts with their criteria, as printed at the end of a run.
pub fn verdict_lines(r: &Report) -> String {
    let mut out = String::from("soak verdicts\n");
    out.push_str(&format!("flat: {}\n", flat_criterion(r.warmup_s)));
    for v in &r.flat {
        match &v.flatness {
            Some(f) => out.push_str(&format!(
                "  {} {} {}: early mean {} late mean {} limit {} max {} ({} samples)\n",
                pass(f.pass),
                v.process,
                v.metric,
                f.early_mean,
                f.late_mean,
                f.limit,
                f.max,
                v.samples
            )),
            None => out.push_str(&format!(
                "  n/a  {} {}: {} samples, too few to judge\n",
                v.process, v.metric, v.samples
            )),
        }
    }
    out.push_str(&format!("back to zero: {ZERO_CRITERION}\n"));
    let show = |v: &[Option<i64>]| {
        v.iter()
            .map(|x| x.map_or("?".into(), |n| n.to_string()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    out.push_str(&format!(
        "  {} connections [{}] rooms [{}]{}\n",
        pass(r.verdicts.back_to_zero),
        show(&r.settle.connections),
        show(&r.settle.rooms),
        r.settle.zero_after_s.map_or(String::new(), |s| format!(
            " {s} s after the last client left"
        ))
    ));
    out.push_str(&format!("no loss: {LOSS_CRITERION}\n"));
    let d = &r.delivery;
    out.push_str(&format!(
        "  {} owed {} received {} lost {} outside the restart window, {} inside it; dup {} reordered {}; steady dropped {} of {}\n",
        pass(r.verdicts.no_loss),
        d.owed,
        d.received,
        d.lost_outside_restart,
        d.lost_around_restart,
        d.problems.duplicated,
        d.problems.out_of_order,
        d.steady_dropped,
        d.steady
    ));
    out.push_str(&format!(
        "soak: {}\n",
        if r.verdicts.passed {
            "PASSED"
        } else {
            "FAILED"
        }
    ));
    out
}

/// Most samples a run of a day could take (the sampler's loop bound).
fn sample_bound(every: Duration) -> u64 {
    (86_400.0 / every.as_secs_f64().max(0.001)).ceil() as u64
}

/// Waits until every gateway reports `roomcast_bus_up 1`, at most `limit`.
async fn bus_back(admins: &[SocketAddr], limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        let mut up = true;
        for &admin in admins {
            up &= sample::gateway(admin).await.bus_up == Some(1);
        }
        if up {
            return true;
        }
        sleep(Duration::from_millis(100)).await;
    }
    false
}

/// One line per sample on stderr, to watch a long run.
fn describe(s: &Sample) -> String {
    let mut line = format!("t={:>6.1}s churn_open={:>5}", s.t_s, s.churn_open);
    for p in &s.processes {
        line.push_str(&format!(
            " | {} rss={}KiB fds={}",
            p.name,
            p.rss_kib.map_or("?".into(), |v| v.to_string()),
            p.fds.map_or("?".into(), |v| v.to_string())
        ));
    }
    for (i, g) in s.gateways.iter().enumerate() {
        line.push_str(&format!(
            " | {} conns={} rooms={} bus={}",
            gateway_name(i),
            g.connections.map_or("?".into(), |v| v.to_string()),
            g.rooms.map_or("?".into(), |v| v.to_string()),
            g.bus_up.map_or("?".into(), |v| v.to_string()),
        ));
    }
    line
}

fn delivery(
    subs: &[subscriber::Outcome],
    rooms: &[u32],
    outcomes: &[publish::Outcome],
    plans: &[publish::Plan],
    window: Option<(f64, f64)>,
    ctx: &subscriber::Context,
    targets: usize,
) -> Delivery {
    let mut d = Delivery {
        steady: subs.len(),
        latency: summarize(&ctx.all_latencies()),
        ..Delivery::default()
    };
    for (i, (sub, &room)) in subs.iter().zip(rooms).enumerate() {
        if sub.closed.is_some() || sub.failure.is_some() {
            d.steady_dropped += 1;
            let how = sub.closed.map_or_else(
                || sub.failure.clone().unwrap_or_default(),
                |c| format!("close {c}"),
            );
            *d.steady_dropped_how.entry(how).or_default() += 1;
            continue;
        }
        for (p, (out, plan)) in outcomes.iter().zip(plans).enumerate() {
            let p = p as u32;
            let received = sub.ledger.stream(p, room);
            let received_distinct = received.map_or(0, |s| s.distinct());
            if let Some(problems) = received.map(|_| sub.ledger.problems(p, room, 0)) {
                d.problems.add(&Problems {
                    lost: 0,
                    ..problems
                });
            }
            let Some(accepted) = out.accepted.stream(p, room) else {
                d.received_not_accepted += received_distinct;
                continue;
            };
            let missing = received.map_or_else(
                || crate::ledger::Stream::default().missing_of(accepted),
                |r| r.missing_of(accepted),
            );
            let owed = accepted.distinct();
            d.owed += owed;
            d.received += owed - missing.len() as u64;
            d.received_not_accepted += received_distinct - (owed - missing.len() as u64);
            d.lost += missing.len() as u64;
            let slot = plan.rooms.iter().position(|(r, _)| *r == room).unwrap_or(0);
            for seq in missing {
                let m = message_of(p, slot, seq, plan.rooms.len());
                let sent_s = publish::due(plan, m).as_secs_f64();
                if window.is_some_and(|(from, to)| (from..=to).contains(&sent_s)) {
                    d.lost_around_restart += 1;
                } else {
                    d.lost_outside_restart += 1;
                }
                if d.lost_examples.len() < 10 {
                    d.lost_examples.push(format!(
                        "sent at {:.3} s by a publisher on {} to a subscriber on {}",
                        sent_s,
                        target_of(p as usize, targets),
                        target_of(i, targets)
                    ));
                }
            }
        }
    }
    d
}

fn publishing(outcomes: &[publish::Outcome]) -> Publishing {
    let mut p = Publishing::default();
    for o in outcomes {
        p.sent += o.sent;
        p.accepted += o.accepted_count;
        p.unanswered += o.unanswered();
        for (code, n) in &o.refused {
            *p.refused.entry(code.clone()).or_default() += n;
        }
        if let Some((first, last)) = o.refused_span_s {
            let (f, l) = p.refused_span_s.unwrap_or((first, last));
            p.refused_span_s = Some((round3(f.min(first)), round3(l.max(last))));
        }
        if let Some(failure) = &o.failure {
            p.failures.push(failure.clone());
        }
    }
    p
}

fn flat_verdicts(
    samples: &[Sample],
    cfg: &Config,
    nats_pid: u32,
    restart: Option<&RestartTimes>,
) -> Vec<FlatVerdict> {
    let warm = cfg.warmup.as_secs_f64();
    let judged: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.phase == "load" && s.t_s >= warm)
        .collect();
    let mut out = Vec::new();
    let mut judge = |name: &str, pid: u32, from: &[&Sample]| {
        for (metric, rss, slack) in [
            ("rss_kib", true, FLAT_RSS_SLACK_KIB),
            ("fds", false, FLAT_FD_SLACK),
        ] {
            let values = sample::series(from, name, pid, rss);
            out.push(FlatVerdict {
                process: name.to_owned(),
                metric,
                samples: values.len(),
                flatness: flatness(&values, slack),
            });
        }
    };
    for (i, &pid) in cfg.gateway_pids.iter().enumerate() {
        judge(&gateway_name(i), pid, &judged);
    }
    if nats_pid != 0 {
        // A restarted nats-server gets a warm-up of its own.
        let since = restart.map_or(warm, |r| {
            r.started_s + warm.min(cfg.duration.as_secs_f64() / 10.0)
        });
        let after: Vec<&Sample> = judged.iter().copied().filter(|s| s.t_s >= since).collect();
        judge("nats", nats_pid, &after);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateways_are_named_by_letter() {
        assert_eq!(gateway_name(0), "gw-a");
        assert_eq!(gateway_name(1), "gw-b");
    }
}
