//! Drain-first scale-down: which pods go (the least loaded), the deletion costs that make
//! the ReplicaSet remove exactly those, the `POST /drain` calls, and when `replicas` may
//! drop. The choices are pure functions; the two I/O helpers at the end are thin.

use std::collections::BTreeMap;

use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::admin_client::AdminClient;
use crate::crd::ScaleDownProgress;
use crate::desired::DELETION_COST;
use crate::pods::GatewayPod;

/// Deletion cost of victims: the lowest possible, so they go before any other pod.
pub const VICTIM_COST: i32 = i32::MIN;

/// The `k` pods with the fewest connections, ties broken by name so the choice is stable.
/// Only pods that reported are candidates: an unread pod might be the busiest.
pub fn choose_victims(connections: &BTreeMap<String, u64>, k: usize) -> Vec<String> {
    let mut ranked: Vec<(&String, &u64)> = connections.iter().collect();
    ranked.sort_by(|a, b| a.1.cmp(b.1).then_with(|| a.0.cmp(b.0)));
    ranked
        .into_iter()
        .take(k)
        .map(|(name, _)| name.clone())
        .collect()
}

/// The `k` pods a scale-down removes: the least loaded of those that reported
/// ([`choose_victims`]), then, when the bounds force out more pods than reported (replicas
/// above `maxReplicas` while pods cannot be read), the unread ones: unready before ready
/// (they carry no routed traffic), then by name. Terminating pods are leaving already.
pub fn choose_victims_among(
    pods: &[GatewayPod],
    connections: &BTreeMap<String, u64>,
    k: usize,
) -> Vec<String> {
    let mut victims = choose_victims(connections, k);
    let mut unread: Vec<&GatewayPod> = pods
        .iter()
        .filter(|p| !p.terminating && !connections.contains_key(&p.name))
        .collect();
    unread.sort_by(|a, b| a.ready.cmp(&b.ready).then_with(|| a.name.cmp(&b.name)));
    let more = k.saturating_sub(victims.len());
    victims.extend(unread.into_iter().take(more).map(|p| p.name.clone()));
    victims
}

/// Deletion cost per pod: victims get [`VICTIM_COST`], every other pod that reported gets
/// its connection count (busier pods are costlier to remove), and the rest keep theirs.
pub fn deletion_costs(
    pods: &[GatewayPod],
    connections: &BTreeMap<String, u64>,
    victims: &[String],
) -> BTreeMap<String, String> {
    pods.iter()
        .filter(|p| !p.terminating)
        .filter_map(|p| {
            let cost = if victims.contains(&p.name) {
                Some(VICTIM_COST)
            } else {
                connections
                    .get(&p.name)
                    .map(|&n| i32::try_from(n).unwrap_or(i32::MAX))
            };
            cost.map(|c| (p.name.clone(), c.to_string()))
        })
        .collect()
}

/// The pods whose annotation differs from `costs`, so a resumed drain patches nothing twice.
pub fn cost_changes<'a>(
    pods: &'a [GatewayPod],
    costs: &'a BTreeMap<String, String>,
) -> Vec<(&'a str, &'a str)> {
    pods.iter()
        .filter_map(|p| {
            let want = costs.get(&p.name)?;
            (p.deletion_cost.as_ref() != Some(want)).then_some((p.name.as_str(), want.as_str()))
        })
        .collect()
}

/// A scale-down from `from` to `to` with its victims, recorded before any side effect.
/// `to` may be below `from - victims` when the Deployment asks for more pods than exist
/// (replicas set by hand above the bounds): the missing pods need no drain.
pub fn begin(from: i32, to: i32, victims: Vec<String>, now: Timestamp) -> ScaleDownProgress {
    ScaleDownProgress {
        from,
        to,
        victims,
        started: Time(now),
    }
}

/// What became of one victim's drain request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DrainOutcome {
    /// The gateway accepted `POST /drain`.
    Accepted,
    /// The pod no longer exists (or is already terminating): nothing to drain.
    Gone,
    /// The call failed; retried at the next sync.
    Failed(String),
}

