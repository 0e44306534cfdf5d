//! Field ownership (`metadata.managedFields`) and the server-side apply approximation built on it.
//!
//! Ownership is tracked per field path, with objects recursed into and lists treated as atomic
//! leaves (upstream merges associative lists element-wise; here a list has one owner and an apply
//! replaces it whole). Apply then behaves like upstream for the cases operators depend on: the
//! applied fields are merged in, fields the same manager applied before and now omits are removed
//! unless another manager also owns them, and taking a field another manager set to a different
//! value is a conflict unless `force` is given.

use crate::patch;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

/// A field path: object keys from the root.
pub type FieldPath = Vec<String>;

/// What a manager did to own its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Server-side apply.
    Apply,
    /// Any other write (create, replace, merge/JSON/strategic patch).
    Update,
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Field manager name.
    pub manager: String,
    /// How the fields were written.
    pub operation: Operation,
    /// `""` for the main resource, `status` or `scale` otherwise.
    pub subresource: String,
    /// apiVersion the write used.
    pub api_version: String,
    /// When the entry last changed (RFC 3339).
    pub time: String,
    /// Owned leaf paths.
    pub fields: BTreeSet<FieldPath>,
}

/// The managers of one object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagedFields(pub Vec<Entry>);

/// Who is writing, and how: the identity of an entry plus its bookkeeping.
#[derive(Debug, Clone)]
pub struct Writer<'a> {
    /// Field manager name.
    pub manager: &'a str,
    /// `""`, `status` or `scale`.
    pub subresource: &'a str,
    /// apiVersion of the request.
    pub api_version: &'a str,
    /// Current time (RFC 3339).
    pub time: &'a str,
}

/// Metadata fields that identify an object or are maintained by the server, never owned.
const SERVER_METADATA: [&str; 9] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "managedFields",
    "selfLink",
];

/// Leaf paths of a JSON tree: nested non-empty objects are recursed, anything else is a leaf.
/// `key` maps an object key at a path to the path element, or `None` to skip it.
fn leaves(v: &Value, key: &dyn Fn(&FieldPath, &str) -> Option<String>) -> BTreeSet<FieldPath> {
    fn walk(
        v: &Value,
        key: &dyn Fn(&FieldPath, &str) -> Option<String>,
        path: &mut FieldPath,
        out: &mut BTreeSet<FieldPath>,
    ) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, child) in m {
                    if let Some(element) = key(path, k) {
                        path.push(element);
                        walk(child, key, path, out);
                        path.pop();
                    }
                }
            }
            _ if !path.is_empty() => {
                out.insert(path.clone());
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(v, key, &mut Vec::new(), &mut out);
    out
}

/// The ownable leaf paths of an object: lists and scalars are leaves; identity and
/// server-maintained metadata are never owned.
pub fn leaf_paths(v: &Value) -> BTreeSet<FieldPath> {
    leaves(v, &|path, k| {
        let server_owned = (path.is_empty() && (k == "apiVersion" || k == "kind"))
            || (path.len() == 1 && path[0] == "metadata" && SERVER_METADATA.contains(&k));
        (!server_owned).then(|| k.to_string())
    })
}

fn overlaps(a: &FieldPath, b: &FieldPath) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

fn value_at<'a>(v: &'a Value, path: &FieldPath) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

fn remove_at(v: &mut Value, path: &FieldPath) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    if let Some(Value::Object(m)) = parents.iter().try_fold(&mut *v, |v, k| v.get_mut(k)) {
        m.remove(last);
    }
}

impl ManagedFields {
    /// Reads `metadata.managedFields` of a stored object (entries this module rendered).
    pub fn from_object(object: &Value) -> Self {
        let entries = object
            .pointer("/metadata/managedFields")
            .and_then(Value::as_array);
        Self(
            entries
                .into_iter()
                .flatten()
                .filter_map(parse_entry)
                .collect(),
        )
    }

    /// Renders the entries as `metadata.managedFields`.
    pub fn to_json(&self) -> Value {
        Value::Array(self.0.iter().map(render_entry).collect())
    }

