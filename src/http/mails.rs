//! `GET /v1/mails` (newest first; `status`, `lead`, `limit`) and `GET /v1/mails/{id}`
//! (with the mail as sent).

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::domain::Email;
use crate::store::MailFilter;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    lead: Option<String>,
    limit: Option<i64>,
}

pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let store = &state.processor.store;
    let lead_id = match &q.lead {
        None => None,
        Some(raw) => {
            let email = Email::parse(raw).map_err(|e| {
                ApiError::new(
                    axum::http::StatusCode::BAD_REQUEST,
                    "invalid_email",
                    e.to_string(),
                )
            })?;
            let lead = store
                .lead_by_email(&email)
                .await
                .map_err(ApiError::internal)?
                .ok_or_else(|| ApiError::not_found(format!("no lead with e-mail {email}")))?;
            Some(lead.id)
        }
    };
    let filter = MailFilter {
        status: q.status,
        lead_id,
        limit: q.limit.unwrap_or(100).min(1000),
    };
    let mails = store
        .list_mails(&filter)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({ "mails": mails })))
}

pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let (mail, content) = state
        .processor
        .store
        .mail(id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no mail {id}")))?;
    Ok(Json(json!({ "mail": mail, "content": content })))
}