/// The next step of a scale-down in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Every victim is draining or gone: lower `replicas` to `progress.to`.
    Lower,
    /// Lower anyway: victims did not answer within the deadline (their deletion cost still
    /// makes the ReplicaSet pick them).
    LowerAfterTimeout(Vec<String>),
    /// Keep `replicas` and retry the drain of these victims.
    Wait(Vec<String>),
}

/// Decides whether `replicas` may drop, given what the drain calls returned.
pub fn next_step(
    progress: &ScaleDownProgress,
    outcomes: &BTreeMap<String, DrainOutcome>,
    now: Timestamp,
    deadline: SignedDuration,
) -> Step {
    let pending: Vec<String> = progress
        .victims
        .iter()
        .filter(|v| matches!(outcomes.get(*v), Some(DrainOutcome::Failed(_))))
        .cloned()
        .collect();
    if pending.is_empty() {
        Step::Lower
    } else if now.duration_since(progress.started.0) >= deadline {
        Step::LowerAfterTimeout(pending)
    } else {
        Step::Wait(pending)
    }
}

/// Sets the deletion-cost annotations that differ, as `field_manager` (so `managedFields`
/// say who set them); returns how many pods were patched.
pub async fn apply_costs(
    api: &Api<Pod>,
    pods: &[GatewayPod],
    costs: &BTreeMap<String, String>,
    field_manager: &str,
) -> Result<usize, kube::Error> {
    let changes = cost_changes(pods, costs);
    let params = PatchParams {
        field_manager: Some(field_manager.into()),
        ..PatchParams::default()
    };
    for (name, cost) in &changes {
        let patch = json!({"metadata": {"annotations": {DELETION_COST: cost}}});
        match api.patch(name, &params, &Patch::Merge(&patch)).await {
            // A pod that vanished meanwhile needs no cost.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            other => {
                other?;
            }
        }
    }
    Ok(changes.len())
}

