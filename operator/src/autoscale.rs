//! The builtin autoscaler: how many gateway replicas a cluster should run, decided from
//! connection counts with the HorizontalPodAutoscaler's rules (tolerance, stabilization
//! windows, default scale-up rate limits). Pure: time and history come in as arguments.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::crd::{AutoscalerHistory, AutoscalingSpec, TimedReplicas};

/// Length of the HPA's default scale-up rate-limit period.
pub const SCALE_UP_PERIOD: SignedDuration = SignedDuration::from_secs(15);
/// HPA default: a period may add this many pods...
pub const SCALE_UP_PODS: i32 = 4;
/// ...or this percentage of the replicas at its start, whichever is more.
pub const SCALE_UP_PERCENT: i32 = 100;
/// Bound on remembered entries, so status stays small whatever the windows.
pub const MAX_HISTORY: usize = 300;

/// The autoscaling settings of one cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Lower bound.
    pub min_replicas: i32,
    /// Upper bound.
    pub max_replicas: i32,
    /// Connections one pod should carry; never 0 (validated before).
    pub target_per_pod: u32,
    /// No change while the load is within this fraction of the target.
    pub tolerance: f64,
    /// Scale-downs take the highest recommendation of this window.
    pub scale_down_window: SignedDuration,
    /// Scale-ups take the lowest recommendation of this window.
    pub scale_up_window: SignedDuration,
}

impl From<&AutoscalingSpec> for Policy {
    fn from(a: &AutoscalingSpec) -> Self {
        Self {
            min_replicas: a.min_replicas,
            max_replicas: a.max_replicas,
            target_per_pod: a.target_connections_per_pod.max(1),
            tolerance: a.tolerance,
            scale_down_window: SignedDuration::from_secs(i64::from(
                a.scale_down_stabilization_seconds,
            )),
            scale_up_window: SignedDuration::from_secs(i64::from(a.scale_up_stabilization_seconds)),
        }
    }
}

/// What one sync observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// Replicas currently set on the Deployment.
    pub current: i32,
    /// Pods whose `roomcast_connections` could be read.
    pub reported_pods: u32,
    /// Sum of the readings.
    pub connections: u64,
}

impl Observation {
    /// Expected pods without a reading: unready, unreadable or not yet started.
    pub fn missing_pods(&self) -> u32 {
        u32::try_from(self.current)
            .unwrap_or(0)
            .saturating_sub(self.reported_pods)
    }
}

/// Why the autoscaler chose what it chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No pod could be read: keep replicas (within bounds).
    NoMetrics,
    /// Load within tolerance of the target.
    WithinTolerance,
    /// The load says fewer pods, but some pods were not read: never shrink on missing data.
    MissingMetrics,
    /// Replicas go up.
    ScaleUp,
    /// Replicas go down.
    ScaleDown,
    /// A change was recommended but the stabilization window holds it back.
    Stabilized,
    /// A scale-up waits for the HPA scale-up rate limit.
    RateLimited,
    /// The load asks for more or fewer pods than `[minReplicas, maxReplicas]` allows.
    Bounded,
    /// Nothing to change.
    Steady,
}

/// The outcome of one sync.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Replicas to run.
    pub replicas: i32,
    /// This sync's recommendation before stabilization and rate limits, if any.
    pub recommendation: Option<i32>,
    /// Why.
    pub reason: Reason,
    /// Whether the HPA scale-up rate limit cut the change.
    pub rate_limited: bool,
    /// History to remember for the next syncs.
    pub history: AutoscalerHistory,
}

fn clamp(replicas: i64, policy: &Policy) -> i32 {
    let (min, max) = (
        i64::from(policy.min_replicas),
        i64::from(policy.max_replicas.max(policy.min_replicas)),
    );
    // In range of i32 after the clamp, since both bounds are i32.
    i32::try_from(replicas.clamp(min, max)).unwrap_or(policy.min_replicas)
}

fn ceil_div(total: u64, per: u32) -> i64 {
    let per = u64::from(per.max(1));
    i64::try_from(total.div_ceil(per)).unwrap_or(i64::MAX)
}

