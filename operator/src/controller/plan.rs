//! What one sync settled on: replicas, the readings behind them, the `Scaling` and
//! `MetricsAvailable` verdicts, the autoscaler history and scale-down progress to keep, when
//! to come back, and the events to publish once the writes succeeded.

use std::time::Duration;

use kube::runtime::events::{Event, EventType};

use crate::autoscale;
use crate::conditions::{MetricsReason, ScalingReason, State, Verdict};
use crate::crd::{AutoscalerHistory, ScaleDownProgress};

/// The outcome of a sync, input of the applies and of the status.
pub struct Plan {
    /// Replicas to write on the Deployment (`None`: leave them to whoever owns them).
    pub replicas: Option<i32>,
    /// Connections read this sync.
    pub connections: Option<i64>,
    /// A replica change made this sync (from, to).
    pub scaled: Option<(i32, i32)>,
    /// `None` keeps the condition as it is.
    pub scaling: Option<Verdict<ScalingReason>>,
    /// `None` keeps the condition as it is.
    pub metrics: Option<Verdict<MetricsReason>>,
    /// Autoscaler history to keep.
    pub history: Option<AutoscalerHistory>,
    /// A scale-down still under way.
    pub scale_down: Option<ScaleDownProgress>,
    /// Ready gateway pods counted from the pod list, when the pods were listed.
    pub ready_pods: Option<i32>,
    /// When to sync again.
    pub requeue: Duration,
    /// Events to publish after the writes.
    pub events: Vec<Event>,
}

impl Plan {
    /// Keeps `replicas`; nothing read yet.
    pub fn hold(replicas: Option<i32>, requeue: Duration) -> Self {
        Plan {
            replicas,
            connections: None,
            scaled: None,
            scaling: Some(Verdict::new(
                State::False,
                ScalingReason::Autoscaler(autoscale::Reason::Steady),
                "",
            )),
            metrics: Some(Verdict::new(State::Unknown, MetricsReason::NotRead, "")),
            history: None,
            scale_down: None,
            ready_pods: None,
            requeue,
            events: Vec::new(),
        }
    }
}

/// An event about the cluster.
pub fn event(type_: EventType, reason: &str, action: &str, note: String) -> Event {
    Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    }
}
