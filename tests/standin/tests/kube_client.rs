//! The stand-in driven by kube-rs (kube 5): typed APIs, patches, subresources, cascade deletion,
//! discovery of custom resources, raw watches and the kube-runtime watcher.

mod common;

use common::client;
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::watcher;
use kube::{Client, Discovery};
use kube_standin::{Config, Running};
use serde_json::json;
use std::future::Future;
use std::time::Duration;

const TEST_TIMEOUT: Duration = Duration::from_secs(30);

async fn bounded<F: Future<Output = ()>>(body: F) {
    common::bounded(TEST_TIMEOUT, body).await;
}

async fn standin_with(config: Config) -> (Running, Client) {
    let standin = kube_standin::start_with(config)
        .await
        .expect("stand-in starts");
    let client = client(&standin).await;
    (standin, client)
}

async fn standin() -> (Running, Client) {
    standin_with(Config::default()).await
}

fn pod(name: &str, app: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": "main", "image": "gateway:1"}]}
    }))
    .expect("pod")
}

fn api_error(err: kube::Error) -> (u16, String) {
    match err {
        kube::Error::Api(status) => (status.code, status.reason),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn names<K: kube::Resource>(items: &[K]) -> Vec<String> {
    let mut names: Vec<String> = items.iter().filter_map(|o| o.meta().name.clone()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn create_get_list_with_label_selectors() {
    bounded(async {
        let (_standin, client) = standin().await;
        let pods: Api<Pod> = Api::default_namespaced(client);
        let pp = PostParams::default();
        let created = pods.create(&pp, &pod("a", "web")).await.expect("create a");
        pods.create(&pp, &pod("b", "web")).await.expect("create b");
        pods.create(&pp, &pod("c", "db")).await.expect("create c");

        let meta = &created.metadata;
        assert!(meta.uid.as_deref().is_some_and(|u| !u.is_empty()));
        assert!(meta.resource_version.is_some() && meta.creation_timestamp.is_some());
        assert_eq!(meta.namespace.as_deref(), Some("default"));

        let again = pods
            .create(&pp, &pod("a", "web"))
            .await
            .expect_err("duplicate");
        assert_eq!(api_error(again), (409, "AlreadyExists".to_string()));
        let missing = pods.get("zzz").await.expect_err("missing");
        assert_eq!(api_error(missing), (404, "NotFound".to_string()));

        let list = |s: &'static str| {
            let pods = pods.clone();
            async move {
                names(
                    &pods
                        .list(&ListParams::default().labels(s))
                        .await
                        .expect("list")
                        .items,
                )
            }
        };
        assert_eq!(list("app=web").await, ["a", "b"]);
        assert_eq!(list("app!=web").await, ["c"]);
        assert_eq!(list("app in (db,cache)").await, ["c"]);
        assert_eq!(list("app notin (db)").await, ["a", "b"]);
        assert_eq!(list("app").await, ["a", "b", "c"]);
        assert!(list("!app").await.is_empty());
        let by_name = pods
            .list(&ListParams::default().fields("metadata.name=b"))
            .await
            .expect("list");
        assert_eq!(names(&by_name.items), ["b"]);
    })
    .await;
}

#[tokio::test]
async fn apply_creates_then_merges_and_records_managed_fields() {
    bounded(async {
        let (_standin, client) = standin().await;
        let cms: Api<ConfigMap> = Api::default_namespaced(client);
        let pp = PatchParams::apply("roomcast-operator").force();
        let first = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}});
        let created = cms.patch("cfg", &pp, &Patch::Apply(&first)).await.expect("apply creates");
        let managers: Vec<_> = created.metadata.managed_fields.iter().flatten().collect();
        assert_eq!(managers.len(), 1);
        assert_eq!(managers[0].manager.as_deref(), Some("roomcast-operator"));
        assert_eq!(managers[0].operation.as_deref(), Some("Apply"));

        // Someone else adds a key; the manager then stops applying "b" and changes "a".
        let merge = json!({"data": {"c": "3"}});
        cms.patch("cfg", &PatchParams::default(), &Patch::Merge(&merge)).await.expect("merge patch");
        let second = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "9"}});
        let applied = cms.patch("cfg", &pp, &Patch::Apply(&second)).await.expect("apply merges");
        let data = applied.data.expect("data");
        assert_eq!(data.get("a").map(String::as_str), Some("9"));
        assert_eq!(data.get("c").map(String::as_str), Some("3"), "fields of other managers stay");
        assert!(!data.contains_key("b"), "fields the manager stopped applying are removed");

        // Re-applying the same configuration is a no-op: no new resourceVersion.
        let again = cms.patch("cfg", &pp, &Patch::Apply(&second)).await.expect("apply again");
        assert_eq!(again.metadata.resource_version, applied.metadata.resource_version);
    })
    .await;
}

