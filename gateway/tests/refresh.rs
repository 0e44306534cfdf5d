//! Token refresh (v1.1 `refresh`) without reconnecting, on real gateways:
//! a narrower `rooms` claim leaves the rooms it no longer allows (with
//! `unsubscribed`, checked across two gateways on a real nats-server), a
//! token of another user, an expired one or a bad signature is
//! `unauthorized` and changes nothing, and the 4001 close follows the new
//! token's `exp`, later or earlier.

mod common;
mod nats;

use std::collections::BTreeSet;
use std::time::Duration;

use common::jwt::{self, SECRET, now};
use common::{Client, Connect, STEP, TestGateway, start_with, within};
use nats::{NatsServer, gateways};
use serde_json::{Value, json};

async fn jwt_gateway() -> TestGateway {
    start_with(|c| {
        c.auth.jwt_secret = Some(SECRET.into());
        c.auth.jwt_leeway_seconds = 0;
    })
    .await
}

async fn connect(gw: &TestGateway, claims: &Value) -> Client {
    gw.try_client(&Connect::bearer(&jwt::hs256(claims)))
        .await
        .expect("token accepted at upgrade")
}

async fn refresh(c: &mut Client, claims: &Value) -> Value {
    c.ok(json!({"type": "refresh", "token": jwt::hs256(claims)}))
        .await
}

#[tokio::test]
async fn a_narrower_rooms_claim_leaves_rooms_it_no_longer_allows_across_the_cluster() {
    within(60, async {
        let server = NatsServer::start().await;
        let gws = gateways(vec![vec![server.url()]; 2]).await;
        let (a, b) = (&gws[0], &gws[1]);
        let wide = json!({"sub": "alice", "exp": now() + 600, "rooms": ["chat:*", "news"]});
        let mut alice = connect(a, &wide).await;
        let mut witness = nats::user(a, "witness").await;
        let mut publisher = nats::user(b, "publisher").await;
        for room in ["chat:1", "chat:2", "news"] {
            alice.join(room).await;
            witness.join(room).await;
        }

        let exp = now() + 300;
        let narrow = json!({"sub": "alice", "exp": exp, "rooms": ["chat:1"]});
        let id = alice.fresh_id();
        alice
            .send_json(json!({"type": "refresh", "token": jwt::hs256(&narrow), "id": id}))
            .await;
        // Both `unsubscribed` frames come before the `ok`.
        let mut left = BTreeSet::new();
        for _ in 0..2 {
            let frame = alice.recv().await;
            assert_eq!(frame["type"], "unsubscribed", "{frame}");
            left.insert(frame["room"].as_str().expect("room").to_owned());
        }
        assert_eq!(left, BTreeSet::from(["chat:2".into(), "news".into()]));
        let ok = alice.recv().await;
        assert_eq!(ok, json!({"type": "ok", "id": id, "exp": exp}));

        // Published on the other gateway: the room still allowed arrives,
        // the others do not (the witness on alice's gateway got each).
        for room in ["chat:2", "news", "chat:1"] {
            publisher
                .ok(json!({"type": "publish", "room": room, "data": room}))
                .await;
            let got = witness.recv_type("message").await;
            assert_eq!(got["room"], room, "{got}");
        }
        let got = alice.recv_type("message").await;
        assert_eq!(got["room"], "chat:1", "{got}");
        alice.expect_quiet().await;
        alice
            .err(json!({"type": "join", "room": "news"}), "forbidden")
            .await;
        alice
            .err(
                json!({"type": "publish", "room": "chat:2", "data": 1}),
                "forbidden",
            )
            .await;

        // A wider token allows them again; rejoining works as a fresh join.
        let anywhere = json!({"sub": "alice", "exp": now() + 600});
        refresh(&mut alice, &anywhere).await;
        alice.join("news").await;
        publisher
            .ok(json!({"type": "publish", "room": "news", "data": "again"}))
            .await;
        let got = alice.recv_type("message").await;
        assert_eq!(
            (&got["room"], &got["data"]),
            (&json!("news"), &json!("again"))
        );
    })
    .await;
}

