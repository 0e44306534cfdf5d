//! The `roomcast.v1.msgpack` encoding: protocol frames as MessagePack maps,
//! converted to and from the JSON frames the rest of the gateway speaks. Pure.
//!
//! A client's MessagePack frame is converted to JSON text and decoded by
//! `protocol.rs` like any JSON frame, so the fields and rules are the same by
//! construction; the `data` it carried is also kept as sent, so MessagePack
//! recipients get it back exactly (binary included) while JSON recipients get
//! its JSON equivalent, binary as a base64 string (RFC 4648 §4, padded).
//! Server frames built as JSON (welcome, ok, error, messages from JSON
//! clients and the HTTP API) convert to MessagePack value for value.
//!
//! Values without a JSON equivalent are refused with `bad_request` when a
//! client sends them: extension types, map keys that are not strings,
//! non-finite floats and strings that are not UTF-8.

use base64::Engine as _;
use bytes::Bytes;
use rmpv::{Value, ValueRef};

use crate::protocol::{self, ErrorCode, Failure};

/// The subprotocol a MessagePack client offers.
pub const SUBPROTOCOL: &str = "roomcast.v1.msgpack";

/// Deepest nesting read from a client (serde_json's own limit is 128).
const MAX_DEPTH: usize = 128;

/// A client frame, converted.
#[derive(Debug)]
pub struct ClientFrame {
    /// The frame as JSON text, for `protocol::decode`.
    pub json: String,
    /// The frame's `data` as the client encoded it, if it has one.
    pub data: Option<Vec<u8>>,
}

/// Converts one binary client frame.
pub fn decode(mut bytes: &[u8]) -> Result<ClientFrame, Failure> {
    let bad = |message| Failure::new(ErrorCode::BadRequest, message);
    let value = rmpv::decode::read_value_with_max_depth(&mut bytes, MAX_DEPTH)
        .map_err(|_| bad("frame is not MessagePack"))?;
    if !bytes.is_empty() {
        return Err(bad("bytes after the frame's MessagePack map"));
    }
    let Value::Map(entries) = &value else {
        return Err(bad("frame must be a MessagePack map"));
    };
    let mut json = String::new();
    write_json(&value, &mut json).map_err(bad)?;
    let data = entries
        .iter()
        .find(|(key, _)| key.as_str() == Some("data"))
        .map(|(_, data)| encode(data));
    Ok(ClientFrame { json, data })
}

/// Writes `value` as JSON; fails on values without a JSON equivalent.
fn write_json(value: &Value, out: &mut String) -> Result<(), &'static str> {
    match value {
        Value::Nil => out.push_str("null"),
        Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Integer(i) => out.push_str(&i.to_string()),
        Value::F32(f) => write_float(f64::from(*f), out)?,
        Value::F64(f) => write_float(*f, out)?,
        Value::String(s) => {
            let s = s.as_str().ok_or("MessagePack strings must be UTF-8")?;
            protocol::push_json_str(out, s);
        }
        Value::Binary(bin) => {
            out.push('"');
            base64::engine::general_purpose::STANDARD.encode_string(bin, out);
            out.push('"');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(item, out)?;
            }
            out.push(']');
        }
        Value::Map(entries) => {
            out.push('{');
            for (i, (key, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let key = key.as_str().ok_or("map keys must be UTF-8 strings")?;
                protocol::push_json_str(out, key);
                out.push(':');
                write_json(item, out)?;
            }
            out.push('}');
        }
        Value::Ext(..) => return Err("MessagePack extension types have no JSON equivalent"),
    }
    Ok(())
}

fn write_float(f: f64, out: &mut String) -> Result<(), &'static str> {
    let number = serde_json::Number::from_f64(f).ok_or("floats must be finite")?;
    out.push_str(&number.to_string());
    Ok(())
}

fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, value);
    out
}

/// A JSON server frame as MessagePack (the gateway's own frames are valid
/// JSON; anything else becomes an `internal` error frame rather than a panic).
pub fn from_json(json: &[u8]) -> Bytes {
    match serde_json::from_slice::<serde_json::Value>(json) {
        Ok(value) => Bytes::from(encode(&to_msgpack(value))),
        Err(_) => {
            let failure = Failure::new(ErrorCode::Internal, "frame could not be converted");
            from_json(protocol::error(None, &failure).as_bytes())
        }
    }
}

