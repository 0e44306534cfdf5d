//! Gateway pods as the operator sees them: readiness, where their admin endpoint is,
//! their deletion cost, and the connection counts read from them.

use std::collections::BTreeMap;

use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::admin_client::{AdminClient, AdminError};
use crate::desired::DELETION_COST;

/// Pod annotation that overrides the admin port (tests run gateways on other ports).
pub const ADMIN_PORT_ANNOTATION: &str = "roomcast.dev/admin-port";

/// One gateway pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayPod {
    /// Pod name.
    pub name: String,
    /// Ready condition is True and the pod is not being deleted.
    pub ready: bool,
    /// Being deleted.
    pub terminating: bool,
    /// `http://<podIP>:<adminPort>`, when the pod has an IP.
    pub admin_url: Option<String>,
    /// Current `controller.kubernetes.io/pod-deletion-cost`, if any.
    pub deletion_cost: Option<String>,
}

impl GatewayPod {
    /// Reads what the operator needs from a Pod; `admin_port` unless the pod overrides it.
    pub fn from_pod(pod: &Pod, admin_port: u16) -> Self {
        let status = pod.status.as_ref();
        let ready_condition = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let annotations = pod.annotations();
        let port = annotations
            .get(ADMIN_PORT_ANNOTATION)
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p != 0)
            .unwrap_or(admin_port);
        let admin_url = status
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
            .map(|ip| match ip {
                std::net::IpAddr::V4(v4) => format!("http://{v4}:{port}"),
                std::net::IpAddr::V6(v6) => format!("http://[{v6}]:{port}"),
            });
        Self {
            name: pod.name_any(),
            ready: ready_condition && !terminating,
            terminating,
            admin_url,
            deletion_cost: annotations.get(DELETION_COST).cloned(),
        }
    }
}

/// Readings of one sync.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Readings {
    /// Connections per pod that answered.
    pub connections: BTreeMap<String, u64>,
    /// Ready pods that could not be read, with the reason.
    pub failures: BTreeMap<String, String>,
}

impl Readings {
    /// Sum over the pods that answered.
    pub fn total(&self) -> u64 {
        self.connections.values().sum()
    }
}

/// Reads `roomcast_connections` from every ready pod, concurrently.
pub async fn read_connections(admin: &AdminClient, pods: &[GatewayPod]) -> Readings {
    let ready: Vec<&GatewayPod> = pods.iter().filter(|p| p.ready).collect();
    let results = join_all(ready.iter().map(|pod| async move {
        match &pod.admin_url {
            Some(url) => admin.connections(url).await,
            None => Err(AdminError::BadUrl("pod has no IP".into())),
        }
    }))
    .await;
    let mut readings = Readings::default();
    for (pod, result) in ready.into_iter().zip(results) {
        match result {
            Ok(n) => {
                readings.connections.insert(pod.name.clone(), n);
            }
            Err(e) => {
                readings.failures.insert(pod.name.clone(), e.to_string());
            }
        }
    }
    readings
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn reads_readiness_address_and_cost() {
        let p = pod(json!({
            "metadata": {"name": "gw-1", "annotations": {DELETION_COST: "5"}},
            "status": {"podIP": "10.1.2.3", "conditions": [{"type": "Ready", "status": "True"}]}
        }));
        let g = GatewayPod::from_pod(&p, 9090);
        assert_eq!(g.name, "gw-1");
        assert!(g.ready);
        assert_eq!(g.admin_url.as_deref(), Some("http://10.1.2.3:9090"));
        assert_eq!(g.deletion_cost.as_deref(), Some("5"));
    }

    #[test]
    fn annotation_overrides_the_admin_port_and_bad_values_are_ignored() {
        let p = pod(json!({
            "metadata": {"name": "a", "annotations": {ADMIN_PORT_ANNOTATION: "19090"}},
            "status": {"podIP": "127.0.0.2"}
        }));
        assert_eq!(
            GatewayPod::from_pod(&p, 9090).admin_url.as_deref(),
            Some("http://127.0.0.2:19090")
        );
        let p = pod(json!({
            "metadata": {"name": "a", "annotations": {ADMIN_PORT_ANNOTATION: "nope"}},
            "status": {"podIP": "fd00::1"}
        }));
        assert_eq!(
            GatewayPod::from_pod(&p, 9090).admin_url.as_deref(),
            Some("http://[fd00::1]:9090")
        );
    }

    #[test]
    fn unready_terminating_or_addressless_pods() {
        let p = pod(json!({"metadata": {"name": "a"},
            "status": {"conditions": [{"type": "Ready", "status": "False"}], "podIP": "garbage"}}));
        let g = GatewayPod::from_pod(&p, 9090);
        assert!(!g.ready);
        assert_eq!(g.admin_url, None);
        let p = pod(
            json!({"metadata": {"name": "a", "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        );
        let g = GatewayPod::from_pod(&p, 9090);
        assert!(!g.ready);
        assert!(g.terminating);
    }
}
