//! The gateway's open connections and who is in which room
//! (and which connections belong to which user), with local fan-out.
//!
//! Membership is sharded twice so no lookup or join serializes all
//! connections: a concurrent map from topic to its members, and inside each
//! topic a read-write lock that fan-out only ever takes for reading. Bus
//! interest follows local membership: the first local member of a topic
//! subscribes the gateway to it on the bus, the last one to go unsubscribes.
//! What the bus receives from other gateways comes in through [`Inbox`].
//!
//! Each room also counts its members' connections per user, so the hub can
//! tell a [`RoomObserver`] (the presence service) when a user's first
//! connection here joins a room or their last one leaves: presence events
//! are per user, and three tabs are one user.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};

use super::batch;
use super::coalesce::Coalescer;
use super::frame::Frame;
use super::gate::{Admitted, Gate, Mark, read_after};
use super::outbound::{Close, Direct, Outbound, Pushed, PushedMany};
use crate::bus::{Bus, BusError, Command, Inbox, Topic};
use crate::history::jetstream::{Republished, SKIP_HEADER, shard_of};
use crate::history::recovery::Read;
use crate::history::{HistoryError, Position, Store};
use crate::metrics::Metrics;
use crate::protocol;
use crate::room::RoomName;
use crate::trace;

/// Locks that order an in-process history room's appends with their
/// fan-out (rooms hashed over them), so members see the store's order.
const ORDER_LOCKS: usize = 64;

/// Live messages a suspended history gate holds while the bus reconnects
/// and the store is read; a member that gets more is asked to rejoin.
const REPAIR_BUFFER: usize = 4096;

/// How long a repair keeps trying to read a room's history (a JetStream
/// leader election takes a few seconds) before its members are asked to
/// rejoin, and how long it waits between tries.
const REPAIR_PATIENCE: Duration = Duration::from_secs(30);
const REPAIR_RETRY: Duration = Duration::from_millis(250);

/// A copy of `read` whose frames share their bytes (one per member repaired).
fn share(read: &Read<Frame>) -> Read<Frame> {
    Read {
        position: read.position.clone(),
        complete: read.complete,
        messages: read.messages.iter().map(|(o, f)| (*o, f.share())).collect(),
    }
}

/// Process-unique connection number.
pub type ConnId = u64;

/// One open connection (whatever its transport), as the rest of the gateway sees it.
#[derive(Debug)]
pub struct Conn {
    /// Map key; never sent to clients.
    pub id: ConnId,
    /// The session id sent in `welcome`.
    pub session: Arc<str>,
    /// The user id (token `sub`, or the session id when anonymous).
    pub user: Arc<str>,
    /// Frames waiting to be written to this connection.
    pub outbound: Outbound,
}

impl AsRef<Outbound> for Conn {
    fn as_ref(&self) -> &Outbound {
        &self.outbound
    }
}

/// Told when a user's first connection on this gateway joins a room or
/// their last one leaves. Called with the room's member list locked, so the
/// calls for one room come in the order the changes happened; it must not
/// block or call back into the hub.
pub trait RoomObserver: Send + Sync + std::fmt::Debug {
    /// `user` is now present in `room` on this gateway (`present`), or gone.
    fn user_changed(&self, room: &RoomName, user: &Arc<str>, present: bool);

    /// Connection `conn` left `room` (by `leave`, by disconnecting, or by
    /// any other way out of the room).
    fn conn_left(&self, room: &RoomName, conn: ConnId);
}

/// Members of one topic and the state of the gateway's bus subscription to it.
#[derive(Debug, Default)]
struct Members {
    conns: RwLock<HashMap<ConnId, Arc<Conn>>>,
    /// Of a history room: each member's gate (see `gate.rs`).
    gates: RwLock<HashMap<ConnId, Arc<Gate>>>,
    /// Connections per user (rooms only); changed only with `conns` write-locked.
    users: Mutex<HashMap<Arc<str>, u32>>,
    /// Held across bus (un)subscribe calls so joins and leaves of one topic
    /// see a consistent subscription; other topics are unaffected.
    interest: tokio::sync::Mutex<Interest>,
}

#[derive(Debug, Default)]
struct Interest {
    /// The bus subscription is live.
    subscribed: bool,
    /// Removed from the map: a joiner holding this entry must look again.
    retired: bool,
}

impl Members {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ConnId, Arc<Conn>>> {
        // Updates are single inserts/removes, so a poisoned map is still consistent.
        self.conns.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<ConnId, Arc<Conn>>> {
        self.conns.write().unwrap_or_else(|e| e.into_inner())
    }

    fn gates(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ConnId, Arc<Gate>>> {
        self.gates.read().unwrap_or_else(|e| e.into_inner())
    }

    fn gates_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<ConnId, Arc<Gate>>> {
        self.gates.write().unwrap_or_else(|e| e.into_inner())
    }

    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, u32>> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one more (`joined`) or one fewer connection of `user`; true
    /// when that was the user's first or last one. Call with `conns` write-locked.
    fn count_user(&self, user: &Arc<str>, joined: bool) -> bool {
        let mut users = self.users();
        if joined {
            let count = users.entry(user.clone()).or_insert(0);
            *count += 1;
            *count == 1
        } else {
            match users.get_mut(user) {
                Some(count) if *count > 1 => {
                    *count -= 1;
                    false
                }
                Some(_) => {
                    users.remove(user);
                    true
                }
                None => false,
            }
        }
    }
}

/// How [`Hub::add`] treats a bus that cannot subscribe.
#[derive(Debug, Clone, Copy, PartialEq)]
enum OnBusError {
    /// Refuse the membership (a join answers `unavailable`).
    Refuse,
    /// Record it anyway, unsubscribed (a connection's own user topic: local
    /// delivery still works, and the subscription can be restored later).
    Keep,
}

/// What one fan-out did, for the counters.
#[derive(Default)]
struct Fanout {
    /// Connections that took the frames.
    taken: usize,
    written: u64,
    writes: u64,
    /// Connections whose frames are held for a coalesced write.
    held: Vec<(Instant, Arc<Conn>)>,
}

impl Fanout {
    fn count(&mut self, conn: &Arc<Conn>, pushed: PushedMany) {
        self.written += pushed.written;
        self.writes += pushed.writes;
        if pushed.pushed != Pushed::Refused {
            self.taken += 1;
        }
        if let Some(due) = pushed.held_until {
            self.held.push((due, conn.clone()));
        }
    }

