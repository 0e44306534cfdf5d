//! The server API additions of v1.1 with two gateways on a real nats-server:
//! `POST /v1/disconnect` closes every connection of a user on every gateway
//! with 4003, `POST /v1/unsubscribe` takes every connection of a user out of
//! a room on every gateway (each told with `unsubscribed`), and
//! `POST /v1/broadcast` publishes to 1,000 rooms (1,001, or a bad room,
//! are a 400 that delivers nothing). All behind the API key, with clear 400s
//! for bad bodies and 503 while the bus is down.

mod common;
mod nats;

use std::collections::BTreeSet;

use common::{Client, TestGateway, within};
use nats::{NatsServer, discover, gateway_with, metric, user};
use serde_json::{Value, json};

const KEY: &str = "backend-key-0123456789";

/// A nats-server and gateways gw-a and gw-b on it, with the API key and
/// room for a thousand rooms per connection.
async fn setup() -> (NatsServer, TestGateway, TestGateway) {
    let server = NatsServer::start().await;
    let tweak = |c: &mut roomcast_gateway::Config| {
        c.auth.api_key = Some(KEY.into());
        c.limits.max_rooms_per_connection = 1_000;
    };
    let a = gateway_with("gw-a", vec![server.url()], tweak).await;
    let b = gateway_with("gw-b", vec![server.url()], tweak).await;
    discover(&[&a, &b]).await;
    (server, a, b)
}

async fn post(gw: &TestGateway, path: &str, body: &Value) -> (u16, Value) {
    gw.post(path, &body.to_string(), Some(KEY)).await
}

/// Joins every room in one burst of frames, then reads every `ok`.
async fn join_all(c: &mut Client, rooms: &[String]) {
    for (i, room) in rooms.iter().enumerate() {
        c.send_json(json!({"type": "join", "room": room, "id": i}))
            .await;
    }
    for i in 0..rooms.len() {
        let reply = c.reply_to(&json!(i)).await;
        assert_eq!(reply["type"], "ok", "{reply}");
    }
}

