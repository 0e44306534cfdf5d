//! A fallback session's life, for SSE and long polling alike: one task
//! owns the [`Session`], executes the frames `POST /session/{session}`
//! hands it, moves what the outbound queue holds into the session's
//! [`Mailbox`] as the HTTP side takes frames out, keeps its clocks (SSE
//! heartbeat comments, the token's expiry, the poll expiry) and ends the
//! session with `{"type":"close","code":C}` as its last frame.
//!
//! Closes come from where they come over WebSocket (drain 1012, slow
//! consumer 4008, token expiry 4001, a frame too big 1009, the server API)
//! through the outbound queue; only the way the close is told differs.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use super::mailbox::Mailbox;
use super::registry::{Handle, INBOUND_BATCHES, Inbound, Kind};
use super::websocket::{CLOSE_TIMEOUT, close_timeout};
use crate::auth::Identity;
use crate::delivery::frame::{Format, Frame};
use crate::delivery::outbound::{Close, Flush, Wire};
use crate::session::Session;
use crate::state::Shared;

/// What an SSE stream may have in flight beyond the outbound queue.
const SSE_BUDGET: usize = 64 * 1024;

/// Most bytes of frames one poll answers (more wait for the next poll,
/// which answers at once). Forwarded answers stay well under NATS's
/// default 1 MiB payload limit.
const POLL_BUDGET: usize = 256 * 1024;

/// The SSE comment that keeps idle proxies from closing the stream.
const HEARTBEAT_COMMENT: &[u8] = b": heartbeat\n\n";

/// The last frame of an ended fallback session.
pub fn close_frame(close: Close) -> String {
    format!(r#"{{"type":"close","code":{}}}"#, close.code)
}

/// How often an SSE stream gets a heartbeat comment: within `heartbeat_ms`
/// even when the timer fires late.
pub fn comment_interval(heartbeat: Duration) -> Duration {
    heartbeat * 9 / 10
}

/// Opens a fallback session of `kind` for `identity`: its `welcome` is the
/// mailbox's first frame, and requests find it from now on.
pub async fn open(shared: Arc<Shared>, identity: Identity, kind: Kind) -> Arc<Handle> {
    let (format, budget, via) = match kind {
        Kind::Sse => (Format::SseEvent, SSE_BUDGET, "sse"),
        Kind::Poll => (Format::Json, POLL_BUDGET, "poll"),
    };
    let sessions = shared.sessions.clone();
    let id = sessions.mint();
    let mailbox = Arc::new(Mailbox::new(budget));
    let (inbound, frames) = mpsc::channel(INBOUND_BATCHES);
    let user = identity.user.clone().map(Arc::<str>::from);
    let handle = Arc::new(Handle::new(id, user, kind, mailbox.clone(), inbound));
    let wire: Arc<dyn Wire> = mailbox;
    let session = Session::open_named(
        shared.clone(),
        identity,
        wire,
        format,
        via,
        id.text().into(),
    )
    .await;
    sessions.insert(handle.clone());
    tokio::spawn({
        let handle = handle.clone();
        async move {
            let heartbeat = Duration::from_millis(shared.config.heartbeat_ms);
            let expiry = shared.config.polling.expiry;
            let mut fallback = Fallback {
                session,
                handle: handle.clone(),
                frames,
                format,
            };
            let slow_close = Duration::from_millis(shared.config.limits.slow_close_timeout_ms);
            let told = fallback.serve(heartbeat, expiry, slow_close).await;
            let Fallback { session, .. } = fallback;
            session.end().await;
            if told {
                // The close is the last frame: keep the session findable
                // until it has been read (a poll comes back at once).
                let wait = match kind {
                    Kind::Sse => CLOSE_TIMEOUT,
                    Kind::Poll => expiry,
                };
                let _ = tokio::time::timeout(wait, handle.mailbox().wait_emptied()).await;
            }
            shared.sessions.remove(handle.id());
        }
    });
    handle
}

/// One running fallback session.
struct Fallback {
    session: Session,
    handle: Arc<Handle>,
    frames: mpsc::Receiver<Inbound>,
    format: Format,
}

impl Fallback {
    /// Runs the session until it ends; true when its close frame was
    /// written to the mailbox (false: the reader is gone, or the session
    /// expired unpolled).
    async fn serve(&mut self, heartbeat: Duration, expiry: Duration, slow_close: Duration) -> bool {
        let conn = self.session.conn().clone();
        let outbound = &conn.outbound;
        let mailbox = self.handle.mailbox().clone();
        let kind = self.handle.kind();
        let mut comment = (kind == Kind::Sse).then(|| Instant::now() + comment_interval(heartbeat));
        let mut close_queued = false;
        // Once closing, the close must reach the mailbox by then (a reader
        // that stopped reading holds it up, as a full socket would).
        let mut give_up: Option<Instant> = None;
        loop {
            let (flush, written) = outbound.flush();
            self.session.written(written);
            // Coalesced writes (`write_delay_ms`): flush again then.
            let mut write_at = None;
            let blocked = match flush {
                Flush::Failed => return false,
                Flush::Delayed(due) => {
                    write_at = Some(due);
                    false
                }
                Flush::Blocked => true,
                Flush::Idle if close_queued => {
                    mailbox.finish();
                    return true;
                }
                Flush::Idle => false,
                Flush::Close(close) => {
                    give_up = Some(Instant::now() + close_timeout(close, slow_close));
                    let frame = Frame::new(close_frame(close));
                    outbound.push_close(frame.encoded(self.format).clone());
                    close_queued = true;
                    continue;
                }
            };
            if mailbox.is_abandoned() {
                return false;
            }
            let idle = (kind == Kind::Poll).then(|| self.handle.idle_deadline(expiry));
            let expires = self.session.expires_at().filter(|_| !outbound.is_closing());
            let next = [comment, idle, expires, give_up, write_at]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or_else(|| Instant::now() + expiry);
            tokio::select! {
                biased;
                () = outbound.wait() => {}
                () = mailbox.wait_taken(), if blocked || kind == Kind::Sse => {}
                inbound = self.frames.recv(), if !close_queued => match inbound {
                    Some(Inbound::Frames(frames)) => {
                        for frame in frames {
                            self.session.receive(&frame).await;
                        }
                    }
                    Some(Inbound::TooBig) => self.session.close(Close::TOO_BIG),
                    // Requests hold no sender once the handle is gone.
                    None => return false,
                },
                () = sleep_until(next) => {
                    let now = Instant::now();
                    if give_up.is_some_and(|at| at <= now) {
                        return false;
                    }
                    if idle.is_some_and(|at| at <= now)
                        && self.handle.idle_deadline(expiry) <= now
                    {
                        // Not polled for the expiry: no one is left to tell.
                        return false;
                    }
                    if expires.is_some_and(|at| at <= now) {
                        self.session.expire();
                    }
                    if let Some(at) = comment
                        && at <= now
                    {
                        self.session.send_transport(Bytes::from_static(HEARTBEAT_COMMENT));
                        comment = Some(now + comment_interval(heartbeat));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_frames_carry_the_websocket_code() {
        assert_eq!(close_frame(Close::DRAIN), r#"{"type":"close","code":1012}"#);
        assert_eq!(
            close_frame(Close::SLOW_CONSUMER),
            r#"{"type":"close","code":4008}"#
        );
    }

    #[test]
    fn comments_come_within_the_heartbeat() {
        let heartbeat = Duration::from_millis(25_000);
        assert!(comment_interval(heartbeat) < heartbeat);
        assert!(comment_interval(heartbeat) >= heartbeat / 2);
    }
}
