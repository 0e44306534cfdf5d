//! Presence events (protocol v1.1, "Presence events"): `joined` when a
//! user's first connection anywhere in the cluster joins a room, `left` when
//! their last one leaves it (by `leave`, by disconnecting, or because their
//! gateway died), sent to the connections that joined the room with
//! `presence: true`, never about their own user.
//!
//! - `index.rs`: the pure decision (per room, per user, per gateway listings
//!   to events), unit-tested without I/O.
//! - `wire.rs`: the exchange's messages on the bus.
//! - this file, [`Presence`]: the edges. It hears per-user changes from the
//!   hub ([`RoomObserver`]) and reports from peers ([`PresenceInbox`]), feeds
//!   the index, delivers its events to local watchers, and reports this
//!   gateway's changes to the peers that watch a room.
//!
//! The exchange costs nothing for rooms nobody watches: a gateway reports a
//! room only while some gateway has asked for it with a watch, and a report
//! is one bus message per *user* change (a second tab is none). A gateway
//! that starts watching a room gets one snapshot from each peer; see
//! docs/cluster.md ("Presence events") for the costs and the failure cases.

pub mod index;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::Notify;

use self::index::{Event, PresenceIndex};
use self::wire::{Change, Report, Watch};
use crate::bus::{Bus, BusError, PresenceInbox};
use crate::delivery::frame::Frame;
use crate::delivery::hub::{Conn, ConnId, Hub, RoomObserver};
use crate::delivery::outbound::Pushed;
use crate::metrics::Metrics;
use crate::protocol;
use crate::room::RoomName;

/// How often queued work is looked at: snapshots owed after a full report queue.
const RESYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Watch set-ups and tear-downs of one room are serialized by one of these
/// locks (chosen by the room's hash), so different rooms proceed in parallel.
const SETUP_STRIPES: usize = 64;

/// Who watches a room: this gateway (a local connection joined it with
/// `presence: true`) and which peers.
#[derive(Debug, Default)]
struct Interest {
    local: bool,
    remote: HashSet<String>,
}

/// What the index and the watchers share, under one lock.
#[derive(Debug, Default)]
struct State {
    index: PresenceIndex,
    /// Local connections watching each room.
    watchers: HashMap<RoomName, HashMap<ConnId, Arc<Conn>>>,
}