#[tokio::test]
async fn apply_without_force_conflicts_with_another_manager() {
    bounded(async {
        let (_standin, client) = standin().await;
        let cms: Api<ConfigMap> = Api::default_namespaced(client);
        let cfg = |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": v}});
        cms.patch("cfg", &PatchParams::apply("one"), &Patch::Apply(&cfg("1"))).await.expect("first manager");
        let err = cms.patch("cfg", &PatchParams::apply("two"), &Patch::Apply(&cfg("2"))).await.expect_err("conflict");
        assert_eq!(api_error(err), (409, "Conflict".to_string()));
        let forced = cms.patch("cfg", &PatchParams::apply("two").force(), &Patch::Apply(&cfg("2"))).await.expect("forced");
        assert_eq!(forced.data.and_then(|d| d.get("a").cloned()).as_deref(), Some("2"));
    })
    .await;
}

#[tokio::test]
async fn status_subresource_is_isolated_and_generation_tracks_spec() {
    bounded(async {
        let (_standin, client) = standin().await;
        let pods: Api<Pod> = Api::default_namespaced(client);
        let mut with_status = serde_json::to_value(pod("p", "web")).expect("json");
        with_status["status"] = json!({"phase": "Running"});
        let created: Pod = pods
            .create(&PostParams::default(), &serde_json::from_value(with_status).expect("pod"))
            .await
            .expect("create");
        assert!(created.status.is_none(), "status is dropped on create");
        assert_eq!(created.metadata.generation, Some(1));

        let status = json!({"status": {"phase": "Running", "podIP": "127.0.0.2"}, "spec": {"nodeName": "ignored"}});
        let patched = pods.patch_status("p", &PatchParams::default(), &Patch::Merge(&status)).await.expect("status patch");
        let s = patched.status.clone().expect("status");
        assert_eq!(s.pod_ip.as_deref(), Some("127.0.0.2"));
        assert_eq!(patched.spec.as_ref().and_then(|s| s.node_name.clone()), None, "status writes ignore spec");
        assert_eq!(patched.metadata.generation, Some(1), "status writes do not bump generation");

        let main = json!({"metadata": {"labels": {"x": "y"}}, "status": {"phase": "Failed"}});
        let relabelled = pods.patch("p", &PatchParams::default(), &Patch::Merge(&main)).await.expect("main patch");
        assert_eq!(relabelled.status.and_then(|s| s.phase).as_deref(), Some("Running"), "main writes ignore status");
        assert_eq!(relabelled.metadata.generation, Some(1), "metadata changes do not bump generation");

        let spec = json!({"spec": {"activeDeadlineSeconds": 30}});
        let respecced = pods.patch("p", &PatchParams::default(), &Patch::Merge(&spec)).await.expect("spec patch");
        assert_eq!(respecced.metadata.generation, Some(2));

        let status_apply = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "status": {"phase": "Succeeded"}});
        let applied = pods
            .patch_status("p", &PatchParams::apply("kubelet").force(), &Patch::Apply(&status_apply))
            .await
            .expect("status apply");
        assert_eq!(applied.status.and_then(|s| s.phase).as_deref(), Some("Succeeded"));
    })
    .await;
}

