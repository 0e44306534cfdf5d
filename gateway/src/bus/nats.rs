//! The NATS bus: gateways relayed over a NATS server or cluster.
//!
//! Subjects, under the configured cluster name `<c>`:
//! - `<c>.room.<room>`: a room's messages. A gateway subscribes only while it
//!   has a local member (interest-based routing), so it receives only the
//!   traffic of rooms it hosts. Room names cannot contain `.`, `*`, `>` or
//!   whitespace, so a room is always exactly one subject token.
//! - `<c>.user.<hex of user id>`: direct messages to a user's connections.
//!   Every gateway subscribes to all of them with one `<c>.user.>`
//!   subscription instead of one per connected user: a subscription costs
//!   several KiB of client buffers, which per connection would dominate an
//!   idle connection's memory. The price is that a direct message reaches
//!   every gateway, which delivers it if the user is connected there. The
//!   payload carries the full user id ahead of the frame ([`encode_direct`]),
//!   because long ids are hashed into their subject token.
//! - `<c>.ctl.hello|bye|presence|sync|watch|command`: the control plane every
//!   gateway subscribes to: peer discovery, presence scatter-gather, the
//!   cluster-wide confirmation of a new subscription, rooms starting or
//!   stopping being watched for presence events, and the server API's
//!   commands about a user's connections ([`encode_command`]).
//! - `<c>.pres.<room>`: presence reports about a room, subscribed only by
//!   the gateways that watch it (a member joined with `presence: true`).
//!   Reports leave through one ordered, bounded queue, so one gateway's
//!   reports about a room arrive in the order they were made.
//! - `<c>.session.<route>`: requests on the fallback sessions a gateway
//!   holds (`route` is part of their ids), forwarded by the gateway a
//!   client's request reached. One request, one reply, one gateway; when
//!   the holder is gone the server answers "no responders" at once.
//!
//! The connection uses NATS no-echo: a gateway never receives its own
//! publishes, because the hub has already delivered them locally. The payload
//! of a room or user message is the encoded client frame, fanned out as is.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use async_nats::client::RequestErrorKind;
use async_nats::connection::State;
use async_nats::{Client, ConnectOptions, Event, Statistics, Subscriber};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};
use tokio::task::JoinHandle;

use super::peers::{HELLO_INTERVAL, Peers};
use super::{BusError, Command, Desk, Inbox, PresenceInbox, Topic};
use crate::config::{ConfigError, Nats};
use crate::delivery::frame::Frame;
use crate::history::jetstream::{SKIP_HEADER, republished};
use crate::metrics::Metrics;
use crate::room::RoomName;
use crate::trace;

/// How long after (re)connecting a gateway waits for peers' hellos before
/// it reports ready.
const DISCOVERY_WINDOW: Duration = Duration::from_millis(300);

/// Most room messages a pump hands to the hub at once: what had already
/// arrived when it woke, written to each connection together.
const MAX_BATCH: usize = 64;

/// How often a bus that answers is probed with a server round trip.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// How long a probe may wait for the server before the bus counts as
/// stalled. A frozen server keeps its TCP connection open (the client's own
/// pings notice only after two missed 10 s intervals), so without probes a
/// stalled bus would look up for ~30 s. Detection takes at most
/// `HEALTH_INTERVAL + HEALTH_TIMEOUT`.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// The pause between probes of a stalled bus.
const HEALTH_RETRY: Duration = Duration::from_millis(100);

/// Most forwarded session requests one gateway serves at once (a poll may
/// wait 25 s); more are answered busy at once.
const MAX_FORWARDED: usize = 1024;

/// Presence reports waiting to be published; beyond it a report is dropped
/// and its room resent as a snapshot.
const REPORT_QUEUE: usize = 8192;

/// User ids longer than this are hashed into their subject token, which
/// keeps subjects short whatever a token's `sub` holds.
const MAX_HEX_USER_BYTES: usize = 128;

/// The subject token of a user id: its bytes in hex, or for long ids `h`
/// and a 64-bit FNV-1a hash (a collision only ever costs a wasted delivery
/// attempt: the receiving gateway delivers by the full id).
pub fn user_token(user: &str) -> String {
    if user.is_empty() {
        // Never a real id (ids are non-empty), but a subject token must not be empty.
        return "_".into();
    }
    if user.len() <= MAX_HEX_USER_BYTES {
        return user.bytes().map(|b| format!("{b:02x}")).collect();
    }
    let hash = user.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("h{hash:016x}")
}

/// The subject of a topic under cluster name `prefix`.
pub fn subject(prefix: &str, topic: &Topic) -> String {
    match topic {
        Topic::Room(room) => format!("{prefix}.room.{room}"),
        Topic::User(user) => format!("{prefix}.user.{}", user_token(user)),
    }
}

/// The payload of a direct message on the bus: the recipient's user id
/// (length-prefixed, 4 bytes big-endian) and the encoded frame.
pub fn encode_direct(user: &str, frame: &[u8]) -> Bytes {
    let mut payload = BytesMut::with_capacity(4 + user.len() + frame.len());
    payload.put_u32(u32::try_from(user.len()).unwrap_or(u32::MAX));
    payload.put_slice(user.as_bytes());
    payload.put_slice(frame);
    payload.freeze()
}