fn to_msgpack(value: serde_json::Value) -> Value {
    use serde_json::Value as J;
    match value {
        J::Null => Value::Nil,
        J::Bool(b) => Value::Boolean(b),
        J::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Value::from(u),
            (None, Some(i)) => Value::from(i),
            _ => Value::F64(n.as_f64().unwrap_or(0.0)),
        },
        J::String(s) => Value::from(s),
        J::Array(items) => Value::Array(items.into_iter().map(to_msgpack).collect()),
        J::Object(map) => Value::Map(
            map.into_iter()
                .map(|(k, v)| (Value::from(k), to_msgpack(v)))
                .collect(),
        ),
    }
}

/// A MessagePack frame (from a peer gateway) as JSON text. Its sender
/// checked that it converts; if it does not, JSON recipients get an
/// `internal` error frame.
pub fn to_json(msgpack: &[u8]) -> Bytes {
    let mut rd = msgpack;
    let mut out = String::new();
    let converted = rmpv::decode::read_value_with_max_depth(&mut rd, MAX_DEPTH)
        .ok()
        .is_some_and(|value| write_json(&value, &mut out).is_ok());
    if !converted {
        let failure = Failure::new(ErrorCode::Internal, "frame could not be converted");
        out = protocol::error(None, &failure);
    }
    Bytes::from(out)
}

/// `{"type":"message","room":…,"from":…,"data":…}` with `data` as the
/// MessagePack client encoded it.
pub fn message(room: &str, from: Option<&str>, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(48 + room.len() + data.len());
    write_map_len(&mut out, 4);
    write_str(&mut out, "type");
    write_str(&mut out, "message");
    write_str(&mut out, "room");
    write_str(&mut out, room);
    from_and_data(out, from, data)
}

/// `{"type":"direct","from":…,"data":…}`, likewise.
pub fn direct(from: Option<&str>, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(32 + data.len());
    write_map_len(&mut out, 3);
    write_str(&mut out, "type");
    write_str(&mut out, "direct");
    from_and_data(out, from, data)
}

fn from_and_data(mut out: Vec<u8>, from: Option<&str>, data: &[u8]) -> Bytes {
    write_from_and_data(&mut out, from, data);
    Bytes::from(out)
}

/// `"from":…,"data":…` with `data` as the client encoded it (`from` nil for the HTTP API).
fn write_from_and_data(out: &mut Vec<u8>, from: Option<&str>, data: &[u8]) {
    write_str(out, "from");
    match from {
        Some(user) => write_str(out, user),
        None => out.push(0xc0),
    }
    write_str(out, "data");
    out.extend_from_slice(data);
}

/// A stored `message` frame built by [`message`] with its place in the
/// room's history: `offset` and `epoch` added as its last two fields (as
/// `protocol::message_at` does for JSON), the rest of its bytes kept as
/// they are. Bytes that are not a MessagePack map become an `internal`
/// error frame, as in [`from_json`].
pub fn message_at(stored: &[u8], offset: u64, epoch: &str) -> Bytes {
    let mut rest = stored;
    let Some(len) = rmp::decode::read_map_len(&mut rest)
        .ok()
        .and_then(|len| len.checked_add(2))
    else {
        let failure = Failure::new(ErrorCode::Internal, "stored message could not be read");
        return from_json(protocol::error(None, &failure).as_bytes());
    };
    let mut out = Vec::with_capacity(stored.len() + 24 + epoch.len());
    // Writing to a Vec cannot fail.
    let _ = rmp::encode::write_map_len(&mut out, len);
    out.extend_from_slice(rest);
    write_str(&mut out, "offset");
    let _ = rmp::encode::write_uint(&mut out, offset);
    write_str(&mut out, "epoch");
    write_str(&mut out, epoch);
    Bytes::from(out)
}

/// A stored MessagePack `message` frame read back: its `from` and its
/// `data` exactly as the client encoded it. `None` for bytes that are not
/// such a frame (a map with a `data` field and a `from` that is a string or nil).
pub fn read_message(stored: &[u8]) -> Option<(Option<String>, &[u8])> {
    let mut rd = stored;
    let len = rmp::decode::read_map_len(&mut rd).ok()?;
    let (mut from, mut data) = (None, None);
    for _ in 0..len {
        let key = rmpv::decode::read_value_ref_with_max_depth(&mut rd, MAX_DEPTH).ok()?;
        let start = rd;
        let value = rmpv::decode::read_value_ref_with_max_depth(&mut rd, MAX_DEPTH).ok()?;
        match key {
            ValueRef::String(key) if key.as_str() == Some("from") => {
                from = Some(match value {
                    ValueRef::Nil => None,
                    ValueRef::String(user) => Some(user.as_str()?.to_owned()),
                    _ => return None,
                });
            }
            ValueRef::String(key) if key.as_str() == Some("data") => {
                data = Some(&start[..start.len() - rd.len()]);
            }
            _ => {}
        }
    }
    Some((from?, data?))
}

