//! A room's kept messages read back for a history answer (the `history`
//! frame's `ok`, `GET /v1/history`). Pure.
//!
//! A kept payload is the `message` frame the publishing gateway put on the
//! bus: JSON text, or a MessagePack map when a `roomcast.v1.msgpack` client
//! published it (its `data` as sent, binary included), told apart by the
//! first byte as on the bus. Entries stored as JSON by gateways before
//! MessagePack frames were kept (binary as base64 strings) read as JSON.
//! JSON answers carry MessagePack data's JSON equivalent (binary as base64);
//! a MessagePack answer carries it byte for byte.

use std::fmt::Write as _;

use bytes::Bytes;
use serde_json::value::RawValue;

use super::Page;
use crate::msgpack;
use crate::protocol::{self, RequestId};

/// One kept message as a history answer lists it.
#[derive(Debug)]
struct Kept<'a> {
    offset: u64,
    from: Option<String>,
    data: Data<'a>,
}

/// A kept message's `data`, in the encoding it was published in.
#[derive(Debug)]
enum Data<'a> {
    Json(Box<RawValue>),
    MsgPack(&'a [u8]),
}

/// The kept messages of `page` that read as `message` frames, oldest first
/// (other bytes are skipped).
fn read(page: &Page) -> impl Iterator<Item = Kept<'_>> {
    page.messages.iter().filter_map(|m| {
        let (from, data) = if msgpack::is_msgpack(&m.payload) {
            let (from, data) = msgpack::read_message(&m.payload)?;
            (from, Data::MsgPack(data))
        } else {
            let (from, data) = protocol::stored_message(&m.payload)?;
            (from, Data::Json(data))
        };
        Some(Kept {
            offset: m.offset,
            from,
            data,
        })
    })
}

