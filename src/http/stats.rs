//! `GET /v1/stats`, `GET /v1/health` and `GET /healthz`.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::report::Stats;
use crate::report::stats::QueueStats;

#[utoipa::path(
    get,
    path = "/v1/stats",
    tag = "reports",
    security(("bearer" = ["read"]), ("basic" = ["read"])),
    responses(
        (status = 200, description = "The counters", body = crate::report::Stats),
        super::openapi::KeyErrors,
    ),
)]
pub async fn stats(State(state): State<AppState>) -> Result<Json<Stats>, ApiError> {
    let mut stats = Stats::load(
        &state.processor.store,
        state.duplicates.load(Ordering::Relaxed),
        Some(state.rules.status()),
        state.templates.errors(),
    )
    .await
    .map_err(ApiError::internal)?;
    stats.processing = Some(crate::report::stats::Processing::of(&state.processor));
    if let Some(c) = state.processor.cluster.get() {
        stats.cluster = Some(
            crate::cluster::view(
                &state.processor.store,
                c.shards,
                c.lease_timeout,
                Some(&c.name),
            )
            .await
            .map_err(ApiError::internal)?,
        );
    }
    Ok(Json(stats))
}

#[utoipa::path(
    get,
    path = "/v1/stats/queue",
    tag = "reports",
    security(("bearer" = ["read"]), ("basic" = ["read"])),
    responses(
        (status = 200, description = "The event queue and the sales desk's backlog", body = crate::report::stats::QueueStats),
        super::openapi::KeyErrors,
    ),
)]
pub async fn queue(State(state): State<AppState>) -> Result<Json<QueueStats>, ApiError> {
    QueueStats::load(
        &state.processor.store,
        state.duplicates.load(Ordering::Relaxed),
    )
    .await
    .map(|mut s| {
        s.processing = Some(crate::report::stats::Processing::of(&state.processor));
        Json(s)
    })
    .map_err(ApiError::internal)
}

/// Ok or not, and nothing more: the answer is public.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "meta",
    responses(
        (status = 200, description = "Alive", body = super::openapi::Healthz),
        (status = 503, description = "The database does not answer", body = super::openapi::Healthz),
    ),
)]
pub async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.processor.store.has_pending().await {
        Ok(_) => (StatusCode::OK, Json(json!({"status": "ok"}))),
        Err(e) => {
            tracing::warn!(error = %e, "health check: the database does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable"})),
            )
        }
    }
}

/// `GET /v1/health` (read scope): the database, who holds the processing lease, and
/// the backlog.
#[utoipa::path(
    get,
    path = "/v1/health",
    tag = "meta",
    security(("bearer" = ["read"]), ("basic" = ["read"])),
    responses(
        (status = 200, description = "The database answers", body = super::openapi::Health),
        (status = 503, description = "The database does not answer", body = super::openapi::Health),
        super::openapi::KeyErrors,
    ),
)]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let store = &state.processor.store;
    let duplicates = state.duplicates.load(Ordering::Relaxed);
    let (database, backlog) = match QueueStats::load(store, duplicates).await {
        Ok(q) => (
            json!({"ok": true}),
            json!({
                "events_pending": q.events.events_pending,
                "events_failed": q.events.events_failed,
                "handoffs_waiting": q.handoffs_waiting,
            }),
        ),
        Err(e) => (json!({"ok": false, "error": e.to_string()}), Value::Null),
    };
    let lease = match store.lease_holder().await {
        Ok(holder) => json!({"holder": holder}),
        Err(e) => json!({"error": e.to_string()}),
    };
    let ok = database["ok"] == true;
    let body = json!({
        "status": if ok { "ok" } else { "unavailable" },
        "database": database,
        "lease": lease,
        "backlog": backlog,
        "cluster": state.processor.cluster.get().map(|c| c.name.clone()),
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
