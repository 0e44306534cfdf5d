//! `formats`: what a wire format costs per delivery. One room, N subscribers
//! spread over the gateways, one publisher at R messages/s of a 1 KiB
//! payload, in one [`Variant`]: JSON text plain or with permessage-deflate,
//! or 1 KiB of binary data as a base64 JSON string or as MessagePack
//! (`roomcast.v1.msgpack`). Reports the bytes subscribers read off their
//! sockets per delivery and the servers' CPU per delivery.
//!
//! Raw sockets rather than tungstenite: tungstenite has no permessage-deflate,
//! and counting socket bytes is the point. Frames are counted, not decoded:
//! after a subscriber's join is answered, every data frame is a delivery.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::timeout;

use super::{all_ok, open_all, own_cpu_seconds};
use crate::BenchError;
use crate::latency::round3;
use crate::procstat::{CpuSnapshot, ProcessCpu};
use crate::target::Target;
use crate::wsfeed;

/// The payload and how it travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// 1 KiB of JSON text (an object of words and numbers), uncompressed.
    JsonText,
    /// The same, permessage-deflate offered by every subscriber.
    JsonTextDeflate,
    /// 1 KiB of random bytes as a base64 JSON string (what a JSON client does).
    JsonBinary,
    /// 1 KiB of random bytes as MessagePack binary (`roomcast.v1.msgpack`).
    MsgpackBinary,
}

impl Variant {
    fn msgpack(self) -> bool {
        self == Variant::MsgpackBinary
    }

    fn deflate(self) -> bool {
        self == Variant::JsonTextDeflate
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Gateways; subscribers are spread over them, the publisher uses the first.
    pub targets: Vec<Target>,
    /// The variant measured.
    pub variant: Variant,
    /// Subscribing connections (one room).
    pub subscribers: usize,
    /// Messages per second.
    pub rate: f64,
    /// Seconds of publishing.
    pub duration: Duration,
    /// Server processes whose CPU is measured.
    pub server_pids: Vec<u32>,
}

/// The result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `formats`.
    pub scenario: &'static str,
    /// The variant.
    pub variant: Variant,
    /// Subscribers.
    pub subscribers: usize,
    /// Subscribers whose upgrade negotiated permessage-deflate.
    pub deflate_negotiated: usize,
    /// Messages published.
    pub published: u64,
    /// Data frames subscribers read (expected: published × subscribers).
    pub delivered: u64,
    /// Deliveries that came compressed (RSV1).
    pub compressed: u64,
    /// Payload bytes of one published `data` as the publisher sent it.
    pub data_bytes: usize,
    /// Deliveries per second.
    pub delivered_per_s: f64,
    /// Bytes subscribers read off their sockets per delivery (frame header included).
    pub wire_bytes_per_delivery: f64,
    /// Per server process.
    pub server_cpu: Vec<ProcessCpu>,
    /// Their sum.
    pub server_cpu_s: f64,
    /// Server CPU per delivery, microseconds.
    pub server_cpu_us_per_delivery: f64,
    /// The load generator's own CPU seconds.
    pub loadgen_cpu_s: f64,
}

/// The room every connection uses.
const ROOM: &str = "formats";

/// How long subscribers keep reading after the last publish.
const GRACE: Duration = Duration::from_secs(2);

/// Runs the scenario.
pub async fn run(cfg: &Config) -> Result<Report, BenchError> {
    let first = cfg
        .targets
        .first()
        .ok_or_else(|| BenchError::new("no target"))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let subscribers = all_ok(
        open_all(cfg.subscribers, 64, "subscribers", |i| {
            let target = cfg.targets[i % cfg.targets.len()].clone();
            let variant = cfg.variant;
            async move { Conn::open(&target, variant, variant.deflate()).await }
        })
        .await,
        "subscribers",
    )?;
    let deflate_negotiated = subscribers.iter().filter(|s| s.deflate).count();
    for sub in &subscribers {
        if cfg.variant.deflate() && !sub.deflate {
            return Err(BenchError::new(
                "permessage-deflate was not negotiated: start the gateways with --websocket-compression",
            ));
        }
    }
    let readers: Vec<_> = subscribers
        .into_iter()
        .map(|sub| tokio::spawn(sub.count(stop_rx.clone())))
        .collect();
    let mut publisher = Conn::open(first, cfg.variant, false).await?;
    let own_before = own_cpu_seconds();
    let cpu_before = CpuSnapshot::take(&cfg.server_pids);
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / cfg.rate.max(0.001));
    let mut ticker = tokio::time::interval(interval);
    let mut published = 0u64;
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut data_bytes = 0;
    while started.elapsed() < cfg.duration {
        ticker.tick().await;
        let frame = publish_frame(cfg.variant, published, &mut rng);
        data_bytes = frame.1;
        publisher.send(&frame.0).await?;
        published += 1;
    }
    tokio::time::sleep(GRACE).await;
    let cpu = cpu_before.used_until(&CpuSnapshot::take(&cfg.server_pids));
    let elapsed = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let (mut delivered, mut compressed, mut bytes) = (0u64, 0u64, 0u64);
    for reader in readers {
        let counts = reader
            .await
            .map_err(|e| BenchError::new(format!("subscriber task: {e}")))??;
        delivered += counts.frames;
        compressed += counts.compressed;
        bytes += counts.bytes;
    }
    let server_cpu_s = round3(cpu.iter().map(|p| p.cpu_seconds).sum());
    let per = |x: f64| {
        if delivered == 0 {
            0.0
        } else {
            round3(x / delivered as f64)
        }
    };
    Ok(Report {
        scenario: "formats",
        variant: cfg.variant,
        subscribers: cfg.subscribers,
        deflate_negotiated,
        published,
        delivered,
        compressed,
        data_bytes,
        delivered_per_s: round3(delivered as f64 / elapsed),
        wire_bytes_per_delivery: per(bytes as f64),
        server_cpu: cpu,
        server_cpu_s,
        server_cpu_us_per_delivery: per(server_cpu_s * 1e6),
        loadgen_cpu_s: round3(own_cpu_seconds() - own_before),
    })
}

