//! The load generator's `fanout` against a real in-process gateway (alone, on
//! the in-process bus): every message reaches every member of its room once,
//! in order, over WebSocket and with subscribers on the HTTP fallbacks.
//! Figures are not asserted here; `make bench` measures them.

use std::time::Duration;

use roomcast_bench::scenario::fanout;
use roomcast_bench::target::parse_target;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_delivers_everything_once_and_in_order() {
    let report = fanout_once(0.0, 0.0).await;
    assert_eq!(report.transports.len(), 1, "{:?}", report.transports);
    assert_eq!(report.transports["websocket"], 12);
    // One gateway: every delivery is by the publisher's own gateway.
    let paths: Vec<&String> = report.latency_by_path.keys().collect();
    assert_eq!(paths, ["same_gateway"]);
    assert_eq!(
        report.latency_by_path["same_gateway"].count,
        report.latency.count
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_over_sse_and_long_polling_delivers_everything_once_and_in_order() {
    let report = fanout_once(0.25, 0.25).await;
    assert_eq!(report.transports.values().sum::<usize>(), 12);
    for transport in ["websocket", "sse", "poll"] {
        assert!(report.transports[transport] > 0, "{:?}", report.transports);
        assert!(
            report.latency_by_transport[transport].count > 0,
            "{transport}: {:?}",
            report.latency_by_transport
        );
    }
}

/// One short fanout with these shares of fallback subscribers, checked for
/// complete, once-only, in-order delivery.
async fn fanout_once(sse_share: f64, poll_share: f64) -> fanout::Report {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (gateway, url) = common::start(common::config("bench-test")).await;
        let cfg = fanout::Config {
            targets: vec![parse_target(&url).expect("loopback URL")],
            subscribers: 12,
            rooms: 3,
            publishers: 3,
            rate: 40.0,
            payload: 64,
            duration: Duration::from_millis(1500),
            warmup: Duration::ZERO,
            grace: Duration::from_secs(20),
            server_pids: vec![std::process::id()],
            connect_concurrency: 8,
            per_source_address: 0,
            room_prefix: "t-".into(),
            sse_share,
            poll_share,
        };
        let report = fanout::run(&cfg).await.expect("fanout runs");

        assert!(report.published > 0, "{report:?}");
        assert_eq!(
            report.expected_deliveries,
            report.published * 4,
            "4 members per room"
        );
        assert_eq!(report.delivered, report.expected_deliveries, "{report:?}");
        assert_eq!(report.problems.lost, 0, "{report:?}");
        assert_eq!(report.problems.duplicated, 0, "{report:?}");
        assert_eq!(report.problems.out_of_order, 0, "{report:?}");
        assert_eq!(report.problem_triples, 0);
        assert_eq!(report.foreign, 0);
        assert!(report.subscriber_closes.is_empty(), "{report:?}");
        assert!(report.publisher_errors.is_empty(), "{report:?}");
        assert_eq!(report.latency.count, report.delivered);
        gateway.shutdown().await;
        report
    })
    .await
    .expect("test finished within 60 s")
}
