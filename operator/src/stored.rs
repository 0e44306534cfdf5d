//! A `RealtimeCluster` as the API server stores it. The controller watches the objects
//! untyped and reads each one here, so an object that does not deserialize (the CRD schema
//! was bypassed, or the object predates it: `autoscaling.mode: Bogus`) is reported on
//! itself instead of failing the whole watch and stalling every other cluster. Pure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::api::DynamicObject;
use serde_json::{Value, json};

use crate::conditions::{self, ReadyReason, Reason as _, State, Verdict};
use crate::crd::RealtimeCluster;

/// Why a stored object could not be read: the field and serde's complaint.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct Unreadable {
    /// Path of the offending field, e.g. `spec.autoscaling.mode` (`.` for the object).
    pub path: String,
    /// What is wrong with it.
    pub problem: String,
}

/// Reads a stored object as a typed `RealtimeCluster`, naming the first bad field.
pub fn read(object: &DynamicObject) -> Result<RealtimeCluster, Unreadable> {
    let value = serde_json::to_value(object).map_err(|e| Unreadable {
        path: ".".into(),
        problem: e.to_string(),
    })?;
    serde_path_to_error::deserialize(value).map_err(|e| Unreadable {
        path: e.path().to_string(),
        problem: e.inner().to_string(),
    })
}

/// The merge patch reporting `unreadable` on the object (`Ready=False`, reason
/// `InvalidSpec`), or `None` when it already says exactly that. Only the conditions and
/// `observedGeneration` are written: the rest of the status may be what is unreadable.
pub fn invalid_status_patch(
    object: &DynamicObject,
    unreadable: &Unreadable,
    now: Timestamp,
) -> Option<Value> {
    let generation = object.metadata.generation;
    let mut conditions: Vec<Condition> = object
        .data
        .pointer("/status/conditions")
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default();
    let verdict = Verdict::new(
        State::False,
        ReadyReason::InvalidSpec,
        unreadable.to_string(),
    );
    let observed = object
        .data
        .pointer("/status/observedGeneration")
        .and_then(Value::as_i64);
    if verdict.is_in(&conditions) && observed == generation {
        return None;
    }
    conditions::set(&mut conditions, &verdict, generation, now);
    Some(json!({"status": {"observedGeneration": generation, "conditions": conditions}}))
}

/// Whether the object already carries this report (so its Warning event went out before).
pub fn already_reported(object: &DynamicObject, unreadable: &Unreadable) -> bool {
    let message = unreadable.to_string();
    object
        .data
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|list| {
            list.iter().any(|c| {
                c["type"] == ReadyReason::TYPE
                    && c["reason"] == ReadyReason::InvalidSpec.as_str()
                    && c["message"] == message
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(spec: Value, status: Option<Value>) -> DynamicObject {
        let mut v = json!({
            "apiVersion": "roomcast.dev/v1alpha1", "kind": "RealtimeCluster",
            "metadata": {"name": "bad", "namespace": "apps", "generation": 2},
            "spec": spec,
        });
        if let Some(status) = status {
            v["status"] = status;
        }
        serde_json::from_value(v).unwrap()
    }

    fn t() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    #[test]
    fn a_good_object_reads_typed() {
        let rtc = read(&object(json!({"nats": {"url": "n"}}), None)).unwrap();
        assert_eq!(rtc.spec.nats.url, "n");
    }

    #[test]
    fn a_bad_object_names_the_field() {
        let cases = [
            (
                json!({"nats": {"url": "n"}, "autoscaling": {"mode": "Bogus"}}),
                "spec.autoscaling.mode",
                "Bogus",
            ),
            (
                json!({"nats": {"url": "n"}, "replicas": "three"}),
                "spec.replicas",
                "three",
            ),
            (json!({"autoscaling": {}}), "spec", "nats"),
        ];
        for (spec, path, mentions) in cases {
            let err = read(&object(spec.clone(), None)).unwrap_err();
            assert_eq!(err.path, path, "{spec}");
            assert!(err.problem.contains(mentions), "{spec}: {err}");
        }
    }

    #[test]
    fn the_report_is_written_once() {
        let bad = object(
            json!({"nats": {"url": "n"}, "autoscaling": {"mode": "Bogus"}}),
            None,
        );
        let err = read(&bad).unwrap_err();
        let patch = invalid_status_patch(&bad, &err, t()).unwrap();
        let ready = &patch["status"]["conditions"][0];
        assert_eq!(
            (&ready["type"], &ready["status"], &ready["reason"]),
            (&json!("Ready"), &json!("False"), &json!("InvalidSpec"))
        );
        assert!(
            ready["message"]
                .as_str()
                .unwrap()
                .starts_with("spec.autoscaling.mode: unknown variant `Bogus`")
        );
        assert_eq!(patch["status"]["observedGeneration"], 2);
        assert!(!already_reported(&bad, &err));
        // The object as it is after that write: nothing more to write, nor to announce.
        let reported = object(bad.data["spec"].clone(), Some(patch["status"].clone()));
        assert_eq!(invalid_status_patch(&reported, &err, t()), None);
        assert!(already_reported(&reported, &err));
    }
}