    fn entry_mut(&mut self, writer: &Writer<'_>, operation: Operation) -> &mut Entry {
        let pos = self.0.iter().position(|e| {
            e.manager == writer.manager
                && e.operation == operation
                && e.subresource == writer.subresource
        });
        let index = pos.unwrap_or_else(|| {
            self.0.push(Entry {
                manager: writer.manager.to_string(),
                operation,
                subresource: writer.subresource.to_string(),
                api_version: writer.api_version.to_string(),
                time: writer.time.to_string(),
                fields: BTreeSet::new(),
            });
            self.0.len() - 1
        });
        &mut self.0[index]
    }

    /// Gives `paths` to one entry, taking them from every other entry.
    fn take(&mut self, writer: &Writer<'_>, operation: Operation, paths: &BTreeSet<FieldPath>) {
        for e in &mut self.0 {
            let mine = e.manager == writer.manager
                && e.operation == operation
                && e.subresource == writer.subresource;
            if !mine {
                e.fields.retain(|f| !paths.iter().any(|p| overlaps(f, p)));
            }
        }
        let entry = self.entry_mut(writer, operation);
        entry.api_version = writer.api_version.to_string();
        entry.time = writer.time.to_string();
        if operation == Operation::Apply {
            entry.fields = paths.clone();
        } else {
            entry.fields.extend(paths.iter().cloned());
        }
        self.0.retain(|e| !e.fields.is_empty());
    }

    /// Records a non-apply write from `old` (absent for create) to `new`: the writer owns what changed.
    pub fn record_update(&mut self, writer: &Writer<'_>, old: Option<&Value>, new: &Value) {
        let new_paths = leaf_paths(new);
        if let Some(old) = old {
            let gone: Vec<FieldPath> = leaf_paths(old)
                .into_iter()
                .filter(|p| value_at(new, p).is_none())
                .collect();
            for e in &mut self.0 {
                e.fields.retain(|f| !gone.contains(f));
            }
        }
        let changed: BTreeSet<FieldPath> = new_paths
            .into_iter()
            .filter(|p| old.and_then(|o| value_at(o, p)) != value_at(new, p))
            .collect();
        if !changed.is_empty() {
            self.take(writer, Operation::Update, &changed);
        }
        self.0.retain(|e| !e.fields.is_empty());
    }

    /// Server-side applies `config` onto `current` (an empty object for create).
    ///
    /// Returns the merged object, or the conflicting fields (`path (manager)`) when `force` is false
    /// and another manager owns a field the config sets to a different value.
    pub fn apply(
        &mut self,
        writer: &Writer<'_>,
        current: &Value,
        config: &Value,
        force: bool,
    ) -> Result<Value, Vec<String>> {
        let paths = leaf_paths(config);
        let mut conflicts = Vec::new();
        for e in self.0.iter().filter(|e| e.manager != writer.manager) {
            for p in &paths {
                let owned = e.fields.iter().any(|f| overlaps(f, p));
                if owned && value_at(current, p).is_some_and(|v| Some(v) != value_at(config, p)) {
                    conflicts.push(format!(".{} (owned by {})", p.join("."), e.manager));
                }
            }
        }
        if !force && !conflicts.is_empty() {
            return Err(conflicts);
        }
        let mut object = current.clone();
        let previous = self
            .0
            .iter()
            .find(|e| {
                e.manager == writer.manager
                    && e.operation == Operation::Apply
                    && e.subresource == writer.subresource
            })
            .map(|e| e.fields.clone())
            .unwrap_or_default();
        for dropped in previous
            .iter()
            .filter(|p| !paths.iter().any(|n| overlaps(n, p)))
        {
            let shared = self
                .0
                .iter()
                .filter(|e| !(e.manager == writer.manager && e.operation == Operation::Apply))
                .any(|e| e.fields.iter().any(|f| overlaps(f, dropped)));
            if !shared {
                remove_at(&mut object, dropped);
            }
        }
        let mut body = config.clone();
        if let Value::Object(m) = &mut body
            && let Some(Value::Object(meta)) = m.get_mut("metadata")
        {
            meta.retain(|k, _| {
                !SERVER_METADATA.contains(&k.as_str()) || k == "name" || k == "namespace"
            });
        }
        patch::merge(&mut object, &body);
        self.take(writer, Operation::Apply, &paths);
        Ok(object)
    }
}

fn fields_v1(paths: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut node = &mut root;
        for k in p {
            let child = node
                .entry(format!("f:{k}"))
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(m) = child else { break };
            node = m;
        }
    }
    Value::Object(root)
}

fn paths_from_fields_v1(v: &Value) -> BTreeSet<FieldPath> {
    leaves(v, &|_, k| k.strip_prefix("f:").map(str::to_string))
}

