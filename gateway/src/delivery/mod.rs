//! Delivery: the one path a publish or a direct message takes, whoever sends
//! it (a session over any transport, or the HTTP API), and what it is made of:
//!
//! - [`deliver`]: a typed operation in ([`Outgoing`]), a typed result out
//!   ([`Delivered`] or the contract [`Failure`]): payload check, encoding the
//!   server frame once, trace decision, bus relay and local fan-out, counters.
//! - `frame.rs`: a server frame encoded at most once per wire format, lazily.
//! - `hub.rs`: connections, room and user membership, local fan-out.
//! - `outbound.rs`: one connection's way out, with its bounded queue.
//! - `batch.rs`: a fan-out's writes to many connections in one system call
//!   (io_uring), where the kernel allows it.
//! - `coalesce.rs`: with a write delay, one task writing every connection's
//!   held frames when their window ends.
//!
//! Room access depends on who is sending: the session checks it before it
//! calls [`deliver`], and hands in its rate limit ([`Sender::bucket`]), taken
//! after the payload check as the contract orders them.

pub mod batch;
pub mod coalesce;
pub mod frame;
pub mod gate;
pub mod hub;
pub mod outbound;

use std::sync::atomic::Ordering::Relaxed;

use self::frame::Frame;
use self::hub::ConnId;
use crate::bus::Topic;
use crate::history::{HistoryError, Position};
use crate::msgpack;
use crate::protocol::{self, ErrorCode, Failure, Publish, Send};
use crate::ratelimit::TokenBucket;
use crate::state::Shared;
use crate::trace;

/// An operation that delivers to other connections.
#[derive(Debug)]
pub enum Outgoing<'a> {
    /// A message to a room's members on every gateway.
    Publish(Publish<'a>),
    /// A direct message to every connection of a user, on every gateway.
    Send(Send<'a>),
}

/// Who sends, as recipients and traces see it.
#[derive(Debug)]
pub struct Sender<'a> {
    /// The sending user (`from`); `None` for the HTTP API (`from: null`).
    pub user: Option<&'a str>,
    /// The sending connection, left out of its own publish when it asked for no echo.
    pub conn: Option<ConnId>,
    /// How the operation arrived, for traces (`websocket`, `http`).
    pub via: &'static str,
    /// The sender's publish/send rate limit, if it has one.
    pub bucket: Option<&'a mut TokenBucket>,
}

/// What a delivery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Connections on this gateway that took the frame.
    pub local: usize,
    /// Where a publish to a history room was stored (its acks carry it).
    pub position: Option<Position>,
}

impl Delivered {
    /// The extra fields of the publish's `ok` (and of the HTTP 202):
    /// `offset` and `epoch` for a history room, nothing otherwise.
    pub fn ok_fields(&self) -> String {
        self.position.as_ref().map_or_else(String::new, |p| {
            protocol::position_fields(p.offset, p.epoch.as_str(), false)
        })
    }
}

/// Delivers `op` from `sender`: locally and through the bus to the other
/// gateways. Fails (and delivers nothing) on a payload over the limit or
/// while the bus is down. A publish to a history room is delivered only
/// once stored (see [`hub::Hub::publish_stored`]); rooms without history
/// never touch the store.
pub async fn deliver(
    shared: &Shared,
    sender: Sender<'_>,
    op: Outgoing<'_>,
) -> Result<Delivered, Failure> {
    deliver_native(shared, sender, op, None).await
}

/// [`deliver`] for an operation a MessagePack client sent: `msgpack_data`
/// is its `data` as sent (`op` holds the JSON equivalent). The frame is
/// built in MessagePack, so MessagePack recipients get the data exactly,
/// binary included; the payload limit applies to those bytes.
pub async fn deliver_native(
    shared: &Shared,
    sender: Sender<'_>,
    op: Outgoing<'_>,
    msgpack_data: Option<&[u8]>,
) -> Result<Delivered, Failure> {
    let max = shared.config.limits.max_payload_bytes;
    let size =
        |json: &serde_json::value::RawValue| msgpack_data.map_or(json.get().len(), <[u8]>::len);
    let local = match op {
        Outgoing::Publish(Publish { room, data, echo }) => {
            protocol::check_payload(size(data), max)?;
            take_token(sender.bucket)?;
            let json = protocol::message(&room, sender.user, data);
            let frame = match msgpack_data {
                Some(native) => {
                    Frame::from_msgpack(msgpack::message(room.as_str(), sender.user, native), json)
                }
                None => Frame::new(json),
            };
            let skip = sender.conn.filter(|_| !echo);
            if shared.namespaces.for_room(room.as_str()).has_history() {
                // The store keeps what the bus carries: MessagePack data
                // stays MessagePack, binary included.
                let (stored, local) = shared
                    .hub
                    .publish_stored(&room, frame.bus_payload().clone(), skip)
                    .await
                    .map_err(history_failure)?;
                shared.metrics.publishes.fetch_add(1, Relaxed);
                return Ok(Delivered {
                    local,
                    position: Some(stored),
                });
            }
            let trace = trace::start_publish(room.as_str(), sender.via);
            let local = shared
                .hub
                .publish(&Topic::Room(room), &frame, skip, trace.as_ref())
                .await
                .map_err(Failure::unavailable)?;
            shared.metrics.publishes.fetch_add(1, Relaxed);
            local
        }
        Outgoing::Send(Send { to, data }) => {
            protocol::check_payload(size(data), max)?;
            take_token(sender.bucket)?;
            let json = protocol::direct(sender.user, data);
            let frame = match msgpack_data {
                Some(native) => Frame::from_msgpack(msgpack::direct(sender.user, native), json),
                None => Frame::new(json),
            };
            let local = shared
                .hub
                .publish(&Topic::User(to.into()), &frame, None, None)
                .await
                .map_err(Failure::unavailable)?;
            shared.metrics.sends.fetch_add(1, Relaxed);
            local
        }
    };
    Ok(Delivered {
        local,
        position: None,
    })
}

/// The contract failure of a history operation.
pub fn history_failure(e: HistoryError) -> Failure {
    match e {
        HistoryError::NoHistory => Failure::new(
            ErrorCode::NoHistory,
            "the room's namespace keeps no history",
        ),
        HistoryError::Unavailable(why) => Failure::unavailable(format!("history store: {why}")),
    }
}

fn take_token(bucket: Option<&mut TokenBucket>) -> Result<(), Failure> {
    let Some(bucket) = bucket else {
        return Ok(());
    };
    if bucket.try_take(std::time::Instant::now()) {
        Ok(())
    } else {
        Err(Failure::new(
            ErrorCode::RateLimited,
            "publish/send rate exceeded; frame dropped",
        ))
    }
}
