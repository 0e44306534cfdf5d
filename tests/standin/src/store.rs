//! The stand-in's state: every object, the global resourceVersion counter, the bounded event
//! history watches resume from, and the verbs that change them (create, replace, patch, delete with
//! ownerReference cascade, namespace and CRD cleanup).
//!
//! The store is synchronous and lives behind one mutex; every write takes the next resourceVersion
//! and publishes its watch event while holding it, so watchers see events in resourceVersion order.

use crate::clock;
use crate::errors::ApiError;
use crate::fields::{ManagedFields, Writer};
use crate::kinds::{ResourceKind, builtin_kinds, kinds_from_crd};
use crate::lifecycle::{self, Stamp, Subresource};
use crate::patch;
use crate::selector::{FieldSelector, LabelSelector};
use crate::versions;
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use tokio::sync::broadcast;

/// Watch event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Object created (or entered a watch's selection).
    Added,
    /// Object changed.
    Modified,
    /// Object removed (or left a watch's selection).
    Deleted,
}

impl EventType {
    /// The wire name (`ADDED`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change, as kept in the history and sent to watchers.
#[derive(Debug, Clone)]
pub struct Event {
    /// resourceVersion of the change.
    pub rv: u64,
    /// What happened.
    pub event_type: EventType,
    /// (group, plural) of the object.
    pub type_key: (String, String),
    /// The object after the change (for deletions: its last state, with the deletion's resourceVersion).
    pub object: Arc<Value>,
    /// The object before a modification, so selector-filtered watches can see it leave their selection.
    pub previous: Option<Arc<Value>>,
}

/// The events a new watch sends first, and the receiver for what follows.
pub type WatchStart = (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>);

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchFrom {
    /// Synthetic `ADDED` events for every current object, then live events.
    Snapshot,
    /// Every event after this resourceVersion.
    After(u64),
}

/// Patch body formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json` (approximated, see `patch`).
    Strategic,
    /// `application/json-patch+json`.
    Json,
    /// `application/apply-patch+yaml`: server-side apply (approximated, see `fields`).
    Apply,
}

/// A patch document and its format.
#[derive(Debug, Clone, Copy)]
pub struct PatchRequest<'a> {
    /// The format (from the request's content type).
    pub kind: PatchKind,
    /// The document.
    pub body: &'a Value,
}

/// Deletion propagation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Dependents are deleted (immediately, as part of the request).
    Cascade,
    /// Dependents lose their ownerReference and stay.
    Orphan,
}

/// Who writes, for `managedFields`.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Field manager name.
    pub manager: String,
    /// Server-side apply `force`.
    pub force: bool,
    /// `dryRun=All`: validate and compute, but change nothing.
    pub dry_run: bool,
}

type ObjectKey = (String, String);
type TypeKey = (String, String);

/// All objects plus the watch history.
pub struct Store {
    rv: u64,
    builtins: Vec<ResourceKind>,
    custom: Vec<ResourceKind>,
    objects: BTreeMap<TypeKey, BTreeMap<ObjectKey, Value>>,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    compacted: u64,
    events: broadcast::Sender<Arc<Event>>,
    cuts: tokio::sync::watch::Sender<u64>,
}

fn meta_str<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object
        .get("metadata")
        .and_then(|m| m.get(key))
        .and_then(Value::as_str)
}

fn object_key(object: &Value) -> ObjectKey {
    (
        meta_str(object, "namespace")
            .unwrap_or_default()
            .to_string(),
        meta_str(object, "name").unwrap_or_default().to_string(),
    )
}

/// The object without the fields that change on every write, to detect no-op writes.
fn comparable(object: &Value) -> Value {
    let mut v = object.clone();
    if let Some(Value::Object(m)) = v.get_mut("metadata") {
        m.remove("managedFields");
        m.remove("resourceVersion");
    }
    v
}

fn rv_of(object: &Value) -> Option<&str> {
    meta_str(object, "resourceVersion").filter(|s| !s.is_empty())
}