/// Splits a direct message's payload into the user id and the frame; `None`
/// when it is malformed.
pub fn decode_direct(payload: &[u8]) -> Option<(&str, &[u8])> {
    let (len, rest) = payload.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    if rest.len() < len {
        return None;
    }
    let (user, frame) = rest.split_at(len);
    // The frame is JSON text or MessagePack (`Frame::from_bus` tells).
    Some((std::str::from_utf8(user).ok()?, frame))
}

/// The payload of a [`Command`] on `<c>.ctl.command`: a JSON object,
/// `{"op":"disconnect","user":U}` or `{"op":"unsubscribe","user":U,"room":R}`.
pub fn encode_command(command: &Command) -> Bytes {
    let value = match command {
        Command::Disconnect { user } => serde_json::json!({"op": "disconnect", "user": user}),
        Command::Unsubscribe { user, room } => {
            serde_json::json!({"op": "unsubscribe", "user": user, "room": room.as_str()})
        }
    };
    Bytes::from(value.to_string())
}

/// Reads a [`Command`] payload; `None` when it is malformed (or from a newer
/// gateway that knows commands this one does not).
pub fn decode_command(payload: &[u8]) -> Option<Command> {
    #[derive(serde::Deserialize)]
    struct Wire {
        op: String,
        user: String,
        room: Option<String>,
    }
    let wire: Wire = serde_json::from_slice(payload).ok()?;
    match (wire.op.as_str(), wire.room) {
        ("disconnect", _) => Some(Command::Disconnect { user: wire.user }),
        ("unsubscribe", Some(room)) => Some(Command::Unsubscribe {
            user: wire.user,
            room: RoomName::parse(&room)?,
        }),
        _ => None,
    }
}

/// The control-plane subjects, `<c>.ctl.<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    /// Peer discovery: an instance id, `?` appended to ask for hellos back.
    Hello,
    /// A peer leaves: its instance id.
    Bye,
    /// A room's local members, asked of every peer.
    Presence,
    /// Answered once everything sent before it is processed (join confirmation).
    Sync,
    /// A room starts or stops being watched for presence events.
    Watch,
    /// No one subscribes: the server's "no responders" answer proves a round trip.
    RoundTrip,
    /// A server API command about a user's connections.
    Command,
}

impl Control {
    /// The subjects every gateway answers.
    const ANSWERED: [Control; 6] = [
        Control::Hello,
        Control::Bye,
        Control::Presence,
        Control::Sync,
        Control::Watch,
        Control::Command,
    ];

    fn name(self) -> &'static str {
        match self {
            Control::Hello => "hello",
            Control::Bye => "bye",
            Control::Presence => "presence",
            Control::Sync => "sync",
            Control::Watch => "watch",
            Control::RoundTrip => "rtt",
            Control::Command => "command",
        }
    }
}

/// Where received traffic goes, once the hub has attached itself. Shared with
/// the pumps, which look it up per message, so traffic arriving before the
/// hub attached is not lost to a stale empty handle.
type InboxSlot = Arc<OnceLock<Weak<dyn Inbox>>>;

/// Where the presence exchange goes, once the presence service has attached itself.
type PresenceSlot = Arc<OnceLock<Weak<dyn PresenceInbox>>>;

/// A gateway's connection to the NATS cluster.
pub struct NatsBus {
    client: Client,
    prefix: String,
    /// Random per process: tells this gateway's hellos from a restarted one's.
    instance: String,
    request_timeout: Duration,
    metrics: Arc<Metrics>,
    inbox: InboxSlot,
    peers: Mutex<Peers>,
    /// One message pump per subscribed topic; aborting it unsubscribes.
    pumps: Mutex<HashMap<Topic, JoinHandle<()>>>,
    /// Control-plane tasks (hello, presence, sync, events).
    control: Mutex<Vec<JoinHandle<()>>>,
    /// Connected, restored subscriptions confirmed, peers had time to answer.
    settled: AtomicBool,
    /// Connected, but the last health probe went unanswered (see [`watch_health`]).
    stalled: AtomicBool,
    presence: PresenceSlot,
    /// Presence reports in order, to [`publish_reports`].
    reports: tokio::sync::mpsc::Sender<(String, Bytes)>,
    /// One presence report pump per watched room; aborting it unsubscribes.
    presence_pumps: Mutex<HashMap<RoomName, JoinHandle<()>>>,
}

