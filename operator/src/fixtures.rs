//! Test fixtures for the reconciler (the controller-rs `ApiServerVerifier` pattern): a mock
//! API server that checks each request the reconciler makes, in order, and fake gateway
//! admin endpoints on 127.0.0.1 that serve `/metrics` and record `POST /drain`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tower_test::mock::{self, SendResponse};

use crate::controller::{Context, Settings};
use crate::crd::RealtimeCluster;
use crate::operator_metrics::OperatorMetrics;

type Handle = mock::Handle<Request<Body>, Response<Body>>;

/// The mock API server side.
pub struct ApiServerVerifier(Handle);

/// One request the reconciler made.
pub struct Call {
    /// HTTP method.
    pub method: Method,
    /// Path and query.
    pub uri: String,
    /// JSON body (`Null` when empty).
    pub body: Value,
    send: SendResponse<Response<Body>>,
}

impl Call {
    /// Answers with `status` and a JSON body.
    pub fn respond(self, status: StatusCode, body: &Value) {
        let bytes = serde_json::to_vec(body).unwrap();
        self.send.send_response(
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(bytes))
                .unwrap(),
        );
    }

    /// Answers 200 with the request body (what an apply or create returns, near enough).
    pub fn echo(self) {
        let body = self.body.clone();
        self.respond(StatusCode::OK, &body);
    }

    /// Asserts the method and the path (the query is checked separately).
    pub fn expect(self, method: Method, path: &str) -> Self {
        let actual_path = self.uri.split('?').next().unwrap_or_default().to_string();
        assert_eq!(
            (&self.method, actual_path.as_str()),
            (&method, path),
            "unexpected request {} {}",
            self.method,
            self.uri
        );
        self
    }
}

impl ApiServerVerifier {
    /// The next request, or a panic after 10 s without one.
    pub async fn next(&mut self) -> Call {
        let (request, send) = tokio::time::timeout(Duration::from_secs(10), self.0.next_request())
            .await
            .expect("timed out waiting for a request")
            .expect("client dropped");
        let method = request.method().clone();
        let uri = request.uri().to_string();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        Call {
            method,
            uri,
            body,
            send,
        }
    }
}

/// A client talking to a mock API server.
pub fn client() -> (Client, ApiServerVerifier) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), ApiServerVerifier(handle))
}

/// A reconciler context over a mock API server.
pub fn context(settings: Settings) -> (Arc<Context>, ApiServerVerifier) {
    let (client, api) = client();
    let ctx = Context::new(
        client,
        settings,
        Arc::new(OperatorMetrics::default()),
        Some("test".into()),
    );
    (Arc::new(ctx), api)
}

/// A RealtimeCluster `chat` in namespace `apps` with the given spec.
pub fn cluster(spec: Value, status: Option<Value>) -> RealtimeCluster {
    let mut object = json!({
        "apiVersion": "roomcast.dev/v1alpha1",
        "kind": "RealtimeCluster",
        "metadata": {"name": "chat", "namespace": "apps", "uid": "uid-1", "generation": 3,
                     "resourceVersion": "10"},
        "spec": spec,
    });
    if let Some(status) = status {
        object["status"] = status;
    }
    serde_json::from_value(object).unwrap()
}

/// The 404 body of the API server.
pub fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
           "code": 404, "message": "not found"})
}

/// A Deployment `chat` with `replicas` set and ready.
pub fn deployment(replicas: i32) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "chat", "namespace": "apps"},
           "spec": {"replicas": replicas, "selector": {}, "template": {}},
           "status": {"replicas": replicas, "readyReplicas": replicas}})
}

/// A pod list.
pub fn pod_list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "5"},
           "items": items})
}

/// A gateway pod on 127.0.0.1 whose admin endpoint listens on `admin_port`.
pub fn pod(name: &str, ready: bool, admin_port: u16, cost: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "apps", "annotations": {
               "roomcast.dev/admin-port": admin_port.to_string(),
               "controller.kubernetes.io/pod-deletion-cost": cost}},
           "status": {"podIP": "127.0.0.1",
                      "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}})
}

/// A fake gateway admin endpoint: `/metrics` reports `connections`; drains are counted.
pub struct FakeGateway {
    /// Its port on 127.0.0.1.
    pub port: u16,
    drains: Arc<Mutex<u32>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeGateway {
    /// Starts one on a free loopback port.
    pub async fn start(connections: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let drains = Arc::new(Mutex::new(0));
        let counter = drains.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&head)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string();
                    let (status, body) = if line.starts_with("GET /metrics ") {
                        (
                            "200 OK",
                            format!(
                                "# TYPE roomcast_connections gauge\nroomcast_connections {connections}\n"
                            ),
                        )
                    } else if line.starts_with("POST /drain ") {
                        *counter.lock().unwrap() += 1;
                        ("202 Accepted", String::new())
                    } else {
                        ("404 Not Found", String::new())
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Self { port, drains, task }
    }

    /// How many `POST /drain` it received.
    pub fn drains(&self) -> u32 {
        *self.drains.lock().unwrap()
    }
}

impl Drop for FakeGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}
