//! Shared harness of the gateway's integration tests: an in-process gateway on
//! port 0, a JSON WebSocket client, a raw client that never answers pings, HTTP
//! helpers, metric scraping, JWT minting and the real binary as a child process.
//! Every wait here is bounded, so a broken gateway fails a test instead of hanging it.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod binary;
pub mod fallback;
pub mod jwt;
pub mod msgpack;
pub mod raw;

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use roomcast_gateway::{Config, Gateway};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite};

/// How long one expected frame, reply or close may take to arrive.
pub const STEP: Duration = Duration::from_secs(5);

/// Runs a whole test body with an upper bound on its duration.
pub async fn within<F: Future>(secs: u64, body: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), body)
        .await
        .unwrap_or_else(|_| panic!("test exceeded its {secs}s bound"))
}

/// Polls `check` every 20 ms until it returns `Some`, failing after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A gateway running inside the test process on ephemeral ports.
pub struct TestGateway {
    gateway: Gateway,
    /// Public listener (WebSocket, HTTP API, demo page).
    pub public: SocketAddr,
    /// Admin listener (metrics, health, drain).
    pub admin: SocketAddr,
    /// The configuration it was started with.
    pub config: Config,
}

/// The configuration every test starts from: loopback port 0, a known node
/// name, short drain and heartbeat so tests stay fast.
pub fn test_config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("literal address"),
        admin_listen: "127.0.0.1:0".parse().expect("literal address"),
        node_name: "test-node".into(),
        drain_seconds: 1,
        heartbeat_ms: 5_000,
        ..Config::default()
    }
}

/// Starts a gateway with the test configuration changed by `tweak`.
pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestGateway {
    let mut config = test_config();
    tweak(&mut config);
    let gateway = tokio::time::timeout(STEP, Gateway::start(config.clone()))
        .await
        .expect("gateway starts in time")
        .expect("gateway starts");
    TestGateway {
        public: gateway.public_addr(),
        admin: gateway.admin_addr(),
        gateway,
        config,
    }
}

/// Starts a gateway with the test configuration.
pub async fn start() -> TestGateway {
    start_with(|_| {}).await
}

impl TestGateway {
    /// `ws://…/ws` of this gateway.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.public)
    }

    /// A URL on the public listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public)
    }

    /// A URL on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Connects an anonymous client and reads its welcome.
    pub async fn client(&self) -> Client {
        Client::connect(&self.ws_url(), &Connect::default())
            .await
            .unwrap_or_else(|e| panic!("upgrade refused: {e}"))
    }

    /// Connects with options, returning the refusal if the upgrade fails.
    pub async fn try_client(&self, opts: &Connect) -> Result<Client, tungstenite::Error> {
        Client::connect(&self.ws_url(), opts).await
    }

    /// The HTTP status of an upgrade that must be refused.
    pub async fn refused(&self, opts: &Connect) -> u16 {
        match self.try_client(opts).await {
            Ok(c) => panic!(
                "upgrade accepted (welcome {}), expected a refusal",
                c.welcome
            ),
            Err(e) => refusal_status(&e),
        }
    }

    /// Starts a drain, like `POST /drain`.
    pub fn start_drain(&self) {
        self.gateway.start_drain();
    }

    /// Stops the gateway.
    pub async fn stop(self) {
        tokio::time::timeout(STEP * 2, self.gateway.shutdown())
            .await
            .expect("gateway shuts down in time");
    }

    /// One sample of a metric, by name and exact label set (`""` for none).
    pub async fn metric(&self, name: &str, labels: &str) -> Option<f64> {
        metric_value(&self.metrics_text().await, name, labels)
    }

    /// The `/metrics` exposition.
    pub async fn metrics_text(&self) -> String {
        let resp = http()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(resp.status(), 200, "GET /metrics");
        resp.text().await.expect("metrics body")
    }

    /// Waits until the metric equals `want`.
    pub async fn wait_metric(&self, name: &str, labels: &str, want: f64) {
        eventually(STEP, &format!("{name}{{{labels}}} == {want}"), || async {
            (self.metric(name, labels).await == Some(want)).then_some(())
        })
        .await;
    }

    /// POSTs a JSON body to the public listener, with an optional bearer key.
    pub async fn post(&self, path: &str, body: &str, key: Option<&str>) -> (u16, Value) {
        let mut req = http()
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.expect("POST reaches the gateway");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("response body");
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }
}