/// The raw recommendation of one observation, before stabilization; `None` without data.
fn recommend(policy: &Policy, obs: &Observation) -> (Option<i64>, Reason) {
    if obs.reported_pods == 0 {
        return (None, Reason::NoMetrics);
    }
    let wanted = ceil_div(obs.connections, policy.target_per_pod);
    if obs.current <= 0 {
        return (Some(wanted), Reason::ScaleUp);
    }
    let capacity = f64::from(obs.current) * f64::from(policy.target_per_pod);
    // Precision loss is irrelevant at connection-count magnitudes.
    #[allow(clippy::cast_precision_loss)]
    let ratio = obs.connections as f64 / capacity;
    let current = i64::from(obs.current);
    // The epsilon keeps exact boundaries (e.g. 440/400 with 10%) inside despite rounding.
    if (ratio - 1.0).abs() <= policy.tolerance + 1e-9 {
        return (Some(current), Reason::WithinTolerance);
    }
    if wanted < current && obs.missing_pods() > 0 {
        return (Some(current), Reason::MissingMetrics);
    }
    let reason = match wanted.cmp(&current) {
        std::cmp::Ordering::Greater => Reason::ScaleUp,
        std::cmp::Ordering::Less => Reason::ScaleDown,
        std::cmp::Ordering::Equal => Reason::Steady,
    };
    (Some(wanted), reason)
}

fn within(time: &Time, now: Timestamp, window: SignedDuration) -> bool {
    now.duration_since(time.0) < window
}

/// This sync's recommendation (within the bounds; `None` without data) and the history
/// with it recorded. Every sync records one, also a sync that only continues a scale-down,
/// so the stabilization windows see the whole load history as the HPA's do.
pub fn record(
    policy: &Policy,
    obs: &Observation,
    history: &AutoscalerHistory,
    now: Timestamp,
) -> (Option<i32>, AutoscalerHistory) {
    let (recommendation, _, history) = recorded(policy, obs, history, now);
    (recommendation, history)
}

fn recorded(
    policy: &Policy,
    obs: &Observation,
    history: &AutoscalerHistory,
    now: Timestamp,
) -> (Option<i32>, Reason, AutoscalerHistory) {
    let (raw, reason) = recommend(policy, obs);
    let recommendation = raw.map(|raw| clamp(raw, policy));
    let mut next = history.clone();
    if let Some(replicas) = recommendation {
        next.recommendations.push(TimedReplicas {
            time: Time(now),
            replicas,
        });
    }
    (recommendation, reason, prune(next, policy, now))
}

/// Decides the replicas for this sync, HPA-style, and returns the history to keep.
pub fn decide(
    policy: &Policy,
    obs: &Observation,
    history: &AutoscalerHistory,
    now: Timestamp,
) -> Decision {
    let current = obs.current;
    let (recommendation, mut reason, mut next) = recorded(policy, obs, history, now);
    let Some(recommendation) = recommendation else {
        // Like the HPA: whatever the metrics, replicas stay within the bounds.
        return Decision {
            replicas: clamp(i64::from(current), policy),
            recommendation: None,
            reason,
            rate_limited: false,
            history: next,
        };
    };

    // Stabilization: scale up to the lowest recommendation of the up-window, down to the
    // highest of the down-window (both include this sync's, recorded above).
    let mut up = recommendation;
    let mut down = recommendation;
    for r in &next.recommendations {
        if within(&r.time, now, policy.scale_up_window) {
            up = up.min(r.replicas);
        }
        if within(&r.time, now, policy.scale_down_window) {
            down = down.max(r.replicas);
        }
    }
    let mut stabilized = current;
    if stabilized < up {
        stabilized = up;
    }
    if stabilized > down {
        stabilized = down;
    }

    // HPA default scale-up policy: per 15 s, at most +100% or +4 pods, whichever is more,
    // counted from the replicas at the start of the period.
    let mut rate_limited = false;
    if stabilized > current {
        let added: i32 = history
            .scale_ups
            .iter()
            .filter(|e| within(&e.time, now, SCALE_UP_PERIOD))
            .map(|e| e.replicas)
            .sum();
        let start = (current - added).max(0);
        let limit = (start + start * SCALE_UP_PERCENT / 100)
            .max(start + SCALE_UP_PODS)
            .max(current);
        if stabilized > limit {
            stabilized = limit;
            rate_limited = true;
        }
    }
    let replicas = clamp(i64::from(stabilized), policy);
    reason = match replicas.cmp(&current) {
        std::cmp::Ordering::Greater => Reason::ScaleUp,
        std::cmp::Ordering::Less => Reason::ScaleDown,
        std::cmp::Ordering::Equal if matches!(reason, Reason::ScaleUp | Reason::ScaleDown) => {
            if rate_limited {
                Reason::RateLimited
            } else if recommendation == current {
                Reason::Bounded
            } else {
                Reason::Stabilized
            }
        }
        std::cmp::Ordering::Equal => reason,
    };

    if replicas > current {
        next.scale_ups.push(TimedReplicas {
            time: Time(now),
            replicas: replicas - current,
        });
    }
    Decision {
        replicas,
        recommendation: Some(recommendation),
        reason,
        rate_limited,
        history: prune(next, policy, now),
    }
}

