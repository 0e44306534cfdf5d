//! The gateway process: its two listeners and their routes, and the
//! [`Gateway`] handle that starts and stops it.
//!
//! Public listener: `GET /ws` (upgrade, after origin, auth, drain and
//! capacity checks; the connection then belongs to `transport/websocket.rs`),
//! the HTTP fallbacks (`fallback.rs`: SSE and long polling, the same checks),
//! the HTTP API (`api.rs`) and the demo page (`/`, with its bundled client
//! `/roomcast.js`). Admin listener: `/metrics`,
//! `/healthz`, `/readyz` and `POST /drain`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::auth::{Authenticator, Identity, bearer};
use crate::bus::Bus;
use crate::config::{Config, ConfigError};
use crate::delivery::hub::Hub;
use crate::delivery::outbound::Close;
use crate::drain::Drain;
use crate::history::Store;
use crate::history::jetstream::{JetStreamConfig, JetStreamStore, Storage};
use crate::history::memory::MemoryStore;
use crate::metrics::Metrics;
use crate::msgpack;
use crate::namespace::Namespaces;
use crate::presence::Presence;
use crate::protocol::SUBPROTOCOL;
use crate::state::Shared;
use crate::transport::registry::Sessions;
use crate::transport::{websocket, ws};

mod admission;
mod api;
mod fallback;
mod listener;

use self::admission::HttpPhase;

/// How long [`Gateway::shutdown`] waits for connections to finish their close
/// handshakes. Unlike a drain, a shutdown does not wait for slow clients.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A configuration value is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listen address could not be bound.
    #[error("cannot listen on {field} = {addr}: {source}")]
    Bind {
        /// The config field naming the address.
        field: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    shared: Arc<Shared>,
    public_addr: SocketAddr,
    admin_addr: SocketAddr,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    /// Keeps the JetStream streams created and `roomcast_history_up` true.
    watch_history: Option<JoinHandle<()>>,
}

impl Gateway {
    /// Binds both listeners and starts serving.
    pub async fn start(config: Config) -> Result<Gateway, StartError> {
        config.validate()?;
        let auth = Authenticator::from_config(&config.auth)?;
        let metrics = Arc::new(Metrics::default());
        let bind = |field, addr| {
            listener::bind(addr).map_err(|source| StartError::Bind {
                field,
                addr,
                source,
            })
        };
        let public = bind("listen", config.listen)?;
        let admin = bind("admin_listen", config.admin_listen)?;
        let public_addr = local_addr(&public, "listen", config.listen)?;
        let admin_addr = local_addr(&admin, "admin_listen", config.admin_listen)?;
        let node = config.node();
        let bus = Bus::from_config(&config.nats, &node, metrics.clone()).await?;
        let hub = Hub::new(bus, metrics.clone());
        let batched = hub.batch_writes(config.io_uring);
        tracing::info!(io_uring = batched, "fan-out writes");
        let presence = Presence::new(
            hub.clone(),
            metrics.clone(),
            Duration::from_millis(config.nats.request_timeout_ms),
        );
        if config.auth.api_key.is_none() && !public_addr.ip().is_loopback() {
            tracing::warn!(%public_addr, "auth.api_key is not set: the HTTP API (/v1/...) is open to anyone who can reach the listener");
        }
        let namespaces = config.namespace_options()?;
        let store = history_store(&config, &namespaces, hub.bus());
        shared_history_up(&metrics, store.as_deref());
        if let Some(store) = &store {
            hub.set_history(store.clone());
        }
        let sessions = Sessions::new(
            config.polling,
            config.limits.max_frame_bytes,
            Duration::from_millis(config.nats.request_timeout_ms),
        );
        // Requests forwarded by other gateways reach these sessions too.
        let desk: std::sync::Weak<Sessions> = Arc::downgrade(&sessions);
        hub.bus().serve_sessions(sessions.route(), desk);
        let shared = Arc::new(Shared {
            sessions,
            namespaces,
            node,
            config,
            hub,
            auth,
            metrics,
            drain: Arc::new(Drain::default()),
            presence,
        });
        let (stop, stopped) = watch::channel(false);
        let limits = &shared.config.limits;
        let http = |metrics| Http {
            header_timeout: Duration::from_millis(limits.http_read_timeout_ms),
            phase: HttpPhase::new(limits.max_http_connections, metrics),
        };
        let watch_history =
            store.map(|store| tokio::spawn(watch_history(store, shared.metrics.clone())));
        let servers = vec![
            tokio::spawn(serve(
                public,
                public_router(shared.clone()),
                http(Some(shared.metrics.clone())),
                stopped.clone(),
            )),
            tokio::spawn(serve(
                admin,
                admin_router(shared.clone()),
                http(None),
                stopped,
            )),
        ];
        Ok(Gateway {
            shared,
            public_addr,
            admin_addr,
            stop,
            servers,
            watch_history,
        })
    }

    /// Address of the public listener (useful with port 0).
    pub fn public_addr(&self) -> SocketAddr {
        self.public_addr
    }

