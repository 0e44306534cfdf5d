//! One reconcile of one cluster, in order: refuse an invalid spec (status and a Warning
//! event, nothing else touched); read the Deployment; sync replicas; server-side apply the
//! owned objects; write the status if it changed; record metrics; publish the sync's events.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource as _, ResourceExt};

use crate::conditions::{self, ReadyReason, Reason as _};
use crate::controller::plan::event;
use crate::controller::status::{self, DeploymentState, Observed};
use crate::controller::sync::{self, SyncInput};
use crate::controller::writes::{apply_all, publish, write_status};
use crate::controller::{Context, Error, FIELD_MANAGER};
use crate::crd::{AutoscalingMode, RealtimeCluster};
use crate::desired::{self, DesiredError};
use crate::operator_metrics::Direction;
use crate::stored;

/// Reconciles `rtc` once; the action says when to come back.
pub async fn reconcile_cluster(rtc: &RealtimeCluster, ctx: &Context) -> Result<Action, Error> {
    let namespace = rtc
        .namespace()
        .ok_or(DesiredError::MissingMetadata("namespace"))?;
    let name = rtc.name_any();
    let now = Timestamp::now();
    let generation = rtc.metadata.generation;
    let old = rtc.status.clone().unwrap_or_default();
    let clusters: Api<RealtimeCluster> = Api::namespaced(ctx.client.clone(), &namespace);

    if let Err(invalid) = rtc.spec.validate() {
        let verdict = status::invalid_spec(&invalid.0);
        let already = conditions::find(&old.conditions, ReadyReason::TYPE)
            .is_some_and(|c| c.reason == verdict.reason.as_str() && c.message == verdict.message);
        let st = status::refused(&old, &verdict, generation, now);
        if st != old {
            write_status(&clusters, &name, &st).await?;
        }
        if !already {
            let ev = event(
                EventType::Warning,
                verdict.reason.as_str(),
                "Validate",
                invalid.0,
            );
            publish(ctx, &rtc.object_ref(&()), ev).await;
        }
        return Ok(Action::requeue(ctx.settings.sync_period));
    }

    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let deployment = deployments.get_opt(&name).await?.map(|d| DeploymentState {
        replicas: d.spec.as_ref().and_then(|s| s.replicas),
        ready: d
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0),
    });

    let plan = match rtc.spec.autoscaling.mode {
        AutoscalingMode::External => sync::external(rtc, ctx.settings.sync_period),
        AutoscalingMode::Builtin => {
            let input = SyncInput {
                cluster: rtc,
                namespace: &namespace,
                name: &name,
                current: deployment.and_then(|d| d.replicas),
                old: &old,
                now,
            };
            sync::builtin(ctx, &clusters, &input).await?
        }
    };

    let objects = desired::build(rtc, &ctx.settings.defaults, plan.replicas)?;
    apply_all(ctx, &namespace, &objects).await?;

    let observed = Observed {
        name: &name,
        generation,
        now,
        old: &old,
        deployment,
    };
    let st = status::assemble(&observed, &plan);
    if st != old {
        write_status(&clusters, &name, &st).await?;
    }
    ctx.metrics
        .set_replicas(&namespace, &name, st.replicas.unwrap_or(0));
    if let Some((from, to)) = plan.scaled {
        // A span event of the reconcile span.
        tracing::info!(from, to, "scale decision");
        ctx.metrics.scaled(if to > from {
            Direction::Up
        } else {
            Direction::Down
        });
    }
    for ev in plan.events {
        publish(ctx, &rtc.object_ref(&()), ev).await;
    }
    Ok(Action::requeue(plan.requeue))
}

/// Reports an object that does not deserialize on itself: `Ready=False` (unless it says so
/// already) and, the first time, a Warning event naming the field.
pub async fn report_unreadable(
    object: &DynamicObject,
    unreadable: &stored::Unreadable,
    ctx: &Context,
) -> Result<(), Error> {
    let ar = ApiResource::erase::<RealtimeCluster>(&());
    let namespace = object
        .namespace()
        .ok_or(DesiredError::MissingMetadata("namespace"))?;
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &namespace, &ar);
    let announced = stored::already_reported(object, unreadable);
    if let Some(patch) = stored::invalid_status_patch(object, unreadable, Timestamp::now()) {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        api.patch_status(&object.name_any(), &params, &Patch::Merge(&patch))
            .await?;
    }
    if !announced {
        let ev = event(
            EventType::Warning,
            ReadyReason::InvalidSpec.as_str(),
            "Validate",
            format!("cannot read the object: {unreadable}"),
        );
        publish(ctx, &object.object_ref(&ar), ev).await;
    }
    Ok(())
}
