//! The server-side HTTP API: `POST /v1/publish` and `POST /v1/send`, for
//! backends that push into rooms and to users. Same validation and delivery
//! as a client's frames, with `from: null`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

use crate::delivery::{self, Outgoing, Sender};
use crate::protocol::{self, ErrorCode, Failure};
use crate::state::Shared;

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
    handle(&shared, &headers, body, |text| {
        protocol::decode_publish(text).map(Outgoing::Publish)
    })
    .await
}

async fn send(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(&shared, &headers, body, |text| {
        protocol::decode_send(text).map(Outgoing::Send)
    })
    .await
}

/// Answers a request whose body `decode` reads as an operation.
async fn handle(
    shared: &Shared,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    decode: impl FnOnce(&str) -> Result<Outgoing<'_>, Failure>,
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
    match deliver(shared, body, decode).await {
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
    decode: impl FnOnce(&str) -> Result<Outgoing<'_>, Failure>,
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
    let sender = Sender {
        user: None,
        conn: None,
        via: "http",
        bucket: None,
    };
    delivery::deliver(shared, sender, decode(text)?).await?;
    Ok(())
}
