//! The reconciler: for each `RealtimeCluster`, validate the spec, decide replicas (builtin
//! autoscaler and drain-first scale-down, or the `scale` subresource in External mode),
//! server-side apply the owned objects, write status and publish events. Errors back off
//! per object, exponentially, and the backoff resets on the next success.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::autoscale::{self, Observation, Policy, Reason};
use crate::crd::{AutoscalingMode, RealtimeCluster, RealtimeClusterStatus, ScaleDownProgress};
use crate::desired::{self, Defaults, Desired, DesiredError};
use crate::drain::{self, Step};
use crate::events::Events;
use crate::metrics::AdminClient;
use crate::pods::{self, GatewayPod, Readings};
use crate::status::{self, METRICS_AVAILABLE, READY, SCALING, State};
use crate::stored;
use crate::telemetry::{Direction, Telemetry};

/// Field manager of every write.
pub const FIELD_MANAGER: &str = "roomcast-operator";
/// Requeue while a scale-down waits for victims to accept their drain.
pub const DRAIN_RETRY: Duration = Duration::from_secs(5);
/// First error backoff; doubles per consecutive failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Applied objects whose resourceVersion is remembered for the apply log.
const MAX_REMEMBERED_OBJECTS: usize = 4096;
/// Longest error backoff.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

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
    /// Operator metrics.
    pub telemetry: Arc<Telemetry>,
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
        telemetry: Arc<Telemetry>,
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
            telemetry,
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
            ctx.telemetry.reconciled();
            let (namespace, name) = key(object.as_ref());
            tracing::warn!(%namespace, %name, field = %unreadable.path, problem = %unreadable.problem,
                "cannot read RealtimeCluster; reporting it on the object");
            report_unreadable(&object, &unreadable, &ctx).await?;
            ctx.reset_failures(&key(object.as_ref()));
            Ok(Action::requeue(ctx.settings.sync_period))
        }
    }
}

async fn report_unreadable(
    object: &DynamicObject,
    unreadable: &stored::Unreadable,
    ctx: &Context,
) -> Result<(), Error> {
    let ar = ApiResource::erase::<RealtimeCluster>(&());
    let namespace = object
        .namespace()
        .ok_or(DesiredError::MissingMetadata("namespace"))?;
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &namespace, &ar);
    let announced = stored::already_reported(object, unreadable);
    if let Some(patch) = stored::invalid_status_patch(object, unreadable, Timestamp::now()) {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        api.patch_status(&object.name_any(), &params, &Patch::Merge(&patch))
            .await?;
    }
    if !announced {
        let ev = event(
            EventType::Warning,
            status::INVALID_SPEC,
            "Validate",
            format!("cannot read the object: {unreadable}"),
        );
        if let Err(e) = ctx.recorder.publish(&ev, &object.object_ref(&ar)).await {
            tracing::warn!(reason = %ev.reason, error = %e, "cannot publish event");
        }
    }
    Ok(())
}

/// Reconciles one cluster; on success its error backoff resets.
/// Each reconcile runs in a `reconcile` span (exported over OTLP when on)
/// whose events include the scale decisions.
pub async fn reconcile(rtc: Arc<RealtimeCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    use tracing::Instrument as _;
    ctx.telemetry.reconciled();
    let (namespace, name) = key(rtc.as_ref());
    let span = tracing::info_span!("reconcile", %namespace, %name);
    let action = reconcile_cluster(&rtc, &ctx)
        .instrument(span.clone())
        .await
        .inspect_err(|error| span.in_scope(|| tracing::warn!(%error, "reconcile error")))?;
    ctx.reset_failures(&key(rtc.as_ref()));
    Ok(action)
}

/// Requeues a failed object with its own exponential backoff.
pub fn error_policy<K: ResourceExt>(object: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.telemetry.failed();
    let failures = ctx.record_failure(key(object.as_ref()));
    let wait = backoff(failures);
    tracing::warn!(cluster = %object.name_any(), %error, failures, ?wait, "reconcile failed");
    Action::requeue(wait)
}

/// How long until the next autoscaler sync is due, or `None` when it is due now: a sync
/// counts as done for the three quarters of a period after `last` (status times have
/// second precision, so a whole period would skip syncs that are on time).
pub fn sync_wait(last: Option<&Time>, now: Timestamp, period: Duration) -> Option<Duration> {
    let since = now.duration_since(last?.0);
    let since = Duration::try_from(since).ok()?;
    (since < period * 3 / 4).then(|| (period - since).max(Duration::from_millis(100)))
}

/// What the replica logic settled on for this sync.
struct Plan {
    replicas: Option<i32>,
    connections: Option<i64>,
    scaled: Option<(i32, i32)>,
    /// `None` keeps the condition as it is.
    scaling: Option<(State, &'static str, String)>,
    /// `None` keeps the condition as it is.
    metrics: Option<(State, &'static str, String)>,
    history: Option<crate::crd::AutoscalerHistory>,
    scale_down: Option<ScaleDownProgress>,
    /// Ready gateway pods counted from the pod list, when the pods were listed.
    ready_pods: Option<i32>,
    requeue: Duration,
    events: Vec<Event>,
}

impl Plan {
    fn hold(replicas: Option<i32>, requeue: Duration) -> Self {
        Plan {
            replicas,
            connections: None,
            scaled: None,
            scaling: Some((State::False, "Steady", String::new())),
            metrics: Some((State::Unknown, "NotRead", String::new())),
            history: None,
            scale_down: None,
            ready_pods: None,
            requeue,
            events: Vec::new(),
        }
    }
}

fn event(type_: EventType, reason: &str, action: &str, note: String) -> Event {
    Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    }
}

async fn reconcile_cluster(rtc: &RealtimeCluster, ctx: &Context) -> Result<Action, Error> {
    let namespace = rtc
        .namespace()
        .ok_or(DesiredError::MissingMetadata("namespace"))?;
    let name = rtc.name_any();
    let now = Timestamp::now();
    let generation = rtc.metadata.generation;
    let old = rtc.status.clone().unwrap_or_default();
    let clusters: Api<RealtimeCluster> = Api::namespaced(ctx.client.clone(), &namespace);

    if let Err(invalid) = rtc.spec.validate() {
        let mut st = old.clone();
        st.observed_generation = generation;
        let already = status::condition(&old, READY)
            .is_some_and(|c| c.reason == status::INVALID_SPEC && c.message == invalid.0);
        status::set_condition(
            &mut st.conditions,
            READY,
            State::False,
            status::INVALID_SPEC,
            invalid.0.clone(),
            generation,
            now,
        );
        if st != old {
            write_status(&clusters, &name, &st).await?;
        }
        if !already {
            publish(
                ctx,
                rtc,
                event(
                    EventType::Warning,
                    status::INVALID_SPEC,
                    "Validate",
                    invalid.0,
                ),
            )
            .await;
        }
        return Ok(Action::requeue(ctx.settings.sync_period));
    }

    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let existing = deployments.get_opt(&name).await?;
    let current = existing
        .as_ref()
        .and_then(|d| d.spec.as_ref())
        .and_then(|s| s.replicas);
    let deployment_ready = existing
        .as_ref()
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);

