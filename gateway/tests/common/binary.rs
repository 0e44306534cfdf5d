//! The real `roomcast-gateway` binary as a child process: started with flags
//! and a clean `ROOMCAST_*`- and `OTEL_*`-free environment, its addresses read from the
//! `listening` line on stderr, and signalled with `kill`.

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::STEP;

/// Path of the binary Cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_roomcast-gateway");

/// A `Command` for the binary with no `ROOMCAST_*` or `OTEL_*` variable
/// inherited (an `OTEL_*` one would turn OTLP export on).
pub fn command() -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("ROOMCAST_") || key_text.starts_with("OTEL_") {
            cmd.env_remove(key);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// A running gateway process.
pub struct Process {
    /// The child; killed if the test drops it early.
    pub child: Child,
    /// Public listener.
    pub public: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
    /// The node name it announced.
    pub node: String,
    /// Everything it printed on stderr so far.
    pub log: Arc<Mutex<String>>,
}

/// Spawns `cmd` with `--listen`/`--admin-listen` on port 0 added and waits
/// for its `listening` line.
pub async fn spawn(mut cmd: Command) -> Process {
    cmd.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]);
    spawn_as_is(cmd).await
}

/// Spawns `cmd` unchanged and waits for its `listening` line.
pub async fn spawn_as_is(mut cmd: Command) -> Process {
    let mut child = cmd.spawn().expect("spawn roomcast-gateway");
    let stderr = child.stderr.take().expect("piped stderr");
    let log = Arc::new(Mutex::new(String::new()));
    let mut lines = BufReader::new(stderr).lines();
    let listening = tokio::time::timeout(STEP * 2, async {
        while let Ok(Some(line)) = lines.next_line().await {
            log.lock().expect("log lock").push_str(&format!("{line}\n"));
            if line.contains("roomcast-gateway listening") {
                return Some(line);
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    let Some(line) = listening else {
        panic!(
            "no `listening` line; stderr so far:\n{}",
            log.lock().expect("log lock")
        );
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    let sink = Arc::clone(&log);
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            sink.lock()
                .expect("log lock")
                .push_str(&format!("{line}\n"));
        }
    });
    let field = |name: &str| -> String {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")).map(str::to_owned))
            .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
    };
    Process {
        public: field("public").parse().expect("public address"),
        admin: field("admin").parse().expect("admin address"),
        node: field("node"),
        child,
        log,
    }
}

impl Process {
    /// Sends SIGTERM with the `kill` command.
    pub async fn sigterm(&self) {
        let pid = self.child.id().expect("child still running");
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// Waits for the process to exit within `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.expect("wait for child"),
            Err(_) => panic!(
                "gateway still running after {limit:?}; stderr:\n{}",
                self.log.lock().expect("log lock")
            ),
        }
    }
}

/// Runs the binary to completion (for `--help` and start-up failures) and
/// returns its status, stdout and stderr.
pub async fn run_to_end(mut cmd: Command) -> (ExitStatus, String, String) {
    let out = tokio::time::timeout(STEP * 2, cmd.output())
        .await
        .expect("binary exits in time")
        .expect("run roomcast-gateway");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
