//! Reconciles against a mock API server that checks every request in order, with fake
//! gateway admin endpoints; plus the pure timing rules (sync period, backoff).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::DynamicObject;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::plan::event;
use super::sync::sync_wait;
use super::*;
use crate::desired;
use crate::fixtures::{self, FakeGateway, cluster, deployment, not_found, pod, pod_list};
use http::{Method, StatusCode};
use serde_json::{Value, json};

#[test]
fn autoscaler_syncs_once_per_period() {
    let t0 = Timestamp::from_second(1_800_000_000).unwrap();
    let period = Duration::from_secs(15);
    let at = |secs: i64| t0 + SignedDuration::from_secs(secs);
    assert_eq!(sync_wait(None, at(0), period), None, "never synced: due");
    let last = Time(t0);
    assert_eq!(
        sync_wait(Some(&last), at(1), period),
        Some(Duration::from_secs(14))
    );
    assert_eq!(
        sync_wait(Some(&last), at(11), period),
        Some(Duration::from_secs(4))
    );
    assert_eq!(
        sync_wait(Some(&last), at(12), period),
        None,
        "three quarters: due"
    );
    assert_eq!(sync_wait(Some(&last), at(60), period), None);
    assert_eq!(
        sync_wait(Some(&last), at(-5), period),
        None,
        "clock went back: due"
    );
}

#[test]
fn backoff_doubles_and_caps() {
    assert_eq!(backoff(1), Duration::from_secs(1));
    assert_eq!(backoff(2), Duration::from_secs(2));
    assert_eq!(backoff(5), Duration::from_secs(16));
    assert_eq!(backoff(9), Duration::from_secs(256));
    assert_eq!(backoff(10), BACKOFF_MAX);
    assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    assert_eq!(backoff(0), Duration::from_secs(1));
}

const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/apps/deployments/chat";
const PODS: &str = "/api/v1/namespaces/apps/pods";
const SERVICE: &str = "/api/v1/namespaces/apps/services/chat";
const ADMIN_SERVICE: &str = "/api/v1/namespaces/apps/services/chat-admin";
const PDB: &str = "/apis/policy/v1/namespaces/apps/poddisruptionbudgets/chat";
const STATUS: &str = "/apis/roomcast.dev/v1alpha1/namespaces/apps/realtimeclusters/chat/status";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/apps/events";

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

fn assert_apply(call: &fixtures::Call) {
    assert!(
        call.uri.contains("fieldManager=roomcast-operator"),
        "{}",
        call.uri
    );
    assert!(call.uri.contains("force=true"), "{}", call.uri);
}

/// Expects the four server-side applies; returns the Deployment that was applied.
/// Expects one pod patch per `(pod, cost)`, in order, each setting that deletion cost.
async fn expect_deletion_costs(api: &mut fixtures::ApiServerVerifier, costs: &[(&str, String)]) {
    for (name, cost) in costs {
        let call = api
            .next()
            .await
            .expect(Method::PATCH, &format!("{PODS}/{name}"));
        assert!(
            call.uri.contains("fieldManager=roomcast-operator"),
            "{}",
            call.uri
        );
        assert_eq!(
            call.body["metadata"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"],
            *cost
        );
        call.respond(
            StatusCode::OK,
            &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}}),
        );
    }
}

/// Answers the two reads a full sync starts with: the Deployment, then the pod list.
async fn expect_sync_reads(api: &mut fixtures::ApiServerVerifier, replicas: i32, pods: Vec<Value>) {
    api.next()
        .await
        .expect(Method::GET, DEPLOYMENT)
        .respond(StatusCode::OK, &deployment(replicas));
    api.next()
        .await
        .expect(Method::GET, PODS)
        .respond(StatusCode::OK, &pod_list(pods));
}