    let plan = match rtc.spec.autoscaling.mode {
        AutoscalingMode::External => {
            // The scale subresource writes spec.replicas; pass it on, decide nothing.
            let mut plan = Plan::hold(rtc.spec.replicas, ctx.settings.sync_period);
            plan.scaling = Some((
                State::False,
                "ExternalAutoscaling",
                "replicas come from the scale subresource".into(),
            ));
            plan.metrics = Some((
                State::Unknown,
                "ExternalAutoscaling",
                "the operator does not read metrics in External mode".into(),
            ));
            plan
        }
        AutoscalingMode::Builtin => {
            builtin(rtc, ctx, &clusters, &namespace, &name, current, &old, now).await?
        }
    };

    let objects = desired::build(rtc, &ctx.settings.defaults, plan.replicas)?;
    apply_all(ctx, &namespace, &objects).await?;

    let replicas = plan.replicas.or(current).unwrap_or(0);
    // Ready gateways as the pods say when they were listed (the readiness the autoscaler
    // used), else as the Deployment reports.
    let ready_replicas = plan.ready_pods.unwrap_or(deployment_ready);
    let mut st = RealtimeClusterStatus {
        observed_generation: generation,
        replicas: Some(replicas),
        ready_replicas: Some(ready_replicas),
        ready: Some(format!("{ready_replicas}/{replicas}")),
        connections: plan.connections,
        last_scale_time: if plan.scaled.is_some() {
            Some(Time(now))
        } else {
            old.last_scale_time.clone()
        },
        selector: Some(desired::selector_string(&name)),
        conditions: old.conditions.clone(),
        autoscaler: plan.history.clone(),
        scale_down: plan.scale_down.clone(),
    };
    let all_ready = existing.is_some() && ready_replicas >= replicas;
    let (ready_reason, ready_message) = if existing.is_none() {
        (
            "Creating",
            "the gateway Deployment is being created".to_string(),
        )
    } else if all_ready {
        (
            "AllReplicasReady",
            format!("{ready_replicas}/{replicas} replicas ready"),
        )
    } else {
        (
            "ReplicasNotReady",
            format!("{ready_replicas}/{replicas} replicas ready"),
        )
    };
    status::set_condition(
        &mut st.conditions,
        READY,
        State::from_bool(all_ready),
        ready_reason,
        ready_message,
        generation,
        now,
    );
    for (type_, condition) in [(SCALING, &plan.scaling), (METRICS_AVAILABLE, &plan.metrics)] {
        if let Some((s, reason, message)) = condition.clone() {
            status::set_condition(
                &mut st.conditions,
                type_,
                s,
                reason,
                message,
                generation,
                now,
            );
        }
    }
    if st != old {
        write_status(&clusters, &name, &st).await?;
    }
    ctx.telemetry.set_replicas(&namespace, &name, replicas);
    if let Some((from, to)) = plan.scaled {
        // A span event of the reconcile span.
        tracing::info!(from, to, "scale decision");
        ctx.telemetry.scaled(if to > from {
            Direction::Up
        } else {
            Direction::Down
        });
    }
    for ev in plan.events {
        publish(ctx, rtc, ev).await;
    }
    Ok(Action::requeue(plan.requeue))
}