impl Store {
    /// An empty store with the default namespaces; `history_limit` bounds the watch history.
    pub fn new(history_limit: usize) -> Self {
        let (events, _) = broadcast::channel(4096);
        let (cuts, _) = tokio::sync::watch::channel(0);
        let mut store = Self {
            rv: 0,
            builtins: builtin_kinds(),
            custom: Vec::new(),
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: 0,
            events,
            cuts,
        };
        let namespaces = store
            .builtins
            .iter()
            .find(|k| k.plural == "namespaces")
            .cloned();
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            if let Some(kind) = &namespaces {
                let opts = WriteOptions {
                    manager: "kube-apiserver".into(),
                    force: false,
                    dry_run: false,
                };
                // Cannot fail: the names are valid and the store is empty.
                let _ = store.create(kind, None, json!({"metadata": {"name": ns}}), &opts);
            }
        }
        store
    }

    /// The current (latest) resourceVersion.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// Ends every open watch (clients resume from their last resourceVersion), as when an API
    /// server restarts or a load balancer drops connections.
    pub fn cut_watches(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }

    /// How many watch streams are open.
    pub fn open_watches(&self) -> usize {
        self.events.receiver_count()
    }

    /// A signal that changes when [`Store::cut_watches`] is called.
    pub fn watch_cuts(&self) -> tokio::sync::watch::Receiver<u64> {
        self.cuts.subscribe()
    }

    /// Forgets the whole event history and moves the resourceVersion on (as unrelated writes
    /// would): resuming a watch from any earlier resourceVersion then gets 410 Expired, and
    /// clients must relist.
    pub fn compact(&mut self) {
        self.history.clear();
        self.rv += 1;
        self.compacted = self.rv;
    }

    /// Every served resource type, built-in and custom.
    pub fn kinds(&self) -> Vec<ResourceKind> {
        self.builtins
            .iter()
            .chain(self.custom.iter())
            .cloned()
            .collect()
    }

    /// The resource type served at (group, version, plural).
    pub fn find_kind(&self, group: &str, version: &str, plural: &str) -> Option<ResourceKind> {
        self.builtins
            .iter()
            .chain(self.custom.iter())
            .find(|k| k.group == group && k.version == version && k.plural == plural)
            .cloned()
    }

    fn table(&self, kind: &ResourceKind) -> Option<&BTreeMap<ObjectKey, Value>> {
        self.objects.get(&kind.storage_key())
    }

    fn lookup(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<&Value, ApiError> {
        let key = (namespace.unwrap_or_default().to_string(), name.to_string());
        self.table(kind)
            .and_then(|t| t.get(&key))
            .ok_or_else(|| ApiError::not_found(&kind.group, &kind.plural, name))
    }

    /// An object as served at this kind's version.
    fn present(kind: &ResourceKind, object: &Value) -> Value {
        versions::present(kind, object)
    }

    /// GET one object (or its scale view).
    pub fn get(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        name: &str,
        sub: Subresource,
    ) -> Result<Value, ApiError> {
        let object = self.lookup(kind, namespace, name)?;
        match (sub, &kind.scale) {
            (Subresource::Scale, Some(paths)) => Ok(lifecycle::to_scale(paths, object)),
            (Subresource::Scale, None) => {
                Err(ApiError::no_route(&format!("{}/scale", kind.plural)))
            }
            _ => Ok(Self::present(kind, object)),
        }
    }

    /// LIST objects, in one namespace or all.
    pub fn list(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Value {
        let items: Vec<Value> = self
            .table(kind)
            .into_iter()
            .flat_map(|t| t.values())
            .filter(|o| namespace.is_none_or(|ns| meta_str(o, "namespace") == Some(ns)))
            .map(|o| Self::present(kind, o))
            .filter(|o| labels.matches(o) && fields.matches(o))
            .collect();
        json!({
            "kind": format!("{}List", kind.kind),
            "apiVersion": kind.api_version(),
            "metadata": {"resourceVersion": self.rv.to_string()},
            "items": items,
        })
    }

    fn emit(
        &mut self,
        event_type: EventType,
        type_key: TypeKey,
        object: Value,
        previous: Option<Value>,
    ) {
        let event = Arc::new(Event {
            rv: self.rv,
            event_type,
            type_key,
            object: Arc::new(object),
            previous: previous.map(Arc::new),
        });
        self.history.push_back(Arc::clone(&event));
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted = dropped.rv;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(event);
    }

    fn writer<'a>(
        opts: &'a WriteOptions,
        sub: Subresource,
        api_version: &'a str,
        now: &'a str,
    ) -> Writer<'a> {
        Writer {
            manager: &opts.manager,
            subresource: sub.as_str(),
            api_version,
            time: now,
        }
    }

    fn check_namespace_exists(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
    ) -> Result<(), ApiError> {
        let Some(ns) = namespace.filter(|_| kind.namespaced) else {
            return Ok(());
        };
        let exists = self
            .objects
            .get(&(String::new(), "namespaces".to_string()))
            .is_some_and(|t| t.contains_key(&(String::new(), ns.to_string())));
        if exists {
            Ok(())
        } else {
            Err(ApiError::not_found("", "namespaces", ns))
        }
    }

    fn validate_crd(kind: &ResourceKind, object: &Value) -> Result<(), ApiError> {
        if kind.group != "apiextensions.k8s.io" || kind.plural != "customresourcedefinitions" {
            return Ok(());
        }
        let name = meta_str(object, "name").unwrap_or_default();
        let invalid = |m: String| ApiError::invalid(&kind.group, &kind.plural, name, m);
        kinds_from_crd(object).map_err(invalid)?;
        let group = object
            .pointer("/spec/group")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let plural = object
            .pointer("/spec/names/plural")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if name != format!("{plural}.{group}") {
            return Err(invalid(format!(
                "metadata.name: Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"
            )));
        }
        Ok(())
    }

    fn refresh_custom_kinds(&mut self) {
        let crds = self.objects.get(&(
            "apiextensions.k8s.io".to_string(),
            "customresourcedefinitions".to_string(),
        ));
        self.custom = crds
            .into_iter()
            .flat_map(|t| t.values())
            .filter_map(|crd| kinds_from_crd(crd).ok())
            .flatten()
            .collect();
    }

    fn is_crd(kind: &ResourceKind) -> bool {
        kind.group == "apiextensions.k8s.io" && kind.plural == "customresourcedefinitions"
    }

    fn insert_new(&mut self, kind: &ResourceKind, mut object: Value) -> Value {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects
            .entry(kind.storage_key())
            .or_default()
            .insert(object_key(&object), object.clone());
        self.emit(EventType::Added, kind.storage_key(), object.clone(), None);
        if Self::is_crd(kind) {
            self.refresh_custom_kinds();
        }
        Self::present(kind, &object)
    }

    /// CREATE (POST).
    pub fn create(
        &mut self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        self.check_namespace_exists(kind, namespace)?;
        let stamp = Stamp {
            uid: clock::uid(),
            now: clock::now(),
            suffix: clock::name_suffix(5),
        };
        let mut object = lifecycle::prepare_create(kind, namespace, body, &stamp)?;
        Self::validate_crd(kind, &object)?;
        let name = meta_str(&object, "name").unwrap_or_default().to_string();
        if self
            .lookup(kind, namespace.filter(|_| kind.namespaced), &name)
            .is_ok()
        {
            return Err(ApiError::already_exists(&kind.group, &kind.plural, &name));
        }
        let api_version = kind.api_version();
        let mut managed = ManagedFields::default();
        managed.record_update(
            &Self::writer(opts, Subresource::Main, &api_version, &stamp.now),
            None,
            &object,
        );
        object["metadata"]["managedFields"] = managed.to_json();
        if opts.dry_run {
            return Ok(object);
        }
        Ok(self.insert_new(kind, object))
    }

    /// Stores an updated object (a no-op write changes nothing and emits nothing).
    fn commit(
        &mut self,
        kind: &ResourceKind,
        old: &Value,
        mut new: Value,
        managed: &ManagedFields,
        dry_run: bool,
    ) -> Value {
        if comparable(old) == comparable(&new) {
            return Self::present(kind, old);
        }
        new["metadata"]["managedFields"] = managed.to_json();
        if dry_run {
            return Self::present(kind, &new);
        }
        let finalizers_done = new
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if new.pointer("/metadata/deletionTimestamp").is_some() && finalizers_done {
            return self.remove(kind.storage_key(), new, Propagation::Cascade);
        }
        self.rv += 1;
        new["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects
            .entry(kind.storage_key())
            .or_default()
            .insert(object_key(&new), new.clone());
        self.emit(
            EventType::Modified,
            kind.storage_key(),
            new.clone(),
            Some(old.clone()),
        );
        if Self::is_crd(kind) {
            self.refresh_custom_kinds();
        }
        Self::present(kind, &new)
    }

    fn check_rv(
        kind: &ResourceKind,
        name: &str,
        requested: Option<&str>,
        current: &Value,
    ) -> Result<(), ApiError> {
        match requested {
            Some(rv) if Some(rv) != rv_of(current) => {
                Err(ApiError::conflict(&kind.group, &kind.plural, name))
            }
            _ => Ok(()),
        }
    }

    /// REPLACE (PUT) of the object, its status or its scale.
    pub fn replace(
        &mut self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        name: &str,
        sub: Subresource,
        mut body: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let old = Self::present(kind, self.lookup(kind, namespace, name)?);
        let new = if sub == Subresource::Scale {
            let paths = kind
                .scale
                .as_ref()
                .ok_or_else(|| ApiError::no_route(&format!("{}/scale", kind.plural)))?;
            Self::check_rv(kind, name, rv_of(&body), &old)?;
            lifecycle::from_scale(paths, &old, &body)
                .map_err(|m| ApiError::invalid(&kind.group, &kind.plural, name, m))?
        } else {
            lifecycle::check_type(kind, &mut body)?;
            lifecycle::check_namespace(kind, namespace, &mut body)?;
            if meta_str(&body, "name").is_some_and(|n| n != name) {
                return Err(ApiError::bad_request(
                    "the name of the object does not match the name on the URL",
                ));
            }
            Self::check_rv(kind, name, rv_of(&body), &old)?;
            body
        };
        self.finish_update(kind, &old, new, sub, opts, None)
    }

    fn finish_update(
        &mut self,
        kind: &ResourceKind,
        old: &Value,
        new: Value,
        sub: Subresource,
        opts: &WriteOptions,
        managed: Option<ManagedFields>,
    ) -> Result<Value, ApiError> {
        let new = lifecycle::prepare_update(kind, old, new, sub);
        Self::validate_crd(kind, &new)?;
        let managed = match managed {
            Some(m) => m,
            None => {
                let (api_version, now) = (kind.api_version(), clock::now());
                let mut m = ManagedFields::from_object(old);
                m.record_update(
                    &Self::writer(opts, sub, &api_version, &now),
                    Some(old),
                    &new,
                );
                m
            }
        };
        Ok(self.commit(kind, old, new, &managed, opts.dry_run))
    }

    /// PATCH of the object, its status or its scale. Returns the object and whether it was created
    /// (server-side apply of a missing object creates it).
    pub fn patch(
        &mut self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        name: &str,
        sub: Subresource,
        request: PatchRequest<'_>,
        opts: &WriteOptions,
    ) -> Result<(Value, bool), ApiError> {
        let PatchRequest {
            kind: patch_kind,
            body,
        } = request;
        if patch_kind == PatchKind::Strategic && kind.custom {
            return Err(ApiError::unsupported_media_type(
                "application/strategic-merge-patch+json",
            ));
        }
        let old = match self.lookup(kind, namespace, name) {
            Ok(o) => Self::present(kind, o),
            Err(_) if patch_kind == PatchKind::Apply && sub == Subresource::Main => {
                return self
                    .apply_create(kind, namespace, name, body, opts)
                    .map(|o| (o, true));
            }
            Err(e) => return Err(e),
        };
        let scale_paths = kind.scale.as_ref();
        let view = match (sub, scale_paths) {
            (Subresource::Scale, Some(paths)) => lifecycle::to_scale(paths, &old),
            (Subresource::Scale, None) => {
                return Err(ApiError::no_route(&format!("{}/scale", kind.plural)));
            }
            _ => old.clone(),
        };
        let bad = |m: String| ApiError::bad_request(m);
        let mut managed = None;
        let patched = match patch_kind {
            PatchKind::Merge => {
                let mut v = view.clone();
                patch::merge(&mut v, body);
                v
            }
            PatchKind::Strategic => {
                let mut v = view.clone();
                patch::strategic_merge(&mut v, body);
                v
            }
            PatchKind::Json => {
                let mut v = view.clone();
                patch::json_patch(&mut v, body)
                    .map_err(|m| ApiError::invalid(&kind.group, &kind.plural, name, m))?;
                v
            }
            PatchKind::Apply => {
                let config = Self::apply_config(kind, sub, body)?;
                if meta_str(&config, "name").is_some_and(|n| n != name) {
                    return Err(bad(
                        "the name of the object does not match the name on the URL".into(),
                    ));
                }
                let (api_version, now) = (kind.api_version(), clock::now());
                let mut m = ManagedFields::from_object(&view);
                let writer = Self::writer(opts, sub, &api_version, &now);
                let merged = m
                    .apply(&writer, &view, &config, opts.force)
                    .map_err(|fields| {
                        ApiError::apply_conflict(&kind.group, &kind.plural, name, &fields)
                    })?;
                managed = Some(m);
                merged
            }
        };
        if !patched.is_object() {
            return Err(bad("the patch must result in a JSON object".into()));
        }
        Self::check_rv(kind, name, rv_of(&patched), &view)?;
        let new = match (sub, scale_paths) {
            (Subresource::Scale, Some(paths)) => lifecycle::from_scale(paths, &old, &patched)
                .map_err(|m| ApiError::invalid(&kind.group, &kind.plural, name, m))?,
            _ => patched,
        };
        self.finish_update(kind, &old, new, sub, opts, managed)
            .map(|o| (o, false))
    }

    /// What of an apply config a subresource write may touch.
    fn apply_config(
        kind: &ResourceKind,
        sub: Subresource,
        body: &Value,
    ) -> Result<Value, ApiError> {
        let mut config = body.clone();
        lifecycle::check_type(kind, &mut config)?;
        if let Value::Object(m) = &mut config {
            if kind.status_subresource && sub == Subresource::Main {
                m.remove("status");
            }
            if sub == Subresource::Status {
                m.retain(|k, _| {
                    matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status")
                });
                if let Some(Value::Object(meta)) = m.get_mut("metadata") {
                    meta.retain(|k, _| {
                        matches!(k.as_str(), "name" | "namespace" | "resourceVersion")
                    });
                }
            }
        }
        Ok(config)
    }

    fn apply_create(
        &mut self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        name: &str,
        body: &Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let mut config = Self::apply_config(kind, Subresource::Main, body)?;
        lifecycle::check_namespace(kind, namespace, &mut config)?;
        if meta_str(&config, "name").is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        if rv_of(&config).is_some() {
            return Err(ApiError::not_found(&kind.group, &kind.plural, name));
        }
        config["metadata"]["name"] = json!(name);
        self.check_namespace_exists(kind, namespace)?;
        let stamp = Stamp {
            uid: clock::uid(),
            now: clock::now(),
            suffix: String::new(),
        };
        let api_version = kind.api_version();
        let mut managed = ManagedFields::default();
        let writer = Self::writer(opts, Subresource::Main, &api_version, &stamp.now);
        let merged = managed
            .apply(&writer, &json!({}), &config, opts.force)
            .map_err(|fields| ApiError::apply_conflict(&kind.group, &kind.plural, name, &fields))?;
        let mut object = lifecycle::prepare_create(kind, namespace, merged, &stamp)?;
        Self::validate_crd(kind, &object)?;
        object["metadata"]["managedFields"] = managed.to_json();
        if opts.dry_run {
            return Ok(object);
        }
        Ok(self.insert_new(kind, object))
    }

    /// DELETE one object. Objects with finalizers get a deletionTimestamp and stay until the last
    /// finalizer is removed; everything else goes at once, dependents with it.
    pub fn delete(
        &mut self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        name: &str,
        propagation: Propagation,
        preconditions: &Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let object = Self::present(kind, self.lookup(kind, namespace, name)?);
        if let Some(uid) = preconditions.get("uid").and_then(Value::as_str)
            && meta_str(&object, "uid") != Some(uid)
        {
            return Err(ApiError::conflict(&kind.group, &kind.plural, name));
        }
        Self::check_rv(
            kind,
            name,
            preconditions.get("resourceVersion").and_then(Value::as_str),
            &object,
        )?;
        if dry_run {
            return Ok(Self::present(kind, &object));
        }
        let has_finalizers = object
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if object.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(Self::present(kind, &object));
            }
            let mut marked = object.clone();
            marked["metadata"]["deletionTimestamp"] = json!(clock::now());
            marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            let managed = ManagedFields::from_object(&object);
            return Ok(self.commit(kind, &object, marked, &managed, false));
        }
        Ok(self.remove(kind.storage_key(), object, propagation))
    }

    /// DELETE a collection: every matching object in scope.
    pub fn delete_collection(
        &mut self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        propagation: Propagation,
    ) -> Value {
        let list = self.list(kind, namespace, labels, fields);
        let mut deleted = Vec::new();
        for item in list["items"].as_array().into_iter().flatten() {
            let (ns, name) = object_key(item);
            let ns = Some(ns.as_str()).filter(|n| !n.is_empty());
            if let Ok(o) = self.delete(kind, ns, &name, propagation, &Value::Null, false) {
                deleted.push(o);
            }
        }
        json!({"kind": format!("{}List", kind.kind), "apiVersion": kind.api_version(), "metadata": {"resourceVersion": self.rv.to_string()}, "items": deleted})
    }

    /// Removes an object for good, then what depended on it. Returns it as last seen.
    fn remove(&mut self, type_key: TypeKey, mut object: Value, propagation: Propagation) -> Value {
        let key = object_key(&object);
        if self
            .objects
            .get_mut(&type_key)
            .and_then(|t| t.remove(&key))
            .is_none()
        {
            return object;
        }
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.emit(EventType::Deleted, type_key.clone(), object.clone(), None);
        let uid = meta_str(&object, "uid").unwrap_or_default().to_string();
        self.remove_dependents(&uid, propagation);
        match (type_key.0.as_str(), type_key.1.as_str()) {
            ("", "namespaces") => self.remove_namespace_contents(&key.1),
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                let group = object
                    .pointer("/spec/group")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let plural = object
                    .pointer("/spec/names/plural")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                self.remove_all((group, plural), |_| true);
                self.refresh_custom_kinds();
            }
            _ => {}
        }
        object
    }

    fn remove_all(&mut self, type_key: TypeKey, pick: impl Fn(&Value) -> bool) {
        let doomed: Vec<Value> = self
            .objects
            .get(&type_key)
            .into_iter()
            .flat_map(|t| t.values())
            .filter(|o| pick(o))
            .cloned()
            .collect();
        for o in doomed {
            self.remove(type_key.clone(), o, Propagation::Cascade);
        }
    }

    fn remove_namespace_contents(&mut self, namespace: &str) {
        let types: Vec<TypeKey> = self.objects.keys().cloned().collect();
        for t in types {
            self.remove_all(t, |o| meta_str(o, "namespace") == Some(namespace));
        }
    }

    fn remove_dependents(&mut self, owner_uid: &str, propagation: Propagation) {
        if owner_uid.is_empty() {
            return;
        }
        let owned_by = |o: &Value| {
            o.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| {
                    refs.iter()
                        .any(|r| r.get("uid").and_then(Value::as_str) == Some(owner_uid))
                })
        };
        let dependents: Vec<(TypeKey, Value)> = self
            .objects
            .iter()
            .flat_map(|(t, objs)| {
                objs.values()
                    .filter(|o| owned_by(o))
                    .map(move |o| (t.clone(), o.clone()))
            })
            .collect();
        for (type_key, dependent) in dependents {
            match propagation {
                Propagation::Cascade => {
                    self.remove(type_key, dependent, Propagation::Cascade);
                }
                Propagation::Orphan => {
                    let mut orphan = dependent.clone();
                    if let Some(Value::Array(refs)) =
                        orphan.pointer_mut("/metadata/ownerReferences")
                    {
                        refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid));
                    }
                    self.rv += 1;
                    orphan["metadata"]["resourceVersion"] = json!(self.rv.to_string());
                    self.objects
                        .entry(type_key.clone())
                        .or_default()
                        .insert(object_key(&orphan), orphan.clone());
                    self.emit(EventType::Modified, type_key, orphan, Some(dependent));
                }
            }
        }
    }

    /// Starts a watch: the events to send first, and a receiver for what follows.
    ///
    /// Fails with 410 Expired when `After(rv)` reaches back past the retained history.
    pub fn watch(&self, kind: &ResourceKind, from: WatchFrom) -> Result<WatchStart, ApiError> {
        let rx = self.events.subscribe();
        let first = match from {
            WatchFrom::Snapshot => self
                .table(kind)
                .into_iter()
                .flat_map(|t| t.values())
                .map(|o| {
                    Arc::new(Event {
                        rv: rv_of(o).and_then(|r| r.parse().ok()).unwrap_or(self.rv),
                        event_type: EventType::Added,
                        type_key: kind.storage_key(),
                        object: Arc::new(o.clone()),
                        previous: None,
                    })
                })
                .collect(),
            WatchFrom::After(rv) => {
                if rv < self.compacted {
                    return Err(ApiError::expired(rv, self.compacted + 1));
                }
                self.history
                    .iter()
                    .filter(|e| e.rv > rv && e.type_key == kind.storage_key())
                    .cloned()
                    .collect()
            }
        };
        Ok((first, rx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(store: &Store, group: &str, plural: &str) -> ResourceKind {
        store
            .kinds()
            .into_iter()
            .find(|k| k.group == group && k.plural == plural)
            .expect("kind")
    }

    fn opts() -> WriteOptions {
        WriteOptions {
            manager: "test".into(),
            force: false,
            dry_run: false,
        }
    }

    fn cm(name: &str) -> Value {
        json!({"metadata": {"name": name}, "data": {"a": "1"}})
    }

    #[test]
    fn default_namespaces_exist() {
        let store = Store::new(100);
        let ns = kind(&store, "", "namespaces");
        assert!(store.get(&ns, None, "default", Subresource::Main).is_ok());
    }

    #[test]
    fn create_get_conflict_and_missing_namespace() {
        let mut store = Store::new(100);
        let k = kind(&store, "", "configmaps");
        let created = store
            .create(&k, Some("default"), cm("a"), &opts())
            .expect("created");
        let rv: u64 = created["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("rv");
        assert_eq!(rv, store.rv());
        assert_eq!(
            store
                .create(&k, Some("default"), cm("a"), &opts())
                .map_err(|e| e.reason),
            Err("AlreadyExists")
        );
        assert_eq!(
            store
                .create(&k, Some("nope"), cm("a"), &opts())
                .map_err(|e| e.code),
            Err(404)
        );
    }

    #[test]
    fn stale_replace_conflicts_and_noop_keeps_resource_version() {
        let mut store = Store::new(100);
        let k = kind(&store, "", "configmaps");
        let created = store
            .create(&k, Some("default"), cm("a"), &opts())
            .expect("created");
        let same = store
            .replace(
                &k,
                Some("default"),
                "a",
                Subresource::Main,
                created.clone(),
                &opts(),
            )
            .expect("no-op");
        assert_eq!(
            same["metadata"]["resourceVersion"],
            created["metadata"]["resourceVersion"]
        );
        let mut changed = created.clone();
        changed["data"]["a"] = json!("2");
        store
            .replace(
                &k,
                Some("default"),
                "a",
                Subresource::Main,
                changed.clone(),
                &opts(),
            )
            .expect("updated");
        changed["data"]["a"] = json!("3");
        let stale = store.replace(
            &k,
            Some("default"),
            "a",
            Subresource::Main,
            changed,
            &opts(),
        );
        assert_eq!(stale.map_err(|e| e.reason), Err("Conflict"));
    }

    #[test]
    fn deleting_an_owner_cascades_and_orphan_keeps_dependents() {
        let mut store = Store::new(100);
        let k = kind(&store, "", "configmaps");
        let owner = store
            .create(&k, Some("default"), cm("owner"), &opts())
            .expect("owner");
        let uid = owner["metadata"]["uid"].clone();
        let child = json!({"metadata": {"name": "child", "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}]}});
        store
            .create(&k, Some("default"), child.clone(), &opts())
            .expect("child");
        let mut grandchild = child.clone();
        grandchild["metadata"]["name"] = json!("grandchild");
        grandchild["metadata"]["ownerReferences"][0]["uid"] = store
            .get(&k, Some("default"), "child", Subresource::Main)
            .expect("child")["metadata"]["uid"]
            .clone();
        store
            .create(&k, Some("default"), grandchild, &opts())
            .expect("grandchild");
        store
            .delete(
                &k,
                Some("default"),
                "owner",
                Propagation::Cascade,
                &Value::Null,
                false,
            )
            .expect("deleted");
        assert!(
            store
                .get(&k, Some("default"), "child", Subresource::Main)
                .is_err()
        );
        assert!(
            store
                .get(&k, Some("default"), "grandchild", Subresource::Main)
                .is_err()
        );

        let owner = store
            .create(&k, Some("default"), cm("owner"), &opts())
            .expect("owner");
        let mut child = child;
        child["metadata"]["ownerReferences"][0]["uid"] = owner["metadata"]["uid"].clone();
        store
            .create(&k, Some("default"), child, &opts())
            .expect("child");
        store
            .delete(
                &k,
                Some("default"),
                "owner",
                Propagation::Orphan,
                &Value::Null,
                false,
            )
            .expect("deleted");
        let orphan = store
            .get(&k, Some("default"), "child", Subresource::Main)
            .expect("kept");
        assert_eq!(orphan["metadata"]["ownerReferences"], json!([]));
    }

    #[test]
    fn finalizers_delay_removal_until_cleared() {
        let mut store = Store::new(100);
        let k = kind(&store, "", "configmaps");
        let mut body = cm("f");
        body["metadata"]["finalizers"] = json!(["x/y"]);
        store
            .create(&k, Some("default"), body, &opts())
            .expect("created");
        let marked = store
            .delete(
                &k,
                Some("default"),
                "f",
                Propagation::Cascade,
                &Value::Null,
                false,
            )
            .expect("marked");
        assert!(marked["metadata"]["deletionTimestamp"].is_string());
        store
            .patch(
                &k,
                Some("default"),
                "f",
                Subresource::Main,
                PatchRequest {
                    kind: PatchKind::Merge,
                    body: &json!({"metadata": {"finalizers": null}}),
                },
                &opts(),
            )
            .expect("patched");
        assert!(
            store
                .get(&k, Some("default"), "f", Subresource::Main)
                .is_err()
        );
    }

    #[test]
    fn namespace_and_crd_deletion_remove_contents() {
        let mut store = Store::new(100);
        let ns = kind(&store, "", "namespaces");
        let k = kind(&store, "", "configmaps");
        store
            .create(&ns, None, json!({"metadata": {"name": "tmp"}}), &opts())
            .expect("ns");
        store.create(&k, Some("tmp"), cm("a"), &opts()).expect("cm");
        store
            .delete(&ns, None, "tmp", Propagation::Cascade, &Value::Null, false)
            .expect("deleted");
        assert!(store.get(&k, Some("tmp"), "a", Subresource::Main).is_err());

        let crds = kind(&store, "apiextensions.k8s.io", "customresourcedefinitions");
        let crd = json!({"metadata": {"name": "widgets.example.com"}, "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"}, "versions": [{"name": "v1", "served": true, "storage": true}]}});
        store.create(&crds, None, crd, &opts()).expect("crd");
        let widgets = store
            .find_kind("example.com", "v1", "widgets")
            .expect("served once the CRD exists");
        store
            .create(
                &widgets,
                Some("default"),
                json!({"metadata": {"name": "w"}}),
                &opts(),
            )
            .expect("widget");
        store
            .delete(
                &crds,
                None,
                "widgets.example.com",
                Propagation::Cascade,
                &Value::Null,
                false,
            )
            .expect("deleted");
        assert!(store.find_kind("example.com", "v1", "widgets").is_none());
        assert!(
            store
                .get(&widgets, Some("default"), "w", Subresource::Main)
                .is_err()
        );
    }

    #[test]
    fn watch_resumes_from_history_or_expires() {
        let mut store = Store::new(2);
        let k = kind(&store, "", "configmaps");
        let start = store.rv();
        for n in ["a", "b", "c"] {
            store
                .create(&k, Some("default"), cm(n), &opts())
                .expect("created");
        }
        assert_eq!(
            store
                .watch(&k, WatchFrom::After(start))
                .map(|_| ())
                .map_err(|e| e.code),
            Err(410)
        );
        let (events, _) = store
            .watch(&k, WatchFrom::After(start + 1))
            .expect("in history");
        assert_eq!(events.len(), 2);
        let (snapshot, _) = store.watch(&k, WatchFrom::Snapshot).expect("snapshot");
        assert_eq!(snapshot.len(), 3);
    }
}
