//! The `RealtimeCluster` resource (`roomcast.dev/v1alpha1`): spec and status types,
//! their defaults and schema validations, and the spec checks the schema cannot express.
//!
//! These types are the source of the CRD: `crdgen` renders them to `crds/realtimecluster.yaml`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, LocalObjectReference, ResourceRequirements, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the resource.
pub const GROUP: &str = "roomcast.dev";
/// Image used when `spec.image` is empty and the operator was given no other default.
pub const DEFAULT_IMAGE: &str = "ghcr.io/roomcast/roomcast-gateway:0.1.0";

/// Desired state of a cluster of Roomcast gateways.
// Several printer columns share a `type_`: clippy reads the `printcolumn(...)` lists as one
// attribute list and calls them duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "roomcast.dev",
    version = "v1alpha1",
    kind = "RealtimeCluster",
    plural = "realtimeclusters",
    shortname = "rtc",
    category = "roomcast",
    namespaced,
    status = "RealtimeClusterStatus",
    derive = "PartialEq",
    doc = "A cluster of Roomcast real-time gateways managed by roomcast-operator.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        description = "Ready replicas / desired replicas",
        json_path = ".status.ready"
    ),
    printcolumn(
        name = "Connections",
        type_ = "integer",
        description = "WebSocket connections at the last sync",
        json_path = ".status.connections"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        description = "Reason of the Ready condition, e.g. Ready, Scaling, InvalidSpec",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Mode",
        type_ = "string",
        description = "Who chooses replicas: Builtin or External",
        json_path = ".spec.autoscaling.mode",
        priority = 1
    ),
    printcolumn(
        name = "Min",
        type_ = "integer",
        description = "Fewest replicas",
        json_path = ".spec.autoscaling.minReplicas",
        priority = 1
    ),
    printcolumn(
        name = "Max",
        type_ = "integer",
        description = "Most replicas",
        json_path = ".spec.autoscaling.maxReplicas",
        priority = 1
    ),
    printcolumn(
        name = "Target",
        type_ = "integer",
        description = "Connections per pod the autoscaler aims at",
        json_path = ".spec.autoscaling.targetConnectionsPerPod",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RealtimeClusterSpec {
    /// Gateway container image; the operator's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The NATS cluster bus the gateways join.
    pub nats: NatsSpec,
    /// How replicas are chosen.
    #[serde(default)]
    pub autoscaling: AutoscalingSpec,
    /// Sticky routing of clients to pods by the public Service.
    #[serde(default)]
    pub session_affinity: SessionAffinitySpec,
    /// The public Service.
    #[serde(default)]
    pub service: ServiceSpec,
    /// Client authentication of the gateways.
    #[serde(default)]
    pub auth: AuthSpec,
    /// Per-connection limits of the gateways.
    #[serde(default)]
    pub limits: LimitsSpec,
    /// Seconds a stopping gateway spends closing its connections.
    #[serde(default = "default_drain_seconds")]
    #[schemars(range(min = 0, max = 3600))]
    pub drain_seconds: u32,
    /// Resources of the gateway container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Extra pod settings.
    #[serde(default)]
    pub pod_template: PodTemplateSpec,
    /// Replicas requested through the `scale` subresource (by an HPA or KEDA in `External`
    /// mode). The builtin autoscaler ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// Options of room namespaces (history, client publishing, presence events), the same
    /// on every gateway; unlisted namespaces get the protocol's defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub namespaces: Vec<RoomNamespaceSpec>,
}

/// Most messages a namespace may keep per room (the gateway's own bound).
pub const MAX_HISTORY_SIZE: u32 = 10_000;
/// Longest `historyTtlSeconds` the gateway accepts (one year).
pub const MAX_HISTORY_TTL_SECONDS: u64 = 365 * 24 * 3600;

/// The options of one room namespace (protocol 1.1, "Room namespaces"). Unset options keep
/// the protocol's defaults (no history, TTL 300 s, client publishing and presence events on).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomNamespaceSpec {
    /// The part of a room name before its first `:` (`chat` for `chat:42`); empty for the
    /// default namespace (rooms without `:`).
    #[schemars(regex(pattern = r"^[A-Za-z0-9_@/-]{0,127}$"))]
    pub name: String,
    /// Messages kept per room; 0: no history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub history_size: Option<u32>,
    /// How long a kept message stays, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 31536000))]
    pub history_ttl_seconds: Option<u64>,
    /// false: only the HTTP API may publish to these rooms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_publish: Option<bool>,
    /// Whether members may ask for `joined`/`left` events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_events: Option<bool>,
}

