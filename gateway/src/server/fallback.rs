//! The routes of the HTTP fallbacks: `GET /sse` and `POST /poll` open a
//! session (after the same checks as a WebSocket upgrade), `GET
//! /poll/{session}` and `POST /session/{session}` work on one. A request on
//! a session another gateway holds is forwarded to it over the cluster bus
//! and answered as if local, so no sticky sessions are needed.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::time::Instant;

use super::admission::read_body;
use super::{TokenQuery, admit, request_token};
use crate::state::Shared;
use crate::transport::forward::{self, Ask, Head};
use crate::transport::registry::{Answer, Holder, Kind, error};
use crate::transport::{poll, sse};

/// A `POST /session/{session}` body may hold this many maximal frames.
const BODY_FRAMES: usize = 4;

/// Routes of the fallbacks.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/sse", get(open_sse))
        .route("/poll", post(open_poll))
        .route("/poll/{session}", get(poll_session))
        .route("/session/{session}", post(send_to_session))
}

async fn open_sse(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Response {
    open(shared, &headers, &query, Kind::Sse).await
}

async fn open_poll(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Response {
    open(shared, &headers, &query, Kind::Poll).await
}

/// Opens a session of `kind` once the request passes the checks of an upgrade.
async fn open(
    shared: Arc<Shared>,
    headers: &HeaderMap,
    query: &Result<Query<TokenQuery>, QueryRejection>,
    kind: Kind,
) -> Response {
    let identity = match admit(&shared, headers, query) {
        Ok(identity) => identity,
        Err(refusal) => return refusal.into_response(),
    };
    match kind {
        Kind::Sse => sse::open(shared, identity).await,
        Kind::Poll => respond(poll::open(shared, identity).await),
    }
}

async fn poll_session(
    State(shared): State<Arc<Shared>>,
    Path(session): Path<String>,
    headers: HeaderMap,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Response {
    let sub = match caller(&shared, &headers, &query) {
        Ok(sub) => sub,
        Err(answer) => return respond(answer),
    };
    let head = Head {
        ask: Ask::Poll,
        session,
        sub,
    };
    respond(on_session(&shared, head, Bytes::new()).await)
}

async fn send_to_session(
    State(shared): State<Arc<Shared>>,
    Path(session): Path<String>,
    query: Result<Query<TokenQuery>, QueryRejection>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let sub = match caller(&shared, &parts.headers, &query) {
        Ok(sub) => sub,
        Err(answer) => return respond(answer),
    };
    let limits = &shared.config.limits;
    let deadline = Instant::now() + Duration::from_millis(limits.http_read_timeout_ms);
    let limit = limits.max_frame_bytes * BODY_FRAMES;
    let body = match read_body(&parts.headers, body, limit, deadline).await {
        Ok(body) => body,
        Err(refusal) => {
            let failure = refusal.failure;
            return respond(error(
                refusal.status.as_u16(),
                failure.code.as_str(),
                &failure.message,
            ));
        }
    };
    let head = Head {
        ask: Ask::Send,
        session,
        sub,
    };
    respond(on_session(&shared, head, body).await)
}

/// Who makes a request on a session: the `sub` of its token when JWT is
/// configured (a token is then required), after the `Origin` check.
fn caller(
    shared: &Shared,
    headers: &HeaderMap,
    query: &Result<Query<TokenQuery>, QueryRejection>,
) -> Result<Option<String>, Answer> {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if !shared.auth.origin_allowed(origin) {
        return Err(error(403, "forbidden", "origin not allowed"));
    }
    if !shared.auth.requires_token() {
        return Ok(None);
    }
    match shared.auth.authenticate(request_token(headers, query)) {
        Ok(identity) => Ok(identity.user),
        Err(_) => Err(error(401, "unauthorized", "invalid or missing token")),
    }
}

/// Answers a request on a session here, or has the gateway holding it
/// answer over the bus.
async fn on_session(shared: &Shared, head: Head, body: Bytes) -> Answer {
    let sessions = &shared.sessions;
    let route = match sessions.holder(&head.session) {
        Holder::Here => return sessions.answer(&head, body).await,
        Holder::Nobody => return error(404, "not_found", "unknown or ended session"),
        Holder::Elsewhere(route) => route,
    };
    let wait = match head.ask {
        Ask::Poll => sessions.polling().wait,
        Ask::Send => Duration::from_millis(shared.config.nats.request_timeout_ms),
    };
    let request = forward::encode_request(&head, &body);
    match shared.hub.bus().forward(&route, request, wait).await {
        Ok(Some(answer)) => forward::decode_answer(&answer).unwrap_or_else(|| {
            error(
                502,
                "internal",
                "malformed answer from the session's gateway",
            )
        }),
        // No gateway serves that route: the session's gateway is gone.
        Ok(None) => error(404, "not_found", "unknown or ended session"),
        Err(_) => error(503, "unavailable", "the cluster bus is unavailable; retry"),
    }
}

/// An answer on a session as an HTTP response: JSON, never cached.
fn respond((status, body): Answer) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache, must-revalidate"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}