async fn expect_applies(api: &mut fixtures::ApiServerVerifier) -> Value {
    let call = api.next().await.expect(Method::PATCH, DEPLOYMENT);
    assert_apply(&call);
    let applied = call.body.clone();
    assert_eq!(applied["kind"], "Deployment");
    call.echo();
    for path in [SERVICE, ADMIN_SERVICE] {
        let call = api.next().await.expect(Method::PATCH, path);
        assert_apply(&call);
        assert_eq!(call.body["kind"], "Service");
        call.echo();
    }
    let call = api.next().await.expect(Method::PATCH, PDB);
    assert_apply(&call);
    assert_eq!(call.body["spec"]["maxUnavailable"], 1);
    call.echo();
    applied
}

async fn run_reconcile(
    rtc: RealtimeCluster,
    ctx: Arc<Context>,
    script: impl std::future::Future<Output = fixtures::ApiServerVerifier>,
) -> Result<Action, Error> {
    // The script hands the mock server back, so it lives until the reconcile ends: an
    // unexpected extra request then hangs and trips this timeout instead of passing.
    tokio::time::timeout(Duration::from_secs(10), async move {
        let (result, _api) = tokio::join!(reconcile(Arc::new(rtc), ctx), script);
        result
    })
    .await
    .expect("reconcile timed out")
}

#[tokio::test]
async fn new_cluster_applies_every_object_then_writes_status() {
    let (ctx, mut api) = fixtures::context(Settings::default());
    let rtc = cluster(json!({"nats": {"url": "nats://nats:4222"}}), None);
    let script = async move {
        api.next()
            .await
            .expect(Method::GET, DEPLOYMENT)
            .respond(StatusCode::NOT_FOUND, &not_found());
        let list = api.next().await.expect(Method::GET, PODS);
        assert!(list.uri.contains("labelSelector="), "{}", list.uri);
        list.respond(StatusCode::OK, &pod_list(vec![]));
        let applied = expect_applies(&mut api).await;
        assert_eq!(applied["spec"]["replicas"], 2, "starts at minReplicas");
        let call = api.next().await.expect(Method::PATCH, STATUS);
        let status = call.body["status"].clone();
        call.respond(
            StatusCode::OK,
            &serde_json::to_value(cluster(json!({"nats": {"url": "n"}}), None)).unwrap(),
        );
        assert_eq!(status["observedGeneration"], 3);
        assert_eq!(status["replicas"], 2);
        assert_eq!(status["ready"], "0/2");
        assert_eq!(
            status["selector"],
            "app.kubernetes.io/instance=chat,app.kubernetes.io/name=roomcast-gateway"
        );
        assert_eq!(condition(&status, "Ready")["status"], "False");
        assert_eq!(condition(&status, "Scaling")["status"], "False");
        assert_eq!(condition(&status, "MetricsAvailable")["status"], "False");
        assert!(status["lastScaleTime"].is_null());
        api
    };
    let action = run_reconcile(rtc, ctx.clone(), script).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(15)));
    assert!(
        ctx.metrics
            .render()
            .contains("roomcast_operator_replicas{namespace=\"apps\",name=\"chat\"} 2")
    );
}

#[tokio::test]
async fn invalid_spec_writes_status_and_an_event_and_touches_nothing_else() {
    let (ctx, mut api) = fixtures::context(Settings::default());
    let rtc = cluster(
        json!({"nats": {"url": "n"}, "autoscaling": {"minReplicas": 5, "maxReplicas": 3}}),
        None,
    );
    let script = async move {
        let call = api.next().await.expect(Method::PATCH, STATUS);
        let ready = condition(&call.body["status"], "Ready").clone();
        call.respond(
            StatusCode::OK,
            &serde_json::to_value(cluster(json!({"nats": {"url": "n"}}), None)).unwrap(),
        );
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], "InvalidSpec");
        assert!(
            ready["message"]
                .as_str()
                .unwrap()
                .contains("minReplicas (5)")
        );
        let event = api.next().await.expect(Method::POST, EVENTS);
        assert_eq!(event.body["reason"], "InvalidSpec");
        assert_eq!(event.body["type"], "Warning");
        event.echo();
        api
    };
    run_reconcile(rtc, ctx, script).await.unwrap();
}