#[tokio::test]
async fn replace_with_stale_resource_version_conflicts() {
    bounded(async {
        let (_standin, client) = standin().await;
        let cms: Api<ConfigMap> = Api::default_namespaced(client);
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"k": "1"}})).expect("cm");
        let v1 = cms.create(&PostParams::default(), &cm).await.expect("create");
        let mut v2 = v1.clone();
        v2.data = Some([("k".to_string(), "2".to_string())].into());
        let stored = cms.replace("c", &PostParams::default(), &v2).await.expect("replace current");
        assert_ne!(stored.metadata.resource_version, v1.metadata.resource_version);
        let err = cms.replace("c", &PostParams::default(), &v2).await.expect_err("stale");
        assert_eq!(api_error(err), (409, "Conflict".to_string()));
        let stale_patch = json!({"metadata": {"resourceVersion": v1.metadata.resource_version}, "data": {"k": "3"}});
        let err = cms.patch("c", &PatchParams::default(), &Patch::Merge(&stale_patch)).await.expect_err("stale patch");
        assert_eq!(api_error(err), (409, "Conflict".to_string()));
    })
    .await;
}

#[tokio::test]
async fn deleting_an_owner_deletes_its_dependents() {
    bounded(async {
        let (_standin, client) = standin().await;
        let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
        let pods: Api<Pod> = Api::default_namespaced(client);
        let owner: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "owner"}})).expect("cm");
        let owner = cms.create(&PostParams::default(), &owner).await.expect("owner");
        let owner_ref = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid, "controller": true}]);
        for name in ["d1", "d2"] {
            let mut p = serde_json::to_value(pod(name, "web")).expect("json");
            p["metadata"]["ownerReferences"] = owner_ref.clone();
            pods.create(&PostParams::default(), &serde_json::from_value(p).expect("pod")).await.expect("dependent");
        }
        pods.create(&PostParams::default(), &pod("free", "web")).await.expect("unowned");
        cms.delete("owner", &DeleteParams::background()).await.expect("delete owner");
        let left = pods.list(&ListParams::default()).await.expect("list");
        assert_eq!(names(&left.items), ["free"]);
    })
    .await;
}

#[tokio::test]
async fn deployment_scale_subresource() {
    bounded(async {
        let (_standin, client) = standin().await;
        let deployments: Api<Deployment> = Api::default_namespaced(client);
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "gw"},
            "spec": {"selector": {"matchLabels": {"app": "gw"}}, "template": {"metadata": {"labels": {"app": "gw"}}, "spec": {"containers": [{"name": "gw", "image": "gw:1"}]}}}
        }))
        .expect("deployment");
        let created = deployments.create(&PostParams::default(), &d).await.expect("create");
        assert_eq!(created.spec.as_ref().and_then(|s| s.replicas), Some(1), "replicas defaults to 1");
        let scale = deployments.get_scale("gw").await.expect("get scale");
        assert_eq!(scale.spec.as_ref().and_then(|s| s.replicas), Some(1));
        assert_eq!(scale.status.as_ref().and_then(|s| s.selector.clone()).as_deref(), Some("app=gw"));
        let patched = deployments
            .patch_scale("gw", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"replicas": 4}})))
            .await
            .expect("patch scale");
        assert_eq!(patched.spec.and_then(|s| s.replicas), Some(4));
        let now = deployments.get("gw").await.expect("get");
        assert_eq!(now.spec.and_then(|s| s.replicas), Some(4));
        assert_eq!(now.metadata.generation, Some(2));
    })
    .await;
}

fn widget_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.size", "statusReplicasPath": ".status.size"}}
            }]
        }
    }))
    .expect("crd")
}

