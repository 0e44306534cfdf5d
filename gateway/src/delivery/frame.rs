//! A server frame on its way to recipients, encoded at most once per wire
//! format, lazily, and shared by every recipient of that format.
//!
//! A [`Frame`] holds the protocol frame in the encoding it was built in:
//! JSON text (most frames), or MessagePack when a `roomcast.v1.msgpack`
//! client published it (so its `data`, binary included, reaches MessagePack
//! recipients exactly as sent, live or read back from a room's history). The other encoding is converted on first use
//! (`msgpack.rs`). Each transport asks for its [`Format`]; the first
//! recipient of a format encodes it, every later one gets the same bytes (a
//! reference-count increment). Formats no recipient uses are never encoded:
//! a compressed format is compressed once per message, whatever the number
//! of recipients that negotiated compression.

use std::sync::OnceLock;

use bytes::Bytes;

use crate::msgpack;
use crate::protocol;
use crate::transport::deflate;
use crate::transport::ws::WireFrame;

/// How a transport puts protocol frames on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A WebSocket text frame (header and JSON payload in one buffer).
    WebSocketText,
    /// A WebSocket binary frame carrying MessagePack (`roomcast.v1.msgpack`).
    WebSocketMsgPack,
    /// [`Format::WebSocketText`] with permessage-deflate: payloads of at
    /// least `threshold` bytes are compressed (RSV1), smaller ones are the
    /// uncompressed frame itself (the same bytes).
    WebSocketTextDeflate {
        /// Smallest payload compressed.
        threshold: usize,
    },
    /// [`Format::WebSocketMsgPack`] with permessage-deflate, likewise.
    WebSocketMsgPackDeflate {
        /// Smallest payload compressed.
        threshold: usize,
    },
    /// A Server-Sent Event: `data: <json>` and a blank line.
    SseEvent,
    /// The JSON text alone (long polling answers arrays of them).
    Json,
}

impl Format {
    /// Number of formats: the size of a frame's cache.
    const COUNT: usize = 5;

    /// The cache slot (one per variant: a process has one threshold).
    fn index(self) -> usize {
        match self {
            Format::WebSocketText => 0,
            Format::WebSocketMsgPack => 1,
            Format::WebSocketTextDeflate { .. } => 2,
            Format::WebSocketMsgPackDeflate { .. } => 3,
            Format::SseEvent => 4,
            // Never cached: `Frame::encoded` serves the JSON itself.
            Format::Json => 0,
        }
    }

    /// The WebSocket format of a connection: MessagePack or JSON, and
    /// whether it negotiated compression.
    pub fn websocket(msgpack: bool, deflate: Option<usize>) -> Format {
        match (msgpack, deflate) {
            (false, None) => Format::WebSocketText,
            (true, None) => Format::WebSocketMsgPack,
            (false, Some(threshold)) => Format::WebSocketTextDeflate { threshold },
            (true, Some(threshold)) => Format::WebSocketMsgPackDeflate { threshold },
        }
    }
}

/// One protocol frame for any number of recipients.
#[derive(Debug)]
pub struct Frame {
    json: OnceLock<Bytes>,
    msgpack: OnceLock<Bytes>,
    /// Built as MessagePack: that is what crosses the bus.
    native_msgpack: bool,
    encoded: [OnceLock<Bytes>; Format::COUNT],
}

impl Frame {
    /// A frame from its JSON text (valid UTF-8 by construction).
    pub fn new(json: String) -> Self {
        Self::from_json(Bytes::from(json))
    }

    /// A frame from JSON text bytes the caller has checked to be UTF-8 (a
    /// bus payload: shared, not copied).
    pub fn from_json(json: Bytes) -> Self {
        Self {
            json: OnceLock::from(json),
            msgpack: OnceLock::new(),
            native_msgpack: false,
            encoded: Default::default(),
        }
    }

    /// Another frame with the same JSON (shared, not copied), to keep
    /// beyond the caller's borrow; its encodings are made anew.
    pub fn share(&self) -> Frame {
        Self::from_json(self.json().clone())
    }

    /// A frame a MessagePack client published: both encodings are known
    /// (the JSON one was needed to decode the client's frame anyway).
    pub fn from_msgpack(msgpack: Bytes, json: String) -> Self {
        Self {
            json: OnceLock::from(Bytes::from(json)),
            msgpack: OnceLock::from(msgpack),
            native_msgpack: true,
            encoded: Default::default(),
        }
    }