#[tokio::test]
async fn disconnect_closes_every_connection_of_the_user_on_every_gateway_with_4003() {
    within(60, async {
        let (_server, a, b) = setup().await;
        let mut tabs = vec![
            user(&a, "alice").await,
            user(&a, "alice").await,
            user(&b, "alice").await,
        ];
        let mut bob_a = user(&a, "bob").await;
        let mut bob_b = user(&b, "bob").await;
        for (status, path, body) in [
            (400, "/v1/disconnect", json!({})),
            (400, "/v1/disconnect", json!({"user": ""})),
            (400, "/v1/disconnect", json!({"user": 7})),
        ] {
            let (got, reply) = post(&b, path, &body).await;
            assert_eq!(got, status, "{body}: {reply}");
            assert_eq!(reply["code"], "bad_request", "{reply}");
        }
        let (status, _) = b.post("/v1/disconnect", r#"{"user":"alice"}"#, None).await;
        assert_eq!(status, 401, "the API key is required");
        for tab in &mut tabs {
            tab.expect_quiet().await;
        }

        let (status, reply) = post(&b, "/v1/disconnect", &json!({"user": "alice"})).await;
        assert_eq!((status, reply), (202, json!({"ok": true})));
        for tab in &mut tabs {
            assert_eq!(tab.wait_close(common::STEP).await, Some(4003));
        }
        for bob in [&mut bob_a, &mut bob_b] {
            bob.expect_quiet().await;
        }
        a.wait_metric("roomcast_connections", "", 1.0).await;
        b.wait_metric("roomcast_connections", "", 1.0).await;
        // Nobody to disconnect is a success too.
        let (status, _) = post(&a, "/v1/disconnect", &json!({"user": "nobody"})).await;
        assert_eq!(status, 202);
        // The user may connect again.
        user(&a, "alice").await.expect_quiet().await;
    })
    .await;
}

#[tokio::test]
async fn unsubscribe_takes_the_user_out_of_the_room_on_every_gateway() {
    within(60, async {
        let (_server, a, b) = setup().await;
        let mut alice_a = user(&a, "alice").await;
        let mut alice_b = user(&b, "alice").await;
        let mut carol_a = user(&a, "carol").await;
        let mut carol_b = user(&b, "carol").await;
        for c in [&mut alice_a, &mut alice_b, &mut carol_a, &mut carol_b] {
            c.join("room").await;
        }
        alice_a.join("kept").await;
        let mut alice_outside = user(&b, "alice").await;

        for (body, code) in [
            (json!({"room": "room"}), "bad_request"),
            (json!({"user": "alice"}), "bad_request"),
            (json!({"user": "alice", "room": "a b"}), "invalid_room"),
            (json!({"user": "alice", "room": "chat.*"}), "invalid_room"),
        ] {
            let (status, reply) = post(&a, "/v1/unsubscribe", &body).await;
            assert_eq!(
                (status, &reply["code"]),
                (400, &json!(code)),
                "{body}: {reply}"
            );
        }

        let (status, reply) = post(
            &a,
            "/v1/unsubscribe",
            &json!({"user": "alice", "room": "room"}),
        )
        .await;
        assert_eq!((status, reply), (202, json!({"ok": true})));
        for alice in [&mut alice_a, &mut alice_b] {
            let got = alice.recv().await;
            assert_eq!(got, json!({"type": "unsubscribed", "room": "room"}));
        }
        // A connection that had not joined the room is not told anything.
        alice_outside.expect_quiet().await;

        // Published on each gateway: carol gets both, alice neither (the
        // same fan-out reached carol on her gateway), but still her other room.
        let mut publisher = user(&b, "publisher").await;
        for data in ["one", "two"] {
            publisher
                .ok(json!({"type": "publish", "room": "room", "data": data}))
                .await;
        }
        let (status, _) = post(&a, "/v1/publish", &json!({"room": "room", "data": "three"})).await;
        assert_eq!(status, 202);
        // Two publishers: no order between them.
        let want = BTreeSet::from(["one".to_owned(), "two".into(), "three".into()]);
        for carol in [&mut carol_a, &mut carol_b] {
            let mut got = BTreeSet::new();
            for _ in 0..want.len() {
                let message = carol.recv_type("message").await;
                got.insert(message["data"].as_str().expect("data").to_owned());
            }
            assert_eq!(got, want);
        }
        for alice in [&mut alice_a, &mut alice_b] {
            alice.expect_quiet().await;
        }
        publisher
            .ok(json!({"type": "publish", "room": "kept", "data": "k"}))
            .await;
        assert_eq!(alice_a.recv_type("message").await["room"], "kept");

        // The sessions know they left: joining again is a real join.
        alice_b.join("room").await;
        publisher
            .ok(json!({"type": "publish", "room": "room", "data": "back"}))
            .await;
        assert_eq!(alice_b.recv_type("message").await["data"], "back");
        alice_a.expect_quiet().await;
    })
    .await;
}

#[tokio::test]
async fn broadcast_publishes_to_a_thousand_rooms_and_refuses_more_or_a_bad_room() {
    within(120, async {
        let (_server, a, b) = setup().await;
        let rooms: Vec<String> = (0..1_000).map(|i| format!("bc:{i}")).collect();
        let mut far = user(&b, "far").await;
        join_all(&mut far, &rooms).await;
        let mut near = user(&a, "near").await;
        join_all(&mut near, &rooms[..2]).await;

        let mut over = rooms.clone();
        over.push("bc:1000".into());
        let (status, reply) = post(&a, "/v1/broadcast", &json!({"rooms": over, "data": 0})).await;
        assert_eq!(
            (status, &reply["code"]),
            (400, &json!("bad_request")),
            "{reply}"
        );
        let mut bad = rooms.clone();
        bad[500] = "no spaces".into();
        bad[700] = "x.y".into();
        let (status, reply) = post(&a, "/v1/broadcast", &json!({"rooms": bad, "data": 0})).await;
        assert_eq!(
            (status, &reply["code"]),
            (400, &json!("invalid_room")),
            "{reply}"
        );
        let message = reply["message"].as_str().expect("message");
        assert!(message.contains(r#"rooms[500] "no spaces""#), "{message}");
        for (body, code) in [
            (json!({"rooms": [], "data": 0}), "bad_request"),
            (json!({"rooms": "bc:1", "data": 0}), "bad_request"),
            (json!({"rooms": ["bc:1"]}), "bad_request"),
        ] {
            let (status, reply) = post(&a, "/v1/broadcast", &body).await;
            assert_eq!(
                (status, &reply["code"]),
                (400, &json!(code)),
                "{body}: {reply}"
            );
        }
        let (status, _) = a
            .post("/v1/broadcast", r#"{"rooms":["bc:1"],"data":0}"#, None)
            .await;
        assert_eq!(status, 401, "the API key is required");
        far.expect_quiet().await;
        near.expect_quiet().await;

        let out_before = metric(&a, "roomcast_bus_messages_out_total").await;
        let (status, reply) = post(
            &a,
            "/v1/broadcast",
            &json!({"rooms": rooms, "data": {"n": 1}}),
        )
        .await;
        assert_eq!((status, reply), (202, json!({"ok": true})));
        let mut seen = BTreeSet::new();
        for _ in 0..rooms.len() {
            let got = far.recv_type("message").await;
            assert_eq!(
                (&got["from"], &got["data"]),
                (&Value::Null, &json!({"n": 1}))
            );
            assert!(
                seen.insert(got["room"].as_str().expect("room").to_owned()),
                "{got}"
            );
        }
        assert_eq!(seen, rooms.iter().cloned().collect::<BTreeSet<_>>());
        far.expect_quiet().await;
        for room in &rooms[..2] {
            assert_eq!(&near.recv_type("message").await["room"], room);
        }
        near.expect_quiet().await;
        let out = metric(&a, "roomcast_bus_messages_out_total").await - out_before;
        assert!(out >= 1_000.0, "one bus publish per room, {out}");
    })
    .await;
}

#[tokio::test]
async fn commands_answer_503_while_the_bus_is_down() {
    within(60, async {
        let mut server = NatsServer::start().await;
        let gw = gateway_with("gw-down", vec![server.url()], |c| {
            c.auth.api_key = Some(KEY.into());
        })
        .await;
        server.stop();
        gw.wait_metric("roomcast_bus_up", "", 0.0).await;
        for (path, body) in [
            ("/v1/disconnect", json!({"user": "u"})),
            ("/v1/unsubscribe", json!({"user": "u", "room": "r"})),
            ("/v1/broadcast", json!({"rooms": ["r"], "data": 1})),
        ] {
            let (status, reply) = post(&gw, path, &body).await;
            assert_eq!(
                (status, &reply["code"]),
                (503, &json!("unavailable")),
                "{path}: {reply}"
            );
        }
    })
    .await;
}
