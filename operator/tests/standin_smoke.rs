//! Smoke test of the `roomcast-operator` binary against the Kubernetes API stand-in: two
//! replicas elect one leader, which applies the owned objects, writes status and reverts a
//! manual edit of a field it owns. (The full end-to-end suite lives under `tests/`.)

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
        let client = client(&standin).await;
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