/// The builtin autoscaler's part of a sync: read pods, continue or start a scale-down,
/// or move replicas as the HPA rules say.
#[allow(clippy::too_many_arguments)]
async fn builtin(
    rtc: &RealtimeCluster,
    ctx: &Context,
    clusters: &Api<RealtimeCluster>,
    namespace: &str,
    name: &str,
    current: Option<i32>,
    old: &RealtimeClusterStatus,
    now: Timestamp,
) -> Result<Plan, Error> {
    let spec = &rtc.spec.autoscaling;
    let policy = Policy::from(spec);
    if current.is_some() && old.scale_down.is_none() {
        let last = old.autoscaler.as_ref().and_then(|h| h.last_sync.as_ref());
        if let Some(wait) = sync_wait(last, now, ctx.settings.sync_period) {
            // Triggered early (our own status write, an owned object's change): the last
            // reading stands; autoscaling runs once per sync period, as the HPA's does.
            let mut plan = Plan::hold(current, wait);
            plan.connections = old.connections;
            plan.ready_pods = old.ready_replicas;
            plan.history = old.autoscaler.clone();
            plan.scaling = None;
            plan.metrics = None;
            return Ok(plan);
        }
    }
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let listed = pods_api
        .list(&ListParams::default().labels(&desired::selector_string(name)))
        .await?;
    let gateway_pods: Vec<GatewayPod> = listed
        .items
        .iter()
        .map(|p| GatewayPod::from_pod(p, ctx.settings.admin_port))
        .collect();
    let readings = pods::read_connections(&ctx.admin, &gateway_pods).await;
    ctx.telemetry.scrape_failed(readings.failures.len());
    for (pod, cause) in &readings.failures {
        let address = gateway_pods
            .iter()
            .find(|p| &p.name == pod)
            .and_then(|p| p.admin_url.as_deref())
            .unwrap_or("none");
        tracing::warn!(%pod, address, %cause, "gateway metrics scrape failed");
    }
    let mut plan = Plan::hold(current, ctx.settings.sync_period);
    plan.ready_pods =
        Some(i32::try_from(gateway_pods.iter().filter(|p| p.ready).count()).unwrap_or(i32::MAX));
    plan.connections = Some(i64::try_from(readings.total()).unwrap_or(i64::MAX));
    let metrics = metrics_condition(&gateway_pods, &readings);
    // Warn when ready pods cannot be read (not merely because none is ready yet).
    if metrics.1 == "ScrapeFailed"
        && status::condition(old, METRICS_AVAILABLE).is_none_or(|c| c.reason != "ScrapeFailed")
    {
        plan.events.push(event(
            EventType::Warning,
            "MetricsUnavailable",
            "Scrape",
            metrics.2.clone(),
        ));
    }
    plan.metrics = Some(metrics);
    let mut history = old.autoscaler.clone().unwrap_or_default();
    history.last_sync = Some(Time(now));
    plan.history = Some(history.clone());

    let Some(current) = current else {
        // First sync: start at the lower bound; the autoscaler takes over next time.
        plan.replicas = Some(policy.min_replicas);
        plan.scaling = Some((State::False, "Creating", "starting at minReplicas".into()));
        return Ok(plan);
    };

    if let Some(progress) = old.scale_down.clone() {
        // The load is still recorded, so the down-window of a later scale-down counts
        // from every sync, not only from those that decided something. The victims are on
        // their way out: the pods expected to stay are `progress.to`.
        let obs = Observation {
            current: progress.to,
            reported_pods: u32::try_from(readings.connections.len()).unwrap_or(u32::MAX),
            connections: readings.total(),
        };
        plan.history = Some(autoscale::record(&policy, &obs, &history, now).1);
        tracing::info!(
            from = progress.from,
            to = progress.to,
            victims = %progress.victims.join(", "),
            "drain resumed"
        );
        plan.events.push(event(
            EventType::Normal,
            "DrainResumed",
            "Drain",
            format!(
                "resuming scale-down {} -> {}: draining {} (started {})",
                progress.from,
                progress.to,
                progress.victims.join(", "),
                progress.started.0
            ),
        ));
        return continue_scale_down(
            ctx,
            &pods_api,
            &gateway_pods,
            &readings,
            progress,
            plan,
            now,
        )
        .await;
    }

    let obs = Observation {
        current,
        reported_pods: u32::try_from(readings.connections.len()).unwrap_or(u32::MAX),
        connections: readings.total(),
    };
    let decision = autoscale::decide(&policy, &obs, &history, now);
    let mut history = decision.history.clone();
    history.last_sync = Some(Time(now));
    plan.history = Some(history.clone());
    let detail = format!(
        "{} connections over {} reporting pods, target {} per pod",
        obs.connections, obs.reported_pods, policy.target_per_pod
    );
    if decision.replicas != current {
        tracing::info!(
            from = current,
            to = decision.replicas,
            connections = obs.connections,
            reported_pods = obs.reported_pods,
            target_per_pod = policy.target_per_pod,
            recommendation = ?decision.recommendation,
            reason = decision.reason.as_str(),
            min = policy.min_replicas,
            max = policy.max_replicas,
            "autoscaler decision"
        );
    }
    if decision.replicas < current {
        let k = usize::try_from(current - decision.replicas).unwrap_or(0);
        let victims = drain::choose_victims_among(&gateway_pods, &readings.connections, k);
        if victims.is_empty() {
            // No pod exists to drain (replicas set above the bounds before any pod ran):
            // lowering replicas removes nobody.
            let to = decision.replicas;
            plan.replicas = Some(to);
            plan.scaled = Some((current, to));
            plan.scaling = Some((State::True, "ScaleDown", format!("{current} -> {to}")));
            plan.events.push(event(
                EventType::Normal,
                "ScaleDown",
                "Scale",
                format!("scaled {current} -> {to}: no pod to drain ({detail})"),
            ));
            return Ok(plan);
        }
        let progress = drain::begin(current, decision.replicas, victims, now);
        // Record the scale-down before any side effect, so a restart resumes this one.
        let mut st = old.clone();
        st.scale_down = Some(progress.clone());
        st.autoscaler = Some(history);
        write_status(clusters, name, &st).await?;
        tracing::info!(
            from = progress.from,
            to = progress.to,
            victims = %progress.victims.join(", "),
            "drain started"
        );
        plan.events.push(event(
            EventType::Normal,
            "DrainStarted",
            "Scale",
            format!(
                "scaling {} -> {}: draining {} ({detail})",
                progress.from,
                progress.to,
                progress.victims.join(", ")
            ),
        ));
        return continue_scale_down(
            ctx,
            &pods_api,
            &gateway_pods,
            &readings,
            progress,
            plan,
            now,
        )
        .await;
    }
    plan.replicas = Some(decision.replicas);
    if decision.replicas > current {
        plan.scaled = Some((current, decision.replicas));
        plan.scaling = Some((
            State::True,
            Reason::ScaleUp.as_str(),
            format!("{current} -> {}", decision.replicas),
        ));
        plan.events.push(event(
            EventType::Normal,
            "ScaleUp",
            "Scale",
            format!("scaled {current} -> {} ({detail})", decision.replicas),
        ));
    } else {
        plan.scaling = Some((State::False, decision.reason.as_str(), detail));
    }
    Ok(plan)
}

/// Lowers deletion costs of the victims, drains them, and lowers replicas once they all
/// accepted (or the deadline passed); otherwise keeps replicas and retries soon.
async fn continue_scale_down(
    ctx: &Context,
    pods_api: &Api<Pod>,
    gateway_pods: &[GatewayPod],
    readings: &Readings,
    progress: ScaleDownProgress,
    mut plan: Plan,
    now: Timestamp,
) -> Result<Plan, Error> {
    let costs = drain::deletion_costs(gateway_pods, &readings.connections, &progress.victims);
    drain::apply_costs(pods_api, gateway_pods, &costs, FIELD_MANAGER).await?;
    let outcomes = drain::drain_victims(&ctx.admin, gateway_pods, &progress.victims).await;
    let step = drain::next_step(&progress, &outcomes, now, ctx.settings.drain_deadline);
    let (from, to) = (progress.from, progress.to);
    match step {
        Step::Lower | Step::LowerAfterTimeout(_) => {
            tracing::info!(from, to, victims = %progress.victims.join(", "), "drain finished");
            if let Step::LowerAfterTimeout(pending) = &step {
                plan.events.push(event(
                    EventType::Warning,
                    "DrainTimeout",
                    "Drain",
                    format!(
                        "scale-down {from} -> {to}: lowering replicas although {} did not drain",
                        pending.join(", ")
                    ),
                ));
            }
            plan.replicas = Some(to);
            plan.scaled = Some((from, to));
            plan.scale_down = None;
            plan.scaling = Some((State::True, "ScaleDown", format!("{from} -> {to}")));
            plan.events.push(event(
                EventType::Normal,
                "ScaleDown",
                "Scale",
                format!(
                    "scaled {from} -> {to} after draining {}",
                    progress.victims.join(", ")
                ),
            ));
        }
        Step::Wait(pending) => {
            ctx.telemetry.drain_failed(pending.len());
            for victim in &pending {
                if let Some(drain::DrainOutcome::Failed(cause)) = outcomes.get(victim) {
                    tracing::warn!(%victim, %cause, from, to, "drain failed; retrying");
                }
            }
            let reasons: Vec<String> = pending
                .iter()
                .map(|p| match outcomes.get(p) {
                    Some(drain::DrainOutcome::Failed(e)) => format!("{p}: {e}"),
                    _ => p.clone(),
                })
                .collect();
            plan.events.push(event(
                EventType::Warning,
                "DrainFailed",
                "Drain",
                format!("scale-down {from} -> {to} waits: {}", reasons.join("; ")),
            ));
            plan.replicas = Some(from);
            plan.scale_down = Some(progress);
            plan.scaling = Some((
                State::True,
                "Draining",
                format!("waiting for {} to accept the drain", pending.join(", ")),
            ));
            plan.requeue = DRAIN_RETRY;
        }
    }
    Ok(plan)
}