impl std::fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus")
            .field("prefix", &self.prefix)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a single map operation: a poisoned map is consistent.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl NatsBus {
    /// Connects in the background (retrying forever) and starts the control plane.
    pub async fn connect(
        config: &Nats,
        node: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<NatsBus>, ConfigError> {
        let (events_tx, events_rx) = tokio::sync::mpsc::channel::<Event>(64);
        let mut options = ConnectOptions::new()
            .name(format!("roomcast-gateway {node}"))
            .no_echo()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .ping_interval(Duration::from_secs(10))
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_millis(config.request_timeout_ms)))
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(100u64.saturating_mul(1 << attempts.min(6)).min(5_000))
            })
            .event_callback(move |event| {
                let events = events_tx.clone();
                async move {
                    // Events only steer readiness and restoration; if the
                    // queue is full the next event carries the same news.
                    let _ = events.try_send(event);
                }
            })
            .require_tls(config.tls_required);
        if let Some(token) = &config.token {
            options = options.token(token.clone());
        }
        if let (Some(user), Some(password)) = (&config.user, &config.password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(path) = &config.credentials_file {
            options = options.credentials_file(path).await.map_err(|e| {
                ConfigError(format!("nats.credentials_file {}: {e}", path.display()))
            })?;
        }
        for (field, path) in [
            ("nats.tls_ca_file", &config.tls_ca_file),
            ("nats.tls_cert_file", &config.tls_cert_file),
            ("nats.tls_key_file", &config.tls_key_file),
        ] {
            if let Some(path) = path
                && !path.is_file()
            {
                return Err(ConfigError(format!(
                    "{field} {}: no such file",
                    path.display()
                )));
            }
        }
        if let Some(ca) = &config.tls_ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        let client = options
            .connect(config.url.clone())
            .await
            .map_err(|e| ConfigError(format!("nats.url {:?}: {e}", config.url)))?;
        metrics.bus_up.store(0, Relaxed);
        let (reports, reports_rx) = tokio::sync::mpsc::channel(REPORT_QUEUE);
        let bus = Arc::new(NatsBus {
            client,
            prefix: config.cluster_name.clone(),
            instance: format!("{:016x}", rand::random::<u64>()),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            metrics,
            inbox: Arc::new(OnceLock::new()),
            peers: Mutex::new(Peers::default()),
            pumps: Mutex::new(HashMap::new()),
            control: Mutex::new(Vec::new()),
            settled: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
            presence: Arc::new(OnceLock::new()),
            reports,
            presence_pumps: Mutex::new(HashMap::new()),
        });
        let tasks = vec![
            tokio::spawn(publish_reports(Arc::downgrade(&bus), reports_rx)),
            tokio::spawn(watch_events(Arc::downgrade(&bus), events_rx)),
            tokio::spawn(say_hello(Arc::downgrade(&bus))),
            tokio::spawn(watch_health(Arc::downgrade(&bus))),
        ];
        lock(&bus.control).extend(tasks);
        Ok(bus)
    }

    /// The NATS connection (the history store shares it).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Lets the bus deliver into `inbox`.
    pub fn attach(&self, inbox: Weak<dyn Inbox>) {
        let _ = self.inbox.set(inbox);
    }

    fn inbox(&self) -> Option<Arc<dyn Inbox>> {
        self.inbox.get().and_then(Weak::upgrade)
    }

    /// Lets the bus hand the presence exchange to `inbox`.
    pub fn attach_presence(&self, inbox: Weak<dyn PresenceInbox>) {
        let _ = self.presence.set(inbox);
    }

    fn presence(&self) -> Option<Arc<dyn PresenceInbox>> {
        self.presence.get().and_then(Weak::upgrade)
    }

    /// This process's instance id.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    fn presence_subject(&self, room: &RoomName) -> String {
        format!("{}.pres.{room}", self.prefix)
    }

    /// Subscribes to `room`'s presence reports; returns once the server has it.
    pub async fn presence_subscribe(&self, room: &RoomName) -> Result<(), BusError> {
        if !self.is_connected() {
            return Err(BusError::Unavailable);
        }
        let subscriber = self.subscribe_bounded(self.presence_subject(room)).await?;
        let pump = tokio::spawn(pump_reports(
            subscriber,
            room.clone(),
            self.presence.clone(),
            self.metrics.clone(),
        ));
        if let Some(previous) = lock(&self.presence_pumps).insert(room.clone(), pump) {
            previous.abort();
        }
        if let Err(e) = self.server_round_trip().await {
            self.presence_unsubscribe(room);
            return Err(e);
        }
        Ok(())
    }

    /// Drops `room`'s presence report subscription.
    pub fn presence_unsubscribe(&self, room: &RoomName) {
        if let Some(pump) = lock(&self.presence_pumps).remove(room) {
            pump.abort();
        }
    }

    /// Publishes a watch (`payload`, an encoded `presence::wire::Watch`);
    /// when it starts one, collects the acknowledgements of the live peers.
    pub async fn presence_watch(&self, payload: Bytes, on: bool) -> Result<Vec<String>, BusError> {
        if !self.is_connected() {
            return Err(BusError::Unavailable);
        }
        self.metrics.presence_bus_messages_out.fetch_add(1, Relaxed);
        let peers = self.live_peers();
        if !on || peers == 0 {
            self.send(self.ctl(Control::Watch), payload).await?;
            return Ok(Vec::new());
        }
        let replies = self
            .gather(&self.ctl(Control::Watch), payload, peers)
            .await?;
        Ok(replies
            .iter()
            .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
            .collect())
    }

    /// Queues a presence report about `room`; false when the queue is full.
    pub fn presence_report(&self, room: &RoomName, payload: Bytes) -> bool {
        self.reports
            .try_send((self.presence_subject(room), payload))
            .is_ok()
    }

    /// Forgets the peers silent for too long and tells the presence service.
    fn expire_peers(&self) {
        let dead = lock(&self.peers).expire(Instant::now());
        if dead.is_empty() {
            return;
        }
        let presence = self.presence();
        for instance in dead {
            tracing::info!(peer = instance, "gateway silent too long; counted as gone");
            if let Some(presence) = &presence {
                presence.peer_gone(&instance);
            }
        }
    }

    /// Whether the NATS connection is up and its server answers: false
    /// while disconnected, and while a connected server does not answer
    /// probes (frozen, overloaded). Readiness and publishes follow it.
    pub fn is_up(&self) -> bool {
        self.is_connected() && !self.stalled.load(Relaxed)
    }

    /// Whether the client holds a connection, answering or not. Operations
    /// that wait for their own server round trip (join, presence) go by this
    /// alone, so they succeed the moment a stalled server answers again.
    fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// Records a health probe's outcome; logs and counts the changes.
    fn set_stalled(&self, stalled: bool) {
        if self.stalled.swap(stalled, Relaxed) == stalled {
            return;
        }
        if stalled {
            self.metrics.bus_up.store(0, Relaxed);
            tracing::warn!(
                timeout = ?HEALTH_TIMEOUT,
                "NATS server does not answer; the bus is unavailable until it does"
            );
        } else {
            if self.is_connected() {
                self.metrics.bus_up.store(1, Relaxed);
            }
            tracing::info!("NATS server answers again");
        }
    }

    /// Whether the gateway should take clients: connected, and since the
    /// (re)connection its subscriptions are confirmed by the server and its
    /// peers have had a chance to make themselves known (so presence and
    /// join confirmations already count them).
    pub fn is_ready(&self) -> bool {
        self.is_up() && self.settled.load(Relaxed)
    }

    fn ctl(&self, what: Control) -> String {
        format!("{}.ctl.{}", self.prefix, what.name())
    }

    /// Subscribes to `topic` and returns once the subscription is confirmed
    /// by the server (a round trip) and by every known peer gateway (so their NATS
    /// servers, on a NATS cluster, have seen the interest too).
    pub async fn subscribe(&self, topic: &Topic) -> Result<(), BusError> {
        if matches!(topic, Topic::User(_)) {
            // Covered by the control plane's `<c>.user.>` subscription.
            return Ok(());
        }
        if !self.is_connected() {
            return Err(BusError::Unavailable);
        }
        let subscriber = self.subscribe_bounded(subject(&self.prefix, topic)).await?;
        let pump = tokio::spawn(pump(
            subscriber,
            topic.clone(),
            self.inbox.clone(),
            self.metrics.clone(),
            self.client.statistics(),
        ));
        // Registered before any await, so a caller that gives up mid-way
        // leaves a pump the next subscribe or unsubscribe will find.
        if let Some(previous) = lock(&self.pumps).insert(topic.clone(), pump) {
            previous.abort();
        }
        if let Err(e) = self.server_round_trip().await {
            self.unsubscribe(topic);
            return Err(e);
        }
        let peers = self.live_peers();
        if peers > 0 {
            let confirmed = self
                .gather(&self.ctl(Control::Sync), Bytes::new(), peers)
                .await
                .map_or(0, |r| r.len());
            if confirmed < peers {
                tracing::debug!(
                    ?topic,
                    confirmed,
                    peers,
                    "subscription confirmed by fewer gateways than known"
                );
            }
        }
        Ok(())
    }

    /// Proves the NATS server has processed everything this connection sent
    /// before (a `flush` only proves it left the socket): a request to a
    /// subject no one subscribes to is answered by the server itself with
    /// "no responders", after the commands ahead of it.
    async fn server_round_trip(&self) -> Result<(), BusError> {
        self.server_round_trip_within(self.request_timeout).await
    }

    async fn server_round_trip_within(&self, limit: Duration) -> Result<(), BusError> {
        let request = self
            .client
            .request(self.ctl(Control::RoundTrip), Bytes::new());
        let answered = match tokio::time::timeout(limit, request).await {
            Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => Ok(()),
            // An answer (someone subscribed to it after all) is a round trip too.
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(BusError::Unavailable),
        };
        if answered.is_ok() {
            // Any answer proves the server is back, whoever asked.
            self.set_stalled(false);
        }
        answered
    }

    /// Drops `topic`'s subscription.
    pub fn unsubscribe(&self, topic: &Topic) {
        if let Some(pump) = lock(&self.pumps).remove(topic) {
            pump.abort();
        }
    }

    /// Publishes an encoded frame for `topic`.
    pub async fn publish(
        &self,
        topic: &Topic,
        frame: &Frame,
        trace: Option<&trace::Publish>,
    ) -> Result<(), BusError> {
        if !self.is_up() {
            return Err(BusError::Unavailable);
        }
        let payload = match topic {
            Topic::Room(_) => frame.bus_payload().clone(),
            Topic::User(user) => encode_direct(user, frame.bus_payload()),
        };
        let subject = subject(&self.prefix, topic);
        match trace.and_then(|t| t.bus_publish(&subject)) {
            None => self.send(subject, payload).await?,
            Some(span) => {
                let publish = self
                    .client
                    .publish_with_headers(subject, span.headers(), payload);
                if !matches!(
                    tokio::time::timeout(self.request_timeout, publish).await,
                    Ok(Ok(()))
                ) {
                    span.failed();
                    return Err(BusError::Unavailable);
                }
            }
        }
        self.metrics.bus_messages_out.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Sends a server API command to every other gateway.
    pub async fn command(&self, command: &Command) -> Result<(), BusError> {
        if !self.is_up() {
            return Err(BusError::Unavailable);
        }
        self.send(self.ctl(Control::Command), encode_command(command))
            .await?;
        self.metrics.bus_messages_out.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Asks every live peer for its local members of `room`, waiting at most
    /// `nats.request_timeout_ms`; peers that do not answer in time are left out.
    pub async fn remote_members(&self, room: &RoomName) -> Result<Vec<String>, BusError> {
        if !self.is_connected() {
            return Err(BusError::Unavailable);
        }
        let peers = self.live_peers();
        if peers == 0 {
            return Ok(Vec::new());
        }
        let replies = self
            .gather(
                &self.ctl(Control::Presence),
                Bytes::from(room.as_str().to_owned()),
                peers,
            )
            .await?;
        let mut members = Vec::new();
        for reply in replies {
            match serde_json::from_slice::<Vec<String>>(&reply.payload) {
                Ok(list) => members.extend(list),
                Err(e) => tracing::warn!(error = %e, "malformed presence reply ignored"),
            }
        }
        Ok(members)
    }

    fn live_peers(&self) -> usize {
        lock(&self.peers).live(Instant::now())
    }

    /// Publishes a request to `subject` and collects up to `expected` replies
    /// within the request timeout.
    async fn gather(
        &self,
        subject: &str,
        payload: Bytes,
        expected: usize,
    ) -> Result<Vec<async_nats::Message>, BusError> {
        let inbox = self.client.new_inbox();
        let mut replies = self.subscribe_bounded(inbox.clone()).await?;
        let request = self
            .client
            .publish_with_reply(subject.to_owned(), inbox, payload);
        match tokio::time::timeout(self.request_timeout, request).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return Err(BusError::Unavailable),
        }
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        let mut collected = Vec::with_capacity(expected);
        while collected.len() < expected {
            match tokio::time::timeout_at(deadline, replies.next()).await {
                Ok(Some(reply)) => collected.push(reply),
                Ok(None) | Err(_) => break,
            }
        }
        Ok(collected)
    }

    /// Serves `<c>.session.<route>` with `desk`, each request in a task of
    /// its own (at most [`MAX_FORWARDED`] at once).
    pub fn serve_sessions(&self, route: &str, desk: Weak<dyn Desk>) {
        let subject = format!("{}.session.{route}", self.prefix);
        let client = self.client.clone();
        let timeout = self.request_timeout;
        let task = tokio::spawn(async move {
            // The client keeps subscriptions made before it connects and
            // replays them on every reconnection.
            let mut requests = match client.subscribe(subject).await {
                Ok(requests) => requests,
                Err(e) => {
                    return tracing::warn!(error = %e, "fallback sessions cannot be reached from other gateways");
                }
            };
            let slots = Arc::new(tokio::sync::Semaphore::new(MAX_FORWARDED));
            while let Some(request) = requests.next().await {
                let Some(reply) = request.reply else { continue };
                let Some(desk) = desk.upgrade() else { return };
                let client = client.clone();
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    let busy = desk.busy();
                    let _ = tokio::time::timeout(timeout, client.publish(reply, busy)).await;
                    continue;
                };
                tokio::spawn(async move {
                    let _slot = slot;
                    let answer = desk.answer(request.payload).await;
                    let _ = tokio::time::timeout(timeout, client.publish(reply, answer)).await;
                });
            }
        });
        lock(&self.control).push(task);
    }

    /// Sends `request` to the gateway serving `route`; `None` when none does.
    pub async fn forward(
        &self,
        route: &str,
        request: Bytes,
        wait: Duration,
    ) -> Result<Option<Bytes>, BusError> {
        if !self.is_connected() {
            return Err(BusError::Unavailable);
        }
        let subject = format!("{}.session.{route}", self.prefix);
        let limit = wait + self.request_timeout;
        let request = async_nats::Request::new()
            .payload(request)
            .timeout(Some(limit));
        match tokio::time::timeout(limit, self.client.send_request(subject, request)).await {
            Ok(Ok(answer)) => Ok(Some(answer.payload)),
            Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => Ok(None),
            Ok(Err(_)) | Err(_) => Err(BusError::Unavailable),
        }
    }

    /// Says goodbye, stops every task and drains the connection.
    pub async fn shutdown(&self) {
        let _ = self
            .send(self.ctl(Control::Bye), Bytes::from(self.instance.clone()))
            .await;
        for (_, pump) in lock(&self.pumps).drain() {
            pump.abort();
        }
        for (_, pump) in lock(&self.presence_pumps).drain() {
            pump.abort();
        }
        for task in lock(&self.control).drain(..) {
            task.abort();
        }
        let _ = tokio::time::timeout(self.request_timeout, self.client.drain()).await;
    }

    /// Subscribes the control plane (once connected: `subscribe` needs no
    /// server, but these must be live before the first hello goes out).
    async fn start_control_plane(self: &Arc<Self>) -> Result<(), BusError> {
        let mut tasks = Vec::new();
        for what in Control::ANSWERED {
            let subscriber = self
                .client
                .subscribe(self.ctl(what))
                .await
                .map_err(|_| BusError::Unavailable)?;
            tasks.push(tokio::spawn(answer(Arc::downgrade(self), what, subscriber)));
        }
        let users = self
            .client
            .subscribe(format!("{}.user.>", self.prefix))
            .await
            .map_err(|_| BusError::Unavailable)?;
        tasks.push(tokio::spawn(pump_users(
            users,
            self.inbox.clone(),
            self.metrics.clone(),
        )));
        lock(&self.control).extend(tasks);
        Ok(())
    }

    async fn hello(&self, ask_back: bool) {
        let payload = if ask_back {
            format!("{}?", self.instance)
        } else {
            self.instance.clone()
        };
        let _ = self
            .send(self.ctl(Control::Hello), Bytes::from(payload))
            .await;
    }

    /// Subscribes within the request timeout (the same queue as `send`).
    async fn subscribe_bounded(&self, subject: String) -> Result<Subscriber, BusError> {
        match tokio::time::timeout(self.request_timeout, self.client.subscribe(subject)).await {
            Ok(Ok(subscriber)) => Ok(subscriber),
            Ok(Err(_)) | Err(_) => Err(BusError::Unavailable),
        }
    }

    /// Publishes within the request timeout. The client queues commands
    /// while it reconnects, and a full queue would otherwise block the caller
    /// (a session, or the shutdown path) for as long as NATS stays away.
    async fn send(&self, subject: String, payload: Bytes) -> Result<(), BusError> {
        match tokio::time::timeout(self.request_timeout, self.client.publish(subject, payload))
            .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(BusError::Unavailable),
        }
    }
}

