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
use crate::latency::{Latencies, unix_us};
use crate::ledger::Ledger;
use crate::wire::{self, Incoming};
use crate::wsfeed::{self, WsFeed};

/// What all subscribers of one run share.
pub struct Context {
    /// Latency histograms per transport, in [`TRANSPORTS`] order (each
    /// latency is recorded once: the overall figures merge them, see
    /// [`Context::all_latencies`]; a second record per message was a tenth
    /// of the load generator's CPU).
    pub by_transport: Arc<[Latencies; 3]>,
    /// Messages received by all subscribers so far.
    pub delivered: Arc<AtomicU64>,
    /// Probes sent before this (warm-up) are checked but not timed.
    pub measure_from_us: u64,
    /// Largest plausible sequence number.
    pub max_seq: u64,
}

impl Context {
    /// Empty histograms of `shards` shards; probes sent before
    /// `measure_from_us` are not timed; sequence numbers above `max_seq`
    /// are implausible.
    pub fn new(shards: usize, measure_from_us: u64, max_seq: u64) -> Self {
        Self {
            by_transport: Arc::new(std::array::from_fn(|_| Latencies::new(shards))),
            delivered: Arc::new(AtomicU64::new(0)),
            measure_from_us,
            max_seq,
        }
    }

    /// Every transport's latencies in one histogram.
    pub fn all_latencies(&self) -> Histogram<u64> {
        let mut all = self.by_transport[0].merged();
        for l in &self.by_transport[1..] {
            // Same bounds everywhere, so adding cannot fail.
            let _ = all.add(l.merged());
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
                    ctx.by_transport[transport].record(who, micros);
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
