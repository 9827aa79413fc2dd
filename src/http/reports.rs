//! `GET /v1/reports/funnel` and `GET /v1/reports/sla`: the reports as JSON, over the
//! last `?days=N` (default 30) or from `?since=YYYY-MM-DD` up to now.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;

use super::{ApiError, AppState};
use crate::report::{FunnelReport, Period, SlaReport};

/// The period of the query string; unknown parameters and bad values are refused.
fn period(
    state: &AppState,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Result<Period, ApiError> {
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message);
    let Query(params) = query.map_err(|e| bad(e.body_text()))?;
    if let Some(other) = params
        .keys()
        .find(|k| !matches!(k.as_str(), "days" | "since"))
    {
        return Err(bad(format!(
            "unknown parameter `{other}`; use `days=N` or `since=YYYY-MM-DD`"
        )));
    }
    Period::parse(
        params.get("days").map(String::as_str),
        params.get("since").map(String::as_str),
        state.processor.clock.now(),
        state.config.time_zone,
    )
    .map_err(|e| bad(e.to_string()))
}

#[utoipa::path(
    get,
    path = "/v1/reports/funnel",
    tag = "reports",
    security(("bearer" = ["read"]), ("basic" = ["read"])),
    params(
        ("days" = Option<u32>, Query, description = "The last N days (30 when neither is given)"),
        ("since" = Option<String>, Query, description = "From this day (YYYY-MM-DD) up to now"),
    ),
    responses(
        (status = 200, description = "The funnel report", body = crate::report::FunnelReport),
        (status = 400, description = "A parameter is not valid", body = super::openapi::ErrorBody),
        super::openapi::KeyErrors,
    ),
)]
pub async fn funnel(
    State(state): State<AppState>,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Result<Json<FunnelReport>, ApiError> {
    let period = period(&state, query)?;
    FunnelReport::load(&state.processor.store, &state.config.funnel, period)
        .await
        .map(Json)
        .map_err(ApiError::internal)
}

#[utoipa::path(
    get,
    path = "/v1/reports/sla",
    tag = "reports",
    security(("bearer" = ["read"]), ("basic" = ["read"])),
    params(
        ("days" = Option<u32>, Query, description = "The last N days (30 when neither is given)"),
        ("since" = Option<String>, Query, description = "From this day (YYYY-MM-DD) up to now"),
    ),
    responses(
        (status = 200, description = "The SLA report", body = crate::report::SlaReport),
        (status = 400, description = "A parameter is not valid", body = super::openapi::ErrorBody),
        super::openapi::KeyErrors,
    ),
)]
pub async fn sla(
    State(state): State<AppState>,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Result<Json<SlaReport>, ApiError> {
    let period = period(&state, query)?;
    SlaReport::load(&state.processor.store, period)
        .await
        .map(Json)
        .map_err(ApiError::internal)
}
