//! WebSocket framing (RFC 6455), the gateway's side of it, pure: the upgrade
//! handshake, the frames the server sends and an incremental reader of the
//! frames clients send. The socket loop that uses it is `websocket.rs`.
//!
//! The gateway frames WebSocket itself rather than through a general-purpose
//! library because of fan-out: server frames are unmasked, so a message's
//! bytes on the wire are identical for every recipient. A protocol frame is
//! encoded once into a [`WireFrame`] (header and payload in one buffer, see
//! `delivery/frame.rs`) and written as is, with one `write` per recipient and
//! no per-recipient framing or copying.

use axum::http::{HeaderMap, StatusCode, header};
use bytes::{BufMut, Bytes, BytesMut};

use super::deflate::{self, InflateError};

/// Continuation of a fragmented message.
const OP_CONTINUATION: u8 = 0x0;
/// A text message.
const OP_TEXT: u8 = 0x1;
/// A binary message.
const OP_BINARY: u8 = 0x2;
/// Close.
const OP_CLOSE: u8 = 0x8;
/// Ping.
const OP_PING: u8 = 0x9;
/// Pong.
const OP_PONG: u8 = 0xA;

/// RSV1: the message is compressed (permessage-deflate, RFC 7692 §6).
const RSV1: u8 = 0x40;

/// Largest payload of a control frame (ping, pong, close).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// A complete server frame exactly as it goes on the wire. Cloning shares the
/// bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireFrame {
    bytes: Bytes,
    header: u8,
}

impl WireFrame {
    /// A text frame (a protocol frame: JSON).
    pub fn text(payload: &str) -> Self {
        Self::text_bytes(payload.as_bytes())
    }

    /// A text frame from a payload the caller knows to be UTF-8.
    pub fn text_bytes(payload: &[u8]) -> Self {
        Self::encode(OP_TEXT, payload)
    }

    /// A data message in one frame: text (JSON) or binary (MessagePack),
    /// its payload already compressed with permessage-deflate when
    /// `deflated` (RSV1 set: on the first frame only, and ours are single).
    pub fn data(binary: bool, payload: &[u8], deflated: bool) -> Self {
        let opcode = if binary { OP_BINARY } else { OP_TEXT };
        Self::encode(opcode | if deflated { RSV1 } else { 0 }, payload)
    }

    /// A ping with an empty payload.
    pub fn ping() -> Self {
        Self::encode(OP_PING, &[])
    }

    /// The pong answering a ping with `payload`.
    pub fn pong(payload: &[u8]) -> Self {
        Self::encode(OP_PONG, &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)])
    }

    /// A close frame with a status code and a reason (cut to fit a control frame).
    pub fn close(code: u16, reason: &str) -> Self {
        let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let mut payload = Vec::with_capacity(2 + end);
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(&reason.as_bytes()[..end]);
        Self::encode(OP_CLOSE, &payload)
    }

    /// `first`: the opcode and RSV bits of a final frame.
    fn encode(first: u8, payload: &[u8]) -> Self {
        let len = payload.len();
        let mut bytes = BytesMut::with_capacity(10 + len);
        bytes.put_u8(0x80 | first);
        if len < 126 {
            bytes.put_u8(len as u8);
        } else if let Ok(short) = u16::try_from(len) {
            bytes.put_u8(126);
            bytes.put_u16(short);
        } else {
            bytes.put_u8(127);
            bytes.put_u64(len as u64);
        }
        let header = bytes.len() as u8;
        bytes.put_slice(payload);
        WireFrame {
            bytes: bytes.freeze(),
            header,
        }
    }

    /// The whole frame: header and payload.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The whole frame, owned.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// The payload alone, sharing the frame's bytes.
    pub fn payload(&self) -> Bytes {
        self.bytes.slice(usize::from(self.header)..)
    }

    /// Bytes on the wire.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true: every frame has a header.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// A complete message or control frame from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A text message, UTF-8 checked.
    Text(String),
    /// A binary message (MessagePack, for clients of that subprotocol).
    Binary(Vec<u8>),
    /// A ping, to be answered with a pong carrying the same payload.
    Ping(Vec<u8>),
    /// A pong.
    Pong,
    /// The client closes, with its status code if it gave one.
    Close(Option<u16>),
}