/// An HTTP client that never goes through a proxy and never waits long.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(STEP)
        .build()
        .expect("reqwest client")
}

/// An HTTP GET: status, content type and body.
pub async fn get(url: &str) -> (u16, String, String) {
    let resp = http()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = resp
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url} body: {e}"));
    (status, ctype, body)
}

/// The status of an HTTP GET, for health endpoints.
pub async fn get_status(url: &str) -> u16 {
    http()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .status()
        .as_u16()
}

/// Reads one sample from a Prometheus text exposition. `labels` is the text
/// between the braces (`code="bad_request"`), or `""` for an unlabelled sample.
pub fn metric_value(text: &str, name: &str, labels: &str) -> Option<f64> {
    let series = if labels.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{labels}}}")
    };
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        (key.trim() == series).then(|| value.trim().parse().ok())?
    })
}

/// The HTTP status of a refused upgrade; panics on any other failure.
pub fn refusal_status(err: &tungstenite::Error) -> u16 {
    match err {
        tungstenite::Error::Http(resp) => resp.status().as_u16(),
        other => panic!("upgrade failed without an HTTP refusal: {other}"),
    }
}

/// How a client connects.
#[derive(Debug, Clone, Default)]
pub struct Connect {
    /// Sent as `Authorization: Bearer …`.
    pub bearer: Option<String>,
    /// Sent as the `token` query parameter.
    pub query_token: Option<String>,
    /// Sent as the `Origin` header.
    pub origin: Option<String>,
    /// Offered in `Sec-WebSocket-Protocol`.
    pub subprotocol: Option<String>,
}

impl Connect {
    /// A bearer-token connection.
    pub fn bearer(token: &str) -> Self {
        Self {
            bearer: Some(token.to_owned()),
            ..Self::default()
        }
    }