    /// Address of the admin listener.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// This gateway's node name.
    pub fn node(&self) -> &str {
        &self.shared.node
    }

    /// The gateway's metrics (for exporting them elsewhere than `/metrics`).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Starts the drain, as `POST /drain` does; false if already draining.
    pub fn start_drain(&self) -> bool {
        self.shared.start_drain()
    }

    /// Resolves once a started drain has finished.
    pub async fn drained(&self) {
        self.shared.drain.finished().await
    }

    /// Stops both listeners and closes every connection (1001), waiting at
    /// most [`SHUTDOWN_GRACE`] for them to go.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        if let Some(watch) = &self.watch_history {
            watch.abort();
        }
        for conn in self.shared.hub.connections() {
            conn.outbound.close(Close::GOING_AWAY);
        }
        self.shared
            .hub
            .wait_empty(Instant::now() + SHUTDOWN_GRACE)
            .await;
        for server in self.servers {
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, server).await;
        }
        self.shared.hub.bus().shutdown().await;
    }
}

/// The history store the configuration asks for: none when no namespace
/// keeps history; in memory on the in-process bus; JetStream on NATS.
fn history_store(config: &Config, namespaces: &Namespaces, bus: &Bus) -> Option<Arc<Store>> {
    namespaces.with_history().next()?;
    let store = match bus.nats_client() {
        None => Store::Memory(MemoryStore::new(namespaces.clone())),
        Some(client) => {
            let nats = &config.nats;
            let layout = JetStreamConfig {
                prefix: nats.cluster_name.clone(),
                shards: nats.history_shards,
                replicas: usize::from(nats.history_replicas),
                storage: if nats.history_storage == "memory" {
                    Storage::Memory
                } else {
                    Storage::File
                },
                timeout: Duration::from_millis(nats.history_timeout_ms),
            };
            Store::JetStream(Box::new(JetStreamStore::new(
                client.clone(),
                namespaces.clone(),
                layout,
            )))
        }
    };
    Some(Arc::new(store))
}

/// `roomcast_history_up` before the first check: up unless JetStream is to
/// be checked.
fn shared_history_up(metrics: &Metrics, store: Option<&Store>) {
    let up = !matches!(store, Some(Store::JetStream(_)));
    metrics.history_up.store(i64::from(up), Relaxed);
}

/// How often JetStream is checked while it answers, and while it does not.
const HISTORY_CHECK: Duration = Duration::from_secs(5);
const HISTORY_RETRY: Duration = Duration::from_millis(500);

/// Creates or updates the history streams and re-reads their epochs, again
/// and again: `roomcast_history_up` and `/readyz` follow the outcome.
async fn watch_history(store: Arc<Store>, metrics: Arc<Metrics>) {
    let Store::JetStream(jetstream) = &*store else {
        return;
    };
    let mut was_up = None;
    loop {
        let outcome = jetstream.ensure_all().await;
        let up = outcome.is_ok();
        metrics.history_up.store(i64::from(up), Relaxed);
        if was_up != Some(up) {
            match &outcome {
                Ok(()) => tracing::info!("history streams ready on JetStream"),
                Err(e) => {
                    tracing::warn!(error = %e, "JetStream unavailable: history rooms answer unavailable")
                }
            }
        }
        was_up = Some(up);
        tokio::time::sleep(if up { HISTORY_CHECK } else { HISTORY_RETRY }).await;
    }
}

/// How a listener bounds its connections while they speak HTTP.
struct Http {
    /// Time for a request's headers (the body has its own, see `api.rs`).
    header_timeout: Duration,
    /// The bound on connections not yet upgraded.
    phase: HttpPhase,
}

/// Accepts connections and serves HTTP/1.1 on them until `stopped`. Hand
/// rolled rather than `axum::serve` so an upgraded connection hands over its
/// `TcpStream` itself (see `upgrade`).
async fn serve(
    listener: TcpListener,
    router: Router,
    http: Http,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors, usually: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stop_requested(&mut stopped) => return,
        };
        let Some(admitted) = http.phase.admit() else {
            http.phase.refuse(tcp);
            continue;
        };
        // Frames are small and latency matters more than packet count.
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let mut stopped = stopped.clone();
        let header_timeout = http.header_timeout;
        tokio::spawn(async move {
            // Held until the connection closes or is upgraded (the upgraded
            // session runs in a task of its own).
            let _admitted = admitted;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            tokio::pin!(conn);
            let stopping = tokio::select! {
                _ = conn.as_mut() => false,
                () = stop_requested(&mut stopped) => true,
            };
            if stopping {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
            }
        });
    }
}

/// Resolves once the gateway is stopping.
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

fn local_addr(
    listener: &TcpListener,
    field: &'static str,
    addr: SocketAddr,
) -> Result<SocketAddr, StartError> {
    listener.local_addr().map_err(|source| StartError::Bind {
        field,
        addr,
        source,
    })
}

fn public_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(demo))
        .route("/roomcast.js", get(demo_client))
        .route("/ws", get(upgrade))
        .merge(api::router())
        .merge(fallback::router())
        .with_state(shared)
}

fn admin_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/drain", post(drain))
        .with_state(shared)
}

