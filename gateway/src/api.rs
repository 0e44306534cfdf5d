//! The server-side HTTP API: `POST /v1/publish` and `POST /v1/send`, for
//! backends that push into rooms and to users. Same validation and delivery
//! as a client's frames, with `from: null`.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

use crate::bus::Topic;
use crate::protocol::{self, ErrorCode, Failure, Op};
use crate::server::Shared;
use crate::session::{check_payload, unavailable};
use crate::trace;
use crate::ws::WireFrame;

/// Room for the JSON envelope around `data` in a request body.
const ENVELOPE_BYTES: usize = 4 * 1024;

/// Routes of the HTTP API.
pub fn router(shared: &Shared) -> Router<Arc<Shared>> {
    let limits = &shared.config.limits;
    Router::new()
        .route("/v1/publish", post(publish))
        .route("/v1/send", post(send))
        .layer(DefaultBodyLimit::max(
            limits.max_payload_bytes + ENVELOPE_BYTES,
        ))
}

async fn publish(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(&shared, &headers, body, "publish").await
}

async fn send(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(&shared, &headers, body, "send").await
}

async fn handle(
    shared: &Shared,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    kind: &str,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !shared.auth.api_key_ok(authorization) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"code": "unauthorized", "message": "missing or wrong API key"})),
        )
            .into_response();
    }
    match deliver(shared, body, kind).await {
        Ok(()) => (StatusCode::ACCEPTED, axum::Json(json!({"ok": true}))).into_response(),
        Err(failure) => {
            shared.metrics.error(failure.code);
            let status = match failure.code {
                ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            (
                status,
                axum::Json(json!({"code": failure.code.as_str(), "message": failure.message})),
            )
                .into_response()
        }
    }
}

async fn deliver(
    shared: &Shared,
    body: Result<Bytes, BytesRejection>,
    kind: &str,
) -> Result<(), Failure> {
    let limits = &shared.config.limits;
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => Failure::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "body over {} bytes",
                limits.max_payload_bytes + ENVELOPE_BYTES
            ),
        ),
        _ => Failure::new(ErrorCode::BadRequest, "could not read the request body"),
    })?;
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
