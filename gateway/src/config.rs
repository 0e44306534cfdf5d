//! Gateway configuration: defaults, a YAML file, `ROOMCAST_*` environment
//! variables and command-line flags, merged in that order of precedence
//! (flags > env > file > defaults) and validated once at start-up.
//!
//! Every option is declared once in [`OPTIONS`]; its flag (`--limits-max-frame-bytes`)
//! and environment variable (`ROOMCAST_LIMITS_MAX_FRAME_BYTES`) are derived from
//! its path in the YAML file (`limits.max_frame_bytes`), so the three sources can
//! never drift apart. A bad value fails start-up with a message naming the
//! field and where the value came from (the flag, the variable or the file).
//!
//! [`Config::from_sources`] is the whole loader without I/O: arguments,
//! environment and file text in, a validated configuration out. The file is
//! read as YAML (serde-saphyr); flags and variables are applied one at a time
//! to the configuration as a JSON tree, so each is checked on its own.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command};
use roomcast_telemetry::LogFormat;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::namespace::{NamespaceSpec, Namespaces};

/// The whole gateway configuration, as the YAML file spells it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Public listener: WebSocket upgrades, the HTTP API and the demo page.
    pub listen: SocketAddr,
    /// Admin listener: metrics, health, readiness and drain.
    pub admin_listen: SocketAddr,
    /// This gateway's name, sent in `welcome.node`; empty means the host name.
    pub node_name: String,
    /// Interval of server WebSocket pings; a peer silent for two intervals is closed.
    pub heartbeat_ms: u64,
    /// Period over which a drain spreads its 1012 closes.
    pub drain_seconds: u64,
    /// How long a frame to an idle connection may wait for others to share
    /// its socket write (0: written at once). At most [`MAX_WRITE_DELAY_MS`].
    pub write_delay_ms: u64,
    /// Submit a fan-out's socket writes together through io_uring, one
    /// system call per 64 connections (Linux; where io_uring is refused,
    /// each connection is written with `sendmsg`, as with `false`).
    pub io_uring: bool,
    /// Log filter (`info`, `debug`, `roomcast_gateway=trace`, …).
    pub log_level: String,
    /// Log line format: `text` or `json`.
    #[serde(with = "as_text")]
    pub log_format: LogFormat,
    /// Per-connection limits.
    pub limits: Limits,
    /// WebSocket wire options (compression).
    pub websocket: Websocket,
    /// Client authentication and the HTTP API key.
    pub auth: Auth,
    /// The NATS cluster bus; without a URL the gateway runs alone.
    pub nats: Nats,
    /// Per-namespace options, one `NAME:option=value,...` spec per namespace
    /// (see `namespace.rs`); unlisted namespaces get the contract's defaults.
    pub namespaces: Vec<NamespaceSpec>,
    /// Long-polling timings. Not an option (the contract fixes them); tests
    /// shorten them to stay fast.
    #[serde(skip)]
    pub polling: Polling,
}

/// The timings of long-polling sessions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Polling {
    /// How long `GET /poll/{session}` waits for frames before answering `[]`.
    pub wait: std::time::Duration,
    /// A session not polled for this long ends.
    pub expiry: std::time::Duration,
}

impl Default for Polling {
    fn default() -> Self {
        Self {
            wait: std::time::Duration::from_secs(25),
            expiry: std::time::Duration::from_secs(60),
        }
    }
}

/// Limits that keep every connection's cost bounded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest client frame; a larger one closes the connection with 1009.
    pub max_frame_bytes: usize,
    /// Largest `data` of a publish or send (WebSocket or HTTP): `payload_too_large`.
    pub max_payload_bytes: usize,
    /// Rooms one connection may have joined at once: `too_many_rooms`.
    pub max_rooms_per_connection: usize,
    /// Sustained publish/send frames per second per connection: `rate_limited`.
    pub publish_rate_per_second: u32,
    /// Token-bucket burst for publish/send frames.
    pub publish_burst: u32,
    /// Frames an outbound queue may hold before the connection is closed with 4008.
    pub outbound_queue_frames: usize,
    /// Bytes an outbound queue may hold before the connection is closed with 4008.
    pub outbound_queue_bytes: usize,
    /// Open WebSocket connections this gateway accepts; 0 means no limit.
    pub max_connections: usize,
    /// How long a slow consumer's 4008 close may take to be written (once the
    /// client reads what its socket holds) and answered; then the socket is dropped.
    pub slow_close_timeout_ms: u64,
    /// Connections in the HTTP phase (not upgraded) per listener; more are
    /// answered 503 and closed at accept. 0 means no limit.
    pub max_http_connections: usize,
    /// How long a client may take to send an HTTP request's headers, and
    /// then again its whole body.
    pub http_read_timeout_ms: u64,
}

/// WebSocket wire options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Websocket {
    /// Negotiate permessage-deflate (RFC 7692) with clients that offer it.
    pub compression: bool,
    /// Messages whose payload is smaller than this many bytes go uncompressed
    /// (compressed alone, without a shared window, they would barely shrink).
    pub compression_threshold: usize,
}

impl Default for Websocket {
    fn default() -> Self {
        Self {
            compression: false,
            compression_threshold: 1024,
        }
    }
}

/// Authentication settings. With no JWT key every client is anonymous.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// HS256 shared secret.
    pub jwt_secret: Option<String>,
    /// PEM public key (RSA for RS256, EC P-256 for ES256).
    pub jwt_public_key: Option<String>,
    /// Required `iss` claim, when set.
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim, when set.
    pub jwt_audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub jwt_leeway_seconds: u64,
    /// Bearer key of the HTTP API; without one the API is open.
    pub api_key: Option<String>,
    /// Browser origins allowed to upgrade; empty allows every origin.
    pub allowed_origins: Vec<String>,
}