fn metrics_condition(pods: &[GatewayPod], readings: &Readings) -> (State, &'static str, String) {
    let ready = pods.iter().filter(|p| p.ready).count();
    let read = readings.connections.len();
    if read > 0 {
        (
            State::True,
            "MetricsRead",
            format!("{read} of {ready} ready pods reported"),
        )
    } else if ready == 0 {
        (
            State::False,
            "NoReadyPods",
            "no ready gateway pod to read".into(),
        )
    } else {
        let first = readings
            .failures
            .iter()
            .next()
            .map(|(p, e)| format!(" ({p}: {e})"))
            .unwrap_or_default();
        (
            State::False,
            "ScrapeFailed",
            format!("none of {ready} ready pods could be read{first}"),
        )
    }
}

async fn apply<K>(ctx: &Context, api: Api<K>, object: &K) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let applied = api.patch(&name, &params, &Patch::Apply(object)).await?;
    let meta = applied.meta();
    let namespace = meta.namespace.clone().unwrap_or_default();
    let version = meta.resource_version.clone().unwrap_or_default();
    let kind = K::kind(&());
    let before = ctx.applied_version(
        (kind.to_string(), namespace.clone(), name.clone()),
        version.clone(),
    );
    // An apply that changes nothing keeps the resourceVersion; an object created moments
    // ago was created by this apply (nobody else writes these names).
    let fresh = meta
        .creation_timestamp
        .as_ref()
        .is_some_and(|t| Timestamp::now().duration_since(t.0) < SignedDuration::from_secs(5));
    let change = match before {
        Some(before) if before == version => None,
        Some(_) => Some("changed"),
        None if fresh => Some("created"),
        None => Some("applied (first apply since start)"),
    };
    match change {
        Some(change) => {
            tracing::info!(%kind, %namespace, %name, resource_version = %version, "{change}")
        }
        None => tracing::debug!(%kind, %namespace, %name, "unchanged"),
    }
    Ok(())
}

async fn apply_all(ctx: &Context, namespace: &str, objects: &Desired) -> Result<(), Error> {
    let client = &ctx.client;
    apply(
        ctx,
        Api::<Deployment>::namespaced(client.clone(), namespace),
        &objects.deployment,
    )
    .await?;
    let services = Api::<Service>::namespaced(client.clone(), namespace);
    apply(ctx, services.clone(), &objects.service).await?;
    apply(ctx, services, &objects.admin_service).await?;
    apply(
        ctx,
        Api::<PodDisruptionBudget>::namespaced(client.clone(), namespace),
        &objects.pdb,
    )
    .await
}

