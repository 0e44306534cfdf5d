//! The v1 wire protocol: decoding client frames and encoding server frames,
//! the contract's error codes and the checks every publish and send passes
//! (whether it came as a frame or through the HTTP API).
//!
//! Pure functions only. A client frame is decoded into a [`Request`] without
//! ever parsing its `data` (it stays a borrowed raw JSON slice), and every
//! failure maps to a contract [`ErrorCode`]. Server frames are written
//! straight into strings so a `message` is encoded exactly once per publish.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::room::{self, RoomName};

/// Subprotocol a client may offer; the server then selects it.
pub const SUBPROTOCOL: &str = "roomcast.v1";

/// Longest string `id` a client may send.
pub const MAX_ID_BYTES: usize = 64;

/// The contract's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Not JSON, not an object, unknown `type`, missing or mistyped field.
    BadRequest,
    /// Room name outside `^[A-Za-z0-9_:@/-]{1,128}$`.
    InvalidRoom,
    /// Room not allowed by the token's `rooms` claim.
    Forbidden,
    /// Publish/send rate exceeded; the frame was dropped.
    RateLimited,
    /// The connection has joined as many rooms as allowed.
    TooManyRooms,
    /// `data` larger than allowed.
    PayloadTooLarge,
    /// The cluster bus is down; the frame was not delivered.
    Unavailable,
    /// A server-side failure.
    Internal,
    /// `history` for a room whose namespace keeps no history (v1.1).
    NoHistory,
    /// A `refresh` token that does not verify or names another user (v1.1).
    Unauthorized,
}

impl ErrorCode {
    /// Every code, in a fixed order (metrics index them by position).
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::BadRequest,
        ErrorCode::InvalidRoom,
        ErrorCode::Forbidden,
        ErrorCode::RateLimited,
        ErrorCode::TooManyRooms,
        ErrorCode::PayloadTooLarge,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::NoHistory,
        ErrorCode::Unauthorized,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::NoHistory => "no_history",
            ErrorCode::Unauthorized => "unauthorized",
        }
    }

    /// Position in [`ErrorCode::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A failed request: the code and a human-readable message.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Contract error code.
    pub code: ErrorCode,
    /// Explanation for humans; never parsed by clients.
    pub message: Cow<'static, str>,
}

impl Failure {
    /// A failure with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// The cluster bus could not take the operation: `unavailable`, with why.
    pub fn unavailable(why: impl fmt::Display) -> Self {
        Self::new(ErrorCode::Unavailable, why.to_string())
    }
}

/// Refuses a `data` over the payload limit.
pub fn check_payload(len: usize, max: usize) -> Result<(), Failure> {
    if len > max {
        Err(Failure::new(
            ErrorCode::PayloadTooLarge,
            format!("data is {len} bytes; the limit is {max}"),
        ))
    } else {
        Ok(())
    }
}

/// A client frame's `id`, kept as the exact JSON text the client sent so the
/// echo is byte-for-byte (an integer or a string of at most 64 bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct RequestId(Box<str>);

impl RequestId {
    /// The id as JSON text.
    pub fn as_json(&self) -> &str {
        &self.0
    }
}

/// What a client asked for.
#[derive(Debug, Clone)]
pub enum Op<'a> {
    /// Subscribe to a room.
    Join(RoomName),
    /// Unsubscribe from a room.
    Leave(RoomName),
    /// Publish `data` to a room.
    Publish(Publish<'a>),
    /// Direct message to every connection of a user.
    Send(Send<'a>),
    /// Distinct members of a room across the cluster.
    Presence(RoomName),
    /// Application-level ping.
    Ping,
    /// Replace the session's token (v1.1): the new token, unverified.
    Refresh(Cow<'a, str>),
    /// A `join` with `since` (v1.1): recover the room's messages after it.
    /// Without history the `since` is ignored and it is a plain join.
    JoinSince(RoomName, Since),
    /// A `history` frame (v1.1): the room's kept messages.
    History(HistoryQuery),
}

/// A client's `since`: the last offset it has of a room, in an epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since {
    /// The last offset the client has (0: none).
    pub offset: u64,
    /// The epoch that offset belongs to.
    pub epoch: String,
}

/// Longest and default `limit` of a history read (the contract's 100).
pub const MAX_HISTORY_LIMIT: usize = 100;

/// A history read (a `history` frame or `GET /v1/history`).
#[derive(Debug, Clone)]
pub struct HistoryQuery {
    /// The room to read.
    pub room: RoomName,
    /// At most this many messages (1 to [`MAX_HISTORY_LIMIT`]).
    pub limit: usize,
    /// Only the messages after this position (the first `limit` of them);
    /// without it the last `limit` kept.
    pub since: Option<Since>,
}

/// A publish to a room (a `publish` frame or `POST /v1/publish`).
#[derive(Debug, Clone)]
pub struct Publish<'a> {
    /// Target room.
    pub room: RoomName,
    /// Raw JSON, passed through unparsed.
    pub data: &'a RawValue,
    /// Whether the sender receives its own message.
    pub echo: bool,
}