/// NATS connection settings. `url` empty means the in-process bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Nats {
    /// Server URLs; several (comma-separated) for a NATS cluster. Empty: in-process bus.
    pub url: Vec<String>,
    /// Subject namespace: gateways with the same cluster name form one cluster.
    pub cluster_name: String,
    /// Token authentication.
    pub token: Option<String>,
    /// User/password authentication: the user.
    pub user: Option<String>,
    /// User/password authentication: the password.
    pub password: Option<String>,
    /// A `.creds` file (JWT + NKey seed).
    pub credentials_file: Option<PathBuf>,
    /// CA certificate (PEM) to verify the servers with.
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub tls_cert_file: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    pub tls_key_file: Option<PathBuf>,
    /// Require TLS even for `nats://` URLs.
    pub tls_required: bool,
    /// How long presence and join confirmations wait for other gateways.
    pub request_timeout_ms: u64,
    /// Replicas of each JetStream history stream: 1 for a single nats-server,
    /// 3 for a NATS cluster (at most 5, JetStream's own bound).
    pub history_replicas: u8,
    /// JetStream streams per namespace with history; rooms are spread over
    /// them (the same on every gateway: changing it loses history).
    pub history_shards: u32,
    /// Where the history streams keep messages: `file` or `memory`.
    pub history_storage: String,
    /// How long one JetStream request may take before history rooms
    /// answer `unavailable`.
    pub history_timeout_ms: u64,
}

impl Default for Nats {
    fn default() -> Self {
        Self {
            url: Vec::new(),
            cluster_name: "roomcast".into(),
            token: None,
            user: None,
            password: None,
            credentials_file: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_required: false,
            request_timeout_ms: 1000,
            history_replicas: 1,
            history_shards: 8,
            history_storage: "file".into(),
            history_timeout_ms: 5_000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            node_name: String::new(),
            heartbeat_ms: 25_000,
            drain_seconds: 30,
            write_delay_ms: 0,
            io_uring: true,
            log_level: "info".into(),
            log_format: LogFormat::Text,
            limits: Limits::default(),
            websocket: Websocket::default(),
            auth: Auth::default(),
            nats: Nats::default(),
            namespaces: Vec::new(),
            polling: Polling::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 64 * 1024,
            max_payload_bytes: 64 * 1024,
            max_rooms_per_connection: 256,
            publish_rate_per_second: 200,
            publish_burst: 400,
            outbound_queue_frames: 4096,
            outbound_queue_bytes: 16 * 1024 * 1024,
            max_connections: 0,
            slow_close_timeout_ms: 30_000,
            max_http_connections: 4096,
            http_read_timeout_ms: 10_000,
        }
    }
}

