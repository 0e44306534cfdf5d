//! The objects a `RealtimeCluster` should own, computed from its spec without I/O:
//! the gateway Deployment, the public and admin Services and the PodDisruptionBudget.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ClientIPConfig, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler, ObjectFieldSelector,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec,
    SessionAffinityConfig, SleepAction, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::crd::{RealtimeCluster, SecretKeyRef, SessionAffinityType};

/// Port of the public WebSocket/HTTP listener in the gateway container.
pub const WS_PORT: i32 = 8080;
/// Port of the admin listener (`/metrics`, `/healthz`, `/readyz`, `/drain`).
pub const ADMIN_PORT: i32 = 9090;
/// Value of `app.kubernetes.io/name` on everything the operator makes.
pub const APP_NAME: &str = "roomcast-gateway";
/// Annotation the ReplicaSet controller reads to choose which pods go first.
pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";
/// Name of the gateway container.
pub const CONTAINER: &str = "gateway";
/// Seconds beyond the drain and the preStop pause before the kubelet kills a pod.
pub const GRACE_MARGIN_SECONDS: i64 = 10;
/// Longest preStop pause, which lets endpoints drop the pod before it gets SIGTERM.
pub const MAX_PRESTOP_SECONDS: i64 = 5;
/// Where the NATS credentials Secret key is mounted.
pub const NATS_CREDENTIALS_DIR: &str = "/etc/roomcast/nats";
/// File name of the mounted NATS credentials.
pub const NATS_CREDENTIALS_FILE: &str = "nats.creds";
/// CPU request of a gateway whose spec sets no resources.
pub const DEFAULT_CPU_REQUEST: &str = "250m";
/// Memory request of a gateway whose spec sets no resources.
pub const DEFAULT_MEMORY_REQUEST: &str = "128Mi";
/// User and group the gateway runs as (the distroless `nonroot` user).
pub const RUN_AS: i64 = 65532;

/// Settings of the operator that shape the objects.
#[derive(Clone, Debug)]
pub struct Defaults {
    /// Image for clusters whose spec names none.
    pub image: String,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            image: crate::crd::DEFAULT_IMAGE.to_string(),
        }
    }
}

/// Everything one `RealtimeCluster` owns.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// The gateway pods.
    pub deployment: Deployment,
    /// The public Service, `<name>`.
    pub service: Service,
    /// The admin Service, `<name>-admin`.
    pub admin_service: Service,
    /// At most one gateway down at a time by voluntary disruption.
    pub pdb: PodDisruptionBudget,
}

/// Why objects cannot be built for a resource.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DesiredError {
    /// The resource came without the metadata an owner needs.
    #[error("RealtimeCluster lacks metadata.{0}")]
    MissingMetadata(&'static str),
}

/// Labels that select the gateway pods of cluster `name`.
pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), APP_NAME.to_string()),
        ("app.kubernetes.io/instance".to_string(), name.to_string()),
    ])
}

/// The selector as a string, for `status.selector` and pod list calls.
pub fn selector_string(name: &str) -> String {
    selector_labels(name)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Name of the admin Service of cluster `name`.
pub fn admin_service_name(name: &str) -> String {
    format!("{name}-admin")
}

/// Seconds the preStop hook pauses: long enough for endpoint removal, never longer than
/// the drain itself (a cluster that asked for no drain gets no pause).
pub fn prestop_seconds(drain_seconds: u32) -> i64 {
    i64::from(drain_seconds).min(MAX_PRESTOP_SECONDS)
}

/// Grace period: the preStop pause, then the drain, then a margin to exit.
pub fn termination_grace_seconds(drain_seconds: u32) -> i64 {
    prestop_seconds(drain_seconds) + i64::from(drain_seconds) + GRACE_MARGIN_SECONDS
}

/// Builds the owned objects. `replicas` is `None` when someone else owns the replica
/// count (External mode without a `/scale` request), so the apply leaves it alone.
pub fn build(
    rtc: &RealtimeCluster,
    defaults: &Defaults,
    replicas: Option<i32>,
) -> Result<Desired, DesiredError> {
    let name = rtc
        .meta()
        .name
        .clone()
        .ok_or(DesiredError::MissingMetadata("name"))?;
    let namespace = rtc
        .namespace()
        .ok_or(DesiredError::MissingMetadata("namespace"))?;
    let owner = rtc
        .controller_owner_ref(&())
        .ok_or(DesiredError::MissingMetadata("uid"))?;
    let meta = |object_name: String, extra: &BTreeMap<String, String>| ObjectMeta {
        name: Some(object_name),
        namespace: Some(namespace.clone()),
        labels: Some(object_labels(&name)),
        annotations: (!extra.is_empty()).then(|| extra.clone()),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    };
    let none = BTreeMap::new();
    Ok(Desired {
        deployment: deployment(rtc, &name, defaults, replicas, meta(name.clone(), &none)),
        service: public_service(
            rtc,
            &name,
            meta(name.clone(), &rtc.spec.service.annotations),
        ),
        admin_service: admin_service(&name, meta(admin_service_name(&name), &none)),
        pdb: pdb(&name, meta(name.clone(), &none)),
    })
}

fn object_labels(name: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(name);
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        "roomcast-operator".into(),
    );
    labels
}

