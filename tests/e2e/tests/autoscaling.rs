//! The builtin autoscaler with real gateways standing in for pods (stand-in only: the tests
//! create the Pods, on 127.0.X.Y, as the ReplicaSet and kubelet would): a scale-up on
//! connections, then a drain-first scale-down of the least-loaded pod, and an operator
//! restart in the middle of a scale-down that resumes the recorded one.

use std::net::Ipv4Addr;
use std::time::Duration;

use roomcast_e2e::cluster::{Cluster, condition};
use roomcast_e2e::kubelet::{self, DELETION_COST, FakePod, replicas};
use roomcast_e2e::operator::{Operator, Options};
use roomcast_e2e::wait::{eventually, within};
use serde_json::{Value, json};

const STEP: Duration = Duration::from_secs(30);
const LOWEST: &str = "-2147483648";

/// Starts the test's API and applies RealtimeCluster `chat` with `autoscaling`; `None` (after
/// saying why) on a real cluster, where these tests need pods the suite cannot fake.
async fn autoscaled_cluster(ns: &str, test: &str, autoscaling: Value) -> Option<Cluster> {
    let cluster = Cluster::start(ns).await;
    if !cluster.is_standin() {
        eprintln!(
            "SKIPPED {test}: it runs gateways on 127.0.X.Y as pods, which only the API stand-in \
             allows (a real cluster's kubelet owns pod status)"
        );
        return None;
    }
    let spec = json!({"nats": {"url": "nats://nats.example:4222"}, "autoscaling": autoscaling});
    cluster.apply_realtime_cluster("chat", spec).await;
    Some(cluster)
}

async fn status(cluster: &Cluster) -> Value {
    cluster
        .cluster_json("chat")
        .await
        .map(|r| r["status"].clone())
        .unwrap_or(Value::Null)
}

fn ip(range: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, range, host)
}

