//! Intake handlers. The body is checked completely before anything is stored; the
//! answer comes after the events are committed (with other requests' events, see
//! [`crate::ingest::group`]).

use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::ingest::segment::{self, At};
use crate::ingest::{AcceptError, Item};

fn body(bytes: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let bytes = bytes.map_err(|e| ApiError::new(e.status(), "invalid_body", e.body_text()))?;
    segment::parse_json(&bytes).map_err(|e| ApiError::input(vec![e]))
}

fn new_id(_: &Value) -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn store(state: &AppState, items: Vec<Item>, batch: bool) -> Result<Json<Value>, ApiError> {
    match state.intake.submit(items, batch).await {
        Ok(done) => {
            state
                .duplicates
                .fetch_add(done.duplicates as u64, Ordering::Relaxed);
            Ok(Json(json!({
                "success": true,
                "accepted": done.accepted,
                "duplicates": done.duplicates,
                "leads_created": done.leads_created,
            })))
        }
        Err(AcceptError::Input(errors)) => Err(ApiError::input(errors)),
        Err(AcceptError::Store(e)) => Err(ApiError::internal(e)),
        Err(AcceptError::Failed(e)) => Err(ApiError::internal(e)),
    }
}

async fn single(
    state: AppState,
    bytes: Result<Bytes, BytesRejection>,
    kind: &'static str,
) -> Result<Json<Value>, ApiError> {
    let v = body(bytes)?;
    let at = At {
        index: None,
        prefix: "",
    };
    let item = segment::parse_item(&v, Some(kind), at, state.processor.clock.now(), &mut new_id)
        .map_err(ApiError::input)?;
    store(&state, vec![item], false).await
}

#[utoipa::path(
    post,
    path = "/v1/identify",
    tag = "intake",
    security(("bearer" = ["ingest"]), ("basic" = ["ingest"])),
    request_body = super::openapi::SegmentEvent,
    responses(
        (status = 200, description = "Stored", body = super::openapi::Accepted),
        (status = 400, description = "The body is not valid; nothing was stored", body = super::openapi::ErrorBody),
        (status = 413, description = "The body is larger than `max_request_bytes`", body = super::openapi::ErrorBody),
        super::openapi::KeyErrors,
    ),
)]
pub async fn identify(
    State(state): State<AppState>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    single(state, bytes, "identify").await
}

#[utoipa::path(
    post,
    path = "/v1/track",
    tag = "intake",
    security(("bearer" = ["ingest"]), ("basic" = ["ingest"])),
    request_body = super::openapi::SegmentEvent,
    responses(
        (status = 200, description = "Stored", body = super::openapi::Accepted),
        (status = 400, description = "The body is not valid; nothing was stored", body = super::openapi::ErrorBody),
        (status = 413, description = "The body is larger than `max_request_bytes`", body = super::openapi::ErrorBody),
        super::openapi::KeyErrors,
    ),
)]
pub async fn track(
    State(state): State<AppState>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    single(state, bytes, "track").await
}

#[utoipa::path(
    post,
    path = "/v1/page",
    tag = "intake",
    security(("bearer" = ["ingest"]), ("basic" = ["ingest"])),
    request_body = super::openapi::SegmentEvent,
    responses(
        (status = 200, description = "Stored", body = super::openapi::Accepted),
        (status = 400, description = "The body is not valid; nothing was stored", body = super::openapi::ErrorBody),
        (status = 413, description = "The body is larger than `max_request_bytes`", body = super::openapi::ErrorBody),
        super::openapi::KeyErrors,
    ),
)]
pub async fn page(
    State(state): State<AppState>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    single(state, bytes, "page").await
}

#[utoipa::path(
    post,
    path = "/v1/batch",
    tag = "intake",
    security(("bearer" = ["ingest"]), ("basic" = ["ingest"])),
    request_body = super::openapi::Batch,
    responses(
        (status = 200, description = "All events stored", body = super::openapi::Accepted),
        (status = 400, description = "The body is not valid; nothing was stored", body = super::openapi::ErrorBody),
        (status = 413, description = "The body is larger than `max_request_bytes`", body = super::openapi::ErrorBody),
        super::openapi::KeyErrors,
    ),
)]
pub async fn batch(
    State(state): State<AppState>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let v = body(bytes)?;
    let mut items = segment::parse_batch(&v, state.processor.clock.now(), &mut new_id)
        .map_err(ApiError::input)?;
    // `"history": true`: past events, processed without mail, streams or handoffs.
    let history = match v.get("history") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::input(vec![segment::InputError {
                index: None,
                path: "history".into(),
                message: "must be true or false".into(),
            }]));
        }
    };
    for item in &mut items {
        item.event.history = history;
    }
    store(&state, items, true).await
}

#[utoipa::path(
    post,
    path = "/v1/import",
    tag = "intake",
    security(("bearer" = ["ingest"]), ("basic" = ["ingest"])),
    request_body = super::openapi::Batch,
    responses(
        (status = 200, description = "All events stored", body = super::openapi::Accepted),
        (status = 400, description = "The body is not valid; nothing was stored", body = super::openapi::ErrorBody),
        (status = 413, description = "The body is larger than `max_request_bytes`", body = super::openapi::ErrorBody),
        super::openapi::KeyErrors,
    ),
)]
/// `POST /v1/import`: the same as `/v1/batch`, under the name bulk loaders use.
pub async fn import(
    state: State<AppState>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    batch(state, bytes).await
}

#[utoipa::path(
    post,
    path = "/v1/screen",
    tag = "intake",
    security(("bearer" = ["ingest"]), ("basic" = ["ingest"])),
    request_body = super::openapi::SegmentEvent,
    responses(
        (status = 200, description = "Stored", body = super::openapi::Accepted),
        (status = 400, description = "The body is not valid; nothing was stored", body = super::openapi::ErrorBody),
        (status = 413, description = "The body is larger than `max_request_bytes`", body = super::openapi::ErrorBody),
        super::openapi::KeyErrors,
    ),
)]
pub async fn screen(
    State(state): State<AppState>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    single(state, bytes, "screen").await
}

#[utoipa::path(
    post,
    path = "/v1/alias",
    tag = "intake",
    security(("bearer" = ["ingest"]), ("basic" = ["ingest"])),
    request_body = super::openapi::SegmentEvent,
    responses(
        (status = 200, description = "Stored", body = super::openapi::Accepted),
        (status = 400, description = "The body is not valid; nothing was stored", body = super::openapi::ErrorBody),
        (status = 413, description = "The body is larger than `max_request_bytes`", body = super::openapi::ErrorBody),
        super::openapi::KeyErrors,
    ),
)]
pub async fn alias(
    State(state): State<AppState>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    single(state, bytes, "alias").await
}

#[utoipa::path(
    post,
    path = "/v1/group",
    tag = "intake",
    security(("bearer" = ["ingest"]), ("basic" = ["ingest"])),
    request_body = super::openapi::SegmentEvent,
    responses(
        (status = 200, description = "Stored", body = super::openapi::Accepted),
        (status = 400, description = "The body is not valid; nothing was stored", body = super::openapi::ErrorBody),
        (status = 413, description = "The body is larger than `max_request_bytes`", body = super::openapi::ErrorBody),
        super::openapi::KeyErrors,
    ),
)]
pub async fn group(
    State(state): State<AppState>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    single(state, bytes, "group").await
}
