//! The server-side HTTP API, for backends: `POST /v1/publish`, `/v1/send`
//! and `/v1/broadcast` deliver like a client's frames (same validation, the
//! one delivery path, `from: null`); `POST /v1/disconnect` and
//! `/v1/unsubscribe` act on a user's connections in the whole cluster,
//! through the bus's command channel; `GET /v1/presence?room=R` answers like
//! a client's `presence` frame, `GET /v1/history` like its `history` frame.
//! All need the API key.

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
use crate::bus::Command;
use crate::delivery::{self, Delivered, Outgoing, Sender};
use crate::history::HistoryError;
use crate::protocol::{
    self, Broadcast, ErrorCode, Failure, HistoryQuery, MAX_BROADCAST_ROOMS, Publish, Since,
};
use crate::room::{MAX_ROOM_BYTES, RoomName};
use crate::state::Shared;

/// Room for the JSON envelope around `data` in a request body.
const ENVELOPE_BYTES: usize = 4 * 1024;

/// Room for the `rooms` list of a broadcast: every room at its longest, quoted.
const BROADCAST_ROOMS_BYTES: usize = MAX_BROADCAST_ROOMS * (MAX_ROOM_BYTES + 3);

/// Routes of the HTTP API.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/publish", post(publish))
        .route("/v1/send", post(send))
        .route("/v1/broadcast", post(broadcast))
        .route("/v1/disconnect", post(disconnect))
        .route("/v1/unsubscribe", post(unsubscribe))
        .route("/v1/presence", get(presence))
        .route("/v1/history", get(history))
}

/// `GET /v1/history?room=R&limit=L&since_offset=N&epoch=E`: the `history`
/// frame's answer. 400 `no_history` for a room whose namespace keeps none.
async fn history(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !shared.auth.api_key_ok(authorization) {
        return unauthorized();
    }
    let query = match history_query(request.uri()) {
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

/// 202 `{"ok":true}`, with `offset` and `epoch` for a history room.
async fn publish(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    serve_with(&shared, request, 0, async |text| {
        let op = protocol::decode_publish(text)?;
        Ok(deliver(&shared, Outgoing::Publish(op)).await?.ok_fields())
    })
    .await
}

async fn send(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    serve(&shared, request, 0, async |text| {
        let op = protocol::decode_send(text)?;
        deliver(&shared, Outgoing::Send(op)).await.map(drop)
    })
    .await
}

/// `POST /v1/broadcast`: every room is checked before any is delivered, so
/// a bad room (named in the 400) delivers nothing; then one publish per
/// room, each through the same path as `/v1/publish`.
async fn broadcast(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    serve(&shared, request, BROADCAST_ROOMS_BYTES, async |text| {
        let Broadcast { rooms, data } = protocol::decode_broadcast(text)?;
        protocol::check_payload(data.get().len(), shared.config.limits.max_payload_bytes)?;
        let total = rooms.len();
        for (done, room) in rooms.into_iter().enumerate() {
            let op = Outgoing::Publish(Publish {
                room,
                data,
                echo: true,
            });
            deliver(&shared, op).await.map_err(|failure| {
                if done == 0 {
                    failure
                } else {
                    // The bus went away part way: say how far it got.
                    Failure::new(
                        failure.code,
                        format!(
                            "{} (delivered to the first {done} of {total} rooms)",
                            failure.message
                        ),
                    )
                }
            })?;
        }
        Ok(())
    })
    .await
}

async fn disconnect(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    serve(&shared, request, 0, async |text| {
        let user = protocol::decode_disconnect(text)?.into_owned();
        command(&shared, Command::Disconnect { user }).await
    })
    .await
}

async fn unsubscribe(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    serve(&shared, request, 0, async |text| {
        let (user, room) = protocol::decode_unsubscribe(text)?;
        let user = user.into_owned();
        command(&shared, Command::Unsubscribe { user, room }).await
    })
    .await
}

/// Admits the request ([`admit`]), runs `op` on its body and answers 202
/// `{"ok":true}` or the failure with its status.
async fn serve(
    shared: &Shared,
    request: Request,
    extra: usize,
    op: impl AsyncFnOnce(&str) -> Result<(), Failure>,
) -> Response {
    serve_with(shared, request, extra, async |text| {
        op(text).await.map(|()| String::new())
    })
    .await
}

/// [`serve`] for an `op` whose success adds fields (pre-encoded
/// `"key":value` pairs, or nothing) to the 202's `{"ok":true}`.
async fn serve_with(
    shared: &Shared,
    request: Request,
    extra: usize,
    op: impl AsyncFnOnce(&str) -> Result<String, Failure>,
) -> Response {
    let body = match admit(shared, request, extra).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let outcome = match std::str::from_utf8(&body) {
        Ok(text) => op(text).await,
        Err(_) => Err(Failure::new(ErrorCode::BadRequest, "body is not UTF-8")),
    };
    match outcome {
        Ok(fields) => {
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

/// A failure as its contract status and JSON body.
fn failure_response(shared: &Shared, failure: Failure) -> Response {
    let status = match failure.code {
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    answer_error(shared, status, &failure)
}

/// Checks the key, then reads the body (bounded in size and time: see
/// `admission.rs`; `extra` bytes beyond the usual envelope). The key comes
/// first, so a client without one is refused before it can hold the
/// connection with a slow body.
async fn admit(shared: &Shared, request: Request, extra: usize) -> Result<Bytes, Response> {
    let limits = &shared.config.limits;
    let deadline = Instant::now() + Duration::from_millis(limits.http_read_timeout_ms);
    let (parts, body) = request.into_parts();
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !shared.auth.api_key_ok(authorization) {
        return Err(unauthorized());
    }
    let limit = limits.max_payload_bytes + ENVELOPE_BYTES + extra;
    read_body(&parts.headers, body, limit, deadline)
        .await
        .map_err(|refusal| answer_error(shared, refusal.status, &refusal.failure))
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

async fn deliver(shared: &Shared, op: Outgoing<'_>) -> Result<Delivered, Failure> {
    let sender = Sender {
        user: None,
        conn: None,
        via: "http",
        bucket: None,
    };
    delivery::deliver(shared, sender, op).await
}

async fn command(shared: &Shared, command: Command) -> Result<(), Failure> {
    shared
        .hub
        .command(&command)
        .await
        .map_err(Failure::unavailable)
}