/// A direct message to every connection of a user (a `send` frame or `POST /v1/send`).
#[derive(Debug, Clone)]
pub struct Send<'a> {
    /// Target user id.
    pub to: Cow<'a, str>,
    /// Raw JSON, passed through unparsed.
    pub data: &'a RawValue,
}

/// A decoded client frame: its `id` (if any, and valid) and the operation,
/// or the failure to answer with.
#[derive(Debug)]
pub struct Request<'a> {
    /// The frame's id, echoed in the answer.
    pub id: Option<RequestId>,
    /// The operation, or why the frame was refused.
    pub op: Result<Op<'a>, Failure>,
    /// A `join` asked for `joined`/`left` events (`presence: true`).
    pub presence: bool,
}

/// Every field a client frame (or an HTTP API body) may carry, each left raw
/// so one mistyped field does not lose the others (notably the `id` the error
/// must echo).
#[derive(Deserialize)]
struct RawFrame<'a> {
    #[serde(borrow, rename = "type", default, deserialize_with = "present")]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    room: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    echo: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    to: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    since: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    limit: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    token: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    rooms: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    user: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    presence: Option<&'a RawValue>,
}

/// A field that is present is `Some`, even when its value is `null`
/// (`"data": null` is a valid payload; serde's default would read it as absent).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

/// Decodes one text frame. Never panics; any input yields either an
/// operation or a contract error.
pub fn decode(text: &str) -> Request<'_> {
    let raw = match parse_object(text) {
        Ok(raw) => raw,
        Err(failure) => {
            return Request {
                id: None,
                op: Err(failure),
                presence: false,
            };
        }
    };
    let id = match raw.id.map(parse_id).transpose() {
        Ok(id) => id,
        Err(failure) => {
            return Request {
                id: None,
                op: Err(failure),
                presence: false,
            };
        }
    };
    let mut op = required_str(raw.kind, "type").and_then(|kind| decode_op(&kind, &raw));
    let mut presence = false;
    if let Ok(Op::Join(_) | Op::JoinSince(..)) = &op {
        match presence_field(raw.presence) {
            Ok(wanted) => presence = wanted,
            Err(failure) => op = Err(failure),
        }
    }
    Request { id, op, presence }
}

/// A `join`'s optional `presence` flag (absent or null: false).
fn presence_field(raw: Option<&RawValue>) -> Result<bool, Failure> {
    match raw {
        None => Ok(false),
        Some(v) => serde_json::from_str::<Option<bool>>(v.get())
            .map(Option::unwrap_or_default)
            .map_err(|_| Failure::bad("field `presence` must be a boolean")),
    }
}

/// Decodes an HTTP API publish body: the fields and rules of a `publish`
/// frame, without `type`.
pub fn decode_publish(text: &str) -> Result<Publish<'_>, Failure> {
    publish_fields(&parse_object(text)?)
}

/// Decodes an HTTP API send body: the fields and rules of a `send` frame,
/// without `type`.
pub fn decode_send(text: &str) -> Result<Send<'_>, Failure> {
    send_fields(&parse_object(text)?)
}

/// Most rooms one `POST /v1/broadcast` may name.
pub const MAX_BROADCAST_ROOMS: usize = 1000;

/// One `data` for several rooms (`POST /v1/broadcast`).
#[derive(Debug, Clone)]
pub struct Broadcast<'a> {
    /// Distinct target rooms, in the order first named.
    pub rooms: Vec<RoomName>,
    /// Raw JSON, passed through unparsed.
    pub data: &'a RawValue,
}

