//! A real `roomcast-gateway` process on one loopback address, standing in for a pod, and the
//! WebSocket clients that give it a real `roomcast_connections`.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::admin;
use crate::binaries;
use crate::wait::eventually;

/// How long start-up, connecting or a count change may take.
const STEP: Duration = Duration::from_secs(20);

/// One gateway process and the clients connected to it.
pub struct Gateway {
    /// Node name (the pod's name).
    pub name: String,
    /// WebSocket listener.
    pub public: SocketAddr,
    /// Admin listener (`/metrics`, `/readyz`, `POST /drain`).
    pub admin: SocketAddr,
    child: Child,
    clients: Vec<JoinHandle<()>>,
}

impl Gateway {
    /// Starts a gateway on `ip` (free ports, in-process bus, 1 s drain) and waits until it
    /// serves.
    pub async fn start(name: &str, ip: Ipv4Addr) -> Self {
        let bin = binaries::gateway().await;
        let mut child = Command::new(&bin)
            .args(["--listen", &format!("{ip}:0")])
            .args(["--admin-listen", &format!("{ip}:0")])
            .args(["--node-name", name, "--drain-seconds", "1"])
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stderr = child
            .stderr
            .take()
            .unwrap_or_else(|| panic!("gateway stderr not piped"));
        let mut lines = BufReader::new(stderr).lines();
        let (public, admin) = tokio::time::timeout(STEP, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addrs) = parse_listening(&line) {
                    return addrs;
                }
            }
            panic!("gateway {name} exited before listening");
        })
        .await
        .unwrap_or_else(|_| panic!("gateway {name} did not start within {STEP:?}"));
        // Keep reading so the pipe never fills.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            name: name.to_string(),
            public,
            admin,
            child,
            clients: Vec::new(),
        }
    }

    /// Opens `n` WebSocket connections (each past its welcome) and waits until the gateway
    /// counts them.
    pub async fn connect(&mut self, n: usize) {
        let url = format!("ws://{}/ws", self.public);
        for _ in 0..n {
            let (mut ws, _) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(&url))
                .await
                .unwrap_or_else(|_| panic!("connecting to {url} timed out"))
                .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
            // The welcome proves the session is up.
            let _ = tokio::time::timeout(STEP, ws.next()).await;
            // Reading answers the server's pings; dropping the task closes the socket.
            self.clients.push(tokio::spawn(async move {
                while let Some(Ok(_)) = ws.next().await {}
            }));
        }
        self.wait_connections(self.clients.len() as u64).await;
    }

    /// Drops `n` connections and waits until the gateway counts the rest.
    pub async fn disconnect(&mut self, n: usize) {
        for client in self.clients.drain(..n.min(self.clients.len())) {
            client.abort();
        }
        self.wait_connections(self.clients.len() as u64).await;
    }

    /// Waits until `roomcast_connections` reads `n`.
    pub async fn wait_connections(&self, n: u64) {
        let what = format!("{} to count {n} connections", self.name);
        eventually(&what, STEP, || async {
            (admin::connections(self.admin).await == Some(n)).then_some(())
        })
        .await;
    }

    /// `GET /readyz` status, `None` when it does not answer.
    pub async fn readyz(&self) -> Option<u16> {
        admin::status(self.admin, "/readyz").await
    }

    /// Stops the process (SIGKILL), as a deleted pod's container.
    pub async fn stop(mut self) {
        for client in self.clients.drain(..) {
            client.abort();
        }
        let _ = self.child.kill().await;
    }
}

/// Reads `roomcast-gateway listening public=A admin=B node=N`.
fn parse_listening(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.strip_prefix("roomcast-gateway listening ")?;
    let mut public = None;
    let mut admin = None;
    for field in rest.split_whitespace() {
        if let Some(v) = field.strip_prefix("public=") {
            public = v.parse().ok();
        } else if let Some(v) = field.strip_prefix("admin=") {
            admin = v.parse().ok();
        }
    }
    Some((public?, admin?))
}

#[cfg(test)]
mod tests {
    use super::parse_listening;

    #[test]
    fn reads_the_listening_line() {
        let (p, a) = parse_listening(
            "roomcast-gateway listening public=127.0.1.2:4000 admin=127.0.1.2:4001 node=p1",
        )
        .unwrap();
        assert_eq!(p.to_string(), "127.0.1.2:4000");
        assert_eq!(a.to_string(), "127.0.1.2:4001");
        assert_eq!(parse_listening("something else"), None);
        assert_eq!(parse_listening("roomcast-gateway listening public=x"), None);
    }
}
