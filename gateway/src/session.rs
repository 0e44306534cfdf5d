//! A client session, whatever transport carries it: who the client is
//! (identity, and when its token expires), the rooms it has joined, its rate
//! limit, executing its operations in order and answering them, its bounded
//! outbound queue (in the connection's [`Conn`]) and why it closes.
//!
//! A transport (`transport/websocket.rs` today; Server-Sent Events and long
//! polling later) opens a session over its [`Wire`] and [`Format`], hands it
//! each protocol frame the client sends ([`Session::receive`]), writes out
//! what the outbound queue holds, keeps its own liveness checks, and ends the
//! session when the connection is gone ([`Session::end`]). It never looks
//! inside a protocol frame.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::auth::Identity;
use crate::delivery::frame::{Format, Frame};
use crate::delivery::gate::{self, Gate};
use crate::delivery::hub::Conn;
use crate::delivery::outbound::{Close, Outbound, Pushed, QueueLimits, Wire};
use crate::delivery::{self, Outgoing, Sender, history_failure};
use crate::history::recovery::{self, Join, Read};
use crate::history::{self, Epoch, HistoryError, HistoryStore, Page, Position, Store, kept};
use crate::msgpack;
use crate::protocol::{self, ErrorCode, Failure, Op, RequestId};
use crate::ratelimit::TokenBucket;
use crate::room::RoomName;
use crate::state::Shared;

/// One client's session.
pub struct Session {
    conn: Arc<Conn>,
    shared: Arc<Shared>,
    identity: Identity,
    joined: HashSet<RoomName>,
    bucket: TokenBucket,
    /// How the transport names itself in traces (`websocket`).
    via: &'static str,
    /// While a MessagePack frame executes: its `data` as the client encoded
    /// it, for the frame delivered to MessagePack recipients.
    msgpack_data: Option<Vec<u8>>,
}

impl Session {
    /// Opens a session for `identity` whose frames leave through `wire` in
    /// `format`: sends `welcome`, then makes the connection reachable (so
    /// `welcome` is always the first frame).
    pub async fn open(
        shared: Arc<Shared>,
        identity: Identity,
        wire: Arc<dyn Wire>,
        format: Format,
        via: &'static str,
    ) -> Session {
        let session: Arc<str> = new_session_id().into();
        Self::open_named(shared, identity, wire, format, via, session).await
    }

    /// Like [`Session::open`], with the session id the transport chose. An
    /// anonymous client's user id is its session id, as the contract says,
    /// also for a fallback session whose id is its bearer capability
    /// (docs/protocol.md says what that exposes and why JWT closes it).
    pub async fn open_named(
        shared: Arc<Shared>,
        identity: Identity,
        wire: Arc<dyn Wire>,
        format: Format,
        via: &'static str,
        session: Arc<str>,
    ) -> Session {
        let config = &shared.config;
        let user: Arc<str> = identity
            .user
            .clone()
            .map_or_else(|| session.clone(), Into::into);
        let limits = QueueLimits {
            frames: config.limits.outbound_queue_frames,
            bytes: config.limits.outbound_queue_bytes,
        };
        let conn = Arc::new(Conn {
            id: shared.hub.next_conn_id(),
            session,
            user,
            outbound: Outbound::new(limits, shared.metrics.clone(), wire, format)
                .with_write_delay(Duration::from_millis(config.write_delay_ms)),
        });
        let this = Session {
            bucket: TokenBucket::new(
                config.limits.publish_rate_per_second,
                config.limits.publish_burst,
                std::time::Instant::now(),
            ),
            conn,
            shared,
            identity,
            joined: HashSet::new(),
            via,
            msgpack_data: None,
        };
        this.send(&Frame::new(protocol::welcome(
            &this.conn.session,
            &this.conn.user,
            &this.shared.node,
            this.shared.config.heartbeat_ms,
        )));
        Box::pin(this.shared.hub.connect(&this.conn)).await;
        tracing::debug!(session = %this.id(), user = %this.conn.user, "connected");
        this
    }

    /// The session id (`welcome.session`) as logs show it: its first
    /// characters (a fallback session's id is a bearer capability).
    pub fn id(&self) -> &str {
        log_id(&self.conn.session)
    }