/// Decodes a `POST /v1/broadcast` body: `rooms` (1 to
/// [`MAX_BROADCAST_ROOMS`] room names; a name given twice is delivered
/// once) and `data`. The failure of a bad room names it and its position.
pub fn decode_broadcast(text: &str) -> Result<Broadcast<'_>, Failure> {
    let raw = parse_object(text)?;
    let list = raw
        .rooms
        .ok_or_else(|| Failure::bad("missing field `rooms`"))?;
    let list: Vec<&RawValue> = serde_json::from_str(list.get())
        .map_err(|_| Failure::bad("field `rooms` must be an array of room names"))?;
    if list.is_empty() {
        return Err(Failure::bad("field `rooms` must name at least one room"));
    }
    if list.len() > MAX_BROADCAST_ROOMS {
        return Err(Failure::bad(format!(
            "field `rooms` names {} rooms; the limit is {MAX_BROADCAST_ROOMS}",
            list.len()
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(list.len());
    let mut rooms = Vec::with_capacity(list.len());
    for (i, raw) in list.into_iter().enumerate() {
        let name: Cow<'_, str> = serde_json::from_str(raw.get())
            .map_err(|_| Failure::bad(format!("rooms[{i}] must be a string")))?;
        let room = RoomName::parse(&name).ok_or_else(|| {
            let mut quoted = String::new();
            push_json_str(&mut quoted, &name);
            Failure::new(
                ErrorCode::InvalidRoom,
                format!("rooms[{i}] {quoted}: room must match ^[A-Za-z0-9_:@/-]{{1,128}}$"),
            )
        })?;
        if seen.insert(room.clone()) {
            rooms.push(room);
        }
    }
    Ok(Broadcast {
        rooms,
        data: data_field(raw.data)?,
    })
}

/// Decodes a `POST /v1/disconnect` body: `{"user":U}`.
pub fn decode_disconnect(text: &str) -> Result<Cow<'_, str>, Failure> {
    user_field(parse_object(text)?.user)
}

/// Decodes a `POST /v1/unsubscribe` body: `{"user":U,"room":R}`.
pub fn decode_unsubscribe(text: &str) -> Result<(Cow<'_, str>, RoomName), Failure> {
    let raw = parse_object(text)?;
    Ok((user_field(raw.user)?, room_field(raw.room)?))
}

fn user_field(raw: Option<&RawValue>) -> Result<Cow<'_, str>, Failure> {
    let user = required_str(raw, "user")?;
    if user.is_empty() {
        return Err(Failure::bad("field `user` must not be empty"));
    }
    Ok(user)
}

fn parse_object(text: &str) -> Result<RawFrame<'_>, Failure> {
    serde_json::from_str(text).map_err(|e| {
        Failure::bad(if e.is_data() {
            "frame must be a JSON object with no duplicate fields"
        } else {
            "frame is not valid JSON"
        })
    })
}

fn decode_op<'a>(kind: &str, raw: &RawFrame<'a>) -> Result<Op<'a>, Failure> {
    match kind {
        "join" => {
            let room = room_field(raw.room)?;
            Ok(match since_field(raw.since)? {
                Some(since) => Op::JoinSince(room, since),
                None => Op::Join(room),
            })
        }
        "history" => Ok(Op::History(HistoryQuery {
            room: room_field(raw.room)?,
            limit: limit_field(raw.limit)?,
            since: since_field(raw.since)?,
        })),
        "leave" => Ok(Op::Leave(room_field(raw.room)?)),
        "publish" => publish_fields(raw).map(Op::Publish),
        "send" => send_fields(raw).map(Op::Send),
        "presence" => Ok(Op::Presence(room_field(raw.room)?)),
        "ping" => Ok(Op::Ping),
        "refresh" => Ok(Op::Refresh(required_str(raw.token, "token")?)),
        _ => Err(Failure::bad("unknown frame type")),
    }
}

fn publish_fields<'a>(raw: &RawFrame<'a>) -> Result<Publish<'a>, Failure> {
    let room = room_field(raw.room)?;
    let data = data_field(raw.data)?;
    let echo = match raw.echo {
        None => true,
        Some(v) => match serde_json::from_str::<Option<bool>>(v.get()) {
            Ok(b) => b.unwrap_or(true),
            Err(_) => return Err(Failure::bad("field `echo` must be a boolean")),
        },
    };
    Ok(Publish { room, data, echo })
}

fn send_fields<'a>(raw: &RawFrame<'a>) -> Result<Send<'a>, Failure> {
    let to = required_str(raw.to, "to")?;
    if to.is_empty() {
        return Err(Failure::bad("field `to` must not be empty"));
    }
    Ok(Send {
        to,
        data: data_field(raw.data)?,
    })
}

fn parse_id(raw: &RawValue) -> Result<RequestId, Failure> {
    let text = raw.get();
    let valid = match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(text)
            .map(|s| s.len() <= MAX_ID_BYTES)
            .unwrap_or(false),
        Some(b'-' | b'0'..=b'9') => serde_json::from_str::<serde_json::Number>(text)
            .map(|n| n.is_i64() || n.is_u64())
            .unwrap_or(false),
        _ => false,
    };
    if valid {
        Ok(RequestId(text.into()))
    } else {
        Err(Failure::bad(
            "field `id` must be an integer or a string of at most 64 bytes",
        ))
    }
}

