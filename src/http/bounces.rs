//! `POST /v1/bounces`: a raw message (`Content-Type: message/rfc822`) that came back to
//! the bounce or unsubscribe address: a delivery report, a feedback report or an
//! unsubscribe mail. `?recipient=ADDR` may name the envelope recipient it was
//! delivered to (a mail server's pipe knows it). Answers what was done per report.
//! `GET /v1/bounces[?email=ADDR]` lists the bounce log.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::bounces::{self, Report, parse};

#[derive(Debug, Deserialize)]
pub struct Envelope {
    recipient: Option<String>,
}

/// Acts on `reports` and answers with what was done.
pub(super) async fn act(state: &AppState, reports: &[Report]) -> Result<Json<Value>, ApiError> {
    let mut done = Vec::with_capacity(reports.len());
    for r in reports {
        let applied = bounces::apply(
            &state.processor,
            &state.config.bounces,
            r,
            state.processor.clock.now(),
        )
        .await
        .map_err(ApiError::internal)?;
        done.push(applied);
    }
    Ok(Json(json!({ "reports": done })))
}

#[utoipa::path(
    post,
    path = "/v1/bounces",
    tag = "mails",
    security(("bearer" = ["write"]), ("basic" = ["write"])),
    params(("recipient" = Option<String>, Query, description = "The envelope recipient the message was delivered to")),
    request_body(content = String, content_type = "message/rfc822", description = "The message as it arrived"),
    responses(
        (status = 200, description = "What was done per report", body = super::openapi::BounceReports),
        (status = 400, description = "A parameter is not valid", body = super::openapi::ErrorBody),
        (status = 413, description = "The body is larger than `max_request_bytes`", body = super::openapi::ErrorBody),
        (status = 415, description = "Not `message/rfc822`", body = super::openapi::ErrorBody),
        (status = 422, description = "Not a bounce, complaint or unsubscribe", body = super::openapi::ErrorBody),
        super::openapi::KeyErrors,
    ),
)]
pub async fn ingest(
    State(state): State<AppState>,
    Query(envelope): Query<Envelope>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if !(content_type.starts_with("message/rfc822") || content_type.starts_with("message/global")) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the raw message as it arrived, with Content-Type: message/rfc822",
        ));
    }
    let envelope: Vec<String> = envelope.recipient.into_iter().collect();
    let reports = parse::parse(&body, &state.config.mail.secret, &envelope).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_a_report",
            e.to_string(),
        )
    })?;
    act(&state, &reports).await
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    email: Option<String>,
    limit: Option<i64>,
}

/// `GET /v1/bounces[?email=ADDR&limit=N]`: the bounce log, newest first.
#[utoipa::path(
    get,
    path = "/v1/bounces",
    tag = "mails",
    security(("bearer" = ["read"]), ("basic" = ["read"])),
    params(
        ("email" = Option<String>, Query, description = "Only this address"),
        ("limit" = Option<i64>, Query, description = "At most this many (100; 1000 at most)"),
    ),
    responses(
        (status = 200, description = "The bounce log", body = super::openapi::BounceLog),
        (status = 400, description = "A parameter is not valid; a parameter of the wrong type gets a line of plain text", content((super::openapi::ErrorBody = "application/json"), (String = "text/plain"))),
        super::openapi::KeyErrors,
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let email = match q.email.as_deref() {
        Some(e) => Some(crate::domain::Email::parse(e).map_err(|err| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_email", err.to_string())
        })?),
        None => None,
    };
    let rows = state
        .processor
        .store
        .bounce_log(
            email.as_ref().map(|e| e.as_str()),
            q.limit.unwrap_or(100).clamp(1, 1000),
        )
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(
        json!({ "bounces": rows.iter().map(crate::bounces::log_json).collect::<Vec<_>>() }),
    ))
}
