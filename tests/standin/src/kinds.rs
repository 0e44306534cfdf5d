//! The resource types the stand-in serves: the built-in catalog and the types CRDs add.
//!
//! A [`ResourceKind`] is one (group, version, plural) the API serves, with what discovery reports
//! about it and which subresources it has. Custom resource kinds are derived from stored
//! CustomResourceDefinition objects by [`kinds_from_crd`], so they appear and vanish with the CRD.

use serde_json::Value;

/// Where the scale subresource finds replicas and the selector in an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalePaths {
    /// JSON path of the desired replica count, e.g. `.spec.replicas`.
    pub spec_replicas: String,
    /// JSON path of the observed replica count, e.g. `.status.replicas`.
    pub status_replicas: String,
    /// JSON path of the label selector string, if the resource declares one.
    pub label_selector: Option<String>,
}

/// One served resource type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceKind {
    /// API group; empty for the core group.
    pub group: String,
    /// API version within the group.
    pub version: String,
    /// URL plural, e.g. `deployments`.
    pub plural: String,
    /// Singular name, e.g. `deployment`.
    pub singular: String,
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// kubectl short names, e.g. `deploy`.
    pub short_names: Vec<String>,
    /// Discovery categories, e.g. `all`.
    pub categories: Vec<String>,
    /// Whether `.status` is a separate subresource (isolated from main-resource writes).
    pub status_subresource: bool,
    /// The scale subresource, if any.
    pub scale: Option<ScalePaths>,
    /// Whether this is a custom resource (strategic merge patch is refused for these, as upstream).
    pub custom: bool,
    /// Extra `kubectl get` columns (a CRD version's `additionalPrinterColumns`).
    pub printer_columns: Vec<PrinterColumn>,
}

/// One `additionalPrinterColumns` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    pub column_type: String,
    /// Simple JSON path (`.status.ready`) of the value.
    pub json_path: String,
    /// Description shown by `kubectl explain`-like tools.
    pub description: String,
    /// 0 for default output, higher for `-o wide`.
    pub priority: i64,
}

impl ResourceKind {
    /// `apiVersion` of objects of this kind (`v1`, `apps/v1`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Storage identity: objects are shared by all versions of a (group, plural), and the two
    /// Event APIs share the core group's store.
    pub fn storage_key(&self) -> (String, String) {
        if self.group == "events.k8s.io" && self.plural == "events" {
            return (String::new(), self.plural.clone());
        }
        (self.group.clone(), self.plural.clone())
    }
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    version: &str,
    plural: &str,
    kind: &str,
    namespaced: bool,
    short_names: &[&str],
    status_subresource: bool,
    all_category: bool,
) -> ResourceKind {
    ResourceKind {
        group: group.to_string(),
        version: version.to_string(),
        plural: plural.to_string(),
        singular: kind.to_ascii_lowercase(),
        kind: kind.to_string(),
        namespaced,
        short_names: short_names.iter().map(|s| (*s).to_string()).collect(),
        categories: if all_category {
            vec!["all".to_string()]
        } else {
            Vec::new()
        },
        status_subresource,
        scale: None,
        custom: false,
        printer_columns: Vec::new(),
    }
}

/// The built-in resource types the stand-in serves.
pub fn builtin_kinds() -> Vec<ResourceKind> {
    let scale = |selector: &str| ScalePaths {
        spec_replicas: ".spec.replicas".to_string(),
        status_replicas: ".status.replicas".to_string(),
        label_selector: Some(selector.to_string()),
    };
    let mut deployments = builtin(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        true,
        &["deploy"],
        true,
        true,
    );
    deployments.scale = Some(scale(".spec.selector"));
    let mut replicasets = builtin(
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        true,
        &["rs"],
        true,
        true,
    );
    replicasets.scale = Some(scale(".spec.selector"));
    let mut crds = builtin(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
        &["crd", "crds"],
        true,
        false,
    );
    crds.categories = vec!["api-extensions".to_string()];
    vec![
        builtin(
            "",
            "v1",
            "namespaces",
            "Namespace",
            false,
            &["ns"],
            true,
            false,
        ),
        builtin("", "v1", "pods", "Pod", true, &["po"], true, true),
        builtin("", "v1", "services", "Service", true, &["svc"], true, true),
        builtin(
            "",
            "v1",
            "configmaps",
            "ConfigMap",
            true,
            &["cm"],
            false,
            false,
        ),
        builtin("", "v1", "secrets", "Secret", true, &[], false, false),
        builtin("", "v1", "events", "Event", true, &["ev"], false, false),
        builtin(
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            true,
            &["sa"],
            false,
            false,
        ),
        deployments,
        replicasets,
        builtin(
            "policy",
            "v1",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            true,
            &["pdb"],
            true,
            false,
        ),
        builtin(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            &[],
            false,
            false,
        ),
        builtin(
            "events.k8s.io",
            "v1",
            "events",
            "Event",
            true,
            &["ev"],
            false,
            false,
        ),
        crds,
    ]
}

