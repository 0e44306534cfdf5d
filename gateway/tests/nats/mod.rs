//! Real `nats-server` processes for the cluster tests: one server or a routed
//! cluster on free loopback ports, stopped by PID, restartable on the same
//! ports for outage tests, and read through its monitoring endpoint (routes,
//! client subscriptions) to assert interest. Also gateways attached to them and
//! a WebSocket client that keeps every frame's exact text.
//!
//! The binary is `$ROOMCAST_NATS_SERVER`, else `<workspace>/.tools/bin/nats-server`
//! (installed by `scripts/install-deps`), else `nats-server` on `PATH`.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod scenarios;

use std::collections::BTreeSet;
use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::common::{self, Client, Connect, STEP, TestGateway, eventually, get_status, http, jwt};

/// How long a server may take to come up, or a cluster to form its routes.
pub const BOOT: Duration = Duration::from_secs(10);

/// The `nats-server` binary the tests run. Fails the test, never skips it,
/// when there is none.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ROOMCAST_NATS_SERVER") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "ROOMCAST_NATS_SERVER={} is not a file; unset it or run scripts/install-deps",
            path.display()
        );
        return path;
    }
    let local = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../.tools/bin/nats-server"
    ));
    if local.is_file() {
        return local.to_path_buf();
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|p| p.is_file())
    });
    on_path.unwrap_or_else(|| {
        panic!(
            "nats-server not found (ROOMCAST_NATS_SERVER unset, no {}, none on PATH): \
             run scripts/install-deps",
            local.display()
        )
    })
}

/// The ports a server listens on, as its ports file reports them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ports {
    /// Client connections.
    pub client: u16,
    /// HTTP monitoring.
    pub monitor: u16,
    /// Route connections, for a cluster member.
    pub cluster: Option<u16>,
}

/// Parses the JSON ports file nats-server writes with `--ports_file_dir`:
/// `{"nats":["nats://127.0.0.1:P"],"monitoring":["http://127.0.0.1:M"],"cluster":[…]}`.
pub fn parse_ports(text: &str) -> Option<Ports> {
    let v: Value = serde_json::from_str(text).ok()?;
    let port = |key: &str| -> Option<u16> {
        let url = v.get(key)?.get(0)?.as_str()?;
        url.rsplit_once(':')?.1.parse().ok()
    };
    Some(Ports {
        client: port("nats")?,
        monitor: port("monitoring")?,
        cluster: port("cluster"),
    })
}

/// Cluster membership of one server: its routed peers.
#[derive(Debug, Clone)]
struct Membership {
    cluster_name: String,
    routes: Vec<String>,
}

/// One `nats-server` child process. Killed (SIGKILL, by PID) when dropped.
pub struct NatsServer {
    name: String,
    child: Option<Child>,
    dir: PathBuf,
    membership: Option<Membership>,
    /// Further flags (authentication, TLS), kept for restarts.
    extra: Vec<String>,
    /// Runs JetStream (`-js`), storing in its own temp dir (kept across restarts).
    jetstream: bool,
    /// Known once the server first started; restarts reuse them.
    ports: Ports,
}

