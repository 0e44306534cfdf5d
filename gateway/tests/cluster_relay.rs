//! Every protocol clause with the parties on different gateways attached to
//! one real nats-server: publish, echo, leave, send, presence, the HTTP API,
//! join-then-publish, ordering under concurrent publishers, interest-based
//! routing and wildcard-proof room names.

mod common;
mod nats;

use common::{TestGateway, within};
use nats::{NatsServer, discover, gateway_with, gateways, scenarios};

/// One nats-server and `n` gateways on it, named gw-a, gw-b, …
async fn setup(n: usize) -> (NatsServer, Vec<TestGateway>) {
    let server = NatsServer::start().await;
    let gws = gateways(vec![vec![server.url()]; n]).await;
    (server, gws)
}

#[tokio::test]
async fn publish_on_a_reaches_b_with_from_room_and_exact_data() {
    within(30, async {
        let (_nats, gws) = setup(2).await;
        scenarios::publish_crosses_byte_exact(&gws[0], &gws[1]).await;
    })
    .await;
}

#[tokio::test]
async fn echo_rules_hold_with_members_on_both_gateways() {
    within(30, async {
        let (_nats, gws) = setup(2).await;
        scenarios::echo_rules_hold(&gws[0], &gws[1]).await;
    })
    .await;
}

#[tokio::test]
async fn leave_stops_cross_gateway_delivery() {
    within(30, async {
        let (_nats, gws) = setup(2).await;
        scenarios::leave_stops_delivery(&gws[0], &gws[1]).await;
    })
    .await;
}

#[tokio::test]
async fn send_reaches_every_connection_of_a_user_on_any_gateway() {
    within(30, async {
        let (_nats, gws) = setup(2).await;
        scenarios::send_reaches_every_connection(&gws[0], &gws[1]).await;
    })
    .await;
}

#[tokio::test]
async fn presence_lists_distinct_members_across_gateways() {
    within(60, async {
        let (_nats, gws) = setup(3).await;
        scenarios::presence_is_distinct_across_gateways(&[&gws[0], &gws[1], &gws[2]]).await;
    })
    .await;
}

#[tokio::test]
async fn http_publish_on_a_reaches_b_with_from_null() {
    within(30, async {
        let (_nats, gws) = setup(2).await;
        scenarios::http_publish_crosses(&gws[0], &gws[1]).await;
    })
    .await;
}

#[tokio::test]
async fn join_ok_then_immediate_publish_from_another_gateway_arrives() {
    within(60, async {
        let (_nats, gws) = setup(2).await;
        scenarios::join_ok_then_publish_elsewhere_arrives(&gws[1], &gws[0], 25).await;
    })
    .await;
}

#[tokio::test]
async fn concurrent_publishers_on_three_gateways_keep_order() {
    within(60, async {
        let (_nats, gws) = setup(3).await;
        scenarios::concurrent_publishers_keep_order(&[&gws[0], &gws[1], &gws[2]], 150).await;
    })
    .await;
}

#[tokio::test]
async fn only_gateways_with_members_subscribe_and_receive_room_traffic() {
    within(60, async {
        let (nats, gws) = setup(3).await;
        scenarios::interest_follows_local_members(&gws[0], &gws[1], &gws[2], &nats).await;
    })
    .await;
}

#[tokio::test]
async fn wildcard_and_separator_room_names_are_rejected_and_never_subscribed() {
    within(60, async {
        let (nats, gws) = setup(2).await;
        scenarios::wildcard_rooms_are_rejected(&gws[0], &gws[1], &nats).await;
    })
    .await;
}

#[tokio::test]
async fn join_ok_waits_until_the_nats_server_has_the_subscription() {
    within(60, async {
        let nats = NatsServer::start().await;
        // The default wait for peers, so a sync that cannot be answered ends
        // well within the test's wait for a reply.
        let mut gws = Vec::new();
        for name in ["gw-a", "gw-b"] {
            gws.push(
                gateway_with(name, vec![nats.url()], |c| {
                    c.nats.request_timeout_ms = 1_000
                })
                .await,
            );
        }
        discover(&[&gws[0], &gws[1]]).await;
        scenarios::join_ok_needs_the_server(&gws[1], &gws[0], &nats).await;
    })
    .await;
}
