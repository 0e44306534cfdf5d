//! Benchmark clients of the HTTP fallbacks: a Server-Sent Events subscriber
//! (the response read as a stream of events) and a long-polling one. Both
//! open a session, join one room with `POST /session/{session}` and then
//! yield the frames they receive, ending at the session's `close` frame.

use std::collections::VecDeque;

use serde_json::value::RawValue;
use tokio::time::timeout;

use crate::BenchError;
use crate::client::STEP_TIMEOUT;
use crate::target::Target;
use crate::wire::{self, Incoming};

/// Which fallback a subscriber uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `GET /sse`.
    Sse,
    /// `POST /poll`, then `GET /poll/{session}`.
    Poll,
}

impl Kind {
    /// Its name in results.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Sse => "sse",
            Kind::Poll => "poll",
        }
    }
}

/// One HTTP client for all fallback sessions of a run (connections are
/// per session anyway: an SSE stream or a waiting poll holds one).
pub fn http_client() -> Result<reqwest::Client, BenchError> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .build()
        .map_err(|e| BenchError::new(format!("HTTP client: {e}")))
}

/// What a fallback subscriber got next.
#[derive(Debug)]
pub enum Next {
    /// A server frame's JSON.
    Frame(String),
    /// The session ended with `{"type":"close","code":C}`.
    Closed(u16),
    /// The session ended otherwise (stream ended, 404, HTTP error).
    Failed(String),
}

/// A fallback session as a benchmark subscriber drives it.
pub struct Feed {
    http: reqwest::Client,
    base: String,
    session: String,
    /// The SSE response being read, or `None` for long polling.
    stream: Option<reqwest::Response>,
    /// Unparsed SSE bytes.
    buffer: Vec<u8>,
    frames: VecDeque<String>,
}

/// The `code` of a fallback session's last frame, when `text` is one.
pub fn close_code(text: &str) -> Option<u16> {
    if !text.starts_with(r#"{"type":"close""#) {
        return None;
    }
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    value.get("code")?.as_u64()?.try_into().ok()
}

/// Splits complete SSE events off the front of `buffer`: their `data`
/// lines, in order (comments and other fields are skipped).
pub fn take_events(buffer: &mut Vec<u8>) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    while let Some(end) = buffer[start..].windows(2).position(|w| w == b"\n\n") {
        let event = &buffer[start..start + end];
        for line in event.split(|&b| b == b'\n') {
            if let Some(data) = line.strip_prefix(b"data: ") {
                out.push(String::from_utf8_lossy(data).into_owned());
            }
        }
        start += end + 2;
    }
    buffer.drain(..start);
    out
}

impl Feed {
    /// Opens a session of `kind` on `target` and joins `room`, within
    /// [`STEP_TIMEOUT`].
    pub async fn open(
        http: &reqwest::Client,
        target: &Target,
        kind: Kind,
        room: &str,
    ) -> Result<Feed, BenchError> {
        timeout(STEP_TIMEOUT, Self::open_joined(http, target, kind, room))
            .await
            .map_err(|_| BenchError::new(format!("{} session timed out", kind.name())))?
    }