/// (De)serializes a field through its text form (`FromStr`/`Display`).
mod as_text {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr<Err: Display>,
        D: Deserializer<'de>,
    {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

/// How a flag or environment value becomes a configuration value.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// Taken verbatim as a string (secrets, names, addresses).
    Text,
    /// Read as a number or a boolean when it is one, else as a string (the
    /// field's type then names what it wanted).
    Scalar,
    /// Comma-separated list of strings.
    List,
    /// A list whose items contain commas: a repeatable flag, `;`-separated
    /// in the variable.
    Specs,
}

/// One configurable option: its YAML path, how to read it, and its help text.
struct Opt {
    path: &'static str,
    kind: Kind,
    help: &'static str,
    /// The flag when it is not derived from the path (a repeatable flag is
    /// named for one item).
    flag: Option<&'static str>,
}

const fn opt(path: &'static str, kind: Kind, help: &'static str) -> Opt {
    Opt {
        path,
        kind,
        help,
        flag: None,
    }
}

impl Opt {
    /// The option's flag, without the leading `--`.
    fn flag(&self) -> String {
        self.flag
            .map_or_else(|| flag_name(self.path), str::to_owned)
    }
}

/// Largest `write_delay_ms`: the delay is a latency every message pays.
pub const MAX_WRITE_DELAY_MS: u64 = 1000;

/// Every option, in `--help` order.
const OPTIONS: &[Opt] = &[
    opt(
        "listen",
        Kind::Text,
        "Public listen address (WebSocket, HTTP API, demo page); its accept queue holds 4,096 completed connections (capped by `net.core.somaxconn`)",
    ),
    opt(
        "admin_listen",
        Kind::Text,
        "Admin listen address (/metrics, /healthz, /readyz, /drain)",
    ),
    opt(
        "node_name",
        Kind::Text,
        "Gateway name sent in welcome.node (empty: the host name)",
    ),
    opt(
        "heartbeat_ms",
        Kind::Scalar,
        "Server ping interval in ms; peers silent for two intervals are closed",
    ),
    opt(
        "drain_seconds",
        Kind::Scalar,
        "Seconds over which a drain spreads its 1012 closes",
    ),
    opt(
        "write_delay_ms",
        Kind::Scalar,
        "Ms a frame may wait to share a socket write with those after it (0: at once; max 1000)",
    ),
    opt(
        "io_uring",
        Kind::Scalar,
        "Write a fan-out's frames to 64 sockets per system call with io_uring (sendmsg where refused)",
    ),
    opt(
        "log_level",
        Kind::Text,
        "Log filter, e.g. info or roomcast_gateway=debug",
    ),
    opt(
        "log_format",
        Kind::Text,
        "Log line format: text, or json (one object per line)",
    ),
    opt(
        "limits.max_frame_bytes",
        Kind::Scalar,
        "Largest client frame in bytes (larger: close 1009)",
    ),
    opt(
        "limits.max_payload_bytes",
        Kind::Scalar,
        "Largest publish/send data in bytes (payload_too_large)",
    ),
    opt(
        "limits.max_rooms_per_connection",
        Kind::Scalar,
        "Rooms one connection may join (too_many_rooms)",
    ),
    opt(
        "limits.publish_rate_per_second",
        Kind::Scalar,
        "Publish/send frames per second per connection (rate_limited)",
    ),
    opt(
        "limits.publish_burst",
        Kind::Scalar,
        "Publish/send token-bucket burst per connection",
    ),
    opt(
        "limits.outbound_queue_frames",
        Kind::Scalar,
        "Outbound queue length in frames (overflow: close 4008)",
    ),
    opt(
        "limits.outbound_queue_bytes",
        Kind::Scalar,
        "Outbound queue size in bytes (overflow: close 4008)",
    ),
    opt(
        "limits.max_connections",
        Kind::Scalar,
        "Open WebSocket connections accepted, 0 for no limit",
    ),
    opt(
        "limits.slow_close_timeout_ms",
        Kind::Scalar,
        "Time a 4008 close frame may take to be read and answered by a stalled client",
    ),
    opt(
        "limits.max_http_connections",
        Kind::Scalar,
        "Connections not yet upgraded, per listener; more get 503 at accept (0: no limit)",
    ),
    opt(
        "limits.http_read_timeout_ms",
        Kind::Scalar,
        "Time for an HTTP request's headers, then for its body (late body: 408)",
    ),
    opt(
        "websocket.compression",
        Kind::Scalar,
        "Negotiate permessage-deflate with clients that offer it (a bare flag means true)",
    ),
    opt(
        "websocket.compression_threshold",
        Kind::Scalar,
        "Messages under this many payload bytes go uncompressed",
    ),
    opt(
        "auth.jwt_secret",
        Kind::Text,
        "HS256 secret; enables JWT verification",
    ),
    opt(
        "auth.jwt_public_key",
        Kind::Text,
        "PEM public key (RS256 or ES256); enables JWT verification",
    ),
    opt("auth.jwt_issuer", Kind::Text, "Required JWT iss claim"),
    opt("auth.jwt_audience", Kind::Text, "Required JWT aud claim"),
    opt(
        "auth.jwt_leeway_seconds",
        Kind::Scalar,
        "Clock skew allowed on exp and nbf, in seconds",
    ),
    opt(
        "auth.api_key",
        Kind::Text,
        "Bearer key required by the HTTP API (every /v1/ request: publish, send, broadcast, disconnect, unsubscribe, presence)",
    ),
    opt(
        "auth.allowed_origins",
        Kind::List,
        "Comma-separated browser origins allowed to upgrade (empty: any)",
    ),
    opt(
        "nats.url",
        Kind::List,
        "NATS server URLs, comma-separated (empty: in-process bus, no cluster)",
    ),
    opt(
        "nats.cluster_name",
        Kind::Text,
        "Subject namespace; gateways with the same name form one cluster",
    ),
    opt("nats.token", Kind::Text, "NATS token authentication"),
    opt("nats.user", Kind::Text, "NATS user (with nats.password)"),
    opt(
        "nats.password",
        Kind::Text,
        "NATS password (with nats.user)",
    ),
    opt(
        "nats.credentials_file",
        Kind::Text,
        "NATS .creds file (JWT and NKey seed)",
    ),
    opt(
        "nats.tls_ca_file",
        Kind::Text,
        "PEM CA certificate to verify NATS servers",
    ),
    opt(
        "nats.tls_cert_file",
        Kind::Text,
        "PEM client certificate for NATS mutual TLS",
    ),
    opt(
        "nats.tls_key_file",
        Kind::Text,
        "PEM client key for NATS mutual TLS",
    ),
    opt(
        "nats.tls_required",
        Kind::Scalar,
        "Require TLS to NATS even for nats:// URLs",
    ),
    opt(
        "nats.request_timeout_ms",
        Kind::Scalar,
        "How long presence and join confirmation wait for other gateways",
    ),
    opt(
        "nats.history_replicas",
        Kind::Scalar,
        "Replicas of each JetStream history stream (1 to 5; 3 for a NATS cluster)",
    ),
    opt(
        "nats.history_shards",
        Kind::Scalar,
        "JetStream streams per namespace with history (1 to 1024; same on every gateway)",
    ),
    opt(
        "nats.history_storage",
        Kind::Text,
        "History stream storage: file or memory",
    ),
    opt(
        "nats.history_timeout_ms",
        Kind::Scalar,
        "How long a JetStream request may take before history rooms answer unavailable",
    ),
    Opt {
        path: "namespaces",
        kind: Kind::Specs,
        help: "Namespace options NAME:option=value,... (repeatable; ';' between specs in the variable)",
        flag: Some("namespace"),
    },
];

/// A configuration that could not be loaded; the message names the field.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Loads the configuration from the process's flags, environment and the
    /// file named by `--config`/`ROOMCAST_CONFIG`. Exits on `--help`/`--version`.
    pub fn load() -> Result<Self, ConfigError> {
        Self::load_from(std::env::args_os())
    }

