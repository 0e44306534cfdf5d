//! Publishers: open-loop, paced publishing of probes to rooms in turn, with
//! a sequence number per (publisher, room) and the actual send time as the
//! timestamp. How late each publish went out against its schedule is kept
//! beside it ([`Outcome::lag_us`]): a publisher held back (by a full socket,
//! or a starved load generator) shows up there and fails a rate step, so it
//! cannot hide a slow server (no coordinated omission). Stamping the
//! intended time instead added the timer's up-to-a-millisecond lateness to
//! every latency figure.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message;

use crate::client::Ws;
use crate::latency::{Latencies, Summary, summarize, unix_us};
use crate::wire::{self, Incoming, Probe};

/// What one publisher does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Publisher index (the probe's `p`).
    pub index: u32,
    /// Names of all rooms; message `m` goes to room `(index + m) % len`.
    pub rooms: Arc<Vec<String>>,
    /// Messages per second.
    pub rate: f64,
    /// When message 0 of publisher 0 is due.
    pub start: Instant,
    /// `start` on the Unix clock, in microseconds.
    pub start_unix_us: u64,
    /// This publisher's offset from `start`, so publishers do not fire together.
    pub phase: Duration,
    /// No message is due at or after this instant.
    pub until: Option<Instant>,
    /// Filler making `data` the configured size.
    pub padding: Arc<str>,
}

/// What one publisher did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Messages sent, per room index.
    pub sent: Vec<u64>,
    /// `error` frames received, by code.
    pub errors: BTreeMap<String, u64>,
    /// Why sending stopped early, if it did.
    pub failure: Option<String>,
    /// How late each publish went out against its schedule, microseconds.
    pub lag_us: Vec<u64>,
}

/// The publishers' lag (actual send time against the schedule) over all of
/// them, in milliseconds.
pub fn lag_summary(outcomes: &[Outcome]) -> Summary {
    let all = Latencies::new(1);
    for lag in outcomes.iter().flat_map(|o| &o.lag_us) {
        all.record(0, *lag);
    }
    summarize(&all.merged())
}

/// What every publisher of one run shares.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Names of all rooms.
    pub rooms: Arc<Vec<String>>,
    /// Messages per second per publisher.
    pub rate: f64,
    /// When the first message is due.
    pub start: Instant,
    /// `start` on the Unix clock, in microseconds.
    pub start_unix_us: u64,
    /// No message is due at or after this instant.
    pub until: Option<Instant>,
    /// Filler making `data` the configured size.
    pub padding: Arc<str>,
}

/// Starts one task per publisher connection, staggered evenly over one
/// message interval.
pub fn spawn_all(
    pubs: Vec<Ws>,
    schedule: &Schedule,
    stop: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<Outcome>> {
    let spacing = 1.0 / (schedule.rate * pubs.len().max(1) as f64);
    pubs.into_iter()
        .enumerate()
        .map(|(j, ws)| {
            let plan = Plan {
                index: j as u32,
                rooms: Arc::clone(&schedule.rooms),
                rate: schedule.rate,
                start: schedule.start,
                start_unix_us: schedule.start_unix_us,
                phase: Duration::from_secs_f64(spacing * j as f64),
                until: schedule.until,
                padding: Arc::clone(&schedule.padding),
            };
            tokio::spawn(run(ws, plan, stop.clone()))
        })
        .collect()
}

/// `error` frames received by all publishers, by code.
pub fn errors_by_code(outcomes: &[Outcome]) -> BTreeMap<String, u64> {
    let mut all = BTreeMap::new();
    for out in outcomes {
        for (code, n) in &out.errors {
            *all.entry(code.clone()).or_insert(0) += n;
        }
    }
    all
}

/// When message `m` of a publisher is due, relative to its start.
pub fn due(phase: Duration, rate: f64, m: u64) -> Duration {
    let offset = Duration::try_from_secs_f64(m as f64 / rate).unwrap_or(Duration::MAX);
    phase.saturating_add(offset)
}

/// Publishes until `plan.until` or `stop`, then closes the connection cleanly
/// (the close frame follows the publishes, so the server reads them all).
pub async fn run(ws: Ws, plan: Plan, stop: watch::Receiver<bool>) -> Outcome {
    let (mut sink, mut stream) = ws.split();
    let errors: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let reader = {
        let errors = Arc::clone(&errors);
        tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                if let Message::Text(text) = frame
                    && let Incoming::Error { code, .. } = wire::decode(&text)
                {
                    *errors
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .entry(code)
                        .or_default() += 1;
                }
            }
        })
    };
    let rooms = plan.rooms.len().max(1);
    let mut outcome = Outcome {
        sent: vec![0; rooms],
        ..Outcome::default()
    };
    for m in 0u64.. {
        let offset = due(plan.phase, plan.rate, m);
        let Some(at) = plan.start.checked_add(offset) else {
            break;
        };
        if plan.until.is_some_and(|until| at >= until) || *stop.borrow() {
            break;
        }
        sleep_until(at).await;
        let room = (plan.index as usize + m as usize) % rooms;
        let now = unix_us();
        let intended = plan.start_unix_us + offset.as_micros() as u64;
        outcome.lag_us.push(now.saturating_sub(intended));
        let probe = Probe {
            p: plan.index,
            r: room as u32,
            s: outcome.sent[room],
            t: now,
        };
        let name = plan
            .rooms
            .get(room)
            .map(String::as_str)
            .unwrap_or("bench-0");
        let frame = wire::publish(name, &probe, &plan.padding);
        if let Err(e) = sink.send(Message::text(frame)).await {
            outcome.failure = Some(e.to_string());
            break;
        }
        outcome.sent[room] += 1;
    }
    let _ = sink.send(Message::Close(None)).await;
    // The server answers the close after it has handled every publish.
    let _ = timeout(Duration::from_secs(10), reader).await;
    outcome.errors = std::mem::take(&mut *errors.lock().unwrap_or_else(PoisonError::into_inner));
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lag_summary_covers_every_publisher() {
        let outcome = |lag_us: Vec<u64>| Outcome {
            lag_us,
            ..Outcome::default()
        };
        let lag = lag_summary(&[outcome(vec![1_000; 99]), outcome(vec![40_000])]);
        assert_eq!(lag.count, 100);
        assert!((0.99..=1.01).contains(&lag.p50_ms), "{lag:?}");
        assert!((39.9..=40.1).contains(&lag.max_ms), "{lag:?}");
    }

    #[test]
    fn messages_are_due_at_even_intervals_after_the_phase() {
        let phase = Duration::from_millis(3);
        assert_eq!(due(phase, 50.0, 0), phase);
        assert_eq!(due(phase, 50.0, 1), phase + Duration::from_millis(20));
        assert_eq!(due(phase, 50.0, 50), phase + Duration::from_secs(1));
        // A zero or negative rate never makes a message due, and never panics.
        assert_eq!(due(phase, 0.0, 1), Duration::MAX);
        assert_eq!(due(phase, -1.0, 1), Duration::MAX);
    }
}
