//! The server-side HTTP API: `POST /v1/publish` and `POST /v1/send`, for
//! backends that push into rooms and to users, and `GET /v1/history`. Same
//! validation and delivery as a client's frames, with `from: null`.
//! `GET /v1/presence?room=R` answers like a client's `presence` frame.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::time::Instant;

use super::admission::read_body;
use crate::delivery::{self, Delivered, Outgoing, Sender};
use crate::history::HistoryError;
use crate::protocol::{self, ErrorCode, Failure, HistoryQuery, Since};
use crate::room::RoomName;
use crate::state::Shared;

/// Room for the JSON envelope around `data` in a request body.
const ENVELOPE_BYTES: usize = 4 * 1024;

/// Routes of the HTTP API.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/publish", post(publish))
        .route("/v1/send", post(send))
        .route("/v1/presence", get(presence))
        .route("/v1/history", get(history))
}

#[derive(serde::Deserialize)]
struct PresenceQuery {
    room: Option<String>,
}

/// `GET /v1/presence?room=R`: 200 `{"members":[…]}`, the distinct users
/// joined to R across the cluster.
async fn presence(
    State(shared): State<Arc<Shared>>,
    query: Result<axum::extract::Query<PresenceQuery>, axum::extract::rejection::QueryRejection>,
    request: Request,
) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !shared.auth.api_key_ok(authorization) {
        return unauthorized();
    }
    let Some(name) = query.ok().and_then(|q| q.0.room) else {
        let failure = Failure::new(ErrorCode::BadRequest, "missing query parameter `room`");
        return answer_error(&shared, StatusCode::BAD_REQUEST, &failure);
    };
    let Some(room) = RoomName::parse(&name) else {
        let failure = Failure::new(
            ErrorCode::InvalidRoom,
            "room must match ^[A-Za-z0-9_:@/-]{1,128}$",
        );
        return answer_error(&shared, StatusCode::BAD_REQUEST, &failure);
    };
    match shared.hub.presence(&room).await {
        Ok(members) => (StatusCode::OK, axum::Json(json!({"members": members}))).into_response(),
        Err(e) => answer_error(
            &shared,
            StatusCode::SERVICE_UNAVAILABLE,
            &Failure::unavailable(e),
        ),
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"code": "unauthorized", "message": "missing or wrong API key"})),
    )
        .into_response()
}

/// `GET /v1/history?room=R&limit=L&since_offset=N&epoch=E`: the `history`
/// frame's answer. Behind the API key; 400 `no_history` for a room whose
/// namespace keeps none.
async fn history(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    if let Some(refused) = refuse_key(&shared, &parts.headers) {
        return refused;
    }
    let query = match history_query(&parts.uri) {
        Ok(query) => query,
        Err(failure) => return answer_error(&shared, StatusCode::BAD_REQUEST, &failure),
    };
    let answer = match shared.hub.history() {
        None => Err(HistoryError::NoHistory),
        Some(store) => crate::history::answer(store, &query).await,
    };
    match answer {
        Ok(fields) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            format!("{{{fields}}}"),
        )
            .into_response(),
        Err(e) => failure_response(&shared, delivery::history_failure(e)),
    }
}

/// Reads the query string of `GET /v1/history`.
fn history_query(uri: &axum::http::Uri) -> Result<HistoryQuery, Failure> {
    #[derive(serde::Deserialize)]
    struct Raw {
        room: Option<String>,
        limit: Option<String>,
        since_offset: Option<String>,
        epoch: Option<String>,
    }
    let bad = |m: &'static str| Failure::new(ErrorCode::BadRequest, m);
    let Query(raw) = Query::<Raw>::try_from_uri(uri).map_err(|_| bad("malformed query string"))?;
    let room = raw.room.ok_or_else(|| bad("missing parameter `room`"))?;
    let room = RoomName::parse(&room).ok_or_else(|| {
        Failure::new(
            ErrorCode::InvalidRoom,
            "room must match ^[A-Za-z0-9_:@/-]{1,128}$",
        )
    })?;
    let limit = match raw.limit {
        None => protocol::MAX_HISTORY_LIMIT,
        Some(l) => protocol::check_limit(
            l.parse()
                .map_err(|_| bad("parameter `limit` must be an integer from 1 to 100"))?,
        )?,
    };
    let since = match (raw.since_offset, raw.epoch) {
        (None, None) => None,
        (Some(offset), Some(epoch)) => Some(Since {
            offset: offset
                .parse()
                .map_err(|_| bad("parameter `since_offset` must be an integer >= 0"))?,
            epoch,
        }),
        _ => return Err(bad("`since_offset` and `epoch` go together")),
    };
    Ok(HistoryQuery { room, limit, since })
}

/// 401 unless the request carries the API key.
fn refuse_key(shared: &Shared, headers: &axum::http::HeaderMap) -> Option<Response> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    (!shared.auth.api_key_ok(authorization)).then(unauthorized)
}

/// A failure as its contract status and JSON body.
fn failure_response(shared: &Shared, failure: Failure) -> Response {
    let status = match failure.code {
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    answer_error(shared, status, &failure)
}

async fn publish(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    handle(&shared, request, |text| {
        protocol::decode_publish(text).map(Outgoing::Publish)
    })
    .await
}

async fn send(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    handle(&shared, request, |text| {
        protocol::decode_send(text).map(Outgoing::Send)
    })
    .await
}

/// Checks the key, then reads the body (bounded in size and time: see
/// `admission.rs`), then delivers the operation `decode` reads from it. The
/// key comes first, so a client without one is refused before it can hold
/// the connection with a slow body.
async fn handle(
    shared: &Shared,
    request: Request,
    decode: impl FnOnce(&str) -> Result<Outgoing<'_>, Failure>,
) -> Response {
    let limits = &shared.config.limits;
    let deadline = Instant::now() + Duration::from_millis(limits.http_read_timeout_ms);
    let (parts, body) = request.into_parts();
    if let Some(refused) = refuse_key(shared, &parts.headers) {
        return refused;
    }
    let limit = limits.max_payload_bytes + ENVELOPE_BYTES;
    let body = match read_body(&parts.headers, body, limit, deadline).await {
        Ok(body) => body,
        Err(refusal) => return answer_error(shared, refusal.status, &refusal.failure),
    };
    match deliver(shared, body, decode).await {
        // `{"ok":true}`, with `offset` and `epoch` for a history room.
        Ok(delivered) => {
            let fields = delivered.ok_fields();
            let sep = if fields.is_empty() { "" } else { "," };
            (
                StatusCode::ACCEPTED,
                [(header::CONTENT_TYPE, "application/json")],
                format!(r#"{{"ok":true{sep}{fields}}}"#),
            )
                .into_response()
        }
        Err(failure) => failure_response(shared, failure),
    }
}

/// The contract's JSON error answer, counted in `roomcast_errors_total`.
fn answer_error(shared: &Shared, status: StatusCode, failure: &Failure) -> Response {
    shared.metrics.error(failure.code);
    (
        status,
        axum::Json(json!({"code": failure.code.as_str(), "message": failure.message})),
    )
        .into_response()
}

async fn deliver(
    shared: &Shared,
    body: Bytes,
    decode: impl FnOnce(&str) -> Result<Outgoing<'_>, Failure>,
) -> Result<Delivered, Failure> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| Failure::new(ErrorCode::BadRequest, "body is not UTF-8"))?;
    let sender = Sender {
        user: None,
        conn: None,
        via: "http",
        bucket: None,
    };
    delivery::deliver(shared, sender, decode(text)?).await
}
