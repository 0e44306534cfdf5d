//! Coalesced writes with real gateways on a real nats-server: frames that
//! arrive together leave in fewer socket writes than frames
//! (`roomcast_frame_writes_total` against `roomcast_frames_out_total`),
//! always in order, with replies never held back by `write_delay_ms`, and
//! the slow-consumer bound (4008) kept, over WebSocket and the HTTP fallbacks.

mod common;
mod nats;

use common::fallback::Session;
use common::raw::{Frame, RawClient};
use common::{Client, STEP, TestGateway, within};
use nats::{NatsServer, discover, gateway_with, metric, user};
use serde_json::json;

/// Two gateways on one nats-server; `tweak` applies to both.
async fn pair(
    tweak: impl Fn(&mut roomcast_gateway::Config),
) -> (NatsServer, TestGateway, TestGateway) {
    let server = NatsServer::start().await;
    let a = gateway_with("gw-a", vec![server.url()], &tweak).await;
    let b = gateway_with("gw-b", vec![server.url()], &tweak).await;
    discover(&[&a, &b]).await;
    (server, a, b)
}

/// Publishes `0..n` to `room` without waiting for the replies in between
/// (the publisher's frames arrive together), then takes the `n` replies.
async fn burst(publisher: &mut Client, room: &str, n: u64) {
    for i in 0..n {
        publisher
            .send_json(json!({"type": "publish", "room": room, "data": i, "id": i}))
            .await;
    }
    for i in 0..n {
        let reply = publisher.reply_to(&json!(i)).await;
        assert_eq!(reply["type"], "ok", "{reply}");
    }
}

/// Reads `0..n` in order from `member`.
async fn receive_in_order(member: &mut Client, n: u64) {
    for i in 0..n {
        let message = member.recv_type("message").await;
        assert_eq!(message["data"], i, "message {i} out of order: {message}");
    }
}

/// Frames and write calls `gw` has made to clients so far.
async fn frames_and_writes(gw: &TestGateway) -> (f64, f64) {
    (
        metric(gw, "roomcast_frames_out_total").await,
        metric(gw, "roomcast_frame_writes_total").await,
    )
}

#[tokio::test]
async fn with_a_write_delay_a_burst_from_the_bus_leaves_in_a_few_writes_in_order() {
    within(60, async {
        // Long enough that the whole burst is held; a reply is not (below).
        // The largest delay allowed: a held reply would take at least this
        // long, so the reply's bound below has all of it as slack.
        let delay = std::time::Duration::from_millis(roomcast_gateway::config::MAX_WRITE_DELAY_MS);
        let (_nats, a, b) = pair(|c| c.write_delay_ms = delay.as_millis() as u64).await;
        let room = "coalesced";
        let mut publisher = user(&a, "pub").await;
        let mut member = user(&b, "member").await;
        member.join(room).await;
        let (frames_before, writes_before) = frames_and_writes(&b).await;
        let n = 40;
        burst(&mut publisher, room, n).await;
        receive_in_order(&mut member, n).await;
        let (frames, writes) = frames_and_writes(&b).await;
        let (frames, writes) = (frames - frames_before, writes - writes_before);
        assert_eq!(frames, n as f64, "every message counted once");
        assert!(
            writes * 5.0 <= frames,
            "{frames} frames took {writes} writes: not coalesced"
        );
        // A reply is written at once, not held for the delay.
        let started = std::time::Instant::now();
        member.ok(json!({"type": "ping"})).await;
        assert!(
            started.elapsed() < delay,
            "a reply waited {:?}, as long as the {delay:?} write delay",
            started.elapsed()
        );
        member.expect_quiet().await;
    })
    .await;
}