    /// A query-token connection.
    pub fn query(token: &str) -> Self {
        Self {
            query_token: Some(token.to_owned()),
            ..Self::default()
        }
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the reader task saw on the socket.
#[derive(Debug)]
enum Event {
    /// A text frame, parsed as JSON.
    Frame(Value),
    /// Something the protocol never sends (binary, non-JSON text).
    Bad(String),
    /// The server's close code (1005 without one), or `None` if the
    /// connection ended without a close frame.
    Closed(Option<u16>),
}

/// Reads the socket for as long as it is open, like a live client: this
/// answers pings and close frames even while the test is not reading.
async fn read_socket(mut stream: SplitStream<Ws>, events: mpsc::UnboundedSender<Event>) {
    while let Some(msg) = stream.next().await {
        let event = match msg {
            Ok(Message::Text(t)) => match serde_json::from_str(&t) {
                Ok(v) => Event::Frame(v),
                Err(e) => Event::Bad(format!("server frame is not JSON ({e}): {t}")),
            },
            Ok(Message::Binary(b)) => Event::Bad(format!("binary frame ({} bytes)", b.len())),
            Ok(Message::Close(frame)) => {
                let code = frame.map(|f| u16::from(f.code)).unwrap_or(1005);
                let _ = events.send(Event::Closed(Some(code)));
                // Reading on flushes tungstenite's close reply, completing the handshake.
                while let Some(Ok(_)) = stream.next().await {}
                return;
            }
            Ok(_) => continue,
            Err(_) => break,
        };
        if events.send(event).is_err() {
            return;
        }
    }
    let _ = events.send(Event::Closed(None));
}

/// A WebSocket client speaking the JSON protocol. Frames read while looking for
/// another are kept, in order, for the next read. A background task reads the
/// socket, so the client answers pings and closes like a live peer; tests of
/// dead or stalled peers use [`raw::RawClient`].
pub struct Client {
    sink: SplitSink<Ws, Message>,
    events: mpsc::UnboundedReceiver<Event>,
    reader: tokio::task::JoinHandle<()>,
    pending: VecDeque<Value>,
    next_id: u64,
    /// The first frame the server sent.
    pub welcome: Value,
    /// The `Sec-WebSocket-Protocol` the server selected, if any.
    pub subprotocol: Option<String>,
}

impl Client {
    /// Upgrades and reads the welcome frame.
    pub async fn connect(url: &str, opts: &Connect) -> Result<Client, tungstenite::Error> {
        let url = match &opts.query_token {
            Some(t) => format!("{url}?token={t}"),
            None => url.to_owned(),
        };
        let mut req = url.into_client_request()?;
        let headers = req.headers_mut();
        let mut set = |name: &'static str, value: String| {
            headers.insert(name, HeaderValue::from_str(&value).expect("header value"));
        };
        if let Some(t) = &opts.bearer {
            set("authorization", format!("Bearer {t}"));
        }
        if let Some(o) = &opts.origin {
            set("origin", o.clone());
        }
        if let Some(p) = &opts.subprotocol {
            set("sec-websocket-protocol", p.clone());
        }
        let (ws, resp) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(req))
            .await
            .expect("upgrade answered in time")?;
        let subprotocol = resp
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (sink, stream) = ws.split();
        let (tx, events) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_socket(stream, tx));
        let mut client = Client {
            sink,
            events,
            reader,
            pending: VecDeque::new(),
            next_id: 0,
            welcome: Value::Null,
            subprotocol,
        };
        let welcome = client.recv().await;
        assert_eq!(welcome["type"], "welcome", "first frame: {welcome}");
        client.welcome = welcome;
        Ok(client)
    }

    /// This connection's session id.
    pub fn session(&self) -> String {
        self.welcome["session"]
            .as_str()
            .expect("welcome.session")
            .to_owned()
    }

    /// This connection's user id.
    pub fn user(&self) -> String {
        self.welcome["user"]
            .as_str()
            .expect("welcome.user")
            .to_owned()
    }

    /// Sends one JSON frame.
    pub async fn send_json(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    /// Sends one text frame as is.
    pub async fn send_text(&mut self, text: &str) {
        self.send_message(Message::text(text.to_owned())).await;
    }

    /// Sends any WebSocket message.
    pub async fn send_message(&mut self, msg: Message) {
        tokio::time::timeout(STEP, self.sink.send(msg))
            .await
            .expect("send in time")
            .expect("send succeeds");
    }

    /// Reads the next JSON frame from the server, or `None` if none comes within `wait`.
    pub async fn try_recv(&mut self, wait: Duration) -> Option<Value> {
        if let Some(v) = self.pending.pop_front() {
            return Some(v);
        }
        match tokio::time::timeout(wait, self.events.recv()).await {
            Err(_) => None,
            Ok(Some(Event::Frame(v))) => Some(v),
            Ok(Some(Event::Bad(what))) => panic!("server sent {what}"),
            Ok(Some(Event::Closed(code))) => {
                panic!("server closed (code {code:?}) while a frame was expected")
            }
            Ok(None) => panic!("connection ended while a frame was expected"),
        }
    }

    /// Reads the next JSON frame from the server.
    pub async fn recv(&mut self) -> Value {
        self.try_recv(STEP)
            .await
            .expect("a frame from the server in time")
    }

    /// Reads frames until one matches, keeping the others for later reads.
    pub async fn recv_where(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(pos) = self.pending.iter().position(&pred) {
            return self.pending.remove(pos).expect("position is in range");
        }
        let mut skipped = Vec::new();
        let deadline = tokio::time::Instant::now() + STEP;
        let found = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            // Read straight from the socket: `pending` was searched above.
            let saved = std::mem::take(&mut self.pending);
            let next = self.try_recv(left).await;
            self.pending = saved;
            match next {
                Some(v) if pred(&v) => break v,
                Some(v) => skipped.push(v),
                None => panic!("no {what} within {STEP:?}; got instead: {skipped:?}"),
            }
        };
        self.pending.extend(skipped);
        found
    }

    /// Puts frames back, to be read again first and in this order.
    pub fn unread(&mut self, frames: Vec<Value>) {
        for frame in frames.into_iter().rev() {
            self.pending.push_front(frame);
        }
    }

    /// Reads until a frame of this `type`.
    pub async fn recv_type(&mut self, ty: &str) -> Value {
        self.recv_where(&format!("`{ty}` frame"), |v| v["type"] == ty)
            .await
    }

    /// Reads the reply (`ok` or `error`) carrying exactly this id.
    pub async fn reply_to(&mut self, id: &Value) -> Value {
        let id = id.clone();
        let reply = self
            .recv_where(&format!("reply to id {id}"), move |v| {
                (v["type"] == "ok" || v["type"] == "error") && v.get("id") == Some(&id)
            })
            .await;
        check_error_shape(&reply);
        reply
    }

    /// A fresh string id for a request.
    pub fn fresh_id(&mut self) -> Value {
        self.next_id += 1;
        json!(format!("r{}", self.next_id))
    }

    /// Sends `frame` with a fresh id and returns the reply to it.
    pub async fn request(&mut self, mut frame: Value) -> Value {
        let id = self.fresh_id();
        frame["id"] = id.clone();
        self.send_json(frame).await;
        self.reply_to(&id).await
    }

    /// Sends `frame` with a fresh id and asserts an `ok` reply, returned.
    pub async fn ok(&mut self, frame: Value) -> Value {
        let reply = self.request(frame.clone()).await;
        assert_eq!(reply["type"], "ok", "reply to {frame}: {reply}");
        reply
    }

    /// Sends `frame` with a fresh id and asserts an `error` reply with `code`.
    pub async fn err(&mut self, frame: Value, code: &str) -> Value {
        let reply = self.request(frame.clone()).await;
        assert_eq!(reply["type"], "error", "reply to {frame}: {reply}");
        assert_eq!(reply["code"], code, "reply to {frame}: {reply}");
        reply
    }

    /// Joins a room, asserting success.
    pub async fn join(&mut self, room: &str) {
        self.ok(json!({"type": "join", "room": room})).await;
    }

    /// The next frame that is not a reply to a request: an id-less error,
    /// a message or a direct.
    pub async fn recv_unsolicited(&mut self) -> Value {
        self.recv_where("a frame without id", |v| v.get("id").is_none())
            .await
    }

    /// Asserts that the next frame is an id-less error with `code`.
    pub async fn expect_error_without_id(&mut self, code: &str) {
        let frame = self
            .recv_where("an id-less error", |v| {
                v["type"] == "error" && v.get("id").is_none()
            })
            .await;
        check_error_shape(&frame);
        assert_eq!(frame["code"], code, "{frame}");
    }

    /// Proves no frame is waiting before a fresh ping's `ok`: anything the
    /// server queued earlier for this connection would arrive before it.
    pub async fn expect_quiet(&mut self) {
        let id = self.fresh_id();
        self.send_json(json!({"type": "ping", "id": id})).await;
        let next = self.recv().await;
        assert!(
            next["type"] == "ok" && next["id"] == id,
            "expected nothing before the ping's ok, got {next}"
        );
    }

    /// Reads (discarding data frames) until the server's close frame and
    /// asserts its code.
    pub async fn expect_close(&mut self, code: u16) {
        let got = self.wait_close(STEP * 2).await;
        assert_eq!(got, Some(code), "close code");
    }

    /// Reads until the server closes, within `limit`. Returns the close code,
    /// or `None` if the connection ended without a close frame.
    pub async fn wait_close(&mut self, limit: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => panic!("no close within {limit:?}"),
                Ok(None) => return None,
                Ok(Some(Event::Closed(code))) => return code,
                Ok(Some(_)) => continue,
            }
        }
    }

    /// Closes the connection normally.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(STEP, self.sink.close()).await;
    }
}

impl Drop for Client {
    /// Dropping a client drops its socket at once, like a vanished peer.
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A history answer's (`offset`, `epoch`): of a `message`, an `ok` or a 202.
pub fn position(v: &Value) -> (u64, String) {
    (
        v["offset"]
            .as_u64()
            .unwrap_or_else(|| panic!("no offset: {v}")),
        v["epoch"]
            .as_str()
            .unwrap_or_else(|| panic!("no epoch: {v}"))
            .to_owned(),
    )
}

/// Asserts the fields every `error` frame carries.
pub fn check_error_shape(frame: &Value) {
    if frame["type"] == "error" {
        assert!(frame["code"].is_string(), "error without code: {frame}");
        assert!(
            frame["message"].is_string(),
            "error without message: {frame}"
        );
    }
}
