//! What the server does to an object on every write, as pure functions: metadata stamping,
//! status-subresource isolation, generation bumps, the little defaulting the stand-in does, and the
//! mapping to and from the autoscaling/v1 `Scale` subresource.

use crate::errors::ApiError;
use crate::kinds::{ResourceKind, ScalePaths};
use serde_json::{Map, Value, json};

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// The object itself.
    Main,
    /// `/status`.
    Status,
    /// `/scale`.
    Scale,
}

impl Subresource {
    /// The `managedFields` subresource name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Main => "",
            Self::Status => "status",
            Self::Scale => "scale",
        }
    }
}

/// Identity the server assigns at creation.
#[derive(Debug, Clone)]
pub struct Stamp {
    /// New uid.
    pub uid: String,
    /// Creation time (RFC 3339).
    pub now: String,
    /// Random suffix for `generateName`.
    pub suffix: String,
}

/// Validates a DNS-subdomain object name.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    let ends_ok = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > 253 || !ok_chars || !ends_ok {
        return Err(format!(
            "metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        ));
    }
    Ok(())
}

/// The object's `metadata` map, created (and the object made an object) if missing or malformed.
fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.is_object() {
        *object = json!({});
    }
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    match &mut object["metadata"] {
        Value::Object(m) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

/// Checks `apiVersion`/`kind` of a request body against the URL and fills them in when absent.
pub fn check_type(kind: &ResourceKind, body: &mut Value) -> Result<(), ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    let api_version = kind.api_version();
    match body.get("kind").and_then(Value::as_str) {
        Some(k) if k != kind.kind => {
            return Err(ApiError::bad_request(format!(
                "the body kind {k:?} does not match the resource kind {:?}",
                kind.kind
            )));
        }
        _ => body["kind"] = json!(kind.kind),
    }
    match body.get("apiVersion").and_then(Value::as_str) {
        Some(v) if kind.group.is_empty() && v != api_version => {
            return Err(ApiError::bad_request(format!(
                "the body apiVersion {v:?} does not match {api_version:?}"
            )));
        }
        _ => body["apiVersion"] = json!(api_version),
    }
    Ok(())
}

/// Checks and defaults the body's namespace against the request's.
pub fn check_namespace(
    kind: &ResourceKind,
    namespace: Option<&str>,
    body: &mut Value,
) -> Result<(), ApiError> {
    let meta = metadata_mut(body);
    match (
        kind.namespaced,
        namespace,
        meta.get("namespace").and_then(Value::as_str),
    ) {
        (true, Some(ns), Some(b)) if b != ns => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        (true, Some(ns), _) => {
            meta.insert("namespace".into(), json!(ns));
            Ok(())
        }
        (true, None, _) => Err(ApiError::bad_request(
            "a namespace is required for namespaced resources",
        )),
        (false, _, _) => {
            meta.remove("namespace");
            Ok(())
        }
    }
}

/// Turns a create body into the object to store (everything but `resourceVersion`).
pub fn prepare_create(
    kind: &ResourceKind,
    namespace: Option<&str>,
    mut body: Value,
    stamp: &Stamp,
) -> Result<Value, ApiError> {
    check_type(kind, &mut body)?;
    check_namespace(kind, namespace, &mut body)?;
    let meta = metadata_mut(&mut body);
    let name = match (
        meta.get("name").and_then(Value::as_str),
        meta.get("generateName").and_then(Value::as_str),
    ) {
        (Some(n), _) if !n.is_empty() => n.to_string(),
        (_, Some(prefix)) if !prefix.is_empty() => format!("{prefix}{}", stamp.suffix),
        _ => {
            return Err(ApiError::invalid(
                &kind.group,
                &kind.plural,
                "",
                "metadata.name: Required value: name or generateName is required",
            ));
        }
    };
    validate_name(&name).map_err(|m| ApiError::invalid(&kind.group, &kind.plural, &name, m))?;
    meta.insert("name".into(), json!(name));
    meta.insert("uid".into(), json!(stamp.uid));
    meta.insert("creationTimestamp".into(), json!(stamp.now));
    meta.insert("generation".into(), json!(1));
    for server_owned in [
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "resourceVersion",
        "selfLink",
    ] {
        meta.remove(server_owned);
    }
    if kind.status_subresource
        && let Value::Object(m) = &mut body
    {
        m.remove("status");
    }
    apply_defaults(kind, &mut body);
    Ok(body)
}

/// The part of an object whose change bumps `generation`.
fn spec_view(kind: &ResourceKind, object: &Value) -> Value {
    let mut v = object.clone();
    if let Value::Object(m) = &mut v {
        m.remove("metadata");
        if kind.status_subresource {
            m.remove("status");
        }
    }
    v
}