#[tokio::test]
async fn scales_up_on_connections_and_drains_the_least_loaded_pod_down() {
    // Built (or found) before the clock starts: the deadline is the test's, not cargo's.
    roomcast_e2e::binaries::bin_dir().await;
    within(240, async {
        let Some(cluster) = autoscaled_cluster(
            "autoscale",
            "scales_up_on_connections_and_drains_the_least_loaded_pod_down",
            json!({
                "minReplicas": 1, "maxReplicas": 4, "targetConnectionsPerPod": 10,
                "tolerance": 0.1, "scaleDownStabilizationSeconds": 5
            }),
        )
        .await
        else {
            return;
        };
        let operator = Operator::start(&cluster, &Options::new("op-autoscale")).await;
        eventually("1 replica (minReplicas)", STEP, || async {
            (replicas(&cluster, "chat").await == Some(1)).then_some(())
        })
        .await;

        // One pod with 25 connections: ceil(25 / 10) = 3.
        let mut p0 = FakePod::start(&cluster, "chat", "chat-p0", ip(1, 1), false).await;
        p0.gateway.connect(25).await;
        eventually("scale-up to 3", STEP, || async {
            (replicas(&cluster, "chat").await == Some(3)).then_some(())
        })
        .await;
        // The status is written after the Deployment: wait for it rather than race it.
        let st = eventually("status of the scale-up", STEP, || async {
            let st = status(&cluster).await;
            (st["replicas"] == 3).then_some(st)
        })
        .await;
        assert_eq!(st["replicas"], 3, "{st}");
        assert_eq!(st["connections"], 25, "{st}");
        assert!(st["lastScaleTime"].is_string(), "{st}");
        let rtc = cluster.cluster_json("chat").await.unwrap();
        assert_eq!(
            condition(&rtc, "MetricsAvailable").unwrap()["status"],
            "True"
        );

        // The ReplicaSet's two new pods; every pod carries a deletion cost from its template.
        let mut p1 = FakePod::start(&cluster, "chat", "chat-p1", ip(1, 2), false).await;
        let mut p2 = FakePod::start(&cluster, "chat", "chat-p2", ip(1, 3), false).await;
        eventually("3 ready pods read", STEP, || async {
            let st = status(&cluster).await;
            (st["readyReplicas"] == 3 && st["connections"] == 25).then_some(())
        })
        .await;
        assert_eq!(
            replicas(&cluster, "chat").await,
            Some(3),
            "ceil(25 / 10) is still 3"
        );

        // Load falls to 10 + 4 + 6 = 20: ceil(20 / 10) = 2 after the 5 s window; the victim is
        // the pod with the fewest connections, p1. (The steps keep every total within
        // 31 (31 / 30 is within tolerance) and 16, so no step asks for 4 or 1 replicas.)
        p2.gateway.connect(6).await;
        p0.gateway.disconnect(15).await;
        p1.gateway.connect(4).await;
        // The status (scale-down finished) is written just after the Deployment: wait for both.
        eventually("scale-down to 2", STEP, || async {
            let both = replicas(&cluster, "chat").await == Some(2)
                && status(&cluster).await["replicas"] == 2;
            both.then_some(())
        })
        .await;
        // Drain first: p1 was drained (unready) and carries the lowest cost; the others
        // carry their connection counts.
        assert_eq!(
            p1.gateway.readyz().await,
            Some(503),
            "the victim was drained"
        );
        assert_eq!(p0.gateway.readyz().await, Some(200));
        assert_eq!(p2.gateway.readyz().await, Some(200));
        let costs = kubelet::deletion_costs(&cluster, &["chat-p0", "chat-p1", "chat-p2"]).await;
        assert_eq!(
            costs,
            vec![Some("10".into()), Some(LOWEST.into()), Some("6".into())],
            "deletion costs"
        );
        let st = status(&cluster).await;
        assert!(
            st.get("scaleDown").is_none_or(Value::is_null),
            "finished: {st}"
        );
        // The log tells the story: the decision with its inputs, the drain, the applies.
        for line in [
            &["autoscaler decision", "from=1", "to=3", "connections=25"][..],
            &["autoscaler decision", "from=3", "to=2", "connections=20"],
            &["drain started", "victims=chat-p1"],
            &["drain finished", "victims=chat-p1"],
            &["created", "kind=Deployment", "name=chat"],
            &["changed", "kind=Deployment", "name=chat"],
        ] {
            eventually(&format!("a log line with {line:?}"), STEP, || async {
                operator.logged(line).then_some(())
            })
            .await;
        }
        // Each decision and drain is an event of its own with its numbers and pod names
        // (kubectl describe shows each; none is folded into an earlier one's series).
        for (reason, words) in [
            ("ScaleUp", "scaled 1 -> 3"),
            ("DrainStarted", "scaling 3 -> 2: draining chat-p1"),
            ("ScaleDown", "scaled 3 -> 2 after draining chat-p1"),
        ] {
            eventually(
                &format!("a {reason} event saying {words:?}"),
                STEP,
                || async {
                    let events = cluster
                        .api::<k8s_openapi::api::events::v1::Event>()
                        .list(&Default::default())
                        .await
                        .ok()?;
                    events
                        .items
                        .iter()
                        .any(|e| {
                            e.reason.as_deref() == Some(reason)
                                && e.note.as_deref().is_some_and(|n| n.contains(words))
                        })
                        .then_some(())
                },
            )
            .await;
        }
        // The drained gateway closes its clients over its 1 s drain.
        p1.gateway.wait_connections(0).await;

        // The ReplicaSet removes the lowest-cost pod: the victim.
        let named: Vec<(String, Option<String>)> = ["chat-p0", "chat-p1", "chat-p2"]
            .iter()
            .map(|n| n.to_string())
            .zip(costs)
            .collect();
        assert_eq!(kubelet::lowest_cost(&named, 1), vec!["chat-p1"]);
        p1.delete(&cluster).await;
        eventually("2 ready pods, 16 connections, 2 replicas", STEP, || async {
            let st = status(&cluster).await;
            (st["readyReplicas"] == 2 && st["connections"] == 16 && st["replicas"] == 2)
                .then_some(())
        })
        .await;
        let down = operator
            .metric("roomcast_operator_scale_decisions_total{direction=\"down\"}")
            .await;
        assert_eq!(down, Some(1.0), "{}", operator.log_tail());
        let up = operator
            .metric("roomcast_operator_scale_decisions_total{direction=\"up\"}")
            .await;
        assert_eq!(up, Some(1.0));
        assert_eq!(replicas(&cluster, "chat").await, Some(2));
        operator.terminate().await;
    })
    .await;
}

