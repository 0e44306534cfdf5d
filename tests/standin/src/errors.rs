//! Kubernetes-style API errors and the `Status` bodies that carry them.
//!
//! kube-rs and kubectl both parse the `Status` object the real API server returns on failure, so every
//! error leaves the stand-in in that shape with the matching HTTP code and `reason`.

use serde_json::{Value, json};

/// An API failure: HTTP code, machine-readable reason and a human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code (404, 409, ...).
    pub code: u16,
    /// Kubernetes `StatusReason` (`NotFound`, `AlreadyExists`, `Conflict`, ...).
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// `details` of the Status: the object's name, group and kind (resource plural).
    pub details: Option<ErrorDetails>,
}

/// Which object an error is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorDetails {
    /// Object name.
    pub name: String,
    /// API group ("" for core).
    pub group: String,
    /// Resource plural, as the real server reports it in `details.kind`.
    pub kind: String,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// 404: the object (or resource type) does not exist.
    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        let resource = qualified(group, plural);
        Self::new(404, "NotFound", format!("{resource} \"{name}\" not found"))
            .with_details(group, plural, name)
    }

    /// 404 for a URL that names no known resource.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    /// 409: create of an object that already exists.
    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        let resource = qualified(group, plural);
        Self::new(
            409,
            "AlreadyExists",
            format!("{resource} \"{name}\" already exists"),
        )
        .with_details(group, plural, name)
    }

    /// 409: a write carried a stale `resourceVersion`.
    pub fn conflict(group: &str, plural: &str, name: &str) -> Self {
        let resource = qualified(group, plural);
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again"
            ),
        )
        .with_details(group, plural, name)
    }

    /// 409: a server-side apply would take fields another manager owns (without `force`).
    pub fn apply_conflict(group: &str, plural: &str, name: &str, fields: &[String]) -> Self {
        let list = fields.join(", ");
        Self::new(
            409,
            "Conflict",
            format!("Apply failed with {} conflicts: {list}", fields.len()),
        )
        .with_details(group, plural, name)
    }

    /// 422: the object fails validation.
    pub fn invalid(group: &str, plural: &str, name: &str, message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message).with_details(group, plural, name)
    }

    /// 400: the request itself is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 405: the verb is not supported on this resource.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    /// 415: a patch type the resource does not accept.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({content_type}) - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
            ),
        )
    }

    /// 410: a watch asked for history that has been compacted away.
    pub fn expired(requested: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    fn with_details(mut self, group: &str, plural: &str, name: &str) -> Self {
        self.details = Some(ErrorDetails {
            name: name.to_string(),
            group: group.to_string(),
            kind: plural.to_string(),
        });
        self
    }

    /// The `Status` object sent as the response body (or inside an `ERROR` watch event).
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            status["details"] = json!({"name": d.name, "group": d.group, "kind": d.kind});
        }
        status
    }
}

/// `plural.group` as the real server names a resource in messages (`deployments.apps`, `pods`).
fn qualified(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_status_names_the_object() {
        let s = ApiError::not_found("apps", "deployments", "web").to_status();
        assert_eq!(s["kind"], "Status");
        assert_eq!(s["code"], 404);
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["message"], "deployments.apps \"web\" not found");
        assert_eq!(s["details"]["kind"], "deployments");
    }

    #[test]
    fn core_resources_are_not_qualified() {
        let e = ApiError::already_exists("", "pods", "p");
        assert_eq!(e.message, "pods \"p\" already exists");
        assert_eq!(e.code, 409);
    }
}