#[tokio::test]
async fn an_unreadable_object_is_reported_on_itself_once() {
    let (ctx, mut api) = fixtures::context(Settings::default());
    let mut raw = serde_json::to_value(cluster(json!({"nats": {"url": "n"}}), None)).unwrap();
    raw["spec"]["autoscaling"]["mode"] = json!("Bogus");
    let object: DynamicObject = serde_json::from_value(raw.clone()).unwrap();
    let script = async move {
        let call = api.next().await.expect(Method::PATCH, STATUS);
        assert!(
            call.uri.contains("fieldManager=roomcast-operator"),
            "{}",
            call.uri
        );
        let ready = condition(&call.body["status"], "Ready").clone();
        let mut echoed = raw.clone();
        echoed["status"] = call.body["status"].clone();
        call.respond(StatusCode::OK, &echoed);
        assert_eq!(
            (&ready["status"], &ready["reason"]),
            (&json!("False"), &json!("InvalidSpec"))
        );
        assert!(
            ready["message"]
                .as_str()
                .unwrap()
                .starts_with("spec.autoscaling.mode:"),
            "{ready}"
        );
        let event = api.next().await.expect(Method::POST, EVENTS);
        assert_eq!(
            (&event.body["type"], &event.body["reason"]),
            (&json!("Warning"), &json!("InvalidSpec"))
        );
        let note = event.body["note"].as_str().unwrap().to_string();
        assert!(
            note.contains("spec.autoscaling.mode") && note.contains("Bogus"),
            "{note}"
        );
        event.echo();
        (api, echoed)
    };
    let (result, (_api, echoed)) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(reconcile_stored(Arc::new(object), ctx.clone()), script)
    })
    .await
    .unwrap();
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(15)));
    // Once reported, a later sync writes and announces nothing.
    let object: DynamicObject = serde_json::from_value(echoed).unwrap();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        reconcile_stored(Arc::new(object), ctx),
    )
    .await
    .unwrap();
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(15)));
}

#[tokio::test]
async fn each_decision_is_its_own_event_and_repeats_count_up() {
    let (ctx, mut api) = fixtures::context(Settings::default());
    let rtc = cluster(json!({"nats": {"url": "n"}}), None);
    let script = async move {
        let mut names = Vec::new();
        for note in ["scaled 2 -> 4", "scaled 4 -> 5"] {
            let call = api.next().await.expect(Method::POST, EVENTS);
            assert_eq!(call.body["note"], note);
            names.push(call.body["metadata"]["name"].clone());
            call.echo();
        }
        assert_ne!(names[0], names[1], "two decisions, two events");
        let call = api.next().await.expect(
            Method::PATCH,
            &format!("{EVENTS}/{}", names[1].as_str().unwrap()),
        );
        assert_eq!(call.body["series"]["count"], 2);
        assert_eq!(call.body["note"], "scaled 4 -> 5");
        call.echo();
        api
    };
    let publish = async {
        for note in ["scaled 2 -> 4", "scaled 4 -> 5", "scaled 4 -> 5"] {
            let ev = event(EventType::Normal, "ScaleUp", "Scale", note.into());
            ctx.recorder
                .publish(&ev, &rtc.object_ref(&()))
                .await
                .unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(publish, script)
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn api_errors_fail_the_reconcile_and_back_off_per_object() {
    let (ctx, mut api) = fixtures::context(Settings::default());
    let rtc = cluster(json!({"nats": {"url": "n"}}), None);
    let script = async move {
        api.next().await.expect(Method::GET, DEPLOYMENT).respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "InternalError", "code": 500, "message": "boom"}),
        );
        api
    };
    let err = run_reconcile(rtc.clone(), ctx.clone(), script)
        .await
        .unwrap_err();
    let rtc = Arc::new(rtc);
    assert_eq!(
        error_policy(rtc.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(1))
    );
    assert_eq!(
        error_policy(rtc.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(2))
    );
    assert_eq!(
        error_policy(rtc.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(4))
    );
    ctx.reset_failures(&key(rtc.as_ref()));
    assert_eq!(
        error_policy(rtc, &err, ctx.clone()),
        Action::requeue(Duration::from_secs(1))
    );
    assert!(
        ctx.metrics
            .render()
            .contains("roomcast_operator_reconcile_errors_total 4")
    );
}

