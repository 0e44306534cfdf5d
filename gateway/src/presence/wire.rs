//! The presence exchange's messages on the cluster bus, encoded and decoded
//! (pure). Two kinds travel:
//!
//! - on `<c>.pres.<room>`, to the gateways that watch the room, a
//!   [`Report`]: a gateway's change of one user (a delta) or its full list
//!   of users in the room (a snapshot), stamped with its sequence number;
//! - on the control subject `<c>.ctl.watch`, to every gateway, a [`Watch`]:
//!   a gateway starts or stops watching a room (its peers answer a start
//!   with a snapshot report).

use serde::{Deserialize, Serialize};

/// What a gateway reports about one room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The reporting gateway's instance id.
    #[serde(rename = "g")]
    pub gateway: String,
    /// Its sequence number for this report (see `index.rs`).
    #[serde(rename = "s")]
    pub seq: u64,
    /// A delta or a snapshot.
    #[serde(flatten)]
    pub change: Change,
}

/// The body of a [`Report`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Change {
    /// One user's first connection here joined (`on`) or last one left.
    Delta {
        /// The user id.
        #[serde(rename = "u")]
        user: String,
        /// Present (true) or gone (false).
        on: bool,
    },
    /// Every user the gateway has in the room.
    Snapshot {
        /// The user ids.
        all: Vec<String>,
    },
}

/// A gateway starts (`on`) or stops watching `room`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watch {
    /// The watching gateway's instance id.
    #[serde(rename = "g")]
    pub gateway: String,
    /// The room.
    #[serde(rename = "r")]
    pub room: String,
    /// Starts (true) or stops (false).
    pub on: bool,
    /// Only this gateway should answer (a watch repeated to a peer that
    /// arrived); every gateway when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// Encodes a message (never fails for these types).
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    serde_json::to_vec(message).unwrap_or_default()
}

/// Decodes a [`Report`]; `None` when malformed.
pub fn decode_report(payload: &[u8]) -> Option<Report> {
    serde_json::from_slice(payload).ok()
}

/// Decodes a [`Watch`]; `None` when malformed.
pub fn decode_watch(payload: &[u8]) -> Option<Watch> {
    serde_json::from_slice(payload).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        for change in [
            Change::Delta {
                user: "a\"b".into(),
                on: true,
            },
            Change::Delta {
                user: "x".into(),
                on: false,
            },
            Change::Snapshot {
                all: vec!["x".into(), "y".into()],
            },
            Change::Snapshot { all: vec![] },
        ] {
            let report = Report {
                gateway: "g1".into(),
                seq: 42,
                change,
            };
            assert_eq!(decode_report(&encode(&report)), Some(report));
        }
        assert_eq!(
            String::from_utf8(encode(&Report {
                gateway: "g".into(),
                seq: 1,
                change: Change::Delta {
                    user: "u".into(),
                    on: true
                }
            }))
            .unwrap(),
            r#"{"g":"g","s":1,"u":"u","on":true}"#,
            "compact on the bus"
        );
    }

    #[test]
    fn watches_round_trip_and_garbage_is_refused() {
        let watch = Watch {
            gateway: "g".into(),
            room: "chat:1".into(),
            on: false,
            to: None,
        };
        assert_eq!(decode_watch(&encode(&watch)), Some(watch.clone()));
        let watch = Watch {
            to: Some("g2".into()),
            ..watch
        };
        assert_eq!(decode_watch(&encode(&watch)), Some(watch));
        assert_eq!(decode_report(b"{}"), None);
        assert_eq!(decode_report(b"not json"), None);
        assert_eq!(decode_report(br#"{"g":"g","s":-1,"all":[]}"#), None);
        assert_eq!(decode_watch(br#"{"g":"g"}"#), None);
    }
}
