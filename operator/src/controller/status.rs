//! The `status` of a `RealtimeCluster`, assembled in one pure function from the status
//! before, what the Deployment reports and what the sync settled on; and the status of a
//! spec the operator refuses.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::conditions::{self, ReadyReason, State, Verdict};
use crate::controller::plan::Plan;
use crate::crd::RealtimeClusterStatus;
use crate::desired;

/// What the gateway Deployment reports, when it exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeploymentState {
    /// `spec.replicas`.
    pub replicas: Option<i32>,
    /// `status.readyReplicas` (0 when absent).
    pub ready: i32,
}

/// Everything but the plan that the status is made of.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    /// Cluster name (for the selector).
    pub name: &'a str,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// Time of this reconcile.
    pub now: Timestamp,
    /// Status as it was.
    pub old: &'a RealtimeClusterStatus,
    /// The Deployment, if it exists.
    pub deployment: Option<DeploymentState>,
}

/// The status after a sync.
pub fn assemble(observed: &Observed<'_>, plan: &Plan) -> RealtimeClusterStatus {
    let Observed {
        name,
        generation,
        now,
        old,
        deployment,
    } = observed;
    let (generation, now) = (*generation, *now);
    let current = deployment.and_then(|d| d.replicas);
    let replicas = plan.replicas.or(current).unwrap_or(0);
    // Ready gateways as the pods say when they were listed (the readiness the autoscaler
    // used), else as the Deployment reports.
    let ready_replicas = plan.ready_pods.unwrap_or(deployment.map_or(0, |d| d.ready));
    let mut conditions = old.conditions.clone();
    conditions::set(
        &mut conditions,
        &ready(deployment.is_some(), ready_replicas, replicas),
        generation,
        now,
    );
    if let Some(scaling) = &plan.scaling {
        conditions::set(&mut conditions, scaling, generation, now);
    }
    if let Some(metrics) = &plan.metrics {
        conditions::set(&mut conditions, metrics, generation, now);
    }
    RealtimeClusterStatus {
        observed_generation: generation,
        replicas: Some(replicas),
        ready_replicas: Some(ready_replicas),
        ready: Some(format!("{ready_replicas}/{replicas}")),
        connections: plan.connections,
        last_scale_time: if plan.scaled.is_some() {
            Some(Time(now))
        } else {
            old.last_scale_time.clone()
        },
        selector: Some(desired::selector_string(name)),
        conditions,
        autoscaler: plan.history.clone(),
        scale_down: plan.scale_down.clone(),
    }
}

fn ready(exists: bool, ready_replicas: i32, replicas: i32) -> Verdict<ReadyReason> {
    let counts = format!("{ready_replicas}/{replicas} replicas ready");
    if !exists {
        Verdict::new(
            State::False,
            ReadyReason::Creating,
            "the gateway Deployment is being created",
        )
    } else if ready_replicas >= replicas {
        Verdict::new(State::True, ReadyReason::AllReplicasReady, counts)
    } else {
        Verdict::new(State::False, ReadyReason::ReplicasNotReady, counts)
    }
}

/// The `Ready=False` verdict of a spec the operator will not act on.
pub fn invalid_spec(message: &str) -> Verdict<ReadyReason> {
    Verdict::new(State::False, ReadyReason::InvalidSpec, message)
}

/// The status of a spec the operator will not act on: only `Ready` and the generation move.
pub fn refused(
    old: &RealtimeClusterStatus,
    verdict: &Verdict<ReadyReason>,
    generation: Option<i64>,
    now: Timestamp,
) -> RealtimeClusterStatus {
    let mut st = old.clone();
    st.observed_generation = generation;
    conditions::set(&mut st.conditions, verdict, generation, now);
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::{MetricsReason, Reason as _, ScalingReason};
    use std::time::Duration;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn reason<'a>(st: &'a RealtimeClusterStatus, type_: &str) -> (&'a str, &'a str) {
        let c = conditions::find(&st.conditions, type_).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn a_new_cluster_is_creating_at_the_planned_replicas() {
        let old = RealtimeClusterStatus::default();
        let mut plan = Plan::hold(Some(2), Duration::from_secs(15));
        plan.ready_pods = Some(0);
        let observed = Observed {
            name: "chat",
            generation: Some(3),
            now: t(0),
            old: &old,
            deployment: None,
        };
        let st = assemble(&observed, &plan);
        assert_eq!(st.observed_generation, Some(3));
        assert_eq!((st.replicas, st.ready.as_deref()), (Some(2), Some("0/2")));
        assert_eq!(reason(&st, "Ready"), ("False", "Creating"));
        assert_eq!(reason(&st, "Scaling"), ("False", "Steady"));
        assert_eq!(reason(&st, "MetricsAvailable"), ("Unknown", "NotRead"));
        assert_eq!(st.last_scale_time, None);
        assert_eq!(
            st.selector.as_deref(),
            Some("app.kubernetes.io/instance=chat,app.kubernetes.io/name=roomcast-gateway")
        );
    }

    #[test]
    fn readiness_comes_from_the_pods_when_listed_and_kept_verdicts_stay() {
        let before = RealtimeClusterStatus {
            last_scale_time: Some(Time(t(-100))),
            ..RealtimeClusterStatus::default()
        };
        let mut plan = Plan::hold(None, Duration::from_secs(15));
        let observed = Observed {
            name: "chat",
            generation: Some(1),
            now: t(0),
            old: &before,
            deployment: Some(DeploymentState {
                replicas: Some(3),
                ready: 3,
            }),
        };
        let st = assemble(&observed, &plan);
        assert_eq!(st.ready.as_deref(), Some("3/3"), "Deployment's count");
        assert_eq!(reason(&st, "Ready"), ("True", "AllReplicasReady"));
        assert_eq!(st.last_scale_time, Some(Time(t(-100))));

        plan.ready_pods = Some(2);
        plan.scaled = Some((3, 4));
        plan.replicas = Some(4);
        plan.scaling = None;
        plan.metrics = Some(Verdict::new(State::True, MetricsReason::MetricsRead, "x"));
        let again = assemble(
            &Observed {
                old: &st,
                ..observed
            },
            &plan,
        );
        assert_eq!(again.ready.as_deref(), Some("2/4"), "the pods' count");
        assert_eq!(reason(&again, "Ready"), ("False", "ReplicasNotReady"));
        assert_eq!(reason(&again, "Scaling"), ("False", "Steady"), "kept");
        assert_eq!(reason(&again, "MetricsAvailable"), ("True", "MetricsRead"));
        assert_eq!(again.last_scale_time, Some(Time(t(0))));
    }

    #[test]
    fn a_refused_spec_moves_only_ready_and_the_generation() {
        let old = RealtimeClusterStatus {
            replicas: Some(4),
            ..RealtimeClusterStatus::default()
        };
        let verdict = invalid_spec("minReplicas (5) > maxReplicas (3)");
        let st = refused(&old, &verdict, Some(7), t(0));
        assert_eq!((st.replicas, st.observed_generation), (Some(4), Some(7)));
        assert_eq!(reason(&st, "Ready"), ("False", "InvalidSpec"));
        assert_eq!(st.conditions.len(), 1);
        assert!(!Verdict::reason_is_set(
            &st.conditions,
            ScalingReason::Draining
        ));
        assert_eq!(ReadyReason::TYPE, "Ready");
    }
}
