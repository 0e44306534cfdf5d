//! The conditions of a `RealtimeCluster` (metav1.Condition shape): one reason enum per
//! condition type, each rendered to its PascalCase string in one place, and the update
//! rule that moves `lastTransitionTime` only when a condition's status changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::autoscale;

/// A condition's tri-state status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// "True".
    True,
    /// "False".
    False,
    /// "Unknown".
    Unknown,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::True => "True",
            State::False => "False",
            State::Unknown => "Unknown",
        }
    }

    /// `True` or `False` from a boolean.
    pub fn from_bool(b: bool) -> Self {
        if b { State::True } else { State::False }
    }
}

/// The reasons of one condition type: the enum names the type it belongs to.
pub trait Reason: Copy + PartialEq + std::fmt::Debug {
    /// The condition type (`Ready`, `Scaling`, `MetricsAvailable`).
    const TYPE: &'static str;
    /// The PascalCase reason written to status.
    fn as_str(self) -> &'static str;
}

/// Why `Ready` is what it is: the gateways run as the spec asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadyReason {
    /// The spec is invalid; the operator does not act on it.
    InvalidSpec,
    /// The gateway Deployment does not exist yet.
    Creating,
    /// Every replica is ready.
    AllReplicasReady,
    /// Some replicas are not ready.
    ReplicasNotReady,
}

impl Reason for ReadyReason {
    const TYPE: &'static str = "Ready";
    fn as_str(self) -> &'static str {
        match self {
            ReadyReason::InvalidSpec => "InvalidSpec",
            ReadyReason::Creating => "Creating",
            ReadyReason::AllReplicasReady => "AllReplicasReady",
            ReadyReason::ReplicasNotReady => "ReplicasNotReady",
        }
    }
}

/// Why `Scaling` is what it is: a replica change is under way, or why none is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScalingReason {
    /// What the autoscaler decided this sync.
    Autoscaler(autoscale::Reason),
    /// First sync: replicas start at `minReplicas`.
    Creating,
    /// A scale-down waits for its victims to accept the drain.
    Draining,
    /// Replicas come from the scale subresource.
    ExternalAutoscaling,
}

impl Reason for ScalingReason {
    const TYPE: &'static str = "Scaling";
    fn as_str(self) -> &'static str {
        use autoscale::Reason as A;
        match self {
            ScalingReason::Autoscaler(reason) => match reason {
                A::NoMetrics => "NoMetrics",
                A::WithinTolerance => "WithinTolerance",
                A::MissingMetrics => "MissingMetrics",
                A::ScaleUp => "ScaleUp",
                A::ScaleDown => "ScaleDown",
                A::Stabilized => "Stabilized",
                A::RateLimited => "RateLimited",
                A::Bounded => "ReplicaBounds",
                A::Steady => "Steady",
            },
            ScalingReason::Creating => "Creating",
            ScalingReason::Draining => "Draining",
            ScalingReason::ExternalAutoscaling => "ExternalAutoscaling",
        }
    }
}

/// Why `MetricsAvailable` is what it is: connection counts could be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsReason {
    /// Not read yet.
    NotRead,
    /// At least one ready pod reported.
    MetricsRead,
    /// No ready pod to read.
    NoReadyPods,
    /// Ready pods exist but none could be read.
    ScrapeFailed,
    /// External mode reads no metrics.
    ExternalAutoscaling,
}

impl Reason for MetricsReason {
    const TYPE: &'static str = "MetricsAvailable";
    fn as_str(self) -> &'static str {
        match self {
            MetricsReason::NotRead => "NotRead",
            MetricsReason::MetricsRead => "MetricsRead",
            MetricsReason::NoReadyPods => "NoReadyPods",
            MetricsReason::ScrapeFailed => "ScrapeFailed",
            MetricsReason::ExternalAutoscaling => "ExternalAutoscaling",
        }
    }
}