impl RoomNamespaceSpec {
    /// The gateway's `NAME:option=value,...` form of these options (only those set).
    pub fn gateway_spec(&self) -> String {
        let options: Vec<String> = [
            ("history_size", self.history_size.map(|v| v.to_string())),
            (
                "history_ttl_seconds",
                self.history_ttl_seconds.map(|v| v.to_string()),
            ),
            ("client_publish", self.client_publish.map(|v| v.to_string())),
            (
                "presence_events",
                self.presence_events.map(|v| v.to_string()),
            ),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.map(|v| format!("{key}={v}")))
        .collect();
        format!("{}:{}", self.name, options.join(","))
    }

    /// Why the gateway would refuse these options, if it would.
    fn problems(&self, at: usize) -> Vec<String> {
        let mut problems = Vec::new();
        let valid_name = self.name.len() <= 127
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_@/-".contains(&b));
        if !valid_name {
            problems.push(format!(
                "spec.namespaces[{at}].name {:?} must be at most 127 of A-Z a-z 0-9 _ @ / - (empty: the default namespace)",
                self.name
            ));
        }
        if self.history_size.is_some_and(|n| n > MAX_HISTORY_SIZE) {
            problems.push(format!(
                "spec.namespaces[{at}].historySize must be <= {MAX_HISTORY_SIZE}"
            ));
        }
        if self
            .history_ttl_seconds
            .is_some_and(|t| !(1..=MAX_HISTORY_TTL_SECONDS).contains(&t))
        {
            problems.push(format!(
                "spec.namespaces[{at}].historyTtlSeconds must be within [1, {MAX_HISTORY_TTL_SECONDS}]"
            ));
        }
        problems
    }
}

fn default_drain_seconds() -> u32 {
    30
}

/// Connection to the NATS cluster bus.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NatsSpec {
    /// NATS server URL, e.g. `nats://nats.apps:4222`.
    #[schemars(length(min = 1))]
    pub url: String,
    /// Secret key holding a NATS credentials file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretKeyRef>,
    /// Replicas of each JetStream stream keeping room history: 1 for a single nats-server,
    /// 3 for a NATS cluster.
    #[serde(default = "default_history_replicas")]
    #[schemars(range(min = 1, max = 5))]
    pub history_replicas: u8,
}

fn default_history_replicas() -> u8 {
    1
}

/// A key of a Secret in the RealtimeCluster's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key inside the Secret.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// Who chooses the number of replicas.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AutoscalingMode {
    /// The operator scales on connection counts.
    #[default]
    Builtin,
    /// An HPA or KEDA drives the `scale` subresource; the operator never chooses replicas.
    External,
}

/// Autoscaling settings, with HorizontalPodAutoscaler semantics.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas"
).message("minReplicas must be <= maxReplicas"))]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    /// `Builtin` or `External`.
    #[serde(default)]
    pub mode: AutoscalingMode,
    /// Lower bound of replicas.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    /// Upper bound of replicas; at least `minReplicas`.
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Connections one pod should carry.
    #[serde(default = "default_target_connections")]
    #[schemars(range(min = 1))]
    pub target_connections_per_pod: u32,
    /// A scale-down takes the highest recommendation of this many past seconds.
    #[serde(default = "default_scale_down_window")]
    #[schemars(range(min = 0, max = 3600))]
    pub scale_down_stabilization_seconds: u32,
    /// A scale-up takes the lowest recommendation of this many past seconds.
    #[serde(default)]
    #[schemars(range(min = 0, max = 3600))]
    pub scale_up_stabilization_seconds: u32,
    /// Relative deviation from the target that causes no change.
    #[serde(default = "default_tolerance")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub tolerance: f64,
}

// Field-level defaults (not a container default) because `KubeSchema` re-derives the
// schema on a shadow type that has no `Default`.
fn default_min_replicas() -> i32 {
    2
}
fn default_max_replicas() -> i32 {
    10
}
fn default_target_connections() -> u32 {
    5000
}
fn default_scale_down_window() -> u32 {
    300
}
fn default_tolerance() -> f64 {
    0.1
}

impl Default for AutoscalingSpec {
    fn default() -> Self {
        Self {
            mode: AutoscalingMode::Builtin,
            min_replicas: default_min_replicas(),
            max_replicas: default_max_replicas(),
            target_connections_per_pod: default_target_connections(),
            scale_down_stabilization_seconds: default_scale_down_window(),
            scale_up_stabilization_seconds: 0,
            tolerance: default_tolerance(),
        }
    }
}

