//! The tests' kubelet and ReplicaSet: Pod objects made from the Deployment's pod template whose
//! `status.podIP` is the loopback address of a real gateway, with a readiness probe that
//! mirrors the gateway's `/readyz` into the Pod's `Ready` condition. Only for the stand-in: on
//! a real cluster the real controllers own pods.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::admin::DrainGate;
use crate::cluster::Cluster;
use crate::gateway::Gateway;

/// The operator's annotation for a pod's admin port.
pub const ADMIN_PORT_ANNOTATION: &str = "roomcast.dev/admin-port";
/// The ReplicaSet's deletion-cost annotation.
pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";
/// How often the fake kubelet probes readiness.
const PROBE_PERIOD: Duration = Duration::from_millis(200);

/// A Pod object backed by a real gateway.
pub struct FakePod {
    /// Pod (and gateway node) name.
    pub name: String,
    /// The gateway behind it.
    pub gateway: Gateway,
    /// The drain gate the pod's admin port points at, if any.
    pub gate: Option<DrainGate>,
    prober: Prober,
}

impl FakePod {
    /// Starts a gateway on `ip`, creates Pod `name` from Deployment `deployment`'s template
    /// (admin port annotated; behind a closed [`DrainGate`] when `gated`) and marks it Ready.
    pub async fn start(
        cluster: &Cluster,
        deployment: &str,
        name: &str,
        ip: Ipv4Addr,
        gated: bool,
    ) -> Self {
        let gateway = Gateway::start(name, ip).await;
        let gate = if gated {
            let gate = DrainGate::start(IpAddr::V4(ip), gateway.admin)
                .await
                .unwrap_or_else(|e| panic!("drain gate for {name}: {e}"));
            Some(gate)
        } else {
            None
        };
        let admin_port = gate
            .as_ref()
            .map_or(gateway.admin.port(), |g| g.addr.port());
        let d = cluster
            .api::<Deployment>()
            .get(deployment)
            .await
            .unwrap_or_else(|e| panic!("deployment {deployment}: {e}"));
        let template = serde_json::to_value(d.spec.map(|s| s.template))
            .unwrap_or_else(|e| panic!("template: {e}"));
        let mut metadata = template["metadata"].clone();
        metadata["name"] = json!(name);
        metadata["namespace"] = json!(cluster.namespace);
        metadata["annotations"][ADMIN_PORT_ANNOTATION] = json!(admin_port.to_string());
        let pod: Pod = serde_json::from_value(json!({
            "metadata": metadata,
            "spec": template["spec"],
        }))
        .unwrap_or_else(|e| panic!("pod {name}: {e}"));
        let pods = cluster.api::<Pod>();
        pods.create(&PostParams::default(), &pod)
            .await
            .unwrap_or_else(|e| panic!("create pod {name}: {e}"));
        set_status(&pods, name, ip, true).await;
        let prober = Prober(tokio::spawn(probe(
            pods,
            name.to_string(),
            ip,
            gateway.admin,
        )));
        Self {
            name: name.to_string(),
            gateway,
            gate,
            prober,
        }
    }

    /// Deletes the Pod object and stops the gateway (the ReplicaSet removing the pod).
    pub async fn delete(self, cluster: &Cluster) {
        drop(self.prober);
        cluster
            .api::<Pod>()
            .delete(&self.name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete pod {}: {e}", self.name));
        self.gateway.stop().await;
    }
}

/// The readiness-probe task, stopped with its pod.
struct Prober(JoinHandle<()>);

impl Drop for Prober {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn set_status(pods: &Api<Pod>, name: &str, ip: Ipv4Addr, ready: bool) {
    let status = json!({"status": {
        "phase": "Running",
        "podIP": ip.to_string(),
        "podIPs": [{"ip": ip.to_string()}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_or_else(|e| panic!("pod {name} status: {e}"));
}

/// Mirrors `/readyz` into the Ready condition, as the kubelet's readiness probe does.
async fn probe(pods: Api<Pod>, name: String, ip: Ipv4Addr, admin: std::net::SocketAddr) {
    let mut ready = true;
    loop {
        tokio::time::sleep(PROBE_PERIOD).await;
        let now = crate::admin::status(admin, "/readyz").await == Some(200);
        if now != ready {
            ready = now;
            set_status(&pods, &name, ip, ready).await;
        }
    }
}

/// A pod's annotation `key`, if the pod exists and has it.
pub async fn annotation(cluster: &Cluster, pod: &str, key: &str) -> Option<String> {
    let p = cluster.api::<Pod>().get_opt(pod).await.ok()??;
    p.metadata.annotations?.get(key).cloned()
}

/// The pods' deletion costs, in the order given (`None` where absent).
pub async fn deletion_costs(cluster: &Cluster, pods: &[&str]) -> Vec<Option<String>> {
    let mut costs = Vec::new();
    for pod in pods {
        costs.push(annotation(cluster, pod, DELETION_COST).await);
    }
    costs
}

/// The `k` pods a ReplicaSet removes first: lowest deletion cost (ties by name).
pub fn lowest_cost(pods: &[(String, Option<String>)], k: usize) -> Vec<String> {
    let mut ranked: Vec<(i64, &String)> = pods
        .iter()
        .map(|(name, cost)| {
            let cost = cost.as_deref().and_then(|c| c.parse().ok()).unwrap_or(0);
            (cost, name)
        })
        .collect();
    ranked.sort();
    ranked.into_iter().take(k).map(|(_, n)| n.clone()).collect()
}

/// `spec.replicas` of Deployment `name`, if it exists.
pub async fn replicas(cluster: &Cluster, name: &str) -> Option<i32> {
    cluster
        .api::<Deployment>()
        .get_opt(name)
        .await
        .ok()??
        .spec?
        .replicas
}

/// The Deployment as JSON, if it exists.
pub async fn deployment_json(cluster: &Cluster, name: &str) -> Option<Value> {
    let d = cluster.api::<Deployment>().get_opt(name).await.ok()??;
    serde_json::to_value(d).ok()
}

#[cfg(test)]
mod tests {
    use super::lowest_cost;

    #[test]
    fn the_replicaset_removes_the_lowest_cost_first() {
        let pods = vec![
            ("a".to_string(), Some("10".to_string())),
            ("b".to_string(), Some("-2147483648".to_string())),
            ("c".to_string(), None),
            ("d".to_string(), Some("0".to_string())),
        ];
        assert_eq!(lowest_cost(&pods, 1), vec!["b"]);
        assert_eq!(lowest_cost(&pods, 3), vec!["b", "c", "d"]);
    }
}