    /// Pushes `frame` to the members `steps` decides, the sends of those that
    /// can take it now made [`batch::BATCH`] at a time in one system call.
    /// The others (a queue to keep behind, a write delay, another push under
    /// way) are pushed with `after` once each batch is finished. A step's
    /// hold (a history room's gate) is kept until its member's push is done.
    /// No deadlock: while a batch holds connections' locks it waits for no
    /// other lock, and an `after` push, its gate held, waits only for its
    /// own connection's lock, whose holders never wait for a gate.
    fn batched<'a, H>(
        &mut self,
        frame: &Frame,
        steps: impl Iterator<Item = Step<'a, H>>,
        after: impl Fn(&Conn) -> PushedMany,
    ) {
        let mut sends = Vec::with_capacity(batch::BATCH);
        let mut afters = Vec::new();
        let mut results = Vec::with_capacity(batch::BATCH);
        let mut steps = steps.peekable();
        while steps.peek().is_some() {
            for step in steps.by_ref() {
                match step {
                    Step::Send(conn, hold, direct) => sends.push((conn, hold, direct)),
                    Step::After(conn, hold) => afters.push((conn, hold)),
                }
                if sends.len() == batch::BATCH {
                    break;
                }
            }
            let batch: Vec<batch::Send<'_>> = sends
                .iter()
                .map(|(_, _, direct)| batch::Send {
                    fd: direct.fd,
                    bytes: direct.bytes(frame),
                })
                .collect();
            batch::send_each(&batch, &mut results);
            drop(batch);
            for ((conn, hold, direct), sent) in sends.drain(..).zip(results.drain(..)) {
                self.count(conn, direct.finish(frame, sent));
                drop(hold);
            }
            for (conn, hold) in afters.drain(..) {
                self.count(conn, after(conn));
                drop(hold);
            }
        }
    }
}

/// One member's part in a batched fan-out, decided without waiting.
enum Step<'a, H> {
    /// Its send goes in the batch; `H` is held until it is finished.
    Send(&'a Arc<Conn>, H, Direct<'a>),
    /// Pushed the usual way after the batch; `H` is held until then.
    After(&'a Arc<Conn>, H),
}

impl<'a, H> Step<'a, H> {
    fn of(conn: &'a Arc<Conn>, hold: H) -> Self {
        match conn.outbound.direct() {
            Some(direct) => Step::Send(conn, hold, direct),
            None => Step::After(conn, hold),
        }
    }
}

/// Connections and memberships of this gateway.
#[derive(Debug)]
pub struct Hub {
    topics: DashMap<Topic, Arc<Members>>,
    conns: DashMap<ConnId, Arc<Conn>>,
    next_id: AtomicU64,
    bus: Bus,
    metrics: Arc<Metrics>,
    /// Woken whenever a connection goes away.
    gone: Notify,
    /// Where history rooms keep their messages, when a namespace has history.
    history: OnceLock<Arc<Store>>,
    /// Names this gateway in the skip header of a stored publish without echo.
    origin: String,
    /// See [`ORDER_LOCKS`].
    order: Box<[Mutex<()>]>,
    /// Rooms the server API took connections out of, until their sessions
    /// learn it ([`Hub::take_evicted`]); empty for almost every connection.
    evicted: DashMap<ConnId, Vec<RoomName>>,
    /// Told of per-user room changes (the presence service), once attached.
    observer: OnceLock<Weak<dyn RoomObserver>>,
    /// Writes fan-out frames held by a write delay when their window ends.
    coalescer: Coalescer<Conn>,
    /// Fan-out writes go out in batches ([`Hub::batch_writes`]).
    batched: AtomicBool,
}

impl Hub {
    /// An empty hub on `bus`, which delivers what it receives into it.
    pub fn new(bus: Bus, metrics: Arc<Metrics>) -> Arc<Self> {
        if matches!(bus, Bus::Local) {
            metrics.bus_up.store(1, Relaxed);
        }
        let hub = Arc::new(Self {
            topics: DashMap::new(),
            conns: DashMap::new(),
            next_id: AtomicU64::new(1),
            bus,
            gone: Notify::new(),
            history: OnceLock::new(),
            origin: format!("{:016x}", rand::random::<u64>()),
            order: (0..ORDER_LOCKS).map(|_| Mutex::new(())).collect(),
            evicted: DashMap::new(),
            observer: OnceLock::new(),
            coalescer: Coalescer::new(metrics.clone()),
            batched: AtomicBool::new(false),
            metrics,
        });
        let inbox: Weak<Hub> = Arc::downgrade(&hub);
        hub.bus.attach(inbox);
        hub
    }

    /// Subscribes every topic that has local members but no live bus
    /// subscription (users who connected while the bus was down). Called
    /// when the bus connection comes back; subscriptions that were live
    /// are restored by the bus client itself.
    pub async fn restore_subscriptions(&self) {
        let topics: Vec<(Topic, Arc<Members>)> = self
            .topics
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        for (topic, members) in topics {
            let mut interest = members.interest.lock().await;
            if interest.subscribed || interest.retired || members.read().is_empty() {
                continue;
            }
            match self.bus.subscribe(&topic).await {
                Ok(()) => {
                    interest.subscribed = true;
                    self.metrics.bus_subscriptions.fetch_add(1, Relaxed);
                }
                Err(e) => tracing::warn!(?topic, error = %e, "subscription not restored"),
            }
        }
    }