/// Session affinity of the public Service.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SessionAffinityType {
    /// Clients keep reaching the same pod (by source IP).
    #[default]
    ClientIP,
    /// No stickiness.
    #[serde(rename = "None")]
    NoAffinity,
}

/// Sticky routing settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct SessionAffinitySpec {
    /// `ClientIP` or `None`.
    #[serde(rename = "type")]
    pub type_: SessionAffinityType,
    /// How long a client stays bound to its pod.
    #[schemars(range(min = 1, max = 86400))]
    pub timeout_seconds: i32,
}

impl Default for SessionAffinitySpec {
    fn default() -> Self {
        Self {
            type_: SessionAffinityType::ClientIP,
            timeout_seconds: 10800,
        }
    }
}

/// Kind of the public Service.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    /// Cluster-internal address.
    #[default]
    ClusterIP,
    /// A port on every node.
    NodePort,
    /// An external load balancer.
    LoadBalancer,
}

impl ServiceType {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// The public Service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceSpec {
    /// `ClusterIP`, `NodePort` or `LoadBalancer`.
    #[serde(rename = "type")]
    pub type_: ServiceType,
    /// Service port, forwarded to the gateway's 8080.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Annotations of the Service (load balancer settings and the like).
    pub annotations: BTreeMap<String, String>,
}

impl Default for ServiceSpec {
    fn default() -> Self {
        Self {
            type_: ServiceType::ClusterIP,
            port: 80,
            annotations: BTreeMap::new(),
        }
    }
}

/// Client authentication. `jwtSecretRef` and `jwtPublicKeySecretRef` exclude each other.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = kube::core::Rule::new(
    "!(has(self.jwtSecretRef) && has(self.jwtPublicKeySecretRef))"
).message("set at most one of jwtSecretRef and jwtPublicKeySecretRef"))]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// HS256 shared secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_secret_ref: Option<SecretKeyRef>,
    /// PEM public key (RS256/ES256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_public_key_secret_ref: Option<SecretKeyRef>,
    /// Bearer key of the HTTP publish API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,
    /// Browser origins allowed to upgrade; empty allows all.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

/// Per-connection limits of the gateways.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct LimitsSpec {
    /// Largest client frame.
    #[schemars(range(min = 1))]
    pub max_frame_bytes: u32,
    /// Rooms one connection may join.
    #[schemars(range(min = 1))]
    pub max_rooms_per_connection: u32,
    /// Publish/send frames per second per connection.
    #[schemars(range(min = 1))]
    pub publish_rate_per_second: u32,
    /// Outbound queue of one connection, in frames.
    #[schemars(range(min = 1))]
    pub outbound_queue_frames: u32,
}

impl Default for LimitsSpec {
    fn default() -> Self {
        Self {
            max_frame_bytes: 65536,
            max_rooms_per_connection: 256,
            publish_rate_per_second: 200,
            outbound_queue_frames: 4096,
        }
    }
}

/// Extra settings of the gateway pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct PodTemplateSpec {
    /// Extra pod labels (the operator's selector labels win).
    pub labels: BTreeMap<String, String>,
    /// Extra pod annotations.
    pub annotations: BTreeMap<String, String>,
    /// Node selector.
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations.
    pub tolerations: Vec<Toleration>,
    /// Affinity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Extra environment variables of the gateway container (Roomcast
    /// extension), e.g. the `OTEL_*` variables that turn on OTLP export.
    /// Variables the operator sets itself (`ROOMCAST_*` from the spec) win.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Secrets for pulling the gateway image from a private registry (Roomcast extension).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Pull policy of the gateway image (Roomcast extension); Kubernetes' default when unset
    /// (`Always` for `:latest` or no tag, else `IfNotPresent`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,
}

/// When the kubelet pulls the gateway image.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ImagePullPolicy {
    /// On every pod start.
    Always,
    /// Only when the node lacks the image.
    IfNotPresent,
    /// Never: the image must already be on the node.
    Never,
}

impl ImagePullPolicy {
    /// The core/v1 spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// Observed state, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RealtimeClusterStatus {
    /// The spec generation this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Desired replicas last set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Ready gateway pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// `ready/desired`, for the printer column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// Connections over the pods read at the last sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<i64>,
    /// When replicas last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// Label selector of the gateway pods, for the `scale` subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// `Ready`, `Scaling` and `MetricsAvailable`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Autoscaler memory: past recommendations and scale-ups, so stabilization and rate
    /// limits survive an operator restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler: Option<AutoscalerHistory>,
    /// A drain-first scale-down in progress, resumed by a restarted operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<ScaleDownProgress>,
}

