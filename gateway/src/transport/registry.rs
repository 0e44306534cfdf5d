//! The fallback sessions (SSE and long polling) this gateway holds, found by
//! their ids, and the answers to the requests made on them:
//! `GET /poll/{session}` and `POST /session/{session}`, whether the request
//! reached this gateway or was forwarded over the bus by another one.
//!
//! A session id is 64 hex digits: a random 64-bit index (the map key), this
//! gateway's 64-bit route (how another gateway knows where to forward), and
//! a 128-bit secret from the operating system's CSPRNG-seeded generator. The
//! secret is compared in constant time; what logs show is the index alone.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use serde_json::value::RawValue;
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::forward::{self, Ask, Head};
use super::mailbox::Mailbox;
use crate::bus::Desk;
use crate::config::Polling;

/// Most client frames in one `POST /session/{session}`.
pub const MAX_BATCH: usize = 100;

/// Batches a session may have waiting for execution; a sender waits beyond.
pub const INBOUND_BATCHES: usize = 8;

/// Which fallback a session uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Server-Sent Events (`GET /sse`).
    Sse,
    /// Long polling (`POST /poll`).
    Poll,
}

/// What a `POST /session/{session}` hands the session.
#[derive(Debug)]
pub enum Inbound {
    /// Client frames to execute in order.
    Frames(Vec<String>),
    /// A frame over the size limit: the session closes with 1009.
    TooBig,
}

/// A session id split into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionId {
    /// Map key, and what logs show.
    pub index: u64,
    /// The gateway holding the session.
    pub route: u64,
    /// The bearer secret.
    pub secret: [u8; 16],
}

impl SessionId {
    /// A new id on `route`, from the thread's CSPRNG.
    pub fn random(route: u64) -> Self {
        Self {
            index: rand::random(),
            route,
            secret: rand::random(),
        }
    }

    /// The id as clients see it (`welcome.session`).
    pub fn text(&self) -> String {
        let secret = u128::from_be_bytes(self.secret);
        format!("{:016x}{:016x}{secret:032x}", self.index, self.route)
    }

    /// Reads an id; `None` unless it is exactly 64 lowercase hex digits.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let index = u64::from_str_radix(&text[..16], 16).ok()?;
        let route = u64::from_str_radix(&text[16..32], 16).ok()?;
        let secret = u128::from_str_radix(&text[32..], 16).ok()?.to_be_bytes();
        Some(Self {
            index,
            route,
            secret,
        })
    }
}

/// Where a request on a session goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// This gateway.
    Here,
    /// The gateway of this route (hex, as on the bus).
    Elsewhere(String),
    /// No gateway: the id is malformed.
    Nobody,
}

/// Long-polling activity of one session.
#[derive(Debug)]
struct Polls {
    /// Polls waiting now.
    active: usize,
    /// When the last poll ended (or the session opened).
    last: Instant,
}

/// One fallback session as requests on it see it; the session itself runs
/// in its own task (`fallback.rs`).
#[derive(Debug)]
pub struct Handle {
    id: SessionId,
    /// The token's `sub`; `None` for an anonymous session.
    user: Option<Arc<str>>,
    kind: Kind,
    mailbox: Arc<Mailbox>,
    inbound: mpsc::Sender<Inbound>,
    polls: Mutex<Polls>,
    /// Bumped by each poll: an earlier poll still waiting answers at once.
    generation: watch::Sender<u64>,
}

impl Handle {
    /// A handle for the session `id` of `user`, whose frames wait in `mailbox`.
    pub fn new(
        id: SessionId,
        user: Option<Arc<str>>,
        kind: Kind,
        mailbox: Arc<Mailbox>,
        inbound: mpsc::Sender<Inbound>,
    ) -> Self {
        Self {
            id,
            user,
            kind,
            mailbox,
            inbound,
            polls: Mutex::new(Polls {
                active: 0,
                last: Instant::now(),
            }),
            generation: watch::Sender::new(0),
        }
    }

