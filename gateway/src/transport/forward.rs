//! What crosses the cluster bus when a request on a fallback session reaches
//! a gateway that does not hold the session (pure encoding, no I/O).
//!
//! A request is one JSON line saying what is asked (`poll` or `send`), of
//! which session, by which token `sub`, then the request body as is. An
//! answer is the HTTP status on one line, then the response body as is.
//! Bodies are JSON already: carried raw, they cost no escaping.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// What a request on a session asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ask {
    /// `GET /poll/{session}`.
    Poll,
    /// `POST /session/{session}`.
    Send,
}

/// The first line of a forwarded request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// What is asked.
    pub ask: Ask,
    /// The session id, as the client sent it.
    pub session: String,
    /// The `sub` of the request's verified token (when JWT is configured).
    pub sub: Option<String>,
}

/// A forwarded request: its head line, then `body`.
pub fn encode_request(head: &Head, body: &[u8]) -> Bytes {
    let line = serde_json::to_vec(head).unwrap_or_default();
    let mut out = BytesMut::with_capacity(line.len() + 1 + body.len());
    out.put_slice(&line);
    out.put_u8(b'\n');
    out.put_slice(body);
    out.freeze()
}

/// The head and body of a forwarded request; `None` when it is malformed.
pub fn decode_request(request: &Bytes) -> Option<(Head, Bytes)> {
    let newline = request.iter().position(|&b| b == b'\n')?;
    let head = serde_json::from_slice(&request[..newline]).ok()?;
    Some((head, request.slice(newline + 1..)))
}

/// An answer: `status` on its own line, then `body`.
pub fn encode_answer(status: u16, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(4 + body.len());
    out.put_slice(status.to_string().as_bytes());
    out.put_u8(b'\n');
    out.put_slice(body);
    out.freeze()
}

/// The status and body of an answer; `None` when it is malformed.
pub fn decode_answer(answer: &Bytes) -> Option<(u16, Bytes)> {
    let newline = answer.iter().position(|&b| b == b'\n')?;
    let status = std::str::from_utf8(&answer[..newline]).ok()?.parse().ok()?;
    Some((status, answer.slice(newline + 1..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_round_trip_with_raw_bodies() {
        let head = Head {
            ask: Ask::Send,
            session: "ab".repeat(32),
            sub: Some("alice\nsmith".into()),
        };
        let body = b"[{\"type\":\"ping\"},\n{\"type\":\"ping\"}]";
        let request = encode_request(&head, body);
        assert_eq!(
            decode_request(&request),
            Some((head, Bytes::from(&body[..])))
        );
        let answer = encode_answer(202, b"{\"ok\":true}\n");
        assert_eq!(
            decode_answer(&answer),
            Some((202, Bytes::from_static(b"{\"ok\":true}\n")))
        );
    }

    #[test]
    fn malformed_envelopes_are_refused() {
        assert_eq!(decode_request(&Bytes::from_static(b"no newline")), None);
        assert_eq!(decode_request(&Bytes::from_static(b"{\"ask\":1}\n")), None);
        assert_eq!(decode_answer(&Bytes::from_static(b"2x2\n")), None);
        assert_eq!(decode_answer(&Bytes::new()), None);
    }
}