    /// The connection as the hub sees it; its outbound queue is what the
    /// transport writes out.
    pub fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// When the token expires, if it does: the transport closes the session
    /// with [`Session::expire`] then. A `refresh` frame moves it (later or
    /// earlier), so a transport reads it again after every [`Session::receive`].
    pub fn expires_at(&self) -> Option<Instant> {
        self.identity.expires_at.map(deadline_of)
    }

    /// The token has expired: close with 4001.
    pub fn expire(&self) {
        self.close(Close::TOKEN_EXPIRED);
    }

    /// Starts closing with `close`, unless a close is already under way.
    pub fn close(&self, close: Close) {
        self.conn.outbound.close(close);
    }

    /// Counts frames the transport wrote out of the queue.
    pub fn written(&self, frames: u64) {
        self.shared.metrics.frames_out.fetch_add(frames, Relaxed);
    }

    /// Sends bytes in the transport's own framing (pings, pongs), counting
    /// them if written at once.
    pub fn send_transport(&self, bytes: bytes::Bytes) {
        self.count(self.conn.outbound.push_bytes(bytes));
    }

    /// Sends one of this session's own protocol frames.
    fn send(&self, frame: &Frame) {
        self.count(self.conn.outbound.push(frame));
    }

    fn count(&self, pushed: Pushed) {
        if pushed == Pushed::Written {
            self.shared.metrics.frames_out.fetch_add(1, Relaxed);
            self.shared.metrics.frame_writes.fetch_add(1, Relaxed);
        }
    }

    /// A client message that is not a protocol frame (WebSocket binary):
    /// answered with `bad_request`.
    pub fn receive_unreadable(&self) {
        self.shared.metrics.frames_in.fetch_add(1, Relaxed);
        self.fail(
            None,
            &Failure::new(ErrorCode::BadRequest, "frames must be text (UTF-8 JSON)"),
        );
    }

    /// A client message that is not a MessagePack protocol frame (WebSocket
    /// text on a `roomcast.v1.msgpack` connection): `bad_request`.
    pub fn receive_unreadable_msgpack(&self) {
        self.shared.metrics.frames_in.fetch_add(1, Relaxed);
        self.fail(
            None,
            &Failure::new(ErrorCode::BadRequest, "frames must be binary (MessagePack)"),
        );
    }

    /// Decodes and executes one MessagePack protocol frame: converted to its
    /// JSON equivalent and executed like one, with its `data` kept as sent.
    pub async fn receive_msgpack(&mut self, bytes: &[u8]) {
        match msgpack::decode(bytes) {
            Ok(frame) => {
                self.msgpack_data = frame.data;
                self.receive(&frame.json).await;
                self.msgpack_data = None;
            }
            Err(failure) => {
                self.shared.metrics.frames_in.fetch_add(1, Relaxed);
                if !self.conn.outbound.is_closing() {
                    self.fail(None, &failure);
                }
            }
        }
    }

    /// Decodes and executes one protocol frame, then answers it. Frames that
    /// arrive once the session is closing are counted and ignored.
    pub async fn receive(&mut self, text: &str) {
        self.shared.metrics.frames_in.fetch_add(1, Relaxed);
        if self.conn.outbound.is_closing() {
            return;
        }
        let request = protocol::decode(text);
        let outcome = match request.op {
            // A history room's join answers itself: its replay, `ok` and
            // buffered messages go out in one piece (see `join_history`).
            Ok(Op::Join(room)) if self.has_history(&room) => {
                return self
                    .answer_history_join(request.id.as_ref(), room, None, request.presence)
                    .await;
            }
            Ok(Op::JoinSince(room, since)) if self.has_history(&room) => {
                return self
                    .answer_history_join(request.id.as_ref(), room, Some(since), request.presence)
                    .await;
            }
            Ok(Op::History(query)) => {
                return Box::pin(self.answer_history(request.id.as_ref(), &query)).await;
            }
            // Without history a `since` is ignored.
            Ok(Op::Join(room) | Op::JoinSince(room, _)) if request.presence => {
                Box::pin(self.join_watching(room)).await
            }
            // Boxed: executing can await the bus, whose futures are large;
            // inline they would sit in every idle connection's task.
            Ok(op) => Box::pin(self.execute(op)).await,
            Err(failure) => Err(failure),
        };
        match (outcome, &request.id) {
            (Ok(extra), Some(id)) => {
                self.send(&Frame::new(protocol::ok(id, &extra)));
            }
            (Ok(_), None) => {}
            (Err(failure), id) => self.fail(id.as_ref(), &failure),
        }
    }

