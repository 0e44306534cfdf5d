//! The HTTP phase under hostile clients, over raw sockets: a request body
//! that never completes meets a total read deadline (408), an announced
//! `Content-Length` over the limit is refused at once (413), connections not
//! yet upgraded are bounded in number, and idle ones are closed.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod common;

use std::time::Duration;

use common::raw::{Reply, read_reply};
use common::{STEP, TestGateway, start_with, within};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The read deadline the tests configure.
const READ_TIMEOUT_MS: u64 = 1_000;

/// The read deadline of the gateways that must answer "at once": far longer
/// than a reply may take on a loaded machine ([`STEP`]), so an answer within
/// the step proves the gateway did not wait for the deadline.
const PATIENT_READ_TIMEOUT_MS: u64 = 60_000;

async fn gateway(api_key: Option<&str>) -> TestGateway {
    gateway_reading(api_key, READ_TIMEOUT_MS).await
}

async fn gateway_reading(api_key: Option<&str>, read_timeout_ms: u64) -> TestGateway {
    let key = api_key.map(str::to_owned);
    start_with(move |c| {
        c.limits.http_read_timeout_ms = read_timeout_ms;
        c.limits.max_payload_bytes = 1_000;
        c.auth.api_key = key;
    })
    .await
}

async fn connect(gw: &TestGateway) -> TcpStream {
    tokio::time::timeout(STEP, TcpStream::connect(gw.public))
        .await
        .expect("connect in time")
        .expect("TCP connect")
}

/// The head of a publish whose body is `length` bytes long.
fn publish_head(length: u64, key: Option<&str>) -> String {
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    format!(
        "POST /v1/publish HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n\
         {auth}Content-Length: {length}\r\n\r\n"
    )
}

fn json(reply: &Reply) -> Value {
    serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{e}: {reply:?}"))
}

/// Sends a publish head and one byte of its body, then nothing more.
async fn stalled_publish(gw: &TestGateway, key: Option<&str>) -> (Reply, Duration) {
    // Timed from before the connection exists, so from before any deadline
    // the gateway may run from its accept.
    let started = Instant::now();
    let mut tcp = connect(gw).await;
    tcp.write_all(publish_head(100, key).as_bytes())
        .await
        .unwrap();
    tcp.write_all(b"{").await.unwrap();
    let reply = read_reply(&mut tcp, STEP).await;
    (reply, started.elapsed())
}

