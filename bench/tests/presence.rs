//! The load generator's `presence` against a real in-process gateway (alone,
//! on the in-process bus): visitors raise `joined`/`left` events only once
//! someone watches, and every watcher's view ends equal to the room's
//! `presence`. Figures are not asserted here; `make bench` measures them.

use std::time::Duration;

use roomcast_bench::scenario::presence;
use roomcast_bench::target::parse_target;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_events_flow_and_every_watcher_view_ends_consistent() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (gateway, url) = common::start(common::config("bench-test")).await;
        let cfg = presence::Config {
            targets: vec![parse_target(&url).expect("loopback URL")],
            admins: vec![gateway.admin_addr()],
            members: 20,
            rooms: 4,
            watchers_per_room: 2,
            rate: 20.0,
            hold: Duration::from_millis(300),
            unwatched: Duration::from_millis(500),
            duration: Duration::from_millis(1500),
            settle: Duration::from_millis(300),
            connect_concurrency: 8,
            per_source_address: 0,
            server_pids: vec![std::process::id()],
        };
        let report = presence::run(&cfg).await.expect("presence runs");

        assert_eq!(report.unwatched.events, 0, "{report:?}");
        assert!(report.unwatched.visits > 0, "{report:?}");
        assert!(report.watched.visits > 0, "{report:?}");
        // Each visit is at least a joined and a left for the room's two watchers.
        assert!(
            report.watched.events >= 4 * report.watched.visits,
            "{report:?}"
        );
        assert_eq!(report.watchers, 8);
        assert_eq!(report.views_consistent, 8, "{report:?}");
        assert_eq!(report.views_wrong, 0, "{report:?}");
        assert_eq!(report.impossible_events, 0, "{report:?}");
        assert_eq!(report.unwatched.presence_bus_messages, 0.0, "no bus alone");
        gateway.shutdown().await;
    })
    .await
    .expect("test finished within 60 s");
}
