//! Subscribers: read every frame, check each probe against the ledger and
//! record its latency (overall and per transport), until told to stop or
//! closed by the server. A subscriber is a WebSocket or an HTTP fallback
//! session (`fallback.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::client::Ws;
use crate::fallback::{self, Feed};
use crate::latency::{Latencies, new_histogram, unix_us};
use crate::ledger::Ledger;
use crate::wire::{self, Incoming};
use crate::wsfeed::{self, WsFeed};

/// What all subscribers of one run share.
pub struct Context {
    /// Latency histograms, one per (transport, [`Path`]): index
    /// `transport * 2 + path`, transports in [`TRANSPORTS`] order. Each
    /// latency is recorded once; the figures by transport, by path and
    /// overall merge them (a second record per message was a tenth of the
    /// load generator's CPU).
    latencies: Arc<[Latencies; 6]>,
    /// Messages received by all subscribers so far.
    pub delivered: Arc<AtomicU64>,
    /// Probes sent before this (warm-up) are checked but not timed.
    pub measure_from_us: u64,
    /// Largest plausible sequence number.
    pub max_seq: u64,
    /// Which target each subscriber (by index) reads from, and over how many
    /// targets publishers are spread (publisher `p` on target `p % n`); empty
    /// when the scenario does not say, and every latency counts as
    /// [`Path::Same`].
    homes: Vec<usize>,
    targets: usize,
}

/// Whether a delivery came from a publisher on the subscriber's own gateway
/// or crossed the bus from another one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// The publisher's gateway delivered it.
    Same = 0,
    /// It crossed NATS from another gateway.
    Across = 1,
}

impl Context {
    /// Empty histograms of `shards` shards; probes sent before
    /// `measure_from_us` are not timed; sequence numbers above `max_seq`
    /// are implausible.
    pub fn new(shards: usize, measure_from_us: u64, max_seq: u64) -> Self {
        Self {
            latencies: Arc::new(std::array::from_fn(|_| Latencies::new(shards))),
            delivered: Arc::new(AtomicU64::new(0)),
            measure_from_us,
            max_seq,
            homes: Vec::new(),
            targets: 0,
        }
    }

    /// Tells apart deliveries within one gateway from those across
    /// gateways: subscriber `i` reads from target `homes[i]`, publisher `p`
    /// publishes to target `p % targets`.
    pub fn with_homes(mut self, homes: Vec<usize>, targets: usize) -> Self {
        self.homes = homes;
        self.targets = targets;
        self
    }

    /// The path a probe from `publisher` took to subscriber `who` (pure).
    pub fn path(&self, who: usize, publisher: u32) -> Path {
        match (self.homes.get(who), self.targets) {
            (Some(&home), n) if n > 0 && publisher as usize % n != home => Path::Across,
            _ => Path::Same,
        }
    }

    fn record(&self, transport: usize, path: Path, who: usize, micros: u64) {
        self.latencies[transport * 2 + path as usize].record(who, micros);
    }

    /// One transport's latencies (both paths).
    pub fn transport_latencies(&self, transport: usize) -> Histogram<u64> {
        self.merge(|i| i / 2 == transport)
    }

    /// One path's latencies (every transport).
    pub fn path_latencies(&self, path: Path) -> Histogram<u64> {
        self.merge(|i| i % 2 == path as usize)
    }

    /// Every latency in one histogram.
    pub fn all_latencies(&self) -> Histogram<u64> {
        self.merge(|_| true)
    }