    /// The session's parts.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// Its fallback.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Where its frames wait.
    pub fn mailbox(&self) -> &Arc<Mailbox> {
        &self.mailbox
    }

    fn polls(&self) -> std::sync::MutexGuard<'_, Polls> {
        self.polls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the session ends for want of polls, as things stand: while a
    /// poll waits, not before `expiry` from now.
    pub fn idle_deadline(&self, expiry: Duration) -> Instant {
        let polls = self.polls();
        if polls.active > 0 {
            Instant::now() + expiry
        } else {
            polls.last + expiry
        }
    }
}

/// The fallback sessions of this gateway.
#[derive(Debug)]
pub struct Sessions {
    route: u64,
    route_text: String,
    map: DashMap<u64, Arc<Handle>>,
    polling: Polling,
    max_frame_bytes: usize,
    /// How long a send waits for room in a busy session's inbound queue.
    send_wait: Duration,
}

/// An answer to a request on a session: HTTP status and JSON body.
pub type Answer = (u16, Bytes);

impl Sessions {
    /// No sessions yet, on a random route.
    pub fn new(polling: Polling, max_frame_bytes: usize, send_wait: Duration) -> Arc<Self> {
        let route: u64 = rand::random();
        Arc::new(Self {
            route,
            route_text: format!("{route:016x}"),
            map: DashMap::new(),
            polling,
            max_frame_bytes,
            send_wait,
        })
    }

    /// This gateway's route, as the bus names it.
    pub fn route(&self) -> &str {
        &self.route_text
    }

    /// The long-polling timings.
    pub fn polling(&self) -> Polling {
        self.polling
    }

    /// A fresh id on this gateway's route, unused by any session here.
    pub fn mint(&self) -> SessionId {
        loop {
            let id = SessionId::random(self.route);
            if !self.map.contains_key(&id.index) {
                return id;
            }
        }
    }

    /// Makes a session reachable.
    pub fn insert(&self, handle: Arc<Handle>) {
        self.map.insert(handle.id.index, handle);
    }

    /// Makes a session unreachable (it has ended).
    pub fn remove(&self, id: SessionId) {
        self.map.remove(&id.index);
    }

    /// Fallback sessions held here.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no fallback session is held here.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Which gateway holds the session `id`.
    pub fn holder(&self, id: &str) -> Holder {
        match SessionId::parse(id) {
            None => Holder::Nobody,
            Some(id) if id.route == self.route => Holder::Here,
            Some(id) => Holder::Elsewhere(format!("{:016x}", id.route)),
        }
    }

    /// The session `id` if it is held here, its secret checked in constant time.
    fn find(&self, id: &str) -> Option<Arc<Handle>> {
        let id = SessionId::parse(id)?;
        let handle = self.map.get(&id.index)?.clone();
        let same = handle.id.secret.ct_eq(&id.secret) & handle.id.route.ct_eq(&id.route);
        bool::from(same).then_some(handle)
    }

    /// Answers a request on a session held here (or an unknown one).
    pub async fn answer(&self, head: &Head, body: Bytes) -> Answer {
        let Some(handle) = self.find(&head.session) else {
            return error(404, "not_found", "unknown or ended session");
        };
        if let Some(user) = &handle.user
            && head.sub.as_deref() != Some(user)
        {
            return error(
                401,
                "unauthorized",
                "the token's sub is not the session's user",
            );
        }
        match head.ask {
            Ask::Poll => self.poll(&handle).await,
            Ask::Send => self.send(&handle, &body).await,
        }
    }

