//! `GET /v1/leads/{email}`, `POST /v1/leads/{email}/stage` and
//! `POST /v1/leads/{email}/tags`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, Caller};
use crate::domain::Email;
use crate::domain::change::Outcome;
use crate::ingest::InputError;
use crate::process::manual::ManualError;
use crate::report::LeadReport;

fn email(raw: &str) -> Result<Email, ApiError> {
    Email::parse(raw)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_email", e.to_string()))
}

pub async fn show(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<LeadReport>, ApiError> {
    let email = email(&raw)?;
    let recent = state.config.processing.recent_activity;
    LeadReport::load(&state.processor.store, &email, recent)
        .await
        .map_err(ApiError::internal)?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no lead with e-mail {email}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StageRequest {
    stage: String,
    reason: String,
    /// Who asks (a salesperson, a CRM name); recorded in the history when an admin
    /// key names them, else the key's name is.
    #[serde(default)]
    by: Option<String>,
}

pub async fn set_stage(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let email = email(&raw)?;
    let bytes = bytes.map_err(|e| ApiError::new(e.status(), "invalid_body", e.body_text()))?;
    let req: StageRequest = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::input(vec![InputError {
            index: None,
            path: "$".into(),
            message: format!(
                "{e}; send {{\"stage\": \"sal\", \"reason\": \"accepted by sales\", \"by\": \"anna\"}}"
            ),
        }])
    })?;
    let user = caller.user(req.by.as_deref());
    match state
        .processor
        .set_stage_by(&email, &req.stage, &req.reason, &user)
        .await
    {
        Ok((lead, outcome)) => Ok(Json(json!({
            "email": lead.email,
            "stage": lead.stage,
            "changed": outcome == Outcome::Applied,
        }))),
        Err(ManualError::NotFound(e)) => {
            Err(ApiError::not_found(format!("no lead with e-mail {e}")))
        }
        Err(ManualError::Invalid(e)) => Err(ApiError::input(vec![InputError {
            index: None,
            path: if e.to_string().contains("stage") {
                "stage"
            } else {
                "reason"
            }
            .into(),
            message: e.to_string(),
        }])),
        Err(ManualError::Store(e)) => Err(ApiError::internal(e)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TagsRequest {
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
    reason: String,
    /// Who asks; recorded when an admin key names them, else the key's name is.
    #[serde(default)]
    by: Option<String>,
}

/// `POST /v1/leads/{email}/tags` with `{"add": ["event-2026"], "remove": [], "reason":
/// "met at the fair"}`: the tag ledger records the key (or `by`) and the reason.
pub async fn set_tags(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let email = email(&raw)?;
    let bytes = bytes.map_err(|e| ApiError::new(e.status(), "invalid_body", e.body_text()))?;
    let req: TagsRequest = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::input(vec![InputError {
            index: None,
            path: "$".into(),
            message: format!(
                "{e}; send {{\"add\": [\"fair-2026\"], \"remove\": [], \"reason\": \"met at the fair\"}}"
            ),
        }])
    })?;
    let user = caller.user(req.by.as_deref());
    match state
        .processor
        .set_tags_by(&email, &req.add, &req.remove, &req.reason, &user)
        .await
    {
        Ok((lead, changed)) => Ok(Json(json!({
            "email": lead.email,
            "tags": lead.tags,
            "changed": changed,
        }))),
        Err(ManualError::NotFound(e)) => {
            Err(ApiError::not_found(format!("no lead with e-mail {e}")))
        }
        Err(ManualError::Invalid(e)) => Err(ApiError::input(vec![InputError {
            index: None,
            path: "add".into(),
            message: e.to_string(),
        }])),
        Err(ManualError::Store(e)) => Err(ApiError::internal(e)),
    }
}
