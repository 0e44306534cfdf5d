//! The Kubernetes API a test runs against: a fresh in-process `kube-standin` by default, or the
//! cluster named by `ROOMCAST_E2E_KUBECONFIG`. Each test gets its own namespace (and runs its
//! operators scoped to it), so tests run in parallel, on the stand-in or on a real cluster.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// Environment variable naming a real cluster's kubeconfig.
pub const KUBECONFIG_ENV: &str = "ROOMCAST_E2E_KUBECONFIG";

/// A kubectl invocation's deadline.
const KUBECTL_DEADLINE: Duration = Duration::from_secs(60);

/// The API under test and the test's namespace.
pub struct Cluster {
    standin: Option<kube_standin::Running>,
    /// Kubeconfig file for kubectl and the operator.
    pub kubeconfig: PathBuf,
    /// A client for the test's own reads and writes.
    pub client: Client,
    /// The test's namespace (created by [`Cluster::start`]).
    pub namespace: String,
}

impl Cluster {
    /// Connects (starting the stand-in unless a real cluster is named), creates the test's
    /// namespace and applies the RealtimeCluster CRD with kubectl.
    pub async fn start(test: &str) -> Self {
        let (standin, kubeconfig, namespace) = match std::env::var_os(KUBECONFIG_ENV) {
            Some(path) => {
                let unique = format!("{:x}", std::process::id());
                (None, PathBuf::from(path), format!("e2e-{test}-{unique}"))
            }
            None => {
                let standin = kube_standin::start()
                    .await
                    .unwrap_or_else(|e| panic!("cannot start the stand-in: {e}"));
                let path = standin.kubeconfig_path.clone();
                (Some(standin), path, format!("e2e-{test}"))
            }
        };
        let client = client(&kubeconfig).await;
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}}))
            .unwrap_or_else(|e| panic!("namespace object: {e}"));
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("cannot create namespace {namespace}: {e}"));
        let cluster = Self {
            standin,
            kubeconfig,
            client,
            namespace,
        };
        let crd = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds/realtimecluster.yaml");
        let crd = crd.to_string_lossy().into_owned();
        // Server-side: the CRD is larger than client-side apply's annotation allows.
        cluster
            .kubectl(
                &["apply", "--server-side", "--validate=false", "-f", &crd],
                None,
            )
            .await;
        cluster
    }

    /// True against the stand-in, where the tests play kubelet with 127.0.X.Y pods.
    pub fn is_standin(&self) -> bool {
        self.standin.is_some()
    }

    /// Runs `kubectl` (namespace set to the test's) and returns its stdout; panics on failure.
    pub async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--namespace", &self.namespace])
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run kubectl: {e}"));
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())
                .await
                .unwrap_or_else(|e| panic!("kubectl stdin: {e}"));
        }
        let out = tokio::time::timeout(KUBECTL_DEADLINE, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} took over {KUBECTL_DEADLINE:?}"))
            .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"));
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl apply` of a JSON (or YAML) manifest.
    pub async fn apply(&self, manifest: &Value) -> String {
        let text = manifest.to_string();
        self.kubectl(&["apply", "--validate=false", "-f", "-"], Some(&text))
            .await
    }

    /// `kubectl apply` of RealtimeCluster `name` in the test's namespace with `spec`.
    pub async fn apply_realtime_cluster(&self, name: &str, spec: Value) -> String {
        self.apply(&json!({
            "apiVersion": "roomcast.dev/v1alpha1", "kind": "RealtimeCluster",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": spec,
        }))
        .await
    }

    /// A namespaced API of a built-in type in the test's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The RealtimeClusters of the test's namespace, untyped (the suite is a black box).
    pub fn clusters(&self) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk("roomcast.dev", "v1alpha1", "RealtimeCluster");
        Api::namespaced_with(
            self.client.clone(),
            &self.namespace,
            &ApiResource::from_gvk(&gvk),
        )
    }

    /// The RealtimeCluster `name` as JSON, if it exists.
    pub async fn cluster_json(&self, name: &str) -> Option<Value> {
        let obj = self.clusters().get_opt(name).await.ok()??;
        serde_json::to_value(obj).ok()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.standin.is_none() {
            // A real cluster keeps nothing of the test (best effort, not awaited).
            let _ = std::process::Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args(["delete", "namespace", &self.namespace, "--wait=false"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
        }
    }
}

async fn client(kubeconfig: &Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig)
        .unwrap_or_else(|e| panic!("kubeconfig {}: {e}", kubeconfig.display()));
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("kubeconfig {}: {e}", kubeconfig.display()));
    Client::try_from(config).unwrap_or_else(|e| panic!("client: {e}"))
}

/// The condition `type_` of an object's `status.conditions`.
pub fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}