/// Sends `POST /drain` to every victim that still runs.
pub async fn drain_victims(
    admin: &AdminClient,
    pods: &[GatewayPod],
    victims: &[String],
) -> BTreeMap<String, DrainOutcome> {
    let calls = victims.iter().map(|name| async move {
        let pod = pods.iter().find(|p| &p.name == name && !p.terminating);
        let outcome = match pod {
            None => DrainOutcome::Gone,
            Some(GatewayPod {
                admin_url: Some(url),
                ..
            }) => match admin.drain(url).await {
                Ok(()) => DrainOutcome::Accepted,
                Err(e) => DrainOutcome::Failed(e.to_string()),
            },
            Some(_) => DrainOutcome::Failed("pod has no IP".into()),
        };
        (name.clone(), outcome)
    });
    join_all(calls).await.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readings(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(n, c)| (n.to_string(), *c)).collect()
    }

    fn gw(name: &str, cost: Option<&str>, terminating: bool) -> GatewayPod {
        GatewayPod {
            name: name.into(),
            ready: !terminating,
            terminating,
            admin_url: None,
            deletion_cost: cost.map(String::from),
        }
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    /// Table: (readings, k, expected victims).
    #[test]
    fn victims_are_the_least_loaded() {
        type Case<'a> = (&'a [(&'a str, u64)], usize, &'a [&'a str]);
        let cases: &[Case] = &[
            (&[("a", 10), ("b", 3), ("c", 7)], 1, &["b"]),
            (&[("a", 10), ("b", 3), ("c", 7)], 2, &["b", "c"]),
            (&[("a", 5), ("b", 5), ("c", 5)], 2, &["a", "b"]),
            (&[("a", 1)], 3, &["a"]),
            (&[("a", 1), ("b", 0)], 0, &[]),
            (&[], 2, &[]),
        ];
        for (pairs, k, want) in cases {
            assert_eq!(
                choose_victims(&readings(pairs), *k),
                *want,
                "{pairs:?} k={k}"
            );
        }
    }

    #[test]
    fn bounds_without_readings_pick_unread_pods_unready_first() {
        let mut unready = gw("c", None, false);
        unready.ready = false;
        let pods = [
            gw("e", None, false),
            gw("a", None, false),
            gw("b", None, false),
            unready,
            gw("d", None, true),
        ];
        // Readings first, then unread pods: unready (c), then ready by name; never `d`.
        let r = readings(&[("b", 7)]);
        assert_eq!(choose_victims_among(&pods, &r, 1), ["b"]);
        assert_eq!(choose_victims_among(&pods, &r, 3), ["b", "c", "a"]);
        assert_eq!(choose_victims_among(&pods, &r, 9), ["b", "c", "a", "e"]);
        assert_eq!(choose_victims_among(&pods, &BTreeMap::new(), 2), ["c", "a"]);
    }

    #[test]
    fn victims_get_the_lowest_cost_and_others_their_load() {
        let pods = [
            gw("a", Some("0"), false),
            gw("b", Some("0"), false),
            gw("c", None, false),
            gw("unread", Some("0"), false),
            gw("gone", Some("0"), true),
        ];
        let r = readings(&[("a", 12), ("b", 1), ("c", 40), ("gone", 0)]);
        let costs = deletion_costs(&pods, &r, &["b".to_string()]);
        assert_eq!(costs["b"], VICTIM_COST.to_string());
        assert_eq!(costs["a"], "12");
        assert_eq!(costs["c"], "40");
        assert!(!costs.contains_key("unread"), "unread pods keep their cost");
        assert!(
            !costs.contains_key("gone"),
            "terminating pods are left alone"
        );
        let lowest = costs.values().map(|c| c.parse::<i64>().unwrap()).min();
        assert_eq!(lowest, Some(i64::from(VICTIM_COST)));
    }

    #[test]
    fn huge_counts_saturate() {
        let pods = [gw("a", None, false)];
        let costs = deletion_costs(&pods, &readings(&[("a", u64::MAX)]), &[]);
        assert_eq!(costs["a"], i32::MAX.to_string());
    }

    #[test]
    fn only_changed_costs_are_patched() {
        let pods = [gw("a", Some("12"), false), gw("b", Some("0"), false)];
        let costs = BTreeMap::from([
            ("a".to_string(), "12".to_string()),
            ("b".to_string(), VICTIM_COST.to_string()),
        ]);
        let min = VICTIM_COST.to_string();
        assert_eq!(cost_changes(&pods, &costs), vec![("b", min.as_str())]);
    }

    #[test]
    fn begin_records_target_and_victims() {
        let p = begin(5, 3, vec!["x".into(), "y".into()], t(0));
        assert_eq!((p.from, p.to), (5, 3));
        assert_eq!(p.victims, ["x", "y"]);
        assert_eq!(p.started, Time(t(0)));
    }

    #[test]
    fn replicas_drop_only_once_victims_drain_or_the_deadline_passes() {
        let progress = begin(4, 2, vec!["a".into(), "b".into()], t(0));
        let deadline = SignedDuration::from_secs(60);
        let all_ok = BTreeMap::from([
            ("a".to_string(), DrainOutcome::Accepted),
            ("b".to_string(), DrainOutcome::Gone),
        ]);
        assert_eq!(next_step(&progress, &all_ok, t(1), deadline), Step::Lower);
        let one_failed = BTreeMap::from([
            ("a".to_string(), DrainOutcome::Accepted),
            ("b".to_string(), DrainOutcome::Failed("refused".into())),
        ]);
        assert_eq!(
            next_step(&progress, &one_failed, t(30), deadline),
            Step::Wait(vec!["b".into()])
        );
        assert_eq!(
            next_step(&progress, &one_failed, t(60), deadline),
            Step::LowerAfterTimeout(vec!["b".into()])
        );
    }
}