/// Drops entries no window can use any more, and bounds the rest.
fn prune(mut history: AutoscalerHistory, policy: &Policy, now: Timestamp) -> AutoscalerHistory {
    let keep = policy.scale_down_window.max(policy.scale_up_window);
    history
        .recommendations
        .retain(|r| within(&r.time, now, keep));
    history
        .scale_ups
        .retain(|e| within(&e.time, now, SCALE_UP_PERIOD));
    for list in [&mut history.recommendations, &mut history.scale_ups] {
        let excess = list.len().saturating_sub(MAX_HISTORY);
        list.drain(..excess);
    }
    history
}

#[cfg(test)]
mod tests {
    use super::*;

    /// History entries as (seconds relative to now, replicas).
    type Entries = &'static [(i64, i32)];

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn policy() -> Policy {
        Policy {
            min_replicas: 2,
            max_replicas: 20,
            target_per_pod: 100,
            tolerance: 0.1,
            scale_down_window: SignedDuration::from_secs(300),
            scale_up_window: SignedDuration::ZERO,
        }
    }

    fn obs(current: i32, reported_pods: u32, connections: u64) -> Observation {
        Observation {
            current,
            reported_pods,
            connections,
        }
    }

    fn recs(entries: &[(i64, i32)]) -> AutoscalerHistory {
        AutoscalerHistory {
            recommendations: entries
                .iter()
                .map(|&(at, replicas)| TimedReplicas {
                    time: Time(t(at)),
                    replicas,
                })
                .collect(),
            scale_ups: Vec::new(),
            last_sync: None,
        }
    }

    /// Table: (name, current, reported, connections, history, expected replicas, reason).
    #[test]
    fn decisions_without_history_effects() {
        let cases: &[(&str, i32, u32, u64, i32, Reason)] = &[
            ("exact fit", 4, 4, 400, 4, Reason::WithinTolerance),
            ("within +10%", 4, 4, 440, 4, Reason::WithinTolerance),
            ("within -10%", 4, 4, 360, 4, Reason::WithinTolerance),
            (
                "just over tolerance scales up",
                4,
                4,
                441,
                5,
                Reason::ScaleUp,
            ),
            ("ceil of total/target", 4, 4, 601, 7, Reason::ScaleUp),
            ("clamped to max", 4, 4, 100_000, 8, Reason::ScaleUp), // rate limit: 4 -> 8
            ("clamped to min", 3, 3, 0, 2, Reason::ScaleDown),
            (
                "scale down when all pods report",
                6,
                6,
                250,
                3,
                Reason::ScaleDown,
            ),
            (
                "missing pods block a scale-down",
                6,
                5,
                250,
                6,
                Reason::MissingMetrics,
            ),
            (
                "missing pods do not block a scale-up",
                4,
                2,
                900,
                8,
                Reason::ScaleUp,
            ),
            ("no metrics keeps replicas", 5, 0, 0, 5, Reason::NoMetrics),
            (
                "no metrics still respects min",
                1,
                0,
                0,
                2,
                Reason::NoMetrics,
            ),
            (
                "no metrics still respects max",
                30,
                0,
                0,
                20,
                Reason::NoMetrics,
            ),
            (
                "zero replicas scale to demand",
                0,
                1,
                350,
                4,
                Reason::ScaleUp,
            ),
        ];
        for &(name, current, reported, conns, want, reason) in cases {
            let d = decide(
                &policy(),
                &obs(current, reported, conns),
                &AutoscalerHistory::default(),
                t(1000),
            );
            assert_eq!(d.replicas, want, "{name}");
            assert_eq!(d.reason, reason, "{name}");
        }
    }

    #[test]
    fn max_clamps_recommendations() {
        let mut p = policy();
        p.max_replicas = 6;
        let d = decide(&p, &obs(4, 4, 100_000), &AutoscalerHistory::default(), t(0));
        assert_eq!(d.recommendation, Some(6));
        assert_eq!(d.replicas, 6);
    }