/// A client frame that breaks the protocol or a limit; the connection closes
/// with the matching code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// A frame or message over the size limit: 1009.
    TooBig,
    /// A text message or close reason that is not UTF-8: 1007.
    InvalidUtf8,
    /// Anything else RFC 6455 forbids (unmasked frames, reserved bits or
    /// opcodes, bad fragmentation, bad control frames): 1002.
    Protocol(&'static str),
}

/// Reassembles client frames from the bytes read off the socket.
///
/// It buffers at most one frame (bounded by the size limit) plus one read,
/// and holds no allocation while the connection is idle between frames.
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// A fragmented message in progress: its opcode, whether it is
    /// compressed, and its payload so far.
    partial: Option<(u8, bool, Vec<u8>)>,
    /// Bytes of a refused oversized frame still to be dropped, so frames
    /// after it (the client's close) can still be read.
    skip: u64,
    max_payload: usize,
    /// permessage-deflate was negotiated: RSV1 marks compressed messages.
    inflate: bool,
}

impl FrameReader {
    /// A reader refusing frames and messages over `max_payload` bytes.
    pub fn new(max_payload: usize) -> Self {
        Self {
            buf: Vec::new(),
            partial: None,
            skip: 0,
            max_payload,
            inflate: false,
        }
    }

    /// The same reader for a connection that negotiated permessage-deflate:
    /// compressed messages are inflated, and the size limit applies to the
    /// inflated size.
    pub fn with_deflate(mut self) -> Self {
        self.inflate = true;
        self
    }

    /// Adds bytes read from the socket.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        if self.skip > 0 {
            let n = bytes
                .len()
                .min(usize::try_from(self.skip).unwrap_or(usize::MAX));
            self.skip -= n as u64;
            bytes = &bytes[n..];
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message or control frame, if the buffered bytes hold one.
    pub fn next_incoming(&mut self) -> Result<Option<Incoming>, Violation> {
        loop {
            let Some(frame) = self.frame()? else {
                if self.buf.is_empty() {
                    // Idle connections keep no buffer.
                    self.buf = Vec::new();
                }
                return Ok(None);
            };
            if let Some(incoming) = self.assemble(frame)? {
                return Ok(Some(incoming));
            }
        }
    }

    /// Cuts one whole frame off the buffer, unmasked.
    fn frame(&mut self) -> Result<Option<Frame>, Violation> {
        let Some(head) = parse_header(&self.buf, self.inflate)? else {
            return Ok(None);
        };
        if head.len > self.max_payload as u64 {
            // Dropped unread, as it arrives: what follows is still framed.
            let total = head.header_len as u64 + head.len;
            let buffered = self
                .buf
                .len()
                .min(usize::try_from(total).unwrap_or(usize::MAX));
            self.buf.drain(..buffered);
            self.skip = total - buffered as u64;
            return Err(Violation::TooBig);
        }
        // Bounded by `max_payload` just above.
        let len = head.len as usize;
        let end = head.header_len + len;
        if self.buf.len() < end {
            return Ok(None);
        }
        let mut payload = self.buf[head.header_len..end].to_vec();
        unmask(&mut payload, head.mask);
        self.buf.drain(..end);
        Ok(Some(Frame {
            fin: head.fin,
            rsv1: head.rsv1,
            opcode: head.opcode,
            payload,
        }))
    }

