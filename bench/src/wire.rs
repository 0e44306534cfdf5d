//! The protocol v1 frames the load generator sends and reads (pure): joins,
//! publishes carrying a probe (publisher, room, sequence number, send time),
//! and a tolerant decoder for what comes back.

use serde::Deserialize;

/// What a benchmark message carries in its `data`: who sent it, to which room,
/// its per-(publisher, room) sequence number and its send time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Probe {
    /// Publisher index.
    pub p: u32,
    /// Room index.
    pub r: u32,
    /// Sequence number within (publisher, room), from 0.
    pub s: u64,
    /// Intended send time, microseconds since the Unix epoch.
    pub t: u64,
}

/// A server frame, reduced to what the benchmarks look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// `welcome`, with the gateway's name.
    Welcome { node: String },
    /// `message` whose `data` is a benchmark probe.
    Message(Probe),
    /// `message` with some other `data` (not ours).
    Foreign,
    /// `ok` for the frame with this numeric `id`.
    Ok { id: Option<u64> },
    /// `error` with its code.
    Error { code: String, id: Option<u64> },
    /// Anything else (or not decodable).
    Other,
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    data: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct MessageFrame {
    data: Probe,
}

/// Decodes a server text frame. Never fails: what it does not understand is
/// `Other` or `Foreign`, for the caller to count.
pub fn decode(text: &str) -> Incoming {
    // Messages are the hot path: try the exact shape first, without building
    // a generic value of `data`.
    if text.starts_with(r#"{"type":"message""#) {
        return match serde_json::from_str::<MessageFrame>(text) {
            Ok(frame) => Incoming::Message(frame.data),
            Err(_) => Incoming::Foreign,
        };
    }
    let Ok(frame) = serde_json::from_str::<Frame<'_>>(text) else {
        return Incoming::Other;
    };
    let id = frame.id.as_ref().and_then(serde_json::Value::as_u64);
    match frame.kind {
        "welcome" => Incoming::Welcome {
            node: frame.node.unwrap_or_default(),
        },
        "message" => match frame.data.map(serde_json::from_value::<Probe>) {
            Some(Ok(probe)) => Incoming::Message(probe),
            _ => Incoming::Foreign,
        },
        "ok" => Incoming::Ok { id },
        "error" => Incoming::Error {
            code: frame.code.unwrap_or_default(),
            id,
        },
        _ => Incoming::Other,
    }
}

/// `{"type":"join","room":…,"id":…}`.
pub fn join(room: &str, id: u64) -> String {
    format!(r#"{{"type":"join","room":"{room}","id":{id}}}"#)
}

/// `{"type":"join","room":…,"id":…,"since":{"offset":…,"epoch":…}}`: a
/// join that recovers what was published after `offset` (protocol v1.1).
pub fn join_since(room: &str, id: u64, offset: u64, epoch: &str) -> String {
    let epoch = serde_json::to_string(epoch).unwrap_or_else(|_| "\"\"".into());
    format!(
        r#"{{"type":"join","room":"{room}","id":{id},"since":{{"offset":{offset},"epoch":{epoch}}}}}"#
    )
}

/// Where a history room's frame stands (protocol v1.1): the `offset` and
/// `epoch` of a `message` or an `ok`, and an `ok`'s `recovered`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Placed {
    /// The message's offset, or the room's in an `ok`.
    pub offset: Option<u64>,
    /// The room's epoch.
    pub epoch: Option<String>,
    /// A recovering join's verdict.
    pub recovered: Option<bool>,
}

/// Reads [`Placed`] from a server frame; `None` when it is not JSON.
pub fn placed(text: &str) -> Option<Placed> {
    serde_json::from_str(text).ok()
}

/// The filler that brings a probe's `data` to about `payload` bytes.
pub fn padding(payload: usize) -> String {
    // A probe with typical field widths; the padding makes up the rest.
    let sample = probe_data(
        &Probe {
            p: 10,
            r: 10,
            s: 1000,
            t: 1_700_000_000_000_000,
        },
        "",
    );
    "x".repeat(payload.saturating_sub(sample.len()))
}

fn probe_data(probe: &Probe, padding: &str) -> String {
    format!(
        r#"{{"p":{},"r":{},"s":{},"t":{},"x":"{padding}"}}"#,
        probe.p, probe.r, probe.s, probe.t
    )
}