    /// Table: (name, history (age seconds ago, replicas), current, connections, expected).
    #[test]
    fn scale_down_takes_the_highest_recommendation_of_the_window() {
        let cases: &[(&str, Entries, i32, u64, i32)] = &[
            ("recent high recommendation holds", &[(-60, 8)], 8, 200, 8),
            (
                "highest in window caps the drop",
                &[(-200, 6), (-100, 5)],
                8,
                200,
                6,
            ),
            (
                "expired entries no longer hold",
                &[(-300, 8), (-301, 9)],
                8,
                200,
                2,
            ),
            ("boundary entry still counts", &[(-299, 7)], 8, 200, 7),
            ("no history scales down at once", &[], 8, 200, 2),
        ];
        for &(name, history, current, conns, want) in cases {
            let h = recs(history);
            let reported = u32::try_from(current).unwrap();
            let d = decide(&policy(), &obs(current, reported, conns), &h, t(0));
            assert_eq!(d.replicas, want, "{name}");
        }
    }

    #[test]
    fn stabilized_decisions_say_so() {
        let d = decide(&policy(), &obs(8, 8, 200), &recs(&[(-60, 8)]), t(0));
        assert_eq!(d.reason, Reason::Stabilized);
        assert_eq!(d.recommendation, Some(2));
    }

    #[test]
    fn scale_up_stabilization_takes_the_lowest_recommendation() {
        let mut p = policy();
        p.scale_up_window = SignedDuration::from_secs(60);
        // A spike now, calmer a moment ago: scale only to the lower one.
        let d = decide(&p, &obs(2, 2, 600), &recs(&[(-30, 3)]), t(0));
        assert_eq!(d.replicas, 3);
        // The calm recommendation is older than the window: follow the spike.
        let d = decide(&p, &obs(2, 2, 600), &recs(&[(-90, 3)]), t(0));
        assert_eq!(d.replicas, 6);
        // With a zero window (the default) the spike wins at once.
        let d = decide(&policy(), &obs(2, 2, 600), &recs(&[(-1, 3)]), t(0));
        assert_eq!(d.replicas, 6);
    }

    /// Table: (name, current, recent scale-ups (age, added), connections, expected).
    #[test]
    fn scale_up_rate_limit_is_max_of_double_or_plus_four_per_15s() {
        let cases: &[(&str, i32, Entries, u64, i32, bool)] = &[
            ("small: +4 beats +100%", 2, &[], 1900, 6, true),
            ("large: +100% beats +4", 10, &[], 10_000, 20, false),
            ("large capped by double", 8, &[], 10_000, 16, true),
            (
                "within a period counts earlier additions",
                6,
                &[(-10, 4)],
                1900,
                6,
                true,
            ),
            (
                "a second scale-up waits for the period",
                6,
                &[(-10, 4)],
                700,
                6,
                true,
            ),
            ("old additions do not count", 6, &[(-15, 4)], 1900, 12, true),
        ];
        for &(name, current, ups, conns, want, limited) in cases {
            let h = AutoscalerHistory {
                recommendations: Vec::new(),
                scale_ups: ups
                    .iter()
                    .map(|&(at, replicas)| TimedReplicas {
                        time: Time(t(at)),
                        replicas,
                    })
                    .collect(),
                last_sync: None,
            };
            let reported = u32::try_from(current).unwrap();
            let d = decide(&policy(), &obs(current, reported, conns), &h, t(0));
            assert_eq!(d.replicas, want, "{name}");
            assert_eq!(d.rate_limited, limited, "{name}");
        }
    }

    #[test]
    fn history_records_recommendations_and_scale_ups() {
        let d = decide(
            &policy(),
            &obs(2, 2, 500),
            &AutoscalerHistory::default(),
            t(0),
        );
        assert_eq!(d.replicas, 5);
        assert_eq!(d.history.recommendations.len(), 1);
        assert_eq!(d.history.recommendations[0].replicas, 5);
        assert_eq!(d.history.scale_ups.len(), 1);
        assert_eq!(d.history.scale_ups[0].replicas, 3);
        // The next sync 15 s later sees the recommendation and the expired scale-up.
        let d2 = decide(&policy(), &obs(5, 5, 500), &d.history, t(15));
        assert_eq!(d2.replicas, 5);
        assert_eq!(d2.history.recommendations.len(), 2);
        assert!(d2.history.scale_ups.is_empty());
    }