/// The presence service of one gateway.
#[derive(Debug)]
pub struct Presence {
    /// This service itself, for the tasks it spawns.
    me: Weak<Presence>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    /// Numbers this gateway's reports in the order its rooms changed.
    seq: AtomicU64,
    /// Rooms watched here or by a peer; the hub's changes of other rooms
    /// cost one lookup here and nothing else.
    interest: DashMap<RoomName, Interest>,
    state: Mutex<State>,
    setup: Vec<tokio::sync::Mutex<()>>,
    hasher: RandomState,
    /// Woken whenever a snapshot is applied (a starting watch waits for them).
    snapshots: Notify,
    /// A report was dropped (full queue): the peers' views need snapshots.
    resync: AtomicBool,
    request_timeout: Duration,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the state consistent between statements.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Presence {
    /// The presence service of the gateway whose connections `hub` holds;
    /// it attaches itself to the hub and to the hub's bus.
    pub fn new(hub: Arc<Hub>, metrics: Arc<Metrics>, request_timeout: Duration) -> Arc<Self> {
        let presence = Arc::new_cyclic(|me| Self {
            me: me.clone(),
            hub,
            metrics,
            seq: AtomicU64::new(0),
            interest: DashMap::new(),
            state: Mutex::new(State::default()),
            setup: (0..SETUP_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            hasher: RandomState::new(),
            snapshots: Notify::new(),
            resync: AtomicBool::new(false),
            request_timeout,
        });
        let observer: Weak<Presence> = Arc::downgrade(&presence);
        presence.hub.observe(observer.clone());
        presence.bus().attach_presence(observer.clone());
        if matches!(presence.bus(), Bus::Nats(_)) {
            tokio::spawn(resync_when_owed(observer));
        }
        presence
    }

    fn bus(&self) -> &Bus {
        self.hub.bus()
    }

    fn instance(&self) -> &str {
        self.bus().instance()
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Relaxed) + 1
    }

    fn stripe(&self, room: &RoomName) -> &tokio::sync::Mutex<()> {
        let at = usize::try_from(self.hasher.hash_one(room)).unwrap_or_default();
        &self.setup[at % SETUP_STRIPES]
    }

    /// The users present in `room` across the cluster as this gateway's
    /// index knows them; `None` unless the room is watched here.
    pub fn members(&self, room: &RoomName) -> Option<Vec<Arc<str>>> {
        lock(&self.state).index.members(room)
    }

    /// Makes `conn` (already a member of `room`) receive the room's presence
    /// events. The first watcher on this gateway starts the room's watch:
    /// subscribes to its reports, asks the peers for theirs and waits (within
    /// the request timeout) for their snapshots, so every change after this
    /// returns reaches `conn`.
    pub async fn watch(&self, room: &RoomName, conn: &Arc<Conn>) -> Result<(), BusError> {
        let _setup = self.stripe(room).lock().await;
        {
            let mut state = lock(&self.state);
            if state.index.is_tracked(room) {
                let watchers = state.watchers.entry(room.clone()).or_default();
                watchers.insert(conn.id, conn.clone());
                return Ok(());
            }
        }
        self.interest.entry(room.clone()).or_default().local = true;
        self.hub.with_room_users(room, |users| {
            let seq = self.next_seq();
            let mut state = lock(&self.state);
            state.index.track(room);
            // No watcher yet: the state before the watch starts raises no events.
            let _ = state
                .index
                .snapshot(room, self.instance(), seq, users.cloned());
        });
        match self.start_watch(room).await {
            Ok(()) => {
                let mut state = lock(&self.state);
                let watchers = state.watchers.entry(room.clone()).or_default();
                watchers.insert(conn.id, conn.clone());
                Ok(())
            }
            Err(e) => {
                lock(&self.state).index.untrack(room);
                self.stop_local_interest(room);
                self.bus().presence_unsubscribe(room);
                Err(e)
            }
        }
    }

    async fn start_watch(&self, room: &RoomName) -> Result<(), BusError> {
        self.bus().presence_subscribe(room).await?;
        let answered = self
            .bus()
            .presence_watch(self.watch_message(room, true, None), true)
            .await?;
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        loop {
            let applied = self.snapshots.notified();
            tokio::pin!(applied);
            applied.as_mut().enable();
            let missing = {
                let state = lock(&self.state);
                answered
                    .iter()
                    .filter(|peer| !state.index.has_snapshot(room, peer))
                    .count()
            };
            if missing == 0 {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, applied).await.is_err() {
                // Its later reports still count; a resync completes its view.
                tracing::debug!(%room, missing, "presence snapshots not all in time");
                return Ok(());
            }
        }
    }

    fn watch_message(&self, room: &RoomName, on: bool, to: Option<&str>) -> Bytes {
        Bytes::from(wire::encode(&Watch {
            gateway: self.instance().to_owned(),
            room: room.to_string(),
            on,
            to: to.map(str::to_owned),
        }))
    }

    fn stop_local_interest(&self, room: &RoomName) {
        if let Some(mut interest) = self.interest.get_mut(room) {
            interest.local = false;
        }
        self.interest
            .remove_if(room, |_, i| !i.local && i.remote.is_empty());
    }

    /// Ends the room's watch on this gateway if no local watcher is left.
    async fn stop_watch_if_unwatched(&self, room: RoomName) {
        let _setup = self.stripe(&room).lock().await;
        {
            let mut state = lock(&self.state);
            if state.watchers.get(&room).is_some_and(|w| !w.is_empty())
                || !state.index.is_tracked(&room)
            {
                return;
            }
            state.watchers.remove(&room);
            state.index.untrack(&room);
        }
        self.stop_local_interest(&room);
        self.bus().presence_unsubscribe(&room);
        let off = self.watch_message(&room, false, None);
        if self.bus().presence_watch(off, false).await.is_err() {
            // Peers drop this gateway's watches when it reconnects or is gone.
            tracing::debug!(%room, "presence unwatch not sent");
        }
    }

    /// Sends the peers watching `room` a snapshot of its users here.
    fn report_snapshot(&self, room: &RoomName) {
        self.hub.with_room_users(room, |users| {
            let report = Report {
                gateway: self.instance().to_owned(),
                seq: self.next_seq(),
                change: Change::Snapshot {
                    all: users.map(|u| u.to_string()).collect(),
                },
            };
            self.report(room, &report);
        });
    }

    fn report(&self, room: &RoomName, report: &Report) {
        if !self
            .bus()
            .presence_report(room, Bytes::from(wire::encode(report)))
        {
            self.resync.store(true, Relaxed);
        }
    }

    /// Sends a snapshot of every room a peer watches.
    fn report_all_snapshots(&self) {
        let rooms: Vec<RoomName> = self
            .interest
            .iter()
            .filter(|e| !e.remote.is_empty())
            .map(|e| e.key().clone())
            .collect();
        for room in rooms {
            self.report_snapshot(&room);
        }
    }

    /// Announces every room watched here again (to `to`, or every peer).
    fn announce_watches(self: &Arc<Self>, to: Option<String>) {
        let rooms: Vec<RoomName> = lock(&self.state).index.rooms().cloned().collect();
        if rooms.is_empty() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            for room in rooms {
                let on = this.watch_message(&room, true, to.as_deref());
                if this.bus().presence_watch(on, false).await.is_err() {
                    this.resync.store(true, Relaxed);
                    return;
                }
            }
        });
    }

    /// Delivers `event` about `room` to the local watchers of another user.
    fn deliver(&self, state: &State, room: &RoomName, event: &Event) {
        let Some(watchers) = state.watchers.get(room) else {
            return;
        };
        let (joined, user) = match event {
            Event::Joined(user) => (true, user),
            Event::Left(user) => (false, user),
        };
        let frame = Frame::new(protocol::presence_event(joined, room, user));
        let (mut queued, mut written) = (0, 0);
        for conn in watchers.values() {
            if conn.user == *user {
                continue;
            }
            match conn.outbound.push(&frame) {
                Pushed::Written => written += 1,
                Pushed::Queued => {}
                Pushed::Refused => continue,
            }
            queued += 1;
        }
        self.metrics.presence_events.fetch_add(queued, Relaxed);
        self.metrics.frames_out.fetch_add(written, Relaxed);
    }
}

