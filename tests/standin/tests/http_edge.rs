//! The HTTP edge: bad requests get Kubernetes `Status` errors with the right code (never a dropped
//! connection), and a watch ends when its client goes away.

mod common;

use common::request;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;

/// Asserts a failure with the given code and that the body is a `Status` with that code.
async fn expect_status(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
    code: u16,
) {
    let (got, text) = request(addr, method, path, content_type, body).await;
    assert_eq!(got, code, "{method} {path} {body}: {text}");
    let status: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(status["kind"], "Status", "{text}");
    assert_eq!(status["code"], code, "{text}");
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";
const ONE: &str = "/api/v1/namespaces/default/configmaps/c";
const JSON: &str = "application/json";
const MERGE: &str = "application/merge-patch+json";
const JSON_PATCH: &str = "application/json-patch+json";
const APPLY: &str = "application/apply-patch+yaml";
const APPLY_PATH: &str = "/api/v1/namespaces/default/configmaps/c?fieldManager=t";

/// (method, path, content type, body, expected code), run against a store holding configmap `c`.
const CASES: &[(&str, &str, &str, &str, u16)] = &[
    ("POST", CMS, JSON, "[1, 2]", 400),
    ("POST", CMS, JSON, "\"text\"", 400),
    ("POST", CMS, JSON, "42", 400),
    ("POST", CMS, JSON, "{not json", 400),
    ("POST", CMS, JSON, "", 400),
    ("POST", CMS, JSON, r#"{"metadata": "x"}"#, 422),
    (
        "POST",
        CMS,
        JSON,
        r#"{"metadata": {"name": "Not_Valid"}}"#,
        422,
    ),
    (
        "POST",
        CMS,
        JSON,
        r#"{"kind": "Pod", "metadata": {"name": "a"}}"#,
        400,
    ),
    (
        "POST",
        CMS,
        "application/vnd.kubernetes.protobuf",
        "k8s",
        415,
    ),
    ("POST", CMS, JSON, r#"{"metadata": {"name": "c"}}"#, 409),
    ("PUT", ONE, JSON, "[]", 400),
    ("PUT", ONE, JSON, r#"{"metadata": {"name": "other"}}"#, 400),
    ("PATCH", ONE, MERGE, "\"x\"", 400),
    (
        "PATCH",
        ONE,
        JSON_PATCH,
        r#"[{"op": "replace", "path": "", "value": []}]"#,
        400,
    ),
    (
        "PATCH",
        ONE,
        JSON_PATCH,
        r#"[{"op": "bogus", "path": "/a"}]"#,
        422,
    ),
    ("PATCH", ONE, JSON_PATCH, r#"{"op": "add"}"#, 422),
    ("PATCH", ONE, "text/plain", "{}", 415),
    ("PATCH", ONE, APPLY, "{}", 422),
    ("PATCH", APPLY_PATH, APPLY, "- a\n- b\n", 400),
    ("PATCH", APPLY_PATH, APPLY, ": : :", 400),
    (
        "GET",
        "/api/v1/namespaces/default/configmaps?labelSelector=a%20in%20(b",
        JSON,
        "",
        400,
    ),
    ("GET", "/api/v1/namespaces/default/widgets", JSON, "", 404),
    ("GET", "/apis/example.com/v1", JSON, "", 404),
    ("GET", "/api/v1/configmaps/c", JSON, "", 404),
    (
        "GET",
        "/api/v1/namespaces/default/namespaces",
        JSON,
        "",
        404,
    ),
    (
        "GET",
        "/api/v1/namespaces/default/configmaps/c/scale",
        JSON,
        "",
        404,
    ),
    ("POST", "/api/v1", JSON, "{}", 405),
];

#[tokio::test]
async fn malformed_requests_are_rejected_with_status_bodies() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let standin = kube_standin::start().await.expect("stand-in starts");
        let addr = standin.addr;
        let (created, _) = request(addr, "POST", CMS, JSON, r#"{"metadata": {"name": "c"}}"#).await;
        assert_eq!(created, 201);
        for (method, path, content_type, body, code) in CASES {
            expect_status(addr, method, path, content_type, body, *code).await;
        }
        // Still serving, and the object is untouched.
        let (code, body) = request(addr, "GET", ONE, JSON, "").await;
        assert_eq!(code, 200);
        let object: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(object["metadata"]["name"], "c");
        assert!(object.get("data").is_none());
    })
    .await
    .expect("test exceeded its deadline");
}

/// Polls `condition` until it holds or the deadline passes.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_watch_ends_when_its_client_goes_away() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::time::timeout(Duration::from_secs(30), async {
        let standin = kube_standin::start().await.expect("stand-in starts");
        assert_eq!(standin.open_watches(), 0);
        let mut conn = tokio::net::TcpStream::connect(standin.addr)
            .await
            .expect("connect");
        let head = format!("GET {CMS}?watch=true HTTP/1.1\r\nHost: standin\r\n\r\n");
        conn.write_all(head.as_bytes()).await.expect("request");
        let mut first = [0u8; 12];
        conn.read_exact(&mut first).await.expect("response head");
        assert_eq!(&first, b"HTTP/1.1 200");
        eventually("the watch to open", || standin.open_watches() == 1).await;
        // No bookmarks and no events: only the closed connection can end it.
        drop(conn);
        eventually("the watch to close", || standin.open_watches() == 0).await;
    })
    .await
    .expect("test exceeded its deadline");
}
