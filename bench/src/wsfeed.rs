//! A subscriber's WebSocket feed: the lean client the load generator reads
//! deliveries with. Every delivery of a benchmark is read by one of these,
//! so their per-frame cost decides how far the load generator can measure
//! before it competes with the system it measures (issue 17: the hot room
//! at 800,000/s; the standard shape's tail at 50,000/s).
//!
//! tokio-tungstenite cost about 3 µs of user space per frame here (a waker
//! registration and wake per poll, a buffer split, zeroing and an owned
//! payload per message, measured with perf at 50,000 deliveries/s). This
//! reads frames in place from one buffer per connection and hands out
//! borrowed text. It does only what a subscriber needs: the opening
//! handshake, masked text frames out (joins, pongs), and unfragmented
//! frames in. Publishers and the other scenarios keep tungstenite.

use std::io;
use std::net::IpAddr;
use std::ops::Range;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::BenchError;
use crate::client::{STEP_TIMEOUT, open_socket, parse_status};
use crate::target::Target;
use crate::wire::{self, Incoming};

/// The largest frame a subscriber accepts (a benchmark frame is far
/// smaller; a bigger one is a broken server, not something to buffer).
const MAX_FRAME: usize = 1 << 20;

/// The largest handshake response head read.
const MAX_HEAD: usize = 8 * 1024;

/// Bytes read at a time; a frame bigger than this grows the buffer.
const READ_CHUNK: usize = 2048;

/// One parsed frame header: where its payload lies in the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A whole frame: its opcode, FIN bit and payload range; `len` bytes in all.
    Frame {
        opcode: u8,
        fin: bool,
        payload: Range<usize>,
        len: usize,
    },
    /// At least this many bytes are needed in all.
    Need(usize),
    /// Not a frame a server may send.
    Bad(&'static str),
}

/// Parses the frame at the start of `buf` (pure).
pub fn parse(buf: &[u8]) -> Parsed {
    if buf.len() < 2 {
        return Parsed::Need(2);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Parsed::Bad("reserved bits set (no extension was negotiated)");
    }
    if b1 & 0x80 != 0 {
        return Parsed::Bad("masked frame from the server");
    }
    let (header, len) = match b1 & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Parsed::Need(4);
            }
            (4, u64::from(u16::from_be_bytes([buf[2], buf[3]])))
        }
        127 => {
            if buf.len() < 10 {
                return Parsed::Need(10);
            }
            let mut eight = [0u8; 8];
            eight.copy_from_slice(&buf[2..10]);
            (10, u64::from_be_bytes(eight))
        }
        short => (2, u64::from(short)),
    };
    let Some(total) = usize::try_from(len)
        .ok()
        .filter(|&l| l <= MAX_FRAME)
        .map(|l| header + l)
    else {
        return Parsed::Bad("frame larger than a subscriber accepts");
    };
    if buf.len() < total {
        return Parsed::Need(total);
    }
    Parsed::Frame {
        opcode: b0 & 0x0f,
        fin: b0 & 0x80 != 0,
        payload: header..total,
        len: total,
    }
}

