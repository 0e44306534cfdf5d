//! A RealtimeCluster's life through kubectl: applying the CRD and a resource makes the operator
//! create the contract's objects and status; spec edits reach the objects; a manual edit of a
//! field the operator owns is reverted while others' fields stay; deleting the resource
//! deletes what it owns. Runs unchanged on the stand-in and on a real cluster.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use roomcast_e2e::cluster::{Cluster, condition};
use roomcast_e2e::kubelet::deployment_json;
use roomcast_e2e::operator::{Operator, Options};
use roomcast_e2e::wait::{eventually, within};
use serde_json::{Value, json};

const STEP: Duration = Duration::from_secs(30);

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap()
}

async fn service(cluster: &Cluster, name: &str) -> Option<Value> {
    let s = cluster.api::<Service>().get_opt(name).await.ok()??;
    Some(to_json(&s))
}

fn env_value(deployment: &Value, name: &str) -> Option<String> {
    deployment
        .pointer("/spec/template/spec/containers/0/env")?
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?
        .get("value")?
        .as_str()
        .map(str::to_string)
}

fn grace(deployment: &Value) -> Option<i64> {
    deployment
        .pointer("/spec/template/spec/terminationGracePeriodSeconds")?
        .as_i64()
}

/// The probe port is 9090 by number or by the port's name `admin`.
fn is_admin_port(port: &Value) -> bool {
    port == 9090 || port == "admin"
}

