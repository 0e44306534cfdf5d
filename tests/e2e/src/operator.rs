//! The real `roomcast-operator` binary as a subprocess, scoped to the test's namespace, with
//! its `/metrics` endpoint found from its log and its log kept for failure messages.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::admin;
use crate::binaries;
use crate::cluster::Cluster;

/// How long start-up may take.
const START: Duration = Duration::from_secs(30);

/// Operator flags the tests vary.
#[derive(Clone, Debug)]
pub struct Options {
    /// `--identity` (also `POD_NAME`, which names the events' reporting instance).
    pub identity: String,
    /// `--sync-period-seconds`.
    pub sync_period_seconds: u64,
    /// `--leader-election`.
    pub leader_election: bool,
    /// `--drain-deadline-seconds`.
    pub drain_deadline_seconds: u64,
}

impl Options {
    /// Operator `identity`: 1 s syncs, no leader election, 60 s drain deadline.
    pub fn new(identity: &str) -> Self {
        Self {
            identity: identity.to_string(),
            sync_period_seconds: 1,
            leader_election: false,
            drain_deadline_seconds: 60,
        }
    }
}

/// A running operator process (killed on drop).
pub struct Operator {
    /// Its identity.
    pub identity: String,
    /// Its `/metrics` and `/healthz` address.
    pub metrics: SocketAddr,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Operator {
    /// Starts the operator against `cluster`, watching only the test's namespace, with the
    /// Lease `roomcast-operator` in that namespace (4 s duration, 1 s retry).
    pub async fn start(cluster: &Cluster, options: &Options) -> Self {
        let bin = binaries::operator().await;
        let mut child = Command::new(&bin)
            .env("KUBECONFIG", &cluster.kubeconfig)
            .env("POD_NAME", &options.identity)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .args(["--metrics-host", "127.0.0.1", "--metrics-port", "0"])
            .args(["--namespace", &cluster.namespace])
            .args(["--lease-namespace", &cluster.namespace])
            .args([
                "--lease-duration-seconds",
                "4",
                "--lease-retry-seconds",
                "1",
            ])
            .args([
                "--sync-period-seconds",
                &options.sync_period_seconds.to_string(),
            ])
            .args([
                "--leader-election",
                if options.leader_election {
                    "true"
                } else {
                    "false"
                },
            ])
            .args([
                "--drain-deadline-seconds",
                &options.drain_deadline_seconds.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = oneshot::channel();
        // The address line may come on either stream (logs go to stderr).
        let addr_tx = Arc::new(Mutex::new(Some(addr_tx)));
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(follow(stdout, log.clone(), addr_tx.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(follow(stderr, log.clone(), addr_tx));
        }
        let metrics = match tokio::time::timeout(START, addr_rx).await {
            Ok(Ok(addr)) => addr,
            _ => panic!(
                "operator {} did not report its metrics address:\n{}",
                options.identity,
                tail(&log)
            ),
        };
        Self {
            identity: options.identity.clone(),
            metrics,
            child,
            log,
        }
    }

    /// The operator's own metric `name` (exact sample name), if it answers.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (status, body) = admin::request(self.metrics, "GET", "/metrics").await.ok()?;
        (status == 200).then_some(())?;
        admin::sample(&body, name)
    }

    /// Whether some line of its log contains every one of `parts`.
    pub fn logged(&self, parts: &[&str]) -> bool {
        self.log
            .lock()
            .is_ok_and(|l| l.iter().any(|line| parts.iter().all(|p| line.contains(p))))
    }

    /// The last lines of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }

    /// SIGKILL: a crash, nothing released.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM and wait for the exit (the leader releases its Lease).
    pub async fn terminate(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

fn tail(log: &Mutex<Vec<String>>) -> String {
    log.lock()
        .map(|l| l[l.len().saturating_sub(40)..].join("\n"))
        .unwrap_or_default()
}

/// Reads the address from `... metrics and health endpoint listening addr=127.0.0.1:PORT`.
/// Collects an output stream's lines into `log`, sending the metrics address
/// on `addr_tx` the first time a line reports it.
async fn follow(
    stream: impl tokio::io::AsyncRead + Unpin,
    log: Arc<Mutex<Vec<String>>>,
    addr_tx: Arc<Mutex<Option<oneshot::Sender<SocketAddr>>>>,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(addr) = parse_metrics_addr(&line)
            && let Some(tx) = addr_tx.lock().ok().and_then(|mut tx| tx.take())
        {
            let _ = tx.send(addr);
        }
        if let Ok(mut log) = log.lock() {
            log.push(line);
        }
    }
}

fn parse_metrics_addr(line: &str) -> Option<SocketAddr> {
    let plain = strip_ansi(line);
    let (_, rest) = plain.split_once("metrics and health endpoint listening")?;
    let (_, value) = rest.split_once("addr=")?;
    value.split_whitespace().next()?.parse().ok()
}

/// Removes terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::parse_metrics_addr;

    #[test]
    fn reads_the_metrics_address_plain_or_coloured() {
        let plain = "2026-11-23T08:00:00Z  INFO roomcast_operator: metrics and health endpoint listening addr=127.0.0.1:4321";
        assert_eq!(
            parse_metrics_addr(plain).map(|a| a.to_string()).as_deref(),
            Some("127.0.0.1:4321")
        );
        let coloured = "\u{1b}[32m INFO\u{1b}[0m metrics and health endpoint listening \u{1b}[3maddr\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:55";
        assert_eq!(
            parse_metrics_addr(coloured)
                .map(|a| a.to_string())
                .as_deref(),
            Some("127.0.0.1:55")
        );
        assert_eq!(parse_metrics_addr("leading: starting the controller"), None);
    }
}
