//! The admin listener: health, readiness, the Prometheus exposition and its
//! gauges, and the drain started by `POST /drain` or `Gateway::start_drain`.

mod common;

use std::time::{Duration, Instant};

use common::{Connect, STEP, get_status, http, start, start_with, within};
use serde_json::json;

#[tokio::test]
async fn healthz_and_readyz_are_200_when_serving() {
    within(20, async {
        let gw = start().await;
        assert_eq!(get_status(&gw.admin_url("/healthz")).await, 200);
        assert_eq!(get_status(&gw.admin_url("/readyz")).await, 200);
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn metrics_expose_every_documented_series() {
    within(20, async {
        let gw = start().await;
        let mut c = gw.client().await;
        c.send_text("not json").await;
        c.expect_error_without_id("bad_request").await;
        let (status, ctype, text) = common::get(&gw.admin_url("/metrics")).await;
        assert_eq!(status, 200);
        assert!(ctype.starts_with("text/plain"), "content-type {ctype}");
        let gauges = [
            "roomcast_connections",
            "roomcast_outbound_queued_bytes",
            "roomcast_outbound_queued_frames",
            "roomcast_rooms",
            "roomcast_draining",
        ];
        let counters = [
            "roomcast_frames_in_total",
            "roomcast_frames_out_total",
            "roomcast_slow_consumer_closes_total",
        ];
        for name in gauges {
            assert!(
                text.contains(&format!("# TYPE {name} gauge")),
                "{name} gauge in:\n{text}"
            );
            assert!(
                common::metric_value(&text, name, "").is_some(),
                "{name} sample"
            );
        }
        for name in counters {
            assert!(
                text.contains(&format!("# TYPE {name} counter")),
                "{name} counter in:\n{text}"
            );
            assert!(
                common::metric_value(&text, name, "").is_some(),
                "{name} sample"
            );
        }
        assert!(
            text.contains("# TYPE roomcast_errors_total counter"),
            "{text}"
        );
        let errors = common::metric_value(&text, "roomcast_errors_total", r#"code="bad_request""#);
        assert!(errors >= Some(1.0), "bad_request counted: {errors:?}");
        assert_eq!(
            common::metric_value(&text, "roomcast_connections", ""),
            Some(1.0)
        );
        assert_eq!(
            common::metric_value(&text, "roomcast_draining", ""),
            Some(0.0)
        );
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn connections_gauge_counts_up_and_down() {
    within(20, async {
        let gw = start().await;
        gw.wait_metric("roomcast_connections", "", 0.0).await;
        let a = gw.client().await;
        let b = gw.client().await;
        let c = gw.client().await;
        gw.wait_metric("roomcast_connections", "", 3.0).await;
        a.close().await;
        gw.wait_metric("roomcast_connections", "", 2.0).await;
        // An abrupt drop (no close handshake) counts down too.
        drop(b);
        gw.wait_metric("roomcast_connections", "", 1.0).await;
        c.close().await;
        gw.wait_metric("roomcast_connections", "", 0.0).await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn frame_and_room_metrics_follow_traffic() {
    within(20, async {
        let gw = start().await;
        let before_in = gw
            .metric("roomcast_frames_in_total", "")
            .await
            .expect("frames in");
        let before_out = gw
            .metric("roomcast_frames_out_total", "")
            .await
            .expect("frames out");
        let mut c = gw.client().await;
        c.join("m1").await;
        c.join("m2").await;
        gw.wait_metric("roomcast_rooms", "", 2.0).await;
        c.ok(json!({"type": "leave", "room": "m1"})).await;
        gw.wait_metric("roomcast_rooms", "", 1.0).await;
        let after_in = gw
            .metric("roomcast_frames_in_total", "")
            .await
            .expect("frames in");
        let after_out = gw
            .metric("roomcast_frames_out_total", "")
            .await
            .expect("frames out");
        assert!(
            after_in >= before_in + 3.0,
            "3 frames in: {before_in} -> {after_in}"
        );
        // welcome + 3 oks
        assert!(
            after_out >= before_out + 4.0,
            "4 frames out: {before_out} -> {after_out}"
        );
        c.close().await;
        gw.wait_metric("roomcast_rooms", "", 0.0).await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn post_drain_flips_readyz_refuses_upgrades_and_closes_1012_over_the_period() {
    within(30, async {
        let drain = 2u64;
        let gw = start_with(|c| c.drain_seconds = drain).await;
        let mut clients = Vec::new();
        for _ in 0..8 {
            clients.push(gw.client().await);
        }
        let resp = http()
            .post(gw.admin_url("/drain"))
            .send()
            .await
            .expect("POST /drain");
        assert_eq!(resp.status(), 202);
        let started = Instant::now();
        // Watched from now on: a close is timed when it arrives, not when
        // the checks below (slow on a loaded machine) are done.
        let waiters: Vec<_> = clients
            .into_iter()
            .map(|mut c| {
                tokio::spawn(async move {
                    let code = c.wait_close(STEP * 2).await;
                    (code, started.elapsed())
                })
            })
            .collect();
        assert_eq!(get_status(&gw.admin_url("/readyz")).await, 503);
        assert_eq!(get_status(&gw.admin_url("/healthz")).await, 200);
        assert_eq!(
            gw.refused(&Connect::default()).await,
            503,
            "no upgrade while draining"
        );
        assert_eq!(gw.metric("roomcast_draining", "").await, Some(1.0));
        let mut times = Vec::new();
        for w in waiters {
            let (code, at) = w.await.expect("waiter");
            assert_eq!(code, Some(1012), "drain closes with 1012");
            times.push(at);
        }
        times.sort();
        let (first, last) = (times[0], times[times.len() - 1]);
        assert!(
            last <= Duration::from_secs(drain) + Duration::from_millis(1_000),
            "all closed within the drain period: {times:?}"
        );
        assert!(
            last - first >= Duration::from_secs(drain) / 4,
            "closes are spread over the period, not all at once: {times:?}"
        );
        gw.wait_metric("roomcast_connections", "", 0.0).await;
        // Still draining: still not ready, still refusing.
        assert_eq!(get_status(&gw.admin_url("/readyz")).await, 503);
        assert_eq!(gw.refused(&Connect::default()).await, 503);
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn start_drain_is_the_same_as_post_drain() {
    within(20, async {
        let gw = start().await;
        let mut c = gw.client().await;
        gw.start_drain();
        assert_eq!(get_status(&gw.admin_url("/readyz")).await, 503);
        assert_eq!(c.wait_close(STEP).await, Some(1012));
        assert_eq!(gw.refused(&Connect::default()).await, 503);
        gw.stop().await;
    })
    .await;
}
