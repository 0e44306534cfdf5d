//! The HTTP client the OTLP exporters post through: hyper (already in the
//! workspace) instead of a second HTTP stack.
//!
//! The SDK's batch span processor and periodic metric reader run on their
//! own threads, outside any Tokio runtime, while hyper needs one; so each
//! request is spawned onto the runtime the binary runs and awaited from there.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_http::{HttpClient, HttpError};
use tokio::runtime::Handle;

/// Largest collector answer read (answers are tiny; this only bounds a broken peer).
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Posts OTLP requests on a Tokio runtime, each bounded by `timeout`.
#[derive(Debug, Clone)]
pub(crate) struct RuntimeClient {
    client: Client<HttpConnector, Full<Bytes>>,
    runtime: Handle,
    timeout: Duration,
}

impl RuntimeClient {
    /// A client whose requests run on `runtime`.
    pub(crate) fn new(runtime: Handle, timeout: Duration) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            runtime,
            timeout,
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let timeout = self.timeout;
        let task = self.runtime.spawn(async move {
            let exchange = async move {
                let (parts, body) = request.into_parts();
                let response = client
                    .request(Request::from_parts(parts, Full::new(body)))
                    .await?;
                let (parts, body) = response.into_parts();
                let body = Limited::new(body, MAX_RESPONSE_BYTES).collect().await?;
                Ok::<_, HttpError>(Response::from_parts(parts, body.to_bytes()))
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(result) => result,
                Err(_) => Err(HttpError::from(format!(
                    "no answer from the collector within {timeout:?}"
                ))),
            }
        });
        task.await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn posts_from_a_thread_outside_the_runtime() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut seen = Vec::new();
            // Read until the 5-byte body after the headers has arrived.
            while !seen.ends_with(b"hello") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "request cut short");
                seen.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            String::from_utf8(seen).unwrap()
        });
        let client = RuntimeClient::new(Handle::current(), Duration::from_secs(5));
        // The SDK's exporter threads are plain threads: do the same.
        let response = tokio::task::spawn_blocking(move || {
            let request = Request::post(format!("http://{addr}/v1/traces"))
                .header("content-type", "application/x-protobuf")
                .body(Bytes::from_static(b"hello"))
                .unwrap();
            block_on_elsewhere(client.send_bytes(request))
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.body().as_ref(), b"ok");
        let request = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
        assert!(request.starts_with("POST /v1/traces HTTP/1.1"), "{request}");
    }

    /// Drives a future on a bare runtime without an I/O driver, where hyper alone would fail.
    fn block_on_elsewhere<F: std::future::Future>(f: F) -> F::Output {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(f)
    }
}
