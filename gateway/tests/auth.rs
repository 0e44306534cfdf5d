//! Connection authentication: JWT (HS256, RS256, ES256) in the header or the
//! `token` query parameter, every rejection as HTTP 401 before the upgrade,
//! the `rooms` claim, expiry during a session (4001), the Origin allow-list,
//! and user identity (direct and presence) across connections of one user.

mod common;

use common::jwt::{self, SECRET, claims, now};
use common::{Connect, STEP, TestGateway, start_with, within};
use roomcast_gateway::Config;
use serde_json::json;

async fn hs256_gateway() -> TestGateway {
    start_with(|c| c.auth.jwt_secret = Some(SECRET.into())).await
}

fn with_public_key(pem: &str) -> impl FnOnce(&mut Config) + '_ {
    move |c| c.auth.jwt_public_key = Some(pem.into())
}

/// Asserts that `token` upgrades both as header and query, as user `sub`.
async fn assert_accepted(gw: &TestGateway, token: &str, sub: &str) {
    for opts in [Connect::bearer(token), Connect::query(token)] {
        let mut c = gw
            .try_client(&opts)
            .await
            .unwrap_or_else(|e| panic!("valid token refused ({opts:?}): {e}"));
        assert_eq!(c.user(), sub, "user id is the token's sub");
        c.ok(json!({"type": "ping"})).await;
    }
}