fn deployment(
    rtc: &RealtimeCluster,
    name: &str,
    defaults: &Defaults,
    replicas: Option<i32>,
    metadata: ObjectMeta,
) -> Deployment {
    let spec = &rtc.spec;
    let mut pod_labels = spec.pod_template.labels.clone();
    pod_labels.extend(selector_labels(name));
    let mut pod_annotations = spec.pod_template.annotations.clone();
    // Every gateway pod carries a deletion cost; the drain lowers it on victims.
    pod_annotations.insert(DELETION_COST.to_string(), "0".to_string());
    let image = spec
        .image
        .clone()
        .filter(|i| !i.trim().is_empty())
        .unwrap_or_else(|| defaults.image.clone());
    let mut volumes = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..VolumeMount::default()
    }];
    if let Some(creds) = &spec.nats.credentials_secret_ref {
        volumes.push(Volume {
            name: "nats-credentials".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(creds.name.clone()),
                items: Some(vec![KeyToPath {
                    key: creds.key.clone(),
                    path: NATS_CREDENTIALS_FILE.into(),
                    mode: None,
                }]),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "nats-credentials".into(),
            mount_path: NATS_CREDENTIALS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    let prestop = prestop_seconds(spec.drain_seconds);
    let container = Container {
        name: CONTAINER.into(),
        image: Some(image),
        ports: Some(vec![
            container_port("ws", WS_PORT),
            container_port("admin", ADMIN_PORT),
        ]),
        env: Some(gateway_env(rtc)),
        readiness_probe: Some(http_probe("/readyz", 5, 2)),
        liveness_probe: Some(http_probe("/healthz", 10, 3)),
        lifecycle: (prestop > 0).then(|| Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction { seconds: prestop }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        image_pull_policy: spec
            .pod_template
            .image_pull_policy
            .map(|p| p.as_str().to_string()),
        resources: Some(
            spec.resources
                .clone()
                .unwrap_or_else(default_gateway_resources),
        ),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            seccomp_profile: Some(runtime_default_seccomp()),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let t = &spec.pod_template;
    Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            replicas,
            selector: LabelSelector {
                match_labels: Some(selector_labels(name)),
                match_expressions: None,
            },
            // Keep capacity during rollouts: a new pod is ready before an old one drains.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    termination_grace_period_seconds: Some(termination_grace_seconds(
                        spec.drain_seconds,
                    )),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS),
                        run_as_group: Some(RUN_AS),
                        fs_group: Some(RUN_AS),
                        seccomp_profile: Some(runtime_default_seccomp()),
                        ..PodSecurityContext::default()
                    }),
                    node_selector: (!t.node_selector.is_empty()).then(|| t.node_selector.clone()),
                    tolerations: (!t.tolerations.is_empty()).then(|| t.tolerations.clone()),
                    affinity: t.affinity.clone(),
                    image_pull_secrets: (!t.image_pull_secrets.is_empty())
                        .then(|| t.image_pull_secrets.clone()),
                    // Gateways never call the Kubernetes API: no token in their pods.
                    automount_service_account_token: Some(false),
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// Requests of a gateway container whose spec sets no `resources`: enough for the default
/// `targetConnectionsPerPod` (5,000) with room to spare. Sizing per 10,000 connections (from
/// docs/benchmarks.md) is in docs/production.md. No limits: a CPU limit throttles fan-out
/// latency, and a memory limit must follow the chosen target, so both are left to the spec.
pub fn default_gateway_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity(DEFAULT_CPU_REQUEST.to_string())),
            (
                "memory".to_string(),
                Quantity(DEFAULT_MEMORY_REQUEST.to_string()),
            ),
        ])),
        ..ResourceRequirements::default()
    }
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(ADMIN_PORT),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

