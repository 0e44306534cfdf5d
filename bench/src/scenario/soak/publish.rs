//! The soak's publishers: paced probes to their rooms in turn, each publish
//! with an `id` so the gateway's answer says whether it was accepted (`ok`)
//! or refused (`error`, e.g. `unavailable` while NATS restarts). Only
//! accepted publishes are owed to subscribers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message;

use super::verdict::slot_of;
use crate::client::Ws;
use crate::ledger::Ledger;
use crate::wire::{self, Incoming, Probe};

/// What one publisher does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Publisher index (the probe's `p`).
    pub index: u32,
    /// Its rooms: (room index, name); message `m` goes to slot `(index + m) % len`.
    pub rooms: Arc<Vec<(u32, String)>>,
    /// Messages per second.
    pub rate: f64,
    /// When the load started.
    pub start: Instant,
    /// `start` on the Unix clock, in microseconds.
    pub start_unix_us: u64,
    /// This publisher's offset from `start`.
    pub phase: Duration,
    /// No message is due at or after this instant.
    pub until: Instant,
    /// Filler making `data` the configured size.
    pub padding: Arc<str>,
    /// Largest sequence number the ledgers hold.
    pub max_seq: u64,
}

/// What one publisher did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Publishes sent.
    pub sent: u64,
    /// Publishes answered `ok`, by (publisher, room index) and sequence number.
    pub accepted: Ledger,
    /// How many were accepted.
    pub accepted_count: u64,
    /// Publishes answered `error`, by code.
    pub refused: BTreeMap<String, u64>,
    /// Seconds after the start of the first and last refusal.
    pub refused_span_s: Option<(f64, f64)>,
    /// Why publishing stopped early, if it did.
    pub failure: Option<String>,
}

impl Outcome {
    /// Publishes neither accepted nor refused by the end.
    pub fn unanswered(&self) -> u64 {
        let refused: u64 = self.refused.values().sum();
        self.sent.saturating_sub(self.accepted_count + refused)
    }
}

/// When message `m` is due, after the start.
pub fn due(plan: &Plan, m: u64) -> Duration {
    crate::publisher::due(plan.phase, plan.rate, m)
}

/// Publishes until `plan.until` or `stop`, then closes cleanly and collects
/// every answer (the gateway answers the close after the publishes).
pub async fn run(ws: Ws, plan: Plan, stop: watch::Receiver<bool>) -> Outcome {
    let (mut sink, mut stream) = ws.split();
    let answers: Arc<Mutex<Outcome>> = Arc::new(Mutex::new(Outcome {
        accepted: Ledger::new(plan.max_seq),
        ..Outcome::default()
    }));
    let mut reader = {
        let answers = Arc::clone(&answers);
        let plan = plan.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                let Message::Text(text) = frame else { continue };
                let mut out = answers.lock().unwrap_or_else(PoisonError::into_inner);
                match wire::decode(&text) {
                    Incoming::Ok { id: Some(m) } => {
                        let (slot, seq) = slot_of(plan.index, m, plan.rooms.len());
                        let room = plan.rooms.get(slot).map_or(u32::MAX, |r| r.0);
                        out.accepted.record(plan.index, room, seq);
                        out.accepted_count += 1;
                    }
                    Incoming::Error { code, .. } => {
                        *out.refused.entry(code).or_default() += 1;
                        let at = plan.start.elapsed().as_secs_f64();
                        let (first, _) = out.refused_span_s.unwrap_or((at, at));
                        out.refused_span_s = Some((first, at));
                    }
                    _ => {}
                }
            }
        })
    };
    let rooms = plan.rooms.len().max(1);
    let mut sent = 0;
    let mut failure = None;
    for m in 0u64.. {
        let offset = due(&plan, m);
        let Some(at) = plan.start.checked_add(offset) else {
            break;
        };
        if at >= plan.until || *stop.borrow() {
            break;
        }
        sleep_until(at).await;
        let (slot, seq) = slot_of(plan.index, m, rooms);
        let Some((room, name)) = plan.rooms.get(slot) else {
            break;
        };
        let probe = Probe {
            p: plan.index,
            r: *room,
            s: seq,
            t: plan.start_unix_us + offset.as_micros() as u64,
        };
        let frame = wire::publish_with_id(name, &probe, &plan.padding, m);
        if let Err(e) = sink.send(Message::text(frame)).await {
            failure = Some(e.to_string());
            break;
        }
        sent += 1;
    }
    let _ = sink.send(Message::Close(None)).await;
    if timeout(Duration::from_secs(10), &mut reader).await.is_err() {
        reader.abort();
    }
    let mut out = std::mem::take(&mut *answers.lock().unwrap_or_else(PoisonError::into_inner));
    out.sent = sent;
    out.failure = failure;
    out
}
