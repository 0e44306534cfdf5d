//! The autoscale sync, where a scale decision is made: in Builtin mode read the gateway
//! pods' connection counts, then continue a recorded scale-down, start one (drain-first:
//! victims chosen, recorded, drained, then replicas lowered) or move replicas as the HPA
//! rules in `autoscale` say; in External mode pass the `scale` subresource's replicas on.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::runtime::events::EventType;

use crate::autoscale::{self, Observation, Policy};
use crate::conditions::{MetricsReason, Reason as _, ScalingReason, State, Verdict};
use crate::controller::plan::{Plan, event};
use crate::controller::writes::write_status;
use crate::controller::{Context, DRAIN_RETRY, Error, FIELD_MANAGER};
use crate::crd::{RealtimeCluster, RealtimeClusterStatus, ScaleDownProgress};
use crate::desired;
use crate::drain::{self, Step};
use crate::pods::{self, GatewayPod, Readings};

/// What a sync starts from.
#[derive(Clone, Copy, Debug)]
pub struct SyncInput<'a> {
    /// The cluster.
    pub cluster: &'a RealtimeCluster,
    /// Its namespace.
    pub namespace: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Replicas on the Deployment, if it exists.
    pub current: Option<i32>,
    /// Status as it was.
    pub old: &'a RealtimeClusterStatus,
    /// Time of this sync.
    pub now: Timestamp,
}

/// The gateway pods of one sync and what could be read from them.
struct Scrape {
    pods: Vec<GatewayPod>,
    readings: Readings,
}

/// How long until the next autoscaler sync is due, or `None` when it is due now: a sync
/// counts as done for the three quarters of a period after `last` (status times have
/// second precision, so a whole period would skip syncs that are on time).
pub fn sync_wait(last: Option<&Time>, now: Timestamp, period: Duration) -> Option<Duration> {
    let since = now.duration_since(last?.0);
    let since = Duration::try_from(since).ok()?;
    (since < period * 3 / 4).then(|| (period - since).max(Duration::from_millis(100)))
}

/// External mode: the scale subresource writes `spec.replicas`; pass it on, decide nothing.
pub fn external(cluster: &RealtimeCluster, sync_period: Duration) -> Plan {
    let mut plan = Plan::hold(cluster.spec.replicas, sync_period);
    plan.scaling = Some(Verdict::new(
        State::False,
        ScalingReason::ExternalAutoscaling,
        "replicas come from the scale subresource",
    ));
    plan.metrics = Some(Verdict::new(
        State::Unknown,
        MetricsReason::ExternalAutoscaling,
        "the operator does not read metrics in External mode",
    ));
    plan
}

/// The builtin autoscaler's part of a sync: read pods, continue or start a scale-down,
/// or move replicas as the HPA rules say.
pub async fn builtin(
    ctx: &Context,
    clusters: &Api<RealtimeCluster>,
    input: &SyncInput<'_>,
) -> Result<Plan, Error> {
    let SyncInput {
        cluster,
        namespace,
        name,
        current,
        old,
        now,
    } = *input;
    let policy = Policy::from(&cluster.spec.autoscaling);
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
    let scrape = scrape(ctx, &pods_api, name).await?;
    let mut plan = Plan::hold(current, ctx.settings.sync_period);
    plan.ready_pods =
        Some(i32::try_from(scrape.pods.iter().filter(|p| p.ready).count()).unwrap_or(i32::MAX));
    plan.connections = Some(i64::try_from(scrape.readings.total()).unwrap_or(i64::MAX));
    let metrics = metrics_verdict(&scrape.pods, &scrape.readings);
    // Warn when ready pods cannot be read (not merely because none is ready yet).
    if metrics.reason == MetricsReason::ScrapeFailed
        && !Verdict::reason_is_set(&old.conditions, MetricsReason::ScrapeFailed)
    {
        plan.events.push(event(
            EventType::Warning,
            "MetricsUnavailable",
            "Scrape",
            metrics.message.clone(),
        ));
    }
    plan.metrics = Some(metrics);
    let mut history = old.autoscaler.clone().unwrap_or_default();
    history.last_sync = Some(Time(now));
    plan.history = Some(history.clone());

    let Some(current) = current else {
        // First sync: start at the lower bound; the autoscaler takes over next time.
        plan.replicas = Some(policy.min_replicas);
        plan.scaling = Some(Verdict::new(
            State::False,
            ScalingReason::Creating,
            "starting at minReplicas",
        ));
        return Ok(plan);
    };

    if let Some(progress) = old.scale_down.clone() {
        // The load is still recorded, so the down-window of a later scale-down counts
        // from every sync, not only from those that decided something. The victims are on
        // their way out: the pods expected to stay are `progress.to`.
        let obs = observation(progress.to, &scrape.readings);
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
        return continue_scale_down(ctx, &pods_api, &scrape, progress, plan, now).await;
    }

    let obs = observation(current, &scrape.readings);
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
            reason = ScalingReason::Autoscaler(decision.reason).as_str(),
            min = policy.min_replicas,
            max = policy.max_replicas,
            "autoscaler decision"
        );
    }
    if decision.replicas < current {
        let k = usize::try_from(current - decision.replicas).unwrap_or(0);
        let victims = drain::choose_victims_among(&scrape.pods, &scrape.readings.connections, k);
        if victims.is_empty() {
            // No pod exists to drain (replicas set above the bounds before any pod ran):
            // lowering replicas removes nobody.
            let to = decision.replicas;
            lower(
                &mut plan,
                current,
                to,
                format!(": no pod to drain ({detail})"),
            );
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
        return continue_scale_down(ctx, &pods_api, &scrape, progress, plan, now).await;
    }
    plan.replicas = Some(decision.replicas);
    if decision.replicas > current {
        plan.scaled = Some((current, decision.replicas));
        plan.scaling = Some(Verdict::new(
            State::True,
            ScalingReason::Autoscaler(autoscale::Reason::ScaleUp),
            format!("{current} -> {}", decision.replicas),
        ));
        plan.events.push(event(
            EventType::Normal,
            "ScaleUp",
            "Scale",
            format!("scaled {current} -> {} ({detail})", decision.replicas),
        ));
    } else {
        plan.scaling = Some(Verdict::new(
            State::False,
            ScalingReason::Autoscaler(decision.reason),
            detail,
        ));
    }
    Ok(plan)
}