#[tokio::test]
async fn without_a_delay_bursts_from_the_bus_and_locally_arrive_whole_and_in_order() {
    within(60, async {
        let (_nats, a, b) = pair(|_| {}).await;
        let room = "burst";
        let mut publisher = user(&a, "pub").await;
        let mut near = user(&a, "near").await;
        let mut far = user(&b, "far").await;
        near.join(room).await;
        far.join(room).await;
        let n = 200;
        burst(&mut publisher, room, n).await;
        receive_in_order(&mut near, n).await;
        receive_in_order(&mut far, n).await;
        far.expect_quiet().await;
        let (frames, writes) = frames_and_writes(&b).await;
        assert!(
            writes > 0.0 && writes <= frames,
            "{writes} writes, {frames} frames"
        );
    })
    .await;
}

#[tokio::test]
async fn with_a_write_delay_a_reader_keeps_up_and_a_stalled_one_is_closed_4008() {
    within(60, async {
        // Queues hold 100 frames; a burst of 300 within the delay still
        // reaches a reader, because held frames go out a write's worth at a time.
        let (_nats, a, b) = pair(|c| {
            c.write_delay_ms = 200;
            c.limits.outbound_queue_frames = 100;
            c.limits.publish_rate_per_second = 1_000_000;
            c.limits.publish_burst = 1_000_000;
            c.heartbeat_ms = 120_000;
        })
        .await;
        let room = "bounded";
        let mut publisher = user(&a, "pub").await;
        let mut reader = user(&b, "reader").await;
        reader.join(room).await;
        let path = format!("/ws?token={}", nats::token("stalled"));
        let mut stalled = RawClient::connect_to(b.public, &path).await;
        assert_eq!(stalled.recv_json().await["type"], "welcome");
        stalled
            .send_text(&json!({"type": "join", "room": room, "id": 1}).to_string())
            .await;
        assert_eq!(stalled.recv_json().await["type"], "ok");

        let data = "z".repeat(2_048);
        let mut sent = 0u64;
        while metric(&b, "roomcast_slow_consumer_closes_total").await < 1.0 {
            assert!(
                sent < 20_000,
                "no slow-consumer close after {sent} messages"
            );
            for _ in 0..100 {
                publisher
                    .send_json(json!({"type": "publish", "room": room, "data": data}))
                    .await;
            }
            sent += 100;
            for _ in 0..100 {
                assert_eq!(reader.recv_type("message").await["data"], data.as_str());
            }
            let queued = metric(&b, "roomcast_outbound_queued_frames").await;
            assert!(queued <= 100.0 + 1.0, "{queued} frames queued");
        }
        assert!(
            metric(&b, "roomcast_connections").await >= 1.0,
            "the reader is still connected"
        );
        loop {
            match stalled.next_frame(STEP).await {
                Some(Frame::Close(code)) => {
                    assert_eq!(code, 4008);
                    break;
                }
                Some(_) => {}
                None => panic!("closed without a close frame"),
            }
        }
        reader.ok(json!({"type": "ping"})).await;
    })
    .await;
}

#[tokio::test]
async fn with_a_write_delay_fallback_sessions_get_a_burst_whole_and_in_order() {
    within(60, async {
        // The hub's coalescer writes held frames into the fallbacks'
        // mailboxes as it writes them to sockets.
        let gw = common::start_with(|c| {
            c.write_delay_ms = 200;
            c.polling.wait = std::time::Duration::from_millis(800);
            c.polling.expiry = std::time::Duration::from_secs(30);
        })
        .await;
        let base = gw.url("");
        let room = "held";
        let mut sse = Session::sse(&base, None).await;
        let mut poll = Session::poll(&base, None).await;
        for session in [&mut sse, &mut poll] {
            let joined = session.ok(json!({"type": "join", "room": room})).await;
            assert_eq!(joined["type"], "ok", "{joined}");
        }
        let mut publisher = gw.client().await;
        let n = 40;
        burst(&mut publisher, room, n).await;
        for session in [&mut sse, &mut poll] {
            for i in 0..n {
                let message = session.recv_type("message").await;
                assert_eq!(message["data"], i, "message {i} out of order: {message}");
            }
        }
    })
    .await;
}
