//! The cross-gateway clauses on a 3-node NATS cluster (routes), each gateway
//! attached to a different node: what one gateway publishes crosses a route
//! before it reaches another, and a join's `ok` must still mean "live in the
//! whole cluster".

mod common;
mod nats;

use common::{TestGateway, within};
use nats::{NatsCluster, gateways, scenarios};

/// A 3-node cluster and gateways gw-a, gw-b, gw-c attached to nodes 0, 1, 2
/// (one URL each, so the attachment is certain).
async fn setup() -> (NatsCluster, Vec<TestGateway>) {
    let cluster = NatsCluster::start(3).await;
    let gws = gateways(cluster.urls().into_iter().map(|url| vec![url]).collect()).await;
    (cluster, gws)
}

#[tokio::test]
async fn routed_publish_crosses_byte_exact_and_echo_rules_hold() {
    within(60, async {
        let (_cluster, gws) = setup().await;
        scenarios::publish_crosses_byte_exact(&gws[0], &gws[1]).await;
        scenarios::echo_rules_hold(&gws[2], &gws[0]).await;
    })
    .await;
}

#[tokio::test]
async fn routed_leave_send_and_http_publish() {
    within(60, async {
        let (_cluster, gws) = setup().await;
        scenarios::leave_stops_delivery(&gws[0], &gws[1]).await;
        scenarios::send_reaches_every_connection(&gws[1], &gws[2]).await;
        scenarios::http_publish_crosses(&gws[2], &gws[0]).await;
    })
    .await;
}

#[tokio::test]
async fn routed_presence_lists_distinct_members() {
    within(60, async {
        let (_cluster, gws) = setup().await;
        scenarios::presence_is_distinct_across_gateways(&[&gws[0], &gws[1], &gws[2]]).await;
    })
    .await;
}

#[tokio::test]
async fn routed_join_ok_then_immediate_publish_through_other_nodes_arrives() {
    within(90, async {
        let (_cluster, gws) = setup().await;
        // The subscriber's node differs from each publisher's node.
        scenarios::join_ok_then_publish_elsewhere_arrives(&gws[1], &gws[0], 25).await;
        scenarios::join_ok_then_publish_elsewhere_arrives(&gws[0], &gws[2], 25).await;
    })
    .await;
}

#[tokio::test]
async fn routed_concurrent_publishers_keep_order() {
    within(60, async {
        let (_cluster, gws) = setup().await;
        scenarios::concurrent_publishers_keep_order(&[&gws[0], &gws[1], &gws[2]], 150).await;
    })
    .await;
}

#[tokio::test]
async fn routed_interest_and_wildcard_rooms() {
    within(60, async {
        let (cluster, gws) = setup().await;
        scenarios::interest_follows_local_members(&gws[0], &gws[1], &gws[2], &cluster).await;
        scenarios::wildcard_rooms_are_rejected(&gws[2], &gws[1], &cluster).await;
    })
    .await;
}