impl RoomObserver for Presence {
    fn user_changed(&self, room: &RoomName, user: &Arc<str>, present: bool) {
        let Some((local, remote)) = self
            .interest
            .get(room)
            .map(|i| (i.local, !i.remote.is_empty()))
        else {
            return;
        };
        let seq = self.next_seq();
        if remote {
            let report = Report {
                gateway: self.instance().to_owned(),
                seq,
                change: Change::Delta {
                    user: user.to_string(),
                    on: present,
                },
            };
            self.report(room, &report);
        }
        if local {
            let mut state = lock(&self.state);
            let instance = self.instance();
            if let Some(event) = state.index.delta(room, instance, seq, user, present) {
                self.deliver(&state, room, &event);
            }
        }
    }

    fn conn_left(&self, room: &RoomName, conn: ConnId) {
        if !self.interest.get(room).is_some_and(|i| i.local) {
            return;
        }
        let last = {
            let mut state = lock(&self.state);
            match state.watchers.get_mut(room) {
                Some(watchers) => watchers.remove(&conn).is_some() && watchers.is_empty(),
                None => false,
            }
        };
        if last
            && let Some(this) = self.me.upgrade()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let room = room.clone();
            runtime.spawn(async move { this.stop_watch_if_unwatched(room).await });
        }
    }
}

impl PresenceInbox for Presence {
    fn report(&self, room: &RoomName, payload: &[u8]) {
        let Some(report) = wire::decode_report(payload) else {
            tracing::warn!(%room, "malformed presence report dropped");
            return;
        };
        let mut state = lock(&self.state);
        let events = match report.change {
            Change::Delta { user, on } => state
                .index
                .delta(room, &report.gateway, report.seq, &user.into(), on)
                .into_iter()
                .collect(),
            Change::Snapshot { all } => {
                let all = all.into_iter().map(Arc::from);
                let events = state.index.snapshot(room, &report.gateway, report.seq, all);
                self.snapshots.notify_waiters();
                events
            }
        };
        for event in &events {
            self.deliver(&state, room, event);
        }
    }

    fn watch(&self, payload: &[u8]) {
        let Some(watch) = wire::decode_watch(payload) else {
            tracing::warn!("malformed presence watch dropped");
            return;
        };
        if watch.to.as_deref().is_some_and(|to| to != self.instance()) {
            return;
        }
        let Some(room) = RoomName::parse(&watch.room) else {
            return;
        };
        if watch.on {
            // Interest first: a change after the snapshot is then reported.
            self.interest
                .entry(room.clone())
                .or_default()
                .remote
                .insert(watch.gateway);
            self.report_snapshot(&room);
        } else {
            if let Some(mut interest) = self.interest.get_mut(&room) {
                interest.remote.remove(&watch.gateway);
            }
            self.interest
                .remove_if(&room, |_, i| !i.local && i.remote.is_empty());
        }
    }

    fn peer_arrived(&self, instance: &str) {
        if let Some(this) = self.me.upgrade() {
            this.announce_watches(Some(instance.to_owned()));
        }
    }

    fn peer_gone(&self, instance: &str) {
        for mut interest in self.interest.iter_mut() {
            interest.remote.remove(instance);
        }
        self.interest.retain(|_, i| i.local || !i.remote.is_empty());
        let mut state = lock(&self.state);
        for (room, event) in state.index.drop_gateway(instance) {
            self.deliver(&state, &room, &event);
        }
    }

    fn reconnected(&self) {
        self.report_all_snapshots();
        if let Some(this) = self.me.upgrade() {
            this.announce_watches(None);
        }
    }
}

/// Resends snapshots when reports were dropped (checked every [`RESYNC_INTERVAL`]).
async fn resync_when_owed(presence: Weak<Presence>) {
    let mut every = tokio::time::interval(RESYNC_INTERVAL);
    loop {
        every.tick().await;
        let Some(presence) = presence.upgrade() else {
            return;
        };
        if presence.resync.swap(false, Relaxed) {
            presence.report_all_snapshots();
            presence.announce_watches(None);
        }
    }
}
