//! The load generator's `formats` against a real in-process gateway with
//! compression on: every variant delivers every message to every subscriber,
//! the deflate variant negotiates compression and gets compressed frames,
//! MessagePack carries binary in fewer bytes than base64 JSON. Figures are
//! not asserted beyond that; `make bench` measures them.

use std::time::Duration;

use roomcast_bench::scenario::formats::{self, Variant};
use roomcast_bench::target::parse_target;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_variant_delivers_everything() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let mut config = common::config("bench-test");
        config.websocket.compression = true;
        let (gateway, url) = common::start(config).await;
        let mut bytes = Vec::new();
        for variant in [
            Variant::JsonText,
            Variant::JsonTextDeflate,
            Variant::JsonBinary,
            Variant::MsgpackBinary,
        ] {
            let cfg = formats::Config {
                targets: vec![parse_target(&url).expect("loopback URL")],
                variant,
                subscribers: 6,
                rate: 20.0,
                duration: Duration::from_millis(500),
                server_pids: vec![std::process::id()],
            };
            let report = formats::run(&cfg).await.expect("formats runs");
            assert!(report.published > 0, "{report:?}");
            assert_eq!(report.delivered, report.published * 6, "{report:?}");
            let deflate = variant == Variant::JsonTextDeflate;
            assert_eq!(report.deflate_negotiated, if deflate { 6 } else { 0 });
            assert_eq!(report.compressed > 0, deflate, "{report:?}");
            bytes.push(report.wire_bytes_per_delivery);
        }
        assert!(bytes[1] < bytes[0] / 2.0, "JSON text compresses: {bytes:?}");
        assert!(
            bytes[3] < bytes[2],
            "MessagePack binary beats base64: {bytes:?}"
        );
        gateway.shutdown().await;
    })
    .await
    .expect("the test finishes in time");
}
