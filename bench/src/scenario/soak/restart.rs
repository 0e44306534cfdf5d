//! The nats-server restart in the middle of the soak: stop the running
//! server (SIGTERM, SIGKILL if it lingers), stay down a moment, start the
//! same binary on the same loopback port as this process's child.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep, timeout};

use crate::BenchError;
use crate::procstat::has_exited;

/// How long a stop or a start may take.
const STEP: Duration = Duration::from_secs(10);

/// The nats-server the soak restarts.
#[derive(Debug, Clone)]
pub struct NatsControl {
    /// The running server's pid.
    pub pid: u32,
    /// Its binary, to start it again.
    pub binary: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Where the new server's output goes (nowhere when `None`).
    pub log: Option<PathBuf>,
}

/// Sends `signal` (`TERM`, `KILL`) to `pid` with kill(1).
async fn signal(pid: u32, signal: &str) -> Result<(), BenchError> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await?;
    if status.success() || has_exited(pid) {
        Ok(())
    } else {
        Err(BenchError::new(format!("kill -{signal} {pid} failed")))
    }
}

/// Waits until `pid` has exited, at most `limit`; whether it did.
async fn exited(pid: u32, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while !has_exited(pid) {
        if Instant::now() >= until {
            return false;
        }
        sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Stops `pid`: SIGTERM, then SIGKILL if it is still there after [`STEP`].
pub async fn stop(pid: u32) -> Result<(), BenchError> {
    signal(pid, "TERM").await?;
    if exited(pid, STEP).await {
        return Ok(());
    }
    signal(pid, "KILL").await?;
    if exited(pid, STEP).await {
        Ok(())
    } else {
        Err(BenchError::new(format!("process {pid} survived SIGKILL")))
    }
}

/// Starts nats-server on 127.0.0.1:`port` and waits until it accepts
/// connections; the child is killed if dropped.
pub async fn start(ctl: &NatsControl) -> Result<Child, BenchError> {
    let output = match &ctl.log {
        Some(path) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
        None => Stdio::null(),
    };
    let mut child = Command::new(&ctl.binary)
        .args(["-a", "127.0.0.1", "-p", &ctl.port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(output)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| BenchError::new(format!("cannot start {}: {e}", ctl.binary.display())))?;
    let until = Instant::now() + STEP;
    loop {
        if let Ok(Ok(_)) = timeout(STEP, TcpStream::connect(("127.0.0.1", ctl.port))).await {
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(BenchError::new(format!(
                "the restarted nats-server exited: {status}"
            )));
        }
        if Instant::now() >= until {
            let _ = child.start_kill();
            return Err(BenchError::new(format!(
                "the restarted nats-server did not listen on port {} within {STEP:?}",
                ctl.port
            )));
        }
        sleep(Duration::from_millis(20)).await;
    }
}

/// Stops a server this process started (SIGTERM, then SIGKILL).
pub async fn stop_child(mut child: Child) {
    if let Some(pid) = child.id() {
        let _ = signal(pid, "TERM").await;
    }
    if timeout(STEP, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}
