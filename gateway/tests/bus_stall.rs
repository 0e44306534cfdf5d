//! A NATS server that stalls rather than dies: frozen with SIGSTOP, its TCP
//! connections stay open and accept bytes, but nothing is answered. The
//! gateways' health probes notice: `/readyz` turns 503 within 5 s, publishes
//! answer `unavailable` (503 on the HTTP API) instead of being held, and
//! once the server runs again readiness is back within 2 s and delivery
//! resumes without rejoining.

mod common;
mod nats;

use std::time::{Duration, Instant};

use common::{eventually, get_status, within};
use nats::{NatsServer, discover, gateway, metric, user};
use serde_json::json;

/// Waits until every gateway's `/readyz` answers `status`, failing once
/// `limit` has passed since `since`.
async fn all_ready_status(
    gws: &[&common::TestGateway],
    status: u16,
    since: Instant,
    limit: Duration,
) {
    for gw in gws {
        let url = gw.admin_url("/readyz");
        let left = limit.saturating_sub(since.elapsed());
        eventually(
            left,
            &format!(
                "/readyz {status} on {} within {limit:?}",
                gw.config.node_name
            ),
            || async { (get_status(&url).await == status).then_some(()) },
        )
        .await;
    }
}

#[tokio::test]
async fn a_frozen_bus_turns_readiness_off_within_5s_and_on_within_2s_of_answering() {
    within(90, async {
        let nats = NatsServer::start().await;
        let a = gateway("gw-a", vec![nats.url()]).await;
        let b = gateway("gw-b", vec![nats.url()]).await;
        discover(&[&a, &b]).await;
        let mut alice = user(&a, "alice").await;
        let mut bob = user(&b, "bob").await;
        bob.join("stall").await;
        {
            let _frozen = nats.freeze();
            let stalled = Instant::now();
            all_ready_status(&[&a, &b], 503, stalled, Duration::from_secs(5)).await;
            for gw in [&a, &b] {
                assert_eq!(metric(gw, "roomcast_bus_up").await, 0.0);
            }
            // Publishes are refused at once, not held for a frozen server.
            let asked = Instant::now();
            alice
                .err(
                    json!({"type": "publish", "room": "stall", "data": "held?"}),
                    "unavailable",
                )
                .await;
            assert!(
                asked.elapsed() < Duration::from_secs(1),
                "{:?}",
                asked.elapsed()
            );
            let (status, body) = a
                .post(
                    "/v1/publish",
                    &json!({"room": "stall", "data": "held?"}).to_string(),
                    None,
                )
                .await;
            assert_eq!(status, 503, "{body}");
            assert_eq!(body["code"], "unavailable", "{body}");
        }
        let thawed = Instant::now();
        all_ready_status(&[&a, &b], 200, thawed, Duration::from_secs(2)).await;
        for gw in [&a, &b] {
            assert_eq!(metric(gw, "roomcast_bus_up").await, 1.0);
        }
        // Nothing refused during the stall arrives late; new publishes do.
        alice
            .ok(json!({"type": "publish", "room": "stall", "data": "thawed"}))
            .await;
        assert_eq!(bob.recv_type("message").await["data"], "thawed");
        for gw in [a, b] {
            gw.stop().await;
        }
    })
    .await;
}
