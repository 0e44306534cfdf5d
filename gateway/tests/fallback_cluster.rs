//! The HTTP fallbacks across gateways on one real nats-server, with no
//! sticky sessions: a session opened on one gateway is driven entirely
//! through the other (every request forwarded over the bus and answered as
//! if local), a token of another `sub` is 401 there too, and a session whose
//! gateway is gone is a quick 404.

mod common;
mod nats;

use std::time::Duration;

use common::fallback::Session;
use common::{TestGateway, within};
use nats::{NatsServer, gateway_with, token, user};
use serde_json::json;

/// Two gateways (gw-a, gw-b) with short poll timings, discovered.
async fn pair(server: &NatsServer) -> (TestGateway, TestGateway) {
    let short = |c: &mut roomcast_gateway::Config| {
        c.polling.wait = Duration::from_millis(800);
        c.polling.expiry = Duration::from_secs(5);
    };
    let a = gateway_with("gw-a", vec![server.url()], short).await;
    let b = gateway_with("gw-b", vec![server.url()], short).await;
    nats::discover(&[&a, &b]).await;
    (a, b)
}

/// Drives `session` (held by `a`) through `b` alone: join, publish, receive
/// from a WebSocket member on `a`, presence, ping.
async fn driven_through(a: &TestGateway, b: &TestGateway, mut session: Session) {
    assert_eq!(session.welcome["node"], "gw-a");
    session.base = b.url("");
    let mut ws = user(a, "walt").await;
    ws.join("across").await;
    session.ok(json!({"type": "join", "room": "across"})).await;
    session
        .ok(json!({"type": "publish", "room": "across", "data": "via b"}))
        .await;
    assert_eq!(ws.recv_type("message").await["data"], "via b");
    ws.send_json(json!({"type": "publish", "room": "across", "data": "from a"}))
        .await;
    loop {
        let message = session.recv_type("message").await;
        if message["data"] == "from a" {
            assert_eq!(message["from"], "walt");
            break;
        }
    }
    let presence = session
        .ok(json!({"type": "presence", "room": "across"}))
        .await;
    let members = presence["members"].as_array().expect("members");
    assert!(members.contains(&json!("walt")), "{presence}");
    assert!(members.contains(&json!(session.user())), "{presence}");
    assert!(session.ok(json!({"type": "ping"})).await["ts"].is_u64());
}

#[tokio::test]
async fn a_polling_session_is_driven_entirely_through_the_other_gateway() {
    within(60, async {
        let server = NatsServer::start().await;
        let (a, b) = pair(&server).await;
        let session = Session::poll(&a.url(""), Some(&token("pat"))).await;
        driven_through(&a, &b, session).await;
    })
    .await;
}

#[tokio::test]
async fn an_sse_session_takes_its_frames_through_the_other_gateway() {
    within(60, async {
        let server = NatsServer::start().await;
        let (a, b) = pair(&server).await;
        let session = Session::sse(&a.url(""), Some(&token("sam"))).await;
        driven_through(&a, &b, session).await;
    })
    .await;
}

#[tokio::test]
async fn forwarded_requests_check_the_sub_and_gone_sessions_are_a_quick_404() {
    within(60, async {
        let server = NatsServer::start().await;
        let (a, b) = pair(&server).await;
        let mut session = Session::poll(&a.url(""), Some(&token("owner"))).await;
        let b_base = b.url("");
        session.token = Some(token("intruder"));
        let (status, answer) = session.poll_once_at(&b_base).await;
        assert_eq!(
            (status, &answer["code"]),
            (401, &json!("unauthorized")),
            "{answer}"
        );
        let (status, _) = session
            .post_raw_to(&b_base, json!({"type": "ping"}).to_string())
            .await;
        assert_eq!(status, 401);
        session.token = Some(token("owner"));
        // A well-formed id on a route no gateway serves.
        let mut stranger = Session::poll(&b_base, Some(&token("owner"))).await;
        stranger.id = format!(
            "{}{}{}",
            &session.id[..16],
            "0123456789abcdef",
            &session.id[32..]
        );
        let started = tokio::time::Instant::now();
        let (status, _) = stranger.poll_once_at(&b_base).await;
        assert_eq!(status, 404);
        // Not waiting for a holder takes well under the poll wait plus the
        // request timeout (5.8 s) that waiting would take, loaded or not.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "no holder answers at once: {:?}",
            started.elapsed()
        );
        // The holder goes away (its bus connection closes, as when a pod
        // dies): its sessions are 404 from the other gateway.
        a.stop().await;
        common::eventually(common::STEP, "gw-a's NATS connection closes", || async {
            (server.monitor("/connz").await["num_connections"] == 1).then_some(())
        })
        .await;
        let started = tokio::time::Instant::now();
        let (status, answer) = session.poll_once_at(&b_base).await;
        assert_eq!(status, 404, "{answer}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "a gone holder is a quick 404: {:?}",
            started.elapsed()
        );
    })
    .await;
}