#[tokio::test]
async fn custom_resources_are_served_while_their_crd_exists() {
    bounded(async {
        let (_standin, client) = standin().await;
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        let discovery = Discovery::new(client.clone()).run().await.expect("discovery");
        assert!(discovery.has_group("apps") && !discovery.has_group("example.com"));

        crds.create(&PostParams::default(), &widget_crd()).await.expect("create crd");
        let discovery = Discovery::new(client.clone()).run().await.expect("discovery");
        let group = discovery.get("example.com").expect("group served");
        let (resource, caps) = group.recommended_kind("Widget").expect("widget kind");
        assert_eq!(resource.plural, "widgets");
        assert!(caps.subresources.iter().any(|(r, _)| r.plural == "widgets/scale" || r.plural == "scale"), "{caps:?}");

        let gvk = GroupVersionKind::gvk("example.com", "v1", "Widget");
        let widgets: Api<DynamicObject> = Api::default_namespaced_with(client.clone(), &ApiResource::from_gvk(&gvk));
        let w = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 2}});
        widgets.patch("w", &PatchParams::apply("test"), &Patch::Apply(&w)).await.expect("apply widget");
        let scaled = widgets
            .patch_scale("w", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"replicas": 5}})))
            .await
            .expect("scale widget");
        assert_eq!(scaled.spec.and_then(|s| s.replicas), Some(5));
        let got = widgets.get("w").await.expect("get widget");
        assert_eq!(got.data["spec"]["size"], 5);

        crds.delete("widgets.example.com", &DeleteParams::default()).await.expect("delete crd");
        let err = widgets.get("w").await.expect_err("gone with its CRD");
        assert_eq!(api_error(err).0, 404);
    })
    .await;
}

/// Next non-bookmark event of a raw watch.
async fn next_change<S>(stream: &mut S) -> WatchEvent<ConfigMap>
where
    S: futures_util::Stream<Item = kube::Result<WatchEvent<ConfigMap>>> + Unpin,
{
    loop {
        match stream.next().await {
            Some(Ok(WatchEvent::Bookmark(_))) => continue,
            Some(Ok(event)) => return event,
            other => panic!("watch ended or failed: {other:?}"),
        }
    }
}

