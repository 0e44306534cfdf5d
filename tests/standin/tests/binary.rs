//! The `kube-standin` binary: binds, writes the kubeconfig, announces its address, serves.

mod common;

use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test]
async fn binary_announces_address_and_writes_kubeconfig() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let path = std::env::temp_dir().join(format!(
            "kube-standin-binary-{}.kubeconfig",
            std::process::id()
        ));
        let mut child = Command::new(env!("CARGO_BIN_EXE_kube-standin"))
            .args(["--listen", "127.0.0.1:0", "--kubeconfig-out"])
            .arg(&path)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("binary starts");
        let stdout = child.stdout.take().expect("piped");
        let first = BufReader::new(stdout)
            .lines()
            .next_line()
            .await
            .expect("read")
            .expect("a line");
        let url = first
            .strip_prefix("kube-standin listening ")
            .expect("announcement")
            .to_string();
        let addr = url.strip_prefix("http://").expect("http url");
        let kubeconfig = std::fs::read_to_string(&path).expect("kubeconfig written");
        assert!(
            kubeconfig.contains(&format!("server: {url}")),
            "{kubeconfig}"
        );

        let addr = addr.parse().expect("socket address");
        let (code, body) = common::request(addr, "GET", "/version", "application/json", "").await;
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("\"gitVersion\""), "{body}");

        // SIGTERM stops it cleanly.
        let pid = child.id().expect("running").to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("kill runs");
        assert!(status.success());
        let exit = child.wait().await.expect("exits");
        assert!(exit.success(), "{exit:?}");
        let _ = std::fs::remove_file(&path);
    })
    .await
    .expect("test exceeded its deadline");
}

#[tokio::test]
async fn binary_rejects_unknown_flags() {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(env!("CARGO_BIN_EXE_kube-standin"))
            .arg("--bogus")
            .arg("1")
            .output(),
    )
    .await
    .expect("in time")
    .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown flag"));
}
