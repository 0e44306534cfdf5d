//! The cluster bus: how a gateway exchanges room and user traffic with the
//! other gateways of its cluster.
//!
//! The rest of the gateway talks to [`Bus`] and nothing else knows which bus is
//! in use. Delivery to this gateway's own connections is always done locally
//! by the hub (see `hub.rs`); the bus only carries traffic to *other*
//! gateways, so every client publish costs at most one bus publish.
//!
//! - [`Bus::Local`]: the in-process bus of a gateway running alone; every
//!   subscription is trivially live and there are no peers.
//! - [`Bus::Nats`]: gateways relayed over NATS (`nats.rs`), with the peers it
//!   knows of (`peers.rs`).
//!
//! What the bus receives goes into an [`Inbox`] (the hub implements it): the
//! bus never knows the hub's type. Requests on fallback sessions that reach
//! a gateway which does not hold the session travel to the holder with
//! [`Bus::forward`] and are answered by its [`Desk`] (the registry of
//! fallback sessions): one request and one reply, to that gateway alone.
//! The presence exchange (reports on
//! `<c>.pres.<room>`, watches on the control plane, peers coming and going)
//! goes into a [`PresenceInbox`] (the presence service), and is carried by
//! the `presence_*` methods; on the in-process bus they are no-ops.

mod nats;
pub mod peers;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;

pub use self::nats::NatsBus;

use crate::config::{ConfigError, Nats};
use crate::delivery::frame::Frame;
use crate::history::jetstream::Republished;
use crate::metrics::Metrics;
use crate::room::RoomName;
use crate::trace;

/// Where the bus hands what it receives from other gateways: this gateway's
/// local members (the hub).
pub trait Inbox: Send + Sync {
    /// Delivers a frame from another gateway to the local members of
    /// `topic`; returns how many connections took it.
    fn receive(&self, topic: &Topic, frame: &Frame) -> usize;

    /// Delivers frames that arrived together for `topic`, in order: each
    /// local connection gets them in one write where its socket allows.
    fn receive_many(&self, topic: &Topic, frames: &[Frame]) -> usize {
        frames
            .iter()
            .map(|frame| self.receive(topic, frame))
            .max()
            .unwrap_or(0)
    }

    /// Distinct user ids joined to `room` on this gateway (a peer's presence question).
    fn local_members(&self, room: &RoomName) -> Vec<String>;

    /// Subscribes again every topic with local members but no live
    /// subscription (called when the bus connection comes back).
    fn resubscribe(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;

    /// Fills in what every history room missed while the bus connection was
    /// being replaced (called, in a task of its own, once it is back).
    fn repair_all(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;

    /// The bus connection was replaced since `topic`'s previous message: what
    /// was sent to it meanwhile never arrived. A history room reads the store
    /// for it before this message is delivered (called by the topic's pump).
    fn repair<'a>(&'a self, topic: &'a Topic) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

    /// Delivers a history room's message that its stream stored and
    /// RePublished (`at`: where it is stored), to the local members of
    /// `topic` except the connection `skip` names; returns how many took it.
    fn receive_stored<'a>(
        &'a self,
        topic: &'a Topic,
        payload: Bytes,
        at: Republished,
        skip: Option<String>,
    ) -> Pin<Box<dyn Future<Output = usize> + Send + 'a>>;
    /// Carries out a server API command on this gateway's connections.
    fn command(&self, command: Command) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// What the server API asks of every gateway about one user's connections
/// (`POST /v1/disconnect`, `POST /v1/unsubscribe`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Close every connection of `user` with 4003.
    Disconnect {
        /// The user id.
        user: String,
    },
    /// Take every connection of `user` out of `room`, telling each with `unsubscribed`.
    Unsubscribe {
        /// The user id.
        user: String,
        /// The room.
        room: RoomName,
    },
}

impl Command {
    /// The user the command is about.
    pub fn user(&self) -> &str {
        match self {
            Command::Disconnect { user } | Command::Unsubscribe { user, .. } => user,
        }
    }
}

/// Where the bus hands requests on this gateway's fallback sessions that
/// other gateways forward (see `transport/registry.rs`). Requests and
/// answers are opaque bytes to the bus.
pub trait Desk: Send + Sync {
    /// Answers one forwarded request.
    fn answer(&self, request: Bytes) -> Pin<Box<dyn Future<Output = Bytes> + Send + '_>>;