    /// Repairs every history room with members on this gateway (see
    /// [`Hub::repair_room`]): called when the bus connection comes back, so
    /// that rooms with no message since then get what they missed too.
    pub async fn repair_history(&self) {
        if self.history.get().is_none() {
            return;
        }
        let rooms: Vec<RoomName> = self
            .topics
            .iter()
            .filter_map(|e| match e.key() {
                Topic::Room(room) if !e.value().gates().is_empty() => Some(room.clone()),
                _ => None,
            })
            .collect();
        // One patience for them all: a store that does not answer costs one
        // wait, not one per room.
        let deadline = Instant::now() + REPAIR_PATIENCE;
        for room in rooms {
            self.repair_room(&room, deadline).await;
        }
    }

    /// Gives the members of the history room `room` what the bus missed
    /// while its connection was being replaced (core NATS is at most once):
    /// holds live messages back from every open gate, reads the room's
    /// history after the members' oldest mark, then each gate replays what
    /// its member lacks, in offset order and once, and opens again. The
    /// read is retried until `deadline` (a JetStream leader may be being
    /// elected). A member the store cannot make whole (the messages
    /// were trimmed, the history was recreated, more arrived than its gate
    /// holds, or the store did not answer in time) is closed with 1012 so
    /// that its client rejoins with `since` and learns `recovered`.
    pub async fn repair_room(&self, room: &RoomName, deadline: Instant) {
        let Some(store) = self.history.get().cloned() else {
            return;
        };
        let Some(members) = self
            .topics
            .get(&Topic::Room(room.clone()))
            .map(|e| e.value().clone())
        else {
            return;
        };
        let gates: Vec<(ConnId, Arc<Gate>)> = members
            .gates()
            .iter()
            .map(|(id, gate)| (*id, gate.clone()))
            .collect();
        // Suspended before the read: what arrives from now on waits in the
        // gates, and the read covers everything before it.
        let mut from: Option<u64> = None;
        for (_, gate) in &gates {
            gate.suspend(REPAIR_BUFFER);
            if let Some(since) = gate.suspended_since() {
                from = Some(from.map_or(since.offset, |f| f.min(since.offset)));
            }
        }
        let Some(from) = from else { return };
        let read = loop {
            match read_after(&store, room.as_str(), from).await {
                Ok(read) => break Ok(read),
                Err(e) if Instant::now() + REPAIR_RETRY >= deadline => break Err(e),
                Err(_) => tokio::time::sleep(REPAIR_RETRY).await,
            }
        };
        let mut closed = 0;
        for (id, gate) in gates {
            let Some(conn) = members.read().get(&id).cloned() else {
                continue;
            };
            let whole = match &read {
                Ok(read) => {
                    let mut whole = false;
                    match gate.resume(share(read), |outcome| {
                        whole = outcome.recovered == Some(true);
                        if whole {
                            for frame in outcome.before_ok.iter().chain(&outcome.after_ok) {
                                conn.outbound.push(frame);
                            }
                        }
                    }) {
                        Ok(true) => whole,
                        // Not suspended (a join in progress, or resumed by a
                        // concurrent repair): nothing of ours to answer.
                        Ok(false) => true,
                        Err(_) => false,
                    }
                }
                Err(_) => gate.suspended_since().is_none(),
            };
            if !whole && conn.outbound.close(Close::RECOVER) {
                closed += 1;
            }
        }
        match (&read, closed) {
            (Err(e), _) => {
                tracing::warn!(%room, error = %e, "history not read after the bus connection was replaced; its members were asked to rejoin")
            }
            (Ok(_), 0) => {}
            (Ok(_), n) => {
                tracing::warn!(%room, members = n, "missed messages no longer kept; members asked to rejoin")
            }
        }
    }

    /// Lets `observer` follow per-user room changes (called once, by the presence service).
    pub fn observe(&self, observer: Weak<dyn RoomObserver>) {
        let _ = self.observer.set(observer);
    }

    fn observer(&self) -> Option<Arc<dyn RoomObserver>> {
        self.observer.get().and_then(Weak::upgrade)
    }

    fn user_changed(&self, topic: &Topic, user: &Arc<str>, present: bool) {
        if let (Topic::Room(room), Some(observer)) = (topic, self.observer()) {
            observer.user_changed(room, user, present);
        }
    }

    /// Runs `f` on the distinct users joined to `room` on this gateway, with
    /// the room's member list locked: no [`RoomObserver`] call for the room
    /// can come in between, so what `f` sees and the changes reported after
    /// it are one ordered history.
    pub fn with_room_users<R>(
        &self,
        room: &RoomName,
        f: impl FnOnce(&mut dyn Iterator<Item = &Arc<str>>) -> R,
    ) -> R {
        // The map's entry guard keeps a first member from appearing meanwhile.
        match self.topics.entry(Topic::Room(room.clone())) {
            Entry::Vacant(_) => f(&mut std::iter::empty()),
            Entry::Occupied(entry) => {
                let members = entry.get();
                let _conns = members.read();
                let users = members.users();
                f(&mut users.keys())
            }
        }
    }

    /// The bus this hub relays through.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Gives the hub the history store (once, at start-up).
    pub fn set_history(&self, store: Arc<Store>) {
        let _ = self.history.set(store);
    }

    /// The history store, when a namespace has history.
    pub fn history(&self) -> Option<&Arc<Store>> {
        self.history.get()
    }

    /// A fresh connection number.
    pub fn next_conn_id(&self) -> ConnId {
        self.next_id.fetch_add(1, Relaxed)
    }

    /// Registers an open connection and makes it reachable by its user id.
    pub async fn connect(&self, conn: &Arc<Conn>) {
        self.conns.insert(conn.id, conn.clone());
        self.metrics.connections.fetch_add(1, Relaxed);
        self.metrics.connections_opened.fetch_add(1, Relaxed);
        let topic = Topic::User(conn.user.clone());
        if let Err(e) = self.add(&topic, conn, OnBusError::Keep, None).await {
            tracing::warn!(user = %conn.user, error = %e, "user subscription not live on the bus");
        }
    }