/// The demo chat page, embedded in the binary.
async fn demo() -> Html<&'static str> {
    Html(include_str!("../demo/index.html"))
}

/// The demo page's client library: @roomcast/client (clients/js) bundled into
/// one script, committed and checked against a fresh build by `make test`.
async fn demo_client() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../demo/roomcast.js"),
    )
        .into_response()
}

/// The query parameters of a client request: the token, for browsers.
#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The checks every new session passes, whatever its transport (`GET /ws`,
/// `GET /sse`, `POST /poll`): not draining, an allowed `Origin`, a valid
/// token (header or `token` query parameter), room under the connection
/// limit. A refusal is the HTTP status and text to answer.
fn admit(
    shared: &Shared,
    headers: &HeaderMap,
    query: &Result<Query<TokenQuery>, QueryRejection>,
) -> Result<Identity, (StatusCode, &'static str)> {
    let refuse = |status: StatusCode, message: &'static str| {
        shared.metrics.upgrades_refused.fetch_add(1, Relaxed);
        Err((status, message))
    };
    if shared.drain.is_draining() {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining: connect to another gateway\n",
        );
    }
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if !shared.auth.origin_allowed(origin) {
        return refuse(StatusCode::FORBIDDEN, "origin not allowed\n");
    }
    let identity = match shared.auth.authenticate(request_token(headers, query)) {
        Ok(identity) => identity,
        Err(e) => {
            tracing::debug!(error = %e, "session refused");
            return refuse(StatusCode::UNAUTHORIZED, "invalid or missing token\n");
        }
    };
    let max = shared.config.limits.max_connections;
    if max > 0 && shared.hub.connection_count() >= max {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "connection limit reached\n",
        );
    }
    Ok(identity)
}

/// A request's token: `Authorization: Bearer`, else the `token` query parameter.
fn request_token<'a>(
    headers: &'a HeaderMap,
    query: &'a Result<Query<TokenQuery>, QueryRejection>,
) -> Option<&'a str> {
    let header_token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    let query_token = query.as_ref().ok().and_then(|q| q.token.as_deref());
    header_token.or(query_token)
}

/// `GET /ws`: every check that can refuse a client happens here, before the
/// upgrade, so a refused client never gets a WebSocket.
async fn upgrade(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    query: Result<Query<TokenQuery>, QueryRejection>,
    mut request: Request,
) -> Response {
    let identity = match admit(&shared, &headers, &query) {
        Ok(identity) => identity,
        Err(refusal) => return refusal.into_response(),
    };
    let handshake = match ws::handshake(&headers, &[SUBPROTOCOL, msgpack::SUBPROTOCOL]) {
        Ok(handshake) => handshake,
        Err((status, message)) => {
            let mut response = (status, message).into_response();
            if status == StatusCode::UPGRADE_REQUIRED {
                // RFC 6455 §4.4: a 426 names the version this server speaks.
                response.headers_mut().insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                );
            }
            return response;
        }
    };
    let extensions = shared
        .config
        .websocket
        .compression
        .then(|| ws::deflate_offer(&headers))
        .flatten();
    let negotiated = websocket::Negotiated {
        msgpack: handshake.protocol == Some(msgpack::SUBPROTOCOL),
        deflate: extensions.is_some(),
    };
    let Some(on_upgrade) = request.extensions_mut().remove::<OnUpgrade>() else {
        return (
            StatusCode::UPGRADE_REQUIRED,
            "this connection cannot be upgraded\n",
        )
            .into_response();
    };
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => return tracing::debug!(error = %e, "upgrade failed"),
        };
        // Our listener serves plain TCP, so this always succeeds.
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                websocket::serve(
                    parts.io.into_inner(),
                    parts.read_buf,
                    shared,
                    identity,
                    negotiated,
                )
                .await
            }
            Err(_) => tracing::error!("upgraded connection is not a TCP stream"),
        }
    });
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket");
    if let Ok(accept) = HeaderValue::from_str(&handshake.accept) {
        response = response.header(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Some(protocol) = handshake.protocol {
        response = response.header(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    if let Some(value) = extensions.and_then(|v| HeaderValue::from_str(&v).ok()) {
        response = response.header(header::SEC_WEBSOCKET_EXTENSIONS, value);
    }
    response
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    (
        [(header::CONTENT_TYPE, content_type)],
        shared.metrics.render(),
    )
        .into_response()
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.is_ready() {
        // JetStream down takes only history rooms out (they answer
        // `unavailable`); the gateway still serves every other room, so it
        // stays ready and says so.
        if shared.metrics.history_up.load(Relaxed) == 0 {
            return (
                StatusCode::OK,
                "ready; history store (JetStream) unavailable: history rooms answer unavailable\n",
            )
                .into_response();
        }
        (StatusCode::OK, "ready\n").into_response()
    } else if shared.drain.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "cluster bus unavailable\n").into_response()
    }
}

async fn drain(State(shared): State<Arc<Shared>>) -> Response {
    shared.start_drain();
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({"draining": true})),
    )
        .into_response()
}