#[tokio::test]
async fn external_mode_passes_scale_replicas_and_never_scrapes() {
    let (ctx, mut api) = fixtures::context(Settings::default());
    let rtc = cluster(
        json!({"nats": {"url": "n"}, "autoscaling": {"mode": "External"}}),
        None,
    );
    let script = async move {
        api.next()
            .await
            .expect(Method::GET, DEPLOYMENT)
            .respond(StatusCode::NOT_FOUND, &not_found());
        let applied = expect_applies(&mut api).await;
        assert!(applied["spec"].get("replicas").is_none(), "{applied}");
        let call = api.next().await.expect(Method::PATCH, STATUS);
        let status = call.body["status"].clone();
        call.respond(
            StatusCode::OK,
            &serde_json::to_value(cluster(json!({"nats": {"url": "n"}}), None)).unwrap(),
        );
        assert_eq!(condition(&status, "MetricsAvailable")["status"], "Unknown");
        assert!(status["connections"].is_null());
        api
    };
    run_reconcile(rtc, ctx.clone(), script).await.unwrap();

    let (ctx, mut api) = fixtures::context(Settings::default());
    let rtc = cluster(
        json!({"nats": {"url": "n"}, "autoscaling": {"mode": "External"}, "replicas": 7}),
        None,
    );
    let script = async move {
        api.next()
            .await
            .expect(Method::GET, DEPLOYMENT)
            .respond(StatusCode::OK, &deployment(3));
        let applied = expect_applies(&mut api).await;
        assert_eq!(applied["spec"]["replicas"], 7);
        let call = api.next().await.expect(Method::PATCH, STATUS);
        assert_eq!(call.body["status"]["replicas"], 7);
        call.respond(
            StatusCode::OK,
            &serde_json::to_value(cluster(json!({"nats": {"url": "n"}}), None)).unwrap(),
        );
        api
    };
    run_reconcile(rtc, ctx, script).await.unwrap();
}

#[tokio::test]
async fn scale_up_follows_connections_and_records_an_event() {
    let gw: Vec<FakeGateway> = vec![FakeGateway::start(450).await, FakeGateway::start(450).await];
    let pods: Vec<Value> = gw
        .iter()
        .enumerate()
        .map(|(i, g)| pod(&format!("chat-{i}"), true, g.port, "0"))
        .collect();
    let (ctx, mut api) = fixtures::context(Settings::default());
    let rtc = cluster(
        json!({"nats": {"url": "n"}, "autoscaling": {"minReplicas": 1, "targetConnectionsPerPod": 100}}),
        None,
    );
    let script = async move {
        api.next()
            .await
            .expect(Method::GET, DEPLOYMENT)
            .respond(StatusCode::OK, &deployment(2));
        api.next()
            .await
            .expect(Method::GET, PODS)
            .respond(StatusCode::OK, &pod_list(pods));
        let applied = expect_applies(&mut api).await;
        // 900 connections / 100 = 9, rate-limited to max(2*2, 2+4) = 6.
        assert_eq!(applied["spec"]["replicas"], 6);
        let call = api.next().await.expect(Method::PATCH, STATUS);
        let status = call.body["status"].clone();
        call.respond(
            StatusCode::OK,
            &serde_json::to_value(cluster(json!({"nats": {"url": "n"}}), None)).unwrap(),
        );
        assert_eq!(status["connections"], 900);
        assert_eq!(status["replicas"], 6);
        assert!(status["lastScaleTime"].is_string());
        assert_eq!(condition(&status, "Scaling")["status"], "True");
        assert_eq!(condition(&status, "MetricsAvailable")["status"], "True");
        assert_eq!(status["autoscaler"]["scaleUps"][0]["replicas"], 4);
        let event = api.next().await.expect(Method::POST, EVENTS);
        assert_eq!(event.body["reason"], "ScaleUp");
        event.echo();
        api
    };
    run_reconcile(rtc, ctx.clone(), script).await.unwrap();
    assert!(ctx.metrics.render().contains("direction=\"up\"} 1"));
}