#[tokio::test]
async fn a_body_that_stalls_is_408_after_the_read_deadline_with_or_without_a_key() {
    within(30, async {
        for key in [None, Some("k3y")] {
            let gw = gateway(key).await;
            let (reply, took) = stalled_publish(&gw, key).await;
            assert_eq!(reply.status, 408, "key {key:?}: {reply:?}");
            assert_eq!(json(&reply)["code"], "bad_request", "{reply:?}");
            assert!(json(&reply)["message"].is_string(), "{reply:?}");
            assert!(
                took >= Duration::from_millis(READ_TIMEOUT_MS - 100) && took < STEP,
                "answered after {took:?}"
            );
            gw.stop().await;
        }
        // Without the key the body is never waited for.
        let gw = gateway_reading(Some("k3y"), PATIENT_READ_TIMEOUT_MS).await;
        let (reply, took) = stalled_publish(&gw, None).await;
        assert_eq!(reply.status, 401, "{reply:?}");
        assert!(
            took < Duration::from_millis(PATIENT_READ_TIMEOUT_MS),
            "{took:?}"
        );
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_body_trickling_in_is_cut_off_by_the_total_deadline() {
    within(30, async {
        let gw = gateway(None).await;
        let mut tcp = connect(&gw).await;
        let started = Instant::now();
        tcp.write_all(publish_head(1_000, None).as_bytes())
            .await
            .unwrap();
        let (mut rd, mut wr) = tcp.split();
        // One byte every 100 ms: never idle long, never done.
        let trickle = async {
            for _ in 0..100 {
                if wr.write_all(b" ").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            std::future::pending::<()>().await;
        };
        let reply = tokio::select! {
            reply = read_reply(&mut rd, STEP) => reply,
            () = trickle => unreachable!("the trickle never ends"),
        };
        let took = started.elapsed();
        assert_eq!(reply.status, 408, "{reply:?}");
        assert!(
            took < Duration::from_millis(READ_TIMEOUT_MS) + STEP,
            "{took:?}"
        );
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn an_announced_length_over_the_limit_is_413_at_once() {
    within(20, async {
        let gw = gateway_reading(None, PATIENT_READ_TIMEOUT_MS).await;
        for length in [1u64 << 40, 1_000 + 4 * 1024 + 1] {
            let mut tcp = connect(&gw).await;
            let started = Instant::now();
            tcp.write_all(publish_head(length, None).as_bytes())
                .await
                .unwrap();
            let reply = read_reply(&mut tcp, STEP).await;
            assert_eq!(reply.status, 413, "length {length}: {reply:?}");
            assert_eq!(json(&reply)["code"], "payload_too_large", "{reply:?}");
            assert!(json(&reply)["message"].is_string(), "{reply:?}");
            assert!(
                started.elapsed() < Duration::from_millis(PATIENT_READ_TIMEOUT_MS),
                "not at once: {:?}",
                started.elapsed()
            );
        }
        // A chunked body that grows past the limit is 413 too.
        let mut tcp = connect(&gw).await;
        let chunk = "x".repeat(6_000);
        let request = format!(
            "POST /v1/publish HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n",
            chunk.len()
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let reply = read_reply(&mut tcp, STEP).await;
        assert_eq!(reply.status, 413, "{reply:?}");
        assert_eq!(json(&reply)["code"], "payload_too_large", "{reply:?}");
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn connections_in_the_http_phase_are_bounded_and_upgraded_ones_do_not_count() {
    within(30, async {
        let gw = start_with(|c| {
            c.limits.max_http_connections = 3;
            // The idle connections must keep their places until the fourth
            // is refused, however slowly the test runs.
            c.limits.http_read_timeout_ms = PATIENT_READ_TIMEOUT_MS;
        })
        .await;
        // Three WebSocket clients: upgraded, so out of the HTTP phase.
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(gw.client().await);
        }
        gw.wait_metric("roomcast_http_connections", "", 0.0).await;
        // Three connections that say nothing take every place.
        let mut idle = Vec::new();
        for _ in 0..3 {
            idle.push(connect(&gw).await);
        }
        gw.wait_metric("roomcast_http_connections", "", 3.0).await;
        // The fourth is told at once and closed.
        let mut refused = connect(&gw).await;
        let reply = read_reply(&mut refused, STEP).await;
        assert_eq!(reply.status, 503, "{reply:?}");
        let mut rest = Vec::new();
        let n = tokio::time::timeout(STEP, refused.read_to_end(&mut rest))
            .await
            .expect("closed in time")
            .unwrap_or(0);
        assert_eq!(n, 0, "nothing after the 503");
        assert_eq!(
            gw.metric("roomcast_http_connections_refused_total", "")
                .await,
            Some(1.0)
        );
        // A place freed is a place for the next client.
        idle.pop();
        gw.wait_metric("roomcast_http_connections", "", 2.0).await;
        let mut c = gw.client().await;
        c.ok(serde_json::json!({"type": "ping"})).await;
        for client in clients {
            client.close().await;
        }
        drop(idle);
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_connection_that_sends_no_request_is_closed_after_the_read_deadline() {
    within(20, async {
        let gw = gateway(None).await;
        // Before the connection exists: the deadline runs from the accept.
        let started = Instant::now();
        let mut tcp = connect(&gw).await;
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(STEP, tcp.read_to_end(&mut rest))
            .await
            .expect("closed within the step");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(READ_TIMEOUT_MS - 100),
            "closed after {took:?}"
        );
        gw.wait_metric("roomcast_http_connections", "", 0.0).await;
        gw.stop().await;
    })
    .await;
}
