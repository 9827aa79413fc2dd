//! `GET /v1/leads/{email}/export` (everything stored about the person, see
//! [`crate::privacy::Export`]) and `DELETE /v1/leads/{email}` (the erasure, see
//! [`crate::process::erase`]); the reason comes in a JSON body `{"reason": ...,
//! "by": ...}` or as `?reason=...&by=...`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, Caller};
use crate::domain::Email;
use crate::ingest::InputError;
use crate::privacy::{AddressKey, Export};
use crate::process::erase::EraseError;

fn email(raw: &str) -> Result<Email, ApiError> {
    Email::parse(raw)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_email", e.to_string()))
}

#[utoipa::path(
    get,
    path = "/v1/leads/{email}/export",
    tag = "leads",
    security(("bearer" = ["admin"]), ("basic" = ["admin"])),
    params(("email" = String, Path, description = "The lead's e-mail address")),
    responses(
        (status = 200, description = "Everything stored about the person", body = crate::privacy::Export),
        (status = 400, description = "Not an e-mail address", body = super::openapi::ErrorBody),
        (status = 404, description = "No such lead", body = super::openapi::ErrorBody),
        super::openapi::KeyErrors,
    ),
)]
pub async fn export(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Export>, ApiError> {
    let email = email(&raw)?;
    Export::load(&state.processor.store, &email, state.processor.clock.now())
        .await
        .map_err(ApiError::internal)?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no lead with e-mail {email}")))
}

/// Why and by whom, from the body or the query.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EraseRequest {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    by: Option<String>,
}

#[utoipa::path(
    delete,
    path = "/v1/leads/{email}",
    tag = "leads",
    security(("bearer" = ["admin"]), ("basic" = ["admin"])),
    params(
        ("email" = String, Path, description = "The lead's e-mail address"),
        ("reason" = Option<String>, Query, description = "Why (or in the body)"),
        ("by" = Option<String>, Query, description = "On whose request (admin keys)"),
    ),
    request_body(content = Option<EraseRequest>, description = "Why and by whom (or in the query)"),
    responses(
        (status = 200, description = "The lead was erased", body = super::openapi::Erased),
        (status = 400, description = "The body is not valid; nothing was stored; a parameter of the wrong type gets a line of plain text", content((super::openapi::ErrorBody = "application/json"), (String = "text/plain"))),
        (status = 404, description = "No such lead", body = super::openapi::ErrorBody),
        (status = 503, description = "A mail to the lead is being sent; try again", body = super::openapi::ErrorBody),
        super::openapi::KeyErrors,
    ),
)]
pub async fn erase(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    Query(query): Query<EraseRequest>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let email = email(&raw)?;
    let bytes = bytes.map_err(|e| ApiError::new(e.status(), "invalid_body", e.body_text()))?;
    let body: EraseRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
        EraseRequest::default()
    } else {
        serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::input(vec![InputError {
                index: None,
                path: "$".into(),
                message: format!(
                    "{e}; send {{\"reason\": \"request of the person, ticket 4711\", \"by\": \"dpo\"}} \
                     or nothing"
                ),
            }])
        })?
    };
    let pick = |a: Option<String>, b: Option<String>| {
        a.or(b)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let reason = pick(body.reason, query.reason).unwrap_or_else(|| "not given".into());
    // `api:NAME` of the key, or the person an admin key names.
    let by = caller.by(pick(body.by, query.by).as_deref());
    let key = AddressKey::new(&state.config.mail.secret);
    match state.processor.erase(&email, &key, &by, &reason).await {
        Ok(done) => Ok(Json(json!({
            "erased": true,
            "lead_id": done.lead_id,
            "removed": done.removed,
        }))),
        Err(e @ EraseError::NotFound(_)) => Err(ApiError::not_found(e.to_string())),
        Err(e @ EraseError::Sending) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            e.to_string(),
        )),
        Err(EraseError::Store(e)) => Err(ApiError::internal(e)),
    }
}