#[tokio::test]
async fn an_early_reconcile_reads_nothing_and_writes_nothing() {
    let (ctx, mut api) = fixtures::context(Settings::default());
    let now = Time(Timestamp::now());
    let first = cluster(json!({"nats": {"url": "n"}}), None);
    // What a full sync a moment ago left behind.
    let status = json!({
        "observedGeneration": 3, "replicas": 2, "readyReplicas": 2, "ready": "2/2",
        "connections": 40, "selector": desired::selector_string("chat"),
        "autoscaler": {"recommendations": [], "scaleUps": [], "lastSync": now},
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "AllReplicasReady", "message": "2/2 replicas ready", "lastTransitionTime": now, "observedGeneration": 3},
            {"type": "Scaling", "status": "False", "reason": "WithinTolerance", "message": "x", "lastTransitionTime": now, "observedGeneration": 3},
            {"type": "MetricsAvailable", "status": "True", "reason": "MetricsRead", "message": "2 of 2", "lastTransitionTime": now, "observedGeneration": 3}
        ]
    });
    let rtc = cluster(serde_json::to_value(&first.spec).unwrap(), Some(status));
    let script = async move {
        api.next()
            .await
            .expect(Method::GET, DEPLOYMENT)
            .respond(StatusCode::OK, &deployment(2));
        // No pod list, no scrape: straight to the (unchanged) applies, and no status write.
        let applied = expect_applies(&mut api).await;
        assert_eq!(applied["spec"]["replicas"], 2);
        api
    };
    let action = run_reconcile(rtc, ctx, script).await.unwrap();
    assert_ne!(
        action,
        Action::requeue(Duration::from_secs(15)),
        "requeued for the rest of the period"
    );
}

fn scale_down_cluster(status: Option<Value>) -> RealtimeCluster {
    cluster(
        json!({"nats": {"url": "n"}, "autoscaling": {
            "minReplicas": 1, "targetConnectionsPerPod": 100, "scaleDownStabilizationSeconds": 0}}),
        status,
    )
}

#[tokio::test]
async fn scale_down_drains_the_least_loaded_pods_before_lowering_replicas() {
    let (a, b, c) = (
        FakeGateway::start(0).await,
        FakeGateway::start(5).await,
        FakeGateway::start(10).await,
    );
    let pods = vec![
        pod("a", true, a.port, "0"),
        pod("b", true, b.port, "0"),
        pod("c", true, c.port, "0"),
    ];
    let (ctx, mut api) = fixtures::context(Settings::default());
    let rtc = scale_down_cluster(None);
    let echo_rtc = serde_json::to_value(&rtc).unwrap();
    let script = async move {
        api.next()
            .await
            .expect(Method::GET, DEPLOYMENT)
            .respond(StatusCode::OK, &deployment(3));
        api.next()
            .await
            .expect(Method::GET, PODS)
            .respond(StatusCode::OK, &pod_list(pods));
        // The scale-down is recorded before any pod is touched.
        let call = api.next().await.expect(Method::PATCH, STATUS);
        let progress = call.body["status"]["scaleDown"].clone();
        call.respond(StatusCode::OK, &echo_rtc);
        assert_eq!(progress["from"], 3);
        assert_eq!(progress["to"], 1);
        assert_eq!(progress["victims"], json!(["a", "b"]));
        expect_deletion_costs(
            &mut api,
            &[
                ("a", i32::MIN.to_string()),
                ("b", i32::MIN.to_string()),
                ("c", "10".into()),
            ],
        )
        .await;
        let applied = expect_applies(&mut api).await;
        assert_eq!(applied["spec"]["replicas"], 1);
        let call = api.next().await.expect(Method::PATCH, STATUS);
        let status = call.body["status"].clone();
        call.respond(StatusCode::OK, &echo_rtc);
        assert!(status["scaleDown"].is_null(), "{status}");
        assert_eq!(status["replicas"], 1);
        assert!(status["lastScaleTime"].is_string());
        for reason in ["DrainStarted", "ScaleDown"] {
            let event = api.next().await.expect(Method::POST, EVENTS);
            assert_eq!(event.body["reason"], reason);
            event.echo();
        }
        api
    };
    run_reconcile(rtc, ctx, script).await.unwrap();
    assert_eq!((a.drains(), b.drains(), c.drains()), (1, 1, 0));
}