fn event_name(event: &WatchEvent<ConfigMap>) -> (String, String) {
    match event {
        WatchEvent::Added(o) => ("ADDED".into(), o.metadata.name.clone().unwrap_or_default()),
        WatchEvent::Modified(o) => (
            "MODIFIED".into(),
            o.metadata.name.clone().unwrap_or_default(),
        ),
        WatchEvent::Deleted(o) => (
            "DELETED".into(),
            o.metadata.name.clone().unwrap_or_default(),
        ),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn watch_resumes_from_a_resource_version_with_selectors() {
    bounded(async {
        let (_standin, client) = standin().await;
        let cms: Api<ConfigMap> = Api::default_namespaced(client);
        let cm = |name: &str, app: &str| -> ConfigMap {
            serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": app}}}))
                .expect("cm")
        };
        let start = cms
            .list(&ListParams::default())
            .await
            .expect("list")
            .metadata
            .resource_version
            .expect("rv");
        cms.create(&PostParams::default(), &cm("a", "web"))
            .await
            .expect("a");
        cms.create(&PostParams::default(), &cm("b", "db"))
            .await
            .expect("b");
        cms.patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(&json!({"data": {"x": "1"}})),
        )
        .await
        .expect("patch a");
        cms.delete("a", &DeleteParams::default())
            .await
            .expect("delete a");

        let wp = WatchParams::default().labels("app=web").timeout(10);
        let mut stream = cms.watch(&wp, &start).await.expect("watch").boxed();
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(event_name(&next_change(&mut stream).await));
        }
        let expected = [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")];
        assert_eq!(seen, expected.map(|(t, n)| (t.to_string(), n.to_string())));

        // Live events follow the replay.
        cms.create(&PostParams::default(), &cm("c", "web"))
            .await
            .expect("c");
        assert_eq!(
            event_name(&next_change(&mut stream).await),
            ("ADDED".to_string(), "c".to_string())
        );
    })
    .await;
}

#[tokio::test]
async fn watch_from_compacted_history_gets_410_expired() {
    bounded(async {
        let config = Config {
            history_limit: 2,
            ..Config::default()
        };
        let (_standin, client) = standin_with(config).await;
        let cms: Api<ConfigMap> = Api::default_namespaced(client);
        let start = cms
            .list(&ListParams::default())
            .await
            .expect("list")
            .metadata
            .resource_version
            .expect("rv");
        for name in ["a", "b", "c", "d"] {
            let cm: ConfigMap =
                serde_json::from_value(json!({"metadata": {"name": name}})).expect("cm");
            cms.create(&PostParams::default(), &cm)
                .await
                .expect("create");
        }
        let mut stream = cms
            .watch(&WatchParams::default(), &start)
            .await
            .expect("watch")
            .boxed();
        match stream.next().await {
            Some(Ok(WatchEvent::Error(e))) => {
                assert_eq!((e.code, e.reason.as_str()), (410, "Expired"))
            }
            other => panic!("expected a 410 ERROR event, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn watch_sends_bookmarks_with_the_latest_resource_version() {
    bounded(async {
        let config = Config {
            bookmark_interval: Duration::from_millis(100),
            ..Config::default()
        };
        let (_standin, client) = standin_with(config).await;
        let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
        let pods: Api<Pod> = Api::default_namespaced(client);
        let start = cms
            .list(&ListParams::default())
            .await
            .expect("list")
            .metadata
            .resource_version
            .expect("rv");
        let mut stream = cms
            .watch(&WatchParams::default().timeout(10), &start)
            .await
            .expect("watch")
            .boxed();
        // A change to another resource type still moves the bookmark forward.
        let created = pods
            .create(&PostParams::default(), &pod("p", "web"))
            .await
            .expect("pod");
        let latest = created.metadata.resource_version.expect("rv");
        loop {
            match stream.next().await {
                Some(Ok(WatchEvent::Bookmark(b))) if b.metadata.resource_version == latest => break,
                Some(Ok(WatchEvent::Bookmark(_))) => continue,
                other => panic!("expected bookmarks, got {other:?}"),
            }
        }
    })
    .await;
}

#[tokio::test]
async fn watch_timeout_ends_the_stream() {
    bounded(async {
        let (_standin, client) = standin().await;
        let cms: Api<ConfigMap> = Api::default_namespaced(client);
        let wp = WatchParams::default().timeout(1).disable_bookmarks();
        // Timed from before the request: the stand-in's second starts when it
        // gets the request, which a loaded machine may answer well after that.
        let started = tokio::time::Instant::now();
        let mut stream = cms.watch(&wp, "0").await.expect("watch").boxed();
        assert!(
            stream.next().await.is_none(),
            "no objects, no events, then the end"
        );
        assert!(started.elapsed() >= Duration::from_millis(900));
    })
    .await;
}

async fn runtime_watcher_sees_changes(config: watcher::Config) {
    let (_standin, client) = standin().await;
    let pods: Api<Pod> = Api::default_namespaced(client);
    pods.create(&PostParams::default(), &pod("before", "web"))
        .await
        .expect("pod");
    let mut events = watcher::watcher(pods.clone(), config).boxed();
    let initial = initial_names(&mut events).await;
    assert_eq!(initial, ["before"]);
    pods.create(&PostParams::default(), &pod("after", "web"))
        .await
        .expect("pod");
    match events
        .try_next()
        .await
        .expect("watcher")
        .expect("stream open")
    {
        watcher::Event::Apply(p) => assert_eq!(p.metadata.name.as_deref(), Some("after")),
        other => panic!("unexpected {other:?}"),
    }
    pods.delete("before", &DeleteParams::default())
        .await
        .expect("delete");
    match events
        .try_next()
        .await
        .expect("watcher")
        .expect("stream open")
    {
        watcher::Event::Delete(p) => assert_eq!(p.metadata.name.as_deref(), Some("before")),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn runtime_watcher_lists_then_watches() {
    bounded(runtime_watcher_sees_changes(watcher::Config::default())).await;
}

#[tokio::test]
async fn runtime_watcher_with_streaming_lists() {
    bounded(runtime_watcher_sees_changes(
        watcher::Config::default().streaming_lists(),
    ))
    .await;
}

#[tokio::test]
async fn recorder_events_are_listed_through_both_event_apis() {
    bounded(async {
        use kube::Resource;
        use kube::runtime::events::{Event, EventType, Recorder, Reporter};
        let (_standin, client) = standin().await;
        let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
        let owner: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": "rc"}})).expect("cm");
        let owner = cms
            .create(&PostParams::default(), &owner)
            .await
            .expect("owner");
        let reporter = Reporter {
            controller: "roomcast-operator".into(),
            instance: None,
        };
        let recorder = Recorder::new(client.clone(), reporter);
        let event = Event {
            type_: EventType::Normal,
            reason: "ScaledUp".into(),
            note: Some("2 -> 3".into()),
            action: "Scale".into(),
            secondary: None,
        };
        let reference = owner.object_ref(&());
        recorder
            .publish(&event, &reference)
            .await
            .expect("first publish");
        recorder
            .publish(&event, &reference)
            .await
            .expect("repeat publish (series patch)");

        let new_api: Api<k8s_openapi::api::events::v1::Event> =
            Api::default_namespaced(client.clone());
        let events = new_api
            .list(&ListParams::default())
            .await
            .expect("events.k8s.io list")
            .items;
        assert_eq!(events.len(), 1, "a repeat is a series on the same event");
        assert_eq!(events[0].reason.as_deref(), Some("ScaledUp"));
        assert!(events[0].series.is_some());

        let core_api: Api<k8s_openapi::api::core::v1::Event> = Api::default_namespaced(client);
        let by_object = ListParams::default().fields("involvedObject.name=rc");
        let core = core_api.list(&by_object).await.expect("core list").items;
        assert_eq!(core.len(), 1);
        assert_eq!(core[0].message.as_deref(), Some("2 -> 3"));
        assert_eq!(core[0].involved_object.name.as_deref(), Some("rc"));
    })
    .await;
}

/// Names delivered by one (re)list of a kube-runtime watcher, from `Init` to `InitDone`.
async fn initial_names<S>(events: &mut S) -> Vec<String>
where
    S: futures_util::Stream<Item = Result<watcher::Event<Pod>, watcher::Error>> + Unpin,
{
    let mut names = Vec::new();
    loop {
        match events
            .try_next()
            .await
            .expect("watcher")
            .expect("stream open")
        {
            watcher::Event::Init => {}
            watcher::Event::InitApply(p) => names.push(p.metadata.name.unwrap_or_default()),
            watcher::Event::InitDone => return names,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The next watcher event that is not part of a (re)list.
async fn next_live_event<S>(events: &mut S) -> watcher::Event<Pod>
where
    S: futures_util::Stream<Item = Result<watcher::Event<Pod>, watcher::Error>> + Unpin,
{
    loop {
        match events
            .try_next()
            .await
            .expect("watcher")
            .expect("stream open")
        {
            watcher::Event::Init | watcher::Event::InitApply(_) | watcher::Event::InitDone => {}
            live => return live,
        }
    }
}

#[tokio::test]
async fn runtime_watcher_survives_cut_watches_and_compacted_history() {
    bounded(async {
        let (standin, client) = standin().await;
        let pods: Api<Pod> = Api::default_namespaced(client);
        let mut events = watcher::watcher(pods.clone(), watcher::Config::default()).boxed();
        assert!(initial_names(&mut events).await.is_empty());

        let create_pod = |name: &'static str| {
            let pods = pods.clone();
            async move {
                pods.create(&PostParams::default(), &pod(name, "web"))
                    .await
                    .expect("pod");
                name
            }
        };
        let one = create_pod("one").await;
        match next_live_event(&mut events).await {
            watcher::Event::Apply(p) => assert_eq!(p.metadata.name.as_deref(), Some(one)),
            other => panic!("unexpected {other:?}"),
        }

        // The open watch ends; the watcher re-watches from its last resourceVersion.
        standin.end_watches();
        let two = create_pod("two").await;
        match next_live_event(&mut events).await {
            watcher::Event::Apply(p) => assert_eq!(p.metadata.name.as_deref(), Some(two)),
            other => panic!("unexpected {other:?}"),
        }

        // History gone too: the re-watch gets a 410 ERROR event, the watcher relists and carries on.
        standin.compact_history();
        standin.end_watches();
        match events.try_next().await {
            Err(watcher::Error::WatchError(status)) => assert_eq!(status.code, 410),
            other => panic!("expected the 410, got {other:?}"),
        }
        let relisted = initial_names(&mut events).await;
        assert_eq!(relisted, ["one", "two"]);
        let three = create_pod("three").await;
        match next_live_event(&mut events).await {
            watcher::Event::Apply(p) => assert_eq!(p.metadata.name.as_deref(), Some(three)),
            other => panic!("unexpected {other:?}"),
        }
    })
    .await;
}