#[tokio::test]
async fn a_restarted_operator_resumes_the_recorded_scale_down() {
    // Built (or found) before the clock starts: the deadline is the test's, not cargo's.
    roomcast_e2e::binaries::bin_dir().await;
    within(240, async {
        let Some(cluster) = autoscaled_cluster(
            "resume",
            "a_restarted_operator_resumes_the_recorded_scale_down",
            json!({
                "minReplicas": 3, "maxReplicas": 4, "targetConnectionsPerPod": 10,
                "scaleDownStabilizationSeconds": 2
            }),
        )
        .await
        else {
            return;
        };
        let mut options = Options::new("op-resume-a");
        options.drain_deadline_seconds = 600;
        let first = Operator::start(&cluster, &options).await;
        eventually("3 replicas", STEP, || async {
            (replicas(&cluster, "chat").await == Some(3)).then_some(())
        })
        .await;
        // Every pod's admin port is behind a gate that refuses POST /drain for now.
        let mut pods = Vec::new();
        for (i, n) in [12usize, 3, 5].into_iter().enumerate() {
            let mut pod = FakePod::start(
                &cluster,
                "chat",
                &format!("chat-p{i}"),
                ip(2, i as u8 + 1),
                true,
            )
            .await;
            pod.gateway.connect(n).await;
            pods.push(pod);
        }
        eventually("20 connections read", STEP, || async {
            (status(&cluster).await["connections"] == 20).then_some(())
        })
        .await;

        // minReplicas 1: the decision is 2, victim p1 (3 connections), whose drain is refused.
        cluster
            .kubectl(
                &[
                    "patch",
                    "rtc",
                    "chat",
                    "--type=merge",
                    "-p",
                    r#"{"spec":{"autoscaling":{"minReplicas":1}}}"#,
                ],
                None,
            )
            .await;
        let recorded = eventually(
            "a recorded scale-down whose drain was refused",
            STEP,
            || async {
                let st = status(&cluster).await;
                let sd = st.get("scaleDown").filter(|v| !v.is_null())?.clone();
                (pods[1].gate.as_ref()?.refused() > 0).then_some(sd)
            },
        )
        .await;
        assert_eq!(recorded["from"], 3, "{recorded}");
        assert_eq!(recorded["to"], 2, "{recorded}");
        assert_eq!(recorded["victims"], json!(["chat-p1"]), "{recorded}");
        assert_eq!(
            replicas(&cluster, "chat").await,
            Some(3),
            "replicas wait for the drain"
        );
        assert_eq!(
            kubelet::annotation(&cluster, "chat-p1", DELETION_COST)
                .await
                .as_deref(),
            Some(LOWEST)
        );

        // Crash the operator mid-scale-down; meanwhile p2 becomes the least loaded, so a fresh
        // decision would pick it: 12 + 6 + 2 = 20.
        first.kill().await;
        pods[1].gateway.connect(3).await;
        pods[2].gateway.disconnect(3).await;
        for pod in &pods {
            if let Some(gate) = &pod.gate {
                gate.open();
            }
        }
        options.identity = "op-resume-b".into();
        let second = Operator::start(&cluster, &options).await;

        eventually("the resumed scale-down to finish at 2", STEP, || async {
            let st = status(&cluster).await;
            let done = st.get("scaleDown").is_none_or(Value::is_null);
            (done && replicas(&cluster, "chat").await == Some(2)).then_some(())
        })
        .await;
        let log = second.log_tail();
        assert_eq!(
            pods[1].gateway.readyz().await,
            Some(503),
            "the recorded victim drained\n{log}"
        );
        assert_eq!(
            pods[2].gateway.readyz().await,
            Some(200),
            "no new victim\n{log}"
        );
        assert_eq!(pods[0].gateway.readyz().await, Some(200));
        let forwarded: Vec<usize> = pods
            .iter()
            .map(|p| p.gate.as_ref().map_or(0, |g| g.forwarded()))
            .collect();
        assert_eq!(forwarded[0], 0, "{forwarded:?}");
        assert_eq!(forwarded[2], 0, "{forwarded:?}");
        assert!(forwarded[1] >= 1, "{forwarded:?}");
        assert_eq!(
            kubelet::annotation(&cluster, "chat-p1", DELETION_COST)
                .await
                .as_deref(),
            Some(LOWEST)
        );
        assert_eq!(
            second
                .metric("roomcast_operator_scale_decisions_total{direction=\"down\"}")
                .await,
            Some(1.0),
            "the resumed scale-down counts once, in the operator that finished it"
        );
        assert_eq!(
            replicas(&cluster, "chat").await,
            Some(2),
            "not repeated down to 1"
        );
        second.terminate().await;
    })
    .await;
}

#[tokio::test]
async fn replicas_above_max_are_clamped_without_metrics() {
    roomcast_e2e::binaries::bin_dir().await;
    within(240, async {
        // No pod ever runs, so no metric is ever read: the bounds alone must hold replicas.
        let Some(cluster) = autoscaled_cluster(
            "clamp",
            "replicas_above_max_are_clamped_without_metrics",
            json!({"minReplicas": 1, "maxReplicas": 7}),
        )
        .await
        else {
            return;
        };
        let _operator = Operator::start(&cluster, &Options::new("op-clamp")).await;
        eventually("1 replica (minReplicas)", STEP, || async {
            (replicas(&cluster, "chat").await == Some(1)).then_some(())
        })
        .await;
        // Scaled by hand above maxReplicas.
        cluster
            .kubectl(&["scale", "deployment", "chat", "--replicas=9"], None)
            .await;
        eventually("replicas back to maxReplicas 7", STEP, || async {
            (replicas(&cluster, "chat").await == Some(7)).then_some(())
        })
        .await;
        cluster
            .kubectl(
                &[
                    "patch",
                    "rtc",
                    "chat",
                    "--type=merge",
                    "-p",
                    r#"{"spec":{"autoscaling":{"maxReplicas":4}}}"#,
                ],
                None,
            )
            .await;
        eventually("replicas follow maxReplicas down to 4", STEP, || async {
            (replicas(&cluster, "chat").await == Some(4)).then_some(())
        })
        .await;
        // Status is written after the Deployment.
        eventually("status.replicas 4", STEP, || async {
            (status(&cluster).await["replicas"] == 4).then_some(())
        })
        .await;
    })
    .await;
}