#[tokio::test]
async fn a_recorded_scale_down_is_resumed_not_repeated() {
    let (a, b, c) = (
        FakeGateway::start(0).await,
        FakeGateway::start(0).await,
        FakeGateway::start(10).await,
    );
    let min = i32::MIN.to_string();
    // `a` got its cost before the restart and is draining (unready); `b` did not yet.
    let pods = vec![
        pod("a", false, a.port, &min),
        pod("b", true, b.port, "0"),
        pod("c", true, c.port, "0"),
    ];
    let rtc = scale_down_cluster(Some(json!({
        "replicas": 3,
        "scaleDown": {"from": 3, "to": 1, "victims": ["a", "b"], "started": "2026-11-23T07:00:00Z"}
    })));
    let echo_rtc = serde_json::to_value(&rtc).unwrap();
    let (ctx, mut api) = fixtures::context(Settings {
        // The recorded start is long past; a generous deadline keeps this about resuming.
        drain_deadline: SignedDuration::from_hours(24 * 365 * 10),
        ..Settings::default()
    });
    let script = async move {
        api.next()
            .await
            .expect(Method::GET, DEPLOYMENT)
            .respond(StatusCode::OK, &deployment(3));
        api.next()
            .await
            .expect(Method::GET, PODS)
            .respond(StatusCode::OK, &pod_list(pods));
        // No new decision and no new victims: straight to the costs still missing.
        expect_deletion_costs(&mut api, &[("b", min.clone()), ("c", "10".into())]).await;
        let applied = expect_applies(&mut api).await;
        assert_eq!(applied["spec"]["replicas"], 1);
        let call = api.next().await.expect(Method::PATCH, STATUS);
        assert!(call.body["status"]["scaleDown"].is_null());
        assert_eq!(call.body["status"]["replicas"], 1);
        // Ready as the pods say (`a` is draining), not the Deployment's 3.
        assert_eq!(call.body["status"]["readyReplicas"], 2);
        call.respond(StatusCode::OK, &echo_rtc);
        // The resumed drain is an event of its own, naming its numbers and victims.
        let event = api.next().await.expect(Method::POST, EVENTS);
        assert_eq!(event.body["reason"], "DrainResumed");
        let note = event.body["note"].as_str().unwrap_or_default().to_string();
        assert!(note.contains("scale-down 3 -> 1: draining a, b"), "{note}");
        event.echo();
        let event = api.next().await.expect(Method::POST, EVENTS);
        assert_eq!(event.body["reason"], "ScaleDown");
        event.echo();
        api
    };
    run_reconcile(rtc, ctx, script).await.unwrap();
    assert_eq!((a.drains(), b.drains(), c.drains()), (1, 1, 0));
}