fn required_str<'a>(
    raw: Option<&'a RawValue>,
    field: &'static str,
) -> Result<Cow<'a, str>, Failure> {
    let Some(raw) = raw else {
        return Err(Failure::bad(format!("missing field `{field}`")));
    };
    // Borrow when the string has no escapes; allocate only when it must.
    if let Ok(s) = serde_json::from_str::<&'a str>(raw.get()) {
        return Ok(Cow::Borrowed(s));
    }
    serde_json::from_str::<String>(raw.get())
        .map(Cow::Owned)
        .map_err(|_| Failure::bad(format!("field `{field}` must be a string")))
}

fn room_field(raw: Option<&RawValue>) -> Result<RoomName, Failure> {
    let name = required_str(raw, "room")?;
    room::RoomName::parse(&name).ok_or_else(|| {
        Failure::new(
            ErrorCode::InvalidRoom,
            "room must match ^[A-Za-z0-9_:@/-]{1,128}$",
        )
    })
}

/// `since`: absent or null is none; otherwise `{"offset": N ≥ 0, "epoch": "E"}`.
fn since_field(raw: Option<&RawValue>) -> Result<Option<Since>, Failure> {
    #[derive(Deserialize)]
    struct Raw {
        offset: u64,
        epoch: String,
    }
    let Some(raw) = raw else { return Ok(None) };
    serde_json::from_str::<Option<Raw>>(raw.get())
        .map(|since| {
            since.map(|s| Since {
                offset: s.offset,
                epoch: s.epoch,
            })
        })
        .map_err(|_| {
            Failure::bad("field `since` must be {\"offset\": integer >= 0, \"epoch\": string}")
        })
}

/// `limit`: absent or null is the maximum; otherwise an integer from 1 to it.
fn limit_field(raw: Option<&RawValue>) -> Result<usize, Failure> {
    let Some(raw) = raw else {
        return Ok(MAX_HISTORY_LIMIT);
    };
    match serde_json::from_str::<Option<u64>>(raw.get()) {
        Ok(None) => Ok(MAX_HISTORY_LIMIT),
        Ok(Some(n)) => check_limit(n),
        Err(_) => Err(Failure::bad(
            "field `limit` must be an integer from 1 to 100",
        )),
    }
}

/// A history `limit` from 1 to [`MAX_HISTORY_LIMIT`].
pub fn check_limit(n: u64) -> Result<usize, Failure> {
    match usize::try_from(n) {
        Ok(n @ 1..=MAX_HISTORY_LIMIT) => Ok(n),
        _ => Err(Failure::bad(
            "field `limit` must be an integer from 1 to 100",
        )),
    }
}

fn data_field(raw: Option<&RawValue>) -> Result<&RawValue, Failure> {
    raw.ok_or_else(|| Failure::bad("missing field `data`"))
}

/// Appends `value` to `out` as a JSON string literal.
pub fn push_json_str(out: &mut String, value: &str) {
    // Serializing a &str into a String cannot fail; fall back to an empty
    // literal rather than panic if it ever did.
    match serde_json::to_string(value) {
        Ok(s) => out.push_str(&s),
        Err(_) => out.push_str("\"\""),
    }
}

