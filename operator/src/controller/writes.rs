//! The controller's writes to the API server: server-side apply of the owned objects, the
//! status merge patch, and events (whose failure is logged, never fatal).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::Event;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::controller::{Context, Error, FIELD_MANAGER};
use crate::crd::{RealtimeCluster, RealtimeClusterStatus};
use crate::desired::Desired;

async fn apply<K>(ctx: &Context, api: Api<K>, object: &K) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let applied = api.patch(&name, &params, &Patch::Apply(object)).await?;
    let meta = applied.meta();
    let namespace = meta.namespace.clone().unwrap_or_default();
    let version = meta.resource_version.clone().unwrap_or_default();
    let kind = K::kind(&());
    let before = ctx.applied_version(
        (kind.to_string(), namespace.clone(), name.clone()),
        version.clone(),
    );
    // An apply that changes nothing keeps the resourceVersion; an object created moments
    // ago was created by this apply (nobody else writes these names).
    let fresh = meta
        .creation_timestamp
        .as_ref()
        .is_some_and(|t| Timestamp::now().duration_since(t.0) < SignedDuration::from_secs(5));
    let change = match before {
        Some(before) if before == version => None,
        Some(_) => Some("changed"),
        None if fresh => Some("created"),
        None => Some("applied (first apply since start)"),
    };
    match change {
        Some(change) => {
            tracing::info!(%kind, %namespace, %name, resource_version = %version, "{change}")
        }
        None => tracing::debug!(%kind, %namespace, %name, "unchanged"),
    }
    Ok(())
}

/// Applies the Deployment, both Services and the PodDisruptionBudget, in that order.
pub async fn apply_all(ctx: &Context, namespace: &str, objects: &Desired) -> Result<(), Error> {
    let client = &ctx.client;
    apply(
        ctx,
        Api::<Deployment>::namespaced(client.clone(), namespace),
        &objects.deployment,
    )
    .await?;
    let services = Api::<Service>::namespaced(client.clone(), namespace);
    apply(ctx, services.clone(), &objects.service).await?;
    apply(ctx, services, &objects.admin_service).await?;
    apply(
        ctx,
        Api::<PodDisruptionBudget>::namespaced(client.clone(), namespace),
        &objects.pdb,
    )
    .await
}

/// A JSON merge patch writing `status` whole; absent optional parts are written as `null`
/// so a finished scale-down or dropped field really goes away.
pub fn merge_patch(status: &RealtimeClusterStatus) -> Result<Value, serde_json::Error> {
    let mut value = serde_json::to_value(status)?;
    if let Value::Object(map) = &mut value {
        for key in [
            "scaleDown",
            "autoscaler",
            "connections",
            "lastScaleTime",
            "replicas",
            "readyReplicas",
            "ready",
            "selector",
        ] {
            map.entry(key).or_insert(Value::Null);
        }
    }
    Ok(json!({ "status": value }))
}

/// Writes the whole status.
pub async fn write_status(
    api: &Api<RealtimeCluster>,
    name: &str,
    st: &RealtimeClusterStatus,
) -> Result<(), Error> {
    let patch = merge_patch(st)?;
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    api.patch_status(name, &params, &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Publishes an event about `regarding`; a failure (RBAC, API hiccup) is logged, never fatal.
pub async fn publish(ctx: &Context, regarding: &ObjectReference, ev: Event) {
    if let Err(e) = ctx.recorder.publish(&ev, regarding).await {
        tracing::warn!(reason = %ev.reason, error = %e, "cannot publish event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_clears_absent_fields() {
        let patch = merge_patch(&RealtimeClusterStatus {
            replicas: Some(3),
            ..RealtimeClusterStatus::default()
        })
        .unwrap();
        assert_eq!(patch["status"]["replicas"], 3);
        assert!(patch["status"]["scaleDown"].is_null());
        assert!(
            patch["status"]
                .as_object()
                .unwrap()
                .contains_key("scaleDown")
        );
        assert_eq!(patch["status"]["conditions"], json!([]));
    }
}
