//! A hand-rolled WebSocket client over a bare TCP stream. Unlike a library
//! client it never answers pings and reads only when told to, which is how a
//! dead or stalled peer looks to the server (heartbeat and slow-consumer tests).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::STEP;

/// A server frame as read off the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A text frame, parsed as JSON.
    Text(Value),
    /// A WebSocket ping.
    Ping,
    /// A close frame with its code (1005 when it carried none).
    Close(u16),
    /// Any other opcode.
    Other(u8),
}

/// The raw client.
pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    /// Performs the HTTP upgrade and checks for `101`.
    pub async fn connect(addr: SocketAddr) -> RawClient {
        Self::connect_to(addr, "/ws").await
    }

    /// Like [`RawClient::connect`], upgrading at `path` (a query token).
    pub async fn connect_to(addr: SocketAddr, path: &str) -> RawClient {
        let (stream, buf, _) = upgrade(addr, path, "").await;
        RawClient { stream, buf }
    }

    /// Sends one masked text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.send_frame(0x1, text.as_bytes()).await;
    }

    /// Sends an empty pong, as a live peer answers a ping.
    pub async fn send_pong(&mut self) {
        self.send_frame(0xA, b"").await;
    }

    /// Sends a close frame with `code`, as a client answering the server's close.
    pub async fn send_close(&mut self, code: u16) {
        self.send_frame(0x8, &code.to_be_bytes()).await;
    }

    /// Sends one masked, final frame with `opcode`.
    async fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= u16::MAX as usize => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        tokio::time::timeout(STEP, self.stream.write_all(&frame))
            .await
            .expect("write in time")
            .expect("write frame");
    }

    /// Reads the next frame, `None` on end of stream, panicking after `wait`.
    pub async fn next_frame(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some((frame, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let n = match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => panic!("no frame from the server within {wait:?}"),
                Ok(Err(_)) => 0,
                Ok(Ok(n)) => n,
            };
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads frames until a text frame, skipping pings.
    pub async fn recv_json(&mut self) -> Value {
        loop {
            match self.next_frame(STEP).await {
                Some(Frame::Text(v)) => return v,
                Some(Frame::Ping) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }
}

/// Performs a WebSocket upgrade at `path` with `extra` header lines (each
/// ending in CRLF) and checks for `101`: the stream, the bytes read past the
/// response head (frames the server sent at once) and the head.
pub async fn upgrade(addr: SocketAddr, path: &str, extra: &str) -> (TcpStream, Vec<u8>, String) {
    let mut stream = tokio::time::timeout(STEP, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("TCP connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write upgrade");
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(STEP, stream.read(&mut chunk))
            .await
            .expect("upgrade response in time")
            .expect("read upgrade response");
        assert!(n > 0, "connection closed during the upgrade");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
    buf.drain(..head_end);
    (stream, buf, head)
}

/// Decodes one unmasked server frame from the front of `buf`, with the
/// number of bytes it used, or `None` if it is not complete yet.
fn parse(buf: &[u8]) -> Option<(Frame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let (len, mut at) = match buf[1] & 0x7f {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => {
            let bytes: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            (u64::from_be_bytes(bytes) as usize, 10)
        }
        n => (n as usize, 2),
    };
    if buf[1] & 0x80 != 0 {
        at += 4; // a server must not mask, but skip the key if it does
    }
    let payload = buf.get(at..at + len)?;
    let frame = match opcode {
        0x1 => Frame::Text(serde_json::from_slice(payload).expect("server text frame is JSON")),
        0x8 if payload.len() >= 2 => Frame::Close(u16::from_be_bytes([payload[0], payload[1]])),
        0x8 => Frame::Close(1005),
        0x9 => Frame::Ping,
        other => Frame::Other(other),
    };
    Some((frame, at + len))
}

/// An HTTP response as read off the wire by [`exchange`].
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The header block, as text (names as the server spelled them).
    pub head: String,
    /// The body (`Content-Length` bytes of it).
    pub body: String,
}

impl Reply {
    /// A header's value, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// Reads one HTTP response from `stream` within `wait`: the head, then as
/// many body bytes as `Content-Length` says.
pub async fn read_reply(stream: &mut (impl AsyncRead + Unpin), wait: Duration) -> Reply {
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut read = async |buf: &mut Vec<u8>| {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no complete HTTP response within {wait:?}"))
            .expect("read HTTP response");
        assert!(
            n > 0,
            "connection closed before a complete response: {buf:?}"
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        read(&mut buf).await;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {head}"));
    let mut reply = Reply {
        status,
        head,
        body: String::new(),
    };
    let length: usize = reply
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        read(&mut buf).await;
    }
    reply.body = String::from_utf8_lossy(&buf[head_end..head_end + length]).to_string();
    reply
}

/// Sends `request` (raw bytes of an HTTP request) on a new connection and
/// reads the response.
pub async fn exchange(addr: SocketAddr, request: &str) -> Reply {
    let mut stream = tokio::time::timeout(STEP, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("TCP connect");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    read_reply(&mut stream, STEP).await
}