/// The resource types a CustomResourceDefinition object declares: one per served version.
///
/// Returns an error message when the CRD lacks what is needed to serve it (group, names, versions).
pub fn kinds_from_crd(crd: &Value) -> Result<Vec<ResourceKind>, String> {
    let spec = crd.get("spec").ok_or("spec is required")?;
    let group = str_at(spec, &["group"]).ok_or("spec.group is required")?;
    let names = spec.get("names").ok_or("spec.names is required")?;
    let plural = str_at(names, &["plural"]).ok_or("spec.names.plural is required")?;
    let kind = str_at(names, &["kind"]).ok_or("spec.names.kind is required")?;
    let singular =
        str_at(names, &["singular"]).map_or_else(|| kind.to_ascii_lowercase(), str::to_string);
    let namespaced = match str_at(spec, &["scope"]) {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        _ => return Err("spec.scope must be Namespaced or Cluster".to_string()),
    };
    let strings = |key: &str| -> Vec<String> {
        names
            .get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .ok_or("spec.versions is required")?;
    if versions.is_empty() {
        return Err("spec.versions must not be empty".to_string());
    }
    let mut kinds = Vec::new();
    for v in versions {
        let name = str_at(v, &["name"]).ok_or("spec.versions[].name is required")?;
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let subresources = v.get("subresources");
        let scale = subresources
            .and_then(|s| s.get("scale"))
            .map(|s| ScalePaths {
                spec_replicas: str_at(s, &["specReplicasPath"])
                    .unwrap_or(".spec.replicas")
                    .to_string(),
                status_replicas: str_at(s, &["statusReplicasPath"])
                    .unwrap_or(".status.replicas")
                    .to_string(),
                label_selector: str_at(s, &["labelSelectorPath"]).map(str::to_string),
            });
        kinds.push(ResourceKind {
            group: group.to_string(),
            version: name.to_string(),
            plural: plural.to_string(),
            singular: singular.clone(),
            kind: kind.to_string(),
            namespaced,
            short_names: strings("shortNames"),
            categories: strings("categories"),
            status_subresource: subresources.and_then(|s| s.get("status")).is_some(),
            scale,
            custom: true,
            printer_columns: printer_columns(v),
        });
    }
    Ok(kinds)
}

/// A CRD version's `additionalPrinterColumns`.
fn printer_columns(version: &Value) -> Vec<PrinterColumn> {
    let columns = version
        .get("additionalPrinterColumns")
        .and_then(Value::as_array);
    columns
        .into_iter()
        .flatten()
        .filter_map(|c| {
            Some(PrinterColumn {
                name: str_at(c, &["name"])?.to_string(),
                column_type: str_at(c, &["type"]).unwrap_or("string").to_string(),
                json_path: str_at(c, &["jsonPath"])?.to_string(),
                description: str_at(c, &["description"]).unwrap_or_default().to_string(),
                priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
            })
        })
        .collect()
}

/// The string at a key path, if present.
fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd() -> Value {
        json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
                "versions": [
                    {"name": "v1", "served": true, "storage": true,
                     "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.size", "statusReplicasPath": ".status.size", "labelSelectorPath": ".status.selector"}}},
                    {"name": "v1alpha1", "served": false, "storage": false}
                ]
            }
        })
    }

    #[test]
    fn crd_yields_one_kind_per_served_version() {
        let kinds = kinds_from_crd(&crd()).expect("valid crd");
        assert_eq!(kinds.len(), 1);
        let k = &kinds[0];
        assert_eq!(k.api_version(), "example.com/v1");
        assert_eq!(k.short_names, vec!["wd"]);
        assert!(k.namespaced && k.status_subresource && k.custom);
        let scale = k.scale.as_ref().expect("scale");
        assert_eq!(scale.spec_replicas, ".spec.size");
        assert_eq!(scale.label_selector.as_deref(), Some(".status.selector"));
    }

    #[test]
    fn crd_without_scope_is_rejected() {
        let mut c = crd();
        c["spec"]["scope"] = json!("Galaxy");
        assert!(kinds_from_crd(&c).is_err());
    }

    #[test]
    fn core_api_version_has_no_group() {
        let pods = builtin_kinds()
            .into_iter()
            .find(|k| k.plural == "pods")
            .expect("pods");
        assert_eq!(pods.api_version(), "v1");
        assert_eq!(pods.storage_key(), (String::new(), "pods".to_string()));
    }
}