/// Turns an update of `old` into the object to store (everything but `resourceVersion`):
/// isolates the status subresource, keeps server-owned metadata and bumps `generation` on spec changes.
pub fn prepare_update(kind: &ResourceKind, old: &Value, mut new: Value, sub: Subresource) -> Value {
    if kind.status_subresource {
        match sub {
            Subresource::Status => {
                let status = new.get("status").cloned();
                new = old.clone();
                match status {
                    Some(s) => new["status"] = s,
                    None => {
                        if let Value::Object(m) = &mut new {
                            m.remove("status");
                        }
                    }
                }
            }
            Subresource::Main | Subresource::Scale => match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Value::Object(m) = &mut new {
                        m.remove("status");
                    }
                }
            },
        }
    }
    let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let meta = metadata_mut(&mut new);
    for server_owned in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "name",
        "namespace",
    ] {
        match old_meta.get(server_owned) {
            Some(v) => meta.insert(server_owned.into(), v.clone()),
            None => meta.remove(server_owned),
        };
    }
    meta.remove("selfLink");
    apply_defaults(kind, &mut new);
    let generation = old
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let bumped = if spec_view(kind, old) == spec_view(kind, &new) {
        generation
    } else {
        generation + 1
    };
    metadata_mut(&mut new).insert("generation".into(), json!(bumped));
    new
}

/// The few defaults the stand-in applies (upstream defaults far more).
fn apply_defaults(kind: &ResourceKind, object: &mut Value) {
    match (kind.group.as_str(), kind.plural.as_str()) {
        ("apps", "deployments" | "replicasets")
            if object.pointer("/spec/replicas").is_none_or(Value::is_null)
                && object.get("spec").is_some_and(Value::is_object) =>
        {
            object["spec"]["replicas"] = json!(1);
        }
        ("", "secrets") => {
            if let Some(Value::Object(string_data)) = object.get_mut("stringData").map(Value::take)
            {
                if !object.get("data").is_some_and(Value::is_object) {
                    object["data"] = json!({});
                }
                for (k, v) in string_data {
                    object["data"][&k] = json!(base64(v.as_str().unwrap_or_default().as_bytes()));
                }
            }
            if let Value::Object(m) = object {
                m.remove("stringData");
            }
        }
        ("", "namespaces") => {
            object["status"] = json!({"phase": "Active"});
            object["spec"] = json!({"finalizers": ["kubernetes"]});
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            let names = object
                .pointer("/spec/names")
                .cloned()
                .unwrap_or_else(|| json!({}));
            let versions: Vec<Value> = object
                .pointer("/spec/versions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                .filter_map(|v| v.get("name").cloned())
                .collect();
            let condition = |t: &str, reason: &str| json!({"type": t, "status": "True", "reason": reason, "message": "", "lastTransitionTime": crate::clock::now()});
            object["status"] = json!({
                "acceptedNames": names,
                "storedVersions": versions,
                "conditions": [condition("NamesAccepted", "NoConflicts"), condition("Established", "InitialNamesAccepted")],
            });
        }
        _ => {}
    }
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The value at a `.a.b.c` path.
fn at_path<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    path.trim_start_matches('.')
        .split('.')
        .try_fold(object, |v, k| v.get(k))
}

/// A label selector object (`matchLabels`/`matchExpressions`) rendered in query syntax.
fn selector_string(selector: &Value) -> String {
    if let Some(s) = selector.as_str() {
        return s.to_string();
    }
    let mut terms: Vec<String> = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    for e in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        terms.push(match e.get("operator").and_then(Value::as_str) {
            Some("In") => format!("{key} in ({})", values.join(",")),
            Some("NotIn") => format!("{key} notin ({})", values.join(",")),
            Some("DoesNotExist") => format!("!{key}"),
            _ => key.to_string(),
        });
    }
    terms.join(",")
}

/// The autoscaling/v1 `Scale` view of an object.
pub fn to_scale(paths: &ScalePaths, object: &Value) -> Value {
    let meta = object.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let pick = |k: &str| meta.get(k).cloned().unwrap_or(Value::Null);
    let mut status = json!({"replicas": at_path(object, &paths.status_replicas).and_then(Value::as_i64).unwrap_or(0)});
    if let Some(selector) = paths
        .label_selector
        .as_deref()
        .and_then(|p| at_path(object, p))
    {
        status["selector"] = json!(selector_string(selector));
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": pick("name"),
            "namespace": pick("namespace"),
            "uid": pick("uid"),
            "resourceVersion": pick("resourceVersion"),
            "creationTimestamp": pick("creationTimestamp"),
        },
        "spec": {"replicas": at_path(object, &paths.spec_replicas).and_then(Value::as_i64).unwrap_or(0)},
        "status": status,
    })
}

