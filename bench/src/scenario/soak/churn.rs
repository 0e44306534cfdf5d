//! The soak's churning clients: a fixed number of slots, each connecting,
//! joining, publishing, leaving and disconnecting over and over until the
//! run ends, ending each connection by its [`Fate`]: a clean close, a TCP
//! reset, a drop without close, or a slow reader the gateway closes with 4008.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::{Instant, sleep, timeout};
use tokio_tungstenite::tungstenite::Message;

use super::verdict::{Fate, Mix, mix64};
use crate::client::{self, Ws};
use crate::target::{Target, source_address};
use crate::wire::{self, Incoming};

/// How long a connect + welcome, a join answer or a close handshake may take.
const STEP: Duration = Duration::from_secs(10);
/// How long a slow reader reads after its stall before giving up on a close.
const SLOW_READ: Duration = Duration::from_secs(30);
/// A slow reader's receive buffer, so its window fills after a few frames.
const SLOW_RECV_BUFFER: u32 = 4096;
/// Distinct failure messages kept.
const EXAMPLES: usize = 5;

/// What every slot shares.
#[derive(Debug)]
pub struct Churn {
    /// Gateways.
    pub targets: Vec<Target>,
    /// Rooms churners join (the publishers' rooms).
    pub rooms: Vec<String>,
    /// The hot room slow readers join.
    pub hot: String,
    /// How connections end.
    pub mix: Mix,
    /// Shortest and longest life of a connection (slow readers excepted).
    pub lifetime: (Duration, Duration),
    /// How long a slow reader stops reading.
    pub stall: Duration,
    /// Connections per loopback source address (0: no binding).
    pub per_source_address: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// No connection starts after this.
    pub until: Instant,
    /// Slots (for the start-up stagger).
    pub slots: usize,
    /// Counts.
    pub tally: Tally,
}

/// Churn counts, shared by all slots.
#[derive(Debug, Default)]
pub struct Tally {
    /// Churning connections open now.
    pub open: AtomicU64,
    /// Connections welcomed.
    pub opened: AtomicU64,
    /// Most connections open at once.
    pub peak_open: AtomicU64,
    counts: Mutex<Counts>,
}

/// The churn's result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Connections welcomed.
    pub opened: u64,
    /// Most churning connections open at once.
    pub peak_open: u64,
    /// Connections that failed before their welcome.
    pub connect_failures: u64,
    /// A few of their messages.
    pub connect_failure_examples: Vec<String>,
    /// Joins answered `ok`.
    pub joins_ok: u64,
    /// Joins answered `error`, by code.
    pub join_errors: BTreeMap<String, u64>,
    /// Publishes answered `ok`.
    pub publishes_ok: u64,
    /// Publishes answered `error`, by code.
    pub publish_errors: BTreeMap<String, u64>,
    /// Leaves answered `ok`.
    pub leaves_ok: u64,
    /// Connections ended, by fate.
    pub endings: BTreeMap<Fate, u64>,
    /// Connections the gateway ended before their time (not slow readers), by how.
    pub ended_by_gateway: BTreeMap<String, u64>,
    /// What slow readers saw once they read again, by outcome.
    pub slow_outcomes: BTreeMap<String, u64>,
}

impl Tally {
    fn with<T>(&self, f: impl FnOnce(&mut Counts) -> T) -> T {
        f(&mut self.counts.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        let mut counts = self.with(|c| c.clone());
        counts.opened = self.opened.load(Ordering::Relaxed);
        counts.peak_open = self.peak_open.load(Ordering::Relaxed);
        counts
    }
}

/// Holds one open-connection count while alive.
struct Open<'a>(&'a Tally);