/// Delivers a room subscription's messages to the local members of `topic`.
/// `stats` counts the client's connections: a stored message that comes
/// after a new one was made first has the room's history read for what the
/// old connection missed (core NATS drops what is sent while disconnected).
async fn pump(
    mut subscriber: Subscriber,
    topic: Topic,
    inbox: InboxSlot,
    metrics: Arc<Metrics>,
    stats: Arc<Statistics>,
) {
    let mut connection = stats.connects.load(Relaxed);
    let (mut batch, mut frames) = (Vec::with_capacity(MAX_BATCH), Vec::with_capacity(MAX_BATCH));
    while let Some(first) = subscriber.next().await {
        // Whatever else has already arrived goes out with it: one write per
        // connection for the lot (see `Outbound::push_many`).
        batch.push(first);
        while batch.len() < MAX_BATCH
            && let Some(Some(message)) = subscriber.next().now_or_never()
        {
            batch.push(message);
        }
        metrics
            .bus_messages_in
            .fetch_add(batch.len() as u64, Relaxed);
        // Not attached yet: no connection can be waiting for it.
        let Some(attached) = inbox.get() else {
            batch.clear();
            continue;
        };
        let Some(inbox) = attached.upgrade() else {
            return;
        };
        for message in batch.drain(..) {
            // A history room's message, stored and RePublished by its
            // stream: after what arrived before it, in stream order, awaited
            // here so the next one waits for it.
            if let Some(at) = republished(message.headers.as_ref()) {
                if !frames.is_empty() {
                    inbox.receive_many(&topic, &frames);
                    frames.clear();
                }
                let skip = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(SKIP_HEADER))
                    .map(|v| v.as_str().to_owned());
                let now = stats.connects.load(Relaxed);
                if now != connection {
                    connection = now;
                    inbox.repair(&topic).await;
                }
                inbox
                    .receive_stored(&topic, message.payload, at, skip)
                    .await;
                continue;
            }
            // Shares the received bytes: no copy until a format is encoded.
            let Some(frame) = Frame::from_bus(message.payload) else {
                tracing::warn!(
                    ?topic,
                    "bus message that is neither JSON text nor MessagePack dropped"
                );
                continue;
            };
            if message.headers.is_none() {
                frames.push(frame);
                continue;
            }
            // A traced message is delivered on its own, inside its spans,
            // after what arrived before it.
            if !frames.is_empty() {
                inbox.receive_many(&topic, &frames);
                frames.clear();
            }
            trace::bus_receive(message.headers.as_ref(), &message.subject, || {
                inbox.receive(&topic, &frame)
            });
        }
        if !frames.is_empty() {
            inbox.receive_many(&topic, &frames);
            frames.clear();
        }
    }
}

