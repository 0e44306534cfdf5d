//! Two operators with leader election: one holds the Lease and only it writes; when it stops,
//! the other takes over and writes. Runs unchanged on the stand-in and on a real cluster.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use roomcast_e2e::cluster::{Cluster, condition};
use roomcast_e2e::kubelet::deployment_json;
use roomcast_e2e::operator::{Operator, Options};
use roomcast_e2e::wait::{eventually, within};
use serde_json::json;

const STEP: Duration = Duration::from_secs(30);
const RECONCILES: &str = "roomcast_operator_reconciles_total";
const LEADER: &str = "roomcast_operator_leader";

async fn holder(cluster: &Cluster) -> Option<String> {
    cluster
        .api::<Lease>()
        .get_opt("roomcast-operator")
        .await
        .ok()??
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

#[tokio::test]
async fn two_operators_one_leader_only_it_writes() {
    // Built (or found) before the clock starts: the deadline is the test's, not cargo's.
    roomcast_e2e::binaries::bin_dir().await;
    within(240, async {
        let cluster = Cluster::start("leader").await;
        cluster
            .apply_realtime_cluster(
                "chat",
                json!({"nats": {"url": "nats://nats.example:4222"}, "drainSeconds": 20}),
            )
            .await;
        let mut options = Options::new("op-a");
        options.leader_election = true;
        let a = Operator::start(&cluster, &options).await;
        options.identity = "op-b".into();
        let b = Operator::start(&cluster, &options).await;

        let leader_id = eventually("a Lease holder", STEP, || holder(&cluster)).await;
        let (leader, follower) = if leader_id == "op-a" { (a, b) } else { (b, a) };
        assert_eq!(leader.identity, leader_id);
        eventually("the leader to reconcile", STEP, || async {
            deployment_json(&cluster, "chat").await?;
            (leader.metric(RECONCILES).await? >= 1.0).then_some(())
        })
        .await;
        // Several sync periods later the follower has still done nothing.
        let start = leader.metric(RECONCILES).await.unwrap_or(0.0);
        eventually("three more leader syncs", STEP, || async {
            (leader.metric(RECONCILES).await? >= start + 3.0).then_some(())
        })
        .await;
        assert_eq!(
            follower.metric(RECONCILES).await,
            Some(0.0),
            "{}",
            follower.log_tail()
        );
        assert_eq!(follower.metric(LEADER).await, Some(0.0));
        assert_eq!(leader.metric(LEADER).await, Some(1.0));
        assert_eq!(holder(&cluster).await.as_deref(), Some(leader_id.as_str()));
        // An invalid spec (passes the schema, fails the operator's own check) gets one Warning
        // event; events name who published them: only the leader did.
        cluster
            .apply_realtime_cluster("broken", json!({"nats": {"url": " "}}))
            .await;
        let ours = eventually("an InvalidSpec event", STEP, || async {
            let events = cluster
                .kubectl(&["get", "events.v1.events.k8s.io", "-o", "json"], None)
                .await;
            let events: serde_json::Value = serde_json::from_str(&events).ok()?;
            let ours: Vec<serde_json::Value> = events["items"]
                .as_array()?
                .iter()
                .filter(|e| e["reportingController"] == "roomcast-operator")
                .cloned()
                .collect();
            ours.iter()
                .any(|e| e["reason"] == "InvalidSpec")
                .then_some(ours)
        })
        .await;
        for e in &ours {
            assert_eq!(e["reportingInstance"], leader_id.as_str(), "{e}");
        }
        let broken = cluster.cluster_json("broken").await.unwrap();
        let ready = condition(&broken, "Ready").unwrap();
        assert_eq!(ready["status"], "False", "{ready}");
        assert_eq!(ready["reason"], "InvalidSpec", "{ready}");
        assert!(
            deployment_json(&cluster, "broken").await.is_none(),
            "nothing is created for an invalid spec"
        );
        assert_eq!(follower.metric(RECONCILES).await, Some(0.0));

        // The leader stops (SIGTERM releases the Lease); the follower takes over and writes.
        leader.terminate().await;
        let new_holder = eventually("the follower to hold the Lease", STEP, || async {
            holder(&cluster).await.filter(|h| *h == follower.identity)
        })
        .await;
        assert_eq!(new_holder, follower.identity);
        cluster
            .kubectl(
                &[
                    "patch",
                    "deployment",
                    "chat",
                    "--type=merge",
                    "-p",
                    r#"{"spec":{"template":{"spec":{"terminationGracePeriodSeconds":1}}}}"#,
                ],
                None,
            )
            .await;
        eventually("the new leader to revert the edit", STEP, || async {
            let d = deployment_json(&cluster, "chat").await?;
            let grace = d.pointer("/spec/template/spec/terminationGracePeriodSeconds")?;
            (grace.as_i64()? > 20).then_some(())
        })
        .await;
        assert!(follower.metric(RECONCILES).await.unwrap_or(0.0) >= 1.0);
        assert_eq!(follower.metric(LEADER).await, Some(1.0));
        follower.terminate().await;
    })
    .await;
}
