//! Watch streams: newline-delimited JSON `WatchEvent`s over a chunked response.
//!
//! A watch starts from a snapshot (synthetic `ADDED` for every object) or resumes after a
//! resourceVersion from the store's history, then follows live events. Selector filtering turns
//! modifications that move an object into or out of the selection into `ADDED`/`DELETED`, as
//! upstream does. Optional periodic `BOOKMARK`s carry the latest resourceVersion the watcher has
//! fully seen, and `sendInitialEvents` ends the snapshot with the `k8s.io/initial-events-end` bookmark.

use crate::errors::ApiError;
use crate::kinds::ResourceKind;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Event, EventType, Store, WatchFrom};
use crate::versions;
use crate::{clock, table};
use bytes::Bytes;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// What one watch request asked for.
#[derive(Debug, Clone)]
pub struct WatchRequest {
    /// Resource type watched.
    pub kind: ResourceKind,
    /// Namespace, or all namespaces.
    pub namespace: Option<String>,
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// Where to start.
    pub from: WatchFrom,
    /// `sendInitialEvents=true`: end the snapshot with the initial-events-end bookmark.
    pub initial_events_end: bool,
    /// `allowWatchBookmarks=true`.
    pub bookmarks: bool,
    /// `timeoutSeconds`.
    pub timeout: Option<Duration>,
    /// Send each object as a one-row `Table` (kubectl's server-side printing).
    pub table: bool,
}

fn lock(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    // A panic while holding the lock cannot leave the store half-written in a way readers care about.
    store
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One wire line.
fn line(event_type: &str, object: &Value) -> Bytes {
    let mut text = json!({"type": event_type, "object": object}).to_string();
    text.push('\n');
    Bytes::from(text)
}

/// The wire line for an `ERROR` event.
pub fn error_line(error: &ApiError) -> Bytes {
    line("ERROR", &error.to_status())
}

/// How an event appears to this watch, if at all (selector transitions included).
pub fn visible(req: &WatchRequest, event: &Event) -> Option<(EventType, Value)> {
    if event.type_key != req.kind.storage_key() {
        return None;
    }
    let selected = |o: &Value| {
        let o = &versions::present(&req.kind, o);
        let ns_ok = req
            .namespace
            .as_deref()
            .is_none_or(|ns| o.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns));
        ns_ok && req.labels.matches(o) && req.fields.matches(o)
    };
    let now = selected(&event.object);
    let before = event.previous.as_deref().is_some_and(selected);
    let event_type = match (event.event_type, before, now) {
        (EventType::Modified, false, true) if event.previous.is_some() => EventType::Added,
        (EventType::Modified, true, false) => EventType::Deleted,
        (_, _, true) => event.event_type,
        _ => return None,
    };
    // An object leaving the selection is sent in its new state, as upstream does.
    Some((event_type, versions::present(&req.kind, &event.object)))
}

fn bookmark(req: &WatchRequest, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        &json!({"kind": req.kind.kind, "apiVersion": req.kind.api_version(), "metadata": meta}),
    )
}

/// Opens a watch on the store: returns the receiving end of the response body's chunks.
///
/// A resourceVersion older than the retained history is not an HTTP error: as upstream, the
/// response is a stream holding one `ERROR` event with code 410, which makes clients relist.
pub fn open(
    store: Arc<Mutex<Store>>,
    req: WatchRequest,
    bookmark_interval: Duration,
) -> mpsc::Receiver<Bytes> {
    let (tx, out) = mpsc::channel(256);
    let started = {
        let guard = lock(&store);
        guard.watch(&req.kind, req.from).map(|(first, rx)| {
            let seen = match req.from {
                WatchFrom::Snapshot => guard.rv(),
                WatchFrom::After(rv) => first.last().map_or(rv, |e| e.rv).max(rv),
            };
            Started {
                first,
                rx,
                seen,
                cut: guard.watch_cuts(),
            }
        })
    };
    match started {
        Ok(started) => {
            tokio::spawn(run(store, req, bookmark_interval, started, tx));
        }
        Err(error) => {
            // The channel is fresh and has room for one chunk.
            let _ = tx.try_send(error_line(&error));
        }
    }
    out
}

/// Events waiting in `rx` plus the resourceVersion they bring the watcher up to, read under the
/// store lock so nothing is in flight; a lagged receiver is replaced from the history.
fn drain(
    store: &Mutex<Store>,
    req: &WatchRequest,
    rx: &mut broadcast::Receiver<Arc<Event>>,
    seen: u64,
) -> Result<(Vec<Arc<Event>>, u64), ApiError> {
    let guard = lock(store);
    let mut events = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(e) => events.push(e),
            Err(broadcast::error::TryRecvError::Lagged(_)) => {
                let after = events.last().map_or(seen, |e: &Arc<Event>| e.rv);
                let (history, fresh) = guard.watch(&req.kind, WatchFrom::After(after))?;
                events.extend(history);
                *rx = fresh;
                break;
            }
            Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed) => {
                break;
            }
        }
    }
    Ok((events, guard.rv()))
}