/// Past decisions of the builtin autoscaler.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerHistory {
    /// Recommendations (before stabilization) of the recent syncs.
    #[serde(default)]
    pub recommendations: Vec<TimedReplicas>,
    /// Replicas added by recent scale-ups.
    #[serde(default)]
    pub scale_ups: Vec<TimedReplicas>,
    /// When the autoscaler last read the pods; reconciles sooner than a sync period after
    /// it (e.g. triggered by the operator's own status write) neither read nor decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync: Option<Time>,
}

/// A replica count at a point in time.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct TimedReplicas {
    /// When.
    pub time: Time,
    /// How many.
    pub replicas: i32,
}

/// A drain-first scale-down: victims drain, then `replicas` drops to `to`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleDownProgress {
    /// Replicas before.
    pub from: i32,
    /// Replicas after.
    pub to: i32,
    /// Pods chosen to go, by name.
    pub victims: Vec<String>,
    /// When the drain started.
    pub started: Time,
}

/// A spec that is well-formed JSON but cannot be acted on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSpec(pub String);

impl RealtimeClusterSpec {
    /// Checks the rules of the contract again (the API server may not enforce CEL, and
    /// resources may predate the schema), so the operator never acts on an invalid spec.
    pub fn validate(&self) -> Result<(), InvalidSpec> {
        let a = &self.autoscaling;
        let mut problems = Vec::new();
        if self.nats.url.trim().is_empty() {
            problems.push("spec.nats.url must not be empty".to_string());
        }
        if a.min_replicas < 1 {
            problems.push("spec.autoscaling.minReplicas must be >= 1".to_string());
        }
        if a.max_replicas < a.min_replicas {
            problems.push(format!(
                "spec.autoscaling.minReplicas ({}) must be <= maxReplicas ({})",
                a.min_replicas, a.max_replicas
            ));
        }
        if a.target_connections_per_pod == 0 {
            problems.push("spec.autoscaling.targetConnectionsPerPod must be > 0".to_string());
        }
        if !(0.0..=1.0).contains(&a.tolerance) {
            problems.push("spec.autoscaling.tolerance must be within [0, 1]".to_string());
        }
        if !(1..=86400).contains(&self.session_affinity.timeout_seconds) {
            problems.push("spec.sessionAffinity.timeoutSeconds must be within [1, 86400]".into());
        }
        if !(1..=65535).contains(&self.service.port) {
            problems.push("spec.service.port must be within [1, 65535]".to_string());
        }
        if self.auth.jwt_secret_ref.is_some() && self.auth.jwt_public_key_secret_ref.is_some() {
            problems.push(
                "spec.auth: set at most one of jwtSecretRef and jwtPublicKeySecretRef".into(),
            );
        }
        if self.drain_seconds > 3600 {
            problems.push("spec.drainSeconds must be <= 3600".to_string());
        }
        if self.replicas.is_some_and(|r| r < 0) {
            problems.push("spec.replicas must be >= 0".to_string());
        }
        let l = &self.limits;
        if l.max_frame_bytes == 0
            || l.max_rooms_per_connection == 0
            || l.publish_rate_per_second == 0
            || l.outbound_queue_frames == 0
        {
            problems.push("spec.limits values must be > 0".to_string());
        }
        if !(1..=5).contains(&self.nats.history_replicas) {
            problems.push("spec.nats.historyReplicas must be within [1, 5]".to_string());
        }
        for (at, ns) in self.namespaces.iter().enumerate() {
            problems.extend(ns.problems(at));
            if self.namespaces[..at].iter().any(|n| n.name == ns.name) {
                problems.push(format!(
                    "spec.namespaces[{at}]: namespace {:?} is listed twice",
                    ns.name
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(InvalidSpec(problems.join("; ")))
        }
    }
}

/// The CRD rendered as YAML, exactly as `crds/realtimecluster.yaml` holds it.
pub fn crd_yaml() -> Result<String, serde_saphyr::SerializeError> {
    let yaml = serde_saphyr::to_string(&RealtimeCluster::crd())?;
    Ok(format!(
        "# Generated by `cargo run -p roomcast-operator --bin crdgen`; do not edit.\n{yaml}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal() -> RealtimeClusterSpec {
        serde_json::from_value(json!({"nats": {"url": "nats://nats:4222"}})).unwrap()
    }

    #[test]
    fn defaults_follow_the_contract() {
        let s = minimal();
        assert_eq!(s.autoscaling.mode, AutoscalingMode::Builtin);
        assert_eq!(s.autoscaling.min_replicas, 2);
        assert_eq!(s.autoscaling.max_replicas, 10);
        assert_eq!(s.autoscaling.target_connections_per_pod, 5000);
        assert_eq!(s.autoscaling.scale_down_stabilization_seconds, 300);
        assert_eq!(s.autoscaling.scale_up_stabilization_seconds, 0);
        assert!((s.autoscaling.tolerance - 0.1).abs() < f64::EPSILON);
        assert_eq!(s.session_affinity.type_, SessionAffinityType::ClientIP);
        assert_eq!(s.session_affinity.timeout_seconds, 10800);
        assert_eq!(s.service.type_, ServiceType::ClusterIP);
        assert_eq!(s.service.port, 80);
        assert_eq!(s.limits.max_frame_bytes, 65536);
        assert_eq!(s.limits.max_rooms_per_connection, 256);
        assert_eq!(s.limits.publish_rate_per_second, 200);
        assert_eq!(s.limits.outbound_queue_frames, 4096);
        assert_eq!(s.drain_seconds, 30);
        assert_eq!(s.replicas, None);
        assert!(s.validate().is_ok());
    }

    #[test]
    fn partial_autoscaling_keeps_other_defaults() {
        let s: RealtimeClusterSpec = serde_json::from_value(json!({
            "nats": {"url": "nats://n"}, "autoscaling": {"mode": "External", "maxReplicas": 3}
        }))
        .unwrap();
        assert_eq!(s.autoscaling.mode, AutoscalingMode::External);
        assert_eq!(s.autoscaling.min_replicas, 2);
        assert_eq!(s.autoscaling.max_replicas, 3);
    }

    #[test]
    fn unknown_enum_values_are_rejected() {
        for bad in [
            json!({"nats": {"url": "n"}, "autoscaling": {"mode": "Magic"}}),
            json!({"nats": {"url": "n"}, "sessionAffinity": {"type": "Cookie"}}),
            json!({"nats": {"url": "n"}, "service": {"type": "ExternalName"}}),
        ] {
            assert!(serde_json::from_value::<RealtimeClusterSpec>(bad).is_err());
        }
        let none: RealtimeClusterSpec = serde_json::from_value(
            json!({"nats": {"url": "n"}, "sessionAffinity": {"type": "None"}}),
        )
        .unwrap();
        assert_eq!(none.session_affinity.type_, SessionAffinityType::NoAffinity);
    }

    #[test]
    fn nats_url_is_required() {
        assert!(serde_json::from_value::<RealtimeClusterSpec>(json!({})).is_err());
    }

    #[test]
    fn validate_reports_each_broken_rule() {
        let mut s = minimal();
        s.autoscaling.min_replicas = 5;
        s.autoscaling.max_replicas = 3;
        let err = s.validate().unwrap_err().0;
        assert!(
            err.contains("minReplicas (5) must be <= maxReplicas (3)"),
            "{err}"
        );

        let mut s = minimal();
        s.autoscaling.target_connections_per_pod = 0;
        assert!(
            s.validate()
                .unwrap_err()
                .0
                .contains("targetConnectionsPerPod")
        );

        let mut s = minimal();
        s.auth.jwt_secret_ref = Some(SecretKeyRef {
            name: "a".into(),
            key: "k".into(),
        });
        s.auth.jwt_public_key_secret_ref = Some(SecretKeyRef {
            name: "b".into(),
            key: "k".into(),
        });
        assert!(s.validate().unwrap_err().0.contains("at most one"));

        let mut s = minimal();
        s.nats.url = " ".into();
        assert!(s.validate().unwrap_err().0.contains("nats.url"));

        let mut s = minimal();
        s.autoscaling.tolerance = 1.5;
        assert!(s.validate().unwrap_err().0.contains("tolerance"));

        let mut s = minimal();
        s.limits.max_frame_bytes = 0;
        assert!(s.validate().unwrap_err().0.contains("limits"));

        let mut s = minimal();
        s.nats.history_replicas = 0;
        assert!(s.validate().unwrap_err().0.contains("historyReplicas"));
    }

    fn namespace(value: serde_json::Value) -> RoomNamespaceSpec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn namespaces_become_the_gateways_specs_with_only_the_options_set() {
        let chat = namespace(json!({"name": "chat", "historySize": 200, "historyTtlSeconds": 600}));
        assert_eq!(
            chat.gateway_spec(),
            "chat:history_size=200,history_ttl_seconds=600"
        );
        let all = namespace(json!({
            "name": "", "historySize": 0, "historyTtlSeconds": 1,
            "clientPublish": false, "presenceEvents": true
        }));
        assert_eq!(
            all.gateway_spec(),
            ":history_size=0,history_ttl_seconds=1,client_publish=false,presence_events=true"
        );
        assert_eq!(namespace(json!({"name": "feed"})).gateway_spec(), "feed:");
    }

    #[test]
    fn bad_namespaces_are_an_invalid_spec_naming_the_entry() {
        for (entries, want) in [
            (json!([{"name": "a:b"}]), "spec.namespaces[0].name"),
            (json!([{"name": "a b"}]), "spec.namespaces[0].name"),
            (
                json!([{"name": "x".repeat(128)}]),
                "spec.namespaces[0].name",
            ),
            (
                json!([{"name": "chat"}, {"name": "chat", "historySize": 1}]),
                "spec.namespaces[1]: namespace \"chat\" is listed twice",
            ),
            (
                json!([{"name": "chat", "historySize": 10001}]),
                "spec.namespaces[0].historySize",
            ),
            (
                json!([{"name": "", "historyTtlSeconds": 0}]),
                "spec.namespaces[0].historyTtlSeconds",
            ),
        ] {
            let mut s = minimal();
            s.namespaces = serde_json::from_value(entries.clone()).unwrap();
            let err = s.validate().unwrap_err().0;
            assert!(err.contains(want), "{entries}: {err}");
        }
        let mut s = minimal();
        s.namespaces = serde_json::from_value(json!([
            {"name": ""}, {"name": "chat_1/@-x", "historySize": 10000, "historyTtlSeconds": 31536000}
        ]))
        .unwrap();
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn crd_has_names_subresources_columns_and_rules() {
        let crd = serde_json::to_value(RealtimeCluster::crd()).unwrap();
        assert_eq!(crd["metadata"]["name"], "realtimeclusters.roomcast.dev");
        assert_eq!(crd["spec"]["group"], "roomcast.dev");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(crd["spec"]["names"]["shortNames"], json!(["rtc"]));
        assert_eq!(crd["spec"]["names"]["kind"], "RealtimeCluster");
        let v = &crd["spec"]["versions"][0];
        assert_eq!(v["name"], "v1alpha1");
        assert_eq!(v["subresources"]["status"], json!({}));
        assert_eq!(
            v["subresources"]["scale"],
            json!({
                "specReplicasPath": ".spec.replicas",
                "statusReplicasPath": ".status.replicas",
                "labelSelectorPath": ".status.selector"
            })
        );
        assert_eq!(crd["spec"]["names"]["categories"], json!(["roomcast"]));
        let columns = |priority: i64| -> Vec<&str> {
            v["additionalPrinterColumns"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["priority"].as_i64().unwrap_or(0) == priority)
                .map(|c| c["name"].as_str().unwrap())
                .collect()
        };
        // The contract's Ready, Connections, Age; the Ready reason; `-o wide` adds the rest.
        assert_eq!(columns(0), ["Ready", "Connections", "Status", "Age"]);
        assert_eq!(columns(1), ["Mode", "Min", "Max", "Target"]);
        let spec = &v["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["required"], json!(["nats"]));
        let autoscaling = &spec["properties"]["autoscaling"];
        assert_eq!(
            autoscaling["properties"]["mode"]["enum"],
            json!(["Builtin", "External"])
        );
        assert_eq!(
            autoscaling["properties"]["targetConnectionsPerPod"]["minimum"].as_f64(),
            Some(1.0)
        );
        let rules = autoscaling["x-kubernetes-validations"].to_string();
        assert!(
            rules.contains("self.minReplicas <= self.maxReplicas"),
            "{rules}"
        );
        assert_eq!(
            spec["properties"]["sessionAffinity"]["properties"]["type"]["enum"],
            json!(["ClientIP", "None"])
        );
    }

    /// The committed CRD must be what the types generate; run `crdgen` after changing them.
    #[test]
    fn committed_crd_matches_the_types() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/realtimecluster.yaml");
        let committed = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {path}: {e}; run crdgen"));
        assert!(
            committed == crd_yaml().unwrap(),
            "{path} is stale: run `cargo run -p roomcast-operator --bin crdgen`"
        );
    }
}