/// One raw WebSocket connection, joined to the room.
struct Conn {
    stream: TcpStream,
    deflate: bool,
}

/// What a subscriber read.
struct Counts {
    frames: u64,
    compressed: u64,
    bytes: u64,
}

impl Conn {
    /// Upgrades (offering the variant's subprotocol, and permessage-deflate
    /// when `deflate`), reads the welcome, joins and reads the `ok`.
    async fn open(target: &Target, variant: Variant, deflate: bool) -> Result<Conn, BenchError> {
        let step = crate::client::STEP_TIMEOUT;
        let mut stream = timeout(step, TcpStream::connect(target.addr))
            .await
            .map_err(|_| BenchError::new("connect timed out"))??;
        stream.set_nodelay(true)?;
        let protocol = if variant.msgpack() {
            "roomcast.v1.msgpack"
        } else {
            "roomcast.v1"
        };
        let offer = if deflate {
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        } else {
            ""
        };
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: {protocol}\r\n{offer}\r\n",
            target.addr
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            read_some(&mut stream, &mut buf, step).await?;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 101") {
            return Err(BenchError::new(format!("upgrade refused: {head}")));
        }
        let negotiated = head.contains("sec-websocket-extensions: permessage-deflate");
        buf.drain(..head_end);
        let mut conn = Conn {
            stream,
            deflate: negotiated,
        };
        let join = if variant.msgpack() {
            let mut m = vec![0x83];
            mp_str(&mut m, "type");
            mp_str(&mut m, "join");
            mp_str(&mut m, "room");
            mp_str(&mut m, ROOM);
            mp_str(&mut m, "id");
            m.push(1);
            frame(0x82, &m)
        } else {
            frame(
                0x81,
                format!(r#"{{"type":"join","room":"{ROOM}","id":1}}"#).as_bytes(),
            )
        };
        conn.send(&join).await?;
        // The welcome, then the join's `ok`: two data frames.
        let mut seen = 0;
        while seen < 2 {
            match parse(&buf) {
                Some((first, used)) => {
                    buf.drain(..used);
                    if first & 0x0f != 0x9 {
                        seen += 1;
                    }
                }
                None => read_some(&mut conn.stream, &mut buf, step).await?,
            }
        }
        if !buf.is_empty() {
            return Err(BenchError::new("unexpected frames before the measurement"));
        }
        Ok(conn)
    }

    async fn send(&mut self, frame: &[u8]) -> Result<(), BenchError> {
        timeout(crate::client::STEP_TIMEOUT, self.stream.write_all(frame))
            .await
            .map_err(|_| BenchError::new("write timed out"))??;
        Ok(())
    }

    /// Reads and counts until `stop`.
    async fn count(mut self, mut stop: watch::Receiver<bool>) -> Result<Counts, BenchError> {
        let mut counts = Counts {
            frames: 0,
            compressed: 0,
            bytes: 0,
        };
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            tokio::select! {
                _ = stop.changed() => return Ok(counts),
                n = self.stream.read(&mut chunk) => {
                    let n = n?;
                    if n == 0 {
                        return Ok(counts);
                    }
                    counts.bytes += n as u64;
                    buf.extend_from_slice(&chunk[..n]);
                    let mut at = 0;
                    while let Some((first, used)) = parse(&buf[at..]) {
                        at += used;
                        if matches!(first & 0x0f, 0x1 | 0x2) {
                            counts.frames += 1;
                            counts.compressed += u64::from(first & 0x40 != 0);
                        }
                    }
                    buf.drain(..at);
                }
            }
        }
    }
}