    /// A frame from a bus payload: MessagePack (a map) or JSON text; `None`
    /// when it is neither.
    pub fn from_bus(payload: Bytes) -> Option<Self> {
        if msgpack::is_msgpack(&payload) {
            return Some(Self::native_msgpack(payload));
        }
        std::str::from_utf8(&payload).ok()?;
        Some(Self::from_json(payload))
    }

    /// A history room's `message` frame from what the store kept (a bus
    /// payload, see [`Frame::bus_payload`]) with its `offset` and `epoch`
    /// added: kept in MessagePack, it stays MessagePack, so its `data`
    /// reaches MessagePack members as published, binary included. Done once
    /// per message per gateway, not per recipient.
    pub fn stored(payload: &[u8], offset: u64, epoch: &str) -> Self {
        if msgpack::is_msgpack(payload) {
            Self::native_msgpack(msgpack::message_at(payload, offset, epoch))
        } else {
            Self::new(protocol::message_at(payload, offset, epoch))
        }
    }

    /// A frame held in MessagePack only; its JSON is derived on first use.
    fn native_msgpack(msgpack: Bytes) -> Self {
        Self {
            json: OnceLock::new(),
            msgpack: OnceLock::from(msgpack),
            native_msgpack: true,
            encoded: Default::default(),
        }
    }

    /// What crosses the bus: the encoding the frame was built in.
    pub fn bus_payload(&self) -> &Bytes {
        if self.native_msgpack {
            self.msgpack()
        } else {
            self.json()
        }
    }

    /// The JSON text (MessagePack binary data as base64 strings).
    pub fn json(&self) -> &Bytes {
        self.json.get_or_init(|| match self.msgpack.get() {
            Some(msgpack) => msgpack::to_json(msgpack),
            None => Bytes::new(),
        })
    }

    /// The MessagePack encoding.
    pub fn msgpack(&self) -> &Bytes {
        self.msgpack.get_or_init(|| msgpack::from_json(self.json()))
    }

    /// The frame in `format`, encoded on first use and shared afterwards.
    pub fn encoded(&self, format: Format) -> &Bytes {
        if format == Format::Json {
            // The JSON itself: no copy.
            return self.json();
        }
        self.encoded[format.index()].get_or_init(|| self.encode(format))
    }

    fn encode(&self, format: Format) -> Bytes {
        match format {
            Format::WebSocketText => WireFrame::text_bytes(self.json()).into_bytes(),
            Format::WebSocketMsgPack => WireFrame::data(true, self.msgpack(), false).into_bytes(),
            Format::WebSocketTextDeflate { threshold } => {
                self.deflated(false, threshold, Format::WebSocketText)
            }
            Format::WebSocketMsgPackDeflate { threshold } => {
                self.deflated(true, threshold, Format::WebSocketMsgPack)
            }
            Format::SseEvent => sse_event(self.json()),
            Format::Json => self.json().clone(),
        }
    }

    /// The compressed frame, or the `plain` one when the payload is under
    /// `threshold` (shared, not encoded twice).
    fn deflated(&self, binary: bool, threshold: usize, plain: Format) -> Bytes {
        let payload = if binary { self.msgpack() } else { self.json() };
        if payload.len() < threshold {
            return self.encoded(plain).clone();
        }
        match deflate::compress(payload) {
            Some(compressed) => WireFrame::data(binary, &compressed, true).into_bytes(),
            None => self.encoded(plain).clone(),
        }
    }
}