/// A client frame whose first byte (FIN, RSV bits, opcode) is `first`,
/// masked with `key` as RFC 6455 requires.
pub fn client_frame(first: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(first);
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= usize::from(u16::MAX) => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

/// What the feed yields next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<'a> {
    /// A text frame.
    Text(&'a str),
    /// Closed by the server with this code (1005 when it gave none).
    Closed(u16),
    /// A frame with nothing to check (binary, pong; a ping was answered).
    Skip,
    /// The connection failed or ended without a close.
    Failed(String),
}

/// One subscriber connection, after its handshake.
pub struct WsFeed {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// The mask of this client's frames (any value is valid; one per
    /// connection is enough for a benchmark client).
    mask: [u8; 4],
}

impl WsFeed {
    /// Connects to `target` from `source`, performs the opening handshake
    /// and reads the welcome, within [`STEP_TIMEOUT`].
    pub async fn connect_welcomed(
        target: &Target,
        source: Option<IpAddr>,
    ) -> Result<Self, BenchError> {
        timeout(STEP_TIMEOUT, async {
            let stream = open_socket(target, source, None).await?;
            let mut feed = Self::handshake(stream, target).await?;
            match feed.next_text().await? {
                Some(Incoming::Welcome { .. }) => Ok(feed),
                other => Err(BenchError::new(format!(
                    "{}: expected welcome, got {other:?}",
                    target.url
                ))),
            }
        })
        .await
        .map_err(|_| BenchError::new(format!("no welcome from {} in time", target.url)))?
    }

    async fn handshake(mut stream: TcpStream, target: &Target) -> Result<Self, BenchError> {
        let key = generate_key();
        let path = target
            .url
            .strip_prefix("ws://")
            .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
            .unwrap_or("/");
        let host = target.addr;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buf = vec![0u8; MAX_HEAD];
        let mut end = 0;
        let head_len = loop {
            if let Some(i) = buf[..end].windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if end == buf.len() {
                return Err(BenchError::new(format!(
                    "{}: handshake response head over {MAX_HEAD} bytes",
                    target.url
                )));
            }
            let n = stream.read(&mut buf[end..]).await?;
            if n == 0 {
                return Err(BenchError::new(format!(
                    "{}: closed during the handshake",
                    target.url
                )));
            }
            end += n;
        };
        let head = String::from_utf8_lossy(&buf[..head_len]);
        if parse_status(head.as_bytes()) != Some(101) {
            let line = head.lines().next().unwrap_or_default();
            return Err(BenchError::new(format!(
                "handshake with {}: {line}",
                target.url
            )));
        }
        let accept = derive_accept_key(key.as_bytes());
        let accepted = head.lines().any(|line| {
            line.split_once(':').is_some_and(|(name, value)| {
                name.trim().eq_ignore_ascii_case("sec-websocket-accept") && value.trim() == accept
            })
        });
        if !accepted {
            return Err(BenchError::new(format!(
                "handshake with {}: missing or wrong Sec-WebSocket-Accept",
                target.url
            )));
        }
        // Bytes behind the head are the first frames: keep them.
        let rest = end - head_len;
        buf.copy_within(head_len..end, 0);
        // The head buffer is larger than both.
        buf.truncate(READ_CHUNK.max(rest));
        let k = key.as_bytes();
        Ok(Self {
            stream,
            buf,
            start: 0,
            end: rest,
            mask: [k[0], k[1], k[2], k[3]],
        })
    }

    /// Joins `room` and waits for its `ok`, within [`STEP_TIMEOUT`].
    pub async fn join(&mut self, room: &str, id: u64) -> Result<(), BenchError> {
        self.send_text(&wire::join(room, id)).await?;
        timeout(STEP_TIMEOUT, async {
            loop {
                match self.next_text().await? {
                    Some(Incoming::Ok { id: Some(got) }) if got == id => return Ok(()),
                    Some(Incoming::Error {
                        code,
                        id: Some(got),
                    }) if got == id => {
                        return Err(BenchError::new(format!("join {room}: {code}")));
                    }
                    Some(_) => {}
                    None => return Err(BenchError::new(format!("closed before joining {room}"))),
                }
            }
        })
        .await
        .map_err(|_| BenchError::new(format!("no answer to join {room} in time")))?
    }

    /// Sends one text frame.
    pub async fn send_text(&mut self, text: &str) -> io::Result<()> {
        let frame = client_frame(0x81, text.as_bytes(), self.mask);
        self.stream.write_all(&frame).await
    }

    /// The next text frame decoded, `None` once closed.
    async fn next_text(&mut self) -> Result<Option<Incoming>, BenchError> {
        loop {
            match self.next().await {
                Next::Text(text) => return Ok(Some(wire::decode(text))),
                Next::Skip => {}
                Next::Closed(_) => return Ok(None),
                Next::Failed(why) => return Err(BenchError::new(why)),
            }
        }
    }

    /// Reads the next frame. Pings are answered here (a gateway closes a
    /// client that does not answer its heartbeat).
    pub async fn next(&mut self) -> Next<'_> {
        loop {
            match parse(&self.buf[self.start..self.end]) {
                Parsed::Frame {
                    opcode,
                    fin,
                    payload,
                    len,
                } => {
                    let at = self.start;
                    self.start += len;
                    if !fin || opcode == 0x0 {
                        return Next::Failed(
                            "fragmented frame (not expected from a server)".into(),
                        );
                    }
                    let payload = at + payload.start..at + payload.end;
                    match opcode {
                        0x1 => {
                            return match std::str::from_utf8(&self.buf[payload]) {
                                Ok(text) => Next::Text(text),
                                Err(_) => Next::Failed("text frame is not UTF-8".into()),
                            };
                        }
                        0x8 => {
                            let body = &self.buf[payload];
                            let code = if body.len() >= 2 {
                                u16::from_be_bytes([body[0], body[1]])
                            } else {
                                1005
                            };
                            // Answer the close, as RFC 6455 asks (best effort:
                            // the server may already be gone).
                            let answer = client_frame(0x88, &body[..body.len().min(2)], self.mask);
                            let _ = self.stream.write_all(&answer).await;
                            return Next::Closed(code);
                        }
                        0x9 => {
                            let pong = client_frame(0x8A, &self.buf[payload], self.mask);
                            if let Err(e) = self.stream.write_all(&pong).await {
                                return Next::Failed(format!("answering a ping: {e}"));
                            }
                            return Next::Skip;
                        }
                        0x2 | 0xA => return Next::Skip,
                        _ => return Next::Failed(format!("unknown opcode {opcode:#x}")),
                    }
                }
                Parsed::Bad(why) => return Next::Failed(why.into()),
                Parsed::Need(total) => {
                    if let Err(why) = self.fill(total).await {
                        return Next::Failed(why);
                    }
                }
            }
        }
    }

    /// Reads until at least `total` unread bytes are buffered.
    async fn fill(&mut self, total: usize) -> Result<(), String> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.start + total > self.buf.len() {
            // Move the unread tail to the front: the frame would not fit behind it.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if total > self.buf.len() {
            self.buf.resize(total, 0);
        }
        while self.end - self.start < total {
            match self.stream.read(&mut self.buf[self.end..]).await {
                Ok(0) => return Err("connection ended".into()),
                Ok(n) => self.end += n,
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_short_medium_and_long_frames() {
        let mut short = vec![0x81, 3];
        short.extend_from_slice(b"abc");
        assert_eq!(
            parse(&short),
            Parsed::Frame {
                opcode: 1,
                fin: true,
                payload: 2..5,
                len: 5
            }
        );
        let mut medium = vec![0x81, 126, 0, 200];
        medium.extend(std::iter::repeat_n(b'x', 200));
        assert_eq!(
            parse(&medium),
            Parsed::Frame {
                opcode: 1,
                fin: true,
                payload: 4..204,
                len: 204
            }
        );
        let mut long = vec![0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0];
        long.extend(std::iter::repeat_n(0u8, 65_536));
        assert!(matches!(parse(&long), Parsed::Frame { opcode: 2, len, .. } if len == 65_546));
    }

    #[test]
    fn asks_for_what_is_missing() {
        assert_eq!(parse(&[]), Parsed::Need(2));
        assert_eq!(parse(&[0x81]), Parsed::Need(2));
        assert_eq!(parse(&[0x81, 126, 0]), Parsed::Need(4));
        assert_eq!(parse(&[0x81, 127, 0, 0]), Parsed::Need(10));
        assert_eq!(parse(&[0x81, 5, b'a']), Parsed::Need(7));
    }

    #[test]
    fn refuses_what_a_server_may_not_send() {
        assert!(matches!(parse(&[0x81 | 0x40, 0]), Parsed::Bad(_)));
        assert!(matches!(parse(&[0x81, 0x80]), Parsed::Bad(_)));
        let huge = [0x81, 127, 0, 0, 0, 1, 0, 0, 0, 0];
        assert!(matches!(parse(&huge), Parsed::Bad(_)));
    }

    #[test]
    fn client_frames_are_masked_and_unmask_back() {
        let key = [1, 2, 3, 4];
        for n in [0usize, 5, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let frame = client_frame(0x81, &payload, key);
            assert_eq!(frame[0], 0x81);
            assert_ne!(frame[1] & 0x80, 0, "masked");
            let header = match frame[1] & 0x7f {
                126 => 4,
                127 => 10,
                _ => 2,
            };
            assert_eq!(&frame[header..header + 4], &key);
            let unmasked: Vec<u8> = frame[header + 4..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            assert_eq!(unmasked, payload);
        }
    }

    /// A server on a loopback port that answers one handshake, then writes
    /// `script` in the given pieces, then reads what the client sent back.
    async fn serve(pieces: Vec<Vec<u8>>) -> (Target, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = crate::target::parse_target(&format!("ws://{addr}/ws")).unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                socket.read_exact(&mut byte).await.unwrap();
                head.push(byte[0]);
            }
            let head = String::from_utf8(head).unwrap();
            assert!(head.starts_with("GET /ws HTTP/1.1\r\n"), "{head}");
            let key = head
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .unwrap();
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\n\r\n",
                derive_accept_key(key.as_bytes())
            );
            socket.write_all(answer.as_bytes()).await.unwrap();
            for piece in pieces {
                socket.write_all(&piece).await.unwrap();
                socket.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            let mut back = Vec::new();
            let _ = timeout(Duration::from_secs(2), socket.read_to_end(&mut back)).await;
            back
        });
        (target, server)
    }

    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0x80 | opcode];
        if payload.len() < 126 {
            frame.push(payload.len() as u8);
        } else {
            frame.push(126);
            frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        frame.extend_from_slice(payload);
        frame
    }

    use std::time::Duration;

    #[tokio::test]
    async fn reads_frames_split_anyhow_answers_pings_and_reports_the_close_code() {
        let welcome = server_frame(0x1, br#"{"type":"welcome","node":"n"}"#);
        let big = "x".repeat(5000);
        let mut stream = welcome.clone();
        stream.extend(server_frame(0x9, b"beat"));
        stream.extend(server_frame(0x1, big.as_bytes()));
        stream.extend(server_frame(0x2, &[1, 2, 3]));
        stream.extend(server_frame(0x8, &[0x0f, 0xa8, b'b', b'y', b'e']));
        // One byte at a time for the first frames, then the rest at once:
        // every header and payload boundary falls across a read.
        let mut pieces: Vec<Vec<u8>> = stream[..welcome.len() + 8]
            .iter()
            .map(|&b| vec![b])
            .collect();
        pieces.push(stream[welcome.len() + 8..].to_vec());
        let (target, server) = serve(pieces).await;

        let mut feed = timeout(
            Duration::from_secs(10),
            WsFeed::connect_welcomed(&target, None),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(feed.next().await, Next::Skip, "the ping");
        assert_eq!(feed.next().await, Next::Text(&big));
        assert_eq!(feed.next().await, Next::Skip, "binary");
        assert_eq!(feed.next().await, Next::Closed(4008));
        drop(feed);

        let back = server.await.unwrap();
        let mask: [u8; 4] = back[2..6].try_into().unwrap();
        let mut expected = client_frame(0x8A, b"beat", mask);
        expected.extend(client_frame(0x88, &[0x0f, 0xa8], mask));
        assert_eq!(
            back, expected,
            "a pong with the ping's payload, then the close answered"
        );
    }

    #[tokio::test]
    async fn refuses_a_wrong_accept_key_and_fragmented_frames() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = crate::target::parse_target(&format!("ws://{addr}/ws")).unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await;
            let answer = "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: nope\r\n\r\n";
            socket.write_all(answer.as_bytes()).await.unwrap();
        });
        let refused = WsFeed::connect_welcomed(&target, None).await;
        assert!(refused.is_err_and(|e| e.to_string().contains("Sec-WebSocket-Accept")));

        let mut fragmented = server_frame(0x1, br#"{"type":"welcome","node":"n"}"#);
        fragmented.extend([0x01, 1, b'a']);
        let (target, _server) = serve(vec![fragmented]).await;
        let mut feed = WsFeed::connect_welcomed(&target, None).await.unwrap();
        assert!(matches!(feed.next().await, Next::Failed(why) if why.contains("fragmented")));
    }
}
