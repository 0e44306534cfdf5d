//! The controller: watches `RealtimeCluster`s and the objects they own, runs one reconcile
//! per change or sync period, backs off per object on errors (exponentially, reset by the
//! next success) and forgets a deleted cluster's series and backoff.
//!
//! Where things happen: [`reconcile`] orchestrates one pass (validate, sync, apply, status,
//! events); `sync` decides replicas (builtin autoscaler and drain-first scale-down, or the
//! `scale` subresource in External mode); `status` assembles the status from what the sync
//! settled on (pure); `writes` holds the API writes.

mod plan;
mod reconcile;
mod status;
mod sync;
mod writes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::SignedDuration;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::controller::{self as runtime, Action, Config as ControllerConfig, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

use crate::admin_client::AdminClient;
use crate::crd::RealtimeCluster;
use crate::desired::{Defaults, DesiredError};
use crate::events::Events;
use crate::operator_metrics::OperatorMetrics;
use crate::stored;

/// Field manager of every write.
pub const FIELD_MANAGER: &str = "roomcast-operator";
/// Requeue while a scale-down waits for victims to accept their drain.
pub const DRAIN_RETRY: Duration = Duration::from_secs(5);
/// First error backoff; doubles per consecutive failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest error backoff.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Applied objects whose resourceVersion is remembered for the apply log.
const MAX_REMEMBERED_OBJECTS: usize = 4096;

/// Knobs of the reconciler.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Object defaults (image).
    pub defaults: Defaults,
    /// Resync and autoscaling period.
    pub sync_period: Duration,
    /// Admin port of gateway pods, unless a pod's annotation says otherwise.
    pub admin_port: u16,
    /// How long victims may fail to accept `POST /drain` before replicas drop anyway.
    pub drain_deadline: SignedDuration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            defaults: Defaults::default(),
            sync_period: Duration::from_secs(15),
            admin_port: 9090,
            drain_deadline: SignedDuration::from_secs(60),
        }
    }
}

/// Shared state of the reconciler.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Event publisher.
    pub recorder: Events,
    /// Gateway admin client.
    pub admin: AdminClient,
    /// Knobs.
    pub settings: Settings,
    /// The operator's own metrics.
    pub metrics: Arc<OperatorMetrics>,
    /// Consecutive failures per object (namespace, name), for the backoff.
    failures: Mutex<HashMap<(String, String), u32>>,
    /// resourceVersion each applied object had after our last apply (kind, namespace,
    /// name), to log the applies that created or changed something.
    applied: Mutex<HashMap<(String, String, String), String>>,
}

impl Context {
    /// A context around `client`; `instance` names this operator replica in
    /// the events it records (the same identity it holds the Lease with).
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Arc<OperatorMetrics>,
        instance: Option<String>,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance,
        };
        Self {
            recorder: Events::new(client.clone(), reporter),
            client,
            admin: AdminClient::new(Duration::from_secs(2)),
            settings,
            metrics,
            failures: Mutex::new(HashMap::new()),
            applied: Mutex::new(HashMap::new()),
        }
    }

    fn record_failure(&self, key: (String, String)) -> u32 {
        let Ok(mut map) = self.failures.lock() else {
            return 0;
        };
        let n = map.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// Remembers `version` for an applied object; returns the one remembered before.
    fn applied_version(&self, key: (String, String, String), version: String) -> Option<String> {
        let mut map = self.applied.lock().ok()?;
        if map.len() >= MAX_REMEMBERED_OBJECTS && !map.contains_key(&key) {
            // Bounded: forgetting only costs one "first apply" log line per object.
            map.clear();
        }
        map.insert(key, version)
    }

    fn reset_failures(&self, key: &(String, String)) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(key);
        }
    }

    /// Drops what the operator keeps about a deleted cluster: its `replicas` series and
    /// its error count.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.metrics.forget(namespace, name);
        self.reset_failures(&(namespace.to_string(), name.to_string()));
    }
}

/// Failures of a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a call.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Objects could not be built.
    #[error(transparent)]
    Desired(#[from] DesiredError),
    /// Status could not be encoded.
    #[error("encoding status: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Backoff after `failures` consecutive errors: 1 s, 2 s, 4 s ... capped at 5 min.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_MAX)
}

