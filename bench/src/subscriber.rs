//! Subscribers: read every frame, check each probe against the ledger and
//! record its latency, until told to stop or closed by the server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::client::Ws;
use crate::latency::{Latencies, unix_us};
use crate::ledger::Ledger;
use crate::wire::{self, Incoming};

/// What all subscribers of one run share.
pub struct Context {
    /// Latency histograms.
    pub latencies: Arc<Latencies>,
    /// Messages received by all subscribers so far.
    pub delivered: Arc<AtomicU64>,
    /// Probes sent before this (warm-up) are checked but not timed.
    pub measure_from_us: u64,
    /// Largest plausible sequence number.
    pub max_seq: u64,
}

/// What one subscriber saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Per-(publisher, room) arrivals.
    pub ledger: Ledger,
    /// Probes received.
    pub received: u64,
    /// `message` frames that were not probes.
    pub foreign: u64,
    /// `error` frames.
    pub errors: u64,
    /// Close code, when the server closed the connection.
    pub closed: Option<u16>,
    /// Read error that ended the connection, if any.
    pub failure: Option<String>,
}

/// Starts one task per subscriber connection.
pub fn spawn_all(
    subs: Vec<Ws>,
    ctx: &Arc<Context>,
    stop: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<Outcome>> {
    subs.into_iter()
        .enumerate()
        .map(|(i, ws)| tokio::spawn(run(ws, i, Arc::clone(ctx), stop.clone())))
        .collect()
}

/// Reads `ws` until `stop` turns true or the connection ends.
pub async fn run(
    mut ws: Ws,
    who: usize,
    ctx: Arc<Context>,
    mut stop: watch::Receiver<bool>,
) -> Outcome {
    let mut out = Outcome {
        ledger: Ledger::new(ctx.max_seq),
        ..Outcome::default()
    };
    if *stop.borrow_and_update() {
        return out;
    }
    // One wait for the stop, registered once: a fresh `changed()` per frame
    // took the channel's lock twice per message across all subscribers.
    let stopped = stop.changed();
    tokio::pin!(stopped);
    loop {
        let frame = tokio::select! {
            _ = &mut stopped => break,
            frame = ws.next() => frame,
        };
        match frame {
            Some(Ok(Message::Text(text))) => match wire::decode(&text) {
                Incoming::Message(probe) => {
                    let now = unix_us();
                    if probe.t >= ctx.measure_from_us {
                        ctx.latencies.record(who, now.saturating_sub(probe.t));
                    }
                    out.ledger.record(probe.p, probe.r, probe.s);
                    out.received += 1;
                    ctx.delivered.fetch_add(1, Ordering::Relaxed);
                }
                Incoming::Foreign => out.foreign += 1,
                Incoming::Error { .. } => out.errors += 1,
                _ => {}
            },
            Some(Ok(Message::Close(frame))) => {
                out.closed = Some(frame.map_or(1005, |f| u16::from(f.code)));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                out.failure = Some(e.to_string());
                break;
            }
            None => {
                out.failure.get_or_insert_with(|| "connection ended".into());
                break;
            }
        }
    }
    out
}
