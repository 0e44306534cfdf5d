//! The gateways' admin endpoint as the operator uses it: reading `roomcast_connections`
//! from `/metrics` and asking a gateway to drain with `POST /drain`.
//!
//! A small HTTP/1 client (hyper-util) with a per-request timeout and a bounded body, so a
//! slow or hostile pod can neither stall a sync nor grow the operator's memory.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;

/// The gauge the autoscaler reads.
pub const CONNECTIONS_METRIC: &str = "roomcast_connections";
/// Largest `/metrics` body read; a gateway's is a few KiB.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Why a gateway's admin endpoint could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The URL could not be formed (bad address or port).
    #[error("bad admin URL {0}")]
    BadUrl(String),
    /// Connecting or exchanging failed.
    #[error("request failed: {0}")]
    Request(String),
    /// No answer in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The answer had an unexpected status.
    #[error("unexpected status {0}")]
    Status(StatusCode),
    /// The body was too large or unreadable.
    #[error("bad body: {0}")]
    Body(String),
    /// `/metrics` lacked the connections gauge or had a bad value.
    #[error("no usable {CONNECTIONS_METRIC} sample")]
    MissingMetric,
}

/// `User-Agent` of every admin request, so gateway logs and proxies can tell who asks.
pub const USER_AGENT: &str = concat!("roomcast-operator/", env!("CARGO_PKG_VERSION"));

/// What went wrong with an exchange, in words an operator can act on: hyper's own message
/// ("client error (SendRequest)") names neither the cause nor the step.
fn cause(error: &hyper_util::client::legacy::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            return match io.kind() {
                K::ConnectionRefused => "connection refused".into(),
                K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => {
                    "connection reset".into()
                }
                K::TimedOut => "connect timeout".into(),
                _ => format!("I/O error: {io}"),
            };
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() {
                return "connection closed before a complete response".into();
            }
            if h.is_parse() || h.is_parse_status() {
                return format!("bad response: {h}");
            }
        }
        source = e.source();
    }
    error.to_string()
}

/// Client for gateway admin endpoints.
#[derive(Clone, Debug)]
pub struct AdminClient {
    http: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
}

impl AdminClient {
    /// A client whose every request gives up after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        Self {
            http: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        }
    }

    async fn call(&self, method: Method, url: &str) -> Result<(StatusCode, Bytes), AdminError> {
        let uri: hyper::Uri = url.parse().map_err(|_| AdminError::BadUrl(url.into()))?;
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(hyper::header::USER_AGENT, USER_AGENT)
            .body(Empty::new())
            .map_err(|e| AdminError::BadUrl(e.to_string()))?;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| AdminError::Request(cause(&e)))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<LengthLimitError>().is_some() {
                        AdminError::Body(format!("larger than {MAX_BODY_BYTES} bytes"))
                    } else {
                        AdminError::Body(e.to_string())
                    }
                })?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| AdminError::Timeout(self.timeout))?
    }

    /// Reads the open connections of the gateway whose admin endpoint is `base`
    /// (`http://host:port`).
    pub async fn connections(&self, base: &str) -> Result<u64, AdminError> {
        let (status, body) = self.call(Method::GET, &format!("{base}/metrics")).await?;
        if status != StatusCode::OK {
            return Err(AdminError::Status(status));
        }
        let text = std::str::from_utf8(&body).map_err(|e| AdminError::Body(e.to_string()))?;
        parse_connections(text).ok_or(AdminError::MissingMetric)
    }

    /// Starts the gateway's drain (`POST /drain`, answered 202).
    pub async fn drain(&self, base: &str) -> Result<(), AdminError> {
        let (status, _) = self.call(Method::POST, &format!("{base}/drain")).await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(AdminError::Status(status))
        }
    }
}

