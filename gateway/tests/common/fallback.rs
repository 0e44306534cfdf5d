//! Clients of the HTTP fallbacks over real HTTP (reqwest): a Server-Sent
//! Events session read as a stream, and a long-polling session. Both send
//! client frames with `POST /session/{session}`, to whichever gateway the
//! test names (the one holding the session, or another). Every wait is bounded.

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::{Value, json};

use super::STEP;

/// An HTTP client without an overall timeout (an SSE stream lasts); each
/// read is bounded by the caller instead.
pub fn streaming() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("reqwest client")
}

/// How a fallback session receives.
pub enum Receive {
    /// An open `GET /sse` response and what was read of it.
    Sse {
        response: reqwest::Response,
        buffer: String,
        comments: usize,
        ended: bool,
    },
    /// `GET /poll/{session}` answers.
    Poll,
}

/// A fallback session as a client drives it.
pub struct Session {
    /// Where requests on the session go (`http://host:port`).
    pub base: String,
    /// The token sent with every request, if any.
    pub token: Option<String>,
    /// `welcome.session`.
    pub id: String,
    /// The `welcome` frame.
    pub welcome: Value,
    receive: Receive,
    /// Frames received and not consumed yet.
    backlog: VecDeque<Value>,
    next_id: u64,
}

fn authorized(request: reqwest::RequestBuilder, token: Option<&str>) -> reqwest::RequestBuilder {
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

/// `GET /sse` on `base`: the raw response.
pub async fn sse_response(base: &str, token: Option<&str>) -> reqwest::Response {
    let request = streaming()
        .get(format!("{base}/sse"))
        .header("accept", "text/event-stream");
    tokio::time::timeout(STEP, authorized(request, token).send())
        .await
        .expect("GET /sse answers in time")
        .expect("GET /sse reaches the gateway")
}

/// `POST /poll` on `base`: status and body.
pub async fn poll_open_response(base: &str, token: Option<&str>) -> (u16, reqwest::Response) {
    let request = super::http().post(format!("{base}/poll"));
    let response = authorized(request, token)
        .send()
        .await
        .expect("POST /poll reaches the gateway");
    (response.status().as_u16(), response)
}

impl Session {
    /// Opens an SSE session on `base` and reads its `welcome`.
    pub async fn sse(base: &str, token: Option<&str>) -> Session {
        let response = sse_response(base, token).await;
        assert_eq!(response.status(), 200, "GET /sse");
        let mut session = Session {
            base: base.into(),
            token: token.map(Into::into),
            id: String::new(),
            welcome: Value::Null,
            receive: Receive::Sse {
                response,
                buffer: String::new(),
                comments: 0,
                ended: false,
            },
            backlog: VecDeque::new(),
            next_id: 0,
        };
        let welcome = session.recv().await;
        session.welcomed(welcome);
        session
    }

    /// Opens a long-polling session on `base` (its `welcome` is the answer).
    pub async fn poll(base: &str, token: Option<&str>) -> Session {
        let (status, response) = poll_open_response(base, token).await;
        assert_eq!(status, 200, "POST /poll");
        let welcome: Value = response.json().await.expect("welcome is JSON");
        let mut session = Session {
            base: base.into(),
            token: token.map(Into::into),
            id: String::new(),
            welcome: Value::Null,
            receive: Receive::Poll,
            backlog: VecDeque::new(),
            next_id: 0,
        };
        session.welcomed(welcome);
        session
    }

    fn welcomed(&mut self, welcome: Value) {
        assert_eq!(welcome["type"], "welcome", "first frame: {welcome}");
        self.id = welcome["session"].as_str().expect("session id").into();
        self.welcome = welcome;
    }

    /// The user id from `welcome`.
    pub fn user(&self) -> String {
        self.welcome["user"].as_str().expect("user").into()
    }

    /// The heartbeat comments read so far (SSE).
    pub fn comments(&self) -> usize {
        match &self.receive {
            Receive::Sse { comments, .. } => *comments,
            Receive::Poll => 0,
        }
    }

    /// `POST /session/{id}` with a raw body on `base`: status and JSON answer.
    pub async fn post_raw_to(&self, base: &str, body: String) -> (u16, Value) {
        let request = super::http()
            .post(format!("{base}/session/{}", self.id))
            .header("content-type", "application/json")
            .body(body);
        let response = authorized(request, self.token.as_deref())
            .send()
            .await
            .expect("POST /session reaches the gateway");
        let status = response.status().as_u16();
        let text = response.text().await.expect("answer body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Sends client frames (one, or an array) and expects 202.
    pub async fn send(&self, frames: Value) {
        let (status, answer) = self.post_raw_to(&self.base, frames.to_string()).await;
        assert_eq!(status, 202, "POST /session: {answer}");
    }

    /// `GET /poll/{id}` on `base`: status and JSON answer.
    pub async fn poll_once_at(&self, base: &str) -> (u16, Value) {
        let request = streaming().get(format!("{base}/poll/{}", self.id));
        let response =
            tokio::time::timeout(STEP * 8, authorized(request, self.token.as_deref()).send())
                .await
                .expect("a poll answers within its wait")
                .expect("GET /poll reaches the gateway");
        let status = response.status().as_u16();
        let cache = response
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            cache.contains("no-store"),
            "polls are never cached: {cache}"
        );
        let text = response.text().await.expect("poll body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The next frame, within [`STEP`]; `None` when the session ended.
    pub async fn try_recv(&mut self) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            if let Some(frame) = self.backlog.pop_front() {
                return Some(frame);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no frame within {STEP:?}"
            );
            match &self.receive {
                Receive::Sse { ended: true, .. } => return None,
                Receive::Sse { .. } => {
                    self.read_chunk(deadline).await;
                }
                Receive::Poll => {
                    let base = self.base.clone();
                    let (status, answer) = self.poll_once_at(&base).await;
                    if status == 404 {
                        return None;
                    }
                    assert_eq!(status, 200, "poll: {answer}");
                    let frames = answer.as_array().expect("a poll answers an array");
                    self.backlog.extend(frames.iter().cloned());
                }
            }
        }
    }

    /// The next frame, within [`STEP`].
    pub async fn recv(&mut self) -> Value {
        self.try_recv().await.expect("the session is still open")
    }

    /// Waits for a frame of type `ty`, skipping others.
    pub async fn recv_type(&mut self, ty: &str) -> Value {
        loop {
            let frame = self.recv().await;
            if frame["type"] == ty {
                return frame;
            }
        }
    }

    /// Sends `frame` with a fresh `id` and returns the answer with that id
    /// (frames before it are kept for later).
    pub async fn request(&mut self, mut frame: Value) -> Value {
        self.next_id += 1;
        let id = json!(self.next_id);
        frame["id"] = id.clone();
        self.send(frame).await;
        let mut skipped = Vec::new();
        let answer = loop {
            let got = self.recv().await;
            if got["id"] == id {
                break got;
            }
            skipped.push(got);
        };
        for frame in skipped.into_iter().rev() {
            self.backlog.push_front(frame);
        }
        answer
    }

    /// Like [`Session::request`], expecting `ok`.
    pub async fn ok(&mut self, frame: Value) -> Value {
        let answer = self.request(frame).await;
        assert_eq!(answer["type"], "ok", "{answer}");
        answer
    }

    /// Frames until the session ends; the last must be the close with `code`.
    pub async fn expect_close(&mut self, code: u64) -> Vec<Value> {
        let mut frames = Vec::new();
        while let Some(frame) = self.try_recv().await {
            frames.push(frame);
        }
        let last = frames.last().cloned().unwrap_or(Value::Null);
        assert_eq!(last, json!({"type": "close", "code": code}), "last frame");
        frames
    }

    /// Waits until at least `n` heartbeat comments were read (SSE).
    pub async fn wait_comments(&mut self, n: usize, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.comments() < n {
            assert!(self.read_chunk(deadline).await, "the stream ended");
        }
    }

    /// Reads one chunk of the SSE stream: its events into the backlog, its
    /// comments counted. False at the end of the stream.
    async fn read_chunk(&mut self, deadline: tokio::time::Instant) -> bool {
        let Receive::Sse {
            response,
            buffer,
            comments,
            ended,
        } = &mut self.receive
        else {
            panic!("not an SSE session");
        };
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("SSE data in time")
            .expect("SSE stream reads");
        let Some(chunk) = chunk else {
            *ended = true;
            return false;
        };
        buffer.push_str(std::str::from_utf8(&chunk).expect("SSE is UTF-8"));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            for line in event.lines() {
                if let Some(data) = line.strip_prefix("data: ") {
                    let frame = serde_json::from_str(data)
                        .unwrap_or_else(|e| panic!("event data {data:?}: {e}"));
                    self.backlog.push_back(frame);
                } else if line.starts_with(':') {
                    *comments += 1;
                } else if !line.is_empty() {
                    panic!("unexpected SSE line {line:?}");
                }
            }
        }
        true
    }
}