/// Hands a watched room's presence reports to the presence service.
async fn pump_reports(
    mut subscriber: Subscriber,
    room: RoomName,
    presence: PresenceSlot,
    metrics: Arc<Metrics>,
) {
    while let Some(message) = subscriber.next().await {
        metrics.presence_bus_messages_in.fetch_add(1, Relaxed);
        let Some(attached) = presence.get() else {
            continue;
        };
        let Some(presence) = attached.upgrade() else {
            return;
        };
        presence.report(&room, &message.payload);
    }
}

/// Publishes presence reports in the order they were queued. A report that
/// cannot be published is lost; the presence service resends snapshots when
/// the bus comes back (see [`PresenceInbox::reconnected`]).
async fn publish_reports(
    bus: Weak<NatsBus>,
    mut reports: tokio::sync::mpsc::Receiver<(String, Bytes)>,
) {
    while let Some((subject, payload)) = reports.recv().await {
        let Some(bus) = bus.upgrade() else { return };
        if !bus.is_connected() {
            continue;
        }
        if bus.send(subject, payload).await.is_ok() {
            bus.metrics.presence_bus_messages_out.fetch_add(1, Relaxed);
        }
    }
}

/// Delivers direct messages to the users connected to this gateway.
async fn pump_users(mut subscriber: Subscriber, inbox: InboxSlot, metrics: Arc<Metrics>) {
    while let Some(message) = subscriber.next().await {
        metrics.bus_messages_in.fetch_add(1, Relaxed);
        // Not attached yet: no connection can be waiting for it.
        let Some(attached) = inbox.get() else {
            continue;
        };
        let Some(inbox) = attached.upgrade() else {
            return;
        };
        let direct = decode_direct(&message.payload).and_then(|(user, frame)| {
            Some((user, Frame::from_bus(message.payload.slice_ref(frame))?))
        });
        match direct {
            Some((user, frame)) => {
                inbox.receive(&Topic::User(user.into()), &frame);
            }
            None => tracing::warn!(subject = %message.subject, "malformed direct message dropped"),
        }
    }
}