    /// Applies one frame to the message in progress.
    fn assemble(&mut self, frame: Frame) -> Result<Option<Incoming>, Violation> {
        if frame.rsv1 && !matches!(frame.opcode, OP_TEXT | OP_BINARY) {
            // §6.1: only a message's first frame says it is compressed.
            return Err(Violation::Protocol(
                "RSV1 on a control or continuation frame",
            ));
        }
        match frame.opcode {
            OP_PING | OP_PONG | OP_CLOSE => {
                if !frame.fin || frame.payload.len() > MAX_CONTROL_PAYLOAD {
                    return Err(Violation::Protocol("fragmented or oversized control frame"));
                }
                Ok(Some(match frame.opcode {
                    OP_PING => Incoming::Ping(frame.payload),
                    OP_PONG => Incoming::Pong,
                    _ => Incoming::Close(close_code(&frame.payload)?),
                }))
            }
            OP_TEXT | OP_BINARY => {
                if self.partial.is_some() {
                    return Err(Violation::Protocol("new message inside a fragmented one"));
                }
                if frame.fin {
                    return self
                        .message(frame.opcode, frame.rsv1, frame.payload)
                        .map(Some);
                }
                self.partial = Some((frame.opcode, frame.rsv1, frame.payload));
                Ok(None)
            }
            OP_CONTINUATION => {
                let Some((opcode, compressed, mut payload)) = self.partial.take() else {
                    return Err(Violation::Protocol("continuation without a message"));
                };
                if payload.len() + frame.payload.len() > self.max_payload {
                    return Err(Violation::TooBig);
                }
                payload.extend_from_slice(&frame.payload);
                if frame.fin {
                    return self.message(opcode, compressed, payload).map(Some);
                }
                self.partial = Some((opcode, compressed, payload));
                Ok(None)
            }
            _ => Err(Violation::Protocol("reserved opcode")),
        }
    }

    /// A whole message, inflated first when it came compressed.
    fn message(
        &self,
        opcode: u8,
        compressed: bool,
        payload: Vec<u8>,
    ) -> Result<Incoming, Violation> {
        let payload = if compressed {
            deflate::inflate(&payload, self.max_payload).map_err(|e| match e {
                InflateError::TooBig => Violation::TooBig,
                InflateError::Corrupt => Violation::Protocol("compressed data does not inflate"),
            })?
        } else {
            payload
        };
        if opcode == OP_BINARY {
            return Ok(Incoming::Binary(payload));
        }
        String::from_utf8(payload)
            .map(Incoming::Text)
            .map_err(|_| Violation::InvalidUtf8)
    }
}

struct Frame {
    fin: bool,
    rsv1: bool,
    opcode: u8,
    payload: Vec<u8>,
}

/// A parsed frame header.
#[derive(Debug, PartialEq)]
struct Header {
    fin: bool,
    rsv1: bool,
    opcode: u8,
    mask: [u8; 4],
    len: u64,
    header_len: usize,
}

/// Parses a client frame's header, if `buf` holds all of it. RSV1 is allowed
/// only when permessage-deflate was negotiated (`rsv1`).
fn parse_header(buf: &[u8], rsv1: bool) -> Result<Option<Header>, Violation> {
    let [first, second, rest @ ..] = buf else {
        return Ok(None);
    };
    let reserved = if rsv1 { 0x30 } else { 0x70 };
    if first & reserved != 0 {
        return Err(Violation::Protocol("reserved bits set"));
    }
    if second & 0x80 == 0 {
        return Err(Violation::Protocol("client frames must be masked"));
    }
    let (len, extended) = match second & 0x7F {
        126 => match rest {
            [a, b, ..] => (u64::from(u16::from_be_bytes([*a, *b])), 2),
            _ => return Ok(None),
        },
        127 => match rest.first_chunk::<8>() {
            Some(bytes) => (u64::from_be_bytes(*bytes), 8),
            None => return Ok(None),
        },
        short => (u64::from(short), 0),
    };
    let Some(mask) = rest[extended..].first_chunk::<4>() else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin: first & 0x80 != 0,
        rsv1: first & RSV1 != 0,
        opcode: first & 0x0F,
        mask: *mask,
        len,
        header_len: 2 + extended + 4,
    }))
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

