//! Limits and liveness: frame size (1009), rooms per connection, publish/send
//! rate, payload size, bounded outbound queues (4008, bounded memory), the
//! heartbeat (1008) and the connection cap.

mod common;

use std::time::{Duration, Instant};

use common::raw::{Frame, RawClient};
use common::{STEP, TestGateway, start_with, within};
use serde_json::json;

/// A `ping` frame padded with an unknown field to exactly `len` bytes.
fn ping_of_len(len: usize) -> String {
    let bare = r#"{"type":"ping","id":"big","pad":""}"#;
    let pad = "p".repeat(len - bare.len());
    let frame = format!(r#"{{"type":"ping","id":"big","pad":"{pad}"}}"#);
    assert_eq!(frame.len(), len);
    frame
}

#[tokio::test]
async fn frames_up_to_the_limit_pass_and_larger_ones_close_1009() {
    within(20, async {
        let gw = start_with(|c| c.limits.max_frame_bytes = 1024).await;
        let mut c = gw.client().await;
        c.send_text(&ping_of_len(1024)).await;
        let reply = c.recv().await;
        assert_eq!(
            reply["type"], "ok",
            "a frame of exactly the limit is fine: {reply}"
        );
        c.send_text(&ping_of_len(1025)).await;
        c.expect_close(1009).await;
        gw.wait_metric("roomcast_connections", "", 0.0).await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_default_frame_limit_is_64_kib() {
    within(20, async {
        let gw = start_with(|_| {}).await;
        assert_eq!(gw.config.limits.max_frame_bytes, 64 * 1024);
        let mut c = gw.client().await;
        c.send_text(&ping_of_len(64 * 1024)).await;
        assert_eq!(c.recv().await["type"], "ok");
        c.send_text(&ping_of_len(64 * 1024 + 1)).await;
        c.expect_close(1009).await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn joining_more_rooms_than_allowed_is_too_many_rooms() {
    within(20, async {
        let gw = start_with(|c| c.limits.max_rooms_per_connection = 3).await;
        let mut c = gw.client().await;
        for room in ["r1", "r2", "r3"] {
            c.join(room).await;
        }
        c.err(json!({"type": "join", "room": "r4"}), "too_many_rooms")
            .await;
        // Re-joining a joined room adds nothing and succeeds.
        c.join("r1").await;
        // The refused join did not subscribe.
        let p = c.ok(json!({"type": "presence", "room": "r4"})).await;
        assert_eq!(p["members"], json!([]));
        // Leaving frees a slot.
        c.ok(json!({"type": "leave", "room": "r2"})).await;
        c.join("r4").await;
        // The limit is per connection.
        let mut other = gw.client().await;
        for room in ["r1", "r2", "r3"] {
            other.join(room).await;
        }
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_default_room_limit_is_256() {
    within(30, async {
        let gw = start_with(|_| {}).await;
        let mut c = gw.client().await;
        for n in 0..256 {
            c.send_json(json!({"type": "join", "room": format!("room-{n}"), "id": n}))
                .await;
        }
        for n in 0..256 {
            let reply = c.reply_to(&json!(n)).await;
            assert_eq!(reply["type"], "ok", "join {n}: {reply}");
        }
        c.err(
            json!({"type": "join", "room": "room-256"}),
            "too_many_rooms",
        )
        .await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn publish_and_send_beyond_the_burst_are_rate_limited_and_dropped() {
    within(20, async {
        let gw = start_with(|c| {
            c.limits.publish_rate_per_second = 1;
            c.limits.publish_burst = 4;
        })
        .await;
        let mut member = gw.client().await;
        member.join("rl").await;
        let mut p = gw.client().await;
        for n in 0..3 {
            p.ok(json!({"type": "publish", "room": "rl", "data": n}))
                .await;
        }
        // send draws on the same bucket
        p.ok(json!({"type": "send", "to": member.user(), "data": "d"}))
            .await;
        p.err(
            json!({"type": "publish", "room": "rl", "data": "dropped"}),
            "rate_limited",
        )
        .await;
        p.err(
            json!({"type": "send", "to": member.user(), "data": "dropped"}),
            "rate_limited",
        )
        .await;
        // Other frames are not rate limited.
        p.ok(json!({"type": "ping"})).await;
        p.join("rl-other").await;
        // After 1/rate seconds one more token is there, not a whole burst.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        p.ok(json!({"type": "publish", "room": "rl", "data": 3}))
            .await;
        p.err(
            json!({"type": "publish", "room": "rl", "data": "dropped"}),
            "rate_limited",
        )
        .await;
        // The member got exactly what was accepted, in order.
        for n in 0..3 {
            assert_eq!(member.recv_type("message").await["data"], n);
        }
        assert_eq!(member.recv_type("direct").await["data"], "d");
        assert_eq!(member.recv_type("message").await["data"], 3);
        member.expect_quiet().await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn default_burst_is_400() {
    within(20, async {
        let gw = start_with(|_| {}).await;
        let mut p = gw.client().await;
        // Sent back to back, well within a second: 400 plus a refill
        // of 200/s may pass.
        for n in 0..600 {
            p.send_json(json!({"type": "publish", "room": "burst", "data": n, "id": n}))
                .await;
        }
        let mut ok = 0;
        let mut limited = 0;
        for n in 0..600 {
            let r = p.reply_to(&json!(n)).await;
            match r["type"].as_str() {
                Some("ok") => ok += 1,
                _ => {
                    assert_eq!(r["code"], "rate_limited", "{r}");
                    limited += 1;
                }
            }
        }
        assert!(ok >= 400, "the burst allows 400 ({ok} ok)");
        assert!(limited > 0, "beyond the burst frames are limited ({ok} ok)");
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn oversized_payloads_are_payload_too_large() {
    within(20, async {
        let gw = start_with(|c| c.limits.max_payload_bytes = 1_000).await;
        let mut member = gw.client().await;
        member.join("big").await;
        let mut c = gw.client().await;
        let big = "x".repeat(2_000);
        c.err(
            json!({"type": "publish", "room": "big", "data": big}),
            "payload_too_large",
        )
        .await;
        c.err(
            json!({"type": "send", "to": member.user(), "data": big}),
            "payload_too_large",
        )
        .await;
        let small = "y".repeat(500);
        c.ok(json!({"type": "publish", "room": "big", "data": small}))
            .await;
        // Only the small one was delivered.
        assert_eq!(member.recv_type("message").await["data"], small);
        member.expect_quiet().await;
        gw.stop().await;
    })
    .await;
}

/// What [`flood_until_slow_close`] saw.
struct Flooded {
    /// The largest sample of the queue gauge.
    peak: f64,
    /// When the last scrape that still showed no slow-consumer close was
    /// asked for: the close began after it (the test may notice much later).
    before_close: Instant,
}

/// Floods `room` from a fast publisher until the gateway reports a slow
/// consumer close, sampling `gauge` after every batch.
async fn flood_until_slow_close(
    gw: &TestGateway,
    room: &str,
    payload: usize,
    gauge: &str,
) -> Flooded {
    let mut publisher = gw.client().await;
    let data = "z".repeat(payload);
    let mut peak: f64 = 0.0;
    let mut before_close = Instant::now();
    for batch in 0..400 {
        for _ in 0..50 {
            publisher
                .send_json(json!({"type": "publish", "room": room, "data": data}))
                .await;
        }
        let asked = Instant::now();
        let text = gw.metrics_text().await;
        let sample = common::metric_value(&text, gauge, "").expect("queue gauge exported");
        peak = peak.max(sample);
        let closes = common::metric_value(&text, "roomcast_slow_consumer_closes_total", "")
            .expect("slow consumer counter exported");
        if closes >= 1.0 {
            // The publisher is unaffected.
            publisher.ok(json!({"type": "ping"})).await;
            return Flooded { peak, before_close };
        }
        before_close = asked;
        assert!(batch < 399, "no slow-consumer close after 20000 frames");
    }
    Flooded { peak, before_close }
}

/// Reads what the stalled client was sent and returns its close code.
async fn close_code_of(raw: &mut RawClient) -> Option<u16> {
    loop {
        match raw.next_frame(STEP).await {
            Some(Frame::Close(code)) => return Some(code),
            Some(_) => continue,
            None => return None,
        }
    }
}

/// A raw client that joined `room` and then stops reading.
async fn stalled_member(gw: &TestGateway, room: &str) -> RawClient {
    let mut raw = RawClient::connect(gw.public).await;
    assert_eq!(raw.recv_json().await["type"], "welcome");
    raw.send_text(&json!({"type": "join", "room": room, "id": 1}).to_string())
        .await;
    assert_eq!(raw.recv_json().await["type"], "ok");
    raw
}

/// Which outbound-queue bound a slow-consumer test exercises.
enum QueueBound {
    Frames(usize),
    Bytes(usize),
}

/// A member that never reads while its room is flooded is closed with 4008,
/// the queue gauge never exceeds the bound, and the memory is released.
async fn stalled_consumer_is_closed_4008(bound: QueueBound, payload: usize) {
    let (gauge, limit) = match bound {
        QueueBound::Frames(n) => ("roomcast_outbound_queued_frames", n),
        QueueBound::Bytes(n) => ("roomcast_outbound_queued_bytes", n),
    };
    let gw = start_with(|c| {
        match bound {
            QueueBound::Frames(n) => c.limits.outbound_queue_frames = n,
            QueueBound::Bytes(n) => c.limits.outbound_queue_bytes = n,
        }
        c.limits.publish_rate_per_second = 1_000_000;
        c.limits.publish_burst = 1_000_000;
        // The stalled client never answers pings: keep the heartbeat out of the way.
        c.heartbeat_ms = 120_000;
    })
    .await;
    let mut raw = stalled_member(&gw, "flood").await;
    let peak = flood_until_slow_close(&gw, "flood", payload, gauge)
        .await
        .peak;
    assert!(peak <= limit as f64, "{gauge} peaked at {peak} > {limit}");
    assert_eq!(close_code_of(&mut raw).await, Some(4008));
    drop(raw);
    gw.wait_metric(gauge, "", 0.0).await;
    gw.wait_metric("roomcast_connections", "", 0.0).await;
    gw.stop().await;
}

/// A gateway whose queues overflow after 64 frames, whose 4008 close may take
/// `slow_close_ms`, and whose heartbeat stays out of the way.
async fn slow_close_gateway(slow_close_ms: u64) -> TestGateway {
    start_with(|c| {
        c.limits.outbound_queue_frames = 64;
        c.limits.publish_rate_per_second = 1_000_000;
        c.limits.publish_burst = 1_000_000;
        c.limits.slow_close_timeout_ms = slow_close_ms;
        c.heartbeat_ms = 120_000;
    })
    .await
}

/// A slow consumer that stalls longer than an ordinary close may take (5 s)
/// but resumes within `limits.slow_close_timeout_ms` reads the messages its
/// socket buffer held, then the 4008 close; its answer ends the connection.
#[tokio::test]
async fn a_slow_consumer_resuming_within_the_bound_reads_its_messages_then_4008() {
    within(60, async {
        let gw = slow_close_gateway(20_000).await;
        let mut raw = stalled_member(&gw, "flood").await;
        flood_until_slow_close(&gw, "flood", 2_048, "roomcast_outbound_queued_frames").await;
        // The client is away (a backgrounded tab): this wait is the scenario.
        tokio::time::sleep(Duration::from_secs(7)).await;
        let mut messages = 0;
        loop {
            match raw.next_frame(STEP).await {
                Some(Frame::Text(v)) => {
                    assert_eq!(v["type"], "message", "{v}");
                    messages += 1;
                }
                Some(Frame::Ping) => {}
                Some(Frame::Close(code)) => {
                    assert_eq!(code, 4008, "after {messages} messages");
                    break;
                }
                other => panic!("{other:?} after {messages} messages, before any close frame"),
            }
        }
        assert!(messages > 0, "the buffered messages come first");
        raw.send_close(4008).await;
        assert_eq!(raw.next_frame(STEP).await, None, "closed after the answer");
        gw.wait_metric("roomcast_connections", "", 0.0).await;
        gw.stop().await;
    })
    .await;
}

/// A slow consumer that never reads again is dropped once the bound passes,
/// not before.
#[tokio::test]
async fn a_slow_consumer_that_never_resumes_is_dropped_after_the_bound() {
    within(60, async {
        let bound = Duration::from_secs(3);
        let gw = slow_close_gateway(bound.as_millis() as u64).await;
        let raw = stalled_member(&gw, "flood").await;
        let flooded =
            flood_until_slow_close(&gw, "flood", 2_048, "roomcast_outbound_queued_frames").await;
        // The publisher is gone; the stalled member is still held.
        gw.wait_metric("roomcast_connections", "", 1.0).await;
        gw.wait_metric("roomcast_connections", "", 0.0).await;
        // Measured from before the close began, so a slow machine noticing
        // the close late cannot make a correct gateway look early.
        let held = flooded.before_close.elapsed();
        assert!(
            held >= bound - Duration::from_millis(100),
            "dropped at most {held:?} after the close began, before the {bound:?} bound"
        );
        drop(raw);
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_consumer_that_never_reads_is_closed_4008_by_frame_count() {
    within(
        60,
        stalled_consumer_is_closed_4008(QueueBound::Frames(64), 2_048),
    )
    .await;
}

#[tokio::test]
async fn a_consumer_that_never_reads_is_closed_4008_by_bytes_and_memory_stays_bounded() {
    within(
        60,
        stalled_consumer_is_closed_4008(QueueBound::Bytes(64 * 1024), 4_096),
    )
    .await;
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_closed_1008_within_two_intervals() {
    within(20, async {
        // The close is due 2 intervals after the last sign of life; with
        // 1 s intervals the upper bound below leaves 1.5 s of slack for a
        // loaded machine (with 400 ms it left 0.7 s).
        let hb = 1_000u64;
        let gw = start_with(|c| c.heartbeat_ms = hb).await;
        let started = Instant::now();
        let mut raw = RawClient::connect(gw.public).await;
        let mut pings = 0;
        let code = loop {
            match raw.next_frame(STEP).await {
                Some(Frame::Ping) => pings += 1,
                Some(Frame::Close(code)) => break Some(code),
                Some(_) => continue,
                None => break None,
            }
        };
        let elapsed = started.elapsed();
        assert_eq!(code, Some(1008), "heartbeat timeout closes with 1008");
        assert!(pings >= 1, "the server pinged before giving up");
        let hb = Duration::from_millis(hb);
        assert!(elapsed >= hb * 3 / 2, "closed too early: {elapsed:?}");
        assert!(
            elapsed <= hb * 3 + Duration::from_millis(500),
            "closed too late: {elapsed:?}"
        );
        // The peer is dead: it never answers the close either. Without the
        // drop the gateway waits out its 5 s close handshake, as long as
        // `wait_metric` itself waits.
        drop(raw);
        gw.wait_metric("roomcast_connections", "", 0.0).await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn pings_come_every_interval_and_pongs_keep_the_peer_alive() {
    within(20, async {
        // Each pong is due within one interval of its ping: 500 ms leaves
        // room for a loaded machine (200 ms did not).
        let hb = 500u64;
        let gw = start_with(|c| c.heartbeat_ms = hb).await;
        let mut raw = RawClient::connect(gw.public).await;
        let started = Instant::now();
        let mut pings = 0;
        // Six intervals: three times the silence that would close a dead peer.
        while started.elapsed() < Duration::from_millis(hb * 6) {
            match raw.next_frame(STEP).await {
                Some(Frame::Ping) => {
                    pings += 1;
                    raw.send_pong().await;
                }
                Some(Frame::Text(_)) => continue,
                other => panic!("a peer answering pings got {other:?}"),
            }
        }
        assert!((3..=8).contains(&pings), "{pings} pings in 6 intervals");
        gw.wait_metric("roomcast_connections", "", 1.0).await;
        drop(raw);
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn data_frames_count_as_life_for_a_peer_that_never_pongs() {
    within(20, async {
        // The silence bound is 2 intervals; a round of the loop below takes
        // half of one, so a loaded machine has 1.5 intervals (750 ms) to spare.
        let hb = 500u64;
        let gw = start_with(|c| c.heartbeat_ms = hb).await;
        let mut raw = RawClient::connect(gw.public).await;
        assert_eq!(raw.recv_json().await["type"], "welcome");
        // Not silent: a protocol ping every half interval, never a pong.
        for n in 0..12 {
            tokio::time::sleep(Duration::from_millis(hb / 2)).await;
            raw.send_text(&json!({"type": "ping", "id": n}).to_string())
                .await;
            let reply = raw.recv_json().await;
            assert_eq!(reply["id"], n, "{reply}");
        }
        drop(raw);
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_peer_that_answers_pings_stays_connected_while_idle() {
    within(20, async {
        // Each pong is due within one interval of its ping.
        let hb = 500u64;
        let gw = start_with(|c| c.heartbeat_ms = hb).await;
        let mut c = gw.client().await;
        // Reading lets the client answer pings; it sends nothing else.
        let quiet = c.try_recv(Duration::from_millis(hb * 5)).await;
        assert_eq!(quiet, None, "no frame expected while idle");
        c.ok(json!({"type": "ping"})).await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn upgrades_beyond_max_connections_are_refused_with_503() {
    within(20, async {
        let gw = start_with(|c| c.limits.max_connections = 2).await;
        let a = gw.client().await;
        let _b = gw.client().await;
        assert_eq!(gw.refused(&common::Connect::default()).await, 503);
        a.close().await;
        gw.wait_metric("roomcast_connections", "", 1.0).await;
        let mut c = gw.client().await;
        c.ok(json!({"type": "ping"})).await;
        gw.stop().await;
    })
    .await;
}
