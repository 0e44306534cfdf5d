//! Server-side printing: the `meta.k8s.io/v1` `Table` kubectl asks for on `get`, so it shows the
//! columns a real server would for custom resources (`additionalPrinterColumns`) instead of only
//! NAME and AGE. Built-in kinds get Name and Age (upstream prints kind-specific columns).

use crate::clock;
use crate::kinds::{PrinterColumn, ResourceKind};
use jsonpath_rust::JsonPath;
use serde_json::{Value, json};

/// Whether an `Accept` header asks for a Table.
pub fn wanted(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table") && first.contains("g=meta.k8s.io"))
}

/// The response `Content-Type` of a Table.
pub const CONTENT_TYPE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

fn columns(kind: &ResourceKind) -> Vec<PrinterColumn> {
    let column =
        |name: &str, column_type: &str, json_path: &str, description: &str| PrinterColumn {
            name: name.to_string(),
            column_type: column_type.to_string(),
            json_path: json_path.to_string(),
            description: description.to_string(),
            priority: 0,
        };
    let name = column(
        "Name",
        "string",
        ".metadata.name",
        "Name must be unique within a namespace.",
    );
    let age = column(
        "Age",
        "date",
        ".metadata.creationTimestamp",
        "CreationTimestamp is when the object was created.",
    );
    if kind.printer_columns.is_empty() {
        vec![name, age]
    } else {
        std::iter::once(name)
            .chain(kind.printer_columns.iter().cloned())
            .collect()
    }
}

/// kubectl's short human duration (`45s`, `3m12s`, `5h`, `2d3h`, ...).
pub fn human_age(seconds: u64) -> String {
    let (m, h, d) = (seconds / 60, seconds / 3600, seconds / 86_400);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{m}m{}s", s % 60),
        s if s < 3 * 3600 => format!("{m}m"),
        s if s < 8 * 3600 => format!("{h}h{}m", m % 60),
        s if s < 48 * 3600 => format!("{h}h"),
        s if s < 8 * 86_400 => format!("{d}d{}h", h % 24),
        _ => format!("{d}d"),
    }
}

/// The value a column's JSONPath selects in `object`: the first match, as the API server
/// prints it; none (or a path it cannot parse) is an empty cell.
fn select<'a>(object: &'a Value, json_path: &str) -> Option<&'a Value> {
    // Printer column paths are kubectl JSONPath without the root (`.status.ready`,
    // `.status.conditions[?(@.type=="Ready")].reason`); RFC 9535 wants a `$` first.
    let query = format!("${json_path}");
    object.query(&query).ok()?.into_iter().next()
}

fn cell(object: &Value, column: &PrinterColumn, now: u64) -> Value {
    let Some(value) = select(object, &column.json_path) else {
        return Value::Null;
    };
    match (column.column_type.as_str(), value) {
        ("date", Value::String(t)) => clock::parse_rfc3339(t)
            .map_or(Value::Null, |at| json!(human_age(now.saturating_sub(at)))),
        (_, Value::String(_) | Value::Number(_) | Value::Bool(_)) => value.clone(),
        (_, Value::Null) => Value::Null,
        (_, other) => json!(other.to_string()),
    }
}

/// A Table of `objects` (each row carries the whole object, as with `includeObject=Object`).
pub fn render(
    kind: &ResourceKind,
    objects: &[Value],
    resource_version: Option<u64>,
    now: u64,
) -> Value {
    let columns = columns(kind);
    let definitions: Vec<Value> = columns
        .iter()
        .map(|c| {
            let format = if c.name == "Name" && c.json_path == ".metadata.name" { "name" } else { "" };
            json!({"name": c.name, "type": c.column_type, "format": format, "description": c.description, "priority": c.priority})
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| json!({"cells": columns.iter().map(|c| cell(o, c, now)).collect::<Vec<_>>(), "object": o}))
        .collect();
    let mut metadata = json!({});
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = json!(rv.to_string());
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "columnDefinitions": definitions, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::kinds_from_crd;

    #[test]
    fn accept_header_detection() {
        assert!(wanted(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ));
        assert!(!wanted("application/json"));
        assert!(!wanted(
            "application/json, application/json;as=Table;v=v1;g=meta.k8s.io"
        ));
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human_age(5), "5s");
        assert_eq!(human_age(192), "3m12s");
        assert_eq!(human_age(3000), "50m");
        assert_eq!(human_age(4 * 3600 + 120), "4h2m");
        assert_eq!(human_age(20 * 3600), "20h");
        assert_eq!(human_age(3 * 86_400 + 7200), "3d2h");
        assert_eq!(human_age(30 * 86_400), "30d");
    }

    #[test]
    fn columns_select_with_jsonpath_filters() {
        let object = json!({"status": {"conditions": [
            {"type": "Scaling", "reason": "Steady"},
            {"type": "Ready", "reason": "InvalidSpec"}]}});
        let reason = select(&object, ".status.conditions[?(@.type==\"Ready\")].reason");
        assert_eq!(reason, Some(&json!("InvalidSpec")));
        assert_eq!(
            select(&object, ".status.conditions[?(@.type==\"Gone\")].reason"),
            None
        );
        assert_eq!(select(&object, ".status.missing.field"), None);
        assert_eq!(
            select(&object, ".status.conditions[0].type"),
            Some(&json!("Scaling"))
        );
    }

    #[test]
    fn custom_resources_use_their_printer_columns() {
        let crd = json!({"spec": {"group": "g.io", "scope": "Namespaced", "names": {"plural": "rs", "kind": "R"},
            "versions": [{"name": "v1", "served": true, "additionalPrinterColumns": [
                {"name": "Ready", "type": "string", "jsonPath": ".status.ready"},
                {"name": "Conns", "type": "integer", "jsonPath": ".status.connections"},
                {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]}]}});
        let kind = kinds_from_crd(&crd).expect("crd").remove(0);
        let object = json!({"metadata": {"name": "a", "creationTimestamp": "1970-01-01T00:00:00Z"}, "status": {"ready": "2/3"}});
        let table = render(&kind, &[object], Some(7), 90);
        let headers: Vec<&str> = table["columnDefinitions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(headers, ["Name", "Ready", "Conns", "Age"]);
        assert_eq!(table["rows"][0]["cells"], json!(["a", "2/3", null, "90s"]));
        assert_eq!(table["metadata"]["resourceVersion"], "7");
        assert_eq!(table["rows"][0]["object"]["metadata"]["name"], "a");
    }
}
