//! The load generator's `soak` against a real in-process gateway (alone, on
//! the in-process bus, no NATS restart), shortened to seconds: churning
//! clients of every fate come and go, connections and rooms return to 0, and
//! steady subscribers lose nothing that was accepted. `make bench` runs the
//! real thing (two gateways, NATS restarted, 10 minutes).

use std::time::Duration;

use roomcast_bench::scenario::soak::{self, verdict::Mix};
use roomcast_bench::target::parse_target;
use roomcast_gateway::Config;
use roomcast_gateway::config::Limits;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_returns_to_zero_and_loses_nothing_accepted() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let (gateway, url) = common::start(Config {
            limits: Limits {
                outbound_queue_frames: 64,
                outbound_queue_bytes: 64 * 1024,
                ..Limits::default()
            },
            ..common::config("soak-test")
        })
        .await;
        let cfg = soak::Config {
            targets: vec![parse_target(&url).expect("loopback URL")],
            admins: vec![gateway.admin_addr()],
            gateway_pids: vec![std::process::id()],
            nats: None,
            nats_down: Duration::ZERO,
            duration: Duration::from_secs(5),
            warmup: Duration::ZERO,
            sample_every: Duration::from_secs(1),
            churners: 30,
            lifetime: (Duration::from_millis(200), Duration::from_millis(1200)),
            mix: Mix {
                clean: 40,
                reset: 20,
                drop: 20,
                slow: 20,
            },
            stall: Duration::from_secs(2),
            steady: 8,
            rooms: 4,
            publishers: 2,
            rate: 20.0,
            payload: 64,
            hot_rate: 50.0,
            hot_payload: 2048,
            hot_readers: 2,
            per_source_address: 0,
            settle: Duration::from_secs(20),
            seed: 7,
            command: "test".into(),
        };
        let report = soak::run(&cfg).await.expect("soak runs");
        let lines = soak::verdict_lines(&report);

        assert!(report.verdicts.back_to_zero, "{lines}\n{:?}", report.settle);
        assert!(report.verdicts.no_loss, "{lines}\n{:?}", report.delivery);
        assert!(report.delivery.owed > 0, "{:?}", report.delivery);
        assert_eq!(report.delivery.problems.duplicated, 0);
        assert_eq!(report.delivery.problems.out_of_order, 0);
        assert_eq!(
            report.publishing.accepted, report.publishing.sent,
            "{:?}",
            report.publishing
        );
        let churn = &report.churn;
        assert!(churn.opened >= 30, "{churn:?}");
        assert_eq!(churn.connect_failures, 0, "{churn:?}");
        assert!(churn.endings.len() >= 3, "several fates ended: {churn:?}");
        // One sample before, one a second during the load, one at the end.
        assert!(report.samples.len() >= 5, "{:?}", report.samples.len());
        assert_eq!(report.samples.first().map(|s| s.phase), Some("before"));
        assert_eq!(report.samples.last().map(|s| s.phase), Some("end"));
        assert!(
            lines.contains("back to zero") && lines.contains("soak: "),
            "{lines}"
        );
        gateway.shutdown().await;
    })
    .await
    .expect("test finished within 90 s");
}