fn key<K: ResourceExt>(object: &K) -> (String, String) {
    (object.namespace().unwrap_or_default(), object.name_any())
}

/// Reconciles one stored object: a readable one as a `RealtimeCluster`; one that does not
/// deserialize is reported on itself (`Ready=False`, reason `InvalidSpec`, a Warning event
/// naming the field) and left alone, while every other object reconciles normally.
pub async fn reconcile_stored(
    object: Arc<DynamicObject>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    match stored::read(&object) {
        Ok(rtc) => reconcile(Arc::new(rtc), ctx).await,
        Err(unreadable) => {
            ctx.metrics.reconciled();
            let (namespace, name) = key(object.as_ref());
            tracing::warn!(%namespace, %name, field = %unreadable.path, problem = %unreadable.problem,
                "cannot read RealtimeCluster; reporting it on the object");
            reconcile::report_unreadable(&object, &unreadable, &ctx).await?;
            ctx.reset_failures(&key(object.as_ref()));
            Ok(Action::requeue(ctx.settings.sync_period))
        }
    }
}

/// Reconciles one cluster; on success its error backoff resets.
/// Each reconcile runs in a `reconcile` span (exported over OTLP when on)
/// whose events include the scale decisions.
pub async fn reconcile(rtc: Arc<RealtimeCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    use tracing::Instrument as _;
    ctx.metrics.reconciled();
    let (namespace, name) = key(rtc.as_ref());
    let span = tracing::info_span!("reconcile", %namespace, %name);
    let action = reconcile::reconcile_cluster(&rtc, &ctx)
        .instrument(span.clone())
        .await
        .inspect_err(|error| span.in_scope(|| tracing::warn!(%error, "reconcile error")))?;
    ctx.reset_failures(&key(rtc.as_ref()));
    Ok(action)
}

/// Requeues a failed object with its own exponential backoff.
pub fn error_policy<K: ResourceExt>(object: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed();
    let failures = ctx.record_failure(key(object.as_ref()));
    let wait = backoff(failures);
    tracing::warn!(cluster = %object.name_any(), %error, failures, ?wait, "reconcile failed");
    Action::requeue(wait)
}

/// Which namespaces the operator watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace.
    All,
    /// One namespace.
    Namespace(String),
}

fn scoped<K>(client: &Client, scope: &Scope) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match scope {
        Scope::All => Api::all(client.clone()),
        Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
    }
}

/// Runs the controller until `shutdown` resolves.
///
/// A deleted cluster is noticed when its next scheduled reconcile finds it gone from the
/// watch cache (every reconcile schedules one, at most a sync period away): its series
/// and backoff are dropped then.
pub async fn run(
    ctx: Arc<Context>,
    scope: &Scope,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = &ctx.client;
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=roomcast-operator");
    // Watched untyped: one object that does not deserialize must not fail the watch of all
    // (kube's typed watcher errors on the whole list); `reconcile_stored` reads each one.
    let ar = ApiResource::erase::<RealtimeCluster>(&());
    let clusters = match scope {
        Scope::All => Api::<DynamicObject>::all_with(client.clone(), &ar),
        Scope::Namespace(ns) => Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar),
    };
    Controller::new_with(clusters, watcher::Config::default(), ar)
        .owns(scoped::<Deployment>(client, scope), owned.clone())
        .owns(scoped::<Service>(client, scope), owned.clone())
        .owns(scoped::<PodDisruptionBudget>(client, scope), owned)
        .with_config(ControllerConfig::default().debounce(Duration::from_millis(500)))
        .graceful_shutdown_on(shutdown)
        .run(reconcile_stored, error_policy, ctx.clone())
        .for_each(|result| {
            let ctx = ctx.clone();
            async move {
                match result {
                    Ok((object, _)) => tracing::debug!(cluster = %object.name, "reconciled"),
                    Err(runtime::Error::ObjectNotFound(object)) => {
                        let namespace = object.namespace.as_deref().unwrap_or_default();
                        tracing::debug!(%namespace, cluster = %object.name, "cluster deleted");
                        ctx.forget(namespace, &object.name);
                    }
                    Err(e) => tracing::debug!(error = %e, "reconcile attempt failed"),
                }
            }
        })
        .await;
}

#[cfg(test)]
mod tests;