/// Serves one control subject.
async fn answer(bus: Weak<NatsBus>, what: Control, mut subscriber: Subscriber) {
    while let Some(message) = subscriber.next().await {
        let Some(bus) = bus.upgrade() else { return };
        let payload = String::from_utf8_lossy(&message.payload);
        match what {
            Control::Hello => {
                let (instance, ask_back) = match payload.strip_suffix('?') {
                    Some(instance) => (instance, true),
                    None => (payload.as_ref(), false),
                };
                let new = lock(&bus.peers).heard(instance, Instant::now());
                if new && instance != bus.instance {
                    tracing::info!(peer = instance, "gateway joined the cluster");
                    if let Some(presence) = bus.presence() {
                        presence.peer_arrived(instance);
                    }
                }
                if ask_back {
                    bus.hello(false).await;
                }
            }
            Control::Bye => {
                let known = lock(&bus.peers).forget(&payload);
                if let (true, Some(presence)) = (known, bus.presence()) {
                    presence.peer_gone(&payload);
                }
            }
            Control::Watch => {
                if let Some(presence) = bus.presence() {
                    presence.watch(&message.payload);
                }
                if let Some(reply) = message.reply {
                    let instance = Bytes::from(bus.instance.clone());
                    let _ = bus.send(reply.to_string(), instance).await;
                }
            }
            Control::Presence => {
                let members = match (RoomName::parse(&payload), bus.inbox()) {
                    (Some(room), Some(inbox)) => inbox.local_members(&room),
                    _ => Vec::new(),
                };
                if let Some(reply) = message.reply {
                    let body = serde_json::to_vec(&members).unwrap_or_else(|_| b"[]".to_vec());
                    let _ = bus.send(reply.to_string(), Bytes::from(body)).await;
                }
            }
            Control::Command => match (decode_command(&message.payload), bus.inbox()) {
                (Some(command), Some(inbox)) => inbox.command(command).await,
                (None, _) => tracing::warn!(%payload, "malformed command ignored"),
                (Some(_), None) => {}
            },
            Control::Sync | Control::RoundTrip => {
                if let Some(reply) = message.reply {
                    let _ = bus.send(reply.to_string(), Bytes::new()).await;
                }
            }
        }
    }
}