    /// Forgets a connection: leaves its rooms and its user topic.
    pub async fn disconnect(&self, conn: &Conn, rooms: impl IntoIterator<Item = RoomName>) {
        for room in rooms {
            self.remove(&Topic::Room(room), conn.id).await;
        }
        self.remove(&Topic::User(conn.user.clone()), conn.id).await;
        if self.conns.remove(&conn.id).is_some() {
            self.metrics.connections.fetch_sub(1, Relaxed);
        }
        self.evicted.remove(&conn.id);
        self.gone.notify_waiters();
    }

    /// Resolves once no connection is open, or at `deadline`.
    pub async fn wait_empty(&self, deadline: Instant) {
        loop {
            let gone = self.gone.notified();
            tokio::pin!(gone);
            gone.as_mut().enable();
            if self.conns.is_empty() {
                return;
            }
            tokio::select! {
                _ = gone => {}
                _ = sleep_until(deadline) => return,
            }
        }
    }

    /// Adds `conn` to `room`; returns once the room's bus subscription is live.
    pub async fn join(&self, room: &RoomName, conn: &Arc<Conn>) -> Result<(), BusError> {
        self.add(&Topic::Room(room.clone()), conn, OnBusError::Refuse, None)
            .await?;
        self.metrics.joins.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Adds `conn` to the history room `room` behind `gate`; returns once
    /// the room's bus subscription is live. From then on every stored
    /// message of the room reaches the gate.
    pub async fn join_gated(
        &self,
        room: &RoomName,
        conn: &Arc<Conn>,
        gate: Arc<Gate>,
    ) -> Result<(), BusError> {
        self.add(
            &Topic::Room(room.clone()),
            conn,
            OnBusError::Refuse,
            Some(gate),
        )
        .await?;
        self.metrics.joins.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Removes `conn` from `room` (a no-op when it is not a member); says
    /// whether it was one.
    pub async fn leave(&self, room: &RoomName, conn: ConnId) -> bool {
        self.remove(&Topic::Room(room.clone()), conn).await
    }

    async fn add(
        &self,
        topic: &Topic,
        conn: &Arc<Conn>,
        on_error: OnBusError,
        gate: Option<Arc<Gate>>,
    ) -> Result<(), BusError> {
        loop {
            let members = self
                .topics
                .entry(topic.clone())
                .or_default()
                .value()
                .clone();
            let mut interest = members.interest.lock().await;
            if interest.retired {
                continue;
            }
            let mut outcome = Ok(());
            if !interest.subscribed {
                match self.bus.subscribe(topic).await {
                    Ok(()) => {
                        interest.subscribed = true;
                        self.metrics.bus_subscriptions.fetch_add(1, Relaxed);
                    }
                    Err(e) if on_error == OnBusError::Keep => outcome = Err(e),
                    Err(e) => {
                        if members.read().is_empty() {
                            self.retire(topic, &members, &mut interest);
                        }
                        return Err(e);
                    }
                }
            }
            if let Some(gate) = &gate {
                // Before the membership: a fan-out that finds the member finds its gate.
                members.gates_mut().insert(conn.id, gate.clone());
            }
            let first = {
                let mut conns = members.write();
                let first = conns.is_empty();
                let added = conns.insert(conn.id, conn.clone()).is_none();
                if added && matches!(topic, Topic::Room(_)) && members.count_user(&conn.user, true)
                {
                    self.user_changed(topic, &conn.user, true);
                }
                first
            };
            if first && matches!(topic, Topic::Room(_)) {
                self.metrics.rooms.fetch_add(1, Relaxed);
            }
            return outcome;
        }
    }

    /// Removes `conn` from `topic`; says whether it was a member.
    async fn remove(&self, topic: &Topic, conn: ConnId) -> bool {
        let Some(members) = self.topics.get(topic).map(|e| e.value().clone()) else {
            return false;
        };
        let mut interest = members.interest.lock().await;
        let (removed, emptied) = {
            let mut conns = members.write();
            let removed = conns.remove(&conn);
            if let Some(gone) = &removed
                && matches!(topic, Topic::Room(_))
                && members.count_user(&gone.user, false)
            {
                self.user_changed(topic, &gone.user, false);
            }
            (removed.is_some(), removed.is_some() && conns.is_empty())
        };
        members.gates_mut().remove(&conn);
        if let (Topic::Room(room), Some(observer)) = (topic, self.observer()) {
            observer.conn_left(room, conn);
        }
        if !emptied || interest.retired {
            return removed;
        }
        if matches!(topic, Topic::Room(_)) {
            self.metrics.rooms.fetch_sub(1, Relaxed);
        }
        if interest.subscribed {
            self.bus.unsubscribe(topic).await;
            interest.subscribed = false;
            self.metrics.bus_subscriptions.fetch_sub(1, Relaxed);
        }
        self.retire(topic, &members, &mut interest);
        true
    }

    fn retire(&self, topic: &Topic, members: &Arc<Members>, interest: &mut Interest) {
        interest.retired = true;
        self.topics
            .remove_if(topic, |_, current| Arc::ptr_eq(current, members));
    }

    /// Delivers a frame to this gateway's members of `topic`, except `skip`:
    /// written straight to each socket that can take it, queued (sharing the
    /// frame's encoded bytes) for the others. Returns how many connections
    /// took it.
    pub fn deliver(&self, topic: &Topic, frame: &Frame, skip: Option<ConnId>) -> usize {
        self.deliver_many(topic, std::slice::from_ref(frame), skip)
    }

    /// Delivers frames, in order, to this gateway's members of `topic`
    /// (except `skip`): each connection gets them in one push, so a socket
    /// that can take them all gets them in one write. Returns how many
    /// connections took them.
    pub fn deliver_many(&self, topic: &Topic, frames: &[Frame], skip: Option<ConnId>) -> usize {
        let Some(members) = self.topics.get(topic).map(|e| e.value().clone()) else {
            return 0;
        };
        let started = std::time::Instant::now();
        let mut fanout = Fanout::default();
        {
            let members = members.read();
            let conns = members.values().filter(|conn| Some(conn.id) != skip);
            match frames {
                [frame] if self.batched.load(Relaxed) => {
                    fanout.batched(frame, conns.map(|conn| Step::of(conn, ())), |conn| {
                        conn.outbound.push_many(frames)
                    })
                }
                _ => conns.for_each(|conn| fanout.count(conn, conn.outbound.push_many(frames))),
            }
        }
        self.coalescer.hold(fanout.held);
        // Counted once per fan-out: a shared counter per write would bounce
        // between cores.
        self.metrics.frames_out.fetch_add(fanout.written, Relaxed);
        self.metrics.frame_writes.fetch_add(fanout.writes, Relaxed);
        self.metrics.fanout_seconds.observe(started.elapsed());
        fanout.taken
    }

    /// Batches the fan-out's socket writes in one system call each
    /// [`batch::BATCH`] connections ([`batch`]) from now on, when the kernel
    /// allows it. Returns whether it does.
    pub fn batch_writes(&self, on: bool) -> bool {
        let on = on && batch::available();
        self.batched.store(on, Relaxed);
        self.metrics.io_uring.store(i64::from(on), Relaxed);
        on
    }

    /// Delivers a stored message of a history room to this gateway's
    /// members of `topic`, except `skip`, each through its gate. Returns how
    /// many connections took it.
    pub fn deliver_stored(
        &self,
        topic: &Topic,
        frame: &Frame,
        mark: Mark<'_>,
        skip: Option<ConnId>,
    ) -> usize {
        let Some(members) = self.topics.get(topic).map(|e| e.value().clone()) else {
            return 0;
        };
        let started = std::time::Instant::now();
        let mut fanout = Fanout::default();
        let gates = members.gates();
        let conns = members.read();
        let conns = conns.values().filter(|conn| Some(conn.id) != skip);
        let offer = |gate: &Gate, conn: &Conn| gate.offer(mark, frame, &conn.outbound);
        if self.batched.load(Relaxed) {
            // Gates held elsewhere are offered once the batches are done.
            let mut busy = Vec::new();
            let steps = conns.filter_map(|conn| {
                let Some(gate) = gates.get(&conn.id) else {
                    return Some(Step::of(conn, None));
                };
                match gate.try_admit(mark, frame) {
                    Admitted::Yes(held) => Some(Step::of(conn, Some(held))),
                    Admitted::No => None,
                    Admitted::Busy => {
                        busy.push((conn, gate));
                        None
                    }
                }
            });
            fanout.batched(frame, steps, |conn| conn.outbound.push(frame).into());
            for (conn, gate) in busy {
                if let Some(pushed) = offer(gate, conn) {
                    fanout.count(conn, pushed.into());
                }
            }
        } else {
            for conn in conns {
                let pushed = match gates.get(&conn.id) {
                    Some(gate) => offer(gate, conn),
                    None => Some(conn.outbound.push(frame)),
                };
                if let Some(pushed) = pushed {
                    fanout.count(conn, pushed.into());
                }
            }
        }
        self.metrics.frames_out.fetch_add(fanout.written, Relaxed);
        self.metrics.frame_writes.fetch_add(fanout.writes, Relaxed);
        self.metrics.fanout_seconds.observe(started.elapsed());
        fanout.taken
    }

    /// Publishes `payload` (a `message` frame's bus payload: JSON, or
    /// MessagePack from a MessagePack client) to the history room `room`: it
    /// is accepted once stored, and members everywhere receive it in the
    /// store's order. In process the append and the local fan-out happen
    /// under the room's order lock; on NATS the stream RePublishes it to
    /// every member gateway, this one included. Returns its position and
    /// how many local connections took it (0 on NATS: they get it from the
    /// RePublish).
    pub async fn publish_stored(
        &self,
        room: &RoomName,
        payload: Bytes,
        skip: Option<ConnId>,
    ) -> Result<(Position, usize), HistoryError> {
        let store = self.history.get().ok_or(HistoryError::NoHistory)?;
        match &**store {
            Store::Memory(memory) => {
                let lock = &self.order[shard_of(room.as_str(), ORDER_LOCKS as u32) as usize];
                let _ordered = lock.lock().unwrap_or_else(|p| p.into_inner());
                let position =
                    memory.append_at(room.as_str(), payload.clone(), std::time::Instant::now())?;
                let frame = Frame::stored(&payload, position.offset, position.epoch.as_str());
                let mark = Mark {
                    epoch: &position.epoch,
                    offset: position.offset,
                };
                let local = self.deliver_stored(&Topic::Room(room.clone()), &frame, mark, skip);
                Ok((position, local))
            }
            Store::JetStream(jetstream) => {
                if !self.bus.is_up() {
                    return Err(HistoryError::Unavailable(BusError::Unavailable.to_string()));
                }
                let headers = skip.map(|conn| {
                    let mut headers = HeaderMap::new();
                    headers.insert(SKIP_HEADER, format!("{}:{conn}", self.origin).as_str());
                    headers
                });
                let position = jetstream
                    .append_with(room.as_str(), payload, headers)
                    .await?;
                Ok((position, 0))
            }
        }
    }

    /// A stored message RePublished by the stream to this gateway: stamped
    /// with its offset and epoch once, then fanned out through the gates.
    async fn receive_republished(
        &self,
        topic: &Topic,
        payload: Bytes,
        at: Republished,
        skip: Option<String>,
    ) -> usize {
        let Some(Store::JetStream(jetstream)) = self.history.get().map(|s| &**s) else {
            return 0;
        };
        let epoch = match jetstream.epoch_of_republished(&at.stream, at.offset).await {
            Ok(epoch) => epoch,
            Err(e) => {
                tracing::warn!(?topic, offset = at.offset, error = %e, "stored message without a known epoch dropped");
                return 0;
            }
        };
        let frame = Frame::stored(&payload, at.offset, epoch.as_str());
        let skip = skip
            .as_deref()
            .and_then(|s| s.strip_prefix(self.origin.as_str()))
            .and_then(|s| s.strip_prefix(':'))
            .and_then(|s| s.parse().ok());
        let mark = Mark {
            epoch: &epoch,
            offset: at.offset,
        };
        self.deliver_stored(topic, &frame, mark, skip)
    }

    /// Delivers to `topic`'s members on every gateway: through the bus, then
    /// locally. Fails without delivering anything while the bus is down.
    /// `trace` is the publish's trace when it was sampled (see `trace.rs`).
    /// Returns how many local connections took it.
    pub async fn publish(
        &self,
        topic: &Topic,
        frame: &Frame,
        skip: Option<ConnId>,
        trace: Option<&trace::Publish>,
    ) -> Result<usize, BusError> {
        if !self.bus.is_up() {
            return Err(BusError::Unavailable);
        }
        // The bus first: other gateways start their fan-out while this one
        // does its own.
        self.bus.publish(topic, frame, trace).await?;
        // The NATS client's task, woken by that publish, sits in this worker's
        // LIFO slot, which no other worker may steal: it would write to NATS
        // only after this task's whole local fan-out. Yielding lets it write
        // first (docs/performance.md: remote deliveries' p50 was twice the
        // local ones' at 50,000/s). The in-process bus has no such task.
        if !matches!(self.bus, Bus::Local) {
            tokio::task::yield_now().await;
        }
        Ok(trace::fanout(trace, || self.deliver(topic, frame, skip)))
    }

    /// Distinct user ids joined to `room` on this gateway.
    pub fn local_members(&self, room: &RoomName) -> Vec<String> {
        let Some(members) = self
            .topics
            .get(&Topic::Room(room.clone()))
            .map(|e| e.value().clone())
        else {
            return Vec::new();
        };
        let mut users: Vec<String> = members
            .read()
            .values()
            .map(|c| c.user.to_string())
            .collect();
        users.sort_unstable();
        users.dedup();
        users
    }

    /// Distinct user ids joined to `room` across the cluster.
    pub async fn presence(&self, room: &RoomName) -> Result<Vec<String>, BusError> {
        let mut users = self.bus.remote_members(room).await?;
        users.extend(self.local_members(room));
        users.sort_unstable();
        users.dedup();
        Ok(users)
    }

    /// Carries out a server API command in the whole cluster: sent to the
    /// other gateways through the bus, then carried out here. Fails, doing
    /// nothing, while the bus is down.
    pub async fn command(&self, command: &Command) -> Result<(), BusError> {
        if !self.bus.is_up() {
            return Err(BusError::Unavailable);
        }
        self.bus.command(command).await?;
        self.execute(command).await;
        Ok(())
    }

    /// Carries out a command on this gateway's connections of its user.
    pub async fn execute(&self, command: &Command) {
        let conns: Vec<Arc<Conn>> = match self.topics.get(&Topic::User(command.user().into())) {
            Some(members) => members.value().read().values().cloned().collect(),
            None => return,
        };
        match command {
            Command::Disconnect { .. } => {
                for conn in conns {
                    conn.outbound.close(Close::DISCONNECTED);
                }
            }
            Command::Unsubscribe { room, .. } => {
                let frame = Frame::new(protocol::unsubscribed(room));
                for conn in conns {
                    if !self.leave(room, conn.id).await {
                        continue;
                    }
                    self.evicted.entry(conn.id).or_default().push(room.clone());
                    // A connection that ended meanwhile has no session left
                    // to learn it (see `disconnect`).
                    if !self.conns.contains_key(&conn.id) {
                        self.evicted.remove(&conn.id);
                    }
                    if conn.outbound.push(&frame) == Pushed::Written {
                        self.metrics.frames_out.fetch_add(1, Relaxed);
                    }
                }
            }
        }
    }

    /// The rooms the server API took `conn` out of since the last call: its
    /// session forgets them before it relies on what it has joined.
    pub fn take_evicted(&self, conn: ConnId) -> Vec<RoomName> {
        self.evicted
            .remove(&conn)
            .map(|(_, rooms)| rooms)
            .unwrap_or_default()
    }

    /// Every open connection (for a drain).
    pub fn connections(&self) -> Vec<Arc<Conn>> {
        self.conns.iter().map(|e| e.value().clone()).collect()
    }

    /// How many connections are open.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }
}

impl Inbox for Hub {
    fn receive(&self, topic: &Topic, frame: &Frame) -> usize {
        self.deliver(topic, frame, None)
    }

    fn receive_many(&self, topic: &Topic, frames: &[Frame]) -> usize {
        self.deliver_many(topic, frames, None)
    }

    fn local_members(&self, room: &RoomName) -> Vec<String> {
        Hub::local_members(self, room)
    }

    fn resubscribe(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.restore_subscriptions())
    }

    fn repair_all(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.repair_history())
    }