/// Lists the cluster's gateway pods and reads their connection counts.
async fn scrape(ctx: &Context, pods_api: &Api<Pod>, name: &str) -> Result<Scrape, Error> {
    let listed = pods_api
        .list(&ListParams::default().labels(&desired::selector_string(name)))
        .await?;
    let pods: Vec<GatewayPod> = listed
        .items
        .iter()
        .map(|p| GatewayPod::from_pod(p, ctx.settings.admin_port))
        .collect();
    let readings = pods::read_connections(&ctx.admin, &pods).await;
    ctx.metrics.scrape_failed(readings.failures.len());
    for (pod, cause) in &readings.failures {
        let address = pods
            .iter()
            .find(|p| &p.name == pod)
            .and_then(|p| p.admin_url.as_deref())
            .unwrap_or("none");
        tracing::warn!(%pod, address, %cause, "gateway metrics scrape failed");
    }
    Ok(Scrape { pods, readings })
}

/// Lowers deletion costs of the victims, drains them, and lowers replicas once they all
/// accepted (or the deadline passed); otherwise keeps replicas and retries soon.
async fn continue_scale_down(
    ctx: &Context,
    pods_api: &Api<Pod>,
    scrape: &Scrape,
    progress: ScaleDownProgress,
    mut plan: Plan,
    now: Timestamp,
) -> Result<Plan, Error> {
    let Scrape { pods, readings } = scrape;
    let costs = drain::deletion_costs(pods, &readings.connections, &progress.victims);
    drain::apply_costs(pods_api, pods, &costs, FIELD_MANAGER).await?;
    let outcomes = drain::drain_victims(&ctx.admin, pods, &progress.victims).await;
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
            plan.scale_down = None;
            let drained = format!(" after draining {}", progress.victims.join(", "));
            lower(&mut plan, from, to, drained);
        }
        Step::Wait(pending) => {
            ctx.metrics.drain_failed(pending.len());
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
            plan.scaling = Some(Verdict::new(
                State::True,
                ScalingReason::Draining,
                format!("waiting for {} to accept the drain", pending.join(", ")),
            ));
            plan.requeue = DRAIN_RETRY;
        }
    }
    Ok(plan)
}

/// Replicas drop from `from` to `to` this sync: the `ScaleDown` verdict and event
/// (`scaled <from> -> <to>` followed by `how`, which starts with its own separator).
fn lower(plan: &mut Plan, from: i32, to: i32, how: String) {
    plan.replicas = Some(to);
    plan.scaled = Some((from, to));
    plan.scaling = Some(Verdict::new(
        State::True,
        ScalingReason::Autoscaler(autoscale::Reason::ScaleDown),
        format!("{from} -> {to}"),
    ));
    plan.events.push(event(
        EventType::Normal,
        "ScaleDown",
        "Scale",
        format!("scaled {from} -> {to}{how}"),
    ));
}

/// `MetricsAvailable` from what this sync could read.
/// What the autoscaler sees: `current` replicas and the pods' readings.
fn observation(current: i32, readings: &Readings) -> Observation {
    Observation {
        current,
        reported_pods: u32::try_from(readings.connections.len()).unwrap_or(u32::MAX),
        connections: readings.total(),
    }
}

fn metrics_verdict(pods: &[GatewayPod], readings: &Readings) -> Verdict<MetricsReason> {
    let ready = pods.iter().filter(|p| p.ready).count();
    let read = readings.connections.len();
    if read > 0 {
        Verdict::new(
            State::True,
            MetricsReason::MetricsRead,
            format!("{read} of {ready} ready pods reported"),
        )
    } else if ready == 0 {
        Verdict::new(
            State::False,
            MetricsReason::NoReadyPods,
            "no ready gateway pod to read",
        )
    } else {
        let first = readings
            .failures
            .iter()
            .next()
            .map(|(p, e)| format!(" ({p}: {e})"))
            .unwrap_or_default();
        Verdict::new(
            State::False,
            MetricsReason::ScrapeFailed,
            format!("none of {ready} ready pods could be read{first}"),
        )
    }
}