    #[test]
    fn held_changes_say_why() {
        let d = decide(
            &policy(),
            &obs(6, 6, 1900),
            &AutoscalerHistory {
                recommendations: Vec::new(),
                scale_ups: vec![TimedReplicas {
                    time: Time(t(-10)),
                    replicas: 4,
                }],
                last_sync: None,
            },
            t(0),
        );
        assert_eq!((d.replicas, d.reason), (6, Reason::RateLimited));
    }

    #[test]
    fn a_recommendation_cut_by_the_bounds_says_so() {
        let d = decide(
            &policy(),
            &obs(2, 2, 0),
            &AutoscalerHistory::default(),
            t(0),
        );
        assert_eq!((d.replicas, d.reason), (2, Reason::Bounded));
    }

    #[test]
    fn no_metrics_records_nothing() {
        let d = decide(&policy(), &obs(4, 0, 0), &recs(&[(-10, 4)]), t(0));
        assert_eq!(d.recommendation, None);
        assert_eq!(d.history.recommendations.len(), 1);
    }

    #[test]
    fn every_sync_records_its_recommendation() {
        // What a sync that only continues a scale-down records: the load's recommendation.
        let (rec, h) = record(&policy(), &obs(3, 3, 700), &recs(&[(-30, 5)]), t(0));
        assert_eq!(rec, Some(7));
        let got: Vec<i32> = h.recommendations.iter().map(|r| r.replicas).collect();
        assert_eq!(got, [5, 7]);
        // Clamped like a decision's, and nothing without data.
        let (rec, _) = record(&policy(), &obs(3, 3, 100_000), &recs(&[]), t(0));
        assert_eq!(rec, Some(20));
        let (rec, h) = record(&policy(), &obs(3, 0, 0), &recs(&[(-30, 5)]), t(0));
        assert_eq!((rec, h.recommendations.len()), (None, 1));
    }

    #[test]
    fn without_metrics_replicas_are_clamped_to_the_bounds() {
        let mut p = policy();
        p.max_replicas = 7;
        let d = decide(&p, &obs(9, 0, 0), &AutoscalerHistory::default(), t(0));
        assert_eq!(d.replicas, 7);
        p.max_replicas = 4;
        let d = decide(&p, &obs(9, 0, 0), &d.history, t(15));
        assert_eq!(d.replicas, 4);
        // Some pods read but not all: the max still holds (a scale-down that missing data
        // would otherwise block).
        let d = decide(&p, &obs(9, 2, 1000), &recs(&[(-10, 9)]), t(0));
        assert_eq!(d.replicas, 4);
    }

    #[test]
    fn history_is_pruned_and_bounded() {
        let many: Vec<(i64, i32)> = (0..1000).map(|i| (-i, 3)).collect();
        let d = decide(&policy(), &obs(3, 3, 300), &recs(&many), t(0));
        assert!(d.history.recommendations.len() <= MAX_HISTORY);
        assert!(d.history.recommendations.iter().all(|r| within(
            &r.time,
            t(0),
            SignedDuration::from_secs(300)
        )));
    }

    #[test]
    fn a_flapping_load_does_not_flap_replicas() {
        // Load alternates between 2 and 8 pods' worth every sync: the down-window keeps 8.
        let mut history = AutoscalerHistory::default();
        let mut current = 2;
        let mut seen = Vec::new();
        for step in 0..20 {
            let conns = if step % 2 == 0 { 800 } else { 200 };
            let d = decide(
                &policy(),
                &obs(current, u32::try_from(current).unwrap(), conns),
                &history,
                t(step * 15),
            );
            history = d.history;
            current = d.replicas;
            seen.push(current);
        }
        assert_eq!(seen[0], 6, "first scale-up is rate limited to +4");
        assert_eq!(seen[1], 6, "the low sample is held by the down-window");
        assert!(seen[2..].iter().all(|&r| r == 8), "{seen:?}");
    }

    #[test]
    fn policy_from_spec_guards_a_zero_target() {
        let spec = AutoscalingSpec {
            target_connections_per_pod: 0,
            ..AutoscalingSpec::default()
        };
        assert_eq!(Policy::from(&spec).target_per_pod, 1);
        assert_eq!(
            Policy::from(&AutoscalingSpec::default()).target_per_pod,
            5000
        );
    }
}
