//! The gateway's NATS connection options against a real nats-server that
//! demands them: token, user/password, and TLS with client certificates. A
//! gateway with the right credentials joins the cluster; one with wrong ones
//! is refused by the server and stays unready.

mod common;
mod nats;

use common::{TestGateway, within};
use nats::{NatsServer, fixture, gateway_with, metric, scenarios, user};
use roomcast_gateway::Config;
use serde_json::json;

/// Starts a gateway whose NATS connection the server refuses; asserts it is
/// unready with the bus down once the server has logged the refusal.
async fn refused(nats: &NatsServer, url: String, why: &str, tweak: impl FnOnce(&mut Config)) {
    let gw: TestGateway = common::start_with(|c| {
        c.node_name = "gw-refused".into();
        c.nats.url = vec![url];
        c.nats.cluster_name = nats::CLUSTER.into();
        c.auth.jwt_secret = Some(common::jwt::SECRET.into());
        tweak(c);
    })
    .await;
    nats.wait_log(why).await;
    assert_eq!(
        common::get_status(&gw.admin_url("/readyz")).await,
        503,
        "refused by NATS: not ready"
    );
    assert_eq!(metric(&gw, "roomcast_bus_up").await, 0.0);
    let mut c = user(&gw, "lonely").await;
    c.err(json!({"type": "join", "room": "r"}), "unavailable")
        .await;
}

/// Two gateways with the same options relay a message.
async fn relay_works(nats: &NatsServer, url: &str, tweak: impl Fn(&mut Config)) {
    let a = gateway_with("gw-a", vec![url.to_owned()], &tweak).await;
    let b = gateway_with("gw-b", vec![url.to_owned()], &tweak).await;
    assert!(nats.is_running());
    scenarios::publish_crosses_byte_exact(&a, &b).await;
}

#[tokio::test]
async fn token_authentication() {
    within(60, async {
        let nats = NatsServer::start_with(&["--auth", "s3cret-token"]).await;
        relay_works(&nats, &nats.url(), |c| {
            c.nats.token = Some("s3cret-token".into());
        })
        .await;
        refused(&nats, nats.url(), "authentication error", |c| {
            c.nats.token = Some("wrong".into());
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn user_and_password_authentication() {
    within(60, async {
        let nats = NatsServer::start_with(&["--user", "roomcast", "--pass", "pa55"]).await;
        relay_works(&nats, &nats.url(), |c| {
            c.nats.user = Some("roomcast".into());
            c.nats.password = Some("pa55".into());
        })
        .await;
        refused(&nats, nats.url(), "authentication error", |c| {
            c.nats.user = Some("roomcast".into());
            c.nats.password = Some("wrong".into());
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn tls_with_client_certificates() {
    within(60, async {
        let path = |name: &str| fixture(name).display().to_string();
        let nats = NatsServer::start_with(&[
            "--tlsverify",
            "--tlscert",
            &path("server.pem"),
            "--tlskey",
            &path("server-key.pem"),
            "--tlscacert",
            &path("ca.pem"),
        ])
        .await;
        let url = nats.url().replace("nats://", "tls://");
        relay_works(&nats, &url, |c| {
            c.nats.tls_ca_file = Some(fixture("ca.pem"));
            c.nats.tls_cert_file = Some(fixture("client.pem"));
            c.nats.tls_key_file = Some(fixture("client-key.pem"));
        })
        .await;
        // Trusting the server is not enough: the server wants a client certificate.
        refused(&nats, url, "TLS handshake error", |c| {
            c.nats.tls_ca_file = Some(fixture("ca.pem"));
        })
        .await;
    })
    .await;
}