/// Announces this gateway every [`HELLO_INTERVAL`].
async fn say_hello(bus: Weak<NatsBus>) {
    let mut every = tokio::time::interval(HELLO_INTERVAL);
    loop {
        every.tick().await;
        let Some(bus) = bus.upgrade() else { return };
        if bus.is_up() {
            bus.hello(false).await;
        }
        bus.expire_peers();
    }
}

/// Probes the server every [`HEALTH_INTERVAL`] while connected and marks the
/// bus stalled when a probe goes unanswered for [`HEALTH_TIMEOUT`]. While
/// stalled it probes again every [`HEALTH_RETRY`], so a server that answers again is seen
/// within one round trip.
async fn watch_health(bus: Weak<NatsBus>) {
    loop {
        let Some(strong) = bus.upgrade() else { return };
        if strong.is_connected() {
            let answered = strong
                .server_round_trip_within(HEALTH_TIMEOUT)
                .await
                .is_ok();
            // A disconnection meanwhile is the event handler's news, not a stall.
            if !answered && strong.is_connected() {
                strong.set_stalled(true);
                drop(strong);
                // Not a busy loop should a probe ever fail without waiting.
                tokio::time::sleep(HEALTH_RETRY).await;
                continue;
            }
        }
        drop(strong);
        tokio::time::sleep(HEALTH_INTERVAL).await;
    }
}