    async fn open_joined(
        http: &reqwest::Client,
        target: &Target,
        kind: Kind,
        room: &str,
    ) -> Result<Feed, BenchError> {
        let base = format!("http://{}", target.addr);
        let failed = |e: reqwest::Error| BenchError::new(format!("{base}: {e}"));
        let mut feed = Feed {
            http: http.clone(),
            base: base.clone(),
            session: String::new(),
            stream: None,
            buffer: Vec::new(),
            frames: VecDeque::new(),
        };
        let welcome = match kind {
            Kind::Sse => {
                let response = http
                    .get(format!("{base}/sse"))
                    .send()
                    .await
                    .map_err(failed)?;
                check(&response)?;
                feed.stream = Some(response);
                match feed.next().await {
                    Next::Frame(frame) => frame,
                    other => return Err(BenchError::new(format!("no welcome: {other:?}"))),
                }
            }
            Kind::Poll => {
                let response = http
                    .post(format!("{base}/poll"))
                    .send()
                    .await
                    .map_err(failed)?;
                check(&response)?;
                response.text().await.map_err(failed)?
            }
        };
        let value: serde_json::Value = serde_json::from_str(&welcome)
            .map_err(|e| BenchError::new(format!("welcome {welcome:?}: {e}")))?;
        feed.session = value
            .get("session")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| BenchError::new(format!("welcome without session: {welcome}")))?
            .to_owned();
        feed.send(&wire::join(room, 1)).await?;
        loop {
            match feed.next().await {
                Next::Frame(frame) => match wire::decode(&frame) {
                    Incoming::Ok { id: Some(1) } => return Ok(feed),
                    Incoming::Error { code, .. } => {
                        return Err(BenchError::new(format!("join {room}: {code}")));
                    }
                    _ => {}
                },
                other => return Err(BenchError::new(format!("join {room}: {other:?}"))),
            }
        }
    }

    /// Sends client frames to the session.
    pub async fn send(&self, body: &str) -> Result<(), BenchError> {
        let response = self
            .http
            .post(format!("{}/session/{}", self.base, self.session))
            .body(body.to_owned())
            .send()
            .await
            .map_err(|e| BenchError::new(format!("POST /session: {e}")))?;
        check(&response)
    }

    /// The next frame (waiting as long as it takes: the caller bounds it).
    pub async fn next(&mut self) -> Next {
        loop {
            if let Some(frame) = self.frames.pop_front() {
                return match close_code(&frame) {
                    Some(code) => Next::Closed(code),
                    None => Next::Frame(frame),
                };
            }
            let got = match &mut self.stream {
                Some(response) => match response.chunk().await {
                    Ok(Some(chunk)) => {
                        self.buffer.extend_from_slice(&chunk);
                        Ok(take_events(&mut self.buffer))
                    }
                    Ok(None) => Err("the SSE stream ended".to_owned()),
                    Err(e) => Err(format!("SSE: {e}")),
                },
                None => self.poll().await,
            };
            match got {
                Ok(frames) => self.frames.extend(frames),
                Err(why) => return Next::Failed(why),
            }
        }
    }

    /// One `GET /poll/{session}`: the frames it answers.
    async fn poll(&self) -> Result<Vec<String>, String> {
        let response = self
            .http
            .get(format!("{}/poll/{}", self.base, self.session))
            .send()
            .await
            .map_err(|e| format!("poll: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("poll: HTTP {}", response.status()));
        }
        let body = response.bytes().await.map_err(|e| format!("poll: {e}"))?;
        let frames: Vec<&RawValue> =
            serde_json::from_slice(&body).map_err(|e| format!("poll answer: {e}"))?;
        Ok(frames.iter().map(|f| f.get().to_owned()).collect())
    }
}

fn check(response: &reqwest::Response) -> Result<(), BenchError> {
    if response.status().is_success() {
        Ok(())
    } else {
        Err(BenchError::new(format!(
            "{}: HTTP {}",
            response.url(),
            response.status()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_at_blank_lines_and_comments_skipped() {
        let mut buffer = b"data: {\"a\":1}\n\n: heartbeat\n\ndata: {\"b\"".to_vec();
        assert_eq!(take_events(&mut buffer), ["{\"a\":1}"]);
        assert_eq!(buffer, b"data: {\"b\"");
        buffer.extend_from_slice(b":2}\n\n");
        assert_eq!(take_events(&mut buffer), ["{\"b\":2}"]);
        assert!(buffer.is_empty());
    }

    #[test]
    fn close_frames_are_recognised() {
        assert_eq!(close_code(r#"{"type":"close","code":4008}"#), Some(4008));
        assert_eq!(close_code(r#"{"type":"message","code":1}"#), None);
    }
}
