//! The server-side HTTP API, for backends: `POST /v1/publish`, `/v1/send`
//! and `/v1/broadcast` deliver like a client's frames (same validation, the
//! one delivery path, `from: null`); `POST /v1/disconnect` and
//! `/v1/unsubscribe` act on a user's connections in the whole cluster,
//! through the bus's command channel; `GET /v1/presence?room=R` answers like
//! a client's `presence` frame. All need the API key.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::time::Instant;

use super::admission::read_body;
use crate::bus::Command;
use crate::delivery::{self, Outgoing, Sender};
use crate::protocol::{self, Broadcast, ErrorCode, Failure, MAX_BROADCAST_ROOMS, Publish};
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

async fn publish(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    serve(&shared, request, 0, async |text| {
        let op = protocol::decode_publish(text)?;
        deliver(&shared, Outgoing::Publish(op)).await
    })
    .await
}

async fn send(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    serve(&shared, request, 0, async |text| {
        let op = protocol::decode_send(text)?;
        deliver(&shared, Outgoing::Send(op)).await
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
    let body = match admit(shared, request, extra).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let outcome = match std::str::from_utf8(&body) {
        Ok(text) => op(text).await,
        Err(_) => Err(Failure::new(ErrorCode::BadRequest, "body is not UTF-8")),
    };
    match outcome {
        Ok(()) => (StatusCode::ACCEPTED, axum::Json(json!({"ok": true}))).into_response(),
        Err(failure) => {
            let status = match failure.code {
                ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            answer_error(shared, status, &failure)
        }
    }
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

async fn deliver(shared: &Shared, op: Outgoing<'_>) -> Result<(), Failure> {
    let sender = Sender {
        user: None,
        conn: None,
        via: "http",
        bucket: None,
    };
    delivery::deliver(shared, sender, op).await?;
    Ok(())
}

async fn command(shared: &Shared, command: Command) -> Result<(), Failure> {
    shared
        .hub
        .command(&command)
        .await
        .map_err(Failure::unavailable)
}
