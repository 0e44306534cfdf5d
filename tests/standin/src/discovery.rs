//! Legacy (unaggregated) discovery documents: `/api`, `/apis`, `/apis/<group>`, `/api/v1`,
//! `/apis/<group>/<version>` and `/version`.
//!
//! kubectl asks for aggregated discovery first but falls back to these when the response's
//! content type is plain `application/json`, which is all the stand-in ever sends.

use crate::kinds::ResourceKind;
use serde_json::{Value, json};
use std::collections::BTreeMap;

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const SUBRESOURCE_VERBS: [&str; 3] = ["get", "patch", "update"];

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-standin",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

/// `/api`: the core group's versions.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]
    })
}

/// Versions served per named group, in a stable order.
fn groups(kinds: &[ResourceKind]) -> BTreeMap<&str, Vec<&str>> {
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for k in kinds.iter().filter(|k| !k.group.is_empty()) {
        let versions = groups.entry(&k.group).or_default();
        if !versions.contains(&k.version.as_str()) {
            versions.push(&k.version);
        }
    }
    groups
}

fn group_doc(name: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({"name": name, "versions": versions, "preferredVersion": preferred})
}

/// `/apis`: every named group.
pub fn group_list(kinds: &[ResourceKind]) -> Value {
    let groups: Vec<Value> = groups(kinds)
        .iter()
        .map(|(name, versions)| group_doc(name, versions))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`, or `None` when the group is not served.
pub fn group(kinds: &[ResourceKind], name: &str) -> Option<Value> {
    let groups = groups(kinds);
    let versions = groups.get(name)?;
    let mut doc = group_doc(name, versions);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

/// `/api/v1` or `/apis/<group>/<version>`, or `None` when that group version is not served.
pub fn resource_list(kinds: &[ResourceKind], group: &str, version: &str) -> Option<Value> {
    let served: Vec<&ResourceKind> = kinds
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .collect();
    if served.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for k in served {
        let mut main = json!({
            "name": k.plural,
            "singularName": k.singular,
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": VERBS,
        });
        if !k.short_names.is_empty() {
            main["shortNames"] = json!(k.short_names);
        }
        if !k.categories.is_empty() {
            main["categories"] = json!(k.categories);
        }
        resources.push(main);
        if k.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", k.plural),
                "singularName": "",
                "namespaced": k.namespaced,
                "kind": k.kind,
                "verbs": SUBRESOURCE_VERBS,
            }));
        }
        if k.scale.is_some() {
            resources.push(json!({
                "name": format!("{}/scale", k.plural),
                "singularName": "",
                "namespaced": k.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": SUBRESOURCE_VERBS,
            }));
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::builtin_kinds;

    #[test]
    fn apps_v1_lists_deployment_subresources() {
        let doc = resource_list(&builtin_kinds(), "apps", "v1").expect("apps/v1 served");
        let names: Vec<&str> = doc["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert!(names.contains(&"deployments"));
        assert!(names.contains(&"deployments/status"));
        assert!(names.contains(&"deployments/scale"));
        assert_eq!(doc["groupVersion"], "apps/v1");
    }

    #[test]
    fn unknown_group_version_is_not_served() {
        assert!(resource_list(&builtin_kinds(), "example.com", "v1").is_none());
        assert!(group(&builtin_kinds(), "example.com").is_none());
    }

    #[test]
    fn group_list_has_no_core_group() {
        let doc = group_list(&builtin_kinds());
        let names: Vec<&str> = doc["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g["name"].as_str())
            .collect();
        assert!(names.contains(&"apps") && names.contains(&"coordination.k8s.io"));
        assert!(!names.contains(&""));
    }
}