    fn fail(&self, id: Option<&RequestId>, failure: &Failure) {
        self.shared.metrics.error(failure.code);
        self.send(&Frame::new(protocol::error(id, failure)));
    }

    /// Executes an operation; `Ok` carries the extra fields of the `ok` answer.
    async fn execute(&mut self, op: Op<'_>) -> Result<String, Failure> {
        match op {
            // Without history a `since` is ignored.
            Op::Join(room) | Op::JoinSince(room, _) => {
                self.check_access(&room)?;
                forget_evicted(&self.shared, &self.conn, &mut self.joined);
                if self.joined.contains(&room) {
                    return Ok(String::new());
                }
                self.check_room_count()?;
                self.shared
                    .hub
                    .join(&room, &self.conn)
                    .await
                    .map_err(Failure::unavailable)?;
                self.joined.insert(room);
                Ok(String::new())
            }
            // `receive` answers it itself (see `answer_history`).
            Op::History(query) => Ok(kept::fields(&self.read_history(&query).await?)),
            Op::Leave(room) => {
                if self.joined.remove(&room) {
                    self.shared.hub.leave(&room, self.conn.id).await;
                }
                Ok(String::new())
            }
            Op::Publish(publish) => {
                self.check_access(&publish.room)?;
                self.check_client_publish(&publish.room)?;
                self.deliver(Outgoing::Publish(publish)).await
            }
            Op::Send(send) => self.deliver(Outgoing::Send(send)).await,
            Op::Presence(room) => {
                self.check_access(&room)?;
                let members = self
                    .shared
                    .hub
                    .presence(&room)
                    .await
                    .map_err(Failure::unavailable)?;
                Ok(protocol::members_field(&members))
            }
            Op::Ping => {
                let ts = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                Ok(format!(r#""ts":{ts}"#))
            }
            Op::Refresh(token) => self.refresh(&token).await,
        }
    }

    /// Replaces the session's token (`refresh`). The new one must verify like
    /// an upgrade token and name the same user; otherwise `unauthorized` and
    /// nothing changes. Rooms joined that its `rooms` claim no longer allows
    /// are left, each told with `unsubscribed` (before the `ok`), and the
    /// expiry follows its `exp` from now on.
    async fn refresh(&mut self, token: &str) -> Result<String, Failure> {
        let identity = self
            .shared
            .auth
            .authenticate(Some(token))
            .map_err(|e| Failure::new(ErrorCode::Unauthorized, e.to_string()))?;
        if identity.user != self.identity.user {
            return Err(Failure::new(
                ErrorCode::Unauthorized,
                "the token's sub is not this session's user",
            ));
        }
        forget_evicted(&self.shared, &self.conn, &mut self.joined);
        let revoked: Vec<RoomName> = self
            .joined
            .iter()
            .filter(|room| !identity.rooms.allows(room))
            .cloned()
            .collect();
        for room in revoked {
            self.joined.remove(&room);
            self.shared.hub.leave(&room, self.conn.id).await;
            self.send(&Frame::new(protocol::unsubscribed(&room)));
        }
        let exp = identity.exp;
        self.identity = identity;
        Ok(protocol::exp_field(exp))
    }

    /// A `join` with `presence: true`: the join, then this connection
    /// watches the room's `joined`/`left` events (it stops when it leaves
    /// the room). Refused with `forbidden` where the namespace has
    /// `presence_events=false`; a watch the bus cannot start undoes a join
    /// it made.
    async fn join_watching(&mut self, room: RoomName) -> Result<String, Failure> {
        self.check_access(&room)?;
        self.check_presence_events(&room)?;
        forget_evicted(&self.shared, &self.conn, &mut self.joined);
        let was_joined = self.joined.contains(&room);
        let extra = self.execute(Op::Join(room.clone())).await?;
        if let Err(e) = self.shared.presence.watch(&room, &self.conn).await {
            if !was_joined && self.joined.remove(&room) {
                self.shared.hub.leave(&room, self.conn.id).await;
            }
            return Err(Failure::unavailable(e));
        }
        Ok(extra)
    }

    fn check_presence_events(&self, room: &RoomName) -> Result<(), Failure> {
        if self
            .shared
            .namespaces
            .for_room(room.as_str())
            .presence_events
        {
            Ok(())
        } else {
            Err(Failure::new(
                ErrorCode::Forbidden,
                "presence events are off for this namespace (presence_events=false)",
            ))
        }
    }

    async fn deliver(&mut self, op: Outgoing<'_>) -> Result<String, Failure> {
        let sender = Sender {
            user: Some(&self.conn.user),
            conn: Some(self.conn.id),
            via: self.via,
            bucket: Some(&mut self.bucket),
        };
        let delivered =
            delivery::deliver_native(&self.shared, sender, op, self.msgpack_data.as_deref())
                .await?;
        Ok(delivered.ok_fields())
    }

    fn check_room_count(&self) -> Result<(), Failure> {
        let max = self.shared.config.limits.max_rooms_per_connection;
        if self.joined.len() >= max {
            return Err(Failure::new(
                ErrorCode::TooManyRooms,
                format!("a connection may join at most {max} rooms"),
            ));
        }
        Ok(())
    }

    /// Reads what a `history` frame asks for.
    async fn read_history(&self, query: &protocol::HistoryQuery) -> Result<Page, Failure> {
        self.check_access(&query.room)?;
        let store = self
            .shared
            .hub
            .history()
            .ok_or_else(|| history_failure(HistoryError::NoHistory))?;
        history::read(store, query).await.map_err(history_failure)
    }

    /// Answers a `history` frame. Its `ok` is built in MessagePack too when
    /// a kept message is MessagePack (a MessagePack client published it),
    /// so MessagePack clients get that `data` byte for byte; JSON clients
    /// get its JSON equivalent (binary as base64). One recipient: both
    /// encodings are made at once.
    async fn answer_history(&mut self, id: Option<&RequestId>, query: &protocol::HistoryQuery) {
        match (self.read_history(query).await, id) {
            (Ok(page), Some(id)) => {
                let json = protocol::ok(id, &kept::fields(&page));
                let frame = match kept::ok_msgpack(id, &page) {
                    Some(packed) => Frame::from_msgpack(packed, json),
                    None => Frame::new(json),
                };
                self.send(&frame);
            }
            (Ok(_), None) => {}
            (Err(failure), id) => self.fail(id, &failure),
        }
    }

    fn has_history(&self, room: &RoomName) -> bool {
        self.shared.namespaces.for_room(room.as_str()).has_history()
    }

    async fn answer_history_join(
        &mut self,
        id: Option<&RequestId>,
        room: RoomName,
        since: Option<protocol::Since>,
        presence: bool,
    ) {
        // Boxed: it awaits the bus and the store (see `receive`).
        if let Err(failure) = Box::pin(self.join_history(id, room, since, presence)).await {
            self.fail(id, &failure);
        }
    }

    /// Joins a history room, answering the join itself: subscribes behind
    /// a gate that buffers live messages, reads the store (after `since`,
    /// or only the position), then queues the replay, the `ok` (with
    /// `offset`, `epoch` and, with `since`, `recovered`) and the buffered
    /// messages newer than the replay, in one piece under the gate's lock.
    /// With `presence` the connection also watches the room's
    /// `joined`/`left` events, from before the store is read.
    async fn join_history(
        &mut self,
        id: Option<&RequestId>,
        room: RoomName,
        since: Option<protocol::Since>,
        presence: bool,
    ) -> Result<(), Failure> {
        self.check_access(&room)?;
        if presence {
            self.check_presence_events(&room)?;
        }
        let store = self
            .shared
            .hub
            .history()
            .cloned()
            .ok_or_else(|| history_failure(HistoryError::NoHistory))?;
        forget_evicted(&self.shared, &self.conn, &mut self.joined);
        if self.joined.contains(&room) {
            // Already a member: it has had every message since it joined.
            if presence {
                self.shared
                    .presence
                    .watch(&room, &self.conn)
                    .await
                    .map_err(Failure::unavailable)?;
            }
            let position = store
                .position(room.as_str())
                .await
                .map_err(history_failure)?;
            if let Some(id) = id {
                let extra = join_fields(&position, since.as_ref().map(|_| false));
                self.send(&Frame::new(protocol::ok(id, &extra)));
            }
            return Ok(());
        }
        self.check_room_count()?;
        let capacity = self.shared.config.limits.outbound_queue_frames;
        let join = Join::new(
            since.as_ref().map(|s| recovery::Since {
                offset: s.offset,
                epoch: Epoch::new(s.epoch.as_str()),
            }),
            capacity,
        );
        let gate = Arc::new(Gate::reading(join));
        self.shared
            .hub
            .join_gated(&room, &self.conn, gate.clone())
            .await
            .map_err(Failure::unavailable)?;
        self.joined.insert(room.clone());
        if presence && let Err(e) = self.shared.presence.watch(&room, &self.conn).await {
            self.undo_join(&room).await;
            return Err(Failure::unavailable(e));
        }
        let read = match read_for_join(&store, room.as_str(), since.as_ref()).await {
            Ok(read) => read,
            Err(e) => {
                self.undo_join(&room).await;
                return Err(history_failure(e));
            }
        };
        let finished = gate.finish(read, |outcome| {
            for frame in &outcome.before_ok {
                self.send(frame);
            }
            if let Some(id) = id {
                let extra = join_fields(&outcome.position, outcome.recovered);
                self.send(&Frame::new(protocol::ok(id, &extra)));
            }
            for frame in &outcome.after_ok {
                self.send(frame);
            }
        });
        if let Err(overflow) = finished {
            self.undo_join(&room).await;
            return Err(Failure::unavailable(format!("{overflow}; join again")));
        }
        Ok(())
    }

    async fn undo_join(&mut self, room: &RoomName) {
        if self.joined.remove(room) {
            self.shared.hub.leave(room, self.conn.id).await;
        }
    }

    fn check_access(&self, room: &RoomName) -> Result<(), Failure> {
        if self.identity.rooms.allows(room) {
            Ok(())
        } else {
            Err(Failure::new(
                ErrorCode::Forbidden,
                "the token does not allow this room",
            ))
        }
    }

    /// A namespace with `client_publish=false` takes publishes from the HTTP
    /// API only.
    fn check_client_publish(&self, room: &RoomName) -> Result<(), Failure> {
        if self
            .shared
            .namespaces
            .for_room(room.as_str())
            .client_publish
        {
            Ok(())
        } else {
            Err(Failure::new(
                ErrorCode::Forbidden,
                "clients may not publish to this namespace (client_publish=false)",
            ))
        }
    }

    /// Ends the session once its connection is gone: leaves its rooms and
    /// makes it unreachable.
    pub async fn end(mut self) {
        forget_evicted(&self.shared, &self.conn, &mut self.joined);
        let rooms = self.joined;
        Box::pin(self.shared.hub.disconnect(&self.conn, rooms)).await;
        tracing::debug!(session = %log_id(&self.conn.session), "disconnected");
    }
}

/// What the store says for a join: the kept messages after `since` (as
/// `message` frames with their offsets) and whether nothing after it was
/// dropped; without `since` only the room's position.
async fn read_for_join(
    store: &Store,
    room: &str,
    since: Option<&protocol::Since>,
) -> Result<Read<Frame>, HistoryError> {
    let Some(since) = since else {
        return Ok(Read {
            position: store.position(room).await?,
            complete: true,
            messages: Vec::new(),
        });
    };
    gate::read_after(store, room, since.offset).await
}

/// The extra fields of a history room's join `ok`.
fn join_fields(position: &Position, recovered: Option<bool>) -> String {
    let mut extra = protocol::position_fields(position.offset, position.epoch.as_str(), false);
    if let Some(recovered) = recovered {
        extra.push_str(&format!(r#","recovered":{recovered}"#));
    }
    extra
}

/// What logs show of a session id: enough to follow one session, never
/// the whole id (fallback session ids are bearer capabilities).
pub fn log_id(id: &str) -> &str {
    id.get(..16).unwrap_or(id)
}

/// Forgets the rooms the server API took this connection out of (the hub
/// has already left them and sent `unsubscribed`); called before `joined` is
/// relied on.
fn forget_evicted(shared: &Shared, conn: &Conn, joined: &mut HashSet<RoomName>) {
    for room in shared.hub.take_evicted(conn.id) {
        joined.remove(&room);
    }
}

fn new_session_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The monotonic instant of a wall-clock time (now, if it has passed).
fn deadline_of(at: SystemTime) -> Instant {
    let left = at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Instant::now() + left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_unique_and_fixed_width() {
        let (a, b) = (new_session_id(), new_session_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn past_deadlines_are_now() {
        let d = deadline_of(UNIX_EPOCH);
        assert!(d <= Instant::now());
    }
}