async fn read_some(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    wait: Duration,
) -> Result<(), BenchError> {
    let mut chunk = [0u8; 4096];
    let n = timeout(wait, stream.read(&mut chunk))
        .await
        .map_err(|_| BenchError::new("no answer in time"))??;
    if n == 0 {
        return Err(BenchError::new("connection closed"));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// A server frame's first byte and length, if `buf` holds all of it.
fn parse(buf: &[u8]) -> Option<(u8, usize)> {
    let (len, at) = match *buf.get(1)? & 0x7f {
        126 => (
            usize::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?)),
            4,
        ),
        127 => (
            usize::try_from(u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?)).ok()?,
            10,
        ),
        n => (usize::from(n), 2),
    };
    (buf.len() >= at + len).then_some((buf[0], at + len))
}

/// A masked client frame (FIN set in `first`).
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    wsfeed::client_frame(first, payload, [0x11, 0x22, 0x33, 0x44])
}

fn mp_str(out: &mut Vec<u8>, s: &str) {
    // Every string here is short (fixstr).
    out.push(0xa0 | (s.len() as u8 & 0x1f));
    out.extend_from_slice(s.as_bytes());
}

/// Words of the JSON text payload: chat-like text compresses like real traffic.
const WORDS: [&str; 16] = [
    "roomcast",
    "message",
    "delivered",
    "gateway",
    "cluster",
    "subscriber",
    "the",
    "a",
    "of",
    "publish",
    "room",
    "order",
    "latency",
    "frame",
    "once",
    "every",
];

fn next(rng: &mut u64) -> u64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    *rng
}

/// The `publish` frame of message `seq`, and the size of its `data` as sent.
pub fn publish_frame(variant: Variant, seq: u64, rng: &mut u64) -> (Vec<u8>, usize) {
    match variant {
        Variant::JsonText | Variant::JsonTextDeflate => {
            let mut text = String::new();
            while text.len() < 900 {
                text.push_str(WORDS[(next(rng) % 16) as usize]);
                text.push(' ');
            }
            let data = format!(
                r#"{{"seq":{seq},"user":"user-{}","ts":{},"text":"{}","tags":["a","b"]}}"#,
                next(rng) % 1000,
                1_700_000_000_000u64 + seq,
                text.trim_end()
            );
            let json = format!(r#"{{"type":"publish","room":"{ROOM}","data":{data}}}"#);
            (frame(0x81, json.as_bytes()), data.len())
        }
        Variant::JsonBinary => {
            let bytes = random_kib(rng);
            let b64 = base64(&bytes);
            let json = format!(r#"{{"type":"publish","room":"{ROOM}","data":"{b64}"}}"#);
            (frame(0x81, json.as_bytes()), b64.len() + 2)
        }
        Variant::MsgpackBinary => {
            let bytes = random_kib(rng);
            let mut m = vec![0x83];
            mp_str(&mut m, "type");
            mp_str(&mut m, "publish");
            mp_str(&mut m, "room");
            mp_str(&mut m, ROOM);
            mp_str(&mut m, "data");
            m.push(0xc5);
            m.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
            m.extend_from_slice(&bytes);
            (frame(0x82, &m), bytes.len() + 3)
        }
    }
}

fn random_kib(rng: &mut u64) -> Vec<u8> {
    (0..128).flat_map(|_| next(rng).to_le_bytes()).collect()
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_a_kibibyte_in_each_variant() {
        let mut rng = 7;
        let (frame, data) = publish_frame(Variant::JsonText, 3, &mut rng);
        assert!((950..1100).contains(&data), "{data}");
        assert_eq!(frame[0], 0x81);
        let (_, data) = publish_frame(Variant::JsonBinary, 3, &mut rng);
        assert_eq!(data, 1368 + 2, "base64 of 1024 bytes, quoted");
        let (frame, data) = publish_frame(Variant::MsgpackBinary, 3, &mut rng);
        assert_eq!(data, 1027);
        assert_eq!(frame[0], 0x82);
    }

    #[test]
    fn base64_is_standard_and_padded() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(&[0, 159, 146, 150]), "AJ+Slg==");
    }

    #[test]
    fn frames_are_parsed_by_length() {
        assert_eq!(parse(&[0x81, 2, b'h', b'i']), Some((0x81, 4)));
        assert_eq!(parse(&[0xC1, 2, b'h']), None);
        let long = [vec![0x82, 126, 1, 0], vec![0; 256]].concat();
        assert_eq!(parse(&long), Some((0x82, 260)));
    }
}
