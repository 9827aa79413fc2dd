//! `GET /v1/mails` (newest first; `status`, `lead`, `limit`), `GET /v1/mails/{id}`
//! (with the mail as sent and what people did to it) and `POST /v1/mails/{id}/retry`
//! (a failed mail queued again).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, Caller};
use crate::domain::Email;
use crate::store::{MailFilter, RetrySelection};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    lead: Option<String>,
    limit: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/v1/mails",
    tag = "mails",
    security(("bearer" = ["read"]), ("basic" = ["read"])),
    params(
        ("status" = Option<String>, Query, description = "queued, sending, sent, failed, suppressed, ..."),
        ("lead" = Option<String>, Query, description = "Only mails to the lead with this e-mail address"),
        ("limit" = Option<i64>, Query, description = "At most this many (100; 1000 at most)"),
    ),
    responses(
        (status = 200, description = "Mails, newest first", body = super::openapi::MailList),
        (status = 400, description = "A parameter is not valid; a parameter of the wrong type gets a line of plain text", content((super::openapi::ErrorBody = "application/json"), (String = "text/plain"))),
        (status = 404, description = "No lead with the `lead` address", body = super::openapi::ErrorBody),
        super::openapi::KeyErrors,
    ),
)]
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

#[utoipa::path(
    get,
    path = "/v1/mails/{id}",
    tag = "mails",
    security(("bearer" = ["read"]), ("basic" = ["read"])),
    params(("id" = i64, Path, description = "The mail's id")),
    responses(
        (status = 200, description = "The mail", body = super::openapi::MailDetail),
        (status = 400, description = "Not a number; a parameter of the wrong type gets a line of plain text", content((super::openapi::ErrorBody = "application/json"), (String = "text/plain"))),
        (status = 404, description = "No such mail", body = super::openapi::ErrorBody),
        super::openapi::KeyErrors,
    ),
)]
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
    let history = state
        .processor
        .store
        .mail_log(id)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(
        json!({ "mail": mail, "content": content, "history": history }),
    ))
}

/// Queues failed mail `id` again; 409 with the reason when it is not failed.
#[utoipa::path(
    post,
    path = "/v1/mails/{id}/retry",
    tag = "mails",
    security(("bearer" = ["write"]), ("basic" = ["write"])),
    params(("id" = i64, Path, description = "The mail's id")),
    responses(
        (status = 200, description = "Queued again", body = super::openapi::Retried),
        (status = 400, description = "Not a number; a parameter of the wrong type gets a line of plain text", content((super::openapi::ErrorBody = "application/json"), (String = "text/plain"))),
        (status = 404, description = "No such mail", body = super::openapi::ErrorBody),
        (status = 409, description = "The mail has not failed", body = super::openapi::ErrorBody),
        super::openapi::KeyErrors,
    ),
)]
pub async fn retry(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let now = crate::clock::to_ms(state.processor.clock.now());
    let report = state
        .processor
        .store
        .retry_mails(RetrySelection::Ids(&[id]), &caller.by(None), now)
        .await
        .map_err(ApiError::internal)?;
    if let Some(r) = report.refused.first() {
        return Err(if r.reason.starts_with("there is no mail") {
            ApiError::not_found(r.reason.clone())
        } else {
            ApiError::new(StatusCode::CONFLICT, "not_retried", r.reason.clone())
        });
    }
    state.processor.wake_mailer();
    Ok(Json(json!({ "id": id, "status": "queued" })))
}
