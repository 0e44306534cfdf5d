//! One stored RealtimeCluster that does not deserialize (the CRD schema bypassed, as the
//! stand-in allows; a real API server refuses `autoscaling.mode: Bogus`) is reported on
//! itself, and a valid one created beside it reconciles as usual.

use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use roomcast_e2e::cluster::{Cluster, condition};
use roomcast_e2e::kubelet::replicas;
use roomcast_e2e::operator::{Operator, Options};
use roomcast_e2e::wait::{eventually, within};
use serde_json::json;

const STEP: Duration = Duration::from_secs(15);

#[tokio::test]
async fn a_bad_object_is_reported_and_does_not_stall_the_others() {
    roomcast_e2e::binaries::bin_dir().await;
    within(120, async {
        let cluster = Cluster::start("badobject").await;
        if !cluster.is_standin() {
            eprintln!(
                "SKIPPED a_bad_object_is_reported_and_does_not_stall_the_others: a real API \
                 server enforces the CRD schema, so the bad object cannot be stored"
            );
            return;
        }
        cluster
            .apply_realtime_cluster(
                "bad",
                json!({"nats": {"url": "nats://n:4222"}, "autoscaling": {"mode": "Bogus"}}),
            )
            .await;
        let operator = Operator::start(&cluster, &Options::new("op-bad")).await;
        cluster
            .apply_realtime_cluster("good", json!({"nats": {"url": "nats://n:4222"}}))
            .await;
        eventually("the good cluster's Deployment", STEP, || async {
            replicas(&cluster, "good").await.map(|_| ())
        })
        .await;
        let ready = eventually(
            "Ready=False InvalidSpec on the bad object",
            STEP,
            || async {
                let rtc = cluster.cluster_json("bad").await?;
                let ready = condition(&rtc, "Ready")?.clone();
                (ready["reason"] == "InvalidSpec").then_some(ready)
            },
        )
        .await;
        assert_eq!(ready["status"], "False", "{ready}");
        assert!(
            ready["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("spec.autoscaling.mode:") && m.contains("Bogus")),
            "{ready}"
        );
        let note = eventually("a Warning event naming the field", STEP, || async {
            let events = cluster
                .api::<Event>()
                .list(&Default::default())
                .await
                .ok()?;
            events.items.into_iter().find_map(|e| {
                let about_bad = e.regarding.as_ref()?.name.as_deref() == Some("bad");
                (about_bad
                    && e.type_.as_deref() == Some("Warning")
                    && e.reason.as_deref() == Some("InvalidSpec"))
                .then_some(e.note)?
            })
        })
        .await;
        assert!(note.contains("spec.autoscaling.mode"), "{note}");
        assert_eq!(
            replicas(&cluster, "bad").await,
            None,
            "nothing is built for the bad object"
        );
        assert!(
            operator.logged(&["cannot read RealtimeCluster", "field=spec.autoscaling.mode"]),
            "{}",
            operator.log_tail()
        );
    })
    .await;
}