/// Writes a Scale's `spec.replicas` back into the object at the resource's replicas path.
pub fn from_scale(paths: &ScalePaths, object: &Value, scale: &Value) -> Result<Value, String> {
    let replicas = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .filter(|r| *r >= 0)
        .ok_or("spec.replicas: a non-negative integer is required")?;
    let mut out = object.clone();
    let keys: Vec<&str> = paths
        .spec_replicas
        .trim_start_matches('.')
        .split('.')
        .collect();
    let (last, parents) = keys.split_last().ok_or("empty specReplicasPath")?;
    let mut cur = &mut out;
    for k in parents {
        if !cur.get(*k).is_some_and(Value::is_object) {
            cur[*k] = json!({});
        }
        cur = &mut cur[*k];
    }
    cur[*last] = json!(replicas);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::builtin_kinds;

    fn kind(plural: &str) -> ResourceKind {
        builtin_kinds()
            .into_iter()
            .find(|k| k.plural == plural)
            .expect("builtin")
    }

    fn stamp() -> Stamp {
        Stamp {
            uid: "u-1".into(),
            now: "2026-01-01T00:00:00Z".into(),
            suffix: "abcde".into(),
        }
    }

    #[test]
    fn create_stamps_metadata_and_drops_status() {
        let body = json!({"metadata": {"generateName": "web-", "resourceVersion": "9"}, "spec": {}, "status": {"phase": "Running"}});
        let obj = prepare_create(&kind("pods"), Some("default"), body, &stamp()).expect("valid");
        assert_eq!(obj["metadata"]["name"], "web-abcde");
        assert_eq!(obj["metadata"]["namespace"], "default");
        assert_eq!(obj["metadata"]["uid"], "u-1");
        assert_eq!(obj["metadata"]["generation"], 1);
        assert_eq!(obj["kind"], "Pod");
        assert!(obj.get("status").is_none());
        assert!(obj["metadata"].get("resourceVersion").is_none());
    }

    #[test]
    fn create_rejects_bad_names_kinds_and_namespaces() {
        let k = kind("pods");
        assert_eq!(
            prepare_create(
                &k,
                Some("d"),
                json!({"metadata": {"name": "Bad_Name"}}),
                &stamp()
            )
            .map_err(|e| e.code),
            Err(422)
        );
        assert_eq!(
            prepare_create(&k, Some("d"), json!({"metadata": {}}), &stamp()).map_err(|e| e.code),
            Err(422)
        );
        assert_eq!(
            prepare_create(
                &k,
                Some("d"),
                json!({"kind": "Service", "metadata": {"name": "a"}}),
                &stamp()
            )
            .map_err(|e| e.code),
            Err(400)
        );
        assert_eq!(
            prepare_create(
                &k,
                Some("d"),
                json!({"metadata": {"name": "a", "namespace": "x"}}),
                &stamp()
            )
            .map_err(|e| e.code),
            Err(400)
        );
    }

    #[test]
    fn main_writes_keep_status_and_bump_generation_on_spec_change() {
        let k = kind("deployments");
        let old = json!({"metadata": {"name": "d", "uid": "u", "generation": 3}, "spec": {"replicas": 1}, "status": {"replicas": 1}});
        let new = json!({"metadata": {"name": "d", "uid": "other", "labels": {"a": "b"}}, "spec": {"replicas": 2}, "status": {"replicas": 9}});
        let out = prepare_update(&k, &old, new, Subresource::Main);
        assert_eq!(out["status"]["replicas"], 1);
        assert_eq!(out["metadata"]["uid"], "u");
        assert_eq!(out["metadata"]["generation"], 4);
        assert_eq!(out["metadata"]["labels"]["a"], "b");
    }

    #[test]
    fn metadata_and_status_writes_do_not_bump_generation() {
        let k = kind("deployments");
        let old = json!({"metadata": {"name": "d", "generation": 3}, "spec": {"replicas": 1}});
        let labelled = prepare_update(
            &k,
            &old,
            json!({"metadata": {"name": "d", "labels": {"x": "y"}}, "spec": {"replicas": 1}}),
            Subresource::Main,
        );
        assert_eq!(labelled["metadata"]["generation"], 3);
        let status = prepare_update(
            &k,
            &old,
            json!({"metadata": {"labels": {"x": "y"}}, "spec": {"replicas": 7}, "status": {"replicas": 2}}),
            Subresource::Status,
        );
        assert_eq!(status["metadata"]["generation"], 3);
        assert_eq!(status["spec"]["replicas"], 1, "status writes ignore spec");
        assert!(
            status["metadata"].get("labels").is_none(),
            "status writes ignore metadata"
        );
        assert_eq!(status["status"]["replicas"], 2);
    }

    #[test]
    fn secrets_fold_string_data_into_base64_data() {
        let obj = prepare_create(
            &kind("secrets"),
            Some("d"),
            json!({"metadata": {"name": "s"}, "stringData": {"k": "hello"}}),
            &stamp(),
        )
        .expect("valid");
        assert_eq!(obj["data"]["k"], "aGVsbG8=");
        assert!(obj.get("stringData").is_none());
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b""), "");
    }

    #[test]
    fn deployment_scale_round_trip() {
        let k = kind("deployments");
        let paths = k.scale.as_ref().expect("scale");
        let obj = json!({"metadata": {"name": "d", "namespace": "n"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "x"}}}, "status": {"replicas": 1}});
        let scale = to_scale(paths, &obj);
        assert_eq!(scale["spec"]["replicas"], 2);
        assert_eq!(scale["status"], json!({"replicas": 1, "selector": "app=x"}));
        let scaled = from_scale(paths, &obj, &json!({"spec": {"replicas": 5}})).expect("valid");
        assert_eq!(scaled["spec"]["replicas"], 5);
        assert!(from_scale(paths, &obj, &json!({"spec": {"replicas": -1}})).is_err());
    }
}