/// A Server-Sent Event carrying `json`. An event's data is one line. JSON
/// has raw line breaks only as whitespace (a client's `data` keeps its
/// own), never inside strings, so blanking them keeps the same JSON.
fn sse_event(json: &[u8]) -> Bytes {
    let mut event = Vec::with_capacity(json.len() + 8);
    event.extend_from_slice(b"data: ");
    event.extend(json.iter().map(|&b| match b {
        b'\n' | b'\r' => b' ',
        b => b,
    }));
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_format_is_encoded_once_and_shared() {
        let frame = Frame::new(r#"{"type":"message"}"#.into());
        let a = frame.encoded(Format::WebSocketText).clone();
        let b = frame.encoded(Format::WebSocketText).clone();
        assert_eq!(a.as_ref(), b"\x81\x12{\"type\":\"message\"}");
        assert_eq!(a.as_ptr(), b.as_ptr(), "the same bytes, not a copy");
        assert_eq!(frame.json().as_ref(), br#"{"type":"message"}"#);
    }

    #[test]
    fn fallback_formats_are_an_event_and_the_bare_json() {
        let frame = Frame::new(r#"{"type":"ok"}"#.into());
        assert_eq!(
            frame.encoded(Format::SseEvent).as_ref(),
            b"data: {\"type\":\"ok\"}\n\n"
        );
        assert_eq!(frame.encoded(Format::Json).as_ref(), br#"{"type":"ok"}"#);
        let multiline = Frame::new("{\"data\":{\r\n\"a\":\"x\\ny\"}}".into());
        assert_eq!(
            multiline.encoded(Format::SseEvent).as_ref(),
            b"data: {\"data\":{  \"a\":\"x\\ny\"}}\n\n",
            "raw line breaks blanked, escaped ones kept"
        );
    }

    #[test]
    fn compressed_formats_compress_once_above_the_threshold() {
        let long = format!(r#"{{"type":"message","data":"{}"}}"#, "a".repeat(2000));
        let frame = Frame::new(long.clone());
        let deflate = Format::websocket(false, Some(1024));
        let a = frame.encoded(deflate).clone();
        assert_eq!(a[0], 0xC1, "FIN, RSV1, text");
        assert!(a.len() < 100);
        assert_eq!(a.as_ptr(), frame.encoded(deflate).as_ptr());
        let payload = &a[2..];
        assert_eq!(deflate::inflate(payload, 1 << 20).unwrap(), long.as_bytes());
        // Under the threshold: the plain frame's very bytes.
        let short = Frame::new(r#"{"type":"ok"}"#.into());
        let plain = short.encoded(deflate).clone();
        assert_eq!(plain[0], 0x81);
        assert_eq!(
            plain.as_ptr(),
            short.encoded(Format::WebSocketText).as_ptr()
        );
    }

    #[test]
    fn msgpack_frames_convert_once_each_way() {
        let json = Frame::new(r#"{"type":"ok","id":1}"#.into());
        let bin = json.encoded(Format::WebSocketMsgPack);
        assert_eq!(bin[0], 0x82, "FIN, binary");
        assert_eq!(&bin[2..], json.msgpack().as_ref());
        assert_eq!(json.bus_payload(), json.json());

        let data = [0xc4, 2, 0xde, 0xad];
        let native = Frame::from_msgpack(
            msgpack::message("r", None, &data),
            r#"{"type":"message","room":"r","from":null,"data":"3q0="}"#.into(),
        );
        assert_eq!(native.bus_payload(), native.msgpack());
        let relayed = Frame::from_bus(native.bus_payload().clone()).unwrap();
        assert_eq!(
            relayed.json().as_ref(),
            br#"{"type":"message","room":"r","from":null,"data":"3q0="}"#
        );
        assert_eq!(relayed.msgpack(), native.msgpack());
        assert!(Frame::from_bus(Bytes::from_static(&[0xff, 0xfe])).is_none());
    }

    #[test]
    fn stored_frames_keep_the_encoding_they_were_kept_in() {
        let data = [0xc4, 2, 0xde, 0xad];
        let kept = msgpack::message("r", Some("u"), &data);
        let frame = Frame::stored(&kept, 7, "e1");
        let packed = frame.encoded(Format::WebSocketMsgPack);
        let value = rmpv::decode::read_value(&mut &packed[2..]).unwrap();
        assert_eq!(value["data"], rmpv::Value::Binary(vec![0xde, 0xad]));
        assert_eq!(value["offset"], rmpv::Value::from(7));
        assert_eq!(value["epoch"], rmpv::Value::from("e1"));
        assert_eq!(
            frame.json().as_ref(),
            br#"{"type":"message","room":"r","from":"u","data":"3q0=","offset":7,"epoch":"e1"}"#,
            "JSON members: base64, offset and epoch last"
        );
        // Kept as JSON (JSON publishers, and every entry of older gateways).
        let old = br#"{"type":"message","room":"r","from":null,"data":"3q0="}"#;
        let frame = Frame::stored(old, 8, "e1");
        assert_eq!(
            frame.json().as_ref(),
            br#"{"type":"message","room":"r","from":null,"data":"3q0=","offset":8,"epoch":"e1"}"#
        );
        let value = rmpv::decode::read_value(&mut &frame.msgpack()[..]).unwrap();
        assert_eq!(value["data"], rmpv::Value::from("3q0="));
    }
}
