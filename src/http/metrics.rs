//! `GET /metrics` (Prometheus text, read scope or the `[metrics] addr` listener) and
//! `GET /readyz` (readiness: database, lease or shards, backlog).

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use crate::process::Processor;

/// The content type of the Prometheus text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every metric, its gauges read from the store now.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    security(("bearer" = ["read"]), ("basic" = ["read"])),
    responses(
        (status = 200, description = "Every metric in the Prometheus text format (docs/metrics.md)", body = String, content_type = "text/plain"),
        (status = 503, description = "The database does not answer", body = String, content_type = "text/plain"),
        super::openapi::KeyErrors,
    ),
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    render(&state.processor).await
}

/// Renders the metrics of `processor` as a response.
pub async fn render(processor: &Processor) -> Response {
    let now = crate::clock::to_ms(processor.clock.now());
    match processor.metrics.render(&processor.store, now).await {
        Ok(text) => ([(header::CONTENT_TYPE, TEXT_FORMAT)], text).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: the database does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, TEXT_FORMAT)],
                "# the database does not answer\n",
            )
                .into_response()
        }
    }
}

/// 200 when the database answers, this daemon holds the processing lease (or, in a
/// cluster, some shards) and the backlog is at most `[health] max_backlog`; else 503.
/// The body names each check and the ones that failed; errors go to the log only, as
/// the answer is public.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "meta",
    responses(
        (status = 200, description = "Ready for traffic", body = super::openapi::Readyz),
        (status = 503, description = "Not ready: `failed` names the checks", body = super::openapi::Readyz),
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let p = &state.processor;
    let max = state.config.max_backlog;
    let mut failed: Vec<&str> = Vec::new();
    let backlog = match p.store.backlog().await {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: the database does not answer");
            failed.push("database");
            None
        }
    };
    if backlog.is_some_and(|n| n as u64 > max) {
        failed.push("backlog");
    }
    let lease = match p.cluster.get() {
        // A daemon of a cluster works while its pipeline has shards.
        Some(_) => p.processing_fence().is_ok(),
        None => match (p.held_lease(), backlog.is_some()) {
            (Ok(lease), true) => match p.store.lease_holder().await {
                Ok(holder) => holder.as_deref() == Some(lease.holder()),
                Err(e) => {
                    tracing::warn!(error = %e, "readiness: cannot read the lease");
                    false
                }
            },
            _ => false,
        },
    };
    let lease_check = if p.cluster.get().is_some() {
        "shards"
    } else {
        "lease"
    };
    if !lease {
        failed.push(lease_check);
    }
    let body = json!({
        "status": if failed.is_empty() { "ready" } else { "not ready" },
        "failed": failed,
        "checks": {
            "database": backlog.is_some(),
            lease_check: lease,
            "backlog": {"pending": backlog, "max": max, "ok": backlog.is_some_and(|n| n as u64 <= max)},
        },
    });
    let status = if failed.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
