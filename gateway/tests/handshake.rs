//! The upgrade handshake checked to RFC 6455 §4.2.1–4.2.2 over a raw
//! socket: a malformed key is 400, a version other than 13 is 426 naming
//! version 13, and a well-formed request still gets its 101.

mod common;

use common::raw::exchange;
use common::{start, within};

/// An upgrade request with this key and version header lines.
fn upgrade(key: Option<&str>, version: Option<&str>) -> String {
    let mut request = String::from(
        "GET /ws HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
    );
    if let Some(key) = key {
        request.push_str(&format!("Sec-WebSocket-Key: {key}\r\n"));
    }
    if let Some(version) = version {
        request.push_str(&format!("Sec-WebSocket-Version: {version}\r\n"));
    }
    request.push_str("\r\n");
    request
}

const GOOD_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

#[tokio::test]
async fn a_key_that_is_not_16_bytes_of_base64_is_400() {
    within(20, async {
        let gw = start().await;
        for key in [
            "",
            "x",
            "not base64 at all!!!!!!!",
            // 15 and 17 bytes.
            "dGhlIHNhbXBsZSBub25j",
            "dGhlIHNhbXBsZSBub25jZXMh",
            // Unpadded, and padded but with stray trailing bits.
            "dGhlIHNhbXBsZSBub25jZQ",
            "dGhlIHNhbXBsZSBub25jZR==",
        ] {
            let reply = exchange(gw.public, &upgrade(Some(key), Some("13"))).await;
            assert_eq!(reply.status, 400, "key {key:?}: {reply:?}");
            assert!(reply.body.contains("Sec-WebSocket-Key"), "{reply:?}");
        }
        let reply = exchange(gw.public, &upgrade(None, Some("13"))).await;
        assert_eq!(reply.status, 400, "no key: {reply:?}");
        let reply = exchange(gw.public, &upgrade(Some(GOOD_KEY), Some("13"))).await;
        assert_eq!(reply.status, 101, "{reply:?}");
        assert_eq!(
            reply.header("sec-websocket-accept"),
            Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_version_other_than_13_is_426_naming_13() {
    within(20, async {
        let gw = start().await;
        for version in ["8", "12", "14", "13, 8", "x"] {
            let reply = exchange(gw.public, &upgrade(Some(GOOD_KEY), Some(version))).await;
            assert_eq!(reply.status, 426, "version {version:?}: {reply:?}");
            assert_eq!(
                reply.header("sec-websocket-version"),
                Some("13"),
                "version {version:?}: {reply:?}"
            );
        }
        let reply = exchange(gw.public, &upgrade(Some(GOOD_KEY), None)).await;
        assert_eq!(reply.status, 400, "no version: {reply:?}");
        gw.stop().await;
    })
    .await;
}