impl<'a> Open<'a> {
    fn new(tally: &'a Tally) -> Self {
        tally.opened.fetch_add(1, Ordering::Relaxed);
        let now = tally.open.fetch_add(1, Ordering::Relaxed) + 1;
        tally.peak_open.fetch_max(now, Ordering::Relaxed);
        Self(tally)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One slot: connection after connection until `until` or `stop`.
pub async fn run_slot(slot: usize, churn: Arc<Churn>, mut stop: watch::Receiver<bool>) {
    // Stagger the first connections over two seconds: a soak, not a storm.
    let stagger = Duration::from_millis((slot * 2000 / churn.slots.max(1)) as u64);
    tokio::select! {
        _ = sleep(stagger) => {}
        _ = stop.changed() => return,
    }
    for k in 0u64.. {
        if Instant::now() >= churn.until || *stop.borrow() {
            break;
        }
        one(slot, k, &churn, stop.clone()).await;
        let pause = Duration::from_millis(mix64(churn.seed, slot as u64, k, 9) % 200);
        tokio::select! {
            _ = sleep(pause) => {}
            _ = stop.changed() => break,
        }
    }
}

/// A fraction in [0, 1) from a random value.
fn fraction(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// One connection of slot `slot`, its `k`-th.
async fn one(slot: usize, k: u64, churn: &Churn, stop: watch::Receiver<bool>) {
    let x = |salt| mix64(churn.seed, slot as u64, k, salt);
    let target = &churn.targets[(x(1) % churn.targets.len() as u64) as usize];
    let fate = churn.mix.pick(x(2));
    let source = source_address(slot, churn.per_source_address, &target.addr);
    let recv_buffer = (fate == Fate::Slow).then_some(SLOW_RECV_BUFFER);
    let connected = timeout(STEP, async {
        let mut ws = client::connect_with(target, source, recv_buffer).await?;
        client::welcome(&mut ws).await?;
        Ok::<_, crate::BenchError>(ws)
    })
    .await;
    let ws = match connected {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => return failed(&churn.tally, e.to_string()),
        Err(_) => {
            return failed(
                &churn.tally,
                format!("no welcome from {} in time", target.url),
            );
        }
    };
    let _open = Open::new(&churn.tally);
    if fate == Fate::Slow {
        slow(ws, churn, stop).await;
    } else {
        let span = churn.lifetime.1.saturating_sub(churn.lifetime.0);
        let life = churn.lifetime.0 + span.mul_f64(fraction(x(3)));
        let joins = 1 + (x(4) % 3) as usize;
        let rooms: Vec<&str> = (0..joins)
            .map(|i| churn.rooms[(x(10 + i as u64) % churn.rooms.len() as u64) as usize].as_str())
            .collect();
        live(ws, fate, &rooms, life, slot, churn, stop).await;
    }
    churn
        .tally
        .with(|c| *c.endings.entry(fate).or_default() += 1);
}

fn failed(tally: &Tally, message: String) {
    tally.with(|c| {
        c.connect_failures += 1;
        if c.connect_failure_examples.len() < EXAMPLES
            && !c.connect_failure_examples.contains(&message)
        {
            c.connect_failure_examples.push(message);
        }
    });
}

const PUBLISH_ID: u64 = 100;
const LEAVE_ID: u64 = 200;

/// An ordinary client: joins its rooms, publishes once, leaves one room half
/// way, reads everything until its life is over, then ends by `fate`.
async fn live(
    mut ws: Ws,
    fate: Fate,
    rooms: &[&str],
    life: Duration,
    slot: usize,
    churn: &Churn,
    mut stop: watch::Receiver<bool>,
) {
    let mut frames: Vec<String> = rooms
        .iter()
        .enumerate()
        .map(|(i, room)| wire::join(room, i as u64 + 1))
        .collect();
    frames.push(format!(
        r#"{{"type":"publish","room":"{}","id":{PUBLISH_ID},"data":{{"churn":{slot}}}}}"#,
        rooms[0]
    ));
    for frame in frames {
        if ws.send(Message::text(frame)).await.is_err() {
            return ended(&churn.tally, "send failed");
        }
    }
    let born = Instant::now();
    let half = born + life / 2;
    let mut left = rooms.len() < 2;
    let end = born + life;
    loop {
        if !left && Instant::now() >= half {
            left = true;
            let leave = format!(
                r#"{{"type":"leave","room":"{}","id":{LEAVE_ID}}}"#,
                rooms[rooms.len() - 1]
            );
            if ws.send(Message::text(leave)).await.is_err() {
                return ended(&churn.tally, "send failed");
            }
        }
        let wake = if left { end } else { half };
        let frame = tokio::select! {
            _ = tokio::time::sleep_until(wake) => {
                if left { break } else { continue }
            }
            _ = stop.changed() => break,
            frame = ws.next() => frame,
        };
        match frame {
            Some(Ok(Message::Text(text))) => answer(&churn.tally, &text),
            Some(Ok(Message::Close(frame))) => {
                let code = frame.map_or(1005, |f| u16::from(f.code));
                return ended(&churn.tally, &format!("close {code}"));
            }
            Some(Ok(_)) => {}
            Some(Err(_)) => return ended(&churn.tally, "read error"),
            None => return ended(&churn.tally, "eof"),
        }
    }
    match fate {
        Fate::Reset => {
            // SO_LINGER 0: close() sends a RST instead of a FIN.
            let _ = ws.get_ref().set_zero_linger();
            drop(ws);
        }
        Fate::Drop => drop(ws),
        Fate::Clean | Fate::Slow => {
            let _ = timeout(STEP, async {
                ws.close(None).await?;
                while ws.next().await.is_some_and(|f| f.is_ok()) {}
                Ok::<_, tokio_tungstenite::tungstenite::Error>(())
            })
            .await;
        }
    }
}

fn ended(tally: &Tally, how: &str) {
    tally.with(|c| *c.ended_by_gateway.entry(how.to_owned()).or_default() += 1);
}

/// Counts the answer in `text`, if it is one.
fn answer(tally: &Tally, text: &str) {
    match wire::decode(text) {
        Incoming::Ok {
            id: Some(PUBLISH_ID),
        } => tally.with(|c| c.publishes_ok += 1),
        Incoming::Ok { id: Some(LEAVE_ID) } => tally.with(|c| c.leaves_ok += 1),
        Incoming::Ok { id: Some(_) } => tally.with(|c| c.joins_ok += 1),
        Incoming::Error { code, id } => tally.with(|c| {
            let map = if id == Some(PUBLISH_ID) {
                &mut c.publish_errors
            } else {
                &mut c.join_errors
            };
            *map.entry(code).or_default() += 1;
        }),
        _ => {}
    }
}

/// A slow reader: joins the hot room, stops reading for `stall`, then reads
/// again and records how the gateway ended the connection.
async fn slow(mut ws: Ws, churn: &Churn, mut stop: watch::Receiver<bool>) {
    let joined = timeout(STEP, client::join(&mut ws, &churn.hot, 1)).await;
    match joined {
        Ok(Ok(())) => churn.tally.with(|c| c.joins_ok += 1),
        Ok(Err(e)) => {
            let text = e.to_string();
            let code = text.rsplit(": ").next().unwrap_or("error").to_owned();
            churn
                .tally
                .with(|c| *c.join_errors.entry(code).or_default() += 1);
            return;
        }
        Err(_) => return ended(&churn.tally, "join unanswered"),
    }
    tokio::select! {
        _ = sleep(churn.stall) => {}
        _ = stop.changed() => return slow_outcome(&churn.tally, "run ended during the stall"),
    }
    let outcome = timeout(SLOW_READ, async {
        loop {
            let frame = tokio::select! {
                _ = stop.changed() => return "run ended before a close".to_owned(),
                frame = ws.next() => frame,
            };
            match frame {
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map_or(1005, |f| u16::from(f.code));
                    return format!("close {code}");
                }
                Some(Ok(_)) => {}
                Some(Err(_)) => return "no close frame: read error or reset".to_owned(),
                None => return "no close frame: eof".to_owned(),
            }
        }
    })
    .await
    .unwrap_or_else(|_| format!("still open {} s after the stall", SLOW_READ.as_secs()));
    slow_outcome(&churn.tally, &outcome);
}

fn slow_outcome(tally: &Tally, outcome: &str) {
    tally.with(|c| *c.slow_outcomes.entry(outcome.to_owned()).or_default() += 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_stay_in_the_unit_interval() {
        assert_eq!(fraction(0), 0.0);
        assert!(fraction(u64::MAX) < 1.0);
        assert!((fraction(1 << 63) - 0.5).abs() < 1e-12);
    }
}