/// The status code of a close frame's payload.
fn close_code(payload: &[u8]) -> Result<Option<u16>, Violation> {
    match payload {
        [] => Ok(None),
        [_] => Err(Violation::Protocol("close payload of one byte")),
        [a, b, reason @ ..] => {
            if std::str::from_utf8(reason).is_err() {
                return Err(Violation::InvalidUtf8);
            }
            Ok(Some(u16::from_be_bytes([*a, *b])))
        }
    }
}

/// The code to echo when a client closes with `code`: the same one when it
/// may be sent, 1000 when the client gave none, 1002 for codes no endpoint
/// may send.
pub fn echo_code(code: Option<u16>) -> u16 {
    match code {
        None => 1000,
        Some(code @ (1000..=1003 | 1007..=1014 | 3000..=4999)) => code,
        Some(_) => 1002,
    }
}

/// An accepted upgrade request: what the 101 response carries.
#[derive(Debug, PartialEq, Eq)]
pub struct Handshake {
    /// `Sec-WebSocket-Accept`.
    pub accept: String,
    /// `Sec-WebSocket-Protocol`, when the client offered ours.
    pub protocol: Option<&'static str>,
}

/// Checks a WebSocket upgrade request (RFC 6455 §4.2.1) and selects the
/// first of the client's offered subprotocols that is one of `subprotocols`.
pub fn handshake(
    headers: &HeaderMap,
    subprotocols: &[&'static str],
) -> Result<Handshake, (StatusCode, &'static str)> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err((
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint takes WebSocket upgrades only\n",
        ));
    }
    match headers.get(header::SEC_WEBSOCKET_VERSION) {
        None => {
            return Err((
                StatusCode::BAD_REQUEST,
                "Sec-WebSocket-Version is missing\n",
            ));
        }
        // §4.4: a version we do not speak is 426, naming ours (the caller
        // adds `Sec-WebSocket-Version: 13` to every 426).
        Some(v) if v.as_bytes() != b"13" => {
            return Err((
                StatusCode::UPGRADE_REQUIRED,
                "Sec-WebSocket-Version must be 13\n",
            ));
        }
        Some(_) => {}
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err((StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is missing\n"));
    };
    if !is_websocket_key(key.as_bytes()) {
        return Err((
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Key must be 16 bytes in base64\n",
        ));
    }
    let protocol = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|offered| {
            subprotocols
                .iter()
                .find(|ours| offered.trim() == **ours)
                .copied()
        });
    Ok(Handshake {
        accept: tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()),
        protocol,
    })
}

/// The `Sec-WebSocket-Extensions` response value when the client offers
/// permessage-deflate in a form the gateway accepts (see `deflate.rs`).
pub fn deflate_offer(headers: &HeaderMap) -> Option<String> {
    deflate::negotiate(
        headers
            .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .filter_map(|value| value.to_str().ok()),
    )
}

/// Whether a `Sec-WebSocket-Key` is what §4.1 makes it: a random 16-byte
/// value in base64 (24 characters, padded).
fn is_websocket_key(key: &[u8]) -> bool {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(key)
        .is_ok_and(|bytes| bytes.len() == 16)
}