    /// Like [`Config::load`] with explicit arguments (the first is the program name).
    /// Environment variables are still read from the process.
    pub fn load_from<I, T>(args: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let env: BTreeMap<String, String> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with("ROOMCAST_"))
            .collect();
        let matches = parse_args(args)?;
        let path = matches
            .get_one::<PathBuf>("config")
            .cloned()
            .or_else(|| env.get(CONFIG_ENV).map(PathBuf::from));
        let file = match &path {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))?,
            ),
            None => None,
        };
        let label = path.map(|p| format!("config file {}", p.display()));
        resolve(&matches, &env, file.as_deref().zip(label.as_deref()))
    }

    /// The loader without I/O: `args` (the first is the program name; a
    /// `--config` among them is ignored, `file` stands for it), `ROOMCAST_*`
    /// variables as given in `env`, and the text of the YAML file, if any.
    /// Precedence and checks are those of [`Config::load`].
    pub fn from_sources<I, T>(
        args: I,
        env: &BTreeMap<String, String>,
        file: Option<&str>,
    ) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = parse_args(args)?;
        resolve(&matches, env, file.map(|text| (text, "config file")))
    }

    /// Checks the rules the types cannot express, naming the offending field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("heartbeat_ms", self.heartbeat_ms as usize),
            ("limits.max_frame_bytes", self.limits.max_frame_bytes),
            ("limits.max_payload_bytes", self.limits.max_payload_bytes),
            (
                "limits.max_rooms_per_connection",
                self.limits.max_rooms_per_connection,
            ),
            (
                "limits.publish_rate_per_second",
                self.limits.publish_rate_per_second as usize,
            ),
            ("limits.publish_burst", self.limits.publish_burst as usize),
            (
                "limits.slow_close_timeout_ms",
                self.limits.slow_close_timeout_ms as usize,
            ),
            (
                "limits.http_read_timeout_ms",
                self.limits.http_read_timeout_ms as usize,
            ),
            (
                "limits.outbound_queue_frames",
                self.limits.outbound_queue_frames,
            ),
            (
                "limits.outbound_queue_bytes",
                self.limits.outbound_queue_bytes,
            ),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(ConfigError(format!(
                    "{field} must be greater than 0 (got 0)"
                )));
            }
        }
        if self.write_delay_ms > MAX_WRITE_DELAY_MS {
            return Err(ConfigError(format!(
                "write_delay_ms must be at most {MAX_WRITE_DELAY_MS} (got {})",
                self.write_delay_ms
            )));
        }
        if self.limits.max_frame_bytes < 256 {
            return Err(ConfigError(format!(
                "limits.max_frame_bytes must be at least 256 (got {})",
                self.limits.max_frame_bytes
            )));
        }
        if self.auth.jwt_secret.is_some() && self.auth.jwt_public_key.is_some() {
            return Err(ConfigError(
                "auth.jwt_secret and auth.jwt_public_key are exclusive: set one".into(),
            ));
        }
        if self.auth.jwt_secret.as_deref() == Some("") {
            return Err(ConfigError("auth.jwt_secret must not be empty".into()));
        }
        if self.auth.api_key.as_deref() == Some("") {
            return Err(ConfigError("auth.api_key must not be empty".into()));
        }
        self.validate_nats()?;
        self.validate_history()?;
        self.namespace_options()?;
        if let Some(origin) = self
            .auth
            .allowed_origins
            .iter()
            .find(|o| o.trim().is_empty())
        {
            return Err(ConfigError(format!(
                "auth.allowed_origins has an empty entry ({origin:?})"
            )));
        }
        Ok(())
    }

    fn validate_nats(&self) -> Result<(), ConfigError> {
        let nats = &self.nats;
        if nats.request_timeout_ms == 0 {
            return Err(ConfigError(
                "nats.request_timeout_ms must be greater than 0 (got 0)".into(),
            ));
        }
        if !(1..=5).contains(&nats.history_replicas) {
            return Err(ConfigError(format!(
                "nats.history_replicas must be between 1 and 5 (got {})",
                nats.history_replicas
            )));
        }
        if !is_subject_token(&nats.cluster_name) {
            return Err(ConfigError(format!(
                "nats.cluster_name must be a NATS subject token of letters, digits, '_' or '-' (got {:?})",
                nats.cluster_name
            )));
        }
        if nats.user.is_some() != nats.password.is_some() {
            return Err(ConfigError(
                "nats.user and nats.password go together: set both or neither".into(),
            ));
        }
        if nats.tls_cert_file.is_some() != nats.tls_key_file.is_some() {
            return Err(ConfigError(
                "nats.tls_cert_file and nats.tls_key_file go together: set both or neither".into(),
            ));
        }
        if let Some(url) = nats.url.iter().find(|u| !valid_nats_url(u)) {
            return Err(ConfigError(format!(
                "nats.url has {url:?}, which is not a nats://, tls:// or host:port address"
            )));
        }
        Ok(())
    }

    fn validate_history(&self) -> Result<(), ConfigError> {
        let nats = &self.nats;
        if !(1..=1024).contains(&nats.history_shards) {
            return Err(ConfigError(format!(
                "nats.history_shards must be between 1 and 1024 (got {})",
                nats.history_shards
            )));
        }
        if !matches!(nats.history_storage.as_str(), "file" | "memory") {
            return Err(ConfigError(format!(
                "nats.history_storage must be file or memory (got {:?})",
                nats.history_storage
            )));
        }
        if nats.history_timeout_ms == 0 {
            return Err(ConfigError(
                "nats.history_timeout_ms must be greater than 0 (got 0)".into(),
            ));
        }
        Ok(())
    }

    /// The options of every namespace; a namespace configured twice is an error.
    pub fn namespace_options(&self) -> Result<Namespaces, ConfigError> {
        Namespaces::from_specs(self.namespaces.iter().cloned())
            .map_err(|e| ConfigError(format!("namespaces: {e}")))
    }

    /// The node name to announce: the configured one, else the host name.
    pub fn node(&self) -> String {
        if !self.node_name.is_empty() {
            return self.node_name.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "roomcast".into())
    }
}

