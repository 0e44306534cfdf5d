//! URL paths of the Kubernetes API, parsed into what they address.

/// What a request path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/version`.
    Version,
    /// `/healthz`, `/readyz`, `/livez`.
    Health,
    /// `/api`.
    CoreVersions,
    /// `/apis`.
    Groups,
    /// `/apis/<group>`.
    Group(String),
    /// `/api/v1` or `/apis/<group>/<version>`.
    GroupVersion {
        /// API group ("" for core).
        group: String,
        /// Version.
        version: String,
    },
    /// A collection, an object or an object's subresource.
    Resource(ResourcePath),
}

/// A resource URL: `[/namespaces/<ns>]/<plural>[/<name>[/<subresource>]]` under a group version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePath {
    /// API group ("" for core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Namespace from the URL, if any.
    pub namespace: Option<String>,
    /// Resource plural.
    pub plural: String,
    /// Object name, if the URL names one.
    pub name: Option<String>,
    /// Subresource (`status`, `scale`, ...), if any.
    pub subresource: Option<String>,
    /// Legacy `/watch/` prefix.
    pub watch: bool,
}

/// Parses a request path; `None` when it is not an API path.
pub fn parse(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["version"] => Some(Route::Version),
        ["healthz" | "readyz" | "livez", ..] => Some(Route::Health),
        ["api"] => Some(Route::CoreVersions),
        ["apis"] => Some(Route::Groups),
        ["apis", group] => Some(Route::Group((*group).to_string())),
        ["api", version, rest @ ..] => resource(String::new(), version, rest),
        ["apis", group, version, rest @ ..] => resource((*group).to_string(), version, rest),
        _ => None,
    }
}

fn resource(group: String, version: &str, rest: &[&str]) -> Option<Route> {
    let (watch, rest) = match rest {
        ["watch", tail @ ..] => (true, tail),
        _ => (false, rest),
    };
    let owned = |s: &&str| (*s).to_string();
    let (namespace, plural, name, subresource) = match rest {
        [] if !watch => {
            return Some(Route::GroupVersion {
                group,
                version: version.to_string(),
            });
        }
        [] => return None,
        ["namespaces", ns, sub @ ("status" | "finalize")] if group.is_empty() => (
            None,
            "namespaces".to_string(),
            Some(owned(ns)),
            Some(owned(sub)),
        ),
        ["namespaces", ns, plural, tail @ ..] => {
            let (name, sub) = match tail {
                [] => (None, None),
                [name] => (Some(owned(name)), None),
                [name, sub] => (Some(owned(name)), Some(owned(sub))),
                _ => return None,
            };
            (Some(owned(ns)), owned(plural), name, sub)
        }
        [plural, tail @ ..] => {
            let (name, sub) = match tail {
                [] => (None, None),
                [name] => (Some(owned(name)), None),
                [name, sub] => (Some(owned(name)), Some(owned(sub))),
                _ => return None,
            };
            (None, owned(plural), name, sub)
        }
    };
    Some(Route::Resource(ResourcePath {
        group,
        version: version.to_string(),
        namespace,
        plural,
        name,
        subresource,
        watch,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(path: &str) -> ResourcePath {
        match parse(path) {
            Some(Route::Resource(r)) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn discovery_paths() {
        assert_eq!(parse("/api"), Some(Route::CoreVersions));
        assert_eq!(parse("/apis/"), Some(Route::Groups));
        assert_eq!(parse("/apis/apps"), Some(Route::Group("apps".into())));
        assert_eq!(
            parse("/api/v1"),
            Some(Route::GroupVersion {
                group: String::new(),
                version: "v1".into()
            })
        );
        assert_eq!(
            parse("/apis/apps/v1"),
            Some(Route::GroupVersion {
                group: "apps".into(),
                version: "v1".into()
            })
        );
        assert_eq!(parse("/version"), Some(Route::Version));
        assert_eq!(parse("/nope"), None);
    }

    #[test]
    fn namespaced_object_and_subresource() {
        let r = res("/apis/apps/v1/namespaces/ns/deployments/web/scale");
        assert_eq!(r.namespace.as_deref(), Some("ns"));
        assert_eq!(r.plural, "deployments");
        assert_eq!(r.name.as_deref(), Some("web"));
        assert_eq!(r.subresource.as_deref(), Some("scale"));
    }

    #[test]
    fn namespaces_themselves() {
        let r = res("/api/v1/namespaces/team");
        assert_eq!(
            (r.namespace, r.plural.as_str(), r.name.as_deref()),
            (None, "namespaces", Some("team"))
        );
        let r = res("/api/v1/namespaces/team/status");
        assert_eq!(
            (r.plural.as_str(), r.subresource.as_deref()),
            ("namespaces", Some("status"))
        );
        let r = res("/api/v1/namespaces");
        assert_eq!((r.plural.as_str(), r.name), ("namespaces", None));
    }

    #[test]
    fn cluster_wide_lists_and_watch_prefix() {
        let r = res("/api/v1/pods");
        assert_eq!(
            (r.namespace, r.plural.as_str(), r.name),
            (None, "pods", None)
        );
        let r = res("/api/v1/watch/namespaces/a/pods/p");
        assert!(r.watch);
        assert_eq!(r.name.as_deref(), Some("p"));
        assert_eq!(parse("/api/v1/namespaces/a/pods/p/status/extra"), None);
    }
}