/// Follows the connection: readiness metrics, the control plane on first
/// connect, and restoring subscriptions that could not be made while down.
async fn watch_events(bus: Weak<NatsBus>, mut events: tokio::sync::mpsc::Receiver<Event>) {
    let mut connected_before = false;
    while let Some(event) = events.recv().await {
        let Some(bus) = bus.upgrade() else { return };
        match event {
            Event::Connected => {
                let reconnected = connected_before;
                // A new connection is a fresh start; the probes judge it anew.
                bus.stalled.store(false, Relaxed);
                bus.metrics.bus_up.store(1, Relaxed);
                if connected_before {
                    bus.metrics.bus_reconnects.fetch_add(1, Relaxed);
                    tracing::info!("NATS connection restored");
                } else {
                    connected_before = true;
                    tracing::info!("connected to NATS");
                    if bus.start_control_plane().await.is_err() {
                        tracing::warn!(
                            "control plane not subscribed; presence will only see this gateway"
                        );
                    }
                }
                bus.hello(true).await;
                if let Some(inbox) = bus.inbox() {
                    inbox.resubscribe().await;
                    if reconnected {
                        // Its own task: a store that is slow to answer must
                        // not hold up readiness and the next events.
                        tokio::spawn(async move { inbox.repair_all().await });
                    }
                }
                if reconnected && let Some(presence) = bus.presence() {
                    presence.reconnected();
                }
                // The client replays live subscriptions on reconnect; a round
                // trip proves the server has them. Peers answer the hello
                // within a round trip too; the window covers slow ones.
                let confirmed = bus.server_round_trip().await.is_ok();
                tokio::time::sleep(bus.request_timeout.min(DISCOVERY_WINDOW)).await;
                if confirmed {
                    bus.settled.store(true, Relaxed);
                }
            }
            Event::Disconnected => {
                bus.settled.store(false, Relaxed);
                bus.metrics.bus_up.store(0, Relaxed);
                tracing::warn!(
                    "NATS connection lost; clients stay connected, the bus is unavailable"
                );
            }
            Event::SlowConsumer(sid) => {
                tracing::warn!(sid, "NATS subscription fell behind; messages dropped")
            }
            other => tracing::info!(event = %other, "NATS event"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_subjects_are_one_token_per_room() {
        let room = RoomName::parse("chat:1/a@b-c_d").unwrap();
        let s = subject("prod", &Topic::Room(room));
        assert_eq!(s, "prod.room.chat:1/a@b-c_d");
        assert_eq!(s.split('.').count(), 3);
        assert!(!s.contains(['*', '>', ' ']));
    }

    #[test]
    fn user_subjects_never_carry_the_raw_id() {
        let s = subject("c", &Topic::User("a.b *>".into()));
        assert_eq!(s, "c.user.612e62202a3e");
        let long = "x".repeat(500);
        let t = user_token(&long);
        assert!(t.starts_with('h') && t.len() == 17);
        assert_eq!(t, user_token(&long), "stable");
        assert_ne!(t, user_token(&"y".repeat(500)));
        assert_eq!(user_token(""), "_");
    }

    #[test]
    fn commands_survive_the_wire() {
        let room = RoomName::parse("chat:1").unwrap();
        for command in [
            Command::Disconnect {
                user: "a\"b".into(),
            },
            Command::Unsubscribe {
                user: "ü".into(),
                room,
            },
        ] {
            assert_eq!(
                decode_command(&encode_command(&command)),
                Some(command.clone())
            );
        }
        for bad in [
            &br#"{"op":"unsubscribe","user":"u"}"#[..],
            br#"{"op":"unsubscribe","user":"u","room":"a b"}"#,
            br#"{"op":"explode","user":"u"}"#,
            br#"{"op":"disconnect"}"#,
            b"not json",
        ] {
            assert_eq!(
                decode_command(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn direct_payloads_carry_the_user_and_the_frame() {
        let long = "ü".repeat(300);
        for user in ["alice", "", long.as_str()] {
            let payload = encode_direct(user, br#"{"type":"direct"}"#);
            assert_eq!(
                decode_direct(&payload),
                Some((user, &br#"{"type":"direct"}"#[..]))
            );
        }
        assert_eq!(decode_direct(b""), None);
        assert_eq!(
            decode_direct(b"\0\0\0\x09abc"),
            None,
            "id longer than the payload"
        );
        assert_eq!(decode_direct(b"\0\0\0\x01\xff{}"), None, "id not UTF-8");
    }
}