/// Whether `token` can stand as one NATS subject token: non-empty, and only
/// letters, digits, `_` and `-` (no `.`, `*`, `>` or whitespace).
fn is_subject_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `url` looks like a NATS server address (`nats://host:port`,
/// `tls://…`, or bare `host:port`), optionally with credentials.
fn valid_nats_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("nats://")
        .or_else(|| url.strip_prefix("tls://"))
        .or_else(|| url.strip_prefix("ws://"))
        .or_else(|| url.strip_prefix("wss://"))
        .unwrap_or(url);
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    !host.is_empty() && !host.contains(['/', ' ', ','])
}

/// The flag of an option: `limits.max_frame_bytes` → `limits-max-frame-bytes`.
fn flag_name(path: &str) -> String {
    path.replace(['.', '_'], "-")
}

/// The environment variable of an option: `limits.max_frame_bytes` →
/// `ROOMCAST_LIMITS_MAX_FRAME_BYTES`.
pub fn env_name(path: &str) -> String {
    format!("ROOMCAST_{}", path.replace('.', "_").to_uppercase())
}

/// The variable naming the configuration file.
const CONFIG_ENV: &str = "ROOMCAST_CONFIG";

/// The clap command, built from [`OPTIONS`] with each default and variable
/// shown in `--help`. It parses arguments only: variables are applied by the
/// loader, from the environment it is given.
pub fn command() -> Command {
    let defaults = defaults_tree();
    let mut cmd = Command::new("roomcast-gateway")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Roomcast real-time gateway: WebSocket rooms, direct messages and presence.")
        .after_help(
            "Precedence: flags > ROOMCAST_* environment > --config file > defaults.\n\
             Every option's YAML path is its flag with '-' read as '.' between sections \
             and '_' within names; see docs/configuration.md.",
        )
        .arg(
            Arg::new("config")
                .long("config")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help(format!("YAML configuration file [env: {CONFIG_ENV}]")),
        );
    for option in OPTIONS {
        let default = describe_default(lookup(&defaults, option.path));
        cmd = cmd.arg(
            Arg::new(option.path)
                .long(option.flag())
                .action(if option.kind == Kind::Specs {
                    ArgAction::Append
                } else {
                    ArgAction::Set
                })
                .value_name("VALUE")
                // A switch that is off by default may be given bare (`--websocket-compression`).
                .num_args(if is_off_switch(&defaults, option.path) {
                    0..=1
                } else {
                    1..=1
                })
                .default_missing_value("true")
                .help(format!(
                    "{} [env: {}] [default: {default}]",
                    option.help,
                    env_name(option.path)
                )),
        );
    }
    cmd
}

fn parse_args<I, T>(args: I) -> Result<ArgMatches, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match command().try_get_matches_from(args) {
        Ok(matches) => Ok(matches),
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            e.exit()
        }
        Err(e) => Err(ConfigError(e.to_string().trim().to_owned())),
    }
}

/// Merges the sources over the defaults, each checked where it applies, then
/// validates the result. `file` is the YAML text and how to name it.
fn resolve(
    matches: &ArgMatches,
    env: &BTreeMap<String, String>,
    file: Option<(&str, &str)>,
) -> Result<Config, ConfigError> {
    let config = match file {
        Some((text, label)) => {
            parse_file(text).map_err(|e| ConfigError(format!("{label}: {e}")))?
        }
        None => Config::default(),
    };
    let mut tree = serde_json::to_value(&config).map_err(|e| ConfigError(e.to_string()))?;
    let mut config = config;
    for option in OPTIONS {
        let name = env_name(option.path);
        if let Some(raw) = env.get(&name) {
            let source = format!("{name}={raw:?} ({})", option.path);
            config = apply(&mut tree, option, raw, &source)?;
        }
    }
    for option in OPTIONS {
        let raw = match option.kind {
            // Every occurrence of a repeatable flag, one spec each.
            Kind::Specs => matches
                .get_many::<String>(option.path)
                .map(|specs| specs.map(String::as_str).collect::<Vec<_>>().join(";")),
            _ => matches.get_one::<String>(option.path).cloned(),
        };
        if let Some(raw) = raw {
            let source = format!("--{} {raw:?} ({})", option.flag(), option.path);
            config = apply(&mut tree, option, &raw, &source)?;
        }
    }
    config.validate()?;
    Ok(config)
}

/// Reads a configuration file; an empty one (or only comments) means defaults.
fn parse_file(text: &str) -> Result<Config, String> {
    serde_saphyr::from_str::<Option<Config>>(text)
        .map(Option::unwrap_or_default)
        .map_err(|e| e.to_string())
}

/// Sets one option in `tree` and reads the configuration back, so a value
/// of the wrong type is reported against `source` (the flag or variable).
fn apply(tree: &mut Value, option: &Opt, raw: &str, source: &str) -> Result<Config, ConfigError> {
    set_path(tree, option.path, to_value(option.kind, raw));
    serde_json::from_value(tree.clone()).map_err(|e| ConfigError(format!("{source}: {e}")))
}

