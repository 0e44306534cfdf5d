//! The server-side HTTP API: `POST /v1/publish` and `POST /v1/send`, for
//! backends that push into rooms and to users. Same validation and delivery
//! as a client's frames, with `from: null`.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use tokio::time::Instant;

use crate::admission::read_body;
use crate::bus::Topic;
use crate::protocol::{self, ErrorCode, Failure, Op};
use crate::server::Shared;
use crate::session::{check_payload, unavailable};
use crate::trace;
use crate::ws::WireFrame;

/// Room for the JSON envelope around `data` in a request body.
const ENVELOPE_BYTES: usize = 4 * 1024;

/// Routes of the HTTP API.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/publish", post(publish))
        .route("/v1/send", post(send))
}

async fn publish(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    handle(&shared, request, "publish").await
}

async fn send(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    handle(&shared, request, "send").await
}

/// Checks the key, then reads the body (bounded in size and time: see
/// `admission.rs`), then delivers. The key comes first, so a client without
/// one is refused before it can hold the connection with a slow body.
async fn handle(shared: &Shared, request: Request, kind: &str) -> Response {
    let limits = &shared.config.limits;
    let deadline = Instant::now() + Duration::from_millis(limits.http_read_timeout_ms);
    let (parts, body) = request.into_parts();
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !shared.auth.api_key_ok(authorization) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"code": "unauthorized", "message": "missing or wrong API key"})),
        )
            .into_response();
    }
    let limit = limits.max_payload_bytes + ENVELOPE_BYTES;
    let body = match read_body(&parts.headers, body, limit, deadline).await {
        Ok(body) => body,
        Err(refusal) => return answer_error(shared, refusal.status, &refusal.failure),
    };
    match deliver(shared, body, kind).await {
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

/// The contract's JSON error answer, counted in `roomcast_errors_total`.
fn answer_error(shared: &Shared, status: StatusCode, failure: &Failure) -> Response {
    shared.metrics.error(failure.code);
    (
        status,
        axum::Json(json!({"code": failure.code.as_str(), "message": failure.message})),
    )
        .into_response()
}

async fn deliver(shared: &Shared, body: Bytes, kind: &str) -> Result<(), Failure> {
    let limits = &shared.config.limits;
    let text = std::str::from_utf8(&body)
        .map_err(|_| Failure::new(ErrorCode::BadRequest, "body is not UTF-8"))?;
    match protocol::decode_as(kind, text)? {
        Op::Publish { room, data, .. } => {
            check_payload(data.get().len(), limits.max_payload_bytes)?;
            let frame = protocol::message(&room, None, data);
            let trace = trace::start_publish(room.as_str(), "http");
            shared
                .hub
                .publish(
                    &Topic::Room(room),
                    WireFrame::text(&frame),
                    None,
                    trace.as_ref(),
                )
                .await
                .map_err(unavailable)?;
            shared.metrics.publishes.fetch_add(1, Relaxed);
        }
        Op::Send { to, data } => {
            check_payload(data.get().len(), limits.max_payload_bytes)?;
            let frame = protocol::direct(None, data);
            shared
                .hub
                .publish(&Topic::User(to.into()), WireFrame::text(&frame), None, None)
                .await
                .map_err(unavailable)?;
            shared.metrics.sends.fetch_add(1, Relaxed);
        }
        _ => return Err(Failure::new(ErrorCode::Internal, "unexpected operation")),
    }
    Ok(())
}