/// A publish of `probe` to `room` with echo off (publishers do not join).
pub fn publish(room: &str, probe: &Probe, padding: &str) -> String {
    format!(
        r#"{{"type":"publish","room":"{room}","echo":false,"data":{}}}"#,
        probe_data(probe, padding)
    )
}

/// Like [`publish`], with an `id`: the gateway answers `ok` once it has
/// accepted the message, or `error` (`unavailable` while the bus is down).
pub fn publish_with_id(room: &str, probe: &Probe, padding: &str, id: u64) -> String {
    format!(
        r#"{{"type":"publish","room":"{room}","echo":false,"id":{id},"data":{}}}"#,
        probe_data(probe, padding)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_positions_are_read_and_sent() {
        let at =
            placed(r#"{"type":"message","room":"h:1","data":1,"offset":7,"epoch":"e1"}"#).unwrap();
        assert_eq!((at.offset, at.epoch.as_deref()), (Some(7), Some("e1")));
        let ok =
            placed(r#"{"type":"ok","id":2,"offset":9,"epoch":"e1","recovered":true}"#).unwrap();
        assert_eq!(ok.recovered, Some(true));
        let join: serde_json::Value =
            serde_json::from_str(&join_since("h:1", 3, 7, "e\"1")).unwrap();
        assert_eq!(join["since"]["offset"], 7);
        assert_eq!(join["since"]["epoch"], "e\"1");
    }

    #[test]
    fn a_published_probe_comes_back_as_a_message() {
        let probe = Probe {
            p: 3,
            r: 7,
            s: 42,
            t: 1_763_900_000_123_456,
        };
        let frame = publish("bench-7", &probe, &padding(200));
        let sent: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(sent["type"], "publish");
        assert_eq!(sent["echo"], false);
        let data = sent["data"].to_string();
        assert!(
            (190..=210).contains(&data.len()),
            "data is {} bytes",
            data.len()
        );
        // As the gateway relays it: data verbatim inside a message frame.
        let message = format!(r#"{{"type":"message","room":"bench-7","from":"u","data":{data}}}"#);
        assert_eq!(decode(&message), Incoming::Message(probe));
        // Fields in another order still decode (slow path).
        let reordered = format!(r#"{{"room":"bench-7","type":"message","data":{data}}}"#);
        assert_eq!(decode(&reordered), Incoming::Message(probe));
    }

    #[test]
    fn other_frames_decode_to_what_the_benchmarks_count() {
        assert_eq!(
            decode(r#"{"type":"welcome","session":"s","user":"u","node":"gw-a","heartbeat_ms":1}"#),
            Incoming::Welcome {
                node: "gw-a".into()
            }
        );
        assert_eq!(
            decode(r#"{"type":"ok","id":5}"#),
            Incoming::Ok { id: Some(5) }
        );
        assert_eq!(
            decode(r#"{"type":"error","code":"rate_limited","message":"m"}"#),
            Incoming::Error {
                code: "rate_limited".into(),
                id: None
            }
        );
        assert_eq!(
            decode(r#"{"type":"message","room":"a","from":null,"data":"hi"}"#),
            Incoming::Foreign
        );
        assert_eq!(decode("not json"), Incoming::Other);
        assert_eq!(decode(r#"{"type":"direct","data":1}"#), Incoming::Other);
    }

    #[test]
    fn publish_with_id_carries_the_id_and_the_probe() {
        let probe = Probe {
            p: 1,
            r: 2,
            s: 3,
            t: 4,
        };
        let v: serde_json::Value =
            serde_json::from_str(&publish_with_id("soak-2", &probe, "xx", 77)).unwrap();
        assert_eq!(v["id"], 77);
        assert_eq!(v["room"], "soak-2");
        assert_eq!(v["data"]["s"], 3);
        assert_eq!(v["data"]["x"], "xx");
    }

    #[test]
    fn join_frame_is_json() {
        let v: serde_json::Value = serde_json::from_str(&join("r-1", 9)).unwrap();
        assert_eq!(v["type"], "join");
        assert_eq!(v["room"], "r-1");
        assert_eq!(v["id"], 9);
    }
}