#[tokio::test]
async fn resource_lifecycle_through_kubectl() {
    // Built (or found) before the clock starts: the deadline is the test's, not cargo's.
    roomcast_e2e::binaries::bin_dir().await;
    within(240, async {
        let cluster = Cluster::start("lifecycle").await;
        let operator = Operator::start(&cluster, &Options::new("op-lifecycle")).await;
        cluster
            .apply_realtime_cluster("chat", json!({
                    "nats": {"url": "nats://nats.example:4222"},
                    "drainSeconds": 20,
                    "sessionAffinity": {"type": "ClientIP", "timeoutSeconds": 3600},
                    "autoscaling": {"minReplicas": 2, "maxReplicas": 5}
                }))
            .await;
        let rtc = cluster.cluster_json("chat").await.unwrap();
        let uid = rtc.pointer("/metadata/uid").cloned().unwrap();
        let owned_by_rtc = |obj: &Value| {
            obj.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| {
                    refs.iter().any(|r| {
                        r["uid"] == uid && r["kind"] == "RealtimeCluster" && r["controller"] == true
                    })
                })
        };
        let applied_by_operator = |obj: &Value| {
            obj.pointer("/metadata/managedFields")
                .and_then(Value::as_array)
                .is_some_and(|m| {
                    m.iter()
                        .any(|e| e["manager"] == "roomcast-operator" && e["operation"] == "Apply")
                })
        };
        let labels = json!({
            "app.kubernetes.io/name": "roomcast-gateway",
            "app.kubernetes.io/instance": "chat"
        });

        // Deployment.
        let d = eventually("Deployment chat", STEP, || deployment_json(&cluster, "chat")).await;
        let log = operator.log_tail();
        assert!(owned_by_rtc(&d), "owner reference: {d}\n{log}");
        assert!(applied_by_operator(&d), "server-side apply: {d}");
        assert_eq!(d.pointer("/spec/selector/matchLabels"), Some(&labels));
        for (k, v) in labels.as_object().unwrap() {
            assert_eq!(&d["spec"]["template"]["metadata"]["labels"][k], v);
        }
        assert_eq!(d.pointer("/spec/replicas"), Some(&json!(2)), "minReplicas");
        let c = d.pointer("/spec/template/spec/containers/0").unwrap();
        let ports: Vec<&Value> = c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| &p["containerPort"])
            .collect();
        assert!(ports.contains(&&json!(8080)) && ports.contains(&&json!(9090)), "{ports:?}");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert!(is_admin_port(&c["readinessProbe"]["httpGet"]["port"]), "{c}");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert!(is_admin_port(&c["livenessProbe"]["httpGet"]["port"]), "{c}");
        assert!(grace(&d).unwrap() > 20, "grace period > drainSeconds");
        assert_eq!(env_value(&d, "ROOMCAST_DRAIN_SECONDS").as_deref(), Some("20"));
        assert_eq!(
            env_value(&d, "ROOMCAST_NATS_URL").as_deref(),
            Some("nats://nats.example:4222")
        );

        // Services and PDB.
        let svc = eventually("Service chat", STEP, || service(&cluster, "chat")).await;
        assert!(owned_by_rtc(&svc) && applied_by_operator(&svc), "{svc}");
        assert_eq!(svc.pointer("/spec/selector"), Some(&labels));
        assert_eq!(svc["spec"]["sessionAffinity"], "ClientIP");
        assert_eq!(
            svc.pointer("/spec/sessionAffinityConfig/clientIP/timeoutSeconds"),
            Some(&json!(3600))
        );
        let port = &svc["spec"]["ports"][0];
        assert_eq!(port["port"], 80);
        assert!(port["targetPort"] == 8080 || port["targetPort"] == "ws", "{port}");
        let admin = eventually("Service chat-admin", STEP, || service(&cluster, "chat-admin")).await;
        assert!(owned_by_rtc(&admin), "{admin}");
        assert_eq!(admin.pointer("/spec/selector"), Some(&labels));
        assert_eq!(admin["spec"]["ports"][0]["port"], 9090);
        let pdbs = cluster.api::<PodDisruptionBudget>();
        let pdb = eventually("PodDisruptionBudget chat", STEP, || async {
            Some(to_json(&pdbs.get_opt("chat").await.ok()??))
        })
        .await;
        assert!(owned_by_rtc(&pdb), "{pdb}");
        assert_eq!(pdb.pointer("/spec/maxUnavailable"), Some(&json!(1)));
        assert_eq!(pdb.pointer("/spec/selector/matchLabels"), Some(&labels));

        // Status: the three conditions, for this generation.
        let rtc = eventually("status with Ready, Scaling, MetricsAvailable", STEP, || async {
            let rtc = cluster.cluster_json("chat").await?;
            let complete = ["Ready", "Scaling", "MetricsAvailable"]
                .iter()
                .all(|t| condition(&rtc, t).is_some());
            let current = rtc["status"]["observedGeneration"] == rtc["metadata"]["generation"];
            (complete && current).then_some(rtc)
        })
        .await;
        assert_eq!(rtc["status"]["replicas"], 2);
        for t in ["Ready", "Scaling", "MetricsAvailable"] {
            let c = condition(&rtc, t).unwrap();
            assert!(
                ["True", "False", "Unknown"].contains(&c["status"].as_str().unwrap_or("")),
                "{c}"
            );
            assert!(c["reason"].as_str().is_some_and(|r| !r.is_empty()), "{c}");
            assert!(c["lastTransitionTime"].is_string(), "{c}");
        }
        if cluster.is_standin() {
            // No pods exist on the stand-in: nothing is ready, nothing was read.
            assert_eq!(condition(&rtc, "Ready").unwrap()["status"], "False");
            assert_eq!(condition(&rtc, "MetricsAvailable").unwrap()["status"], "False");
        }
        let printed = cluster.kubectl(&["get", "rtc", "chat"], None).await;
        assert!(printed.contains("chat"), "{printed}");

        // Spec edits flow to the objects.
        cluster
            .kubectl(
                &[
                    "patch", "rtc", "chat", "--type=merge", "-p",
                    r#"{"spec":{"drainSeconds":12,"sessionAffinity":{"type":"None"},"autoscaling":{"minReplicas":3}}}"#,
                ],
                None,
            )
            .await;
        eventually("Deployment to follow the edit", STEP, || async {
            let d = deployment_json(&cluster, "chat").await?;
            let ok = env_value(&d, "ROOMCAST_DRAIN_SECONDS").as_deref() == Some("12")
                && grace(&d).is_some_and(|g| g > 12 && g < 20 + 15)
                && d["spec"]["replicas"] == 3;
            ok.then_some(())
        })
        .await;
        eventually("Service to drop session affinity", STEP, || async {
            let s = service(&cluster, "chat").await?;
            (s["spec"]["sessionAffinity"] == "None").then_some(())
        })
        .await;
        eventually("observedGeneration 2", STEP, || async {
            let rtc = cluster.cluster_json("chat").await?;
            (rtc["status"]["observedGeneration"] == rtc["metadata"]["generation"]
                && rtc["metadata"]["generation"] == 2)
                .then_some(())
        })
        .await;
        let grace_now = grace(&deployment_json(&cluster, "chat").await.unwrap()).unwrap();

        // Someone else's field stays; the operator's field is reverted.
        cluster
            .kubectl(
                &[
                    "annotate", "service", "chat-admin", "e2e.roomcast.dev/note=kept",
                ],
                None,
            )
            .await;
        cluster
            .kubectl(
                &[
                    "patch", "deployment", "chat", "--type=merge", "-p",
                    r#"{"spec":{"template":{"spec":{"terminationGracePeriodSeconds":1}}}}"#,
                ],
                None,
            )
            .await;
        eventually("the manual edit to be reverted", STEP, || async {
            let d = deployment_json(&cluster, "chat").await?;
            (grace(&d) == Some(grace_now)).then_some(())
        })
        .await;
        let admin = service(&cluster, "chat-admin").await.unwrap();
        assert_eq!(
            admin.pointer("/metadata/annotations/e2e.roomcast.dev~1note"),
            Some(&json!("kept")),
            "an annotation the operator does not own survives: {admin}"
        );

        // Deleting the resource deletes what it owns.
        cluster.kubectl(&["delete", "rtc", "chat"], None).await;
        eventually("owned objects to be gone", Duration::from_secs(90), || async {
            let d = cluster.api::<Deployment>().get_opt("chat").await.ok()?;
            let s = cluster.api::<Service>().get_opt("chat").await.ok()?;
            let a = cluster.api::<Service>().get_opt("chat-admin").await.ok()?;
            let p = pdbs.get_opt("chat").await.ok()?;
            (d.is_none() && s.is_none() && a.is_none() && p.is_none()).then_some(())
        })
        .await;
        operator.terminate().await;
    })
    .await;
}
