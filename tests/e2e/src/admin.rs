//! The gateways' admin endpoints as the tests use them (a minimal HTTP/1.1 exchange over
//! loopback), and [`DrainGate`], a proxy in front of one that can refuse `POST /drain` so a
//! scale-down can be held in the middle.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Largest request or response the helpers read.
const MAX_BYTES: u64 = 1 << 20;

/// One `method path` exchange with `Connection: close`; returns status and body.
pub async fn request(addr: SocketAddr, method: &str, path: &str) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    let mut buf = Vec::new();
    stream.take(MAX_BYTES).read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("not an HTTP response: {text:.80}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The status of `GET path`, or `None` when the endpoint does not answer.
pub async fn status(addr: SocketAddr, path: &str) -> Option<u16> {
    request(addr, "GET", path).await.ok().map(|(s, _)| s)
}

/// The value of a sample (`name` exactly, labels included) in a Prometheus text exposition.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// A gateway's `roomcast_connections`, or `None` when unreadable.
pub async fn connections(admin: SocketAddr) -> Option<u64> {
    let (status, body) = request(admin, "GET", "/metrics").await.ok()?;
    if status != 200 {
        return None;
    }
    sample(&body, "roomcast_connections").map(|v| v as u64)
}

/// A proxy in front of a gateway's admin endpoint that forwards everything except
/// `POST /drain`, which it answers 503 while closed.
pub struct DrainGate {
    /// Where the proxy listens (the pod's admin port points here).
    pub addr: SocketAddr,
    open: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
    forwarded: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl DrainGate {
    /// A closed gate on `ip`, free port, in front of `upstream`.
    pub async fn start(ip: IpAddr, upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind((ip, 0)).await?;
        let addr = listener.local_addr()?;
        let open = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(AtomicUsize::new(0));
        let forwarded = Arc::new(AtomicUsize::new(0));
        let (o, r, f) = (open.clone(), refused.clone(), forwarded.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (o, r, f) = (o.clone(), r.clone(), f.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, upstream, &o, &r, &f).await;
                });
            }
        });
        Ok(Self {
            addr,
            open,
            refused,
            forwarded,
            task,
        })
    }

    /// From now on `POST /drain` reaches the gateway.
    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    /// `POST /drain` requests refused so far.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    /// `POST /drain` requests passed to the gateway so far.
    pub fn forwarded(&self) -> usize {
        self.forwarded.load(Ordering::SeqCst)
    }
}

impl Drop for DrainGate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut stream: TcpStream,
    upstream: SocketAddr,
    open: &AtomicBool,
    refused: &AtomicUsize,
    forwarded: &AtomicUsize,
) -> io::Result<()> {
    // Read the request head (bodies are empty on the admin endpoint).
    let mut head = Vec::new();
    let mut byte = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut byte).await?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&byte[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut first = text.lines().next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let path = first.next().unwrap_or_default().to_string();
    let (status, body) = if method == "POST" && path == "/drain" && !open.load(Ordering::SeqCst) {
        refused.fetch_add(1, Ordering::SeqCst);
        (503, "drain refused by the test\n".to_string())
    } else {
        if method == "POST" && path == "/drain" {
            forwarded.fetch_add(1, Ordering::SeqCst);
        }
        request(upstream, &method, &path).await?
    };
    let response = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::sample;

    #[test]
    fn samples_are_matched_by_exact_name() {
        let text = "# HELP x\nroomcast_connections_opened_total 9\nroomcast_connections 3\n\
                    roomcast_operator_replicas{namespace=\"a\",name=\"b\"} 4\n";
        assert_eq!(sample(text, "roomcast_connections"), Some(3.0));
        assert_eq!(
            sample(
                text,
                "roomcast_operator_replicas{namespace=\"a\",name=\"b\"}"
            ),
            Some(4.0)
        );
        assert_eq!(sample(text, "roomcast_conn"), None);
    }
}