/// A watch as opened under the store lock.
struct Started {
    /// Events to send before live ones.
    first: Vec<Arc<Event>>,
    /// Live events.
    rx: broadcast::Receiver<Arc<Event>>,
    /// The resourceVersion the watcher is up to once `first` is sent.
    seen: u64,
    /// Changes when the store ends all watches.
    cut: tokio::sync::watch::Receiver<u64>,
}

async fn run(
    store: Arc<Mutex<Store>>,
    req: WatchRequest,
    bookmark_interval: Duration,
    started: Started,
    tx: mpsc::Sender<Bytes>,
) {
    let Started {
        first,
        mut rx,
        mut seen,
        mut cut,
    } = started;
    let deadline = req.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + bookmark_interval,
        bookmark_interval,
    );
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let send = |tx: &mpsc::Sender<Bytes>, events: Vec<Arc<Event>>| {
        let lines: Vec<Bytes> = events
            .iter()
            .filter_map(|e| visible(&req, e))
            .map(|(t, o)| {
                let o = if req.table {
                    table::render(&req.kind, &[o], None, clock::now_seconds())
                } else {
                    o
                };
                line(t.as_str(), &o)
            })
            .collect();
        let tx = tx.clone();
        async move {
            for l in lines {
                if tx.send(l).await.is_err() {
                    return false;
                }
            }
            true
        }
    };
    if !send(&tx, first).await {
        return;
    }
    if req.initial_events_end && tx.send(bookmark(&req, seen, true)).await.is_err() {
        return;
    }
    loop {
        let timeout = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let outcome = tokio::select! {
            () = tx.closed() => return,
            _ = cut.changed() => return,
            () = timeout => return,
            _ = ticker.tick(), if req.bookmarks => drain(&store, &req, &mut rx, seen).map(|(events, rv)| (events, Some(rv))),
            received = rx.recv() => match received {
                Ok(event) => Ok((vec![event], None)),
                Err(broadcast::error::RecvError::Lagged(_)) => drain(&store, &req, &mut rx, seen).map(|(e, _)| (e, None)),
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        match outcome {
            Ok((events, bookmark_rv)) => {
                if let Some(last) = events.last() {
                    seen = seen.max(last.rv);
                }
                if !send(&tx, events).await {
                    return;
                }
                if let Some(rv) = bookmark_rv {
                    seen = seen.max(rv);
                    if tx.send(bookmark(&req, seen, false)).await.is_err() {
                        return;
                    }
                }
            }
            Err(error) => {
                let _ = tx.send(error_line(&error)).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::builtin_kinds;

    fn req(labels: &str) -> WatchRequest {
        WatchRequest {
            kind: builtin_kinds()
                .into_iter()
                .find(|k| k.plural == "pods")
                .expect("pods"),
            namespace: Some("default".into()),
            labels: LabelSelector::parse(labels).expect("selector"),
            fields: FieldSelector::default(),
            from: WatchFrom::Snapshot,
            initial_events_end: false,
            bookmarks: false,
            timeout: None,
            table: false,
        }
    }

    fn pod(app: &str, ns: &str) -> Arc<Value> {
        Arc::new(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": ns, "labels": {"app": app}}}),
        )
    }

    fn modified(before: &str, after: &str) -> Event {
        Event {
            rv: 5,
            event_type: EventType::Modified,
            type_key: (String::new(), "pods".into()),
            object: pod(after, "default"),
            previous: Some(pod(before, "default")),
        }
    }

    #[test]
    fn selector_transitions_become_added_and_deleted() {
        let r = req("app=web");
        assert_eq!(
            visible(&r, &modified("db", "web")).map(|v| v.0),
            Some(EventType::Added)
        );
        assert_eq!(
            visible(&r, &modified("web", "db")).map(|v| v.0),
            Some(EventType::Deleted)
        );
        assert_eq!(
            visible(&r, &modified("web", "web")).map(|v| v.0),
            Some(EventType::Modified)
        );
        assert!(visible(&r, &modified("db", "db")).is_none());
    }

    #[test]
    fn other_namespaces_and_types_are_invisible() {
        let r = req("");
        let mut e = modified("a", "a");
        e.object = pod("a", "other");
        e.previous = None;
        assert!(visible(&r, &e).is_none());
        let mut e = modified("a", "a");
        e.type_key = ("apps".into(), "pods".into());
        assert!(visible(&r, &e).is_none());
    }

    #[test]
    fn bookmarks_carry_resource_version_and_initial_end_marker() {
        let r = req("");
        let b: Value = serde_json::from_slice(&bookmark(&r, 42, true)).expect("json");
        assert_eq!(b["type"], "BOOKMARK");
        assert_eq!(b["object"]["metadata"]["resourceVersion"], "42");
        assert_eq!(
            b["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
            "true"
        );
        assert_eq!(b["object"]["kind"], "Pod");
    }
}