    /// Waits for frames (up to the poll wait) and answers them as a JSON array.
    async fn poll(&self, handle: &Handle) -> Answer {
        if handle.kind != Kind::Poll {
            return error(
                400,
                "bad_request",
                "this session streams over SSE; it is not polled",
            );
        }
        let mut mine = 0;
        handle.generation.send_modify(|g| {
            *g += 1;
            mine = *g;
        });
        handle.polls().active += 1;
        let mut generation = handle.generation.subscribe();
        let superseded = tokio::select! {
            () = handle.mailbox.wait_arrived() => false,
            _ = generation.wait_for(|g| *g != mine) => true,
            () = tokio::time::sleep(self.polling.wait) => false,
        };
        let taken = if superseded {
            Default::default()
        } else {
            handle.mailbox.take(None)
        };
        {
            let mut polls = handle.polls();
            polls.active -= 1;
            polls.last = Instant::now();
        }
        if taken.finished {
            // The close was the last frame: the session is over.
            self.remove(handle.id);
        }
        (200, json_array(&taken.frames))
    }

    /// Hands the body's frames to the session.
    async fn send(&self, handle: &Handle, body: &[u8]) -> Answer {
        let frames = match batch(body, self.max_frame_bytes) {
            Ok(frames) => frames,
            Err(BatchError::TooBig) => {
                // The same limit as over WebSocket, and the same close.
                let _ = handle.inbound.try_send(Inbound::TooBig);
                return error(
                    413,
                    "payload_too_large",
                    &format!(
                        "a frame is over {} bytes; the session closes with 1009",
                        self.max_frame_bytes
                    ),
                );
            }
            Err(BatchError::Bad(message)) => return error(400, "bad_request", &message),
        };
        let sent =
            tokio::time::timeout(self.send_wait, handle.inbound.send(Inbound::Frames(frames)));
        match sent.await {
            Ok(Ok(())) => (202, Bytes::from_static(br#"{"ok":true}"#)),
            Ok(Err(_)) => error(404, "not_found", "unknown or ended session"),
            Err(_) => error(
                503,
                "unavailable",
                "the session is not taking frames; retry",
            ),
        }
    }
}

impl Desk for Sessions {
    fn answer(&self, request: Bytes) -> Pin<Box<dyn Future<Output = Bytes> + Send + '_>> {
        Box::pin(async move {
            let (status, body) = match forward::decode_request(&request) {
                Some((head, body)) => Sessions::answer(self, &head, body).await,
                None => error(400, "bad_request", "malformed forwarded request"),
            };
            forward::encode_answer(status, &body)
        })
    }

    fn busy(&self) -> Bytes {
        let (status, body) = error(503, "unavailable", "the session's gateway is busy; retry");
        forward::encode_answer(status, &body)
    }
}

/// The contract's JSON error answer.
pub fn error(status: u16, code: &str, message: &str) -> Answer {
    let body = serde_json::json!({"code": code, "message": message});
    (status, Bytes::from(body.to_string()))
}

/// Frames as one JSON array.
pub fn json_array(frames: &[Bytes]) -> Bytes {
    let len = frames.iter().map(|f| f.len() + 1).sum::<usize>() + 2;
    let mut out = Vec::with_capacity(len);
    out.push(b'[');
    for (i, frame) in frames.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(frame);
    }
    out.push(b']');
    Bytes::from(out)
}

/// Why a `POST /session/{session}` body was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum BatchError {
    /// Not one client frame or an array of at most [`MAX_BATCH`]: 400.
    Bad(String),
    /// A frame over the frame size limit: 413, and the session closes with 1009.
    TooBig,
}

