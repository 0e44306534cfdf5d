//! The events the reconciles publish on a cluster (`events.k8s.io/v1`), as `kubectl
//! describe` shows them. kube-runtime's `Recorder` folds every event with the same reason
//! into one series that keeps its first note, so "ScaleUp (x4): scaled 2 -> 4" hid 4 -> 5,
//! 2 -> 3 and 2 -> 5. Here an event joins a series only when its note is the same too: each
//! scale decision and each drain is its own event, with its numbers and pod names, while a
//! retry that says the same thing again (a refused drain every 5 s) still counts up one event.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use tokio::sync::Mutex;

/// How long an event may still be continued as a series (kube-runtime's value).
pub const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);
/// Bound on remembered events (one per distinct note and object within the window).
pub const MAX_REMEMBERED: usize = 1024;

/// What makes two events the same happening.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    regarding: (Option<String>, Option<String>, Option<String>),
    type_: &'static str,
    reason: String,
    action: String,
    note: Option<String>,
}

impl Key {
    fn of(ev: &Event, regarding: &ObjectReference) -> Self {
        Self {
            regarding: (
                regarding.namespace.clone(),
                regarding.name.clone(),
                regarding.uid.clone(),
            ),
            type_: type_name(ev.type_),
            reason: ev.reason.clone(),
            action: ev.action.clone(),
            note: ev.note.clone(),
        }
    }
}

fn type_name(t: EventType) -> &'static str {
    match t {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

/// The event to write for `ev` at `now`: a new one, or `previous` (the same happening,
/// seen within [`SERIES_WINDOW`]) with its series counted up.
pub fn next(
    previous: Option<&K8sEvent>,
    ev: &Event,
    regarding: &ObjectReference,
    reporter: &Reporter,
    now: Timestamp,
) -> K8sEvent {
    if let Some(previous) =
        previous.filter(|p| last_seen(p).is_some_and(|t| now < t + SERIES_WINDOW))
    {
        let count = previous
            .series
            .as_ref()
            .map_or(2, |s| s.count.saturating_add(1));
        let mut event = previous.clone();
        event.series = Some(EventSeries {
            count,
            last_observed_time: MicroTime(now),
        });
        return event;
    }
    let name = regarding.name.as_deref().unwrap_or(&reporter.controller);
    K8sEvent {
        action: Some(ev.action.clone()),
        reason: Some(ev.reason.clone()),
        event_time: Some(MicroTime(now)),
        regarding: Some(regarding.clone()),
        related: ev.secondary.clone(),
        note: ev.note.clone(),
        metadata: ObjectMeta {
            namespace: regarding.namespace.clone(),
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            ..ObjectMeta::default()
        },
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: Some(
            reporter
                .instance
                .clone()
                .unwrap_or_else(|| reporter.controller.clone()),
        ),
        type_: Some(type_name(ev.type_).into()),
        ..K8sEvent::default()
    }
}

fn last_seen(event: &K8sEvent) -> Option<Timestamp> {
    event
        .series
        .as_ref()
        .map(|s| s.last_observed_time.0)
        .or_else(|| event.event_time.as_ref().map(|t| t.0))
}

/// Publishes events, one per distinct happening.
pub struct Events {
    client: Client,
    reporter: Reporter,
    recent: Mutex<HashMap<Key, K8sEvent>>,
}

impl Events {
    /// Events written through `client`, signed by `reporter`.
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// Creates the event, or counts up the series of the same event seen recently.
    pub async fn publish(
        &self,
        ev: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = Key::of(ev, regarding);
        let event = {
            let mut recent = self.recent.lock().await;
            recent.retain(|_, e| last_seen(e).is_some_and(|t| now < t + SERIES_WINDOW));
            next(recent.get(&key), ev, regarding, &self.reporter, now)
        };
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        let name = event.metadata.name.clone().unwrap_or_default();
        if event.series.is_some() {
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&event))
                .await?;
        } else {
            api.create(&PostParams::default(), &event).await?;
        }
        let mut recent = self.recent.lock().await;
        if recent.len() >= MAX_REMEMBERED && !recent.contains_key(&key) {
            // Bounded: forgetting only starts a new event instead of a series.
            recent.clear();
        }
        recent.insert(key, event);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(reason: &str, note: &str) -> Event {
        Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(note.into()),
            action: "Scale".into(),
            secondary: None,
        }
    }

    fn regarding() -> ObjectReference {
        ObjectReference {
            namespace: Some("apps".into()),
            name: Some("chat".into()),
            uid: Some("u".into()),
            ..ObjectReference::default()
        }
    }

    fn reporter() -> Reporter {
        Reporter {
            controller: "roomcast-operator".into(),
            instance: Some("op-0".into()),
        }
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    #[test]
    fn the_same_note_counts_up_a_different_one_is_new() {
        let first = next(
            None,
            &ev("ScaleUp", "scaled 2 -> 4"),
            &regarding(),
            &reporter(),
            t(0),
        );
        assert!(first.series.is_none());
        assert_eq!(first.note.as_deref(), Some("scaled 2 -> 4"));
        let again = next(
            Some(&first),
            &ev("ScaleUp", "scaled 2 -> 4"),
            &regarding(),
            &reporter(),
            t(10),
        );
        assert_eq!(again.metadata.name, first.metadata.name);
        assert_eq!(again.series.as_ref().map(|s| s.count), Some(2));
        // Different numbers: a different key, so `previous` is never this one; a new event.
        assert_ne!(
            Key::of(&ev("ScaleUp", "scaled 4 -> 5"), &regarding()),
            Key::of(&ev("ScaleUp", "scaled 2 -> 4"), &regarding())
        );
        // Past the window a repeat starts afresh.
        let late = next(
            Some(&again),
            &ev("ScaleUp", "scaled 2 -> 4"),
            &regarding(),
            &reporter(),
            t(10 + 360),
        );
        assert!(late.series.is_none());
        assert_ne!(late.metadata.name, first.metadata.name);
    }
}