fn plain_env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn secret_env(name: &str, secret: &SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.name.clone(),
                key: secret.key.clone(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// The gateway's configuration as `ROOMCAST_<PATH>` variables (its YAML config path,
/// upper-cased, `.` → `_`); secrets stay in Secrets and are referenced, never copied.
pub fn gateway_env(rtc: &RealtimeCluster) -> Vec<EnvVar> {
    let spec = &rtc.spec;
    let l = &spec.limits;
    let mut env = vec![
        plain_env("ROOMCAST_LISTEN", format!("0.0.0.0:{WS_PORT}")),
        plain_env("ROOMCAST_ADMIN_LISTEN", format!("0.0.0.0:{ADMIN_PORT}")),
        EnvVar {
            name: "ROOMCAST_NODE_NAME".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: Some("v1".into()),
                    field_path: "metadata.name".into(),
                }),
                ..EnvVarSource::default()
            }),
        },
        plain_env("ROOMCAST_DRAIN_SECONDS", spec.drain_seconds.to_string()),
        plain_env(
            "ROOMCAST_LIMITS_MAX_FRAME_BYTES",
            l.max_frame_bytes.to_string(),
        ),
        plain_env(
            "ROOMCAST_LIMITS_MAX_ROOMS_PER_CONNECTION",
            l.max_rooms_per_connection.to_string(),
        ),
        plain_env(
            "ROOMCAST_LIMITS_PUBLISH_RATE_PER_SECOND",
            l.publish_rate_per_second.to_string(),
        ),
        plain_env(
            "ROOMCAST_LIMITS_OUTBOUND_QUEUE_FRAMES",
            l.outbound_queue_frames.to_string(),
        ),
        plain_env("ROOMCAST_NATS_URL", spec.nats.url.clone()),
    ];
    if spec.nats.history_replicas != 1 {
        env.push(plain_env(
            "ROOMCAST_NATS_HISTORY_REPLICAS",
            spec.nats.history_replicas.to_string(),
        ));
    }
    if !spec.namespaces.is_empty() {
        // `;` between specs: the gateway's list form of ROOMCAST_NAMESPACES.
        let specs: Vec<String> = spec.namespaces.iter().map(|ns| ns.gateway_spec()).collect();
        env.push(plain_env("ROOMCAST_NAMESPACES", specs.join(";")));
    }
    if spec.nats.credentials_secret_ref.is_some() {
        env.push(plain_env(
            "ROOMCAST_NATS_CREDENTIALS_FILE",
            format!("{NATS_CREDENTIALS_DIR}/{NATS_CREDENTIALS_FILE}"),
        ));
    }
    let auth = &spec.auth;
    for (var, secret) in [
        ("ROOMCAST_AUTH_JWT_SECRET", &auth.jwt_secret_ref),
        (
            "ROOMCAST_AUTH_JWT_PUBLIC_KEY",
            &auth.jwt_public_key_secret_ref,
        ),
        ("ROOMCAST_AUTH_API_KEY", &auth.api_key_secret_ref),
    ] {
        if let Some(secret) = secret {
            env.push(secret_env(var, secret));
        }
    }
    if !auth.allowed_origins.is_empty() {
        env.push(plain_env(
            "ROOMCAST_AUTH_ALLOWED_ORIGINS",
            auth.allowed_origins.join(","),
        ));
    }
    // The user's extras (`podTemplate.env`), except names set above: the
    // spec's own fields stay the one way to configure what they cover.
    for extra in &spec.pod_template.env {
        if !env.iter().any(|e| e.name == extra.name) {
            env.push(extra.clone());
        }
    }
    env
}