/// The client frames of a `POST /session/{session}` body: one JSON object,
/// or an array of at most [`MAX_BATCH`] frames. What each frame says is the
/// session's business (it answers bad frames like over WebSocket).
pub fn batch(body: &[u8], max_frame_bytes: usize) -> Result<Vec<String>, BatchError> {
    let text =
        std::str::from_utf8(body).map_err(|_| BatchError::Bad("the body is not UTF-8".into()))?;
    let bad_json = |e: serde_json::Error| BatchError::Bad(format!("the body is not JSON: {e}"));
    let frames: Vec<&str> = match text.trim_start().as_bytes().first() {
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text).map_err(bad_json)?;
            if items.len() > MAX_BATCH {
                return Err(BatchError::Bad(format!(
                    "at most {MAX_BATCH} frames per request (got {})",
                    items.len()
                )));
            }
            items.into_iter().map(RawValue::get).collect()
        }
        Some(b'{') => {
            let item: &RawValue = serde_json::from_str(text).map_err(bad_json)?;
            vec![item.get()]
        }
        _ => {
            return Err(BatchError::Bad(
                "the body must be a client frame (a JSON object) or an array of at most 100".into(),
            ));
        }
    };
    if frames.iter().any(|f| f.len() > max_frame_bytes) {
        return Err(BatchError::TooBig);
    }
    Ok(frames.into_iter().map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_index_route_and_128_secret_bits() {
        let id = SessionId::random(0xabc);
        let text = id.text();
        assert_eq!(text.len(), 64);
        assert_eq!(SessionId::parse(&text), Some(id));
        assert_eq!(&text[16..32], "0000000000000abc");
        assert_eq!(&text[..16], format!("{:016x}", id.index));
        assert_ne!(SessionId::random(1).secret, SessionId::random(1).secret);
        for bad in [
            "",
            "xyz",
            &text[..63],
            &text.to_uppercase(),
            &format!("{text}0"),
        ] {
            assert_eq!(SessionId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn holders_follow_the_route() {
        let sessions = Sessions::new(Polling::default(), 1024, Duration::from_secs(1));
        let here = sessions.mint().text();
        assert_eq!(sessions.holder(&here), Holder::Here);
        let there = SessionId::random(sessions.route ^ 1);
        assert_eq!(
            sessions.holder(&there.text()),
            Holder::Elsewhere(format!("{:016x}", there.route))
        );
        assert_eq!(sessions.holder("nope"), Holder::Nobody);
    }

    #[test]
    fn a_wrong_secret_finds_nothing() {
        let sessions = Sessions::new(Polling::default(), 1024, Duration::from_secs(1));
        let id = sessions.mint();
        let (tx, _rx) = mpsc::channel(1);
        let handle = Handle::new(id, None, Kind::Poll, Arc::new(Mailbox::new(10)), tx);
        sessions.insert(Arc::new(handle));
        assert!(sessions.find(&id.text()).is_some());
        let mut forged = id;
        forged.secret[15] ^= 1;
        assert!(sessions.find(&forged.text()).is_none());
        sessions.remove(id);
        assert!(sessions.find(&id.text()).is_none());
    }

    #[test]
    fn bodies_are_one_frame_or_a_bounded_array() {
        assert_eq!(
            batch(br#"{"type":"ping"}"#, 100).unwrap(),
            [r#"{"type":"ping"}"#]
        );
        assert_eq!(
            batch(br#" [{"type":"ping"}, 5]"#, 100).unwrap(),
            [r#"{"type":"ping"}"#, "5"],
            "each item is the session's to judge"
        );
        assert_eq!(batch(b"[]", 100).unwrap(), Vec::<String>::new());
        let many = format!("[{}]", vec!["{}"; 101].join(","));
        assert!(
            matches!(batch(many.as_bytes(), 100), Err(BatchError::Bad(m)) if m.contains("at most 100"))
        );
        assert!(matches!(batch(b"{nope", 100), Err(BatchError::Bad(m)) if m.contains("not JSON")));
        assert!(matches!(batch(b"42", 100), Err(BatchError::Bad(_))));
        assert!(matches!(batch(b"\xff", 100), Err(BatchError::Bad(_))));
        let big = format!(r#"[{{"data":"{}"}}]"#, "x".repeat(100));
        assert_eq!(batch(big.as_bytes(), 100), Err(BatchError::TooBig));
    }

    #[test]
    fn poll_answers_are_json_arrays() {
        assert_eq!(json_array(&[]).as_ref(), b"[]");
        let frames = [Bytes::from_static(b"{\"a\":1}"), Bytes::from_static(b"{}")];
        assert_eq!(json_array(&frames).as_ref(), b"[{\"a\":1},{}]");
    }
}
