//! Helpers shared by the integration tests (each test file uses a subset).
#![allow(dead_code)]

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Runs a test body with a deadline, so a hung watch or command fails instead of stalling the suite.
pub async fn bounded<F: Future<Output = ()>>(limit: Duration, body: F) {
    tokio::time::timeout(limit, body)
        .await
        .expect("test exceeded its deadline");
}

/// A kube-rs client configured from the stand-in's kubeconfig, as the operator builds one.
pub async fn client(standin: &kube_standin::Running) -> Client {
    let kubeconfig = Kubeconfig::from_yaml(&standin.kubeconfig).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig loads");
    Client::try_from(config).expect("client builds")
}

/// One HTTP/1.1 request over a fresh connection; returns (status code, body).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, String) {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: standin\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.expect("write head");
    conn.write_all(body.as_bytes()).await.expect("write body");
    let mut response = String::new();
    conn.read_to_string(&mut response)
        .await
        .expect("read response");
    let code = response
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}