async fn write_status(
    api: &Api<RealtimeCluster>,
    name: &str,
    st: &RealtimeClusterStatus,
) -> Result<(), Error> {
    let patch = status::merge_patch(st)?;
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    api.patch_status(name, &params, &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Publishes an event; a failure (RBAC, API hiccup) is logged, never fatal.
async fn publish(ctx: &Context, rtc: &RealtimeCluster, ev: Event) {
    if let Err(e) = ctx.recorder.publish(&ev, &rtc.object_ref(&())).await {
        tracing::warn!(reason = %ev.reason, error = %e, "cannot publish event");
    }
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
        .run(reconcile_stored, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(cluster = %object.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile attempt failed"),
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{self, FakeGateway, cluster, deployment, not_found, pod, pod_list};
    use http::{Method, StatusCode};
    use serde_json::{Value, json};

    #[test]
    fn autoscaler_syncs_once_per_period() {
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let period = Duration::from_secs(15);
        let at = |secs: i64| t0 + SignedDuration::from_secs(secs);
        assert_eq!(sync_wait(None, at(0), period), None, "never synced: due");
        let last = Time(t0);
        assert_eq!(
            sync_wait(Some(&last), at(1), period),
            Some(Duration::from_secs(14))
        );
        assert_eq!(
            sync_wait(Some(&last), at(11), period),
            Some(Duration::from_secs(4))
        );
        assert_eq!(
            sync_wait(Some(&last), at(12), period),
            None,
            "three quarters: due"
        );
        assert_eq!(sync_wait(Some(&last), at(60), period), None);
        assert_eq!(
            sync_wait(Some(&last), at(-5), period),
            None,
            "clock went back: due"
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(9), Duration::from_secs(256));
        assert_eq!(backoff(10), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
        assert_eq!(backoff(0), Duration::from_secs(1));
    }

    const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/apps/deployments/chat";
    const PODS: &str = "/api/v1/namespaces/apps/pods";
    const SERVICE: &str = "/api/v1/namespaces/apps/services/chat";
    const ADMIN_SERVICE: &str = "/api/v1/namespaces/apps/services/chat-admin";
    const PDB: &str = "/apis/policy/v1/namespaces/apps/poddisruptionbudgets/chat";
    const STATUS: &str = "/apis/roomcast.dev/v1alpha1/namespaces/apps/realtimeclusters/chat/status";
    const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/apps/events";

    fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == type_)
            .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
    }

    fn assert_apply(call: &fixtures::Call) {
        assert!(
            call.uri.contains("fieldManager=roomcast-operator"),
            "{}",
            call.uri
        );
        assert!(call.uri.contains("force=true"), "{}", call.uri);
    }

    /// Expects the four server-side applies; returns the Deployment that was applied.
    /// Expects one pod patch per `(pod, cost)`, in order, each setting that deletion cost.
    async fn expect_deletion_costs(
        api: &mut fixtures::ApiServerVerifier,
        costs: &[(&str, String)],
    ) {
        for (name, cost) in costs {
            let call = api
                .next()
                .await
                .expect(Method::PATCH, &format!("{PODS}/{name}"));
            assert!(
                call.uri.contains("fieldManager=roomcast-operator"),
                "{}",
                call.uri
            );
            assert_eq!(
                call.body["metadata"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"],
                *cost
            );
            call.respond(
                StatusCode::OK,
                &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}}),
            );
        }
    }

    /// Answers the two reads a full sync starts with: the Deployment, then the pod list.
    async fn expect_sync_reads(
        api: &mut fixtures::ApiServerVerifier,
        replicas: i32,
        pods: Vec<Value>,
    ) {
        api.next()
            .await
            .expect(Method::GET, DEPLOYMENT)
            .respond(StatusCode::OK, &deployment(replicas));
        api.next()
            .await
            .expect(Method::GET, PODS)
            .respond(StatusCode::OK, &pod_list(pods));
    }

    async fn expect_applies(api: &mut fixtures::ApiServerVerifier) -> Value {
        let call = api.next().await.expect(Method::PATCH, DEPLOYMENT);
        assert_apply(&call);
        let applied = call.body.clone();
        assert_eq!(applied["kind"], "Deployment");
        call.echo();
        for path in [SERVICE, ADMIN_SERVICE] {
            let call = api.next().await.expect(Method::PATCH, path);
            assert_apply(&call);
            assert_eq!(call.body["kind"], "Service");
            call.echo();
        }
        let call = api.next().await.expect(Method::PATCH, PDB);
        assert_apply(&call);
        assert_eq!(call.body["spec"]["maxUnavailable"], 1);
        call.echo();
        applied
    }

    async fn run_reconcile(
        rtc: RealtimeCluster,
        ctx: Arc<Context>,
        script: impl std::future::Future<Output = fixtures::ApiServerVerifier>,
    ) -> Result<Action, Error> {
        // The script hands the mock server back, so it lives until the reconcile ends: an
        // unexpected extra request then hangs and trips this timeout instead of passing.
        tokio::time::timeout(Duration::from_secs(10), async move {
            let (result, _api) = tokio::join!(reconcile(Arc::new(rtc), ctx), script);
            result
        })
        .await
        .expect("reconcile timed out")
    }

    #[tokio::test]
    async fn new_cluster_applies_every_object_then_writes_status() {
        let (ctx, mut api) = fixtures::context(Settings::default());
        let rtc = cluster(json!({"nats": {"url": "nats://nats:4222"}}), None);
        let script = async move {
            api.next()
                .await
                .expect(Method::GET, DEPLOYMENT)
                .respond(StatusCode::NOT_FOUND, &not_found());
            let list = api.next().await.expect(Method::GET, PODS);
            assert!(list.uri.contains("labelSelector="), "{}", list.uri);
            list.respond(StatusCode::OK, &pod_list(vec![]));
            let applied = expect_applies(&mut api).await;
            assert_eq!(applied["spec"]["replicas"], 2, "starts at minReplicas");
            let call = api.next().await.expect(Method::PATCH, STATUS);
            let status = call.body["status"].clone();
            call.respond(
                StatusCode::OK,
                &serde_json::to_value(cluster(json!({"nats": {"url": "n"}}), None)).unwrap(),
            );
            assert_eq!(status["observedGeneration"], 3);
            assert_eq!(status["replicas"], 2);
            assert_eq!(status["ready"], "0/2");
            assert_eq!(
                status["selector"],
                "app.kubernetes.io/instance=chat,app.kubernetes.io/name=roomcast-gateway"
            );
            assert_eq!(condition(&status, "Ready")["status"], "False");
            assert_eq!(condition(&status, "Scaling")["status"], "False");
            assert_eq!(condition(&status, "MetricsAvailable")["status"], "False");
            assert!(status["lastScaleTime"].is_null());
            api
        };
        let action = run_reconcile(rtc, ctx.clone(), script).await.unwrap();
        assert_eq!(action, Action::requeue(Duration::from_secs(15)));
        assert!(
            ctx.telemetry
                .render()
                .contains("roomcast_operator_replicas{namespace=\"apps\",name=\"chat\"} 2")
        );
    }

    #[tokio::test]
    async fn invalid_spec_writes_status_and_an_event_and_touches_nothing_else() {
        let (ctx, mut api) = fixtures::context(Settings::default());
        let rtc = cluster(
            json!({"nats": {"url": "n"}, "autoscaling": {"minReplicas": 5, "maxReplicas": 3}}),
            None,
        );
        let script = async move {
            let call = api.next().await.expect(Method::PATCH, STATUS);
            let ready = condition(&call.body["status"], "Ready").clone();
            call.respond(
                StatusCode::OK,
                &serde_json::to_value(cluster(json!({"nats": {"url": "n"}}), None)).unwrap(),
            );
            assert_eq!(ready["status"], "False");
            assert_eq!(ready["reason"], "InvalidSpec");
            assert!(
                ready["message"]
                    .as_str()
                    .unwrap()
                    .contains("minReplicas (5)")
            );
            let event = api.next().await.expect(Method::POST, EVENTS);
            assert_eq!(event.body["reason"], "InvalidSpec");
            assert_eq!(event.body["type"], "Warning");
            event.echo();
            api
        };
        run_reconcile(rtc, ctx, script).await.unwrap();
    }

    #[tokio::test]
    async fn an_unreadable_object_is_reported_on_itself_once() {
        let (ctx, mut api) = fixtures::context(Settings::default());
        let mut raw = serde_json::to_value(cluster(json!({"nats": {"url": "n"}}), None)).unwrap();
        raw["spec"]["autoscaling"]["mode"] = json!("Bogus");
        let object: DynamicObject = serde_json::from_value(raw.clone()).unwrap();
        let script = async move {
            let call = api.next().await.expect(Method::PATCH, STATUS);
            assert!(
                call.uri.contains("fieldManager=roomcast-operator"),
                "{}",
                call.uri
            );
            let ready = condition(&call.body["status"], "Ready").clone();
            let mut echoed = raw.clone();
            echoed["status"] = call.body["status"].clone();
            call.respond(StatusCode::OK, &echoed);
            assert_eq!(
                (&ready["status"], &ready["reason"]),
                (&json!("False"), &json!("InvalidSpec"))
            );
            assert!(
                ready["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("spec.autoscaling.mode:"),
                "{ready}"
            );
            let event = api.next().await.expect(Method::POST, EVENTS);
            assert_eq!(
                (&event.body["type"], &event.body["reason"]),
                (&json!("Warning"), &json!("InvalidSpec"))
            );
            let note = event.body["note"].as_str().unwrap().to_string();
            assert!(
                note.contains("spec.autoscaling.mode") && note.contains("Bogus"),
                "{note}"
            );
            event.echo();
            (api, echoed)
        };
        let (result, (_api, echoed)) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(reconcile_stored(Arc::new(object), ctx.clone()), script)
        })
        .await
        .unwrap();
        assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(15)));
        // Once reported, a later sync writes and announces nothing.
        let object: DynamicObject = serde_json::from_value(echoed).unwrap();
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            reconcile_stored(Arc::new(object), ctx),
        )
        .await
        .unwrap();
        assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(15)));
    }

    #[tokio::test]
    async fn each_decision_is_its_own_event_and_repeats_count_up() {
        let (ctx, mut api) = fixtures::context(Settings::default());
        let rtc = cluster(json!({"nats": {"url": "n"}}), None);
        let script = async move {
            let mut names = Vec::new();
            for note in ["scaled 2 -> 4", "scaled 4 -> 5"] {
                let call = api.next().await.expect(Method::POST, EVENTS);
                assert_eq!(call.body["note"], note);
                names.push(call.body["metadata"]["name"].clone());
                call.echo();
            }
            assert_ne!(names[0], names[1], "two decisions, two events");
            let call = api.next().await.expect(
                Method::PATCH,
                &format!("{EVENTS}/{}", names[1].as_str().unwrap()),
            );
            assert_eq!(call.body["series"]["count"], 2);
            assert_eq!(call.body["note"], "scaled 4 -> 5");
            call.echo();
            api
        };
        let publish = async {
            for note in ["scaled 2 -> 4", "scaled 4 -> 5", "scaled 4 -> 5"] {
                let ev = event(EventType::Normal, "ScaleUp", "Scale", note.into());
                ctx.recorder
                    .publish(&ev, &rtc.object_ref(&()))
                    .await
                    .unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(publish, script)
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn api_errors_fail_the_reconcile_and_back_off_per_object() {
        let (ctx, mut api) = fixtures::context(Settings::default());
        let rtc = cluster(json!({"nats": {"url": "n"}}), None);
        let script = async move {
            api.next().await.expect(Method::GET, DEPLOYMENT).respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "reason": "InternalError", "code": 500, "message": "boom"}),
            );
            api
        };
        let err = run_reconcile(rtc.clone(), ctx.clone(), script)
            .await
            .unwrap_err();
        let rtc = Arc::new(rtc);
        assert_eq!(
            error_policy(rtc.clone(), &err, ctx.clone()),
            Action::requeue(Duration::from_secs(1))
        );
        assert_eq!(
            error_policy(rtc.clone(), &err, ctx.clone()),
            Action::requeue(Duration::from_secs(2))
        );
        assert_eq!(
            error_policy(rtc.clone(), &err, ctx.clone()),
            Action::requeue(Duration::from_secs(4))
        );
        ctx.reset_failures(&key(rtc.as_ref()));
        assert_eq!(
            error_policy(rtc, &err, ctx.clone()),
            Action::requeue(Duration::from_secs(1))
        );
        assert!(
            ctx.telemetry
                .render()
                .contains("roomcast_operator_reconcile_errors_total 4")
        );
    }

    #[tokio::test]
    async fn external_mode_passes_scale_replicas_and_never_scrapes() {
        let (ctx, mut api) = fixtures::context(Settings::default());
        let rtc = cluster(
            json!({"nats": {"url": "n"}, "autoscaling": {"mode": "External"}}),
            None,
        );
        let script = async move {
            api.next()
                .await
                .expect(Method::GET, DEPLOYMENT)
                .respond(StatusCode::NOT_FOUND, &not_found());
            let applied = expect_applies(&mut api).await;
            assert!(applied["spec"].get("replicas").is_none(), "{applied}");
            let call = api.next().await.expect(Method::PATCH, STATUS);
            let status = call.body["status"].clone();
            call.respond(
                StatusCode::OK,
                &serde_json::to_value(cluster(json!({"nats": {"url": "n"}}), None)).unwrap(),
            );
            assert_eq!(condition(&status, "MetricsAvailable")["status"], "Unknown");
            assert!(status["connections"].is_null());
            api
        };
        run_reconcile(rtc, ctx.clone(), script).await.unwrap();

        let (ctx, mut api) = fixtures::context(Settings::default());
        let rtc = cluster(
            json!({"nats": {"url": "n"}, "autoscaling": {"mode": "External"}, "replicas": 7}),
            None,
        );
        let script = async move {
            api.next()
                .await
                .expect(Method::GET, DEPLOYMENT)
                .respond(StatusCode::OK, &deployment(3));
            let applied = expect_applies(&mut api).await;
            assert_eq!(applied["spec"]["replicas"], 7);
            let call = api.next().await.expect(Method::PATCH, STATUS);
            assert_eq!(call.body["status"]["replicas"], 7);
            call.respond(
                StatusCode::OK,
                &serde_json::to_value(cluster(json!({"nats": {"url": "n"}}), None)).unwrap(),
            );
            api
        };
        run_reconcile(rtc, ctx, script).await.unwrap();
    }

    #[tokio::test]
    async fn scale_up_follows_connections_and_records_an_event() {
        let gw: Vec<FakeGateway> =
            vec![FakeGateway::start(450).await, FakeGateway::start(450).await];
        let pods: Vec<Value> = gw
            .iter()
            .enumerate()
            .map(|(i, g)| pod(&format!("chat-{i}"), true, g.port, "0"))
            .collect();
        let (ctx, mut api) = fixtures::context(Settings::default());
        let rtc = cluster(
            json!({"nats": {"url": "n"}, "autoscaling": {"minReplicas": 1, "targetConnectionsPerPod": 100}}),
            None,
        );
        let script = async move {
            api.next()
                .await
                .expect(Method::GET, DEPLOYMENT)
                .respond(StatusCode::OK, &deployment(2));
            api.next()
                .await
                .expect(Method::GET, PODS)
                .respond(StatusCode::OK, &pod_list(pods));
            let applied = expect_applies(&mut api).await;
            // 900 connections / 100 = 9, rate-limited to max(2*2, 2+4) = 6.
            assert_eq!(applied["spec"]["replicas"], 6);
            let call = api.next().await.expect(Method::PATCH, STATUS);
            let status = call.body["status"].clone();
            call.respond(
                StatusCode::OK,
                &serde_json::to_value(cluster(json!({"nats": {"url": "n"}}), None)).unwrap(),
            );
            assert_eq!(status["connections"], 900);
            assert_eq!(status["replicas"], 6);
            assert!(status["lastScaleTime"].is_string());
            assert_eq!(condition(&status, "Scaling")["status"], "True");
            assert_eq!(condition(&status, "MetricsAvailable")["status"], "True");
            assert_eq!(status["autoscaler"]["scaleUps"][0]["replicas"], 4);
            let event = api.next().await.expect(Method::POST, EVENTS);
            assert_eq!(event.body["reason"], "ScaleUp");
            event.echo();
            api
        };
        run_reconcile(rtc, ctx.clone(), script).await.unwrap();
        assert!(ctx.telemetry.render().contains("direction=\"up\"} 1"));
    }

    #[tokio::test]
    async fn an_early_reconcile_reads_nothing_and_writes_nothing() {
        let (ctx, mut api) = fixtures::context(Settings::default());
        let now = Time(Timestamp::now());
        let first = cluster(json!({"nats": {"url": "n"}}), None);
        // What a full sync a moment ago left behind.
        let status = json!({
            "observedGeneration": 3, "replicas": 2, "readyReplicas": 2, "ready": "2/2",
            "connections": 40, "selector": desired::selector_string("chat"),
            "autoscaler": {"recommendations": [], "scaleUps": [], "lastSync": now},
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "AllReplicasReady", "message": "2/2 replicas ready", "lastTransitionTime": now, "observedGeneration": 3},
                {"type": "Scaling", "status": "False", "reason": "WithinTolerance", "message": "x", "lastTransitionTime": now, "observedGeneration": 3},
                {"type": "MetricsAvailable", "status": "True", "reason": "MetricsRead", "message": "2 of 2", "lastTransitionTime": now, "observedGeneration": 3}
            ]
        });
        let rtc = cluster(serde_json::to_value(&first.spec).unwrap(), Some(status));
        let script = async move {
            api.next()
                .await
                .expect(Method::GET, DEPLOYMENT)
                .respond(StatusCode::OK, &deployment(2));
            // No pod list, no scrape: straight to the (unchanged) applies, and no status write.
            let applied = expect_applies(&mut api).await;
            assert_eq!(applied["spec"]["replicas"], 2);
            api
        };
        let action = run_reconcile(rtc, ctx, script).await.unwrap();
        assert_ne!(
            action,
            Action::requeue(Duration::from_secs(15)),
            "requeued for the rest of the period"
        );
    }

    fn scale_down_cluster(status: Option<Value>) -> RealtimeCluster {
        cluster(
            json!({"nats": {"url": "n"}, "autoscaling": {
                "minReplicas": 1, "targetConnectionsPerPod": 100, "scaleDownStabilizationSeconds": 0}}),
            status,
        )
    }

    #[tokio::test]
    async fn scale_down_drains_the_least_loaded_pods_before_lowering_replicas() {
        let (a, b, c) = (
            FakeGateway::start(0).await,
            FakeGateway::start(5).await,
            FakeGateway::start(10).await,
        );
        let pods = vec![
            pod("a", true, a.port, "0"),
            pod("b", true, b.port, "0"),
            pod("c", true, c.port, "0"),
        ];
        let (ctx, mut api) = fixtures::context(Settings::default());
        let rtc = scale_down_cluster(None);
        let echo_rtc = serde_json::to_value(&rtc).unwrap();
        let script = async move {
            api.next()
                .await
                .expect(Method::GET, DEPLOYMENT)
                .respond(StatusCode::OK, &deployment(3));
            api.next()
                .await
                .expect(Method::GET, PODS)
                .respond(StatusCode::OK, &pod_list(pods));
            // The scale-down is recorded before any pod is touched.
            let call = api.next().await.expect(Method::PATCH, STATUS);
            let progress = call.body["status"]["scaleDown"].clone();
            call.respond(StatusCode::OK, &echo_rtc);
            assert_eq!(progress["from"], 3);
            assert_eq!(progress["to"], 1);
            assert_eq!(progress["victims"], json!(["a", "b"]));
            expect_deletion_costs(
                &mut api,
                &[
                    ("a", i32::MIN.to_string()),
                    ("b", i32::MIN.to_string()),
                    ("c", "10".into()),
                ],
            )
            .await;
            let applied = expect_applies(&mut api).await;
            assert_eq!(applied["spec"]["replicas"], 1);
            let call = api.next().await.expect(Method::PATCH, STATUS);
            let status = call.body["status"].clone();
            call.respond(StatusCode::OK, &echo_rtc);
            assert!(status["scaleDown"].is_null(), "{status}");
            assert_eq!(status["replicas"], 1);
            assert!(status["lastScaleTime"].is_string());
            for reason in ["DrainStarted", "ScaleDown"] {
                let event = api.next().await.expect(Method::POST, EVENTS);
                assert_eq!(event.body["reason"], reason);
                event.echo();
            }
            api
        };
        run_reconcile(rtc, ctx, script).await.unwrap();
        assert_eq!((a.drains(), b.drains(), c.drains()), (1, 1, 0));
    }

    #[tokio::test]
    async fn a_recorded_scale_down_is_resumed_not_repeated() {
        let (a, b, c) = (
            FakeGateway::start(0).await,
            FakeGateway::start(0).await,
            FakeGateway::start(10).await,
        );
        let min = i32::MIN.to_string();
        // `a` got its cost before the restart and is draining (unready); `b` did not yet.
        let pods = vec![
            pod("a", false, a.port, &min),
            pod("b", true, b.port, "0"),
            pod("c", true, c.port, "0"),
        ];
        let rtc = scale_down_cluster(Some(json!({
            "replicas": 3,
            "scaleDown": {"from": 3, "to": 1, "victims": ["a", "b"], "started": "2026-11-23T07:00:00Z"}
        })));
        let echo_rtc = serde_json::to_value(&rtc).unwrap();
        let (ctx, mut api) = fixtures::context(Settings {
            // The recorded start is long past; a generous deadline keeps this about resuming.
            drain_deadline: SignedDuration::from_hours(24 * 365 * 10),
            ..Settings::default()
        });
        let script = async move {
            api.next()
                .await
                .expect(Method::GET, DEPLOYMENT)
                .respond(StatusCode::OK, &deployment(3));
            api.next()
                .await
                .expect(Method::GET, PODS)
                .respond(StatusCode::OK, &pod_list(pods));
            // No new decision and no new victims: straight to the costs still missing.
            expect_deletion_costs(&mut api, &[("b", min.clone()), ("c", "10".into())]).await;
            let applied = expect_applies(&mut api).await;
            assert_eq!(applied["spec"]["replicas"], 1);
            let call = api.next().await.expect(Method::PATCH, STATUS);
            assert!(call.body["status"]["scaleDown"].is_null());
            assert_eq!(call.body["status"]["replicas"], 1);
            // Ready as the pods say (`a` is draining), not the Deployment's 3.
            assert_eq!(call.body["status"]["readyReplicas"], 2);
            call.respond(StatusCode::OK, &echo_rtc);
            // The resumed drain is an event of its own, naming its numbers and victims.
            let event = api.next().await.expect(Method::POST, EVENTS);
            assert_eq!(event.body["reason"], "DrainResumed");
            let note = event.body["note"].as_str().unwrap_or_default().to_string();
            assert!(note.contains("scale-down 3 -> 1: draining a, b"), "{note}");
            event.echo();
            let event = api.next().await.expect(Method::POST, EVENTS);
            assert_eq!(event.body["reason"], "ScaleDown");
            event.echo();
            api
        };
        run_reconcile(rtc, ctx, script).await.unwrap();
        assert_eq!((a.drains(), b.drains(), c.drains()), (1, 1, 0));
    }

    #[tokio::test]
    async fn replicas_above_max_without_metrics_drain_unread_pods_then_drop() {
        // Scaled by hand to 4 with maxReplicas 2, no pod ready to read: still clamped, and
        // the pods removed are drained first (unready ones, by name).
        let gws = [
            FakeGateway::start(0).await,
            FakeGateway::start(0).await,
            FakeGateway::start(0).await,
            FakeGateway::start(0).await,
        ];
        let pods: Vec<Value> = ["a", "b", "c", "d"]
            .iter()
            .zip(&gws)
            .map(|(n, g)| pod(n, false, g.port, "0"))
            .collect();
        let rtc = cluster(
            json!({"nats": {"url": "n"}, "autoscaling": {"minReplicas": 1, "maxReplicas": 2}}),
            None,
        );
        let echo_rtc = serde_json::to_value(&rtc).unwrap();
        let (ctx, mut api) = fixtures::context(Settings::default());
        let script = async move {
            expect_sync_reads(&mut api, 4, pods).await;
            let call = api.next().await.expect(Method::PATCH, STATUS);
            let progress = call.body["status"]["scaleDown"].clone();
            call.respond(StatusCode::OK, &echo_rtc);
            assert_eq!(
                (progress["from"].clone(), progress["to"].clone()),
                (json!(4), json!(2))
            );
            assert_eq!(progress["victims"], json!(["a", "b"]));
            let min = i32::MIN.to_string();
            expect_deletion_costs(&mut api, &[("a", min.clone()), ("b", min)]).await;
            let applied = expect_applies(&mut api).await;
            assert_eq!(applied["spec"]["replicas"], 2);
            let call = api.next().await.expect(Method::PATCH, STATUS);
            assert_eq!(call.body["status"]["replicas"], 2);
            call.respond(StatusCode::OK, &echo_rtc);
            for reason in ["DrainStarted", "ScaleDown"] {
                let event = api.next().await.expect(Method::POST, EVENTS);
                assert_eq!(event.body["reason"], reason);
                event.echo();
            }
            api
        };
        run_reconcile(rtc, ctx, script).await.unwrap();
        let drains: Vec<u32> = gws.iter().map(FakeGateway::drains).collect();
        assert_eq!(drains, [1, 1, 0, 0]);
    }

    #[tokio::test]
    async fn replicas_above_max_without_pods_drop_at_once() {
        let rtc = cluster(
            json!({"nats": {"url": "n"}, "autoscaling": {"minReplicas": 1, "maxReplicas": 7}}),
            None,
        );
        let echo_rtc = serde_json::to_value(&rtc).unwrap();
        let (ctx, mut api) = fixtures::context(Settings::default());
        let script = async move {
            expect_sync_reads(&mut api, 9, vec![]).await;
            let applied = expect_applies(&mut api).await;
            assert_eq!(applied["spec"]["replicas"], 7);
            let call = api.next().await.expect(Method::PATCH, STATUS);
            assert_eq!(call.body["status"]["replicas"], 7);
            call.respond(StatusCode::OK, &echo_rtc);
            let event = api.next().await.expect(Method::POST, EVENTS);
            assert_eq!(event.body["reason"], "ScaleDown");
            event.echo();
            api
        };
        run_reconcile(rtc, ctx, script).await.unwrap();
    }

    #[tokio::test]
    async fn a_resumed_scale_down_records_the_recommendation() {
        // Without it the down-window forgets the load seen while draining, and the next
        // scale-down may follow sooner than scaleDownStabilizationSeconds allows.
        let (b, c) = (FakeGateway::start(0).await, FakeGateway::start(250).await);
        let min = i32::MIN.to_string();
        let pods = vec![pod("b", false, b.port, &min), pod("c", true, c.port, "250")];
        let rtc = cluster(
            json!({"nats": {"url": "n"}, "autoscaling": {
                "minReplicas": 1, "targetConnectionsPerPod": 100, "scaleDownStabilizationSeconds": 300}}),
            Some(json!({
                "replicas": 2,
                "scaleDown": {"from": 2, "to": 1, "victims": ["b"], "started": "2099-01-01T00:00:00Z"}
            })),
        );
        let echo_rtc = serde_json::to_value(&rtc).unwrap();
        let (ctx, mut api) = fixtures::context(Settings::default());
        let script = async move {
            expect_sync_reads(&mut api, 2, pods).await;
            let applied = expect_applies(&mut api).await;
            assert_eq!(applied["spec"]["replicas"], 1);
            let call = api.next().await.expect(Method::PATCH, STATUS);
            // 250 connections on the pod that stays, 100 per pod: 3 recommended.
            let recs = call.body["status"]["autoscaler"]["recommendations"].clone();
            call.respond(StatusCode::OK, &echo_rtc);
            assert_eq!(recs.as_array().map(Vec::len), Some(1), "{recs}");
            assert_eq!(recs[0]["replicas"], 3);
            // The resumed drain is an event of its own, naming its numbers and victims.
            let event = api.next().await.expect(Method::POST, EVENTS);
            assert_eq!(event.body["reason"], "DrainResumed");
            let note = event.body["note"].as_str().unwrap_or_default().to_string();
            assert!(note.contains("scale-down 2 -> 1: draining b"), "{note}");
            event.echo();
            let event = api.next().await.expect(Method::POST, EVENTS);
            assert_eq!(event.body["reason"], "ScaleDown");
            event.echo();
            api
        };
        run_reconcile(rtc, ctx, script).await.unwrap();
    }

    #[tokio::test]
    async fn a_victim_that_refuses_the_drain_keeps_replicas_and_retries_soon() {
        let (a, c) = (FakeGateway::start(0).await, FakeGateway::start(10).await);
        // `b` has a closed admin port: its drain fails.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let min = i32::MIN.to_string();
        let pods = vec![
            pod("a", false, a.port, &min),
            pod("b", false, closed_port, &min),
            pod("c", true, c.port, "10"),
        ];
        let rtc = scale_down_cluster(Some(json!({
            "replicas": 3,
            "scaleDown": {"from": 3, "to": 1, "victims": ["a", "b"], "started": "2099-01-01T00:00:00Z"}
        })));
        let echo_rtc = serde_json::to_value(&rtc).unwrap();
        let (ctx, mut api) = fixtures::context(Settings::default());
        let script = async move {
            api.next()
                .await
                .expect(Method::GET, DEPLOYMENT)
                .respond(StatusCode::OK, &deployment(3));
            api.next()
                .await
                .expect(Method::GET, PODS)
                .respond(StatusCode::OK, &pod_list(pods));
            let applied = expect_applies(&mut api).await;
            assert_eq!(
                applied["spec"]["replicas"], 3,
                "replicas stay until victims drain"
            );
            let call = api.next().await.expect(Method::PATCH, STATUS);
            assert_eq!(
                call.body["status"]["scaleDown"]["victims"],
                json!(["a", "b"])
            );
            assert_eq!(
                condition(&call.body["status"], "Scaling")["reason"],
                "Draining"
            );
            call.respond(StatusCode::OK, &echo_rtc);
            // The resumed drain is an event of its own, naming its numbers and victims.
            let event = api.next().await.expect(Method::POST, EVENTS);
            assert_eq!(event.body["reason"], "DrainResumed");
            let note = event.body["note"].as_str().unwrap_or_default().to_string();
            assert!(note.contains("scale-down 3 -> 1: draining a, b"), "{note}");
            event.echo();
            let event = api.next().await.expect(Method::POST, EVENTS);
            assert_eq!(event.body["reason"], "DrainFailed");
            event.echo();
            api
        };
        let action = run_reconcile(rtc, ctx, script).await.unwrap();
        assert_eq!(action, Action::requeue(DRAIN_RETRY));
        assert_eq!((a.drains(), c.drains()), (1, 0));
    }
}