#[tokio::test]
async fn another_sub_an_expired_token_or_a_bad_signature_is_unauthorized_and_changes_nothing() {
    within(30, async {
        let gw = jwt_gateway().await;
        let first = json!({"sub": "alice", "exp": now() + 600, "rooms": ["r"]});
        let mut alice = connect(&gw, &first).await;
        alice.join("r").await;
        let bad = [
            jwt::hs256(&json!({"sub": "mallory", "exp": now() + 600})),
            jwt::hs256(&json!({"sub": "alice", "exp": now() - 60})),
            jwt::hs256_with("another-secret-0123456789abcdef", &jwt::claims("alice")),
            jwt::alg_none(&jwt::claims("alice")),
            jwt::hs256(&json!({"sub": "alice", "nbf": now() + 120, "exp": now() + 600})),
            "not.a.jwt".into(),
            String::new(),
        ];
        for token in &bad {
            let reply = alice
                .err(json!({"type": "refresh", "token": token}), "unauthorized")
                .await;
            assert!(reply["message"].is_string(), "{reply}");
        }
        // Without an id, the error comes without one.
        alice
            .send_json(json!({"type": "refresh", "token": bad[0]}))
            .await;
        alice.expect_error_without_id("unauthorized").await;
        alice
            .err(json!({"type": "refresh", "token": 5}), "bad_request")
            .await;
        alice.err(json!({"type": "refresh"}), "bad_request").await;

        // The session is as it was: still in `r`, still limited to it.
        alice
            .ok(json!({"type": "publish", "room": "r", "data": "still here"}))
            .await;
        let got = alice.recv_type("message").await;
        assert_eq!(got["data"], "still here", "{got}");
        alice
            .err(json!({"type": "join", "room": "other"}), "forbidden")
            .await;
        assert_eq!(
            gw.metric("roomcast_errors_total", r#"code="unauthorized""#)
                .await,
            Some(bad.len() as f64 + 1.0)
        );
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_later_exp_moves_the_4001_later() {
    within(30, async {
        let gw = jwt_gateway().await;
        let connected = tokio::time::Instant::now();
        let issued = now();
        // The upgrade and the refresh must both be done before the first
        // token expires: at least 2 s, however loaded the machine.
        let mut c = connect(&gw, &json!({"sub": "slow", "exp": issued + 3})).await;
        let later = issued + 6;
        let ok = refresh(&mut c, &json!({"sub": "slow", "exp": later})).await;
        assert_eq!(ok["exp"], later);
        let code = c.wait_close(Duration::from_secs(10)).await;
        assert_eq!(code, Some(4001));
        // `issued` was truncated to the second: the new exp is at least 5 s
        // after the connection, the old one at most 3 s.
        let lived = connected.elapsed();
        assert!(
            lived >= Duration::from_millis(4_900),
            "closed after {lived:?}: the refreshed exp was not followed"
        );
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn an_earlier_exp_moves_the_4001_earlier() {
    within(30, async {
        let gw = jwt_gateway().await;
        let mut c = connect(&gw, &json!({"sub": "brief", "exp": now() + 600})).await;
        let refreshed = tokio::time::Instant::now();
        let sooner = now() + 2;
        let ok = refresh(&mut c, &json!({"sub": "brief", "exp": sooner})).await;
        assert_eq!(ok["exp"], sooner);
        let code = c.wait_close(STEP).await;
        assert_eq!(code, Some(4001), "closed with 4001 at the new exp");
        assert!(refreshed.elapsed() <= Duration::from_secs(3));
        // A token without exp never expires: refresh answers null.
        let mut d = connect(&gw, &json!({"sub": "brief", "exp": now() + 600})).await;
        let ok = refresh(&mut d, &json!({"sub": "brief"})).await;
        assert_eq!(ok["exp"], Value::Null);
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn without_jwt_a_refresh_is_a_success_with_exp_null() {
    within(20, async {
        let gw = common::start().await;
        let mut c = gw.client().await;
        let ok = c.ok(json!({"type": "refresh", "token": "anything"})).await;
        assert_eq!(ok["exp"], Value::Null);
        c.join("r").await;
        gw.stop().await;
    })
    .await;
}
