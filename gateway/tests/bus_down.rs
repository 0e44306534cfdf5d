//! A gateway whose cluster bus is unreachable: it still runs and answers
//! health checks, reports not ready, and refuses bus-dependent work with
//! `unavailable` (WebSocket) or 503 (HTTP API) instead of losing it silently.

mod common;

use common::{STEP, get_status, start_with, within};
use serde_json::json;

/// A loopback address where nothing listens: bound, then released.
fn dead_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local address");
    drop(listener);
    format!("nats://{addr}")
}

#[tokio::test]
async fn an_unreachable_bus_makes_the_gateway_unready_and_frames_unavailable() {
    within(30, async {
        let url = dead_address();
        let gw = start_with(|c| c.nats.url = vec![url]).await;
        assert_eq!(get_status(&gw.admin_url("/healthz")).await, 200);
        let readyz = gw.admin_url("/readyz");
        common::eventually(STEP, "readyz 503 while the bus is down", || async {
            (get_status(&readyz).await == 503).then_some(())
        })
        .await;
        let mut c = gw.client().await;
        c.ok(json!({"type": "ping"})).await;
        for frame in [
            json!({"type": "join", "room": "r"}),
            json!({"type": "publish", "room": "r", "data": 1}),
            json!({"type": "send", "to": "u", "data": 1}),
            json!({"type": "presence", "room": "r"}),
        ] {
            c.err(frame, "unavailable").await;
        }
        let (status, body) = gw
            .post(
                "/v1/publish",
                &json!({"room": "r", "data": 1}).to_string(),
                None,
            )
            .await;
        assert_eq!(status, 503, "{body}");
        let (status, body) = gw
            .post("/v1/send", &json!({"to": "u", "data": 1}).to_string(), None)
            .await;
        assert_eq!(status, 503, "{body}");
        gw.stop().await;
    })
    .await;
}