/// The JSON equivalent of one MessagePack value (binary as base64), or
/// `None` when it has none.
pub fn value_to_json(value: &[u8]) -> Option<String> {
    let mut rd = value;
    let value = rmpv::decode::read_value_with_max_depth(&mut rd, MAX_DEPTH).ok()?;
    let mut out = String::new();
    write_json(&value, &mut out).ok()?;
    Some(out)
}

/// One JSON value (text) as MessagePack, value for value; `None` for text
/// that is not JSON.
pub fn value_from_json(json: &str) -> Option<Vec<u8>> {
    let value = serde_json::from_str::<serde_json::Value>(json).ok()?;
    Some(encode(&to_msgpack(value)))
}

/// The `ok` answering a `history` frame, in MessagePack: `type`, `id`
/// (MessagePack), `messages` (each `offset`, `from`, `data`, the data
/// MessagePack bytes), `offset`, `epoch`; the JSON answer's fields in its
/// order.
pub fn history_ok(
    id: &[u8],
    messages: &[(u64, Option<&str>, &[u8])],
    offset: u64,
    epoch: &str,
) -> Bytes {
    let mut out = Vec::new();
    write_map_len(&mut out, 5);
    write_str(&mut out, "type");
    write_str(&mut out, "ok");
    write_str(&mut out, "id");
    out.extend_from_slice(id);
    write_str(&mut out, "messages");
    // Fewer than u32::MAX: a history page holds at most 100.
    let _ = rmp::encode::write_array_len(&mut out, messages.len() as u32);
    for &(at, from, data) in messages {
        write_map_len(&mut out, 3);
        write_str(&mut out, "offset");
        let _ = rmp::encode::write_uint(&mut out, at);
        write_from_and_data(&mut out, from, data);
    }
    write_str(&mut out, "offset");
    let _ = rmp::encode::write_uint(&mut out, offset);
    write_str(&mut out, "epoch");
    write_str(&mut out, epoch);
    Bytes::from(out)
}

/// A fixmap header: every frame built here has fewer than 16 fields.
fn write_map_len(out: &mut Vec<u8>, len: u8) {
    debug_assert!(len < 16);
    out.push(0x80 | (len & 0x0f));
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    let _ = rmpv::encode::write_value(out, &Value::from(s));
}

