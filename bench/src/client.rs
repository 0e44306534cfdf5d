//! One benchmark client connection: TCP from an optional loopback source
//! address, the WebSocket handshake, the welcome, joins; plus the tiny HTTP
//! request that starts a drain.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use nix::sys::socket::{setsockopt, sockopt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use crate::BenchError;
use crate::target::{Target, is_ipv6};
use crate::wire::{self, Incoming};

/// A client WebSocket.
pub type Ws = WebSocketStream<TcpStream>;

/// How long a handshake, welcome or join may take before the client gives up.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens a WebSocket to `target`, from `source` when given.
pub async fn connect(target: &Target, source: Option<IpAddr>) -> Result<Ws, BenchError> {
    connect_with(target, source, None).await
}

/// Like [`connect`], with the socket's receive buffer set to `recv_buffer`
/// bytes when given (a slow reader's small window fills sooner).
pub async fn connect_with(
    target: &Target,
    source: Option<IpAddr>,
    recv_buffer: Option<u32>,
) -> Result<Ws, BenchError> {
    let stream = open_socket(target, source, recv_buffer).await?;
    // Small buffers: thousands of these live in one process, and tungstenite
    // zeroes a whole read buffer's worth for every read (with 16 KiB that
    // memset was the load generator's top cost, one read per message).
    let config = WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0);
    let (ws, _response) = client_async_with_config(target.url.as_str(), stream, Some(config))
        .await
        .map_err(|e| BenchError::new(format!("handshake with {}: {e}", target.url)))?;
    Ok(ws)
}

/// A TCP connection to `target`, from `source` when given, with the
/// receive buffer set to `recv_buffer` bytes when given; no Nagle delay.
pub async fn open_socket(
    target: &Target,
    source: Option<IpAddr>,
    recv_buffer: Option<u32>,
) -> Result<TcpStream, BenchError> {
    let socket = if is_ipv6(&target.addr) {
        TcpSocket::new_v6()?
    } else {
        TcpSocket::new_v4()?
    };
    if let Some(ip) = source {
        bind_source(&socket, ip)?;
    }
    if let Some(bytes) = recv_buffer {
        socket.set_recv_buffer_size(bytes)?;
    }
    let stream = socket.connect(target.addr).await?;
    // Latency matters more than packet count for a benchmark client.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Binds `socket` to the source address `ip`, its port left for connect(2).
///
/// bind(2) to port 0 picks a port without knowing the destination, by
/// scanning the whole ephemeral range; with SO_REUSEADDR (without it a run
/// right after another was refused EADDRINUSE by its own TIME_WAIT ports)
/// that scan walks every TIME_WAIT entry, and a third back-to-back 5,000-client
/// storm spent 8 s of system time in it, which the storm measured as the
/// server's slowness. IP_BIND_ADDRESS_NO_PORT leaves the choice to
/// connect(2), which knows the 4-tuple: a port is shared by any number of
/// destinations and a TIME_WAIT one is reused on loopback.
fn bind_source(socket: &TcpSocket, ip: IpAddr) -> io::Result<()> {
    socket.set_reuseaddr(true)?;
    if ip.is_ipv4() {
        setsockopt(socket, sockopt::IpBindAddressNoPort, &true)?;
    }
    socket.bind(SocketAddr::new(ip, 0))
}

/// Reads the first frame, which must be `welcome`; returns the node name.
pub async fn welcome(ws: &mut Ws) -> Result<String, BenchError> {
    match next_text(ws).await? {
        Some(text) => match wire::decode(&text) {
            Incoming::Welcome { node } => Ok(node),
            other => Err(BenchError::new(format!("expected welcome, got {other:?}"))),
        },
        None => Err(BenchError::new("closed before welcome")),
    }
}

/// Connects and reads the welcome, within [`STEP_TIMEOUT`].
pub async fn connect_welcomed(
    target: &Target,
    source: Option<IpAddr>,
) -> Result<(Ws, String), BenchError> {
    timeout(STEP_TIMEOUT, async {
        let mut ws = connect(target, source).await?;
        let node = welcome(&mut ws).await?;
        Ok((ws, node))
    })
    .await
    .map_err(|_| BenchError::new(format!("no welcome from {} in time", target.url)))?
}

/// Joins `room` and waits for its `ok` (messages arriving meanwhile are
/// skipped: a fresh client has none that matter).
pub async fn join(ws: &mut Ws, room: &str, id: u64) -> Result<(), BenchError> {
    ws.send(Message::text(wire::join(room, id))).await?;
    timeout(STEP_TIMEOUT, async {
        loop {
            let Some(text) = next_text(ws).await? else {
                return Err(BenchError::new(format!("closed before joining {room}")));
            };
            match wire::decode(&text) {
                Incoming::Ok { id: Some(got) } if got == id => return Ok(()),
                Incoming::Error {
                    code,
                    id: Some(got),
                } if got == id => {
                    return Err(BenchError::new(format!("join {room}: {code}")));
                }
                _ => {}
            }
        }
    })
    .await
    .map_err(|_| BenchError::new(format!("no answer to join {room} in time")))?
}

/// The next text frame, `None` once the connection is closed.
pub async fn next_text(ws: &mut Ws) -> Result<Option<Utf8Bytes>, BenchError> {
    while let Some(frame) = ws.next().await {
        match frame? {
            Message::Text(text) => return Ok(Some(text)),
            Message::Close(_) => return Ok(None),
            _ => {}
        }
    }
    Ok(None)
}

/// `POST /drain` on a gateway's admin listener; returns the HTTP status.
pub async fn post_drain(admin: SocketAddr) -> Result<u16, BenchError> {
    let request = format!(
        "POST /drain HTTP/1.1\r\nHost: {admin}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    timeout(STEP_TIMEOUT, async {
        let mut stream = TcpStream::connect(admin).await?;
        stream.write_all(request.as_bytes()).await?;
        // The status line fits in the first read of any sane server; read a
        // bounded amount only.
        let mut head = vec![0u8; 256];
        let n = stream.read(&mut head).await?;
        parse_status(&head[..n])
            .ok_or_else(|| BenchError::new(format!("bad HTTP answer from {admin}")))
    })
    .await
    .map_err(|_| BenchError::new(format!("no answer from {admin} in time")))?
}

/// `GET path` on an HTTP/1.1 listener (the gateways' admin port); the body
/// of a 200 answer, at most `limit` bytes read.
pub async fn http_get(addr: SocketAddr, path: &str, limit: u64) -> Result<String, BenchError> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let answer = timeout(Duration::from_secs(5), async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.take(limit).read_to_end(&mut answer).await?;
        Ok::<_, BenchError>(answer)
    })
    .await
    .map_err(|_| BenchError::new(format!("no answer from {addr}{path} in time")))??;
    match parse_status(&answer) {
        Some(200) => {}
        other => {
            return Err(BenchError::new(format!(
                "GET {addr}{path}: status {other:?}"
            )));
        }
    }
    let text = String::from_utf8_lossy(&answer);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok(body.to_owned())
}

/// The status code of an HTTP/1.x response head.
pub fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\r').next()?;
    let text = std::str::from_utf8(line).ok()?;
    let mut parts = text.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 202 Accepted\r\n\r\n"), Some(202));
        assert_eq!(parse_status(b"HTTP/1.0 503 x\r\n"), Some(503));
        assert_eq!(parse_status(b"SSH-2.0\r\n"), None);
        assert_eq!(parse_status(b""), None);
    }
}