    fn receive_stored<'a>(
        &'a self,
        topic: &'a Topic,
        payload: Bytes,
        at: Republished,
        skip: Option<String>,
    ) -> Pin<Box<dyn Future<Output = usize> + Send + 'a>> {
        Box::pin(self.receive_republished(topic, payload, at, skip))
    }

    fn repair<'a>(&'a self, topic: &'a Topic) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            if let Topic::Room(room) = topic {
                self.repair_room(room, Instant::now() + REPAIR_PATIENCE)
                    .await;
            }
        })
    }

    fn command(&self, command: Command) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move { self.execute(&command).await })
    }
}

#[cfg(test)]
mod tests {
    use std::io::{self, IoSlice};
    use std::sync::Mutex;

    use super::*;
    use crate::delivery::frame::Format;
    use crate::delivery::outbound::{Flush, QueueLimits, Wire};

    fn hub() -> (Arc<Hub>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        (Hub::new(Bus::Local, metrics.clone()), metrics)
    }

    /// A socket that takes every write whole and keeps each one.
    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<Vec<u8>>>);

    impl Wire for Recorder {
        fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let write: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = write.len();
            self.0.lock().unwrap().push(write);
            Ok(n)
        }
    }

    thread_local! {
        /// Each test connection's socket, by connection id (tests run on
        /// one thread each).
        static SOCKETS: std::cell::RefCell<HashMap<ConnId, Arc<Recorder>>> = Default::default();
    }

    fn conn(hub: &Hub, user: &str, metrics: &Arc<Metrics>) -> Arc<Conn> {
        let id = hub.next_conn_id();
        let socket = Arc::new(Recorder::default());
        SOCKETS.with(|s| s.borrow_mut().insert(id, socket.clone()));
        Arc::new(Conn {
            id,
            session: format!("s{id}").into(),
            user: user.into(),
            outbound: Outbound::new(
                QueueLimits {
                    frames: 16,
                    bytes: 1 << 20,
                },
                metrics.clone(),
                socket,
                Format::WebSocketText,
            ),
        })
    }

    /// The payloads written to `c`'s socket so far.
    fn drain(c: &Conn) -> Vec<String> {
        let socket = SOCKETS.with(|s| s.borrow()[&c.id].clone());
        std::mem::take(&mut *socket.0.lock().unwrap())
            .iter()
            .map(|f| {
                let header = match f[1] {
                    126 => 4,
                    127 => 10,
                    _ => 2,
                };
                String::from_utf8(f[header..].to_vec()).unwrap()
            })
            .collect()
    }

    #[tokio::test]
    async fn fan_out_reaches_members_except_the_skipped_one() {
        let (hub, m) = hub();
        let room = RoomName::parse("r").unwrap();
        let (a, b, c) = (
            conn(&hub, "a", &m),
            conn(&hub, "b", &m),
            conn(&hub, "c", &m),
        );
        for x in [&a, &b, &c] {
            hub.connect(x).await;
        }
        hub.join(&room, &a).await.unwrap();
        hub.join(&room, &b).await.unwrap();
        let sent = hub.deliver(
            &Topic::Room(room.clone()),
            &Frame::new("m".into()),
            Some(a.id),
        );
        assert_eq!(sent, 1);
        assert!(drain(&a).is_empty());
        assert_eq!(drain(&b), ["m"]);
        assert!(drain(&c).is_empty());
    }

    /// A connection on a real loopback socket: the hub's side, its socket,
    /// and the client's end (blocking reads, bounded by a timeout).
    struct SocketMember {
        conn: Arc<Conn>,
        socket: Arc<tokio::net::TcpStream>,
        client: std::net::TcpStream,
    }

    impl SocketMember {
        fn new(hub: &Hub, metrics: &Arc<Metrics>, listener: &std::net::TcpListener) -> Self {
            let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let (server, _) = listener.accept().unwrap();
            server.set_nonblocking(true).unwrap();
            let socket = Arc::new(tokio::net::TcpStream::from_std(server).unwrap());
            let limits = QueueLimits {
                frames: 16,
                bytes: 1 << 20,
            };
            let outbound = Outbound::new(
                limits,
                metrics.clone(),
                socket.clone(),
                Format::WebSocketText,
            );
            let conn = Arc::new(Conn {
                id: hub.next_conn_id(),
                session: "s".into(),
                user: "u".into(),
                outbound,
            });
            Self {
                conn,
                socket,
                client,
            }
        }

        /// Fills the socket, so that frames for it must wait in its queue;
        /// returns the bytes written.
        fn fill(&self) -> usize {
            let mut filled = 0;
            while let Ok(n) = self.socket.try_write(&[0; 1 << 16]) {
                filled += n;
            }
            filled
        }

        fn read(&mut self, n: usize) -> Vec<u8> {
            use std::io::Read;
            let mut got = vec![0; n];
            self.client.read_exact(&mut got).unwrap();
            got
        }

        /// The payloads of the next `count` short text frames.
        fn texts(&mut self, count: usize) -> Vec<String> {
            (0..count)
                .map(|_| {
                    let header = self.read(2);
                    assert_eq!(header[0], 0x81, "a text frame");
                    String::from_utf8(self.read(usize::from(header[1]))).unwrap()
                })
                .collect()
        }

        /// Reads what `fill` wrote, then lets the queue drain to the socket.
        async fn catch_up(&mut self, filled: usize) {
            assert_eq!(self.read(filled).len(), filled);
            tokio::time::timeout(Duration::from_secs(5), async {
                while self.conn.outbound.flush().0 != Flush::Idle {
                    self.socket.writable().await.unwrap();
                }
            })
            .await
            .expect("the queue drains once the reader catches up");
        }
    }

    #[tokio::test]
    async fn a_batched_fan_out_reaches_every_socket_in_order_past_a_full_one() {
        let (hub, m) = hub();
        assert!(hub.batch_writes(true), "this machine allows io_uring");
        let room = RoomName::parse("r").unwrap();
        let topic = Topic::Room(room.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut members = Vec::new();
        // More members than one batch takes, so the fan-out spans three.
        for _ in 0..150 {
            let member = SocketMember::new(&hub, &m, &listener);
            hub.connect(&member.conn).await;
            hub.join(&room, &member.conn).await.unwrap();
            members.push(member);
        }
        let filled = members[0].fill();
        for text in ["one", "two", "three"] {
            assert_eq!(hub.deliver(&topic, &Frame::new(text.into()), None), 150);
        }
        for member in &mut members[1..] {
            assert_eq!(member.texts(3), ["one", "two", "three"]);
        }
        assert_eq!(m.frames_out.load(Relaxed), 149 * 3, "written at once");
        members[0].catch_up(filled).await;
        assert_eq!(members[0].texts(3), ["one", "two", "three"], "in order");
    }

    #[tokio::test]
    async fn a_batched_history_fan_out_goes_through_every_gate() {
        use crate::history::HistoryStore;
        use crate::history::memory::MemoryStore;
        use crate::history::recovery::{Join, Read};
        use crate::namespace::Namespaces;
        let (hub, m) = hub();
        assert!(hub.batch_writes(true));
        let namespaces = Namespaces::from_specs(["h:history_size=10".parse().unwrap()]).unwrap();
        hub.set_history(Arc::new(Store::Memory(MemoryStore::new(namespaces))));
        let room = RoomName::parse("h:r").unwrap();
        let position = hub.history().unwrap().position("h:r").await.unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut members, mut gates) = (Vec::new(), Vec::new());
        for _ in 0..100 {
            let member = SocketMember::new(&hub, &m, &listener);
            hub.connect(&member.conn).await;
            let gate = Arc::new(Gate::reading(Join::new(None, 16)));
            hub.join_gated(&room, &member.conn, gate.clone())
                .await
                .unwrap();
            members.push(member);
            gates.push(gate);
        }
        let read = || Read {
            position: position.clone(),
            complete: true,
            messages: Vec::new(),
        };
        // Every join answered but the second's, which is still reading.
        for (i, gate) in gates.iter().enumerate() {
            if i != 1 {
                gate.finish(read(), |_| {}).unwrap();
            }
        }
        let filled = members[0].fill();
        for data in ["a", "b", "c"] {
            let payload =
                format!(r#"{{"type":"message","room":"h:r","from":null,"data":"{data}"}}"#);
            let (_, local) = hub
                .publish_stored(&room, payload.into(), None)
                .await
                .unwrap();
            assert_eq!(local, 99, "the reading gate holds it back");
        }
        let offsets = |texts: Vec<String>| -> Vec<u64> {
            texts
                .iter()
                .map(|t| {
                    serde_json::from_str::<serde_json::Value>(t).unwrap()["offset"]
                        .as_u64()
                        .unwrap()
                })
                .collect()
        };
        for member in &mut members[2..] {
            assert_eq!(offsets(member.texts(3)), [1, 2, 3]);
        }
        members[0].catch_up(filled).await;
        assert_eq!(offsets(members[0].texts(3)), [1, 2, 3], "queued in order");
        gates[1]
            .finish(read(), |outcome| {
                for frame in &outcome.after_ok {
                    members[1].conn.outbound.push(frame);
                }
            })
            .unwrap();
        assert_eq!(
            offsets(members[1].texts(3)),
            [1, 2, 3],
            "buffered, then in order"
        );
    }

    #[tokio::test]
    async fn membership_drives_subscriptions_and_room_count() {
        let (hub, m) = hub();
        let room = RoomName::parse("r").unwrap();
        let (a, b) = (conn(&hub, "u", &m), conn(&hub, "u", &m));
        hub.connect(&a).await;
        hub.connect(&b).await;
        assert_eq!(
            m.bus_subscriptions.load(Relaxed),
            1,
            "one user topic for two connections"
        );
        hub.join(&room, &a).await.unwrap();
        hub.join(&room, &a).await.unwrap();
        hub.join(&room, &b).await.unwrap();
        assert_eq!(m.rooms.load(Relaxed), 1);
        assert_eq!(m.bus_subscriptions.load(Relaxed), 2);
        assert_eq!(hub.local_members(&room), ["u"], "distinct users");
        hub.leave(&room, a.id).await;
        assert_eq!(m.bus_subscriptions.load(Relaxed), 2);
        hub.leave(&room, b.id).await;
        hub.leave(&room, b.id).await;
        assert_eq!(m.rooms.load(Relaxed), 0);
        assert_eq!(m.bus_subscriptions.load(Relaxed), 1);
        hub.disconnect(&a, []).await;
        hub.disconnect(&b, []).await;
        assert_eq!(m.bus_subscriptions.load(Relaxed), 0);
        assert_eq!(m.connections.load(Relaxed), 0);
        assert!(hub.topics.is_empty(), "no empty topic lingers");
    }

    #[tokio::test]
    async fn commands_act_on_every_connection_of_their_user_only() {
        let (hub, m) = hub();
        let (room, other) = (RoomName::parse("r").unwrap(), RoomName::parse("o").unwrap());
        let (a1, a2, b) = (
            conn(&hub, "a", &m),
            conn(&hub, "a", &m),
            conn(&hub, "b", &m),
        );
        for x in [&a1, &a2, &b] {
            hub.connect(x).await;
            hub.join(&room, x).await.unwrap();
        }
        hub.join(&other, &a1).await.unwrap();
        hub.command(&Command::Unsubscribe {
            user: "a".into(),
            room: room.clone(),
        })
        .await
        .unwrap();
        let told = [r#"{"type":"unsubscribed","room":"r"}"#];
        assert_eq!(drain(&a1), told);
        assert_eq!(drain(&a2), told);
        assert!(drain(&b).is_empty());
        assert_eq!(hub.local_members(&room), ["b"]);
        assert_eq!(hub.local_members(&other), ["a"], "other rooms stay");
        assert_eq!(hub.take_evicted(a1.id), std::slice::from_ref(&room));
        assert!(hub.take_evicted(a1.id).is_empty(), "taken once");
        hub.command(&Command::Unsubscribe {
            user: "a".into(),
            room: room.clone(),
        })
        .await
        .unwrap();
        assert!(drain(&a2).is_empty(), "not a member any more: no frame");

        hub.command(&Command::Disconnect { user: "a".into() })
            .await
            .unwrap();
        for x in [&a1, &a2] {
            assert_eq!(x.outbound.closing(), Some(Close::DISCONNECTED));
        }
        assert_eq!(b.outbound.closing(), None);
        hub.disconnect(&a2, []).await;
        assert!(
            hub.take_evicted(a2.id).is_empty(),
            "forgotten with its connection"
        );
    }

    #[tokio::test]
    async fn concurrent_joins_and_leaves_leave_consistent_state() {
        let (hub, m) = hub();
        let room = RoomName::parse("busy").unwrap();
        let conns: Vec<_> = (0..32).map(|i| conn(&hub, &format!("u{i}"), &m)).collect();
        let mut tasks = Vec::new();
        for c in conns.clone() {
            let (hub, room) = (hub.clone(), room.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..20 {
                    hub.join(&room, &c).await.unwrap();
                    hub.leave(&room, c.id).await;
                }
                hub.join(&room, &c).await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(hub.local_members(&room).len(), 32);
        assert_eq!(m.rooms.load(Relaxed), 1);
        assert_eq!(m.bus_subscriptions.load(Relaxed), 1);
    }
}