/// Whether a bus payload is a MessagePack frame (a map) rather than JSON
/// text (an object, `{`).
pub fn is_msgpack(payload: &[u8]) -> bool {
    matches!(payload.first(), Some(0x80..=0x8f | 0xde | 0xdf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(value: &Value) -> Vec<u8> {
        encode(value)
    }

    fn map(entries: Vec<(&str, Value)>) -> Value {
        Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect(),
        )
    }

    #[test]
    fn client_frames_become_json_and_keep_their_data() {
        let data = map(vec![
            ("bin", Value::Binary(vec![0, 1, 2, 255])),
            ("n", Value::from(-3)),
            ("f", Value::F64(1.5)),
            ("list", Value::Array(vec![Value::Nil, Value::from(true)])),
        ]);
        let frame = map(vec![
            ("type", Value::from("publish")),
            ("room", Value::from("r")),
            ("id", Value::from(7)),
            ("data", data.clone()),
        ]);
        let decoded = decode(&pack(&frame)).unwrap();
        let json: serde_json::Value = serde_json::from_str(&decoded.json).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type":"publish","room":"r","id":7,
                "data":{"bin":"AAEC/w==","n":-3,"f":1.5,"list":[null,true]}})
        );
        assert_eq!(decoded.data.unwrap(), pack(&data), "data kept as sent");
        let request = protocol::decode(&decoded.json);
        assert_eq!(request.id.unwrap().as_json(), "7");
        assert!(request.op.is_ok());
    }

    #[test]
    fn values_without_a_json_equivalent_are_bad_requests() {
        for data in [
            Value::Ext(1, vec![1]),
            Value::F64(f64::NAN),
            Value::F32(f32::INFINITY),
            Value::Map(vec![(Value::from(1), Value::Nil)]),
        ] {
            let frame = map(vec![("type", Value::from("publish")), ("data", data)]);
            assert_eq!(
                decode(&pack(&frame)).unwrap_err().code,
                ErrorCode::BadRequest
            );
        }
        for bytes in [
            vec![],
            vec![0xc1],
            pack(&Value::from("join")),
            pack(&Value::Array(vec![])),
            [pack(&map(vec![])), vec![0]].concat(),
            // A map announcing more entries than it has.
            vec![0xdf, 0xff, 0xff, 0xff, 0xff],
            // Deeper than the limit.
            [vec![0x91; 200], vec![0xc0]].concat(),
        ] {
            assert_eq!(
                decode(&bytes).unwrap_err().code,
                ErrorCode::BadRequest,
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn json_frames_convert_value_for_value() {
        let json = br#"{"type":"message","room":"r","from":null,"data":{"a":[1,-2,2.5,"s",true,null],"big":18446744073709551615}}"#;
        let packed = from_json(json);
        let value = rmpv::decode::read_value(&mut &packed[..]).unwrap();
        let back: serde_json::Value = serde_json::from_slice(&to_json(&packed)).unwrap();
        assert_eq!(
            back,
            serde_json::from_slice::<serde_json::Value>(json).unwrap()
        );
        assert_eq!(value["data"]["big"], Value::from(u64::MAX));
        assert_eq!(value["data"]["a"][1], Value::from(-2));
    }

    #[test]
    fn messages_are_built_around_the_clients_data() {
        let data = pack(&Value::Binary(vec![9; 3]));
        let m = message("room", Some("u"), &data);
        let value = rmpv::decode::read_value(&mut &m[..]).unwrap();
        assert_eq!(value["type"], Value::from("message"));
        assert_eq!(value["room"], Value::from("room"));
        assert_eq!(value["from"], Value::from("u"));
        assert_eq!(value["data"], Value::Binary(vec![9; 3]));
        assert!(is_msgpack(&m));
        let d = direct(None, &data);
        let value = rmpv::decode::read_value(&mut &d[..]).unwrap();
        assert_eq!(value["from"], Value::Nil);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&to_json(&d)).unwrap(),
            serde_json::json!({"type":"direct","from":null,"data":"CQkJ"})
        );
        assert!(!is_msgpack(b"{}"));
    }

    #[test]
    fn stored_messages_gain_their_position_and_read_back() {
        let data = pack(&map(vec![("b", Value::Binary(vec![0xc1, 0]))]));
        let kept = message("c:1", Some("u"), &data);
        let at = message_at(&kept, u64::MAX, "e\"1");
        assert_eq!(
            &at[1..kept.len()],
            &kept[1..],
            "the kept bytes as they were"
        );
        let value = rmpv::decode::read_value(&mut &at[..]).unwrap();
        let keys: Vec<&str> = value
            .as_map()
            .unwrap()
            .iter()
            .filter_map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(keys, ["type", "room", "from", "data", "offset", "epoch"]);
        assert_eq!(value["offset"], Value::from(u64::MAX));
        assert_eq!(value["epoch"], Value::from("e\"1"));
        assert_eq!(read_message(&kept), Some((Some("u".into()), &data[..])));
        assert_eq!(
            read_message(&message("c:1", None, &data)),
            Some((None, &data[..]))
        );
        // 15 fields become 17: the header grows from a fixmap to a map 16.
        let wide = pack(&Value::Map(
            (0..15)
                .map(|i| (Value::from(format!("k{i}")), Value::from(i)))
                .collect(),
        ));
        let at = message_at(&wide, 1, "e");
        assert_eq!(at[0], 0xde);
        let value = rmpv::decode::read_value(&mut &at[..]).unwrap();
        assert_eq!(value.as_map().unwrap().len(), 17);
        assert_eq!(value["k14"], Value::from(14));
        // Not a map (a stored frame never is): an `internal` error frame.
        let broken = rmpv::decode::read_value(&mut &message_at(&[0xde, 0], 1, "e")[..]).unwrap();
        assert_eq!(broken["code"], Value::from("internal"));
        for junk in [
            &[0xde, 0][..],
            &pack(&map(vec![("data", Value::Nil)])),
            &pack(&map(vec![("from", Value::from(1)), ("data", Value::Nil)])),
        ] {
            assert_eq!(read_message(junk), None, "{junk:?}");
        }
        assert_eq!(value_to_json(&data).as_deref(), Some(r#"{"b":"wQA="}"#));
        assert_eq!(value_to_json(&pack(&Value::Ext(1, vec![]))), None);
        assert_eq!(
            value_from_json("[1,\"a\"]"),
            Some(pack(&Value::Array(vec![1.into(), "a".into()])))
        );
        assert_eq!(value_from_json("nope"), None);
    }
}