fn render_entry(e: &Entry) -> Value {
    let mut v = json!({
        "manager": e.manager,
        "operation": if e.operation == Operation::Apply { "Apply" } else { "Update" },
        "apiVersion": e.api_version,
        "time": e.time,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields_v1(&e.fields),
    });
    if !e.subresource.is_empty() {
        v["subresource"] = json!(e.subresource);
    }
    v
}

fn parse_entry(v: &Value) -> Option<Entry> {
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Some(Entry {
        manager: s("manager"),
        operation: match v.get("operation")?.as_str()? {
            "Apply" => Operation::Apply,
            _ => Operation::Update,
        },
        subresource: s("subresource"),
        api_version: s("apiVersion"),
        time: s("time"),
        fields: paths_from_fields_v1(v.get("fieldsV1")?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            subresource: "",
            api_version: "v1",
            time: "2026-01-01T00:00:00Z",
        }
    }

    #[test]
    fn leaf_paths_skip_server_metadata_and_treat_lists_as_leaves() {
        let v = json!({"apiVersion": "v1", "metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"l": [1], "e": {}}});
        let paths: Vec<String> = leaf_paths(&v).into_iter().map(|p| p.join(".")).collect();
        assert_eq!(paths, vec!["metadata.labels.x", "spec.e", "spec.l"]);
    }

    #[test]
    fn apply_removes_fields_the_manager_stopped_applying() {
        let mut mf = ManagedFields::default();
        let a = mf
            .apply(
                &writer("op"),
                &json!({}),
                &json!({"spec": {"replicas": 3, "image": "a"}}),
                false,
            )
            .expect("no conflict");
        let b = mf
            .apply(&writer("op"), &a, &json!({"spec": {"image": "b"}}), false)
            .expect("no conflict");
        assert_eq!(b, json!({"spec": {"image": "b"}}));
    }

    #[test]
    fn apply_keeps_dropped_fields_another_manager_owns() {
        let mut mf = ManagedFields::default();
        let a = mf
            .apply(
                &writer("op"),
                &json!({}),
                &json!({"spec": {"replicas": 3}}),
                false,
            )
            .expect("no conflict");
        let mut scaled = a.clone();
        scaled["spec"]["replicas"] = json!(5);
        mf.record_update(
            &Writer {
                subresource: "scale",
                ..writer("hpa")
            },
            Some(&a),
            &scaled,
        );
        let b = mf
            .apply(
                &writer("op"),
                &scaled,
                &json!({"spec": {"paused": false}}),
                false,
            )
            .expect("no conflict");
        assert_eq!(b, json!({"spec": {"replicas": 5, "paused": false}}));
    }

    #[test]
    fn apply_conflicts_unless_forced() {
        let mut mf = ManagedFields::default();
        let created = json!({"spec": {"image": "a"}});
        mf.record_update(&writer("kubectl"), None, &created);
        let err = mf
            .apply(
                &writer("op"),
                &created,
                &json!({"spec": {"image": "b"}}),
                false,
            )
            .expect_err("conflict");
        assert_eq!(err, vec![".spec.image (owned by kubectl)".to_string()]);
        let same = mf.apply(
            &writer("op"),
            &created,
            &json!({"spec": {"image": "a"}}),
            false,
        );
        assert!(same.is_ok(), "applying the same value is not a conflict");
        let forced = mf
            .apply(
                &writer("op"),
                &created,
                &json!({"spec": {"image": "b"}}),
                true,
            )
            .expect("forced");
        assert_eq!(forced["spec"]["image"], "b");
        assert!(
            mf.0.iter().all(|e| e.manager == "op"),
            "ownership moved: {mf:?}"
        );
    }

    #[test]
    fn managed_fields_round_trip_through_json() {
        let mut mf = ManagedFields::default();
        mf.record_update(
            &writer("a"),
            None,
            &json!({"metadata": {"labels": {"x": "1"}}, "spec": {"l": [1]}}),
        );
        let object = json!({"metadata": {"managedFields": mf.to_json()}});
        assert_eq!(ManagedFields::from_object(&object), mf);
        assert_eq!(
            mf.to_json()[0]["fieldsV1"],
            json!({"f:metadata": {"f:labels": {"f:x": {}}}, "f:spec": {"f:l": {}}})
        );
    }
}