/// A loopback port that is free now, below the kernel's ephemeral range (so
/// outgoing connections never take it) and above the well-known ports.
fn free_port() -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = 10_000.min(ephemeral_low.saturating_sub(1_000));
    loop {
        let port = rand::random_range(low..ephemeral_low);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Distinguishes the temporary directories of servers in one test process.
static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

impl NatsServer {
    /// Starts a standalone server on free loopback ports and waits until it is healthy.
    pub async fn start() -> NatsServer {
        Self::start_with(&[]).await
    }

    /// Starts a standalone server with further flags, e.g. `["--auth", "s3cret"]`.
    pub async fn start_with(args: &[&str]) -> NatsServer {
        let extra = args.iter().map(|a| (*a).to_owned()).collect();
        Self::launch("n0", None, extra, false).await
    }

    /// Starts a standalone server with JetStream enabled.
    pub async fn start_jetstream() -> NatsServer {
        Self::launch("n0", None, Vec::new(), true).await
    }

    /// Starts a server that may belong to a cluster, on fresh ports.
    async fn launch(
        name: &str,
        membership: Option<Membership>,
        extra: Vec<String>,
        jetstream: bool,
    ) -> NatsServer {
        let dir = std::env::temp_dir().join(format!(
            "roomcast-nats-{}-{}-{name}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the server's temp dir");
        let mut server = NatsServer {
            name: name.to_owned(),
            child: None,
            dir,
            membership,
            extra,
            jetstream,
            // Chosen by the first spawn.
            ports: Ports {
                client: 0,
                monitor: 0,
                cluster: None,
            },
        };
        server.spawn(false).await;
        server
    }

    /// Spawns the process (on its known ports when `reuse`, else on fresh
    /// ones) and waits for its ports file and its `/healthz`.
    ///
    /// Fresh ports come from below the kernel's ephemeral range, so that no
    /// outgoing connection can take a stopped server's port before its
    /// restart. A port taken anyway is retried: with other ports at first
    /// start, with the same ones (until the holder lets go) at a restart.
    async fn spawn(&mut self, reuse: bool) {
        let deadline = tokio::time::Instant::now() + BOOT;
        loop {
            if !reuse {
                self.ports = Ports {
                    client: free_port(),
                    monitor: free_port(),
                    cluster: self.membership.as_ref().map(|_| free_port()),
                };
            }
            match self.try_spawn().await {
                Ok(child) => {
                    self.child = Some(child);
                    break;
                }
                Err(log) => {
                    assert!(
                        log.contains("address already in use")
                            && tokio::time::Instant::now() < deadline,
                        "nats-server {} did not start:\n{log}",
                        self.name
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        // A clustered JetStream is not healthy until its peers form a meta
        // group: at boot only ask whether the server itself is up.
        let health = if self.jetstream {
            self.monitor_url("/healthz?js-enabled-only=true")
        } else {
            self.monitor_url("/healthz")
        };
        eventually(BOOT, &format!("{} /healthz", self.name), || async {
            let ok = http().get(&health).send().await.ok()?.status() == 200;
            ok.then_some(())
        })
        .await;
    }

    /// One start on `self.ports`: the child once its ports file shows them,
    /// or what it logged if it exited.
    async fn try_spawn(&mut self) -> Result<Child, String> {
        let ports_dir = self.dir.join("ports");
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir).expect("create the ports dir");
        let logged_before = self.log().len();
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the server log");
        let mut cmd = Command::new(binary());
        cmd.args(["-a", "127.0.0.1", "-n", &self.name])
            .args(["-p", &self.ports.client.to_string()])
            .args(["-m", &self.ports.monitor.to_string()])
            .arg("--ports_file_dir")
            .arg(&ports_dir);
        if let (Some(m), Some(cluster)) = (&self.membership, self.ports.cluster) {
            cmd.args(["--cluster", &format!("nats://127.0.0.1:{cluster}")])
                .args(["--cluster_name", &m.cluster_name]);
            if !m.routes.is_empty() {
                cmd.args(["--routes", &m.routes.join(",")]);
            } else if self.jetstream {
                // A clustered JetStream needs configured routes; the seed's
                // route to itself is ignored by the server but counts.
                cmd.args(["--routes", &format!("nats://127.0.0.1:{cluster}")]);
            }
        }
        cmd.args(&self.extra);
        if self.jetstream {
            cmd.arg("-js")
                .arg("--store_dir")
                .arg(self.dir.join("jetstream"));
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary().display()));
        let ports_file = ports_dir.join(format!(
            "{}_{}.ports",
            binary()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            child.id()
        ));
        let deadline = tokio::time::Instant::now() + BOOT;
        loop {
            if child.try_wait().expect("poll nats-server").is_some() {
                return Err(self
                    .log()
                    .get(logged_before..)
                    .unwrap_or_default()
                    .to_owned());
            }
            let found = std::fs::read_to_string(&ports_file)
                .ok()
                .and_then(|t| parse_ports(&t));
            if let Some(ports) = found {
                assert_eq!(ports, self.ports, "nats-server {} ports", self.name);
                return Ok(child);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats-server {} wrote no ports file within {BOOT:?}:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The server's name (`-n`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `nats://127.0.0.1:<client port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.ports.client)
    }

    /// Its ports.
    pub fn ports(&self) -> Ports {
        self.ports
    }

    /// A URL on the monitoring listener.
    pub fn monitor_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.monitor)
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the process (SIGKILL to its PID), as a crash would, and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Suspends the process (SIGSTOP) until the guard is dropped (SIGCONT):
    /// its sockets stay open and accept bytes, but nothing is processed, as
    /// with a server that is overloaded or paused by the scheduler.
    pub fn freeze(&self) -> Frozen {
        let pid = self.child.as_ref().expect("a running server").id();
        signal(pid, "-STOP");
        let frozen = Frozen { pid };
        // A group stop takes effect thread by thread: until every thread is
        // stopped, the others still serve clients. Wait for all of them.
        let deadline = std::time::Instant::now() + STEP;
        while !frozen.all_threads_stopped() {
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server {pid} not stopped within {STEP:?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        frozen
    }

    /// Starts the server again on the same ports (and routes) after [`stop`](Self::stop).
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn(true).await;
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("nats-server.log")
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Waits until the server's log contains `needle` (e.g. a refused client).
    pub async fn wait_log(&self, needle: &str) {
        eventually(
            STEP,
            &format!("{needle:?} in the {} log", self.name),
            || async { self.log().contains(needle).then_some(()) },
        )
        .await;
    }

    /// A monitoring endpoint as JSON.
    pub async fn monitor(&self, path: &str) -> Value {
        let url = self.monitor_url(path);
        let resp = http()
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(resp.status(), 200, "GET {url}");
        resp.json()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
    }

    /// The distinct servers this one has routes to (`/routez`). Servers pool
    /// several route connections per peer, so connections are not counted.
    pub async fn route_peers(&self) -> BTreeSet<String> {
        route_peers(&self.monitor("/routez").await)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "nats-server {} log kept at {}",
                self.name,
                self.log_path().display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A suspended server; resumed when dropped, also when a test fails.
pub struct Frozen {
    pid: u32,
}

impl Frozen {
    /// Whether every thread of the process is stopped (`T` in `/proc/…/stat`).
    pub fn all_threads_stopped(&self) -> bool {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) else {
            return false;
        };
        tasks.flatten().all(|task| {
            std::fs::read_to_string(task.path().join("stat"))
                .is_ok_and(|stat| thread_state(&stat) == Some('T'))
        })
    }
}

/// The state letter of a `/proc/<pid>/task/<tid>/stat` line (after the
/// parenthesised command name, which may contain spaces).
pub fn thread_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(self.pid, "-CONT");
    }
}

/// Sends a signal to one process by PID with `kill(1)`.
fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap_or_else(|e| panic!("kill {sig} {pid}: {e}"));
    assert!(status.success(), "kill {sig} {pid}: {status}");
}

/// One client connection as `/connz?subs=1` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConn {
    /// The name the client gave in CONNECT (may be empty).
    pub name: String,
    /// Subjects it subscribed, in the server's order.
    pub subs: Vec<String>,
}

/// Reads the connections out of a `/connz?subs=1` document.
pub fn client_conns(connz: &Value) -> Vec<ClientConn> {
    let conns = connz["connections"].as_array().cloned().unwrap_or_default();
    conns
        .iter()
        .map(|c| ClientConn {
            name: c["name"].as_str().unwrap_or_default().to_owned(),
            subs: c["subscriptions_list"]
                .as_array()
                .map(|l| {
                    l.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}

/// How many subscriptions across `conns` are exactly `subject`.
pub fn count_subscribers(conns: &[ClientConn], subject: &str) -> usize {
    conns
        .iter()
        .flat_map(|c| &c.subs)
        .filter(|s| *s == subject)
        .count()
}

/// Every subscribed subject across `conns`, with multiplicity.
pub fn all_subjects(conns: &[ClientConn]) -> Vec<String> {
    let mut all: Vec<String> = conns.iter().flat_map(|c| c.subs.clone()).collect();
    all.sort();
    all
}

/// The distinct peer server ids in a `/routez` document.
pub fn route_peers(routez: &Value) -> BTreeSet<String> {
    routez["routes"]
        .as_array()
        .map(|routes| {
            routes
                .iter()
                .filter_map(|r| r["remote_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A fully routed cluster of nats-servers.
pub struct NatsCluster {
    /// The members, in start order.
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `n` routed servers (the others route to the first; the cluster
    /// gossips the full mesh) and waits until each has a route to every other.
    pub async fn start(n: usize) -> NatsCluster {
        Self::start_with(n, false).await
    }

    /// Like [`start`](Self::start), every node running JetStream (a
    /// clustered JetStream: streams may have up to `n` replicas).
    pub async fn start_jetstream(n: usize) -> NatsCluster {
        Self::start_with(n, true).await
    }

    async fn start_with(n: usize, jetstream: bool) -> NatsCluster {
        assert!(n >= 1, "a cluster has at least one node");
        let seed = Membership {
            cluster_name: "roomcast-test".into(),
            routes: Vec::new(),
        };
        let first = NatsServer::launch("n0", Some(seed.clone()), Vec::new(), jetstream).await;
        let seed_route = format!(
            "nats://127.0.0.1:{}",
            first
                .ports()
                .cluster
                .expect("a cluster member has a route port")
        );
        let mut nodes = vec![first];
        for i in 1..n {
            let membership = Membership {
                routes: vec![seed_route.clone()],
                ..seed.clone()
            };
            nodes.push(
                NatsServer::launch(&format!("n{i}"), Some(membership), Vec::new(), jetstream).await,
            );
        }
        let cluster = NatsCluster { nodes };
        cluster.wait_routed().await;
        cluster
    }

    /// Waits until every node routes to all the others.
    pub async fn wait_routed(&self) {
        let want = self.nodes.len() - 1;
        for node in &self.nodes {
            eventually(
                BOOT,
                &format!("{} routes to {want} peers", node.name),
                || async { (node.route_peers().await.len() == want).then_some(()) },
            )
            .await;
        }
    }

    /// Client URLs of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }
}

/// Where the tests read NATS interest: the client subscriptions of one
/// server or of every node of a cluster.
pub trait Interest {
    /// Every client connection with its subscriptions.
    fn clients(&self) -> impl Future<Output = Vec<ClientConn>>;

    /// How many client subscriptions are exactly `subject`.
    fn subscribers(&self, subject: &str) -> impl Future<Output = usize> {
        async move { count_subscribers(&self.clients().await, subject) }
    }

    /// Every subscribed subject, sorted, with multiplicity.
    fn subjects(&self) -> impl Future<Output = Vec<String>> {
        async move { all_subjects(&self.clients().await) }
    }
}

impl Interest for NatsServer {
    async fn clients(&self) -> Vec<ClientConn> {
        client_conns(&self.monitor("/connz?subs=1&limit=10000").await)
    }
}

impl Interest for NatsCluster {
    /// The clients of the running nodes (a stopped node has none).
    async fn clients(&self) -> Vec<ClientConn> {
        let mut all = Vec::new();
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            all.extend(node.clients().await);
        }
        all
    }
}

impl NatsCluster {
    /// The index of the running node a client named `name` is connected to.
    pub async fn node_of(&self, name: &str) -> Option<usize> {
        for (i, node) in self.nodes.iter().enumerate() {
            if node.is_running() && node.clients().await.iter().any(|c| c.name == name) {
                return Some(i);
            }
        }
        None
    }
}

/// Waits until exactly `want` client subscriptions are `subject` (an
/// unsubscribe after a disconnect is not acknowledged to anyone).
pub async fn eventually_count(nats: &impl Interest, subject: &str, want: usize) {
    eventually(
        STEP,
        &format!("{want} subscriptions to {subject}"),
        || async { (nats.subscribers(subject).await == want).then_some(()) },
    )
    .await;
}

/// A file of the committed TLS test PKI (`tests/nats/fixtures/`): `ca.pem`,
/// `server.pem`/`server-key.pem` (for 127.0.0.1), `client.pem`/`client-key.pem`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/nats/fixtures")).join(name)
}

/// Asks presence of `room` through `c` until it answers exactly `want`
/// (peers are discovered asynchronously after a gateway starts).
pub async fn eventually_members(c: &mut Client, room: &str, want: &[&str]) {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let members = scenarios::presence(c, room).await;
        if members == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "presence of {room} is {members:?}, not {want:?}, after {STEP:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The NATS subject of a room in the gateway's design: `<cluster>.room.<room>`.
pub fn room_subject(cluster: &str, room: &str) -> String {
    format!("{cluster}.room.{room}")
}

/// The cluster name (subject namespace) the test gateways use.
pub const CLUSTER: &str = "t1";

/// Starts an in-process gateway named `node` on the NATS `urls` (in the
/// [`CLUSTER`] namespace, with JWT users so one user can hold connections on
/// several gateways) and waits until it reports ready.
pub async fn gateway(node: &str, urls: Vec<String>) -> TestGateway {
    gateway_with(node, urls, |_| {}).await
}

/// Like [`gateway`], with further configuration changes.
pub async fn gateway_with(
    node: &str,
    urls: Vec<String>,
    tweak: impl FnOnce(&mut roomcast_gateway::Config),
) -> TestGateway {
    let gw = common::start_with(|c| {
        c.node_name = node.into();
        c.nats.url = urls;
        c.nats.cluster_name = CLUSTER.into();
        c.auth.jwt_secret = Some(jwt::SECRET.into());
        // Peer answers (join sync, presence) may be slow on a loaded CI machine.
        c.nats.request_timeout_ms = 5_000;
        tweak(c);
    })
    .await;
    wait_ready(&gw, 200).await;
    gw
}

/// Gateways gw-a, gw-b, … the i-th attached to the NATS URLs `attachments[i]`,
/// returned once they have discovered each other.
pub async fn gateways(attachments: Vec<Vec<String>>) -> Vec<TestGateway> {
    let mut gws = Vec::new();
    for (i, urls) in attachments.into_iter().enumerate() {
        let name = format!("gw-{}", char::from(b'a' + i as u8));
        gws.push(gateway(&name, urls).await);
    }
    discover(&gws.iter().collect::<Vec<_>>()).await;
    gws
}

/// Waits until every gateway knows every other one. Gateways discover peers
/// by hellos after they turn ready; until then a join is confirmed by the
/// local NATS server only. Probe members (one per gateway, in one room) must
/// all show in presence asked on every gateway; they leave no trace after.
pub async fn discover(gws: &[&TestGateway]) {
    let room = "peer-discovery";
    let names: Vec<String> = gws
        .iter()
        .map(|gw| format!("probe-{}", gw.config.node_name))
        .collect();
    let mut baseline = Vec::new();
    for gw in gws {
        baseline.push(metric(gw, "roomcast_bus_subscriptions").await);
    }
    let mut probes = Vec::new();
    for (gw, name) in gws.iter().zip(&names) {
        let mut probe = user(gw, name).await;
        probe.join(room).await;
        probes.push(probe);
    }
    let want: Vec<&str> = names.iter().map(String::as_str).collect();
    for probe in &mut probes {
        eventually_members(probe, room, &want).await;
    }
    for probe in probes {
        probe.close().await;
    }
    for (gw, before) in gws.iter().zip(baseline) {
        let settled =
            || async { (metric(gw, "roomcast_bus_subscriptions").await == before).then_some(()) };
        eventually(STEP, "probe subscriptions gone", settled).await;
    }
}

/// A bearer token for `user`, accepted by every test gateway.
pub fn token(user: &str) -> String {
    jwt::hs256(&jwt::claims(user))
}

/// Connects `user` to `gw`.
pub async fn user(gw: &TestGateway, user: &str) -> Client {
    let client = gw
        .try_client(&Connect::bearer(&token(user)))
        .await
        .unwrap_or_else(|e| panic!("{user} refused by {}: {e}", gw.config.node_name));
    assert_eq!(client.user(), user);
    assert_eq!(client.welcome["node"], gw.config.node_name.as_str());
    client
}

/// Waits until the gateway's `/readyz` answers `status`.
pub async fn wait_ready(gw: &TestGateway, status: u16) {
    let url = gw.admin_url("/readyz");
    eventually(
        BOOT,
        &format!("/readyz {status} on {}", gw.admin),
        || async { (get_status(&url).await == status).then_some(()) },
    )
    .await;
}

/// A metric that must be present, as a number.
pub async fn metric(gw: &TestGateway, name: &str) -> f64 {
    gw.metric(name, "")
        .await
        .unwrap_or_else(|| panic!("metric {name} missing on {}", gw.config.node_name))
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A client that returns each server frame's exact text, to prove that `data`
/// arrives byte for byte as it was sent.
pub struct TextClient {
    ws: Ws,
}

impl TextClient {
    /// Upgrades as `user` and returns the client with the welcome frame's text.
    pub async fn connect(gw: &TestGateway, user: &str) -> (TextClient, String) {
        let mut req = gw.ws_url().into_client_request().expect("ws URL");
        let bearer = HeaderValue::from_str(&format!("Bearer {}", token(user))).expect("header");
        req.headers_mut().insert("authorization", bearer);
        let (ws, _) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(req))
            .await
            .expect("upgrade answered in time")
            .expect("upgrade accepted");
        let mut client = TextClient { ws };
        let welcome = client.recv().await;
        (client, welcome)
    }

    /// Sends one text frame as is.
    pub async fn send(&mut self, text: &str) {
        tokio::time::timeout(STEP, self.ws.send(Message::text(text.to_owned())))
            .await
            .expect("send in time")
            .expect("send succeeds");
    }

    /// The next text frame.
    pub async fn recv(&mut self) -> String {
        loop {
            let msg = tokio::time::timeout(STEP, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("connection open")
                .expect("frame read");
            match msg {
                Message::Text(t) => return t.as_str().to_owned(),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }
}

/// The exact text of the `data` member of a server frame that `data` ends:
/// `{"type":"message",…,"data":<raw>}`. Uses the parser's raw value, so any
/// re-encoding by the gateway (whitespace, number spelling, escapes) shows.
pub fn raw_data(frame: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Framed<'a> {
        #[serde(borrow)]
        data: &'a serde_json::value::RawValue,
    }
    let framed: Framed<'_> =
        serde_json::from_str(frame).unwrap_or_else(|e| panic!("frame without data ({e}): {frame}"));
    framed.data.get().to_owned()
}