    fn merge(&self, take: impl Fn(usize) -> bool) -> Histogram<u64> {
        let mut all = new_histogram();
        for (i, l) in self.latencies.iter().enumerate() {
            if take(i) {
                // Same bounds everywhere, so adding cannot fail.
                let _ = all.add(l.merged());
            }
        }
        all
    }
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

/// Transport names, in the order of [`Context::by_transport`].
pub const TRANSPORTS: [&str; 3] = ["websocket", "sse", "poll"];

/// One subscriber's connection.
pub enum Conn {
    /// A WebSocket (tungstenite).
    Ws(Ws),
    /// A WebSocket read by the lean client (the fan-out scenarios).
    Feed(WsFeed),
    /// A fallback session of this kind.
    Fallback(Feed, fallback::Kind),
}

impl Conn {
    /// Its index in [`TRANSPORTS`].
    pub fn transport(&self) -> usize {
        match self {
            Conn::Ws(_) | Conn::Feed(_) => 0,
            Conn::Fallback(_, fallback::Kind::Sse) => 1,
            Conn::Fallback(_, fallback::Kind::Poll) => 2,
        }
    }
}

/// What the connection yields next.
enum Next<'a> {
    /// A WebSocket text frame.
    WsText(tokio_tungstenite::tungstenite::Utf8Bytes),
    /// A text frame in the lean client's buffer.
    Borrowed(&'a str),
    /// A fallback session's frame.
    Text(String),
    /// Closed by the server with this code.
    Closed(u16),
    /// Something else (pings, pongs): nothing to check.
    Skip,
    /// The connection failed or ended without a close.
    Failed(String),
}

impl Conn {
    async fn next(&mut self) -> Next<'_> {
        match self {
            Conn::Feed(feed) => match feed.next().await {
                wsfeed::Next::Text(text) => Next::Borrowed(text),
                wsfeed::Next::Closed(code) => Next::Closed(code),
                wsfeed::Next::Skip => Next::Skip,
                wsfeed::Next::Failed(why) => Next::Failed(why),
            },
            Conn::Ws(ws) => match ws.next().await {
                Some(Ok(Message::Text(text))) => Next::WsText(text),
                Some(Ok(Message::Close(frame))) => {
                    Next::Closed(frame.map_or(1005, |f| u16::from(f.code)))
                }
                Some(Ok(_)) => Next::Skip,
                Some(Err(e)) => Next::Failed(e.to_string()),
                None => Next::Failed("connection ended".into()),
            },
            Conn::Fallback(feed, _) => match feed.next().await {
                fallback::Next::Frame(text) => Next::Text(text),
                fallback::Next::Closed(code) => Next::Closed(code),
                fallback::Next::Failed(why) => Next::Failed(why),
            },
        }
    }
}

/// Starts one task per subscriber connection.
pub fn spawn_all(
    subs: Vec<Conn>,
    ctx: &Arc<Context>,
    stop: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<Outcome>> {
    subs.into_iter()
        .enumerate()
        .map(|(i, ws)| tokio::spawn(run(ws, i, Arc::clone(ctx), stop.clone())))
        .collect()
}

/// Reads `conn` until `stop` turns true or the connection ends.
pub async fn run(
    mut conn: Conn,
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
    let transport = conn.transport();
    // One wait for the stop, registered once: a fresh `changed()` per frame
    // took the channel's lock twice per message across all subscribers.
    let stopped = stop.changed();
    tokio::pin!(stopped);
    loop {
        let next = tokio::select! {
            _ = &mut stopped => break,
            next = conn.next() => next,
        };
        let text = match &next {
            Next::WsText(text) => text.as_str(),
            Next::Borrowed(text) => text,
            Next::Text(text) => text.as_str(),
            Next::Skip => continue,
            Next::Closed(code) => {
                out.closed = Some(*code);
                break;
            }
            Next::Failed(why) => {
                out.failure = Some(why.clone());
                break;
            }
        };
        match wire::decode(text) {
            Incoming::Message(probe) => {
                let now = unix_us();
                if probe.t >= ctx.measure_from_us {
                    let micros = now.saturating_sub(probe.t);
                    ctx.record(transport, ctx.path(who, probe.p), who, micros);
                }
                out.ledger.record(probe.p, probe.r, probe.s);
                out.received += 1;
                ctx.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Incoming::Foreign => out.foreign += 1,
            Incoming::Error { .. } => out.errors += 1,
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_crosses_gateways_when_its_publisher_is_on_another_target() {
        // Subscribers 0 and 1 read from targets 0 and 1; publishers alternate.
        let ctx = Context::new(1, 0, 10).with_homes(vec![0, 1], 2);
        assert_eq!(ctx.path(0, 0), Path::Same);
        assert_eq!(ctx.path(0, 1), Path::Across);
        assert_eq!(ctx.path(1, 3), Path::Same);
        assert_eq!(ctx.path(1, 4), Path::Across);
        // Unknown homes (or subscribers) count as the same gateway.
        assert_eq!(ctx.path(7, 1), Path::Same);
        assert_eq!(Context::new(1, 0, 10).path(0, 1), Path::Same);
    }

    #[test]
    fn latencies_merge_by_transport_by_path_and_overall() {
        let ctx = Context::new(2, 0, 10);
        ctx.record(0, Path::Same, 0, 100);
        ctx.record(0, Path::Across, 1, 300);
        ctx.record(1, Path::Across, 0, 500);
        assert_eq!(ctx.transport_latencies(0).len(), 2);
        assert_eq!(ctx.transport_latencies(1).len(), 1);
        assert_eq!(ctx.transport_latencies(2).len(), 0);
        assert_eq!(ctx.path_latencies(Path::Same).len(), 1);
        assert_eq!(ctx.path_latencies(Path::Across).len(), 2);
        assert_eq!(ctx.all_latencies().len(), 3);
    }
}