/// The fields of a JSON history answer: `messages` (each `offset`, `from`,
/// `data`), `offset`, `epoch`.
pub fn fields(page: &Page) -> String {
    let mut out = String::from(r#""messages":["#);
    let mut first = true;
    for kept in read(page) {
        let converted;
        let data = match &kept.data {
            Data::Json(raw) => raw.get(),
            Data::MsgPack(raw) => match msgpack::value_to_json(raw) {
                Some(json) => {
                    converted = json;
                    converted.as_str()
                }
                None => continue,
            },
        };
        if !first {
            out.push(',');
        }
        first = false;
        let _ = write!(out, r#"{{"offset":{},"from":"#, kept.offset);
        match &kept.from {
            Some(user) => protocol::push_json_str(&mut out, user),
            None => out.push_str("null"),
        }
        out.push_str(r#","data":"#);
        out.push_str(data);
        out.push('}');
    }
    out.push(']');
    out.push_str(&protocol::position_fields(
        page.position.offset,
        page.position.epoch.as_str(),
        true,
    ));
    out
}

/// The MessagePack `ok` answering a `history` frame with `id`, when `page`
/// holds a message a MessagePack client published (its data is then kept
/// byte for byte); `None` when every message is JSON, whose answer converts
/// from the JSON one like any server frame.
pub fn ok_msgpack(id: &RequestId, page: &Page) -> Option<Bytes> {
    let kept: Vec<Kept<'_>> = read(page).collect();
    if !kept.iter().any(|k| matches!(k.data, Data::MsgPack(_))) {
        return None;
    }
    let converted: Vec<Option<Vec<u8>>> = kept
        .iter()
        .map(|k| match &k.data {
            Data::Json(raw) => msgpack::value_from_json(raw.get()),
            Data::MsgPack(_) => None,
        })
        .collect();
    let messages: Vec<(u64, Option<&str>, &[u8])> = kept
        .iter()
        .zip(&converted)
        .filter_map(|(k, converted)| {
            let data = match &k.data {
                Data::MsgPack(raw) => *raw,
                Data::Json(_) => converted.as_deref()?,
            };
            Some((k.offset, k.from.as_deref(), data))
        })
        .collect();
    let id = msgpack::value_from_json(id.as_json())?;
    Some(msgpack::history_ok(
        &id,
        &messages,
        page.position.offset,
        page.position.epoch.as_str(),
    ))
}

#[cfg(test)]
mod tests {
    use rmpv::Value as Mp;

    use super::*;
    use crate::history::{Epoch, Position, Stored};
    use crate::room::RoomName;

    fn page(payloads: Vec<Bytes>) -> Page {
        Page {
            messages: payloads
                .into_iter()
                .enumerate()
                .map(|(i, payload)| Stored {
                    offset: 9 + i as u64,
                    payload,
                })
                .collect(),
            position: Position {
                offset: 20,
                epoch: Epoch::new("e\"1"),
            },
            complete: true,
        }
    }

    fn json_message(from: Option<&str>, data: &str) -> Bytes {
        let room = RoomName::parse("c:1").unwrap();
        let data = RawValue::from_string(data.into()).unwrap();
        Bytes::from(protocol::message(&room, from, &data))
    }

    fn packed(value: &Mp) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, value).unwrap();
        out
    }

    #[test]
    fn json_answers_keep_json_data_byte_for_byte_and_skip_junk() {
        let stored = json_message(Some("u"), r#"{ "a" : 1.50 }"#);
        let list = format!(
            "{{{}}}",
            fields(&page(vec![stored, Bytes::from_static(b"junk")]))
        );
        let v: serde_json::Value = serde_json::from_str(&list).unwrap();
        assert_eq!(
            v["messages"].as_array().map(Vec::len),
            Some(1),
            "junk skipped"
        );
        assert_eq!(v["messages"][0]["from"], "u");
        assert_eq!(v["messages"][0]["offset"], 9);
        assert_eq!((&v["offset"], &v["epoch"]), (&20.into(), &"e\"1".into()));
        assert!(
            list.contains(r#""data":{ "a" : 1.50 }"#),
            "data byte for byte"
        );
        let id = protocol::decode(r#"{"type":"ping","id":"q"}"#).id.unwrap();
        assert!(
            ok_msgpack(&id, &page(vec![json_message(None, "1")])).is_none(),
            "all JSON: converted like any frame"
        );
    }

    #[test]
    fn msgpack_entries_answer_binary_in_msgpack_and_base64_in_json() {
        let blob = Mp::Binary(vec![0, 0xff, 0xc1]);
        let data = packed(&Mp::Map(vec![("bin".into(), blob.clone())]));
        let native = msgpack::message("c:1", Some("ann"), &data);
        let old = json_message(None, r#"{"n":[1,2.5]}"#);
        let page = page(vec![old, native, Bytes::from_static(&[0x81, 0xc1])]);

        let json: serde_json::Value =
            serde_json::from_str(&format!("{{{}}}", fields(&page))).unwrap();
        assert_eq!(
            json["messages"],
            serde_json::json!([
                {"offset": 9, "from": null, "data": {"n": [1, 2.5]}},
                {"offset": 10, "from": "ann", "data": {"bin": "AP/B"}},
            ])
        );

        let id = protocol::decode(r#"{"type":"ping","id":7}"#).id.unwrap();
        let ok = ok_msgpack(&id, &page).expect("a MessagePack entry");
        let v = rmpv::decode::read_value(&mut &ok[..]).unwrap();
        let keys: Vec<&str> = v
            .as_map()
            .unwrap()
            .iter()
            .filter_map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(keys, ["type", "id", "messages", "offset", "epoch"]);
        assert_eq!(v["type"], Mp::from("ok"));
        assert_eq!(v["id"], Mp::from(7));
        assert_eq!(
            (v["offset"].as_u64(), v["epoch"].as_str()),
            (Some(20), Some("e\"1"))
        );
        let messages = v["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 2, "junk skipped");
        assert_eq!(
            messages[0]["data"]["n"],
            Mp::Array(vec![Mp::from(1), Mp::F64(2.5)])
        );
        assert_eq!(messages[0]["from"], Mp::Nil);
        assert_eq!(messages[1]["offset"], Mp::from(10));
        assert_eq!(messages[1]["from"], Mp::from("ann"));
        assert_eq!(messages[1]["data"]["bin"], blob, "binary byte for byte");
        assert!(
            ok.windows(data.len()).any(|w| w == data),
            "the client's encoding kept as sent"
        );
    }
}
