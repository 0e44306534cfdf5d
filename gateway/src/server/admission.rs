//! Admission of HTTP traffic before it costs anything lasting: the bound on
//! connections still in the HTTP phase (not yet upgraded, or serving API
//! requests), and the size limit and read deadline of a request body.
//!
//! Without these a client that sends a body one byte at a time, or announces
//! a terabyte and sends nothing, holds a socket and a task for as long as it
//! likes; enough of them exhaust the process's open files.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::protocol::{ErrorCode, Failure};

/// What a connection refused at accept is told before it is closed.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
content-length: 36\r\nconnection: close\r\n\r\ntoo many connections, retry shortly\n";

/// The bound on connections in the HTTP phase of one listener.
#[derive(Debug, Clone)]
pub struct HttpPhase {
    /// `None`: no bound.
    slots: Option<Arc<Semaphore>>,
    /// Where the public listener counts; the admin listener does not (its
    /// scrapes would count themselves).
    metrics: Option<Arc<Metrics>>,
}

/// A connection's place in the HTTP phase; dropping it (the connection
/// closed or was upgraded) frees the place.
#[derive(Debug)]
pub struct Admitted {
    _permit: Option<OwnedSemaphorePermit>,
    metrics: Option<Arc<Metrics>>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(metrics) = &self.metrics {
            metrics.http_connections.fetch_sub(1, Relaxed);
        }
    }
}

impl HttpPhase {
    /// At most `max` connections at once (0: no bound), counted in `metrics`
    /// when given.
    pub fn new(max: usize, metrics: Option<Arc<Metrics>>) -> Self {
        Self {
            slots: (max > 0).then(|| Arc::new(Semaphore::new(max))),
            metrics,
        }
    }

    /// A place for a newly accepted connection, or `None` when every place
    /// is taken.
    pub fn admit(&self) -> Option<Admitted> {
        let permit = match &self.slots {
            None => None,
            Some(slots) => Some(slots.clone().try_acquire_owned().ok()?),
        };
        if let Some(metrics) = &self.metrics {
            metrics.http_connections.fetch_add(1, Relaxed);
        }
        Some(Admitted {
            _permit: permit,
            metrics: self.metrics.clone(),
        })
    }

    /// Tells a connection that found no place so, and drops it. The answer
    /// is written at once (a fresh socket's buffer takes it): the refused
    /// client costs no task and no wait.
    pub fn refuse(&self, tcp: TcpStream) {
        if let Some(metrics) = &self.metrics {
            metrics.http_connections_refused.fetch_add(1, Relaxed);
        }
        let _ = tcp.try_write(REFUSED);
        let _ = socket2::SockRef::from(&tcp).shutdown(std::net::Shutdown::Write);
    }
}

/// A request body that was not accepted: the status and the contract's error.
#[derive(Debug)]
pub struct BodyRefusal {
    /// 413, 408 or 400.
    pub status: StatusCode,
    /// The error code and message of the JSON answer.
    pub failure: Failure,
}

impl BodyRefusal {
    fn new(status: StatusCode, code: ErrorCode, message: String) -> Self {
        Self {
            status,
            failure: Failure::new(code, message),
        }
    }

    fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            format!("request body over {limit} bytes"),
        )
    }
}

/// The `Content-Length` a request announces, when it announces one.
pub fn announced_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Reads a whole request body of at most `limit` bytes before `deadline`.
/// An announced length over the limit is refused before a byte is read;
/// a body that grows past it is refused as soon as it does.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    deadline: Instant,
) -> Result<Bytes, BodyRefusal> {
    if announced_length(headers).is_some_and(|len| len > limit as u64) {
        return Err(BodyRefusal::too_large(limit));
    }
    let read = async {
        let mut stream = body.into_data_stream();
        let mut buf = BytesMut::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| {
                BodyRefusal::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::BadRequest,
                    "could not read the request body".into(),
                )
            })?;
            if buf.len() + chunk.len() > limit {
                return Err(BodyRefusal::too_large(limit));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    };
    match tokio::time::timeout_at(deadline, read).await {
        Ok(result) => result,
        Err(_) => Err(BodyRefusal::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::BadRequest,
            "the request body did not arrive in time".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn headers(length: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, length.parse().unwrap());
        headers
    }

    #[test]
    fn announced_lengths_are_read_when_they_parse() {
        assert_eq!(announced_length(&headers("12")), Some(12));
        assert_eq!(
            announced_length(&headers("1099511627776")),
            Some(1 << 40),
            "a terabyte is a length like any other"
        );
        assert_eq!(announced_length(&headers("lots")), None);
        assert_eq!(announced_length(&HeaderMap::new()), None);
    }

    #[tokio::test]
    async fn bodies_are_refused_by_announced_or_actual_size() {
        let later = Instant::now() + Duration::from_secs(5);
        let ok = read_body(&headers("3"), Body::from("abc"), 3, later).await;
        assert_eq!(ok.unwrap().as_ref(), b"abc");
        let announced = read_body(&headers("4"), Body::from("abc"), 3, later).await;
        assert_eq!(announced.unwrap_err().status, StatusCode::PAYLOAD_TOO_LARGE);
        let actual = read_body(&HeaderMap::new(), Body::from("abcd"), 3, later).await;
        let refusal = actual.unwrap_err();
        assert_eq!(refusal.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(refusal.failure.code, ErrorCode::PayloadTooLarge);
    }

    #[tokio::test]
    async fn a_body_that_never_ends_meets_the_deadline() {
        let silent = futures_util::stream::pending::<Result<Bytes, std::io::Error>>();
        let soon = Instant::now() + Duration::from_millis(50);
        let refusal = read_body(&headers("3"), Body::from_stream(silent), 3, soon)
            .await
            .unwrap_err();
        assert_eq!(refusal.status, StatusCode::REQUEST_TIMEOUT);
    }

    #[test]
    fn the_http_phase_bound_frees_places_on_drop() {
        let phase = HttpPhase::new(2, None);
        let a = phase.admit().expect("first place");
        let _b = phase.admit().expect("second place");
        assert!(phase.admit().is_none(), "no third place");
        drop(a);
        assert!(phase.admit().is_some(), "a freed place is taken again");
        let metrics = Arc::new(Metrics::default());
        let unbounded = HttpPhase::new(0, Some(metrics.clone()));
        let held: Vec<_> = (0..100).filter_map(|_| unbounded.admit()).collect();
        assert_eq!(held.len(), 100);
        assert_eq!(metrics.http_connections.load(Relaxed), 100);
        drop(held);
        assert_eq!(metrics.http_connections.load(Relaxed), 0);
    }
}
