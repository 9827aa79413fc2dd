//! `GET /v1/leads` (a filtered list, in pages, as JSON or CSV), `GET /v1/leads/{email}`,
//! `POST /v1/leads/{email}/stage` and `POST /v1/leads/{email}/tags`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, Caller};
use crate::domain::Email;
use crate::domain::change::Outcome;
use crate::ingest::InputError;
use crate::process::manual::ManualError;
use crate::report::LeadReport;
use crate::report::lead_list::{self, LeadPage, ListQuery};

fn email(raw: &str) -> Result<Email, ApiError> {
    Email::parse(raw)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_email", e.to_string()))
}

/// `GET /v1/leads?stage=&tag=&min_fit=&min_interest=&owner=&q=&limit=&cursor=`: JSON
/// (`leads`, `next_cursor`), or CSV with `format=csv` or `Accept: text/csv` (the next
/// cursor in the `X-Next-Cursor` header).
#[utoipa::path(
    get,
    path = "/v1/leads",
    tag = "leads",
    security(("bearer" = ["read"]), ("basic" = ["read"])),
    params(
        ("stage" = Option<String>, Query, description = "Only leads in this stage"),
        ("tag" = Option<String>, Query, description = "Only leads with this tag"),
        ("min_fit" = Option<f64>, Query, description = "Only leads with at least this fit"),
        ("min_interest" = Option<f64>, Query, description = "Only leads with at least this interest"),
        ("owner" = Option<String>, Query, description = "Only leads of this owner"),
        ("q" = Option<String>, Query, description = "Search in e-mail, name and company"),
        ("limit" = Option<i64>, Query, description = "Leads per page"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
        ("format" = Option<String>, Query, description = "`csv` for CSV"),
    ),
    responses(
        (status = 200, description = "A page of leads (CSV with `format=csv` or `Accept: text/csv`, the next cursor then in `X-Next-Cursor`)", body = crate::report::lead_list::LeadPage),
        (status = 400, description = "A parameter is not valid", body = super::openapi::ErrorBody),
        super::openapi::KeyErrors,
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let raw = raw.unwrap_or_default();
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(raw.as_bytes())
        .into_owned()
        .collect();
    let query = ListQuery::parse(
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &state.config.funnel,
        Some(lead_list::DEFAULT_LIMIT),
    )
    .map_err(|e| {
        let mut err = ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            format!("parameter {e}"),
        );
        err.details.push(InputError {
            index: None,
            path: e.param,
            message: e.message,
        });
        err
    })?;
    let wants_csv = query.csv
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/csv"));
    let page = LeadPage::load(
        &state.processor.store,
        &query.filter,
        query.after,
        query.limit.unwrap_or(lead_list::DEFAULT_LIMIT),
    )
    .await
    .map_err(ApiError::internal)?;
    if !wants_csv {
        return Ok(Json(page).into_response());
    }
    let mut response = (
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        lead_list::to_csv(&page.leads),
    )
        .into_response();
    if let Some(next) = page.next_cursor
        && let Ok(value) = HeaderValue::from_str(&next)
    {
        response.headers_mut().insert("x-next-cursor", value);
    }
    Ok(response)
}

#[utoipa::path(
    get,
    path = "/v1/leads/{email}",
    tag = "leads",
    security(("bearer" = ["read"]), ("basic" = ["read"])),
    params(("email" = String, Path, description = "The lead's e-mail address")),
    responses(
        (status = 200, description = "The lead with its history", body = crate::report::LeadReport),
        (status = 400, description = "Not an e-mail address", body = super::openapi::ErrorBody),
        (status = 404, description = "No such lead", body = super::openapi::ErrorBody),
        super::openapi::KeyErrors,
    ),
)]
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

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"stage": "sal", "reason": "accepted by sales"}))]
struct StageRequest {
    stage: String,
    reason: String,
    /// Who asks (a salesperson, a CRM name); recorded in the history when an admin
    /// key names them, else the key's name is.
    #[serde(default)]
    by: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/leads/{email}/stage",
    tag = "leads",
    security(("bearer" = ["write"]), ("basic" = ["write"])),
    params(("email" = String, Path, description = "The lead's e-mail address")),
    request_body = StageRequest,
    responses(
        (status = 200, description = "The lead's stage", body = super::openapi::StageSet),
        (status = 400, description = "The body is not valid; nothing was stored", body = super::openapi::ErrorBody),
        (status = 404, description = "No such lead", body = super::openapi::ErrorBody),
        super::openapi::KeyErrors,
    ),
)]
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

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"add": ["fair-2026"], "remove": [], "reason": "met at the fair"}))]
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
#[utoipa::path(
    post,
    path = "/v1/leads/{email}/tags",
    tag = "leads",
    security(("bearer" = ["write"]), ("basic" = ["write"])),
    params(("email" = String, Path, description = "The lead's e-mail address")),
    request_body = TagsRequest,
    responses(
        (status = 200, description = "The lead's tags", body = super::openapi::TagsSet),
        (status = 400, description = "The body is not valid; nothing was stored", body = super::openapi::ErrorBody),
        (status = 404, description = "No such lead", body = super::openapi::ErrorBody),
        super::openapi::KeyErrors,
    ),
)]
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
