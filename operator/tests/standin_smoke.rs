//! Smoke test of the `roomcast-operator` binary against the Kubernetes API stand-in: two
//! replicas elect one leader, which applies the owned objects, writes status and reverts a
//! manual edit of a field it owns; and the in-process controller forgets a deleted
//! cluster's metrics series. (The full end-to-end suite lives under `tests/`.)

// Test code: a failed step should stop the test loudly.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, CustomResourceExt};
use roomcast_operator::crd::RealtimeCluster;
use serde_json::json;
use tokio::process::{Child, Command};

const DEADLINE: Duration = Duration::from_secs(30);

async fn client(standin: &kube_standin::Running) -> Client {
    let kubeconfig = Kubeconfig::from_yaml(&standin.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// A client of `standin`, which now knows the CRD and has the namespace `apps`.
async fn with_crd_and_namespace(standin: &kube_standin::Running) -> Client {
    let client = client(standin).await;
    let pp = PostParams::default();
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&pp, &RealtimeCluster::crd())
        .await
        .unwrap();
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "apps"}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&pp, &ns)
        .await
        .unwrap();
    client
}

fn operator(standin: &kube_standin::Running, identity: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_roomcast-operator"))
        .env("KUBECONFIG", &standin.kubeconfig_path)
        .env("RUST_LOG", "warn")
        .args(["--metrics-host", "127.0.0.1", "--metrics-port", "0"])
        .args(["--sync-period-seconds", "1", "--lease-namespace", "default"])
        .args(["--identity", identity])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Polls `check` every 100 ms until it yields a value; the test deadline bounds it.
async fn eventually<T, F, Fut>(mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    loop {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn operator_binary_reconciles_against_the_standin() {
    tokio::time::timeout(DEADLINE, async {
        let standin = kube_standin::start().await.unwrap();
        let client = with_crd_and_namespace(&standin).await;
        let pp = PostParams::default();
        let rtc: RealtimeCluster = serde_json::from_value(json!({
            "apiVersion": "roomcast.dev/v1alpha1", "kind": "RealtimeCluster",
            "metadata": {"name": "chat", "namespace": "apps"},
            "spec": {"nats": {"url": "nats://nats.apps:4222"}, "drainSeconds": 20}
        }))
        .unwrap();
        let clusters: Api<RealtimeCluster> = Api::namespaced(client.clone(), "apps");
        clusters.create(&pp, &rtc).await.unwrap();

        let mut a = operator(&standin, "op-a");
        let mut b = operator(&standin, "op-b");

        let deployments: Api<Deployment> = Api::namespaced(client.clone(), "apps");
        let deployment =
            eventually(|| async { deployments.get_opt("chat").await.ok().flatten() }).await;
        let spec = deployment.spec.unwrap();
        assert_eq!(spec.replicas, Some(2));
        let grace = |d: &Deployment| {
            d.spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .and_then(|p| p.termination_grace_period_seconds)
        };
        let services: Api<Service> = Api::namespaced(client.clone(), "apps");
        eventually(|| async { services.get_opt("chat-admin").await.ok().flatten() }).await;
        let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "apps");
        eventually(|| async { pdbs.get_opt("chat").await.ok().flatten() }).await;

        let status = eventually(|| async {
            let rtc = clusters.get("chat").await.ok()?;
            rtc.status.filter(|s| s.conditions.len() == 3)
        })
        .await;
        assert_eq!(status.replicas, Some(2));
        assert_eq!(status.observed_generation, Some(1));

        // One leader among the two.
        let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
        let holder = eventually(|| async {
            leases
                .get_opt("roomcast-operator")
                .await
                .ok()
                .flatten()?
                .spec?
                .holder_identity
        })
        .await;
        assert!(holder == "op-a" || holder == "op-b", "{holder}");

        // A manual edit of an owned field is reverted.
        let edit = json!({"spec": {"template": {"spec": {"terminationGracePeriodSeconds": 1}}}});
        deployments
            .patch("chat", &PatchParams::default(), &Patch::Merge(&edit))
            .await
            .unwrap();
        eventually(|| async {
            let d = deployments.get("chat").await.ok()?;
            (grace(&d) == Some(35)).then_some(())
        })
        .await;

        a.kill().await.unwrap();
        b.kill().await.unwrap();
        standin.shutdown().await;
    })
    .await
    .expect("smoke test exceeded its deadline");
}

/// A deleted cluster's `roomcast_operator_replicas` series goes away: the controller
/// forgets it when its next scheduled reconcile finds it gone.
#[tokio::test]
async fn a_deleted_cluster_is_forgotten_by_the_metrics() {
    use roomcast_operator::controller::{self, Context, Scope, Settings};
    use roomcast_operator::operator_metrics::OperatorMetrics;
    use std::sync::Arc;

    tokio::time::timeout(DEADLINE, async {
        let standin = kube_standin::start().await.unwrap();
        let client = with_crd_and_namespace(&standin).await;
        let pp = PostParams::default();
        let clusters: Api<RealtimeCluster> = Api::namespaced(client.clone(), "apps");
        for name in ["chat", "keep"] {
            let rtc: RealtimeCluster = serde_json::from_value(json!({
                "apiVersion": "roomcast.dev/v1alpha1", "kind": "RealtimeCluster",
                "metadata": {"name": name, "namespace": "apps"},
                "spec": {"nats": {"url": "nats://nats.apps:4222"}}
            }))
            .unwrap();
            clusters.create(&pp, &rtc).await.unwrap();
        }

        let metrics = Arc::new(OperatorMetrics::default());
        let settings = Settings {
            sync_period: Duration::from_secs(1),
            ..Settings::default()
        };
        let ctx = Arc::new(Context::new(
            client.clone(),
            settings,
            metrics.clone(),
            None,
        ));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(async move {
            controller::run(ctx, &Scope::Namespace("apps".into()), async {
                let _ = stopped.await;
            })
            .await;
        });

        let series = |name: &str| {
            format!("roomcast_operator_replicas{{namespace=\"apps\",name=\"{name}\"}} 2")
        };
        eventually(|| async {
            let text = metrics.render();
            (text.contains(&series("chat")) && text.contains(&series("keep"))).then_some(())
        })
        .await;

        clusters.delete("chat", &Default::default()).await.unwrap();
        eventually(|| async { (!metrics.render().contains("name=\"chat\"")).then_some(()) }).await;
        assert!(
            metrics.render().contains(&series("keep")),
            "{}",
            metrics.render()
        );

        let _ = stop.send(());
        run.await.unwrap();
        standin.shutdown().await;
    })
    .await
    .expect("forget test exceeded its deadline");
}