fn defaults_tree() -> Value {
    serde_json::to_value(Config::default()).unwrap_or(Value::Null)
}

fn describe_default(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "none".into(),
        Some(Value::String(s)) if s.is_empty() => "\"\"".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) if items.is_empty() => "[]".into(),
        Some(other) => other.to_string(),
    }
}

/// Whether an option is a boolean that defaults to false.
fn is_off_switch(defaults: &Value, path: &str) -> bool {
    lookup(defaults, path) == Some(&Value::Bool(false))
}

fn lookup<'a>(tree: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(tree, |node, key| node.get(key))
}

fn to_value(kind: Kind, raw: &str) -> Value {
    match kind {
        Kind::Text => Value::String(raw.to_owned()),
        Kind::Specs => Value::Array(
            crate::namespace::split_env(raw)
                .map(|s| Value::String(s.to_owned()))
                .collect(),
        ),
        Kind::List => Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_owned()))
                .collect(),
        ),
        // A scalar that does not read as one stays a string, so the type
        // check reports it against the option's name.
        Kind::Scalar => match serde_json::from_str::<Value>(raw.trim()) {
            Ok(v @ (Value::Number(_) | Value::Bool(_))) => v,
            _ => Value::String(raw.to_owned()),
        },
    }
}

/// Sets `path` in `tree` (a mapping of mappings, as the defaults make it).
fn set_path(tree: &mut Value, path: &str, value: Value) {
    let mut node = tree;
    let mut keys = path.split('.').peekable();
    while let Some(key) = keys.next() {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        let Value::Object(map) = node else {
            return;
        };
        if keys.peek().is_none() {
            map.insert(key.to_owned(), value);
            return;
        }
        node = map
            .entry(key.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

/// Markdown table of every option, its flag, environment variable and default;
/// docs/configuration.md embeds it and a test keeps the two in sync.
pub fn options_markdown() -> String {
    let defaults = defaults_tree();
    let mut out = String::from(
        "| YAML path | flag | environment | default | meaning |\n|---|---|---|---|---|\n",
    );
    out.push_str("| (none) | `--config` | `ROOMCAST_CONFIG` | none | YAML configuration file |\n");
    for option in OPTIONS {
        out.push_str(&format!(
            "| `{}` | `--{}` | `{}` | `{}` | {} |\n",
            option.path,
            option.flag(),
            env_name(option.path),
            describe_default(lookup(&defaults, option.path)),
            option.help
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_option_exists_in_the_config_type() {
        let defaults = defaults_tree();
        for option in OPTIONS {
            assert!(lookup(&defaults, option.path).is_some(), "{}", option.path);
        }
    }

    #[test]
    fn names_derive_from_the_path() {
        assert_eq!(
            flag_name("limits.max_frame_bytes"),
            "limits-max-frame-bytes"
        );
        assert_eq!(
            env_name("limits.max_frame_bytes"),
            "ROOMCAST_LIMITS_MAX_FRAME_BYTES"
        );
    }

    #[test]
    fn websocket_compression_is_a_switch_from_every_source() {
        let none = BTreeMap::new();
        let off = Config::from_sources(["gw"], &none, None).unwrap();
        assert!(!off.websocket.compression, "off by default");
        assert_eq!(off.websocket.compression_threshold, 1024);
        let bare = Config::from_sources(["gw", "--websocket-compression"], &none, None).unwrap();
        assert!(bare.websocket.compression);
        let explicit = Config::from_sources(
            [
                "gw",
                "--websocket-compression",
                "false",
                "--heartbeat-ms",
                "50",
            ],
            &none,
            None,
        )
        .unwrap();
        assert!(!explicit.websocket.compression);
        assert_eq!(explicit.heartbeat_ms, 50);
        let env = BTreeMap::from([
            (
                "ROOMCAST_WEBSOCKET_COMPRESSION".to_owned(),
                "true".to_owned(),
            ),
            (
                "ROOMCAST_WEBSOCKET_COMPRESSION_THRESHOLD".to_owned(),
                "64".to_owned(),
            ),
        ]);
        let c = Config::from_sources(["gw"], &env, None).unwrap();
        assert!(c.websocket.compression);
        assert_eq!(c.websocket.compression_threshold, 64);
        let c = Config::from_sources(
            ["gw"],
            &none,
            Some("websocket:\n  compression: true\n  compression_threshold: 0\n"),
        )
        .unwrap();
        assert!(c.websocket.compression);
        assert_eq!(c.websocket.compression_threshold, 0);
        let bad = BTreeMap::from([(
            "ROOMCAST_WEBSOCKET_COMPRESSION".to_owned(),
            "maybe".to_owned(),
        )]);
        let err = Config::from_sources(["gw"], &bad, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("websocket.compression"), "{err}");
    }

    #[test]
    fn flags_override_defaults() {
        let c = Config::load_from([
            "gw",
            "--limits-max-frame-bytes",
            "1024",
            "--heartbeat-ms",
            "50",
        ])
        .unwrap();
        assert_eq!(c.limits.max_frame_bytes, 1024);
        assert_eq!(c.heartbeat_ms, 50);
        assert_eq!(c.limits.max_rooms_per_connection, 256);
    }

    #[test]
    fn io_uring_is_on_by_default_and_can_be_turned_off_from_every_source() {
        let none = BTreeMap::new();
        assert!(Config::default().io_uring);
        let flag = Config::from_sources(["gw", "--io-uring", "false"], &none, None).unwrap();
        assert!(!flag.io_uring);
        let env = BTreeMap::from([("ROOMCAST_IO_URING".into(), "false".into())]);
        assert!(!Config::from_sources(["gw"], &env, None).unwrap().io_uring);
        let file = Config::from_sources(["gw"], &none, Some("io_uring: false\n")).unwrap();
        assert!(!file.io_uring);
        let err = Config::from_sources(["gw", "--io-uring", "maybe"], &none, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("io_uring"), "{err}");
    }

    #[test]
    fn the_write_delay_comes_from_flag_env_or_file_and_is_bounded() {
        assert_eq!(Config::default().write_delay_ms, 0, "off by default");
        let env = |v: &str| BTreeMap::from([("ROOMCAST_WRITE_DELAY_MS".into(), v.into())]);
        let none = BTreeMap::new();
        let flag = Config::from_sources(["gw", "--write-delay-ms", "5"], &none, None).unwrap();
        assert_eq!(flag.write_delay_ms, 5);
        let var = Config::from_sources(["gw"], &env("7"), None).unwrap();
        assert_eq!(var.write_delay_ms, 7);
        let file = Config::from_sources(["gw"], &none, Some("write_delay_ms: 9\n")).unwrap();
        assert_eq!(file.write_delay_ms, 9);
        let err = Config::from_sources(["gw", "--write-delay-ms", "1001"], &none, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("write_delay_ms must be at most 1000"), "{err}");
        let err = Config::from_sources(["gw"], &env("soon"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ROOMCAST_WRITE_DELAY_MS"), "{err}");
    }

    #[test]
    fn lists_split_on_commas() {
        let c = Config::load_from([
            "gw",
            "--auth-allowed-origins",
            "https://a.example, https://b.example",
        ])
        .unwrap();
        assert_eq!(
            c.auth.allowed_origins,
            vec!["https://a.example", "https://b.example"]
        );
    }

    #[test]
    fn text_options_stay_strings() {
        let c = Config::load_from(["gw", "--auth-jwt-secret", "12345"]).unwrap();
        assert_eq!(c.auth.jwt_secret.as_deref(), Some("12345"));
    }

    #[test]
    fn log_format_is_text_or_json() {
        let c = Config::load_from(["gw", "--log-format", "json"]).unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(
            Config::load_from(["gw"]).unwrap().log_format,
            LogFormat::Text
        );
        let err = Config::load_from(["gw", "--log-format", "xml"]).unwrap_err();
        assert!(err.to_string().contains("log_format"), "{err}");
    }

    #[test]
    fn a_bad_value_names_its_field() {
        let err = Config::load_from(["gw", "--limits-max-frame-bytes", "lots"]).unwrap_err();
        assert!(err.to_string().contains("limits.max_frame_bytes"), "{err}");
        let err = Config::load_from(["gw", "--listen", "nowhere"]).unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
        let err = Config::load_from(["gw", "--limits-outbound-queue-frames", "0"]).unwrap_err();
        assert!(
            err.to_string().contains("limits.outbound_queue_frames"),
            "{err}"
        );
    }

    #[test]
    fn file_sits_between_defaults_and_flags() {
        let dir = std::env::temp_dir().join(format!("roomcast-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("gw.yaml");
        std::fs::write(
            &file,
            "heartbeat_ms: 700\nlimits:\n  max_rooms_per_connection: 3\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let c = Config::load_from(["gw", "--config", path, "--heartbeat-ms", "900"]).unwrap();
        assert_eq!(c.heartbeat_ms, 900, "flag beats file");
        assert_eq!(c.limits.max_rooms_per_connection, 3, "file beats default");
        std::fs::write(&file, "limits:\n  max_rooms_per_conection: 3\n").unwrap();
        let err = Config::load_from(["gw", "--config", path]).unwrap_err();
        assert!(err.to_string().contains("max_rooms_per_conection"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// docs/configuration.md embeds the generated option table. To refresh it:
    /// `ROOMCAST_BLESS=1 cargo test -p roomcast-gateway --lib config`.
    #[test]
    fn the_documented_options_are_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let (begin, end) = (
            "(generated from gateway/src/config.rs; a test keeps it in sync) -->\n",
            "<!-- options:end -->",
        );
        let start = doc.find(begin).expect("begin marker") + begin.len();
        let stop = doc.find(end).expect("end marker");
        let expected = options_markdown();
        if doc[start..stop] != expected {
            if std::env::var_os("ROOMCAST_BLESS").is_some() {
                std::fs::write(path, format!("{}{expected}{}", &doc[..start], &doc[stop..]))
                    .unwrap();
            } else {
                panic!(
                    "docs/configuration.md is stale; run ROOMCAST_BLESS=1 cargo test -p roomcast-gateway --lib config"
                );
            }
        }
    }

    #[test]
    fn nats_settings_are_checked() {
        let c = Config::load_from([
            "gw",
            "--nats-url",
            "nats://a:4222,tls://b:4223",
            "--nats-cluster-name",
            "prod-1",
        ])
        .unwrap();
        assert_eq!(c.nats.url, ["nats://a:4222", "tls://b:4223"]);
        for (flag, value, field) in [
            ("--nats-cluster-name", "a.b", "nats.cluster_name"),
            ("--nats-cluster-name", "*", "nats.cluster_name"),
            ("--nats-url", "nats://a b", "nats.url"),
            ("--nats-user", "u", "nats.password"),
            ("--nats-request-timeout-ms", "0", "nats.request_timeout_ms"),
            ("--nats-history-replicas", "0", "nats.history_replicas"),
            ("--nats-history-replicas", "7", "nats.history_replicas"),
            ("--nats-history-replicas", "300", "nats.history_replicas"),
            ("--nats-history-shards", "0", "nats.history_shards"),
            ("--nats-history-storage", "disk", "nats.history_storage"),
            ("--nats-history-timeout-ms", "0", "nats.history_timeout_ms"),
        ] {
            let err = Config::load_from(["gw", flag, value]).unwrap_err();
            assert!(err.to_string().contains(field), "{flag} {value}: {err}");
        }
    }

    #[test]
    fn a_bad_value_names_its_flag_or_variable_not_a_line() {
        let env = BTreeMap::new();
        let err = Config::from_sources(["gw", "--limits-max-frame-bytes", "lots"], &env, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--limits-max-frame-bytes \"lots\" (limits.max_frame_bytes)"),
            "{err}"
        );
        assert!(!err.contains("line"), "{err}");
        let env = BTreeMap::from([("ROOMCAST_HEARTBEAT_MS".to_owned(), "-5".to_owned())]);
        let err = Config::from_sources(["gw"], &env, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ROOMCAST_HEARTBEAT_MS=\"-5\" (heartbeat_ms)"),
            "{err}"
        );
        let err = Config::from_sources(
            ["gw"],
            &BTreeMap::new(),
            Some("limits:\n  publish_burst: many\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("config file") && err.contains("publish_burst"),
            "{err}"
        );
    }

    #[test]
    fn namespaces_come_from_a_repeatable_flag_the_variable_or_the_file() {
        let flags = Config::from_sources(
            [
                "gw",
                "--namespace",
                "chat:history_size=200,history_ttl_seconds=600",
                "--namespace",
                "feed:client_publish=false",
                "--namespace",
                ":history_size=50",
            ],
            &BTreeMap::new(),
            None,
        )
        .unwrap();
        let ns = flags.namespace_options().unwrap();
        assert_eq!(ns.get("chat").history_size, 200);
        assert_eq!(ns.get("chat").history_ttl_seconds, 600);
        assert!(!ns.for_room("feed:1").client_publish);
        assert_eq!(ns.for_room("lobby").history_size, 50);

        let env = BTreeMap::from([(
            "ROOMCAST_NAMESPACES".to_owned(),
            "chat:history_size=200,history_ttl_seconds=600; feed:client_publish=false".to_owned(),
        )]);
        let from_env = Config::from_sources(["gw"], &env, None).unwrap();
        assert_eq!(from_env.namespaces, flags.namespaces[..2]);

        let file = "namespaces:\n  - 'chat:history_size=200,history_ttl_seconds=600'\n  - 'feed:client_publish=false'\n";
        let from_file = Config::from_sources(["gw"], &BTreeMap::new(), Some(file)).unwrap();
        assert_eq!(from_file.namespaces, from_env.namespaces);
        let flag_wins =
            Config::from_sources(["gw", "--namespace", "x:"], &env, Some(file)).unwrap();
        assert_eq!(flag_wins.namespaces.len(), 1, "flags replace the list");
    }

    #[test]
    fn a_bad_namespace_names_the_option_and_where_it_came_from() {
        let e = Config::load_from(["gw", "--namespace", "chat:histroy_size=5"]).unwrap_err();
        assert!(
            e.0.contains("--namespace") && e.0.contains("histroy_size"),
            "{e}"
        );
        let env = BTreeMap::from([(
            "ROOMCAST_NAMESPACES".to_owned(),
            "chat:history_size=1;chat:client_publish=false".to_owned(),
        )]);
        let e = Config::from_sources(["gw"], &env, None).unwrap_err();
        assert!(e.0.contains("\"chat\" configured twice"), "{e}");
        let e = Config::from_sources(
            ["gw"],
            &BTreeMap::new(),
            Some("namespaces: ['feed:client_publish=maybe']\n"),
        )
        .unwrap_err();
        assert!(
            e.0.contains("client_publish") && e.0.contains("maybe"),
            "{e}"
        );
    }

    #[test]
    fn from_sources_layers_file_env_and_flags_without_io() {
        let env = BTreeMap::from([
            ("ROOMCAST_NODE_NAME".to_owned(), "from-env".to_owned()),
            (
                "ROOMCAST_NATS_URL".to_owned(),
                "nats://a:4222,nats://b:4222".to_owned(),
            ),
            ("ROOMCAST_LOG_FORMAT".to_owned(), "json".to_owned()),
            ("UNRELATED".to_owned(), "x".to_owned()),
        ]);
        let file =
            "node_name: from-file\nheartbeat_ms: 700\nlimits:\n  max_rooms_per_connection: 3\n";
        let c = Config::from_sources(["gw", "--heartbeat-ms", "900"], &env, Some(file)).unwrap();
        assert_eq!(c.node_name, "from-env", "env beats the file");
        assert_eq!(c.heartbeat_ms, 900, "flag beats the file");
        assert_eq!(c.limits.max_rooms_per_connection, 3, "file beats defaults");
        assert_eq!(c.nats.url, ["nats://a:4222", "nats://b:4222"]);
        assert_eq!(c.log_format, LogFormat::Json);
        let empty = Config::from_sources(["gw"], &BTreeMap::new(), Some("# nothing\n")).unwrap();
        assert_eq!(empty, Config::default(), "an empty file means defaults");
    }

    #[test]
    fn exclusive_keys_are_rejected() {
        let mut c = Config::default();
        c.auth.jwt_secret = Some("s".into());
        c.auth.jwt_public_key = Some("k".into());
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("auth.jwt_public_key")
        );
    }
}