fn public_service(rtc: &RealtimeCluster, name: &str, metadata: ObjectMeta) -> Service {
    let affinity = &rtc.spec.session_affinity;
    let sticky = affinity.type_ == SessionAffinityType::ClientIP;
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(rtc.spec.service.type_.as_str().into()),
            selector: Some(selector_labels(name)),
            ports: Some(vec![service_port("ws", rtc.spec.service.port, WS_PORT)]),
            session_affinity: Some(if sticky { "ClientIP" } else { "None" }.into()),
            session_affinity_config: sticky.then_some(SessionAffinityConfig {
                client_ip: Some(ClientIPConfig {
                    timeout_seconds: Some(affinity.timeout_seconds),
                }),
            }),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn service_port(name: &str, port: i32, target: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(target)),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

fn admin_service(name: &str, metadata: ObjectMeta) -> Service {
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(name)),
            ports: Some(vec![service_port("admin", ADMIN_PORT, ADMIN_PORT)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn pdb(name: &str, metadata: ObjectMeta) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(name)),
                match_expressions: None,
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn cluster(spec: Value) -> RealtimeCluster {
        let mut rtc = RealtimeCluster::new("chat", serde_json::from_value(spec).unwrap());
        rtc.metadata.namespace = Some("apps".into());
        rtc.metadata.uid = Some("uid-1".into());
        rtc
    }

    fn basic() -> RealtimeCluster {
        cluster(json!({"nats": {"url": "nats://nats.apps:4222"}}))
    }

    fn built(rtc: &RealtimeCluster, replicas: Option<i32>) -> Value {
        let d = build(rtc, &Defaults::default(), replicas).unwrap();
        json!({
            "deployment": serde_json::to_value(&d.deployment).unwrap(),
            "service": serde_json::to_value(&d.service).unwrap(),
            "admin": serde_json::to_value(&d.admin_service).unwrap(),
            "pdb": serde_json::to_value(&d.pdb).unwrap(),
        })
    }

    fn env_of(d: &Value) -> BTreeMap<String, Value> {
        d["deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap().to_string(), e.clone()))
            .collect()
    }

    #[test]
    fn every_object_is_named_labelled_and_owned() {
        let d = built(&basic(), Some(2));
        for (key, name, kind) in [
            ("deployment", "chat", "Deployment"),
            ("service", "chat", "Service"),
            ("admin", "chat-admin", "Service"),
            ("pdb", "chat", "PodDisruptionBudget"),
        ] {
            let o = &d[key];
            assert_eq!(o["kind"], kind);
            assert_eq!(o["metadata"]["name"], name);
            assert_eq!(o["metadata"]["namespace"], "apps");
            assert_eq!(
                o["metadata"]["labels"]["app.kubernetes.io/name"],
                "roomcast-gateway"
            );
            assert_eq!(
                o["metadata"]["labels"]["app.kubernetes.io/instance"],
                "chat"
            );
            let owner = &o["metadata"]["ownerReferences"][0];
            assert_eq!(owner["kind"], "RealtimeCluster");
            assert_eq!(owner["apiVersion"], "roomcast.dev/v1alpha1");
            assert_eq!(owner["name"], "chat");
            assert_eq!(owner["uid"], "uid-1");
            assert_eq!(owner["controller"], true);
        }
        assert_eq!(d["pdb"]["apiVersion"], "policy/v1");
        assert_eq!(d["deployment"]["apiVersion"], "apps/v1");
    }

    #[test]
    fn missing_uid_or_namespace_is_an_error() {
        let mut rtc = basic();
        rtc.metadata.uid = None;
        assert_eq!(
            build(&rtc, &Defaults::default(), None).unwrap_err(),
            DesiredError::MissingMetadata("uid")
        );
        let mut rtc = basic();
        rtc.metadata.namespace = None;
        assert_eq!(
            build(&rtc, &Defaults::default(), None).unwrap_err(),
            DesiredError::MissingMetadata("namespace")
        );
    }

    #[test]
    fn selectors_match_the_pod_labels() {
        let d = built(&basic(), Some(2));
        let want = json!({"app.kubernetes.io/name": "roomcast-gateway", "app.kubernetes.io/instance": "chat"});
        assert_eq!(d["deployment"]["spec"]["selector"]["matchLabels"], want);
        assert_eq!(d["service"]["spec"]["selector"], want);
        assert_eq!(d["admin"]["spec"]["selector"], want);
        assert_eq!(d["pdb"]["spec"]["selector"]["matchLabels"], want);
        let pod_labels = &d["deployment"]["spec"]["template"]["metadata"]["labels"];
        assert_eq!(pod_labels["app.kubernetes.io/instance"], "chat");
        assert_eq!(
            selector_string("chat"),
            "app.kubernetes.io/instance=chat,app.kubernetes.io/name=roomcast-gateway"
        );
    }

    #[test]
    fn pod_template_labels_cannot_override_the_selector() {
        let rtc = cluster(json!({"nats": {"url": "n"}, "podTemplate": {
            "labels": {"app.kubernetes.io/instance": "other", "team": "a"},
            "annotations": {"x": "y"},
            "nodeSelector": {"disk": "ssd"},
            "tolerations": [{"key": "k", "operator": "Exists"}]
        }}));
        let d = built(&rtc, Some(2));
        let t = &d["deployment"]["spec"]["template"];
        assert_eq!(
            t["metadata"]["labels"]["app.kubernetes.io/instance"],
            "chat"
        );
        assert_eq!(t["metadata"]["labels"]["team"], "a");
        assert_eq!(t["metadata"]["annotations"]["x"], "y");
        assert_eq!(t["spec"]["nodeSelector"]["disk"], "ssd");
        assert_eq!(t["spec"]["tolerations"][0]["key"], "k");
    }

    #[test]
    fn pods_carry_a_deletion_cost() {
        let d = built(&basic(), Some(2));
        assert_eq!(
            d["deployment"]["spec"]["template"]["metadata"]["annotations"][DELETION_COST],
            "0"
        );
    }

    #[test]
    fn replicas_are_omitted_when_not_ours() {
        assert_eq!(
            built(&basic(), Some(3))["deployment"]["spec"]["replicas"],
            3
        );
        let d = built(&basic(), None);
        assert!(d["deployment"]["spec"].get("replicas").is_none());
    }

    #[test]
    fn container_ports_probes_and_security() {
        let d = built(&basic(), Some(2));
        let pod = &d["deployment"]["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(c["image"], crate::crd::DEFAULT_IMAGE);
        assert_eq!(c["ports"][0]["containerPort"], 8080);
        assert_eq!(c["ports"][1]["containerPort"], 9090);
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(c["readinessProbe"]["httpGet"]["port"], 9090);
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(c["livenessProbe"]["httpGet"]["port"], 9090);
        let sc = &c["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true);
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        // A read-only root needs somewhere writable for temporary files.
        assert_eq!(c["volumeMounts"][0]["mountPath"], "/tmp");
    }

    #[test]
    fn image_comes_from_spec_or_operator_default() {
        let rtc = cluster(json!({"nats": {"url": "n"}, "image": "example/gw:1"}));
        let d = built(&rtc, Some(2));
        assert_eq!(
            d["deployment"]["spec"]["template"]["spec"]["containers"][0]["image"],
            "example/gw:1"
        );
        let defaults = Defaults {
            image: "mine:2".into(),
        };
        let d = build(&basic(), &defaults, Some(2)).unwrap();
        let c = &d.deployment.spec.unwrap().template.spec.unwrap().containers[0];
        assert_eq!(c.image.as_deref(), Some("mine:2"));
    }

    #[test]
    fn grace_period_and_prestop_follow_drain_seconds() {
        for (drain, prestop, grace) in [(30, Some(5), 45), (2, Some(2), 14), (0, None, 10)] {
            let rtc = cluster(json!({"nats": {"url": "n"}, "drainSeconds": drain}));
            let d = built(&rtc, Some(2));
            let pod = &d["deployment"]["spec"]["template"]["spec"];
            assert_eq!(pod["terminationGracePeriodSeconds"], grace, "drain {drain}");
            assert!(grace > drain);
            let sleep = &pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"];
            assert_eq!(sleep.as_i64(), prestop, "drain {drain}");
            assert_eq!(
                env_of(&d)["ROOMCAST_DRAIN_SECONDS"]["value"],
                drain.to_string()
            );
        }
    }

    #[test]
    fn extra_env_reaches_the_gateway_but_never_overrides_the_spec() {
        let rtc = cluster(json!({
            "nats": {"url": "nats://nats:4222"},
            "podTemplate": {"env": [
                {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel:4318"},
                {"name": "OTEL_TRACES_SAMPLER_ARG", "valueFrom": {"configMapKeyRef": {"name": "t", "key": "ratio"}}},
                {"name": "ROOMCAST_NATS_URL", "value": "nats://elsewhere:4222"}
            ]}
        }));
        let d = built(&rtc, Some(1));
        let env = env_of(&d);
        assert_eq!(
            env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"],
            "http://otel:4318"
        );
        assert_eq!(
            env["OTEL_TRACES_SAMPLER_ARG"]["valueFrom"]["configMapKeyRef"]["key"],
            "ratio"
        );
        assert_eq!(env["ROOMCAST_NATS_URL"]["value"], "nats://nats:4222");
        let names = d["deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["name"] == "ROOMCAST_NATS_URL")
            .count();
        assert_eq!(names, 1, "no duplicate names");
    }

    #[test]
    fn gateway_configuration_goes_through_env() {
        let rtc = cluster(json!({
            "nats": {"url": "nats://nats.apps:4222", "credentialsSecretRef": {"name": "nc", "key": "creds"}},
            "limits": {"maxFrameBytes": 1024, "maxRoomsPerConnection": 8, "publishRatePerSecond": 5, "outboundQueueFrames": 16},
            "auth": {
                "jwtSecretRef": {"name": "jwt", "key": "hs"},
                "apiKeySecretRef": {"name": "api", "key": "key"},
                "allowedOrigins": ["https://a.example", "https://b.example"]
            }
        }));
        let d = built(&rtc, Some(2));
        let env = env_of(&d);
        let value = |k: &str| env[k]["value"].as_str().unwrap().to_string();
        assert_eq!(value("ROOMCAST_LISTEN"), "0.0.0.0:8080");
        assert_eq!(value("ROOMCAST_ADMIN_LISTEN"), "0.0.0.0:9090");
        assert_eq!(
            env["ROOMCAST_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
        assert_eq!(value("ROOMCAST_NATS_URL"), "nats://nats.apps:4222");
        assert_eq!(value("ROOMCAST_LIMITS_MAX_FRAME_BYTES"), "1024");
        assert_eq!(value("ROOMCAST_LIMITS_MAX_ROOMS_PER_CONNECTION"), "8");
        assert_eq!(value("ROOMCAST_LIMITS_PUBLISH_RATE_PER_SECOND"), "5");
        assert_eq!(value("ROOMCAST_LIMITS_OUTBOUND_QUEUE_FRAMES"), "16");
        assert_eq!(
            value("ROOMCAST_AUTH_ALLOWED_ORIGINS"),
            "https://a.example,https://b.example"
        );
        assert_eq!(
            env["ROOMCAST_AUTH_JWT_SECRET"]["valueFrom"]["secretKeyRef"],
            json!({"name": "jwt", "key": "hs", "optional": false})
        );
        assert_eq!(
            env["ROOMCAST_AUTH_API_KEY"]["valueFrom"]["secretKeyRef"]["name"],
            "api"
        );
        assert!(!env.contains_key("ROOMCAST_AUTH_JWT_PUBLIC_KEY"));
        assert_eq!(
            value("ROOMCAST_NATS_CREDENTIALS_FILE"),
            "/etc/roomcast/nats/nats.creds"
        );
        let pod = &d["deployment"]["spec"]["template"]["spec"];
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "nats-credentials")
            .unwrap();
        assert_eq!(volume["secret"]["secretName"], "nc");
        assert_eq!(
            volume["secret"]["items"][0],
            json!({"key": "creds", "path": "nats.creds"})
        );
        let mount = pod["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "nats-credentials")
            .unwrap();
        assert_eq!(mount["mountPath"], "/etc/roomcast/nats");
        assert_eq!(mount["readOnly"], true);
    }

    #[test]
    fn optional_env_is_left_out_when_unset() {
        let env = env_of(&built(&basic(), Some(2)));
        for absent in [
            "ROOMCAST_AUTH_JWT_SECRET",
            "ROOMCAST_AUTH_JWT_PUBLIC_KEY",
            "ROOMCAST_AUTH_API_KEY",
            "ROOMCAST_AUTH_ALLOWED_ORIGINS",
            "ROOMCAST_NATS_CREDENTIALS_FILE",
        ] {
            assert!(!env.contains_key(absent), "{absent}");
        }
    }

    #[test]
    fn public_service_has_session_affinity_from_spec() {
        let d = built(&basic(), Some(2));
        let s = &d["service"]["spec"];
        assert_eq!(s["type"], "ClusterIP");
        assert_eq!(s["sessionAffinity"], "ClientIP");
        assert_eq!(
            s["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
            10800
        );
        assert_eq!(s["ports"][0]["port"], 80);
        assert_eq!(s["ports"][0]["targetPort"], 8080);

        let rtc = cluster(json!({"nats": {"url": "n"},
            "sessionAffinity": {"type": "None"},
            "service": {"type": "LoadBalancer", "port": 443, "annotations": {"lb": "internal"}}}));
        let d = built(&rtc, Some(2));
        let s = &d["service"]["spec"];
        assert_eq!(s["type"], "LoadBalancer");
        assert_eq!(s["sessionAffinity"], "None");
        assert!(s.get("sessionAffinityConfig").is_none());
        assert_eq!(s["ports"][0]["port"], 443);
        assert_eq!(d["service"]["metadata"]["annotations"]["lb"], "internal");
        assert!(d["admin"]["metadata"].get("annotations").is_none());
    }

    #[test]
    fn admin_service_exposes_9090() {
        let d = built(&basic(), Some(2));
        let s = &d["admin"]["spec"];
        assert_eq!(s["ports"][0]["port"], 9090);
        assert_eq!(s["ports"][0]["targetPort"], 9090);
        assert_eq!(s["type"], "ClusterIP");
    }

    #[test]
    fn pdb_allows_one_unavailable() {
        let d = built(&basic(), Some(2));
        assert_eq!(d["pdb"]["spec"]["maxUnavailable"], 1);
        assert!(d["pdb"]["spec"].get("minAvailable").is_none());
    }

    #[test]
    fn resources_pass_through() {
        let rtc = cluster(json!({"nats": {"url": "n"},
            "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "256Mi"}}}));
        let d = built(&rtc, Some(2));
        let r = &d["deployment"]["spec"]["template"]["spec"]["containers"][0]["resources"];
        assert_eq!(r["requests"]["cpu"], "100m");
        assert_eq!(r["limits"]["memory"], "256Mi");
    }

    #[test]
    fn resources_default_to_requests_without_limits() {
        let d = built(&basic(), Some(2));
        let r = &d["deployment"]["spec"]["template"]["spec"]["containers"][0]["resources"];
        assert_eq!(
            r,
            &json!({"requests": {"cpu": DEFAULT_CPU_REQUEST, "memory": DEFAULT_MEMORY_REQUEST}})
        );
    }

    #[test]
    fn pods_mount_no_token_and_take_pull_settings_from_the_pod_template() {
        let d = built(&basic(), Some(2));
        let pod = &d["deployment"]["spec"]["template"]["spec"];
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert!(pod.get("imagePullSecrets").is_none());
        assert!(pod["containers"][0].get("imagePullPolicy").is_none());

        let rtc = cluster(json!({"nats": {"url": "n"}, "podTemplate": {
            "imagePullSecrets": [{"name": "regcred"}], "imagePullPolicy": "Always"}}));
        let d = built(&rtc, Some(2));
        let pod = &d["deployment"]["spec"]["template"]["spec"];
        assert_eq!(pod["imagePullSecrets"], json!([{"name": "regcred"}]));
        assert_eq!(pod["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(pod["automountServiceAccountToken"], false);
    }
}