#[tokio::test]
async fn replicas_above_max_without_metrics_drain_unread_pods_then_drop() {
    // Scaled by hand to 4 with maxReplicas 2, no pod ready to read: still clamped, and
    // the pods removed are drained first (unready ones, by name).
    let gws = [
        FakeGateway::start(0).await,
        FakeGateway::start(0).await,
        FakeGateway::start(0).await,
        FakeGateway::start(0).await,
    ];
    let pods: Vec<Value> = ["a", "b", "c", "d"]
        .iter()
        .zip(&gws)
        .map(|(n, g)| pod(n, false, g.port, "0"))
        .collect();
    let rtc = cluster(
        json!({"nats": {"url": "n"}, "autoscaling": {"minReplicas": 1, "maxReplicas": 2}}),
        None,
    );
    let echo_rtc = serde_json::to_value(&rtc).unwrap();
    let (ctx, mut api) = fixtures::context(Settings::default());
    let script = async move {
        expect_sync_reads(&mut api, 4, pods).await;
        let call = api.next().await.expect(Method::PATCH, STATUS);
        let progress = call.body["status"]["scaleDown"].clone();
        call.respond(StatusCode::OK, &echo_rtc);
        assert_eq!(
            (progress["from"].clone(), progress["to"].clone()),
            (json!(4), json!(2))
        );
        assert_eq!(progress["victims"], json!(["a", "b"]));
        let min = i32::MIN.to_string();
        expect_deletion_costs(&mut api, &[("a", min.clone()), ("b", min)]).await;
        let applied = expect_applies(&mut api).await;
        assert_eq!(applied["spec"]["replicas"], 2);
        let call = api.next().await.expect(Method::PATCH, STATUS);
        assert_eq!(call.body["status"]["replicas"], 2);
        call.respond(StatusCode::OK, &echo_rtc);
        for reason in ["DrainStarted", "ScaleDown"] {
            let event = api.next().await.expect(Method::POST, EVENTS);
            assert_eq!(event.body["reason"], reason);
            event.echo();
        }
        api
    };
    run_reconcile(rtc, ctx, script).await.unwrap();
    let drains: Vec<u32> = gws.iter().map(FakeGateway::drains).collect();
    assert_eq!(drains, [1, 1, 0, 0]);
}

#[tokio::test]
async fn replicas_above_max_without_pods_drop_at_once() {
    let rtc = cluster(
        json!({"nats": {"url": "n"}, "autoscaling": {"minReplicas": 1, "maxReplicas": 7}}),
        None,
    );
    let echo_rtc = serde_json::to_value(&rtc).unwrap();
    let (ctx, mut api) = fixtures::context(Settings::default());
    let script = async move {
        expect_sync_reads(&mut api, 9, vec![]).await;
        let applied = expect_applies(&mut api).await;
        assert_eq!(applied["spec"]["replicas"], 7);
        let call = api.next().await.expect(Method::PATCH, STATUS);
        assert_eq!(call.body["status"]["replicas"], 7);
        call.respond(StatusCode::OK, &echo_rtc);
        let event = api.next().await.expect(Method::POST, EVENTS);
        assert_eq!(event.body["reason"], "ScaleDown");
        event.echo();
        api
    };
    run_reconcile(rtc, ctx, script).await.unwrap();
}