    /// The answer when too many forwarded requests are being served already.
    fn busy(&self) -> Bytes;
}

/// Where the bus hands the presence exchange (the presence service,
/// `presence/mod.rs`). Its calls must not block: they run on the bus's
/// receiving tasks.
pub trait PresenceInbox: Send + Sync {
    /// A report (encoded `presence::wire::Report`) about `room` from another gateway.
    fn report(&self, room: &RoomName, payload: &[u8]);

    /// Another gateway starts or stops watching a room (an encoded
    /// `presence::wire::Watch`). Called before the watcher is answered.
    fn watch(&self, payload: &[u8]);

    /// A gateway was heard from for the first time, or again after it had
    /// fallen silent.
    fn peer_arrived(&self, instance: &str);

    /// A gateway said goodbye, or stayed silent for [`peers::PRESENCE_TTL`].
    fn peer_gone(&self, instance: &str);

    /// The bus connection came back after a loss: what was sent meanwhile may be lost.
    fn reconnected(&self);
}

/// What traffic is addressed to: a room, or every connection of a user.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Members of a room.
    Room(RoomName),
    /// Connections of a user id.
    User(Arc<str>),
}

/// A bus operation that failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BusError {
    /// The bus is unreachable; nothing was delivered to other gateways.
    #[error("the cluster bus is unavailable")]
    Unavailable,
}

/// The cluster bus in use.
#[derive(Debug, Clone)]
pub enum Bus {
    /// In-process: this gateway alone, no NATS.
    Local,
    /// Relayed over NATS.
    Nats(Arc<NatsBus>),
}

