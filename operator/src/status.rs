//! The `status` of a `RealtimeCluster`: its conditions (metav1.Condition shape, with
//! transition times that only move when a condition's status changes) and the merge patch
//! that writes it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::crd::RealtimeClusterStatus;

/// Condition: the gateways run as the spec asks.
pub const READY: &str = "Ready";
/// Condition: a replica change is under way.
pub const SCALING: &str = "Scaling";
/// Condition: connection counts could be read.
pub const METRICS_AVAILABLE: &str = "MetricsAvailable";
/// Reason of `Ready=False` for a spec the operator will not act on.
pub const INVALID_SPEC: &str = "InvalidSpec";

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

/// Sets condition `type_`, keeping `lastTransitionTime` unless its status changes.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    state: State,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) {
    let message = message.into();
    let status = state.as_str();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Time(now);
            }
            c.status = status.into();
            c.reason = reason.into();
            c.message = message;
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            observed_generation: generation,
            last_transition_time: Time(now),
        }),
    }
}

/// The condition of type `type_`, if set.
pub fn condition<'a>(status: &'a RealtimeClusterStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let mut c = Vec::new();
        set_condition(&mut c, READY, State::False, "Creating", "a", Some(1), t(0));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time, Time(t(0)));
        set_condition(&mut c, READY, State::False, "Waiting", "b", Some(2), t(10));
        assert_eq!(c[0].last_transition_time, Time(t(0)));
        assert_eq!(
            (c[0].reason.as_str(), c[0].message.as_str()),
            ("Waiting", "b")
        );
        assert_eq!(c[0].observed_generation, Some(2));
        set_condition(&mut c, READY, State::True, "Ready", "c", Some(2), t(20));
        assert_eq!(c[0].last_transition_time, Time(t(20)));
        assert_eq!(c[0].status, "True");
        set_condition(&mut c, SCALING, State::Unknown, "External", "", None, t(20));
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].status, "Unknown");
    }

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
