//! How a stored object is served at the version a request names.
//!
//! Objects are stored once per (group, plural) in the form they were last written. Serving them at
//! another version rewrites `apiVersion`; custom resources get no other conversion (the stand-in
//! runs no conversion webhooks). Core/v1 and events.k8s.io/v1 Events share one store, as upstream,
//! and are converted by renaming the fields the two versions name differently.

use crate::kinds::ResourceKind;
use serde_json::{Value, json};

/// (core/v1 name, events.k8s.io/v1 name) of the Event fields that differ.
const EVENT_FIELDS: [(&str, &str); 7] = [
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

/// Whether `kind` is one of the two Event APIs.
pub fn is_event(kind: &ResourceKind) -> bool {
    kind.plural == "events" && (kind.group.is_empty() || kind.group == "events.k8s.io")
}

/// The object as served by `kind`'s API version.
pub fn present(kind: &ResourceKind, object: &Value) -> Value {
    let mut v = object.clone();
    let stored_group = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .and_then(|a| a.split_once('/'))
        .map(|(g, _)| g);
    let stored_group = stored_group.unwrap_or_default();
    if is_event(kind)
        && stored_group != kind.group
        && let Value::Object(m) = &mut v
    {
        for (core, events) in EVENT_FIELDS {
            let (from, to) = if kind.group.is_empty() {
                (events, core)
            } else {
                (core, events)
            };
            if let Some(value) = m.remove(from) {
                m.insert(to.to_string(), value);
            }
        }
    }
    v["apiVersion"] = json!(kind.api_version());
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::builtin_kinds;

    fn kind(group: &str) -> ResourceKind {
        builtin_kinds()
            .into_iter()
            .find(|k| k.plural == "events" && k.group == group)
            .expect("events")
    }

    #[test]
    fn events_convert_both_ways() {
        let new_style = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "regarding": {"name": "rc"}, "note": "scaled", "reason": "Scale"});
        let core = present(&kind(""), &new_style);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "rc");
        assert_eq!(core["message"], "scaled");
        assert_eq!(core["reason"], "Scale");
        assert_eq!(present(&kind("events.k8s.io"), &core), new_style);
    }

    #[test]
    fn same_version_is_untouched() {
        let core = json!({"apiVersion": "v1", "kind": "Event", "message": "m"});
        assert_eq!(present(&kind(""), &core), core);
    }
}
