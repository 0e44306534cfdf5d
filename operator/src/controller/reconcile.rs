//! One reconcile of one cluster, in order: refuse an invalid spec (status and a Warning
//! event, nothing else touched); read the Deployment; sync replicas; server-side apply the
//! owned objects; write the status if it changed; record metrics; publish the sync's events.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use crate::conditions::{self, ReadyReason, Reason as _};
use crate::controller::plan::event;
use crate::controller::status::{self, DeploymentState, Observed};
use crate::controller::sync::{self, SyncInput};
use crate::controller::writes::{apply_all, publish, write_status};
use crate::controller::{Context, Error};
use crate::crd::{AutoscalingMode, RealtimeCluster};
use crate::desired::{self, DesiredError};
use crate::operator_metrics::Direction;

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
            publish(ctx, rtc, ev).await;
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
        publish(ctx, rtc, ev).await;
    }
    Ok(Action::requeue(plan.requeue))
}
