//! The real binary on SIGTERM: `/readyz` turns 503, new upgrades are refused,
//! every connection is closed with 1012 within the drain period, exit 0.

mod common;

use std::time::{Duration, Instant};

use common::binary::{self, spawn};
use common::{Client, Connect, STEP, get_status, within};
use serde_json::json;

#[tokio::test]
async fn sigterm_drains_with_1012_and_exits_zero() {
    within(30, async {
        let drain = 2u64;
        let mut cmd = binary::command();
        cmd.args([
            "--drain-seconds",
            &drain.to_string(),
            "--heartbeat-ms",
            "1000",
        ]);
        cmd.args(["--node-name", "drain-test"]);
        let mut gw = spawn(cmd).await;
        let ws = format!("ws://{}/ws", gw.public);
        let admin = |path: &str| format!("http://{}{path}", gw.admin);
        assert_eq!(get_status(&admin("/readyz")).await, 200);
        let mut clients = Vec::new();
        for _ in 0..4 {
            let mut c = Client::connect(&ws, &Connect::default())
                .await
                .expect("upgrade before the drain");
            assert_eq!(c.welcome["node"], "drain-test");
            c.join("before-drain").await;
            clients.push(c);
        }
        gw.sigterm().await;
        let started = Instant::now();
        // The process keeps serving admin requests while it drains.
        let readyz = admin("/readyz");
        common::eventually(STEP, "readyz 503 after SIGTERM", || async {
            (get_status(&readyz).await == 503).then_some(())
        })
        .await;
        match Client::connect(&ws, &Connect::default()).await {
            Ok(c) => panic!("upgrade accepted while draining: {}", c.welcome),
            Err(e) => assert_eq!(common::refusal_status(&e), 503),
        }
        for c in &mut clients {
            assert_eq!(c.wait_close(STEP).await, Some(1012), "drain close code");
        }
        let status = gw.wait_exit(Duration::from_secs(drain + 3)).await;
        assert!(status.success(), "exit status {status:?}");
        assert!(
            started.elapsed() <= Duration::from_secs(drain + 2),
            "drained and exited in about the drain period: {:?}",
            started.elapsed()
        );
    })
    .await;
}

#[tokio::test]
async fn sigterm_with_no_connections_exits_zero_promptly() {
    within(20, async {
        let mut cmd = binary::command();
        cmd.args(["--drain-seconds", "2"]);
        let mut gw = spawn(cmd).await;
        // Prove it is serving before the signal.
        let mut c = Client::connect(&format!("ws://{}/ws", gw.public), &Connect::default())
            .await
            .expect("upgrade");
        c.ok(json!({"type": "ping"})).await;
        c.close().await;
        gw.sigterm().await;
        let status = gw.wait_exit(Duration::from_secs(5)).await;
        assert!(status.success(), "exit status {status:?}");
    })
    .await;
}