/// `{"type":"welcome",…}`.
pub fn welcome(session: &str, user: &str, node: &str, heartbeat_ms: u64) -> String {
    let mut out = String::with_capacity(96 + session.len() + user.len() + node.len());
    out.push_str(r#"{"type":"welcome","session":"#);
    push_json_str(&mut out, session);
    out.push_str(r#","user":"#);
    push_json_str(&mut out, user);
    out.push_str(r#","node":"#);
    push_json_str(&mut out, node);
    let _ = write!(out, r#","heartbeat_ms":{heartbeat_ms}}}"#);
    out
}

/// `{"type":"message",…}`: encoded once per publish, shared by every recipient.
pub fn message(room: &RoomName, from: Option<&str>, data: &RawValue) -> String {
    let mut out = String::with_capacity(
        48 + room.as_str().len() + data.get().len() + from.map_or(4, str::len),
    );
    out.push_str(r#"{"type":"message","room":"#);
    push_json_str(&mut out, room.as_str());
    push_from_and_data(out, from, data)
}

/// A stored `message` frame with its place in the room's history: the
/// frame's JSON object with `offset` and `epoch` added at its end. Done once
/// per message per gateway, not per recipient.
pub fn message_at(stored: &[u8], offset: u64, epoch: &str) -> String {
    let body = stored.strip_suffix(b"}").unwrap_or(stored);
    let mut out = String::with_capacity(body.len() + 48 + epoch.len());
    out.push_str(&String::from_utf8_lossy(body));
    out.push_str(&position_fields(offset, epoch, true));
    out.push('}');
    out
}

/// `"offset":N,"epoch":"E"` (with a leading comma when `lead`): the fields
/// every history answer carries.
pub fn position_fields(offset: u64, epoch: &str, lead: bool) -> String {
    let mut out = String::with_capacity(32 + epoch.len());
    if lead {
        out.push(',');
    }
    let _ = write!(out, r#""offset":{offset},"epoch":"#);
    push_json_str(&mut out, epoch);
    out
}

/// A kept JSON `message` frame read back for a history answer: its `from`
/// and `data`, raw. `None` for bytes that are not such a frame.
pub fn stored_message(stored: &[u8]) -> Option<(Option<String>, Box<RawValue>)> {
    #[derive(Deserialize)]
    struct Kept {
        from: Option<String>,
        data: Box<RawValue>,
    }
    let kept: Kept = serde_json::from_slice(stored).ok()?;
    Some((kept.from, kept.data))
}

/// `{"type":"direct",…}`.
pub fn direct(from: Option<&str>, data: &RawValue) -> String {
    let mut out = String::with_capacity(40 + data.get().len() + from.map_or(4, str::len));
    out.push_str(r#"{"type":"direct""#);
    push_from_and_data(out, from, data)
}

/// Ends a delivery frame: `,"from":…,"data":…}` (`from` null for the HTTP API).
fn push_from_and_data(mut out: String, from: Option<&str>, data: &RawValue) -> String {
    out.push_str(r#","from":"#);
    match from {
        Some(user) => push_json_str(&mut out, user),
        None => out.push_str("null"),
    }
    out.push_str(r#","data":"#);
    out.push_str(data.get());
    out.push('}');
    out
}

/// `{"type":"unsubscribed","room":…}`: the server took this connection out
/// of a room (a `refresh` whose token no longer allows it, or `POST /v1/unsubscribe`).
pub fn unsubscribed(room: &RoomName) -> String {
    let mut out = String::with_capacity(40 + room.as_str().len());
    out.push_str(r#"{"type":"unsubscribed","room":"#);
    push_json_str(&mut out, room.as_str());
    out.push('}');
    out
}

/// The `exp` field of a `refresh` answer: the token's `exp` claim, or null.
pub fn exp_field(exp: Option<u64>) -> String {
    match exp {
        Some(exp) => format!(r#""exp":{exp}"#),
        None => r#""exp":null"#.to_owned(),
    }
}

/// `{"type":"ok","id":…}` plus `extra`, a pre-encoded `"key":value` list (may be empty).
pub fn ok(id: &RequestId, extra: &str) -> String {
    let mut out = String::with_capacity(24 + id.as_json().len() + extra.len());
    out.push_str(r#"{"type":"ok","id":"#);
    out.push_str(id.as_json());
    if !extra.is_empty() {
        out.push(',');
        out.push_str(extra);
    }
    out.push('}');
    out
}

/// `{"type":"error",…}`, with the `id` when the frame had a valid one.
pub fn error(id: Option<&RequestId>, failure: &Failure) -> String {
    let mut out = String::with_capacity(64 + failure.message.len());
    out.push_str(r#"{"type":"error","#);
    if let Some(id) = id {
        out.push_str(r#""id":"#);
        out.push_str(id.as_json());
        out.push(',');
    }
    out.push_str(r#""code":""#);
    out.push_str(failure.code.as_str());
    out.push_str(r#"","message":"#);
    push_json_str(&mut out, &failure.message);
    out.push('}');
    out
}

/// `{"type":"joined",…}` (`joined`) or `{"type":"left",…}`: a presence event.
pub fn presence_event(joined: bool, room: &RoomName, user: &str) -> String {
    let mut out = String::with_capacity(40 + room.as_str().len() + user.len());
    out.push_str(if joined {
        r#"{"type":"joined","room":"#
    } else {
        r#"{"type":"left","room":"#
    });
    push_json_str(&mut out, room.as_str());
    out.push_str(r#","user":"#);
    push_json_str(&mut out, user);
    out.push('}');
    out
}

/// The `members` field of a presence answer.
pub fn members_field(members: &[String]) -> String {
    let mut out = String::from(r#""members":["#);
    for (i, m) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(&mut out, m);
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn op(text: &str) -> Result<Op<'_>, Failure> {
        decode(text).op
    }

    fn code(text: &str) -> ErrorCode {
        op(text).unwrap_err().code
    }

    #[test]
    fn decodes_every_operation() {
        assert!(
            matches!(op(r#"{"type":"join","room":"a"}"#), Ok(Op::Join(r)) if r.as_str() == "a")
        );
        assert!(matches!(
            op(r#"{"type":"leave","room":"a"}"#),
            Ok(Op::Leave(_))
        ));
        assert!(matches!(
            op(r#"{"type":"presence","room":"a"}"#),
            Ok(Op::Presence(_))
        ));
        assert!(matches!(op(r#"{"type":"ping"}"#), Ok(Op::Ping)));
        match op(r#"{"type":"publish","room":"a","data":{"x":[1, 2]}}"#) {
            Ok(Op::Publish(Publish { data, echo, .. })) => {
                assert_eq!(
                    data.get(),
                    r#"{"x":[1, 2]}"#,
                    "data passes through byte for byte"
                );
                assert!(echo);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            op(r#"{"type":"publish","room":"a","data":1,"echo":false}"#),
            Ok(Op::Publish(Publish { echo: false, .. }))
        ));
        assert!(
            matches!(op(r#"{"type":"send","to":"u\"1","data":null}"#), Ok(Op::Send(Send { to, .. })) if to == "u\"1")
        );
    }

    #[test]
    fn decodes_since_limit_and_history() {
        match op(r#"{"type":"join","room":"c:1","since":{"offset":7,"epoch":"e"}}"#) {
            Ok(Op::JoinSince(room, since)) => {
                assert_eq!(room.as_str(), "c:1");
                assert_eq!(
                    since,
                    Since {
                        offset: 7,
                        epoch: "e".into()
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            op(r#"{"type":"join","room":"a","since":null}"#),
            Ok(Op::Join(_))
        ));
        for bad in [
            r#"{"type":"join","room":"a","since":1}"#,
            r#"{"type":"join","room":"a","since":{"offset":-1,"epoch":"e"}}"#,
            r#"{"type":"join","room":"a","since":{"offset":1}}"#,
            r#"{"type":"history","room":"a","limit":0}"#,
            r#"{"type":"history","room":"a","limit":101}"#,
            r#"{"type":"history","room":"a","limit":"5"}"#,
        ] {
            assert_eq!(code(bad), ErrorCode::BadRequest, "{bad}");
        }
        match op(r#"{"type":"history","room":"a"}"#) {
            Ok(Op::History(q)) => assert_eq!((q.limit, q.since), (MAX_HISTORY_LIMIT, None)),
            other => panic!("{other:?}"),
        }
        match op(r#"{"type":"history","room":"a","limit":3,"since":{"offset":0,"epoch":""}}"#) {
            Ok(Op::History(q)) => assert_eq!((q.limit, q.since.map(|s| s.offset)), (3, Some(0))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stored_messages_gain_their_position_and_read_back() {
        let room = RoomName::parse("c:1").unwrap();
        let data = RawValue::from_string(r#"{ "a" : 1.50 }"#.into()).unwrap();
        let stored = message(&room, Some("u"), &data);
        let at: serde_json::Value =
            serde_json::from_str(&message_at(stored.as_bytes(), 9, "e\"1")).unwrap();
        assert_eq!(at["offset"], 9);
        assert_eq!(at["epoch"], "e\"1");
        assert_eq!(at["room"], "c:1");
        // Read back into history answers: `history/kept.rs`.
        let (from, data) = stored_message(stored.as_bytes()).unwrap();
        assert_eq!(from.as_deref(), Some("u"));
        assert_eq!(data.get(), r#"{ "a" : 1.50 }"#, "data byte for byte");
        assert!(stored_message(b"junk").is_none());
    }

    #[test]
    fn joins_may_ask_for_presence_events() {
        assert!(decode(r#"{"type":"join","room":"a","presence":true}"#).presence);
        for off in [
            r#"{"type":"join","room":"a"}"#,
            r#"{"type":"join","room":"a","presence":false}"#,
            r#"{"type":"join","room":"a","presence":null}"#,
            r#"{"type":"leave","room":"a","presence":true}"#,
            r#"{"type":"ping","presence":"junk"}"#,
        ] {
            let r = decode(off);
            assert!(r.op.is_ok() && !r.presence, "{off}");
        }
        assert_eq!(
            code(r#"{"type":"join","room":"a","presence":"yes"}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            presence_event(true, &RoomName::parse("r").unwrap(), "u\"1"),
            r#"{"type":"joined","room":"r","user":"u\"1"}"#
        );
        assert_eq!(
            presence_event(false, &RoomName::parse("r").unwrap(), "u"),
            r#"{"type":"left","room":"r","user":"u"}"#
        );
    }

    #[test]
    fn ids_are_echoed_exactly() {
        assert_eq!(
            decode(r#"{"type":"ping","id":7}"#).id.unwrap().as_json(),
            "7"
        );
        assert_eq!(
            decode(r#"{"type":"ping","id":-7}"#).id.unwrap().as_json(),
            "-7"
        );
        assert_eq!(
            decode(r#"{"type":"ping","id":"a\"b"}"#)
                .id
                .unwrap()
                .as_json(),
            r#""a\"b""#
        );
        let long = format!(r#"{{"type":"ping","id":"{}"}}"#, "x".repeat(65));
        assert_eq!(decode(&long).op.unwrap_err().code, ErrorCode::BadRequest);
        assert!(decode(&long).id.is_none());
        for bad in ["1.5", "true", "null", "[1]", "{}"] {
            let frame = format!(r#"{{"type":"ping","id":{bad}}}"#);
            assert_eq!(code(&frame), ErrorCode::BadRequest, "{bad}");
        }
    }

    #[test]
    fn a_bad_field_keeps_the_id() {
        let r = decode(r#"{"type":"join","room":5,"id":"x"}"#);
        assert_eq!(r.id.unwrap().as_json(), r#""x""#);
        assert_eq!(r.op.unwrap_err().code, ErrorCode::BadRequest);
    }

    #[test]
    fn malformed_frames_are_bad_requests() {
        for frame in [
            "",
            "nope",
            "[]",
            "1",
            "null",
            r#""join""#,
            r#"{"type":1}"#,
            r#"{}"#,
            r#"{"type":"dance"}"#,
            r#"{"type":"join"}"#,
            r#"{"type":"publish","room":"a"}"#,
            r#"{"type":"send","data":1}"#,
            r#"{"type":"send","to":"","data":1}"#,
            r#"{"type":"publish","room":"a","data":1,"echo":"no"}"#,
            r#"{"type":"ping","type":"ping"}"#,
        ] {
            assert_eq!(code(frame), ErrorCode::BadRequest, "{frame}");
        }
    }

    #[test]
    fn room_names_follow_the_rule() {
        for bad in ["", "a.b", "a*", ">", "a b", "é", "a\u{0}"] {
            let frame = format!(
                r#"{{"type":"join","room":{}}}"#,
                serde_json::to_string(bad).unwrap()
            );
            assert_eq!(code(&frame), ErrorCode::InvalidRoom, "{bad:?}");
        }
        let long = format!(r#"{{"type":"join","room":"{}"}}"#, "a".repeat(129));
        assert_eq!(code(&long), ErrorCode::InvalidRoom);
        let max = format!(r#"{{"type":"join","room":"{}"}}"#, "a".repeat(128));
        assert!(op(&max).is_ok());
        assert!(op(r#"{"type":"join","room":"A-z_0:9@x/y"}"#).is_ok());
    }

    #[test]
    fn refresh_needs_a_string_token() {
        assert!(
            matches!(op(r#"{"type":"refresh","token":"a.b.c"}"#), Ok(Op::Refresh(t)) if t == "a.b.c")
        );
        assert_eq!(code(r#"{"type":"refresh"}"#), ErrorCode::BadRequest);
        assert_eq!(
            code(r#"{"type":"refresh","token":7}"#),
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn broadcasts_name_their_first_bad_room() {
        let b = decode_broadcast(r#"{"rooms":["a","b:1","a"],"data":{"x":1}}"#).unwrap();
        let names: Vec<&str> = b.rooms.iter().map(RoomName::as_str).collect();
        assert_eq!(names, ["a", "b:1"], "distinct, in order");
        assert_eq!(b.data.get(), r#"{"x":1}"#);
        let bad = decode_broadcast(r#"{"rooms":["ok","no way","x.y"],"data":1}"#).unwrap_err();
        assert_eq!(bad.code, ErrorCode::InvalidRoom);
        assert!(
            bad.message.contains(r#"rooms[1] "no way""#),
            "{}",
            bad.message
        );
        let max: Vec<String> = (0..MAX_BROADCAST_ROOMS).map(|i| format!("r{i}")).collect();
        let body = serde_json::json!({"rooms": max, "data": null}).to_string();
        assert_eq!(
            decode_broadcast(&body).unwrap().rooms.len(),
            MAX_BROADCAST_ROOMS
        );
        let over: Vec<String> = (0..=MAX_BROADCAST_ROOMS).map(|i| format!("r{i}")).collect();
        let body = serde_json::json!({"rooms": over, "data": null}).to_string();
        let too_many = decode_broadcast(&body).unwrap_err();
        assert_eq!(too_many.code, ErrorCode::BadRequest);
        assert!(too_many.message.contains("1001"), "{}", too_many.message);
        for bad in [
            r#"{"data":1}"#,
            r#"{"rooms":[],"data":1}"#,
            r#"{"rooms":"a","data":1}"#,
            r#"{"rooms":[1],"data":1}"#,
            r#"{"rooms":["a"]}"#,
            "[]",
        ] {
            assert_eq!(
                decode_broadcast(bad).unwrap_err().code,
                ErrorCode::BadRequest,
                "{bad}"
            );
        }
    }

    #[test]
    fn user_commands_need_a_user() {
        assert_eq!(decode_disconnect(r#"{"user":"u\"1"}"#).unwrap(), "u\"1");
        let (user, room) = decode_unsubscribe(r#"{"user":"u","room":"chat:1"}"#).unwrap();
        assert_eq!((user.as_ref(), room.as_str()), ("u", "chat:1"));
        for bad in [r#"{}"#, r#"{"user":""}"#, r#"{"user":5}"#, "nope"] {
            assert_eq!(
                decode_disconnect(bad).unwrap_err().code,
                ErrorCode::BadRequest,
                "{bad}"
            );
        }
        assert_eq!(
            decode_unsubscribe(r#"{"user":"u"}"#).unwrap_err().code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            decode_unsubscribe(r#"{"user":"u","room":"a b"}"#)
                .unwrap_err()
                .code,
            ErrorCode::InvalidRoom
        );
    }

    #[test]
    fn refresh_frames_are_valid_json() {
        let room = RoomName::parse("r:1").unwrap();
        let u: serde_json::Value = serde_json::from_str(&unsubscribed(&room)).unwrap();
        assert_eq!(u, serde_json::json!({"type":"unsubscribed","room":"r:1"}));
        let id = decode(r#"{"type":"ping","id":1}"#).id.unwrap();
        for (exp, want) in [
            (Some(17), serde_json::json!(17)),
            (None, serde_json::Value::Null),
        ] {
            let ok: serde_json::Value = serde_json::from_str(&ok(&id, &exp_field(exp))).unwrap();
            assert_eq!(ok["exp"], want);
        }
    }

    #[test]
    fn payload_limit_is_inclusive() {
        assert!(check_payload(10, 10).is_ok());
        assert_eq!(
            check_payload(11, 10).unwrap_err().code,
            ErrorCode::PayloadTooLarge
        );
    }

    #[test]
    fn unknown_fields_are_ignored() {
        assert!(matches!(
            op(r#"{"type":"ping","extra":{"deep":[1]}}"#),
            Ok(Op::Ping)
        ));
    }

    #[test]
    fn server_frames_are_valid_json() {
        let room = RoomName::parse("r").unwrap();
        let data = RawValue::from_string(r#"{"t":"x"}"#.into()).unwrap();
        let m: serde_json::Value =
            serde_json::from_str(&message(&room, Some("u\"x"), &data)).unwrap();
        assert_eq!(m["from"], "u\"x");
        assert_eq!(m["data"]["t"], "x");
        let m: serde_json::Value = serde_json::from_str(&message(&room, None, &data)).unwrap();
        assert!(m["from"].is_null());
        let id = decode(r#"{"type":"ping","id":"q"}"#).id.unwrap();
        let e: serde_json::Value = serde_json::from_str(&error(
            Some(&id),
            &Failure::new(ErrorCode::Forbidden, "no \"way\""),
        ))
        .unwrap();
        assert_eq!(e["id"], "q");
        assert_eq!(e["code"], "forbidden");
        let ok: serde_json::Value =
            serde_json::from_str(&ok(&id, &members_field(&["a".into(), "b".into()]))).unwrap();
        assert_eq!(ok["members"], serde_json::json!(["a", "b"]));
        let w: serde_json::Value = serde_json::from_str(&welcome("s", "u", "n", 5)).unwrap();
        assert_eq!(w["heartbeat_ms"], 5);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let text = String::from_utf8_lossy(&bytes);
            let r = decode(&text);
            if let Err(f) = r.op {
                prop_assert!(ErrorCode::ALL.contains(&f.code));
            }
        }

        #[test]
        fn arbitrary_json_never_panics(value in arb_json()) {
            let text = value.to_string();
            let r = decode(&text);
            match r.op {
                Ok(_) => prop_assert!(value.is_object()),
                Err(f) => prop_assert!(matches!(f.code, ErrorCode::BadRequest | ErrorCode::InvalidRoom)),
            }
        }

        #[test]
        fn frames_with_a_type_field_never_panic(
            kind in prop_oneof![
                Just("join".to_owned()), Just("leave".to_owned()), Just("publish".to_owned()),
                Just("send".to_owned()), Just("presence".to_owned()), Just("ping".to_owned()),
                Just("refresh".to_owned()), ".*",
            ],
            room in arb_json(), data in arb_json(), id in arb_json(), to in arb_json(), echo in arb_json(),
        ) {
            let frame = serde_json::json!({"type": kind, "room": room, "data": data, "id": id, "to": to, "echo": echo});
            let text = frame.to_string();
            let r = decode(&text);
            if let Err(f) = r.op {
                prop_assert!(matches!(f.code, ErrorCode::BadRequest | ErrorCode::InvalidRoom));
            }
        }
    }

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            ".{0,80}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                proptest::collection::hash_map(
                    "(type|room|data|id|to|echo|[a-z]{1,6})",
                    inner,
                    0..6
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