/// One condition's new value.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict<R> {
    /// Status.
    pub state: State,
    /// Reason (its enum names the condition type).
    pub reason: R,
    /// Human-readable detail.
    pub message: String,
}

impl<R: Reason> Verdict<R> {
    /// A verdict.
    pub fn new(state: State, reason: R, message: impl Into<String>) -> Self {
        Self {
            state,
            reason,
            message: message.into(),
        }
    }

    /// Whether `conditions` already hold exactly this verdict (status, reason, message).
    pub fn is_in(&self, conditions: &[Condition]) -> bool {
        find(conditions, R::TYPE).is_some_and(|c| {
            c.status == self.state.as_str()
                && c.reason == self.reason.as_str()
                && c.message == self.message
        })
    }

    /// Whether `conditions` already hold this condition with this reason.
    pub fn reason_is_set(conditions: &[Condition], reason: R) -> bool {
        find(conditions, R::TYPE).is_some_and(|c| c.reason == reason.as_str())
    }
}

/// Sets the verdict's condition, keeping `lastTransitionTime` unless its status changes.
pub fn set<R: Reason>(
    conditions: &mut Vec<Condition>,
    verdict: &Verdict<R>,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = verdict.state.as_str();
    let reason = verdict.reason.as_str();
    match conditions.iter_mut().find(|c| c.type_ == R::TYPE) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Time(now);
            }
            c.status = status.into();
            c.reason = reason.into();
            c.message.clone_from(&verdict.message);
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: R::TYPE.into(),
            status: status.into(),
            reason: reason.into(),
            message: verdict.message.clone(),
            observed_generation: generation,
            last_transition_time: Time(now),
        }),
    }
}

/// The condition of type `type_`, if set.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn ready(state: State, reason: ReadyReason, message: &str) -> Verdict<ReadyReason> {
        Verdict::new(state, reason, message)
    }

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let mut c = Vec::new();
        set(
            &mut c,
            &ready(State::False, ReadyReason::Creating, "a"),
            Some(1),
            t(0),
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time, Time(t(0)));
        let waiting = ready(State::False, ReadyReason::ReplicasNotReady, "b");
        set(&mut c, &waiting, Some(2), t(10));
        assert_eq!(c[0].last_transition_time, Time(t(0)));
        assert_eq!(
            (c[0].reason.as_str(), c[0].message.as_str()),
            ("ReplicasNotReady", "b")
        );
        assert_eq!(c[0].observed_generation, Some(2));
        let all = ready(State::True, ReadyReason::AllReplicasReady, "c");
        set(&mut c, &all, Some(2), t(20));
        assert_eq!(c[0].last_transition_time, Time(t(20)));
        assert_eq!(c[0].status, "True");
        let external = Verdict::new(State::Unknown, ScalingReason::ExternalAutoscaling, "");
        set(&mut c, &external, None, t(20));
        assert_eq!(c.len(), 2);
        assert_eq!(
            (c[1].type_.as_str(), c[1].status.as_str()),
            ("Scaling", "Unknown")
        );
        assert!(Verdict::reason_is_set(
            &c,
            ScalingReason::ExternalAutoscaling
        ));
        assert!(!Verdict::reason_is_set(&c, ScalingReason::Draining));
        assert!(!Verdict::reason_is_set(&c, MetricsReason::NotRead));
    }

    #[test]
    fn autoscaler_reasons_keep_their_status_strings() {
        use autoscale::Reason as A;
        for (reason, text) in [
            (A::NoMetrics, "NoMetrics"),
            (A::WithinTolerance, "WithinTolerance"),
            (A::MissingMetrics, "MissingMetrics"),
            (A::ScaleUp, "ScaleUp"),
            (A::ScaleDown, "ScaleDown"),
            (A::Stabilized, "Stabilized"),
            (A::RateLimited, "RateLimited"),
            (A::Bounded, "ReplicaBounds"),
            (A::Steady, "Steady"),
        ] {
            assert_eq!(ScalingReason::Autoscaler(reason).as_str(), text);
        }
    }
}
