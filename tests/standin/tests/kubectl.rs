//! The stand-in driven by the real `kubectl` (with `--validate=false`, as the stand-in serves no
//! OpenAPI documents): client-side and server-side apply, get, get -w, patch, scale, delete,
//! CRDs and their custom resources, namespaces.

mod common;

use kube_standin::Running;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// The RealtimeCluster CRD the operator's types generate (`crdgen`).
const RTC_CRD: &str = include_str!("../../../crds/realtimecluster.yaml");
const TEST_TIMEOUT: Duration = Duration::from_secs(60);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// kubectl: `$KUBECTL` if set, else the first `kubectl` on `PATH`.
fn kubectl() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("KUBECTL") {
        return Some(PathBuf::from(path));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("kubectl"))
        .find(|candidate| candidate.is_file())
}

/// A stand-in plus a scratch directory for manifests and kubectl's discovery cache.
struct Harness {
    standin: Running,
    dir: PathBuf,
}

impl Harness {
    async fn start() -> Self {
        let kubectl = kubectl();
        assert!(
            kubectl.is_some(),
            "kubectl is required for these tests: put it on PATH or set KUBECTL"
        );
        let standin = kube_standin::start().await.expect("stand-in starts");
        let dir = std::env::temp_dir().join(format!(
            "kube-standin-kubectl-{}-{}",
            std::process::id(),
            standin.addr.port()
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self { standin, dir }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(kubectl().expect("kubectl found at start"));
        cmd.arg("--kubeconfig")
            .arg(&self.standin.kubeconfig_path)
            .arg("--cache-dir")
            .arg(self.dir.join("cache"))
            .args(args)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs kubectl; returns (success, stdout, stderr).
    async fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = tokio::time::timeout(COMMAND_TIMEOUT, self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} timed out"))
            .expect("kubectl runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs kubectl and requires success; returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let (success, stdout, stderr) = self.run(args).await;
        assert!(success, "kubectl {args:?} failed:\n{stderr}\n{stdout}");
        stdout
    }

    async fn get_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all).await).expect("kubectl -o json prints JSON")
    }

    fn manifest(&self, name: &str, yaml: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, yaml).expect("write manifest");
        path.to_string_lossy().into_owned()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn bounded<F: std::future::Future<Output = ()>>(body: F) {
    common::bounded(TEST_TIMEOUT, body).await;
}

fn deployment(image: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {{app: web}}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: {image}
        ports:
        - containerPort: 80
      - name: sidecar
        image: busybox
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: conf
  labels: {{app: web}}
data:
  a: \"1\"
"
    )
}

#[tokio::test]
async fn apply_get_patch_delete() {
    bounded(async {
        let h = Harness::start().await;
        let file = h.manifest("app.yaml", &deployment("nginx:1", 2));
        let out = h.ok(&["apply", "--validate=false", "-f", &file]).await;
        assert!(
            out.contains("deployment.apps/web created") && out.contains("configmap/conf created"),
            "{out}"
        );

        // Re-apply with a new image: a strategic merge patch that keeps both containers.
        let file = h.manifest("app.yaml", &deployment("nginx:2", 2));
        let out = h.ok(&["apply", "--validate=false", "-f", &file]).await;
        assert!(out.contains("deployment.apps/web configured"), "{out}");
        let d = h.get_json(&["get", "deployment", "web"]).await;
        let containers = &d["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["image"], "nginx:2");
        assert_eq!(containers[0]["ports"][0]["containerPort"], 80);
        assert_eq!(containers[1]["name"], "sidecar");
        assert_eq!(d["metadata"]["generation"], 2);
        assert!(
            d["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
                .is_string()
        );

        let names = h
            .ok(&["get", "deploy,cm", "-l", "app=web", "-o", "name"])
            .await;
        assert_eq!(
            names.lines().collect::<Vec<_>>(),
            ["deployment.apps/web", "configmap/conf"]
        );

        h.ok(&[
            "patch",
            "configmap",
            "conf",
            "--type",
            "merge",
            "-p",
            r#"{"data":{"b":"2"}}"#,
        ])
        .await;
        h.ok(&[
            "patch",
            "configmap",
            "conf",
            "--type",
            "json",
            "-p",
            r#"[{"op":"remove","path":"/data/a"}]"#,
        ])
        .await;
        h.ok(&[
            "patch",
            "deployment",
            "web",
            "-p",
            r#"{"spec":{"replicas":3}}"#,
        ])
        .await;
        let cm = h.get_json(&["get", "configmap", "conf"]).await;
        assert_eq!(cm["data"], serde_json::json!({"b": "2"}));
        assert_eq!(
            h.get_json(&["get", "deployment", "web"]).await["spec"]["replicas"],
            3
        );

        h.ok(&["scale", "deployment", "web", "--replicas=5"]).await;
        assert_eq!(
            h.ok(&[
                "get",
                "deployment",
                "web",
                "-o",
                "jsonpath={.spec.replicas}"
            ])
            .await,
            "5"
        );

        h.ok(&["delete", "-f", &file]).await;
        let (found, _, stderr) = h.run(&["get", "configmap", "conf"]).await;
        assert!(!found && stderr.contains("NotFound"), "{stderr}");
    })
    .await;
}

#[tokio::test]
async fn server_side_apply_creates_merges_and_removes_dropped_fields() {
    bounded(async {
        let h = Harness::start().await;
        let cm = |data: &str| {
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n{data}")
        };
        let file = h.manifest("cm.yaml", &cm("  a: \"1\"\n  b: \"2\"\n"));
        let out = h
            .ok(&["apply", "--server-side", "--validate=false", "-f", &file])
            .await;
        assert!(out.contains("serverside-applied"), "{out}");
        let got = h
            .get_json(&["get", "cm", "ssa", "--show-managed-fields"])
            .await;
        assert_eq!(got["metadata"]["managedFields"][0]["manager"], "kubectl");
        assert_eq!(got["metadata"]["managedFields"][0]["operation"], "Apply");

        let file = h.manifest("cm.yaml", &cm("  a: \"1\"\n"));
        h.ok(&["apply", "--server-side", "--validate=false", "-f", &file])
            .await;
        assert_eq!(
            h.get_json(&["get", "cm", "ssa"]).await["data"],
            serde_json::json!({"a": "1"})
        );

        // Another manager's different value conflicts until forced.
        let other = h.manifest("other.yaml", &cm("  a: \"9\"\n"));
        let (ok, _, stderr) = h
            .run(&[
                "apply",
                "--server-side",
                "--field-manager=other",
                "--validate=false",
                "-f",
                &other,
            ])
            .await;
        assert!(!ok && stderr.contains("conflict"), "{stderr}");
        h.ok(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=other",
            "--validate=false",
            "-f",
            &other,
        ])
        .await;
        assert_eq!(h.get_json(&["get", "cm", "ssa"]).await["data"]["a"], "9");
    })
    .await;
}

const CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}
    additionalPrinterColumns:
    - {name: Color, type: string, jsonPath: .spec.color}
    - {name: Replicas, type: integer, jsonPath: .spec.replicas}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