#[tokio::test]
async fn hs256_token_is_accepted_in_header_and_query() {
    within(20, async {
        let gw = hs256_gateway().await;
        assert_accepted(&gw, &jwt::hs256(&claims("alice")), "alice").await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn rs256_token_is_accepted_in_header_and_query() {
    within(20, async {
        let gw = start_with(with_public_key(jwt::RSA_PUBLIC)).await;
        assert_accepted(&gw, &jwt::rs256(&claims("rsa-user")), "rsa-user").await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn es256_token_is_accepted_in_header_and_query() {
    within(20, async {
        let gw = start_with(with_public_key(jwt::EC_PUBLIC)).await;
        assert_accepted(&gw, &jwt::es256(&claims("ec-user")), "ec-user").await;
        gw.stop().await;
    })
    .await;
}

/// Asserts that `token` is refused with 401 both as header and query.
async fn assert_unauthorized(gw: &TestGateway, token: &str, what: &str) {
    for opts in [Connect::bearer(token), Connect::query(token)] {
        let status = gw.refused(&opts).await;
        assert_eq!(status, 401, "{what} ({opts:?})");
    }
}

#[tokio::test]
async fn missing_or_garbage_tokens_are_401() {
    within(20, async {
        let gw = hs256_gateway().await;
        assert_eq!(gw.refused(&Connect::default()).await, 401, "no token");
        assert_unauthorized(&gw, "not-a-jwt", "garbage").await;
        assert_unauthorized(&gw, "a.b.c", "three garbage segments").await;
        // No connection was ever established.
        assert_eq!(gw.metric("roomcast_connections", "").await, Some(0.0));
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn alg_none_is_401() {
    within(20, async {
        let gw = hs256_gateway().await;
        assert_unauthorized(&gw, &jwt::alg_none(&claims("mallory")), "alg none").await;
        let gw2 = start_with(with_public_key(jwt::RSA_PUBLIC)).await;
        assert_unauthorized(&gw2, &jwt::alg_none(&claims("mallory")), "alg none (RSA)").await;
        gw.stop().await;
        gw2.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bad_signatures_are_401() {
    within(20, async {
        let gw = hs256_gateway().await;
        let wrong_secret = jwt::hs256_with("another-secret-another-secret!!", &claims("mallory"));
        assert_unauthorized(&gw, &wrong_secret, "wrong HS256 secret").await;
        // A valid token whose payload was swapped for another user's.
        let good = jwt::hs256(&claims("alice"));
        let other = jwt::hs256(&claims("admin"));
        let parts: Vec<&str> = good.split('.').collect();
        let other_payload = other.split('.').nth(1).expect("payload");
        let tampered = format!("{}.{}.{}", parts[0], other_payload, parts[2]);
        assert_unauthorized(&gw, &tampered, "tampered payload").await;
        gw.stop().await;

        let rsa = start_with(with_public_key(jwt::RSA_PUBLIC)).await;
        // Signed by the EC key, presented to an RSA verifier.
        assert_unauthorized(&rsa, &jwt::es256(&claims("mallory")), "ES256 to RS256 key").await;
        // Algorithm confusion: HS256 with the public key as the secret.
        let confused = jwt::hs256_with(jwt::RSA_PUBLIC, &claims("mallory"));
        assert_unauthorized(&rsa, &confused, "HS256 keyed with the RSA public key").await;
        rsa.stop().await;

        let ec = start_with(with_public_key(jwt::EC_PUBLIC)).await;
        assert_unauthorized(&ec, &jwt::rs256(&claims("mallory")), "RS256 to ES256 key").await;
        ec.stop().await;
    })
    .await;
}

#[tokio::test]
async fn expired_future_and_subjectless_tokens_are_401() {
    within(20, async {
        let gw = hs256_gateway().await;
        let expired = json!({"sub": "alice", "exp": now() - 120});
        assert_unauthorized(&gw, &jwt::hs256(&expired), "past exp").await;
        let not_yet = json!({"sub": "alice", "nbf": now() + 120, "exp": now() + 600});
        assert_unauthorized(&gw, &jwt::hs256(&not_yet), "future nbf").await;
        let no_sub = json!({"exp": now() + 600});
        assert_unauthorized(&gw, &jwt::hs256(&no_sub), "missing sub").await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn issuer_and_audience_are_enforced_when_configured() {
    within(20, async {
        let gw = start_with(|c| {
            c.auth.jwt_secret = Some(SECRET.into());
            c.auth.jwt_issuer = Some("https://issuer.test".into());
            c.auth.jwt_audience = Some("roomcast".into());
        })
        .await;
        let mut good = claims("alice");
        good["iss"] = json!("https://issuer.test");
        good["aud"] = json!("roomcast");
        gw.try_client(&Connect::bearer(&jwt::hs256(&good)))
            .await
            .expect("matching iss and aud upgrade");
        let mut bad_iss = good.clone();
        bad_iss["iss"] = json!("https://evil.test");
        assert_unauthorized(&gw, &jwt::hs256(&bad_iss), "wrong iss").await;
        let mut bad_aud = good.clone();
        bad_aud["aud"] = json!("someone-else");
        assert_unauthorized(&gw, &jwt::hs256(&bad_aud), "wrong aud").await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn rooms_claim_limits_join_publish_and_presence() {
    within(20, async {
        let gw = hs256_gateway().await;
        let mut limited = claims("limited");
        limited["rooms"] = json!(["chat:*", "news"]);
        let mut c = gw
            .try_client(&Connect::bearer(&jwt::hs256(&limited)))
            .await
            .expect("upgrade");
        c.join("chat:lobby").await;
        c.join("chat:a/b").await;
        c.join("news").await;
        for room in ["newsroom", "news:eu", "chat", "other", "xchat:lobby"] {
            c.err(json!({"type": "join", "room": room}), "forbidden")
                .await;
            c.err(
                json!({"type": "publish", "room": room, "data": 1}),
                "forbidden",
            )
            .await;
            c.err(json!({"type": "presence", "room": room}), "forbidden")
                .await;
        }
        c.ok(json!({"type": "publish", "room": "chat:lobby", "data": "allowed"}))
            .await;
        let m = c.recv_type("message").await;
        assert_eq!(m["data"], "allowed");
        // Without the claim every room is allowed.
        let mut free = gw
            .try_client(&Connect::bearer(&jwt::hs256(&claims("free"))))
            .await
            .expect("upgrade");
        free.join("other").await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_token_expiring_mid_session_closes_with_4001() {
    within(20, async {
        let gw = start_with(|c| {
            c.auth.jwt_secret = Some(SECRET.into());
            c.auth.jwt_leeway_seconds = 0;
        })
        .await;
        // At least 2 s to upgrade and ping before it expires, loaded or not.
        let short = json!({"sub": "brief", "exp": now() + 3});
        let mut c = gw
            .try_client(&Connect::bearer(&jwt::hs256(&short)))
            .await
            .expect("token still valid at upgrade");
        c.ok(json!({"type": "ping"})).await;
        let code = c.wait_close(STEP).await;
        assert_eq!(code, Some(4001), "closed with 4001 when exp passes");
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn origin_allow_list_refuses_other_origins_with_403() {
    within(20, async {
        let gw = start_with(|c| {
            c.auth.allowed_origins = vec!["https://app.example".into()];
        })
        .await;
        let from = |origin: &str| Connect {
            origin: Some(origin.into()),
            ..Connect::default()
        };
        gw.try_client(&from("https://app.example"))
            .await
            .expect("listed origin upgrades");
        for evil in [
            "https://evil.example",
            "http://app.example",
            "https://app.example.evil.example",
            "null",
        ] {
            assert_eq!(gw.refused(&from(evil)).await, 403, "origin {evil}");
        }
        // Non-browser clients send no Origin; the list is about browsers.
        gw.try_client(&Connect::default())
            .await
            .expect("no Origin header upgrades");
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn send_reaches_every_connection_of_the_user() {
    within(20, async {
        let gw = hs256_gateway().await;
        let connect = |sub: &'static str| {
            let token = jwt::hs256(&claims(sub));
            let gw = &gw;
            async move {
                gw.try_client(&Connect::bearer(&token))
                    .await
                    .expect("upgrade")
            }
        };
        let mut bob1 = connect("bob").await;
        let mut bob2 = connect("bob").await;
        let mut carol = connect("carol").await;
        let mut alice = connect("alice").await;
        alice
            .ok(json!({"type": "send", "to": "bob", "data": "psst"}))
            .await;
        for b in [&mut bob1, &mut bob2] {
            let d = b.recv_type("direct").await;
            assert_eq!(d["from"], "alice");
            assert_eq!(d["data"], "psst");
        }
        carol.expect_quiet().await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn presence_lists_distinct_users() {
    within(20, async {
        let gw = hs256_gateway().await;
        let mut conns = Vec::new();
        for sub in ["dave", "dave", "erin"] {
            let token = jwt::hs256(&claims(sub));
            let mut c = gw
                .try_client(&Connect::bearer(&token))
                .await
                .expect("upgrade");
            c.join("team").await;
            conns.push(c);
        }
        let reply = conns[0]
            .ok(json!({"type": "presence", "room": "team"}))
            .await;
        let mut members: Vec<String> =
            serde_json::from_value(reply["members"].clone()).expect("members: strings");
        members.sort();
        assert_eq!(members, ["dave", "erin"], "each user once");
        // One of dave's connections leaving keeps dave present.
        conns[0].ok(json!({"type": "leave", "room": "team"})).await;
        let reply = conns[2]
            .ok(json!({"type": "presence", "room": "team"}))
            .await;
        let mut members: Vec<String> =
            serde_json::from_value(reply["members"].clone()).expect("members: strings");
        members.sort();
        assert_eq!(members, ["dave", "erin"]);
        gw.stop().await;
    })
    .await;
}
