//! A server frame on its way to recipients, encoded at most once per wire
//! format, lazily, and shared by every recipient of that format.
//!
//! A [`Frame`] holds the protocol frame (JSON text, as the bus carries it).
//! Each transport asks for its [`Format`]; the first recipient of a format
//! encodes it, every later one gets the same bytes (a reference-count
//! increment). Formats no recipient uses are never encoded.

use std::sync::OnceLock;

use bytes::Bytes;

use crate::transport::ws::WireFrame;

/// How a transport puts protocol frames on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A WebSocket text frame (header and JSON payload in one buffer).
    WebSocketText,
}

impl Format {
    /// Number of formats: the size of a frame's cache.
    const COUNT: usize = 1;

    fn index(self) -> usize {
        self as usize
    }

    fn encode(self, json: &[u8]) -> Bytes {
        match self {
            Format::WebSocketText => WireFrame::text_bytes(json).into_bytes(),
        }
    }
}

/// One protocol frame for any number of recipients.
#[derive(Debug)]
pub struct Frame {
    json: Bytes,
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
            json,
            encoded: Default::default(),
        }
    }

    /// Another frame with the same JSON (shared, not copied), to keep
    /// beyond the caller's borrow; its encodings are made anew.
    pub fn share(&self) -> Frame {
        Self::from_json(self.json.clone())
    }

    /// The JSON text: what crosses the bus.
    pub fn json(&self) -> &Bytes {
        &self.json
    }

    /// The frame in `format`, encoded on first use and shared afterwards.
    pub fn encoded(&self, format: Format) -> &Bytes {
        self.encoded[format.index()].get_or_init(|| format.encode(&self.json))
    }
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
}
