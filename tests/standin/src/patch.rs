//! Patch documents: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and an approximation of
//! Kubernetes strategic merge patch.
//!
//! Strategic merge is JSON merge plus: lists of objects are merged element-wise when every element
//! carries a recognisable merge key (`name`, `containerPort`, `port`, `mountPath`, `ip`), elements
//! marked `$patch: delete` are removed, `$setElementOrder/<field>` orders the result,
//! `$deleteFromPrimitiveList/<field>` removes values, and other `$` directives are dropped.
//! Upstream takes merge keys from the Go types; the heuristic covers what kubectl sends for the kinds
//! the stand-in serves.

use serde_json::{Map, Value};

/// RFC 7386 JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in patch {
            if v.is_null() {
                t.remove(k);
            } else {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

const MERGE_KEYS: [&str; 5] = ["name", "containerPort", "port", "mountPath", "ip"];

/// The merge key shared by every object in `items`, if there is one.
fn merge_key(items: &[Value]) -> Option<&'static str> {
    MERGE_KEYS
        .into_iter()
        .find(|key| !items.is_empty() && items.iter().all(|i| i.get(*key).is_some()))
}

/// Approximate Kubernetes strategic merge patch (see the module documentation).
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replacement = Value::Object(patch.clone());
        strip_directives(&mut replacement);
        *target = replacement;
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in patch {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(remove)) = (t.get_mut(field), v) {
                list.retain(|x| !remove.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Array(items) => {
                let merged = match (t.get(k), merge_key(items)) {
                    (Some(Value::Array(existing)), Some(key)) => merge_list(existing, items, key),
                    _ => {
                        let mut replacement = Value::Array(items.clone());
                        strip_directives(&mut replacement);
                        replacement
                    }
                };
                let ordered = match patch.get(&format!("$setElementOrder/{k}")) {
                    Some(Value::Array(order)) => apply_order(merged, order),
                    _ => merged,
                };
                t.insert(k.clone(), ordered);
            }
            _ => strategic_merge(t.entry(k.clone()).or_insert(Value::Null), v),
        }
    }
}

/// Merges list `items` into `existing` element-wise by `key`.
fn merge_list(existing: &[Value], items: &[Value], key: &str) -> Value {
    let mut out: Vec<Value> = existing.to_vec();
    for item in items {
        let id = item.get(key);
        let pos = out.iter().position(|e| e.get(key) == id);
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(p) = pos {
                out.remove(p);
            }
            continue;
        }
        match pos {
            Some(p) => strategic_merge(&mut out[p], item),
            None => {
                let mut fresh = item.clone();
                strip_directives(&mut fresh);
                out.push(fresh);
            }
        }
    }
    Value::Array(out)
}

/// Reorders `list` to follow `order` (elements identified by their merge key); unmentioned ones go last.
fn apply_order(list: Value, order: &[Value]) -> Value {
    let Value::Array(mut items) = list else {
        return list;
    };
    let Some(key) = merge_key(order) else {
        return Value::Array(items);
    };
    let mut out = Vec::with_capacity(items.len());
    for o in order {
        if let Some(p) = items.iter().position(|i| i.get(key) == o.get(key)) {
            out.push(items.remove(p));
        }
    }
    out.extend(items);
    Value::Array(out)
}

/// Removes `$`-prefixed directive keys everywhere in a value.
fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

/// Decodes one RFC 6901 JSON pointer into its reference tokens.
fn pointer_tokens(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer
        .strip_prefix('/')
        .ok_or_else(|| format!("invalid JSON pointer {pointer:?}"))?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

/// The container addressed by all but the last token, plus that last token.
fn parent_mut<'a>(doc: &'a mut Value, path: &str) -> Result<(&'a mut Value, String), String> {
    let mut tokens = pointer_tokens(path)?;
    let last = tokens
        .pop()
        .ok_or_else(|| "the root cannot be the target of this operation".to_string())?;
    let mut cur = doc;
    for t in &tokens {
        cur = match cur {
            Value::Object(m) => m.get_mut(t),
            Value::Array(a) => t.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| format!("path {path:?} does not exist"))?;
    }
    Ok((cur, last))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = parent_mut(doc, path)?;
    match parent {
        Value::Object(m) => {
            m.insert(last, value);
            Ok(())
        }
        Value::Array(a) => {
            let index = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>()
                    .map_err(|_| format!("invalid index in {path:?}"))?
            };
            if index > a.len() {
                return Err(format!("index out of bounds in {path:?}"));
            }
            a.insert(index, value);
            Ok(())
        }
        _ => Err(format!("path {path:?} does not name a container")),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = parent_mut(doc, path)?;
    match parent {
        Value::Object(m) => m
            .remove(&last)
            .ok_or_else(|| format!("path {path:?} does not exist")),
        Value::Array(a) => {
            let i = last
                .parse::<usize>()
                .map_err(|_| format!("invalid index in {path:?}"))?;
            if i < a.len() {
                Ok(a.remove(i))
            } else {
                Err(format!("index out of bounds in {path:?}"))
            }
        }
        _ => Err(format!("path {path:?} does not exist")),
    }
}