/// A close reason as text, for logs.
pub fn describe(violation: Violation) -> &'static str {
    match violation {
        Violation::TooBig => "frame too big",
        Violation::InvalidUtf8 => "invalid utf-8",
        Violation::Protocol(why) => why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A masked client frame.
    fn client(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        out
    }

    fn read_all(reader: &mut FrameReader) -> Result<Vec<Incoming>, Violation> {
        let mut out = Vec::new();
        while let Some(incoming) = reader.next_incoming()? {
            out.push(incoming);
        }
        Ok(out)
    }

    #[test]
    fn server_frames_have_minimal_headers() {
        assert_eq!(WireFrame::text("hi").bytes().as_ref(), b"\x81\x02hi");
        let medium = WireFrame::text(&"x".repeat(300));
        assert_eq!(&medium.bytes()[..4], &[0x81, 126, 0x01, 0x2C]);
        assert_eq!(medium.payload().len(), 300);
        let large = WireFrame::text(&"x".repeat(70_000));
        assert_eq!(&large.bytes()[..2], &[0x81, 127]);
        assert_eq!(large.len(), 10 + 70_000);
        assert_eq!(WireFrame::ping().bytes().as_ref(), b"\x89\x00");
        assert_eq!(WireFrame::pong(b"ab").bytes().as_ref(), b"\x8a\x02ab");
    }

    #[test]
    fn close_frames_carry_the_code_and_a_cut_reason() {
        let close = WireFrame::close(4008, "slow consumer");
        assert_eq!(&close.bytes()[..4], &[0x88, 15, 0x0F, 0xA8]);
        let long = WireFrame::close(1000, &"é".repeat(100));
        assert!(long.payload().len() <= MAX_CONTROL_PAYLOAD);
        assert!(std::str::from_utf8(&long.payload()[2..]).is_ok());
    }

    #[test]
    fn frames_split_anywhere_are_reassembled() {
        let mut bytes = client(true, OP_TEXT, b"{\"type\":\"ping\"}");
        bytes.extend(client(true, OP_PING, b"p"));
        bytes.extend(client(true, OP_TEXT, &vec![b'a'; 70_000]));
        for split in [1, 2, 3, 7, 20, 1000] {
            let mut reader = FrameReader::new(100_000);
            let mut got = Vec::new();
            for chunk in bytes.chunks(split) {
                reader.feed(chunk);
                got.extend(read_all(&mut reader).unwrap());
            }
            assert_eq!(got.len(), 3, "split {split}");
            assert_eq!(got[0], Incoming::Text("{\"type\":\"ping\"}".into()));
            assert_eq!(got[1], Incoming::Ping(b"p".to_vec()));
            assert!(matches!(&got[2], Incoming::Text(t) if t.len() == 70_000));
            assert_eq!(reader.buf.capacity(), 0, "an idle reader keeps no buffer");
        }
    }

    #[test]
    fn fragmented_messages_are_joined_around_control_frames() {
        let mut reader = FrameReader::new(100);
        reader.feed(&client(false, OP_TEXT, b"he"));
        reader.feed(&client(true, OP_PONG, b""));
        reader.feed(&client(false, OP_CONTINUATION, b"ll"));
        reader.feed(&client(true, OP_CONTINUATION, b"o"));
        assert_eq!(
            read_all(&mut reader).unwrap(),
            vec![Incoming::Pong, Incoming::Text("hello".into())]
        );
    }

    #[test]
    fn limits_apply_to_frames_and_to_whole_messages() {
        let mut reader = FrameReader::new(10);
        reader.feed(&client(true, OP_TEXT, &[b'a'; 10]));
        assert!(matches!(
            reader.next_incoming(),
            Ok(Some(Incoming::Text(_)))
        ));
        // Refused from the header alone, before the payload arrives.
        let big = client(true, OP_TEXT, &[b'a'; 11]);
        reader.feed(&big[..6]);
        assert_eq!(reader.next_incoming(), Err(Violation::TooBig));
        // The rest of the refused frame is dropped; the close after it is read.
        reader.feed(&big[6..]);
        reader.feed(&client(true, OP_CLOSE, &[0x03, 0xE8]));
        assert_eq!(
            reader.next_incoming(),
            Ok(Some(Incoming::Close(Some(1000))))
        );
        let mut reader = FrameReader::new(10);
        reader.feed(&client(false, OP_TEXT, &[b'a'; 6]));
        reader.feed(&client(true, OP_CONTINUATION, &[b'a'; 6]));
        assert_eq!(read_all(&mut reader), Err(Violation::TooBig));
    }

    #[test]
    fn protocol_violations_are_named() {
        let cases: Vec<(Vec<u8>, Violation)> = vec![
            (
                vec![0x81, 0x00],
                Violation::Protocol("client frames must be masked"),
            ),
            (
                client(true, OP_TEXT | 0x40, b"x"),
                Violation::Protocol("reserved bits set"),
            ),
            (
                client(true, 0x3, b"x"),
                Violation::Protocol("reserved opcode"),
            ),
            (
                client(true, OP_CONTINUATION, b"x"),
                Violation::Protocol("continuation without a message"),
            ),
            (
                client(false, OP_PING, b"x"),
                Violation::Protocol("fragmented or oversized control frame"),
            ),
            (
                client(true, OP_PING, &[0; 126]),
                Violation::Protocol("fragmented or oversized control frame"),
            ),
            (
                client(true, OP_CLOSE, &[3]),
                Violation::Protocol("close payload of one byte"),
            ),
            (client(true, OP_TEXT, &[0xff, 0xfe]), Violation::InvalidUtf8),
            (
                client(true, OP_CLOSE, &[3, 232, 0xff]),
                Violation::InvalidUtf8,
            ),
        ];
        for (bytes, violation) in cases {
            let mut reader = FrameReader::new(1000);
            reader.feed(&bytes);
            assert_eq!(read_all(&mut reader), Err(violation));
        }
        let mut reader = FrameReader::new(1000);
        reader.feed(&client(false, OP_TEXT, b"a"));
        reader.feed(&client(true, OP_BINARY, b"b"));
        assert_eq!(
            read_all(&mut reader),
            Err(Violation::Protocol("new message inside a fragmented one"))
        );
    }

    #[test]
    fn compressed_messages_are_inflated_only_when_negotiated() {
        let compressed = deflate::compress(b"{\"type\":\"ping\"}").unwrap();
        let mut rsv1 = client(true, OP_TEXT, &compressed);
        rsv1[0] |= RSV1;
        let mut reader = FrameReader::new(100).with_deflate();
        reader.feed(&rsv1);
        reader.feed(&client(true, OP_BINARY, b"\x80"));
        assert_eq!(
            read_all(&mut reader).unwrap(),
            vec![
                Incoming::Text("{\"type\":\"ping\"}".into()),
                Incoming::Binary(vec![0x80])
            ]
        );
        let mut plain = FrameReader::new(100);
        plain.feed(&rsv1);
        assert_eq!(
            read_all(&mut plain),
            Err(Violation::Protocol("reserved bits set"))
        );
        let mut small = FrameReader::new(10).with_deflate();
        small.feed(&rsv1);
        assert_eq!(
            read_all(&mut small),
            Err(Violation::TooBig),
            "the inflated size counts"
        );
        let mut ping = client(true, OP_PING, b"");
        ping[0] |= RSV1;
        let mut reader = FrameReader::new(100).with_deflate();
        reader.feed(&ping);
        assert_eq!(
            read_all(&mut reader),
            Err(Violation::Protocol(
                "RSV1 on a control or continuation frame"
            ))
        );
        assert_eq!(
            WireFrame::data(true, b"x", true).bytes().as_ref(),
            b"\xc2\x01x",
            "FIN, RSV1, binary"
        );
    }

    #[test]
    fn close_codes_are_read_and_echoed() {
        let mut reader = FrameReader::new(1000);
        reader.feed(&client(true, OP_CLOSE, &[0x03, 0xE9, b'o', b'k']));
        reader.feed(&client(true, OP_CLOSE, &[]));
        assert_eq!(
            read_all(&mut reader).unwrap(),
            vec![Incoming::Close(Some(1001)), Incoming::Close(None)]
        );
        assert_eq!(echo_code(None), 1000);
        assert_eq!(echo_code(Some(4001)), 4001);
        assert_eq!(echo_code(Some(1005)), 1002);
        assert_eq!(echo_code(Some(999)), 1002);
    }

    #[test]
    fn handshakes_are_checked() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        headers.insert(header::UPGRADE, "websocket".parse().unwrap());
        headers.insert(header::SEC_WEBSOCKET_VERSION, "13".parse().unwrap());
        headers.insert(
            header::SEC_WEBSOCKET_KEY,
            "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap(),
        );
        let ok = handshake(&headers, &["roomcast.v1"]).unwrap();
        // The example of RFC 6455 §1.3.
        assert_eq!(ok.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(ok.protocol, None);
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            "chat, roomcast.v1".parse().unwrap(),
        );
        assert_eq!(
            handshake(&headers, &["roomcast.v1"]).unwrap().protocol,
            Some("roomcast.v1")
        );
        // The client's first choice among ours.
        let ours = ["roomcast.v1", "roomcast.v1.msgpack"];
        let mut both = headers.clone();
        both.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            "x, roomcast.v1.msgpack, roomcast.v1".parse().unwrap(),
        );
        assert_eq!(
            handshake(&both, &ours).unwrap().protocol,
            Some("roomcast.v1.msgpack")
        );
        both.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            "roomcast.v1.msgpackx".parse().unwrap(),
        );
        assert_eq!(handshake(&both, &ours).unwrap().protocol, None);
        let mut old = headers.clone();
        old.insert(header::SEC_WEBSOCKET_VERSION, "8".parse().unwrap());
        assert_eq!(
            handshake(&old, &["roomcast.v1"]).unwrap_err().0,
            StatusCode::UPGRADE_REQUIRED
        );
        old.remove(header::SEC_WEBSOCKET_VERSION);
        assert_eq!(
            handshake(&old, &["roomcast.v1"]).unwrap_err().0,
            StatusCode::BAD_REQUEST
        );
        for bad in [
            "",
            "abc",
            "dGhlIHNhbXBsZSBub25jZQ",
            "dGhlIHNhbXBsZSBub25jZR==",
            "dGhlIHNhbXBsZSBub25jZQ==dGhl",
            "dGhlIHNhbXBsZSBub25j",
            "!GhlIHNhbXBsZSBub25jZQ==",
        ] {
            let mut odd = headers.clone();
            odd.insert(header::SEC_WEBSOCKET_KEY, bad.parse().unwrap());
            assert_eq!(
                handshake(&odd, &["roomcast.v1"]).unwrap_err().0,
                StatusCode::BAD_REQUEST,
                "key {bad:?}"
            );
        }
        let mut keyless = headers.clone();
        keyless.remove(header::SEC_WEBSOCKET_KEY);
        assert_eq!(
            handshake(&keyless, &["roomcast.v1"]).unwrap_err().0,
            StatusCode::BAD_REQUEST
        );
        let mut plain = headers;
        plain.remove(header::UPGRADE);
        assert_eq!(
            handshake(&plain, &["roomcast.v1"]).unwrap_err().0,
            StatusCode::UPGRADE_REQUIRED
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)
        ) {
            let mut reader = FrameReader::new(100);
            for chunk in chunks {
                reader.feed(&chunk);
                loop {
                    match reader.next_incoming() {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        // The session stops reading frames here.
                        Err(_) => return Ok(()),
                    }
                }
                // A frame is refused from its header, so the buffer never holds
                // much more than one frame and one read.
                prop_assert!(reader.buf.len() <= 100 + 14 + 64);
            }
        }

        #[test]
        fn any_text_round_trips(text in ".{0,300}", split in 1usize..50) {
            let mut reader = FrameReader::new(10_000);
            let bytes = client(true, OP_TEXT, text.as_bytes());
            let mut got = Vec::new();
            for chunk in bytes.chunks(split) {
                reader.feed(chunk);
                got.extend(read_all(&mut reader).unwrap());
            }
            prop_assert_eq!(got, vec![Incoming::Text(text)]);
        }
    }
}