";

#[tokio::test]
async fn crd_then_custom_resources() {
    bounded(async {
        let h = Harness::start().await;
        let (known, _, _) = h.run(&["get", "widgets"]).await;
        assert!(!known, "no widgets before the CRD");
        let crd = h.manifest("crd.yaml", CRD);
        h.ok(&["apply", "--validate=false", "-f", &crd]).await;
        h.ok(&["wait", "--for=condition=established", "--timeout=10s", "crd/widgets.example.com"]).await;

        let widget = |color: &str| format!("apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  replicas: 1\n  color: {color}\n");
        let file = h.manifest("w.yaml", &widget("red"));
        h.ok(&["apply", "--validate=false", "-f", &file]).await;
        let file = h.manifest("w.yaml", &widget("blue"));
        let out = h.ok(&["apply", "--validate=false", "-f", &file]).await;
        assert!(out.contains("widget.example.com/w1 configured"), "{out}");
        assert_eq!(h.ok(&["get", "wd", "-o", "name"]).await.trim(), "widget.example.com/w1");

        // Server-side printing uses the CRD's printer columns.
        let table = h.ok(&["get", "wd"]).await;
        let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(rows[0], ["NAME", "COLOR", "REPLICAS", "AGE"], "{table}");
        assert_eq!(rows[1][..3], ["w1", "blue", "1"], "{table}");

        h.ok(&["scale", "wd", "w1", "--replicas=4"]).await;
        h.ok(&["patch", "wd", "w1", "--subresource=status", "--type=merge", "-p", r#"{"status":{"replicas":3},"spec":{"color":"ignored"}}"#]).await;
        let w = h.get_json(&["get", "widget", "w1"]).await;
        assert_eq!(w["spec"], serde_json::json!({"replicas": 4, "color": "blue"}));
        assert_eq!(w["status"], serde_json::json!({"replicas": 3}));

        // Strategic merge patch is refused for custom resources, as upstream does.
        let (ok, _, stderr) = h.run(&["patch", "wd", "w1", "--type=strategic", "-p", r#"{"spec":{"color":"x"}}"#]).await;
        assert!(!ok, "{stderr}");

        h.ok(&["delete", "crd", "widgets.example.com"]).await;
        let (still, _, _) = h.run(&["get", "widgets.example.com", "w1"]).await;
        assert!(!still, "custom resources go with their CRD");
    })
    .await;
}

#[tokio::test]
async fn realtimecluster_columns_wide_columns_and_category() {
    bounded(async {
        let h = Harness::start().await;
        let crd = h.manifest("rtc-crd.yaml", RTC_CRD);
        h.ok(&["apply", "--validate=false", "-f", &crd]).await;
        h.ok(&["wait", "--for=condition=established", "--timeout=10s", "crd/realtimeclusters.roomcast.dev"]).await;
        let rtc = h.manifest(
            "rtc.yaml",
            "apiVersion: roomcast.dev/v1alpha1\nkind: RealtimeCluster\nmetadata:\n  name: chat\nspec:\n  nats: {url: 'nats://nats:4222'}\n  autoscaling: {mode: Builtin, minReplicas: 2, maxReplicas: 20, targetConnectionsPerPod: 5000}\n",
        );
        h.ok(&["apply", "--validate=false", "-f", &rtc]).await;
        let status = r#"{"status":{"ready":"1/3","connections":4200,"conditions":[
            {"type":"Scaling","status":"True","reason":"ScalingUp","message":"2 -> 3","lastTransitionTime":"2026-11-23T10:00:00Z"},
            {"type":"Ready","status":"False","reason":"Scaling","message":"1 of 3 ready","lastTransitionTime":"2026-11-23T10:00:00Z"}]}}"#;
        h.ok(&["patch", "rtc", "chat", "--subresource=status", "--type=merge", "-p", status]).await;

        let rows = |table: &str| -> Vec<Vec<String>> {
            table.lines().map(|l| l.split_whitespace().map(str::to_string).collect()).collect()
        };
        // Default columns: the contract's Ready, Connections, Age, plus the Ready reason.
        let table = rows(&h.ok(&["get", "rtc"]).await);
        assert_eq!(table[0], ["NAME", "READY", "CONNECTIONS", "STATUS", "AGE"], "{table:?}");
        assert_eq!(table[1][..4], ["chat", "1/3", "4200", "Scaling"], "{table:?}");
        // -o wide adds the autoscaling settings.
        let wide = rows(&h.ok(&["get", "rtc", "-o", "wide"]).await);
        assert_eq!(
            wide[0],
            ["NAME", "READY", "CONNECTIONS", "STATUS", "MODE", "MIN", "MAX", "TARGET", "AGE"],
            "{wide:?}"
        );
        assert_eq!(wide[1][..8], ["chat", "1/3", "4200", "Scaling", "Builtin", "2", "20", "5000"], "{wide:?}");
        // The `roomcast` category lists every Roomcast kind.
        let listed = h.ok(&["get", "roomcast", "-o", "name"]).await;
        assert_eq!(listed.trim(), "realtimecluster.roomcast.dev/chat", "{listed}");
    })
    .await;
}

#[tokio::test]
async fn namespace_deletion_removes_its_objects() {
    bounded(async {
        let h = Harness::start().await;
        let ns = h.manifest(
            "ns.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n",
        );
        h.ok(&["apply", "--validate=false", "-f", &ns]).await;
        let app = h.manifest("app.yaml", &deployment("nginx:1", 1));
        h.ok(&["apply", "--validate=false", "-n", "team", "-f", &app])
            .await;
        assert_eq!(
            h.ok(&["get", "deploy,cm", "-n", "team", "-o", "name"])
                .await
                .lines()
                .count(),
            2
        );
        h.ok(&["delete", "namespace", "team"]).await;
        let (ok, _, stderr) = h
            .run(&["apply", "--validate=false", "-n", "team", "-f", &app])
            .await;
        assert!(
            !ok && stderr.contains("not found"),
            "objects cannot be created in a missing namespace: {stderr}"
        );
        let (_, out, _) = h
            .run(&["get", "cm", "--all-namespaces", "-o", "name"])
            .await;
        assert!(out.trim().is_empty(), "{out}");
    })
    .await;
}

type WatchLines = tokio::io::Lines<BufReader<tokio::process::ChildStdout>>;

/// The next line `kubectl get -w` prints, within the command deadline.
async fn next(lines: &mut WatchLines) -> String {
    tokio::time::timeout(COMMAND_TIMEOUT, lines.next_line())
        .await
        .expect("watch output in time")
        .expect("read")
        .expect("watch still running")
}

#[tokio::test]
async fn get_watch_streams_events() {
    bounded(async {
        let h = Harness::start().await;
        let app = h.manifest("app.yaml", &deployment("nginx:1", 1));
        h.ok(&["apply", "--validate=false", "-f", &app]).await;
        let mut watch = h
            .command(&[
                "get",
                "configmaps",
                "-w",
                "--output-watch-events",
                "-o",
                "jsonpath={.type} {.object.metadata.name}{\"\\n\"}",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl get -w starts");
        let stdout = watch.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        assert_eq!(next(&mut lines).await, "ADDED conf");
        h.ok(&[
            "patch",
            "cm",
            "conf",
            "--type=merge",
            "-p",
            r#"{"data":{"x":"1"}}"#,
        ])
        .await;
        assert_eq!(next(&mut lines).await, "MODIFIED conf");
        h.ok(&["delete", "cm", "conf"]).await;
        assert_eq!(next(&mut lines).await, "DELETED conf");
        watch.kill().await.expect("stop kubectl get -w");
    })
    .await;
}