/// The value of the unlabelled `roomcast_connections` sample in a Prometheus text
/// exposition, if present, finite and non-negative.
pub fn parse_connections(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.trim_start().strip_prefix(CONNECTIONS_METRIC)?;
        // A longer metric name (roomcast_connections_total) is a different metric.
        let rest = rest.strip_prefix(['{', ' ', '\t']).map(|r| {
            // Skip an (empty or not) label set; the contract has none, tolerate `{}`.
            r.split_once('}').map_or(r, |(_, after)| after)
        });
        let value: f64 = rest?.split_whitespace().next()?.parse().ok()?;
        // Gauges are floats in the exposition; counts are whole and bounded by u32 files.
        (value.is_finite() && value >= 0.0).then(|| {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let whole = value.round() as u64;
            whole
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn parses_the_gauge() {
        let text = "# HELP roomcast_connections Open WebSocket connections.\n\
                    # TYPE roomcast_connections gauge\n\
                    roomcast_connections_total 99\n\
                    roomcast_connections 42\n\
                    roomcast_rooms 3\n";
        assert_eq!(parse_connections(text), Some(42));
        assert_eq!(parse_connections("roomcast_connections{} 7\n"), Some(7));
        assert_eq!(
            parse_connections("roomcast_connections 3.0 1700000000000\n"),
            Some(3)
        );
    }

    #[test]
    fn rejects_missing_or_bad_values() {
        for text in [
            "",
            "roomcast_connections_total 5\n",
            "roomcast_connections -1\n",
            "roomcast_connections NaN\n",
            "roomcast_connections +Inf\n",
            "roomcast_connections abc\n",
            "# roomcast_connections 5\n",
        ] {
            assert_eq!(parse_connections(text), None, "{text:?}");
        }
    }

    /// Serves one canned HTTP response per connection and reports the request line.
    async fn canned(response: &'static str) -> (String, tokio::sync::mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let _ = tx.send(head.lines().next().unwrap_or("").to_string()).await;
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
        });
        (format!("http://{addr}"), rx)
    }

    #[tokio::test]
    async fn scrapes_and_drains_over_http() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let body = "roomcast_connections 12\n";
            let response: &'static str = Box::leak(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .into_boxed_str(),
            );
            let (base, mut requests) = canned(response).await;
            let client = AdminClient::new(Duration::from_secs(2));
            assert_eq!(client.connections(&base).await.unwrap(), 12);
            assert_eq!(requests.recv().await.unwrap(), "GET /metrics HTTP/1.1");

            let (base, mut requests) =
                canned("HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            client.drain(&base).await.unwrap();
            assert_eq!(requests.recv().await.unwrap(), "POST /drain HTTP/1.1");
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn errors_are_reported_not_panicked() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let client = AdminClient::new(Duration::from_millis(500));
            let (base, _rx) =
                canned("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n").await;
            assert!(matches!(
                client.connections(&base).await,
                Err(AdminError::Status(StatusCode::SERVICE_UNAVAILABLE))
            ));
            assert!(matches!(
                client.drain(&base).await,
                Err(AdminError::Status(_))
            ));
            let (base, _rx) = canned("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello").await;
            assert!(matches!(
                client.connections(&base).await,
                Err(AdminError::MissingMetric)
            ));
            assert!(matches!(
                client.connections("http://bad host").await,
                Err(AdminError::BadUrl(_))
            ));
            // A closed port on loopback: refused, not hung.
            let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = closed.local_addr().unwrap();
            drop(closed);
            assert!(client.connections(&format!("http://{addr}")).await.is_err());
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn failures_name_their_cause_and_requests_say_who_asks() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let client = AdminClient::new(Duration::from_secs(2));
            // Refused.
            let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = closed.local_addr().unwrap();
            drop(closed);
            let err = client
                .connections(&format!("http://{addr}"))
                .await
                .unwrap_err();
            assert_eq!(err.to_string(), "request failed: connection refused");
            // Closed (reset or EOF) before answering, after reading the request head.
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (head_tx, head_rx) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let _ = head_tx.send(String::from_utf8_lossy(&buf[..n]).to_lowercase());
                // Unread data is gone on close: the peer sees a reset or an early EOF.
                drop(socket);
            });
            let err = client
                .connections(&format!("http://{addr}"))
                .await
                .unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("connection reset")
                    || text.contains("closed before a complete response"),
                "{text}"
            );
            let head = head_rx.await.unwrap();
            assert!(
                head.contains(&format!("user-agent: {}", USER_AGENT.to_lowercase())),
                "{head}"
            );
            // Not HTTP at all.
            let (base, _rx) = canned("SSH-2.0-OpenSSH\r\n\r\n").await;
            let err = client.connections(&base).await.unwrap_err();
            assert!(
                err.to_string().starts_with("request failed: bad response"),
                "{err}"
            );
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let hold = tokio::spawn(async move {
                let (socket, _) = listener.accept().await.unwrap();
                tokio::time::sleep(Duration::from_secs(5)).await;
                drop(socket);
            });
            let client = AdminClient::new(Duration::from_millis(200));
            assert!(matches!(
                client.connections(&format!("http://{addr}")).await,
                Err(AdminError::Timeout(_))
            ));
            hold.abort();
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn oversized_bodies_are_cut_off() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let big = "x".repeat(MAX_BODY_BYTES + 10);
            let response: &'static str = Box::leak(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{big}",
                    big.len()
                )
                .into_boxed_str(),
            );
            let (base, _rx) = canned(response).await;
            let client = AdminClient::new(Duration::from_secs(2));
            assert!(matches!(
                client.connections(&base).await,
                Err(AdminError::Body(_))
            ));
        })
        .await
        .unwrap();
    }
}
