//! `GET /v1/stats` and `GET /healthz`.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::report::Stats;
use crate::report::stats::QueueStats;

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

pub async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.processor.store.has_pending().await {
        Ok(_) => (StatusCode::OK, Json(json!({"status": "ok"}))),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "message": e.to_string()})),
        ),
    }
}