fn get(doc: &Value, path: &str) -> Result<Value, String> {
    doc.pointer(path)
        .cloned()
        .ok_or_else(|| format!("path {path:?} does not exist"))
}

/// RFC 6902 JSON patch; all-or-nothing (the document is untouched on error).
pub fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), String> {
    let ops = patch
        .as_array()
        .ok_or("a JSON patch must be an array of operations")?;
    let mut work = doc.clone();
    for op in ops {
        let kind = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or("operation without \"op\"")?;
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or("operation without \"path\"")?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| format!("{kind} operation without \"value\""))
        };
        let from = || {
            op.get("from")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{kind} operation without \"from\""))
        };
        match kind {
            "add" => add(&mut work, path, value()?)?,
            "remove" => {
                remove(&mut work, path)?;
            }
            "replace" if path.is_empty() => work = value()?,
            "replace" => {
                remove(&mut work, path)?;
                add(&mut work, path, value()?)?;
            }
            "move" => {
                let v = remove(&mut work, from()?)?;
                add(&mut work, path, v)?;
            }
            "copy" => {
                let v = get(&work, from()?)?;
                add(&mut work, path, v)?;
            }
            "test" => {
                if get(&work, path)? != value()? {
                    return Err(format!("test operation failed at {path:?}"));
                }
            }
            other => return Err(format!("unknown JSON patch operation {other:?}")),
        }
    }
    *doc = work;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge(&mut doc, &json!({"a": "z", "c": {"f": null}, "l": [3]}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}, "l": [3]}));
    }

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let mut doc = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "ports": [{"containerPort": 80}]},
            {"name": "b", "image": "b:1"}
        ]}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [{"name": "a", "image": "a:2"}]
        }});
        strategic_merge(&mut doc, &patch);
        assert_eq!(
            doc,
            json!({"spec": {"containers": [
                {"name": "b", "image": "b:1"},
                {"name": "a", "image": "a:2", "ports": [{"containerPort": 80}]}
            ]}})
        );
    }

    #[test]
    fn strategic_merge_deletes_marked_elements_and_primitives() {
        let mut doc = json!({"metadata": {"finalizers": ["x", "y"]}, "spec": {"ports": [{"port": 80}, {"port": 81}]}});
        let patch = json!({
            "metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]},
            "spec": {"ports": [{"port": 81, "$patch": "delete"}]}
        });
        strategic_merge(&mut doc, &patch);
        assert_eq!(
            doc,
            json!({"metadata": {"finalizers": ["y"]}, "spec": {"ports": [{"port": 80}]}})
        );
    }

    #[test]
    fn strategic_merge_replaces_lists_without_merge_key() {
        let mut doc = json!({"args": ["a", "b"], "x": {"$retainKeys": 1}});
        strategic_merge(
            &mut doc,
            &json!({"args": ["c"], "x": {"$retainKeys": ["y"], "y": 1}}),
        );
        assert_eq!(doc, json!({"args": ["c"], "x": {"$retainKeys": 1, "y": 1}}));
    }

    #[test]
    fn json_patch_operations() {
        let mut doc = json!({"a": {"b": 1}, "l": [1, 2], "k~/": 0});
        let patch = json!([
            {"op": "add", "path": "/l/-", "value": 3},
            {"op": "add", "path": "/l/0", "value": 0},
            {"op": "replace", "path": "/a/b", "value": 2},
            {"op": "copy", "from": "/a", "path": "/c"},
            {"op": "move", "from": "/c/b", "path": "/d"},
            {"op": "remove", "path": "/k~0~1"},
            {"op": "test", "path": "/d", "value": 2}
        ]);
        json_patch(&mut doc, &patch).expect("patch applies");
        assert_eq!(
            doc,
            json!({"a": {"b": 2}, "l": [0, 1, 2, 3], "c": {}, "d": 2})
        );
    }

    #[test]
    fn json_patch_is_atomic() {
        let mut doc = json!({"a": 1});
        let patch = json!([{"op": "replace", "path": "/a", "value": 2}, {"op": "test", "path": "/a", "value": 3}]);
        assert!(json_patch(&mut doc, &patch).is_err());
        assert_eq!(doc, json!({"a": 1}));
        assert!(json_patch(&mut doc, &json!([{"op": "remove", "path": "/nope"}])).is_err());
        assert!(json_patch(&mut doc, &json!({"op": "add"})).is_err());
        assert!(
            json_patch(
                &mut doc,
                &json!([{"op": "add", "path": "/l/5", "value": 1}])
            )
            .is_err()
        );
    }
}
