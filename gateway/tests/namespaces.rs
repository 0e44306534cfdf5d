//! Room namespaces (protocol v1.1): options configured per namespace and
//! applied by the part of a room name before its first `:`. Today this
//! covers `client_publish`; history and presence events use the same
//! options once wired.

mod common;

use common::{start_with, within};
use roomcast_gateway::namespace::NamespaceSpec;
use serde_json::json;

#[tokio::test]
async fn client_publish_false_leaves_publishing_to_the_http_api() {
    within(20, async {
        let gw = start_with(|c| {
            c.namespaces = ["feed:client_publish=false", ":client_publish=false"]
                .iter()
                .map(|s| s.parse::<NamespaceSpec>().expect("spec"))
                .collect();
        })
        .await;
        let mut member = gw.client().await;
        let mut writer = gw.client().await;
        member.join("feed:1").await;
        writer.join("feed:1").await;

        // A client publish is forbidden, in the namespace and in the default one.
        let e = writer
            .err(
                json!({"type": "publish", "room": "feed:1", "data": 1}),
                "forbidden",
            )
            .await;
        assert!(
            e["message"]
                .as_str()
                .unwrap_or_default()
                .contains("client_publish"),
            "{e}"
        );
        writer
            .err(
                json!({"type": "publish", "room": "lobby", "data": 1}),
                "forbidden",
            )
            .await;
        // Joining is still allowed, and other namespaces keep the default (true).
        writer.join("chat:1").await;
        writer
            .ok(json!({"type": "publish", "room": "chat:1", "data": "hi"}))
            .await;
        assert_eq!(writer.recv_type("message").await["data"], "hi");

        // The HTTP API publishes to the same room.
        let (status, body) = gw
            .post(
                "/v1/publish",
                &json!({"room": "feed:1", "data": {"n": 7}}).to_string(),
                None,
            )
            .await;
        assert_eq!(status, 202, "{body}");
        for c in [&mut member, &mut writer] {
            let m = c.recv_type("message").await;
            assert_eq!(m["room"], "feed:1");
            assert_eq!(m["data"], json!({"n": 7}));
            assert!(m["from"].is_null(), "{m}");
        }
        member.expect_quiet().await;
        gw.stop().await;
    })
    .await;
}