#[tokio::test]
async fn a_resumed_scale_down_records_the_recommendation() {
    // Without it the down-window forgets the load seen while draining, and the next
    // scale-down may follow sooner than scaleDownStabilizationSeconds allows.
    let (b, c) = (FakeGateway::start(0).await, FakeGateway::start(250).await);
    let min = i32::MIN.to_string();
    let pods = vec![pod("b", false, b.port, &min), pod("c", true, c.port, "250")];
    let rtc = cluster(
        json!({"nats": {"url": "n"}, "autoscaling": {
            "minReplicas": 1, "targetConnectionsPerPod": 100, "scaleDownStabilizationSeconds": 300}}),
        Some(json!({
            "replicas": 2,
            "scaleDown": {"from": 2, "to": 1, "victims": ["b"], "started": "2099-01-01T00:00:00Z"}
        })),
    );
    let echo_rtc = serde_json::to_value(&rtc).unwrap();
    let (ctx, mut api) = fixtures::context(Settings::default());
    let script = async move {
        expect_sync_reads(&mut api, 2, pods).await;
        let applied = expect_applies(&mut api).await;
        assert_eq!(applied["spec"]["replicas"], 1);
        let call = api.next().await.expect(Method::PATCH, STATUS);
        // 250 connections on the pod that stays, 100 per pod: 3 recommended.
        let recs = call.body["status"]["autoscaler"]["recommendations"].clone();
        call.respond(StatusCode::OK, &echo_rtc);
        assert_eq!(recs.as_array().map(Vec::len), Some(1), "{recs}");
        assert_eq!(recs[0]["replicas"], 3);
        // The resumed drain is an event of its own, naming its numbers and victims.
        let event = api.next().await.expect(Method::POST, EVENTS);
        assert_eq!(event.body["reason"], "DrainResumed");
        let note = event.body["note"].as_str().unwrap_or_default().to_string();
        assert!(note.contains("scale-down 2 -> 1: draining b"), "{note}");
        event.echo();
        let event = api.next().await.expect(Method::POST, EVENTS);
        assert_eq!(event.body["reason"], "ScaleDown");
        event.echo();
        api
    };
    run_reconcile(rtc, ctx, script).await.unwrap();
}

#[tokio::test]
async fn a_victim_that_refuses_the_drain_keeps_replicas_and_retries_soon() {
    let (a, c) = (FakeGateway::start(0).await, FakeGateway::start(10).await);
    // `b` has a closed admin port: its drain fails.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let min = i32::MIN.to_string();
    let pods = vec![
        pod("a", false, a.port, &min),
        pod("b", false, closed_port, &min),
        pod("c", true, c.port, "10"),
    ];
    let rtc = scale_down_cluster(Some(json!({
        "replicas": 3,
        "scaleDown": {"from": 3, "to": 1, "victims": ["a", "b"], "started": "2099-01-01T00:00:00Z"}
    })));
    let echo_rtc = serde_json::to_value(&rtc).unwrap();
    let (ctx, mut api) = fixtures::context(Settings::default());
    let script = async move {
        api.next()
            .await
            .expect(Method::GET, DEPLOYMENT)
            .respond(StatusCode::OK, &deployment(3));
        api.next()
            .await
            .expect(Method::GET, PODS)
            .respond(StatusCode::OK, &pod_list(pods));
        let applied = expect_applies(&mut api).await;
        assert_eq!(
            applied["spec"]["replicas"], 3,
            "replicas stay until victims drain"
        );
        let call = api.next().await.expect(Method::PATCH, STATUS);
        assert_eq!(
            call.body["status"]["scaleDown"]["victims"],
            json!(["a", "b"])
        );
        assert_eq!(
            condition(&call.body["status"], "Scaling")["reason"],
            "Draining"
        );
        call.respond(StatusCode::OK, &echo_rtc);
        // The resumed drain is an event of its own, naming its numbers and victims.
        let event = api.next().await.expect(Method::POST, EVENTS);
        assert_eq!(event.body["reason"], "DrainResumed");
        let note = event.body["note"].as_str().unwrap_or_default().to_string();
        assert!(note.contains("scale-down 3 -> 1: draining a, b"), "{note}");
        event.echo();
        let event = api.next().await.expect(Method::POST, EVENTS);
        assert_eq!(event.body["reason"], "DrainFailed");
        event.echo();
        api
    };
    let action = run_reconcile(rtc, ctx, script).await.unwrap();
    assert_eq!(action, Action::requeue(DRAIN_RETRY));
    assert_eq!((a.drains(), c.drains()), (1, 0));
}