impl Bus {
    /// The bus the configuration asks for: NATS when `nats.url` is set, else
    /// in-process. A NATS bus connects in the background; until it is
    /// connected the gateway is not ready.
    pub async fn from_config(
        nats: &Nats,
        node: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Bus, ConfigError> {
        if nats.url.is_empty() {
            return Ok(Bus::Local);
        }
        Ok(Bus::Nats(NatsBus::connect(nats, node, metrics).await?))
    }

    /// Lets the bus deliver what it receives into `inbox` (called once, by `Hub::new`).
    pub fn attach(&self, inbox: Weak<dyn Inbox>) {
        match self {
            Bus::Local => {}
            Bus::Nats(bus) => bus.attach(inbox),
        }
    }

    /// Lets the bus hand the presence exchange to `inbox` (called once, by the presence service).
    pub fn attach_presence(&self, inbox: Weak<dyn PresenceInbox>) {
        match self {
            Bus::Local => {}
            Bus::Nats(bus) => bus.attach_presence(inbox),
        }
    }

    /// This gateway's instance id as its presence reports name it.
    pub fn instance(&self) -> &str {
        match self {
            Bus::Local => "local",
            Bus::Nats(bus) => bus.instance(),
        }
    }

    /// Starts receiving the presence reports about `room`; returns once the
    /// subscription is live on the server.
    pub async fn presence_subscribe(&self, room: &RoomName) -> Result<(), BusError> {
        match self {
            Bus::Local => Ok(()),
            Bus::Nats(bus) => bus.presence_subscribe(room).await,
        }
    }

    /// Stops receiving the presence reports about `room`.
    pub fn presence_unsubscribe(&self, room: &RoomName) {
        match self {
            Bus::Local => {}
            Bus::Nats(bus) => bus.presence_unsubscribe(room),
        }
    }

    /// Tells every gateway this one starts (`on`) or stops watching a room
    /// (`payload`: an encoded `presence::wire::Watch`).
    /// Starting waits (within the request timeout) for the live peers to
    /// acknowledge and returns the instance ids of those that did: each has
    /// queued a snapshot of the room by then.
    pub async fn presence_watch(&self, payload: Bytes, on: bool) -> Result<Vec<String>, BusError> {
        match self {
            Bus::Local => Ok(Vec::new()),
            Bus::Nats(bus) => bus.presence_watch(payload, on).await,
        }
    }

    /// Queues a presence report about `room` for the gateways watching it.
    /// Reports leave in the order they were queued. False when the bounded
    /// queue is full (the report is dropped; the caller resends a snapshot).
    pub fn presence_report(&self, room: &RoomName, payload: Bytes) -> bool {
        match self {
            Bus::Local => true,
            Bus::Nats(bus) => bus.presence_report(room, payload),
        }
    }

    /// Whether the bus is reachable (it drives `/readyz` and `unavailable`).
    pub fn is_up(&self) -> bool {
        match self {
            Bus::Local => true,
            Bus::Nats(bus) => bus.is_up(),
        }
    }

    /// Whether the gateway should report ready: the bus is up and settled
    /// after its last (re)connection.
    pub fn is_ready(&self) -> bool {
        match self {
            Bus::Local => true,
            Bus::Nats(bus) => bus.is_ready(),
        }
    }

    /// Starts receiving `topic`'s traffic from other gateways. Returns once
    /// the subscription is live in the whole cluster, which is what lets a
    /// join's `ok` promise delivery of anything published afterwards.
    pub async fn subscribe(&self, topic: &Topic) -> Result<(), BusError> {
        match self {
            Bus::Local => Ok(()),
            Bus::Nats(bus) => bus.subscribe(topic).await,
        }
    }

    /// Stops receiving `topic`'s traffic.
    pub async fn unsubscribe(&self, topic: &Topic) {
        match self {
            Bus::Local => {}
            Bus::Nats(bus) => bus.unsubscribe(topic),
        }
    }

    /// Sends an encoded frame for `topic` to the other gateways, with the
    /// publish's trace context when it is traced.
    pub async fn publish(
        &self,
        topic: &Topic,
        frame: &Frame,
        trace: Option<&trace::Publish>,
    ) -> Result<(), BusError> {
        match self {
            Bus::Local => Ok(()),
            Bus::Nats(bus) => bus.publish(topic, frame, trace).await,
        }
    }

    /// Sends a server API command to the other gateways.
    pub async fn command(&self, command: &Command) -> Result<(), BusError> {
        match self {
            Bus::Local => Ok(()),
            Bus::Nats(bus) => bus.command(command).await,
        }
    }

    /// Distinct user ids joined to `room` on the other gateways.
    pub async fn remote_members(&self, room: &RoomName) -> Result<Vec<String>, BusError> {
        match self {
            Bus::Local => Ok(Vec::new()),
            Bus::Nats(bus) => bus.remote_members(room).await,
        }
    }

    /// The NATS connection, for the history store (none in process).
    pub fn nats_client(&self) -> Option<&async_nats::Client> {
        match self {
            Bus::Local => None,
            Bus::Nats(bus) => Some(bus.client()),
        }
    }

    /// Serves requests other gateways forward to the fallback sessions of
    /// `route` (this gateway's part of their ids) with `desk`.
    pub fn serve_sessions(&self, route: &str, desk: Weak<dyn Desk>) {
        match self {
            Bus::Local => {}
            Bus::Nats(bus) => bus.serve_sessions(route, desk),
        }
    }

    /// Forwards a request to the gateway serving `route` and returns its
    /// answer, waiting up to `wait` for it (plus the bus's own timeout);
    /// `None` when no gateway serves `route` (it is gone, or never was).
    pub async fn forward(
        &self,
        route: &str,
        request: Bytes,
        wait: Duration,
    ) -> Result<Option<Bytes>, BusError> {
        match self {
            Bus::Local => Ok(None),
            Bus::Nats(bus) => bus.forward(route, request, wait).await,
        }
    }

    /// Leaves the cluster: stops relaying and closes the connection.
    pub async fn shutdown(&self) {
        match self {
            Bus::Local => {}
            Bus::Nats(bus) => bus.shutdown().await,
        }
    }
}
