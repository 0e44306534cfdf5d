//! The server-side HTTP API: `POST /v1/publish` and `POST /v1/send`, their
//! 202 answers, delivery with `from: null`, the API key, and 400s with codes.

mod common;

use common::{start, start_with, within};
use serde_json::json;

const KEY: &str = "backend-key-0123456789";

#[tokio::test]
async fn publish_delivers_to_members_with_from_null() {
    within(20, async {
        let gw = start().await;
        let mut a = gw.client().await;
        let mut b = gw.client().await;
        a.join("news").await;
        b.join("news").await;
        let data = json!({"headline": "hello", "n": [1, 2]});
        let (status, body) = gw
            .post(
                "/v1/publish",
                &json!({"room": "news", "data": data}).to_string(),
                None,
            )
            .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body, json!({"ok": true}));
        for c in [&mut a, &mut b] {
            let m = c.recv_type("message").await;
            assert_eq!(m["room"], "news");
            assert_eq!(m["data"], data);
            assert!(
                m["from"].is_null() && m.get("from").is_some(),
                "from is null: {m}"
            );
        }
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn send_delivers_direct_with_from_null() {
    within(20, async {
        let gw = start().await;
        let mut a = gw.client().await;
        let mut other = gw.client().await;
        let (status, body) = gw
            .post(
                "/v1/send",
                &json!({"to": a.user(), "data": "for a"}).to_string(),
                None,
            )
            .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body, json!({"ok": true}));
        let d = a.recv_type("direct").await;
        assert_eq!(d["data"], "for a");
        assert!(
            d["from"].is_null() && d.get("from").is_some(),
            "from is null: {d}"
        );
        other.expect_quiet().await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn api_key_is_required_when_configured() {
    within(20, async {
        let gw = start_with(|c| c.auth.api_key = Some(KEY.into())).await;
        let mut a = gw.client().await;
        a.join("keyed").await;
        let publish = json!({"room": "keyed", "data": 1}).to_string();
        let send = json!({"to": a.user(), "data": 1}).to_string();
        for (path, body) in [("/v1/publish", &publish), ("/v1/send", &send)] {
            assert_eq!(gw.post(path, body, None).await.0, 401, "{path} without key");
            assert_eq!(
                gw.post(path, body, Some("wrong")).await.0,
                401,
                "{path} wrong key"
            );
            let prefix = &KEY[..KEY.len() - 1];
            assert_eq!(
                gw.post(path, body, Some(prefix)).await.0,
                401,
                "{path} key prefix"
            );
        }
        // Unauthorized requests delivered nothing.
        a.expect_quiet().await;
        let (status, body) = gw.post("/v1/publish", &publish, Some(KEY)).await;
        assert_eq!((status, body), (202, json!({"ok": true})));
        assert_eq!(a.recv_type("message").await["data"], 1);
        let (status, _) = gw.post("/v1/send", &send, Some(KEY)).await;
        assert_eq!(status, 202);
        assert_eq!(a.recv_type("direct").await["data"], 1);
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bad_input_is_400_with_a_code() {
    within(20, async {
        let gw = start_with(|c| c.limits.max_payload_bytes = 1_000).await;
        let cases: &[(&str, String, &str)] = &[
            ("/v1/publish", "not json".into(), "bad_request"),
            ("/v1/publish", "[1,2]".into(), "bad_request"),
            ("/v1/publish", json!({"data": 1}).to_string(), "bad_request"),
            (
                "/v1/publish",
                json!({"room": "r"}).to_string(),
                "bad_request",
            ),
            (
                "/v1/publish",
                json!({"room": 5, "data": 1}).to_string(),
                "bad_request",
            ),
            (
                "/v1/publish",
                json!({"room": "a.b", "data": 1}).to_string(),
                "invalid_room",
            ),
            (
                "/v1/publish",
                json!({"room": "a*", "data": 1}).to_string(),
                "invalid_room",
            ),
            (
                "/v1/publish",
                json!({"room": "", "data": 1}).to_string(),
                "invalid_room",
            ),
            (
                "/v1/publish",
                json!({"room": "x".repeat(129), "data": 1}).to_string(),
                "invalid_room",
            ),
            (
                "/v1/publish",
                json!({"room": "r", "data": "x".repeat(2_000)}).to_string(),
                "payload_too_large",
            ),
            ("/v1/send", "{".into(), "bad_request"),
            ("/v1/send", json!({"data": 1}).to_string(), "bad_request"),
            ("/v1/send", json!({"to": "u"}).to_string(), "bad_request"),
            (
                "/v1/send",
                json!({"to": 1, "data": 1}).to_string(),
                "bad_request",
            ),
            (
                "/v1/send",
                json!({"to": "u", "data": "x".repeat(2_000)}).to_string(),
                "payload_too_large",
            ),
        ];
        for (path, body, code) in cases {
            let (status, reply) = gw.post(path, body, None).await;
            assert_eq!(status, 400, "{path} {body}: {reply}");
            assert_eq!(reply["code"], *code, "{path} {body}: {reply}");
            assert!(reply["message"].is_string(), "{path} {body}: {reply}");
        }
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_api_is_open_without_a_key_and_any_json_data_passes() {
    within(20, async {
        let gw = start().await;
        let mut a = gw.client().await;
        a.join("open").await;
        for data in [
            json!(null),
            json!(1),
            json!("s"),
            json!([1]),
            json!({"k": {}}),
        ] {
            let body = json!({"room": "open", "data": data}).to_string();
            let (status, _) = gw.post("/v1/publish", &body, None).await;
            assert_eq!(status, 202);
            let m = a.recv_type("message").await;
            assert_eq!(m["data"], data);
        }
        // Unknown fields are ignored.
        let body = json!({"room": "open", "data": "extra", "priority": 1}).to_string();
        assert_eq!(gw.post("/v1/publish", &body, None).await.0, 202);
        assert_eq!(a.recv_type("message").await["data"], "extra");
        // A key nobody asked for is not a reason to refuse.
        let body = json!({"room": "open", "data": "keyed"}).to_string();
        assert_eq!(gw.post("/v1/publish", &body, Some("anything")).await.0, 202);
        assert_eq!(a.recv_type("message").await["data"], "keyed");
        gw.stop().await;
    })
    .await;
}
